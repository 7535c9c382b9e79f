//! Keyed-state snapshot files: the stored items of one operator instance, in
//! the [`super::layout`] encoding, grouped by key group, with an index so that
//! a restore at another parallelism reads only the key groups it now owns.
//!
//! ```text
//! file    := magic  item*  index  trailer
//! magic   := "WEIRKS01"
//! item    := key_len:u32 LE  key  value_len:u32 LE  value
//! index   := (key_group:u16 LE  offset:u64 LE  items:u64 LE)*   one per non-empty key group, ascending
//! trailer := index_offset:u64 LE  groups:u32 LE  "WEIRKS01"
//! ```
//!
//! The file's length and CRC-32 go into the checkpoint metadata, and a restore
//! checks both before it trusts a byte.
//!
//! An incremental checkpoint writes a *change file* in the same layout: the
//! items written since the previous checkpoint, and tombstones. A tombstone is
//! an item with an empty value (a real value always holds its 8-byte write
//! time), and removes the one stored item with that key: a value, a list, or
//! one map entry. A restore applies the full file, then each change file in
//! order.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::StateError;
use super::direct_file::DirectFile;

const MAGIC: &[u8; 8] = b"WEIRKS01";
const TRAILER: u64 = 8 + 4 + 8;
const INDEX_ENTRY: u64 = 2 + 8 + 8;

/// A written file's size and checksum, as the checkpoint metadata records them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileSummary {
    /// Length in bytes.
    pub bytes: u64,
    /// CRC-32 (IEEE) of the whole file.
    pub crc32: u32,
}

/// Why a snapshot file could not be written or read.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// The file system failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not what the metadata says it is.
    #[error("{} is corrupt: {reason}", .path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A backend could not produce or take an item.
    #[error(transparent)]
    State(#[from] StateError),
}

/// A writer that counts and checksums what passes through it.
struct Summing<W> {
    inner: W,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a snapshot file; items must come key group by key group, ascending.
pub struct SnapshotWriter {
    path: PathBuf,
    out: Summing<DirectFile>,
    /// (key group, offset of its first item, items).
    index: Vec<(u16, u64, u64)>,
}

impl SnapshotWriter {
    /// Creates the file (replacing any).
    pub fn create(path: &Path) -> Result<Self, SnapshotError> {
        let io = |source| SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = DirectFile::create(path).map_err(io)?;
        let mut out = Summing {
            inner: file,
            crc: crc32fast::Hasher::new(),
            bytes: 0,
        };
        out.write_all(MAGIC).map_err(io)?;
        Ok(Self {
            path: path.to_path_buf(),
            out,
            index: Vec::new(),
        })
    }

    fn io(&self, source: std::io::Error) -> SnapshotError {
        SnapshotError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Adds one stored item.
    pub fn item(&mut self, key: &[u8], value: &[u8]) -> Result<(), SnapshotError> {
        let group = match key {
            [a, b, ..] => u16::from_be_bytes([*a, *b]),
            _ => {
                return Err(
                    StateError::Storage("a stored state key has no key group".into()).into(),
                );
            }
        };
        match self.index.last_mut() {
            Some((last, _, items)) if *last == group => *items += 1,
            Some((last, ..)) if *last > group => {
                return Err(StateError::Storage(format!(
                    "snapshot items out of key-group order ({group} after {last})"
                ))
                .into());
            }
            _ => self.index.push((group, self.out.bytes, 1)),
        }
        let (klen, vlen) = (len32(key)?, len32(value)?);
        let out = &mut self.out;
        let result = out
            .write_all(&klen)
            .and_then(|()| out.write_all(key))
            .and_then(|()| out.write_all(&vlen))
            .and_then(|()| out.write_all(value));
        result.map_err(|e| self.io(e))
    }

    /// Adds `items` items of `group`, already encoded as this file lays them
    /// out (as [`super::layout::push_item`] and `push_tombstone` append them):
    /// one write instead of one per item.
    pub fn encoded_items(
        &mut self,
        group: u16,
        items: u64,
        encoded: &[u8],
    ) -> Result<(), SnapshotError> {
        if items == 0 {
            return Ok(());
        }
        match self.index.last_mut() {
            Some((last, _, n)) if *last == group => *n += items,
            Some((last, ..)) if *last > group => {
                return Err(StateError::Storage(format!(
                    "snapshot items out of key-group order ({group} after {last})"
                ))
                .into());
            }
            _ => self.index.push((group, self.out.bytes, items)),
        }
        let result = self.out.write_all(encoded);
        result.map_err(|e| self.io(e))
    }

    /// Adds a tombstone: `key` (a slot's or a map entry's) was removed.
    pub fn tombstone(&mut self, key: &[u8]) -> Result<(), SnapshotError> {
        self.item(key, &[])
    }

    /// Writes the index, syncs the file to disk and returns its summary.
    pub fn finish(mut self) -> Result<FileSummary, SnapshotError> {
        let index_offset = self.out.bytes;
        let mut tail = Vec::with_capacity(self.index.len() * INDEX_ENTRY as usize + 20);
        for (group, offset, items) in &self.index {
            tail.extend_from_slice(&group.to_le_bytes());
            tail.extend_from_slice(&offset.to_le_bytes());
            tail.extend_from_slice(&items.to_le_bytes());
        }
        tail.extend_from_slice(&index_offset.to_le_bytes());
        tail.extend_from_slice(&(self.index.len() as u32).to_le_bytes());
        tail.extend_from_slice(MAGIC);
        self.out.write_all(&tail).map_err(|e| self.io(e))?;
        let Summing { inner, crc, bytes } = self.out;
        inner.finish().map_err(|source| SnapshotError::Io {
            path: self.path,
            source,
        })?;
        Ok(FileSummary {
            bytes,
            crc32: crc.finalize(),
        })
    }
}

fn len32(bytes: &[u8]) -> Result<[u8; 4], StateError> {
    u32::try_from(bytes.len())
        .map(u32::to_le_bytes)
        .map_err(|_| StateError::Storage("a state item is larger than 4 GiB".into()))
}

/// Receives each (key, value) item read back.
pub type ItemSink<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), StateError> + 'a;

/// A snapshot file whose length and checksum matched its summary.
pub struct SnapshotReader {
    path: PathBuf,
    index: Vec<(u16, u64, u64)>,
}

impl SnapshotReader {
    /// Opens the file and checks it against `expected` and its own structure.
    pub fn open(path: &Path, expected: &FileSummary) -> Result<Self, SnapshotError> {
        let corrupt = |reason: String| SnapshotError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let summary = summarize(path)?;
        if summary.bytes != expected.bytes {
            return Err(corrupt(format!(
                "{} bytes long, the checkpoint metadata says {}",
                summary.bytes, expected.bytes
            )));
        }
        if summary.crc32 != expected.crc32 {
            return Err(corrupt(format!(
                "checksum {:08x}, the checkpoint metadata says {:08x}",
                summary.crc32, expected.crc32
            )));
        }
        let mut file = File::open(path).map_err(|source| SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let index = read_index(&mut file, summary.bytes).map_err(corrupt)?;
        Ok(Self {
            path: path.to_path_buf(),
            index,
        })
    }

    /// The key groups the file holds items of, ascending.
    pub fn groups(&self) -> impl Iterator<Item = u16> + '_ {
        self.index.iter().map(|&(group, ..)| group)
    }

    /// Calls `f` with every item of the key groups in `groups`.
    pub fn read_groups(
        &self,
        groups: &Range<u32>,
        f: &mut ItemSink<'_>,
    ) -> Result<(), SnapshotError> {
        let io = |source| SnapshotError::Io {
            path: self.path.clone(),
            source,
        };
        let corrupt = |reason: &str| SnapshotError::Corrupt {
            path: self.path.clone(),
            reason: reason.to_owned(),
        };
        let mut file = BufReader::with_capacity(1 << 20, File::open(&self.path).map_err(io)?);
        let (mut key, mut value) = (Vec::new(), Vec::new());
        for &(group, offset, items) in &self.index {
            if !groups.contains(&u32::from(group)) {
                continue;
            }
            file.seek(SeekFrom::Start(offset)).map_err(io)?;
            for _ in 0..items {
                read_sized(&mut file, &mut key).map_err(io)?;
                read_sized(&mut file, &mut value).map_err(io)?;
                if key.get(..2) != Some(&group.to_be_bytes()[..]) {
                    return Err(corrupt("an item is filed under the wrong key group"));
                }
                f(&key, &value)?;
            }
        }
        Ok(())
    }
}

fn read_sized(from: &mut impl Read, into: &mut Vec<u8>) -> std::io::Result<()> {
    let mut len = [0u8; 4];
    from.read_exact(&mut len)?;
    into.resize(u32::from_le_bytes(len) as usize, 0);
    from.read_exact(into)
}

fn read_index(file: &mut File, len: u64) -> Result<Vec<(u16, u64, u64)>, String> {
    let io = |e: std::io::Error| e.to_string();
    if len < MAGIC.len() as u64 + TRAILER {
        return Err("too short to be a state snapshot".into());
    }
    let mut trailer = [0u8; TRAILER as usize];
    file.seek(SeekFrom::Start(len - TRAILER)).map_err(io)?;
    file.read_exact(&mut trailer).map_err(io)?;
    if &trailer[12..] != MAGIC {
        return Err("no state snapshot trailer".into());
    }
    let mut u64_at = [0u8; 8];
    u64_at.copy_from_slice(&trailer[..8]);
    let index_offset = u64::from_le_bytes(u64_at);
    let groups = u64::from(u32::from_le_bytes([
        trailer[8],
        trailer[9],
        trailer[10],
        trailer[11],
    ]));
    if index_offset.checked_add(groups * INDEX_ENTRY) != Some(len - TRAILER) {
        return Err("the index does not fit the file".into());
    }
    let mut raw = vec![0u8; (groups * INDEX_ENTRY) as usize];
    file.seek(SeekFrom::Start(index_offset)).map_err(io)?;
    file.read_exact(&mut raw).map_err(io)?;
    let mut index = Vec::with_capacity(groups as usize);
    for entry in raw.chunks_exact(INDEX_ENTRY as usize) {
        let group = u16::from_le_bytes([entry[0], entry[1]]);
        u64_at.copy_from_slice(&entry[2..10]);
        let offset = u64::from_le_bytes(u64_at);
        u64_at.copy_from_slice(&entry[10..18]);
        let items = u64::from_le_bytes(u64_at);
        if offset < MAGIC.len() as u64 || offset >= index_offset {
            return Err(format!("key group {group} points outside the items"));
        }
        index.push((group, offset, items));
    }
    Ok(index)
}

/// The length and CRC-32 of a file, read through once.
pub fn summarize(path: &Path) -> Result<FileSummary, SnapshotError> {
    let io = |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        crc.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok(FileSummary {
        bytes,
        crc32: crc.finalize(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn key(group: u16, k: &str) -> Vec<u8> {
        let mut v = group.to_be_bytes().to_vec();
        v.extend_from_slice(k.as_bytes());
        v
    }

    fn read(reader: &SnapshotReader, groups: Range<u32>) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        reader
            .read_groups(&groups, &mut |k, v| {
                out.push((k.to_vec(), v.to_vec()));
                Ok(())
            })
            .unwrap();
        out
    }

    #[test]
    fn items_come_back_by_key_group_and_damage_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let mut w = SnapshotWriter::create(&path).unwrap();
        for (g, k) in [(1, "a"), (1, "b"), (5, "c"), (9, "d")] {
            w.item(&key(g, k), k.as_bytes()).unwrap();
        }
        assert!(w.item(&key(2, "late"), b"").is_err(), "order is checked");
        let summary = w.finish().unwrap();
        let r = SnapshotReader::open(&path, &summary).unwrap();
        assert_eq!(read(&r, 0..100).len(), 4);
        assert_eq!(
            read(&r, 2..9),
            vec![(key(5, "c"), b"c".to_vec())],
            "only the asked key groups"
        );

        let mut bytes = std::fs::read(&path).unwrap();
        bytes[10] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = SnapshotReader::open(&path, &summary).err().unwrap();
        assert!(err.to_string().contains("checksum"), "{err}");
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let err = SnapshotReader::open(&path, &summary).err().unwrap();
        assert!(err.to_string().contains("bytes long"), "{err}");
    }
}
