//! Errors about the user's input, each pointing at a file and, where known, a
//! line and column or a component id, so `weir validate` can list them all.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One problem found in a config file or a module it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file the problem is in (the config file, or a module).
    pub file: PathBuf,
    /// 1-based line and column in `file`, when the problem has a position.
    pub position: Option<(usize, usize)>,
    /// The component the problem belongs to, e.g. `operators.upper`.
    pub component: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl Diagnostic {
    /// A problem with a whole file.
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            position: None,
            component: None,
            message: message.into(),
        }
    }

    /// Names the component the problem belongs to.
    pub fn in_component(mut self, component: impl Into<String>) -> Self {
        self.component = Some(component.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        f.write_str(": ")?;
        if let Some(component) = &self.component {
            write!(f, "{component}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// The text of a config file, for turning byte offsets into lines and columns.
#[derive(Debug, Clone)]
pub struct SourceText {
    path: PathBuf,
    text: Arc<str>,
}

impl SourceText {
    /// Wraps the text read from `path`.
    pub fn new(path: &Path, text: String) -> Self {
        Self {
            path: path.to_path_buf(),
            text: text.into(),
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or(&self.text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    /// A problem at a byte offset of this file.
    pub fn at(&self, offset: usize, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: self.path.clone(),
            position: Some(self.line_col(offset)),
            component: None,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let t = SourceText::new(Path::new("f"), "ab\ncdé\nx".to_owned());
        assert_eq!(t.line_col(0), (1, 1));
        assert_eq!(t.line_col(3), (2, 1));
        assert_eq!(t.line_col(7), (2, 4));
        assert_eq!(t.line_col(8), (3, 1));
        assert_eq!(t.at(4, "m").to_string(), "f:2:2: m");
    }
}
