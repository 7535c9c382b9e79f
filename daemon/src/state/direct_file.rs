//! A write-once file written around the page cache.
//!
//! A snapshot file is written once and read only by a restore, so caching it
//! buys nothing, and copying it into the page cache is most of what writing it
//! costs: in the checkpoint benchmark on the development VM that copy took 8 of
//! the writer thread's 14 CPU-seconds, on a machine whose two cores the
//! pipeline needs. With `O_DIRECT` the device reads the writer's own buffer.
//! RocksDB offers the same for its flushes and compactions
//! (`use_direct_io_for_flush_and_compaction`).
//!
//! `O_DIRECT` wants block-aligned buffers, offsets and lengths, so whole
//! blocks go out directly and the file's unaligned tail through an ordinary
//! handle, which also syncs the file. Where the file system refuses
//! `O_DIRECT` (tmpfs before Linux 6.6, for one), or on other systems, the file
//! is written through the page cache as usual.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Alignment of direct writes: the largest logical block size in common use.
const BLOCK: usize = 4096;
/// Bytes gathered before a write: large enough that the device streams.
const CHUNK: usize = 1 << 20;

/// A file being written, buffered in [`CHUNK`]s.
pub(crate) struct DirectFile {
    path: PathBuf,
    file: File,
    /// Whether `file` was opened with `O_DIRECT`.
    direct: bool,
    /// `CHUNK + BLOCK` bytes; the chunk starts at `start`, block-aligned.
    buf: Vec<u8>,
    start: usize,
    /// Bytes of the chunk filled.
    len: usize,
    /// Bytes written to the file so far.
    written: u64,
}

impl DirectFile {
    /// Creates (or truncates) `path`, bypassing the page cache if it can.
    pub(crate) fn create(path: &Path) -> std::io::Result<Self> {
        let (file, direct) = match open_direct(path) {
            Ok(file) => (file, true),
            Err(_) => (File::create(path)?, false),
        };
        let buf = vec![0u8; CHUNK + BLOCK];
        let start = buf.as_ptr().align_offset(BLOCK);
        if start >= BLOCK {
            return Err(std::io::Error::other("cannot align a write buffer"));
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            direct,
            buf,
            start,
            len: 0,
            written: 0,
        })
    }

    /// Writes the first `n` bytes of the chunk (`n` a multiple of [`BLOCK`]
    /// unless the file is written through the page cache).
    fn write_out(&mut self, n: usize) -> std::io::Result<()> {
        let chunk = &self.buf[self.start..self.start + n];
        match self.file.write_all(chunk) {
            Ok(()) => {}
            // Some file systems accept the flag at open and refuse the write.
            Err(e) if self.direct && e.raw_os_error() == Some(EINVAL) => {
                self.file = self.reopen()?;
                self.direct = false;
                self.file.write_all(chunk)?;
            }
            Err(e) => return Err(e),
        }
        self.written += n as u64;
        self.buf
            .copy_within(self.start + n..self.start + self.len, self.start);
        self.len -= n;
        Ok(())
    }

    /// The file again, through the page cache, positioned after what was written.
    fn reopen(&self) -> std::io::Result<File> {
        let mut file = OpenOptions::new().write(true).open(&self.path)?;
        file.seek(SeekFrom::Start(self.written))?;
        Ok(file)
    }

    /// Writes what is buffered and syncs the file's data and metadata to disk.
    pub(crate) fn finish(mut self) -> std::io::Result<()> {
        let whole = if self.direct {
            self.len / BLOCK * BLOCK
        } else {
            self.len
        };
        if whole > 0 {
            self.write_out(whole)?;
        }
        if self.len > 0 {
            // The unaligned tail cannot go out directly.
            let mut tail = self.reopen()?;
            tail.write_all(&self.buf[self.start..self.start + self.len])?;
            self.file = tail;
        }
        self.file.sync_all()
    }
}

impl Write for DirectFile {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.len == CHUNK {
            self.write_out(CHUNK)?;
        }
        let n = data.len().min(CHUNK - self.len);
        let at = self.start + self.len;
        self.buf[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        Ok(n)
    }

    /// Buffered bytes stay buffered: only [`DirectFile::finish`] may write an
    /// unaligned tail.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(target_os = "linux")]
const EINVAL: i32 = libc::EINVAL;
#[cfg(not(target_os = "linux"))]
const EINVAL: i32 = 22;

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> std::io::Result<File> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_arrives_whatever_the_write_sizes() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Sizes around the block and chunk edges, written in odd pieces.
        for size in [
            0,
            1,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            CHUNK,
            CHUNK + 7,
            3 * CHUNK + BLOCK + 3,
        ] {
            let path = dir.path().join(format!("f{size}"));
            let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let mut file = DirectFile::create(&path).expect("create");
            for piece in data.chunks(4093) {
                file.write_all(piece).expect("write");
            }
            file.finish().expect("finish");
            assert_eq!(std::fs::read(&path).expect("read"), data, "size {size}");
        }
    }
}
