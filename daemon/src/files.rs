//! Files a user names (the config, modules, a source's input) must be regular
//! files, and those read whole must be of bounded size: a FIFO would block a
//! reader forever, and `/dev/zero` or a huge file would exhaust memory.

use std::fs::{File, FileType, Metadata};
use std::io::{self, Read};
use std::path::Path;

/// The most bytes a topology file may have.
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;
/// The most bytes a WebAssembly module may have.
pub const MAX_MODULE_BYTES: u64 = 256 * 1024 * 1024;

/// What kind of file `file_type` is, for an error that says why it is refused.
pub fn kind_name(file_type: FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

/// The metadata of `path` (symbolic links followed) if it is a regular file;
/// otherwise an error saying what it is. `stat` never blocks, so a FIFO is
/// refused before anything opens it.
pub fn regular(path: &Path) -> io::Result<Metadata> {
    let metadata = std::fs::metadata(path)?;
    if metadata.is_file() {
        Ok(metadata)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is {}, not a regular file",
                path.display(),
                kind_name(metadata.file_type())
            ),
        ))
    }
}

/// `path` made absolute with symbolic links and `..` resolved as far as it
/// exists, the rest taken as written: two spellings of one file compare
/// equal even before the file is created.
pub fn resolve(path: &Path) -> std::path::PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = std::path::PathBuf::new();
    for component in absolute.components() {
        match component {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
        // Links in what exists are followed, so a `..` after one goes where
        // the kernel would take it.
        if let Ok(real) = std::fs::canonicalize(&out) {
            out = real;
        }
    }
    out
}

/// Reads a regular file of at most `limit` bytes whole.
pub fn read_bounded(path: &Path, limit: u64, what: &str) -> io::Result<Vec<u8>> {
    let len = regular(path)?.len();
    let too_large = |len: u64| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} has {len} bytes; {what} may have at most {limit}",
                path.display()
            ),
        )
    };
    if len > limit {
        return Err(too_large(len));
    }
    let file = File::open(path)?;
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // The file may grow between the stat and the read.
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_regular_file_and_what_is_too_large() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_bounded(dir.path(), 10, "a config").unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        let e = read_bounded(Path::new("/dev/zero"), 10, "a config").unwrap_err();
        assert!(e.to_string().contains("a character device"), "{e}");
        let file = dir.path().join("f");
        std::fs::write(&file, b"0123456789a").unwrap();
        let e = read_bounded(&file, 10, "a config").unwrap_err();
        assert!(
            e.to_string()
                .contains("has 11 bytes; a config may have at most 10"),
            "{e}"
        );
        assert_eq!(read_bounded(&file, 11, "a config").unwrap().len(), 11);
    }
}
