//! Loading a component and checking that it fits the `weir:operator` world.

use std::path::{Path, PathBuf};

use thiserror::Error;
use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

use super::bindings::{Plugin, PluginPre};
use super::wasm::HostState;

/// A component compiled and checked against the `weir:operator` world, ready to
/// instantiate any number of times.
pub struct LoadedModule {
    /// The file it came from.
    pub path: PathBuf,
    /// SHA-256 of the file, hex: what `/topology` shows and a reload compares.
    pub sha256: String,
    pub(crate) pre: PluginPre<HostState>,
}

impl std::fmt::Debug for LoadedModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModule")
            .field("path", &self.path)
            .field("sha256", &self.sha256)
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
        "this is a core WebAssembly module, not a component: build the plugin for \
         wasm32-unknown-unknown linked by wasm-component-ld (see guest-sdk) or for wasm32-wasip2"
    )]
    CoreModule,
    /// It is not valid WebAssembly.
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    /// It imports something the host does not offer.
    #[error("{0} (Weir offers only weir:operator/host@0.1.0: no WASI, files, network or clock)")]
    Import(String),
    /// It lacks an export the host needs, or one has the wrong type.
    #[error("does not export the weir:operator/operator@0.1.0 interface Weir calls: {0}")]
    Export(String),
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
        let bytes = std::fs::read(path).map_err(ModuleError::Read)?;
        // A core module's preamble is version 1, layer 0; a component's is layer 1.
        if bytes.starts_with(b"\0asm\x01\0\0\0") {
            return Err(ModuleError::CoreModule);
        }
        let component =
            Component::new(engine, &bytes).map_err(|e| ModuleError::Invalid(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| ModuleError::Import(format!("{e:#}")))?;
        let pre = PluginPre::new(pre).map_err(|e| ModuleError::Export(format!("{e:#}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            sha256: hex_sha256(&bytes),
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
