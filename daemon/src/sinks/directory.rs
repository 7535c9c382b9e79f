//! The exactly-once file sink: part files in a directory, each made visible
//! only when the checkpoint it belongs to is complete.
//!
//! ```text
//! <directory>/
//!     part-<checkpoint>-<instance>           committed: complete, final, never rewritten
//!     .pending/part-<checkpoint>-<instance>  being written, or waiting for its checkpoint
//! ```
//!
//! `<checkpoint>` is the id (10 digits) of the checkpoint that committed the
//! file, so listing the directory in name order gives the records in order.
//! Records between barriers `n-1` and `n` go into one pending file; at barrier
//! `n` it is flushed and fsynced and handed to the coordinator, which renames it
//! into place once checkpoint `n` is complete. A reader that ignores dot-files
//! sees only committed data. On restore, every pending file is removed (the
//! restored checkpoint's parts are committed first); committed parts are never
//! removed or replaced (see `supervisor::start`).
//!
//! Without `[checkpoint]`, the part is committed when the stream ends.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::encode;
use crate::batch::Batch;
use crate::checkpoint::{CheckpointId, Committable};
use crate::config::Encoding;

/// Where parts wait for their checkpoint.
const PENDING: &str = ".pending";

fn part_name(checkpoint: CheckpointId, instance: u32) -> String {
    format!("part-{checkpoint:010}-{instance}")
}

/// The checkpoint id in a part file's name.
fn part_checkpoint(name: &str) -> Option<CheckpointId> {
    name.strip_prefix("part-")?.split('-').next()?.parse().ok()
}

/// The checkpoint id of the newest committed part in `dir` (none when the
/// directory is missing or holds none).
pub fn newest_committed(dir: &Path) -> std::io::Result<Option<CheckpointId>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut newest = None;
    for entry in entries {
        if let Some(checkpoint) = entry?.file_name().to_str().and_then(part_checkpoint) {
            newest = newest.max(Some(checkpoint));
        }
    }
    Ok(newest)
}

/// Removes the committed parts newer than checkpoint `restored` (asked for
/// with `--remove-newer-output`); returns how many.
pub fn remove_newer(dir: &Path, restored: CheckpointId) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let newer = entry
            .file_name()
            .to_str()
            .and_then(part_checkpoint)
            .is_some_and(|c| c > restored);
        if newer {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    if removed > 0 {
        crate::checkpoint::store::sync_dir(dir)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    Ok(removed)
}

/// One instance of a directory sink.
pub struct DirectorySink {
    dir: PathBuf,
    instance: u32,
    encoding: Encoding,
    /// The open pending file, if records came since the last barrier.
    writer: Option<(PathBuf, BufWriter<File>)>,
    /// Without checkpoints: the name the part takes at the end.
    final_checkpoint: CheckpointId,
}

impl DirectorySink {
    /// Opens the sink: creates the directories and removes every pending file
    /// (what a checkpoint being restored needed is committed by then).
    /// Committed parts are never touched: they may already have been read.
    pub fn open(dir: &Path, instance: u32, encoding: Encoding) -> std::io::Result<Self> {
        let pending = dir.join(PENDING);
        std::fs::create_dir_all(&pending)?;
        for entry in std::fs::read_dir(&pending)? {
            std::fs::remove_file(entry?.path())?;
        }
        let newest = newest_committed(dir)?.unwrap_or(0);
        Ok(Self {
            dir: dir.to_path_buf(),
            instance,
            encoding,
            writer: None,
            final_checkpoint: newest + 1,
        })
    }

    /// Writes a batch into the pending part.
    pub fn write(&mut self, batch: &Batch) -> std::io::Result<()> {
        let (_, writer) = match &mut self.writer {
            Some(w) => w,
            None => {
                let path = self
                    .dir
                    .join(PENDING)
                    .join(format!("{}.inprogress", part_name(0, self.instance)));
                let file = File::create(&path)?;
                self.writer
                    .insert((path, BufWriter::with_capacity(256 * 1024, file)))
            }
        };
        encode::write_batch(writer, batch, self.encoding)
    }

    /// At barrier `checkpoint`: makes the pending part durable and returns it
    /// for the coordinator to commit when the checkpoint is complete.
    pub fn pre_commit(&mut self, checkpoint: CheckpointId) -> std::io::Result<Vec<Committable>> {
        let Some((path, mut writer)) = self.writer.take() else {
            return Ok(Vec::new());
        };
        writer.flush()?;
        writer.get_ref().sync_all()?;
        drop(writer);
        let name = part_name(checkpoint, self.instance);
        let pending = self.dir.join(PENDING).join(&name);
        std::fs::rename(&path, &pending)?;
        crate::checkpoint::store::sync_dir(&self.dir.join(PENDING))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(vec![Committable {
            pending,
            committed: self.dir.join(name),
        }])
    }

    /// At the end of the stream without checkpoints: commits the last part.
    pub fn finish_unchecked(&mut self) -> std::io::Result<()> {
        let committables = self.pre_commit(self.final_checkpoint)?;
        crate::checkpoint::coordinator::commit(committables.iter())
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}
