//! `weir new plugin NAME`: a standalone crate, outside any Weir checkout,
//! that builds to a Weir component with one command and tests its logic
//! natively with `cargo test`.
//!
//! ```text
//! NAME/
//!     Cargo.toml            cdylib + rlib, the SDK dependency, a small release profile
//!     .cargo/config.toml    links wasm32-unknown-unknown with wasm-component-ld
//!     src/lib.rs            the operator and its unit test
//!     weir.toml             a topology that runs it
//!     README.md             how to build, test and run it
//!     .gitignore
//! ```

use std::path::{Path, PathBuf};

use thiserror::Error;

/// Where the generated crate gets the SDK from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkSource {
    /// A checkout's `guest-sdk` directory.
    Path(PathBuf),
    /// A git repository holding the Weir workspace.
    Git(String),
}

impl SdkSource {
    /// The SDK of the checkout this `weir` was built from, if it is still
    /// there.
    pub fn built_with() -> Option<Self> {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
        let sdk = std::fs::canonicalize(sdk).ok()?;
        sdk.join("Cargo.toml").is_file().then_some(Self::Path(sdk))
    }

    fn dependency(&self) -> String {
        match self {
            Self::Path(path) => format!("{{ path = {:?} }}", path.display().to_string()),
            Self::Git(url) => format!("{{ git = {url:?} }}"),
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct PluginTemplate {
    /// The crate's name (and the module's file stem, with `-` as `_`).
    pub name: String,
    /// A keyed-state example (a count per key) instead of a stateless one.
    pub with_state: bool,
    /// Where the SDK comes from.
    pub sdk: SdkSource,
}

/// Why the crate was not written.
#[derive(Debug, Error)]
pub enum ScaffoldError {
    /// Not a usable crate name.
    #[error(
        "`{0}` is not a crate name: use lower-case ASCII letters, digits, `-` and `_`, starting with a letter"
    )]
    BadName(String),
    /// The directory is there already.
    #[error("{} exists already; choose another name or directory", .0.display())]
    Exists(PathBuf),
    /// A file could not be written.
    #[error("cannot write {}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl PluginTemplate {
    /// Writes the crate into `dir` (which must not exist); returns the files.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, ScaffoldError> {
        let name = &self.name;
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !valid {
            return Err(ScaffoldError::BadName(name.clone()));
        }
        if dir.exists() {
            return Err(ScaffoldError::Exists(dir.to_path_buf()));
        }
        let stem = name.replace('-', "_");
        let type_name: String = name
            .split(['-', '_'])
            .map(|part| {
                let mut chars = part.chars();
                chars.next().map_or_else(String::new, |c| {
                    c.to_ascii_uppercase().to_string() + chars.as_str()
                })
            })
            .collect();
        let fill = |template: &str| {
            template
                .replace("{{name}}", name)
                .replace("{{stem}}", &stem)
                .replace("{{Type}}", &type_name)
                .replace("{{sdk}}", &self.sdk.dependency())
        };
        let lib = if self.with_state {
            STATEFUL_LIB
        } else {
            STATELESS_LIB
        };
        let files = [
            ("Cargo.toml", fill(CARGO_TOML)),
            (".cargo/config.toml", fill(CARGO_CONFIG)),
            ("src/lib.rs", fill(lib)),
            ("weir.toml", fill(WEIR_TOML)),
            ("README.md", fill(README)),
            (".gitignore", "/target/\n/var/\n".to_owned()),
        ];
        let mut written = Vec::new();
        for (relative, text) in files {
            let path = dir.join(relative);
            let io = |source| ScaffoldError::Io {
                path: path.clone(),
                source,
            };
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            std::fs::write(&path, text).map_err(io)?;
            written.push(path);
        }
        Ok(written)
    }
}

const CARGO_TOML: &str = include_str!("plugin/Cargo.toml.in");
const CARGO_CONFIG: &str = include_str!("plugin/config.toml.in");
const STATELESS_LIB: &str = include_str!("plugin/stateless.rs.in");
const STATEFUL_LIB: &str = include_str!("plugin/stateful.rs.in");
const WEIR_TOML: &str = include_str!("plugin/weir.toml.in");
const README: &str = include_str!("plugin/README.md.in");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_crate_and_refuses_bad_names_and_existing_directories() {
        let dir = tempfile::tempdir().unwrap();
        let template = PluginTemplate {
            name: "my-op".into(),
            with_state: true,
            sdk: SdkSource::Git("https://example.invalid/weir".into()),
        };
        let target = dir.path().join("my-op");
        let files = template.write(&target).unwrap();
        assert_eq!(files.len(), 6);
        let lib = std::fs::read_to_string(target.join("src/lib.rs")).unwrap();
        assert!(lib.contains("pub struct MyOp"), "{lib}");
        assert!(lib.contains("export_operator!(MyOp)"), "{lib}");
        let manifest = std::fs::read_to_string(target.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("name = \"my-op\""), "{manifest}");
        assert!(
            manifest.contains("git = \"https://example.invalid/weir\""),
            "{manifest}"
        );
        assert!(!manifest.contains("{{"), "{manifest}");
        assert!(matches!(
            template.write(&target),
            Err(ScaffoldError::Exists(_))
        ));
        for bad in ["My", "1op", "", "a b", "ü"] {
            let t = PluginTemplate {
                name: bad.into(),
                ..template.clone()
            };
            assert!(matches!(
                t.write(&dir.path().join("x")),
                Err(ScaffoldError::BadName(_))
            ));
        }
    }
}
