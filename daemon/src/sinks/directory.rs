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
//! sees only committed data. On restore from checkpoint `r`, every pending file
//! and any committed part newer than `r` is removed.
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
    /// Opens the sink: creates the directories and removes what a restore from
    /// `restored` (or a fresh start, `None`) must not keep: every pending
    /// file, and committed parts newer than the restored checkpoint.
    pub fn open(
        dir: &Path,
        instance: u32,
        encoding: Encoding,
        restored: Option<CheckpointId>,
    ) -> std::io::Result<Self> {
        let pending = dir.join(PENDING);
        std::fs::create_dir_all(&pending)?;
        for entry in std::fs::read_dir(&pending)? {
            std::fs::remove_file(entry?.path())?;
        }
        let mut newest = 0;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(checkpoint) = name.to_str().and_then(part_checkpoint) else {
                continue;
            };
            if restored.is_some_and(|r| checkpoint > r) {
                tracing::warn!(
                    file = %entry.path().display(),
                    "removing output committed after the checkpoint being restored"
                );
                std::fs::remove_file(entry.path())?;
            } else {
                newest = newest.max(checkpoint);
            }
        }
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
