use std::path::{Path, PathBuf};

use crate::config::RawConfig;
use crate::diagnostic::{Diagnostic, SourceText};
use crate::files::{MAX_CONFIG_BYTES, read_bounded};

/// A parsed topology file, with the text it came from (for error positions).
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// The file, as given.
    pub path: PathBuf,
    /// Its directory, against which relative paths resolve.
    pub dir: PathBuf,
    /// Its text.
    pub text: SourceText,
    /// What it says.
    pub raw: RawConfig,
}

impl ConfigFile {
    /// `[daemon] data_dir`, resolved (default `var/weir` beside the file).
    pub fn data_dir(&self) -> PathBuf {
        self.resolve(
            self.raw
                .daemon
                .data_dir
                .as_deref()
                .unwrap_or(Path::new("var/weir")),
        )
    }

    /// `[daemon] admin_socket`, resolved (default `<data_dir>/admin.sock`).
    pub fn admin_socket(&self) -> PathBuf {
        match &self.raw.daemon.admin_socket {
            Some(path) => self.resolve(path),
            None => self.data_dir().join("admin.sock"),
        }
    }

    /// `path` resolved against the file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.dir.join(path)
        }
    }
}

/// Reads and parses a topology file: a regular file of at most
/// [`MAX_CONFIG_BYTES`], in UTF-8.
pub fn load_file(path: &Path) -> Result<ConfigFile, Vec<Diagnostic>> {
    let cannot = |e: &dyn std::fmt::Display| {
        vec![Diagnostic::file(
            path,
            format!("cannot read the config file: {e}"),
        )]
    };
    let bytes = read_bounded(path, MAX_CONFIG_BYTES, "a config file").map_err(|e| cannot(&e))?;
    let text = String::from_utf8(bytes).map_err(|e| cannot(&e))?;
    parse_str(path, text)
}

/// Parses topology text that was read from `path`. Relative paths in it
/// resolve against the file's directory, made absolute now, so nothing the
/// daemon records (in checkpoints above all) depends on the working directory.
pub fn parse_str(path: &Path, text: String) -> Result<ConfigFile, Vec<Diagnostic>> {
    let text = SourceText::new(path, text);
    let raw: RawConfig = toml::from_str(text.as_str()).map_err(|e| {
        let message = e.message().trim_end().to_owned();
        vec![match e.span() {
            Some(span) => text.at(span.start, message),
            None => Diagnostic::file(path, message),
        }]
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    Ok(ConfigFile {
        path: path.to_path_buf(),
        dir,
        text,
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        let errs = parse_str(Path::new("t.toml"), text.to_owned()).unwrap_err();
        errs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let e = error("[sources.a]\ntype = \"file\"\npath = \n");
        assert!(e.starts_with("t.toml:3:"), "{e}");
    }

    #[test]
    fn unknown_keys_are_errors_at_their_line() {
        let e = error(
            "[sources.a]\ntype = \"generator\"\n\n[sinks.b]\ntype = \"stdout\"\ninputs = [\"a\"]\ncolour = 1\n",
        );
        assert!(e.starts_with("t.toml:7:1: unknown field `colour`"), "{e}");
    }

    #[test]
    fn unknown_kinds_name_the_choices() {
        let e = error("[sources.a]\ntype = \"pulsar\"\n");
        assert!(
            e.contains("t.toml:2:8") && e.contains("file") && e.contains("generator"),
            "{e}"
        );
    }

    #[test]
    fn human_sizes_and_durations_parse() {
        let cfg = parse_str(
            Path::new("dir/t.toml"),
            "[operators.o]\nmodule = \"m.wasm\"\nmemory_limit = \"16MiB\"\ncall_timeout = \"250ms\"\n".to_owned(),
        )
        .unwrap();
        let op = cfg.raw.operators.values().next().unwrap();
        assert_eq!(op.memory_limit.unwrap().as_u64(), 16 * 1024 * 1024);
        assert_eq!(op.call_timeout.unwrap().as_millis(), 250);
        assert!(
            cfg.dir.is_absolute() && cfg.dir.ends_with("dir"),
            "{:?}",
            cfg.dir
        );
    }
}
