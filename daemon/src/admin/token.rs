//! The admin token (`[daemon] admin_token_file`): requests that change the
//! daemon (reload, savepoints) over TCP must carry it as a bearer token.

use std::path::Path;

/// The most bytes a token file may have.
const MAX_TOKEN_BYTES: u64 = 4096;

/// Reads a token file: its first line, which must not be empty.
pub fn read(path: &Path) -> Result<String, String> {
    let bytes = crate::files::read_bounded(path, MAX_TOKEN_BYTES, "a token file")
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.is_empty() {
        return Err(format!("{} holds no token", path.display()));
    }
    Ok(token)
}

/// Whether an `Authorization` header value carries `token`, compared in
/// constant time so the answer's timing tells nothing about the token.
pub fn accepts(header: Option<&[u8]>, token: &str) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else {
        return false;
    };
    let expected = token.as_bytes();
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_accepted() {
        assert!(accepts(Some(b"Bearer s3cret"), "s3cret"));
        assert!(!accepts(Some(b"Bearer s3cre"), "s3cret"));
        assert!(!accepts(Some(b"Bearer s3crex"), "s3cret"));
        assert!(!accepts(Some(b"s3cret"), "s3cret"));
        assert!(!accepts(None, "s3cret"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        std::fs::write(&file, "  tok \nsecond line\n").unwrap();
        assert_eq!(read(&file).unwrap(), "tok");
        std::fs::write(&file, "\n").unwrap();
        assert!(read(&file).unwrap_err().contains("holds no token"));
    }
}
