//! Loading a component and checking that it fits the `weir:operator` world.

use std::path::{Path, PathBuf};

use thiserror::Error;
use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

use super::bindings::{Plugin, PluginPre};
use super::wasm::HostState;

/// The version of the `weir:operator` package (`wit/operator.wit`) this host
/// implements; a component built against another is refused by name.
pub const WIT_VERSION: &str = "0.3.0";

/// A component compiled and checked against the `weir:operator` world, ready to
/// instantiate any number of times.
pub struct LoadedModule {
    /// The file it came from.
    pub path: PathBuf,
    /// SHA-256 of the file, hex: what `/topology` shows and a reload compares.
    pub sha256: String,
    /// The side outputs it declares (its `describe`), in output order from 1.
    pub outputs: Vec<String>,
    pub(crate) pre: PluginPre<HostState>,
}

impl std::fmt::Debug for LoadedModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModule")
            .field("path", &self.path)
            .field("sha256", &self.sha256)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

/// Why a module cannot be used.
#[derive(Debug, Error)]
pub enum ModuleError {
    /// The file cannot be read.
    #[error("cannot read the module: {0}")]
    Read(#[source] std::io::Error),
    /// It is a core module, not a component.
    #[error(
        "this is a core WebAssembly module, not a component{wasi}: build the plugin for \
         wasm32-unknown-unknown and link it with wasm-component-ld (in .cargo/config.toml: \
         [target.wasm32-unknown-unknown] linker = \"wasm-component-ld\"; `weir new plugin` \
         writes this for you)",
        wasi = if *.wasi { " built for WASI (wasm32-wasip1: it imports wasi_snapshot_preview1)" } else { "" }
    )]
    CoreModule {
        /// It imports WASI preview 1, so it was built for wasm32-wasip1.
        wasi: bool,
    },
    /// It is a component that imports WASI: built for wasm32-wasip2.
    #[error(
        "this component imports WASI ({0}), so it was built for wasm32-wasip2 (or another \
         WASI target); Weir gives plugins no WASI (no files, clock or network): build it for \
         wasm32-unknown-unknown, linked with wasm-component-ld (in .cargo/config.toml: \
         [target.wasm32-unknown-unknown] linker = \"wasm-component-ld\"; `weir new plugin` \
         writes this for you)"
    )]
    Wasi(String),
    /// It is not valid WebAssembly.
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    /// It was built against another version of the WIT contract.
    #[error(
        "it was built against weir:operator@{found} ({name}), and this daemon runs plugins built \
         against weir:operator@{WIT_VERSION}: rebuild it with the guest-sdk of this Weir release"
    )]
    Contract {
        /// The version it was built against.
        found: String,
        /// The import or export that says so.
        name: String,
    },
    /// It imports something the host does not offer.
    #[error(
        "{0} (Weir offers only the weir:operator@{WIT_VERSION} interfaces: no WASI, files, \
         network or clock)"
    )]
    Import(String),
    /// It lacks an export the host needs, or one has the wrong type.
    #[error("does not export the weir:operator/operator@{WIT_VERSION} interface Weir calls: {0}")]
    Export(String),
    /// Its `describe` failed or declared something invalid.
    #[error("{0}")]
    Describe(String),
}

/// The host functions, shared by every module.
pub fn new_linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)?;
    Ok(linker)
}

impl LoadedModule {
    /// Reads, compiles and checks a component.
    pub fn load(
        engine: &Engine,
        linker: &Linker<HostState>,
        path: &Path,
    ) -> Result<Self, ModuleError> {
        let bytes = crate::files::read_bounded(path, crate::files::MAX_MODULE_BYTES, "a module")
            .map_err(ModuleError::Read)?;
        // A core module's preamble is version 1, layer 0; a component's is layer 1.
        if bytes.starts_with(b"\0asm\x01\0\0\0") {
            let wasi = wasmtime::Module::new(engine, &bytes).is_ok_and(|m| {
                m.imports()
                    .any(|i| i.module().starts_with("wasi_snapshot_preview"))
            });
            return Err(ModuleError::CoreModule { wasi });
        }
        let component =
            Component::new(engine, &bytes).map_err(|e| ModuleError::Invalid(format!("{e:#}")))?;
        let wasi: Vec<String> = component
            .component_type()
            .imports(engine)
            .map(|(name, _)| name)
            .filter(|name| name.starts_with("wasi:"))
            .map(str::to_owned)
            .collect();
        let ty = component.component_type();
        let contract = ty
            .imports(engine)
            .map(|(name, _)| name)
            .chain(ty.exports(engine).map(|(name, _)| name))
            .find_map(|name| {
                let version = name.strip_prefix("weir:operator/")?.split_once('@')?.1;
                (version != WIT_VERSION).then(|| (version.to_owned(), name.to_owned()))
            });
        if let Some((found, name)) = contract {
            return Err(ModuleError::Contract { found, name });
        }
        if let Some(first) = wasi.first() {
            let more = match wasi.len() {
                1 => String::new(),
                n => format!(" and {} more", n - 1),
            };
            return Err(ModuleError::Wasi(format!("{first}{more}")));
        }
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| ModuleError::Import(format!("{e:#}")))?;
        let pre = PluginPre::new(pre).map_err(|e| ModuleError::Export(format!("{e:#}")))?;
        // What describe may use: it runs before any config says otherwise.
        let limits = crate::graph::Limits {
            memory_bytes: 64 << 20,
            call_timeout: std::time::Duration::from_secs(1),
        };
        let outputs = super::wasm::describe(&pre, limits).map_err(ModuleError::Describe)?;
        Ok(Self {
            path: path.to_path_buf(),
            sha256: hex_sha256(&bytes),
            outputs,
            pre,
        })
    }
}

/// The SHA-256 of `bytes` in lowercase hex, as `sha256sum` prints it.
pub fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    use std::fmt::Write as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}
