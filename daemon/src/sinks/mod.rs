//! Sinks: where records leave the pipeline. Each runs on its own thread and
//! reads its merged inputs until every producer has ended; at each checkpoint
//! barrier it makes what it wrote durable and reports to the coordinator.

pub mod directory;
mod encode;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use crate::checkpoint::{CheckpointId, Part, TaskCheckpointing, Timing};
use crate::config::Encoding;
use crate::graph::{ComponentId, SinkSpec};
use crate::metrics::TaskMetrics;
use crate::topology::TaskError;
use crate::topology::input::{Event, InputGate};
use crate::topology::liveness::Beat;
use crate::topology::rewire::{Instruction, Mailbox};
use crate::topology::task::TaskStats;
use crate::topology::task::next_event;

/// A sink, opened and ready to run.
pub enum Sink {
    /// Writes to a file.
    File {
        /// The file.
        path: PathBuf,
        /// Its writer.
        writer: BufWriter<File>,
        /// How records are written.
        encoding: Encoding,
    },
    /// Writes part files into a directory, committed per checkpoint.
    Directory(directory::DirectorySink),
    /// Writes to standard output.
    Stdout {
        /// How records are written.
        encoding: Encoding,
    },
    /// Counts and drops.
    Blackhole,
}

impl Sink {
    /// Opens a sink; the output file (and its directory) is created now, so a
    /// path that cannot be written fails before any record flows. A directory
    /// sink drops what a start from checkpoint `restored` must not keep.
    pub fn open(
        id: &ComponentId,
        instance: u32,
        spec: &SinkSpec,
        restored: Option<CheckpointId>,
    ) -> Result<Self, TaskError> {
        Ok(match spec {
            SinkSpec::File { path, encoding } => {
                let fail = |e: std::io::Error| TaskError::Sink {
                    id: id.clone(),
                    message: format!("cannot create {}: {e}", path.display()),
                };
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(fail)?;
                }
                // A run that restores (after a failure or a reload) goes on
                // where the last one stopped instead of truncating its output.
                let file = if restored.is_some() {
                    File::options().create(true).append(true).open(path)
                } else {
                    File::create(path)
                }
                .map_err(fail)?;
                Self::File {
                    path: path.clone(),
                    writer: BufWriter::with_capacity(256 * 1024, file),
                    encoding: *encoding,
                }
            }
            SinkSpec::Directory { dir, encoding } => Self::Directory(
                directory::DirectorySink::open(dir, instance, *encoding).map_err(|e| {
                    TaskError::Sink {
                        id: id.clone(),
                        message: format!("cannot prepare {}: {e}", dir.display()),
                    }
                })?,
            ),
            SinkSpec::Stdout { encoding } => Self::Stdout {
                encoding: *encoding,
            },
            SinkSpec::Blackhole => Self::Blackhole,
        })
    }

    /// Consumes every input until all have ended, then flushes (and for files,
    /// syncs) what it wrote.
    pub fn run(
        mut self,
        id: &ComponentId,
        mut inputs: InputGate,
        checkpointing: Option<&TaskCheckpointing>,
        beat: &Beat,
        metrics: &TaskMetrics,
        mailbox: &Mailbox,
    ) -> Result<TaskStats, TaskError> {
        let mut records = 0u64;
        let result = (|| loop {
            match next_event(&mut inputs, beat, metrics)? {
                Event::Batch(batch) => {
                    records += u64::from(batch.len());
                    metrics.records_in.inc_by(u64::from(batch.len()));
                    self.write(id, &batch)?;
                }
                Event::Barrier(checkpoint) => {
                    let started = std::time::Instant::now();
                    let part = self
                        .pre_commit(checkpoint)
                        .map_err(|e| format!("sink `{id}` cannot make its output durable: {e}"));
                    let timing = Timing {
                        alignment: inputs.last_alignment(),
                        pause: started.elapsed(),
                    };
                    let failed = part.as_ref().err().cloned();
                    if let Some(c) = checkpointing {
                        c.ack_timed(checkpoint, part, timing);
                    }
                    if let Some(message) = failed {
                        return Err(TaskError::Sink {
                            id: id.clone(),
                            message,
                        });
                    }
                    match mailbox.take(checkpoint) {
                        Some(Instruction::Retire) => return Ok(()),
                        Some(Instruction::Rewire(r)) => r.apply(None, Some(&mut inputs)),
                        None => {}
                    }
                }
                Event::End => return Ok(()),
            }
        })();
        // Whatever arrived is kept, even when the pipeline failed upstream.
        let finished = self.finish(checkpointing.is_none());
        beat.idle();
        result?;
        finished.map_err(|e| TaskError::Sink {
            id: id.clone(),
            message: format!("cannot finish writing: {e}"),
        })?;
        Ok(TaskStats {
            records_in: records,
            records_out: 0,
        })
    }

    fn write(&mut self, id: &ComponentId, batch: &crate::batch::Batch) -> Result<(), TaskError> {
        let result = match self {
            Self::Blackhole => Ok(()),
            Self::Stdout { encoding } => {
                let mut out = BufWriter::new(std::io::stdout().lock());
                encode::write_batch(&mut out, batch, *encoding).and_then(|()| out.flush())
            }
            Self::File {
                writer, encoding, ..
            } => encode::write_batch(writer, batch, *encoding).and_then(|()| writer.flush()),
            Self::Directory(d) => d.write(batch),
        };
        result.map_err(|e| TaskError::Sink {
            id: id.clone(),
            message: format!("cannot write: {e}"),
        })
    }

    fn pre_commit(&mut self, checkpoint: CheckpointId) -> std::io::Result<Part> {
        match self {
            Self::Directory(d) => Ok(Part::Sink {
                committables: d.pre_commit(checkpoint)?,
            }),
            Self::File { writer, .. } => {
                writer.flush()?;
                writer.get_ref().sync_all()?;
                Ok(Part::Nothing)
            }
            Self::Stdout { .. } | Self::Blackhole => Ok(Part::Nothing),
        }
    }

    fn finish(&mut self, unchecked: bool) -> std::io::Result<()> {
        match self {
            Self::File { writer, .. } => {
                writer.flush()?;
                writer.get_ref().sync_all()
            }
            // With checkpoints, everything before the final barrier is
            // committed by the coordinator, and nothing comes after it.
            Self::Directory(d) if unchecked => d.finish_unchecked(),
            _ => Ok(()),
        }
    }
}
