//! Checkpoints on disk:
//!
//! ```text
//! <data_dir>/checkpoints/
//!     chk-0000000042/
//!         <operator>-<instance>.keyed      keyed-state snapshot (crate::state::snapshot)
//!         <operator>-<instance>.opstate    the plugin's operator state, as it gave it
//!         _metadata                        JSON (super::metadata), written last
//! ```
//!
//! A directory without `_metadata` is a checkpoint that never completed; it is
//! removed at start. Every write that a checkpoint depends on is fsynced, and
//! the metadata goes in by temp file, fsync, rename and directory fsync, so
//! after a crash `_metadata` is either absent or whole.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::CheckpointId;
use super::metadata::{FileRef, Metadata};
use crate::state::snapshot::summarize;

/// The file whose presence makes a checkpoint complete.
pub const METADATA: &str = "_metadata";
const PREFIX: &str = "chk-";
/// A damaged checkpoint set aside by a restore (`corrupt-<id>`); its id
/// stays used.
pub(super) const CORRUPT_PREFIX: &str = "corrupt-";
/// A directory named like a checkpoint that the daemon did not take (a
/// savepoint copied in, say), set aside by a restore; its id is not counted.
pub(super) const FOREIGN_PREFIX: &str = "foreign-";

/// Why a checkpoint could not be written or read.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The file system failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A file is not what the metadata says.
    #[error("{}: {reason}", .path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The directory of checkpoint `id` under `root`.
pub fn checkpoint_dir(root: &Path, id: CheckpointId) -> PathBuf {
    root.join(format!("{PREFIX}{id:010}"))
}

/// Makes a directory's entries (new files, renames) durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Writes `bytes` to `dir/name` and syncs it; returns its reference.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<FileRef, StoreError> {
    let path = dir.join(name);
    let mut file = File::create(&path).map_err(io(&path))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io(&path))?;
    Ok(FileRef {
        file: name.to_owned(),
        bytes: bytes.len() as u64,
        crc32: crc32fast::hash(bytes),
    })
}

/// Reads a data file of a checkpoint, checking it against its reference.
pub fn read_file(dir: &Path, file: &FileRef) -> Result<Vec<u8>, StoreError> {
    let path = dir.join(&file.file);
    let bytes = fs::read(&path).map_err(io(&path))?;
    if bytes.len() as u64 != file.bytes || crc32fast::hash(&bytes) != file.crc32 {
        return Err(StoreError::Corrupt {
            path,
            reason: "length or checksum differs from the checkpoint metadata".into(),
        });
    }
    Ok(bytes)
}

/// The checkpoints under one root directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The store at `root`, created if missing.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(root).map_err(io(root))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// Its root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the (empty) directory of checkpoint `id`.
    pub fn begin(&self, id: CheckpointId) -> Result<PathBuf, StoreError> {
        let dir = checkpoint_dir(&self.root, id);
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(dir)
    }

    /// Makes checkpoint `dir` complete: its data files are already synced;
    /// their directory entries are synced, then the metadata goes in
    /// atomically.
    pub fn complete(&self, dir: &Path, metadata: &Metadata) -> Result<(), StoreError> {
        sync_dir(dir)?;
        super::failpoint::check(super::failpoint::Point::BeforeMetadata);
        let json = super::metadata::seal(metadata).map_err(|e| StoreError::Corrupt {
            path: dir.join(METADATA),
            reason: format!("cannot encode: {e}"),
        })?;
        write_metadata(dir, &json)?;
        sync_dir(&self.root)
    }

    /// Removes checkpoint `id`'s directory (an abandoned checkpoint).
    pub fn discard(&self, id: CheckpointId) {
        let dir = checkpoint_dir(&self.root, id);
        if let Err(e) = fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), "cannot remove an abandoned checkpoint: {e}");
        }
    }

    /// Checkpoint directories, oldest first, and whether each is complete.
    fn list(&self) -> Result<Vec<(CheckpointId, PathBuf, bool)>, StoreError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(io(&self.root))? {
            let entry = entry.map_err(io(&self.root))?;
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_prefix(PREFIX))
                .and_then(|n| n.parse::<CheckpointId>().ok())
            else {
                continue;
            };
            let path = entry.path();
            let complete = path.join(METADATA).is_file();
            out.push((id, path, complete));
        }
        out.sort_by_key(|(id, ..)| *id);
        Ok(out)
    }

    /// Complete checkpoints, newest first.
    pub fn complete_checkpoints(&self) -> Result<Vec<(CheckpointId, PathBuf)>, StoreError> {
        let mut out: Vec<_> = self
            .list()?
            .into_iter()
            .filter(|(.., complete)| *complete)
            .map(|(id, path, _)| (id, path))
            .collect();
        out.reverse();
        Ok(out)
    }

    /// The highest checkpoint id ever used here (complete or not, or set
    /// aside as damaged), so no id is used twice.
    pub fn highest_id(&self) -> Result<CheckpointId, StoreError> {
        let mut highest = self.list()?.last().map_or(0, |(id, ..)| *id);
        for entry in fs::read_dir(&self.root).map_err(io(&self.root))? {
            let entry = entry.map_err(io(&self.root))?;
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(CORRUPT_PREFIX))
                .and_then(|n| n.parse::<CheckpointId>().ok())
            {
                highest = highest.max(id);
            }
        }
        Ok(highest)
    }

    /// Removes checkpoints that never completed.
    pub fn remove_partial(&self) -> Result<usize, StoreError> {
        let mut removed = 0;
        for (_, path, complete) in self.list()? {
            if !complete {
                fs::remove_dir_all(&path).map_err(io(&path))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Keeps the newest `keep` complete checkpoints; removes older ones.
    pub fn retain(&self, keep: usize) -> Result<(), StoreError> {
        let complete = self.complete_checkpoints()?;
        for (_, path) in complete.iter().skip(keep) {
            super::failpoint::check(super::failpoint::Point::DuringCleanup);
            // The metadata goes first: a crash halfway leaves a partial
            // checkpoint (removed at start), never a complete one with holes.
            let metadata = path.join(METADATA);
            fs::remove_file(&metadata).map_err(io(&metadata))?;
            fs::remove_dir_all(path).map_err(io(path))?;
        }
        Ok(())
    }
}

/// Writes `_metadata` atomically: temp file, fsync, rename, directory fsync.
pub(super) fn write_metadata(dir: &Path, json: &[u8]) -> Result<(), StoreError> {
    write_atomic(dir, METADATA, json)
}

/// Writes `dir/name` so that after a crash it is either absent (or as it
/// was) or whole: temp file, fsync, rename, directory fsync.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let temp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&temp).map_err(io(&temp))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io(&temp))?;
    let target = dir.join(name);
    fs::rename(&temp, &target).map_err(io(&target))?;
    sync_dir(dir)
}

/// Reads a checkpoint's metadata and checks every file it names.
pub fn load(dir: &Path) -> Result<Metadata, StoreError> {
    let path = dir.join(METADATA);
    let bytes = fs::read(&path).map_err(io(&path))?;
    let metadata = super::metadata::unseal(&bytes).map_err(|e| StoreError::Corrupt {
        path: path.clone(),
        reason: format!("not valid checkpoint metadata: {e}"),
    })?;
    for file in metadata.files() {
        let path = dir.join(&file.file);
        let summary = summarize(&path).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if summary.bytes != file.bytes || summary.crc32 != file.crc32 {
            return Err(StoreError::Corrupt {
                path,
                reason: format!(
                    "{} bytes with checksum {:08x}; the metadata says {} bytes, {:08x}",
                    summary.bytes, summary.crc32, file.bytes, file.crc32
                ),
            });
        }
    }
    Ok(metadata)
}
