use std::path::{Path, PathBuf};

use crate::config::RawConfig;
use crate::diagnostic::{Diagnostic, SourceText};

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

/// Reads and parses a topology file.
pub fn load_file(path: &Path) -> Result<ConfigFile, Vec<Diagnostic>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Diagnostic::file(
            path,
            format!("cannot read the config file: {e}"),
        )]
    })?;
    parse_str(path, text)
}

/// Parses topology text that was read from `path`.
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
        let e = error("[sources.a]\ntype = \"kafka\"\n");
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
        assert_eq!(cfg.dir, Path::new("dir"));
    }
}
