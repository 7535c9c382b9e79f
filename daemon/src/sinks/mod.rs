//! Sinks: where records leave the pipeline. Each reads its merged inputs on
//! its own thread (or is called by the component chained before it) until
//! every producer has ended; at each checkpoint barrier it makes what it
//! wrote durable and reports to the coordinator.

pub mod committer;
pub mod directory;
mod encode;
pub mod kafka;
pub mod nats;
pub mod staging;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use std::time::Duration;

use crate::batch::Batch;
use crate::checkpoint::{CheckpointId, Part, TaskCheckpointing, Timing};
use crate::config::Encoding;
use crate::graph::{ComponentId, SinkSpec};
use crate::metrics::TaskMetrics;
use crate::topology::TaskError;
use crate::topology::rewire::{Instruction, Mailbox};
use crate::topology::stage::{Finished, Flow, Stage};
use crate::topology::task::TaskStats;

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
    /// Produces to Kafka.
    Kafka(Box<kafka::KafkaSink>),
    /// Publishes to JetStream.
    Nats(Box<nats::NatsSink>),
}

/// What a sink instance is opened with besides its spec.
pub struct Opening<'a> {
    /// This instance.
    pub instance: u32,
    /// The sink's parallelism.
    pub parallelism: u32,
    /// The checkpoint the pipeline starts from.
    pub restored: Option<CheckpointId>,
    /// Complete checkpoints.
    pub completions: &'a std::sync::Arc<crate::checkpoint::Completions>,
    /// The daemon's metrics.
    pub metrics: &'a crate::metrics::Metrics,
}

impl Sink {
    /// Opens a sink; the output file (and its directory) is created now, so a
    /// path that cannot be written fails before any record flows. A directory
    /// sink drops what a start from checkpoint `restored` must not keep.
    pub fn open(id: &ComponentId, spec: &SinkSpec, at: &Opening<'_>) -> Result<Self, TaskError> {
        let (instance, restored) = (at.instance, at.restored);
        let fail = |message| TaskError::Sink {
            id: id.clone(),
            message,
        };
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
            SinkSpec::Kafka(kafka) => Self::Kafka(Box::new(
                kafka::KafkaSink::open(id, kafka, broker_context(id, at)).map_err(fail)?,
            )),
            SinkSpec::Nats(nats) => Self::Nats(Box::new(
                nats::NatsSink::open(id, nats, broker_context(id, at)).map_err(fail)?,
            )),
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
            Self::Kafka(k) => {
                return k.write(batch).map_err(|message| TaskError::Sink {
                    id: id.clone(),
                    message,
                });
            }
            Self::Nats(n) => {
                return n.write(batch).map_err(|message| TaskError::Sink {
                    id: id.clone(),
                    message,
                });
            }
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
            Self::Kafka(k) => {
                k.pre_commit(checkpoint).map_err(std::io::Error::other)?;
                Ok(Part::Nothing)
            }
            Self::Nats(n) => {
                n.pre_commit(checkpoint).map_err(std::io::Error::other)?;
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
            Self::Kafka(k) => {
                k.finish();
                Ok(())
            }
            Self::Nats(n) => {
                n.finish();
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

fn broker_context(id: &ComponentId, at: &Opening<'_>) -> committer::Context {
    committer::Context {
        instance: at.instance,
        parallelism: at.parallelism,
        restored: at.restored.unwrap_or(0),
        completions: at.completions.clone(),
        health: at.metrics.broker(id),
    }
}

/// A sink instance, event by event.
pub struct SinkStage {
    id: ComponentId,
    sink: Option<Sink>,
    checkpointing: Option<TaskCheckpointing>,
    metrics: TaskMetrics,
    mailbox: Mailbox,
    records: u64,
}

impl SinkStage {
    /// `sink` of component `id`, reporting to `checkpointing`.
    pub fn new(
        id: ComponentId,
        sink: Sink,
        checkpointing: Option<TaskCheckpointing>,
        metrics: TaskMetrics,
        mailbox: Mailbox,
    ) -> Self {
        Self {
            id,
            sink: Some(sink),
            checkpointing,
            metrics,
            mailbox,
            records: 0,
        }
    }

    fn sink(&mut self) -> Result<&mut Sink, TaskError> {
        self.sink.as_mut().ok_or_else(|| TaskError::Sink {
            id: self.id.clone(),
            message: "used after it was finished".into(),
        })
    }
}

impl Stage for SinkStage {
    fn on_watermark(&mut self, mark: crate::watermark::Watermark) -> Result<(), TaskError> {
        if let crate::watermark::Watermark::Time(ms) = mark {
            self.metrics.watermark(ms);
        }
        Ok(())
    }

    fn on_batch(&mut self, batch: Batch, _input: u32) -> Result<(), TaskError> {
        self.records += u64::from(batch.len());
        self.metrics.records_in.inc_by(u64::from(batch.len()));
        let id = self.id.clone();
        self.sink()?.write(&id, &batch)
    }

    fn on_barrier(
        &mut self,
        checkpoint: CheckpointId,
        alignment: Duration,
    ) -> Result<Flow, TaskError> {
        let started = std::time::Instant::now();
        let id = self.id.clone();
        let part = self
            .sink()?
            .pre_commit(checkpoint)
            .map_err(|e| format!("sink `{id}` cannot make its output durable: {e}"));
        let timing = Timing {
            alignment,
            pause: started.elapsed(),
        };
        let failed = part.as_ref().err().cloned();
        if let Some(c) = &self.checkpointing {
            c.ack_timed(checkpoint, part, timing);
        }
        if let Some(message) = failed {
            return Err(TaskError::Sink { id, message });
        }
        Ok(match self.mailbox.take(checkpoint) {
            Some(Instruction::Retire) => Flow::Retire,
            Some(Instruction::Rewire(r)) if !r.add_inputs.is_empty() => {
                Flow::AddInputs(r.add_inputs)
            }
            Some(Instruction::Rewire(_)) => Flow::Go,
            None => Flow::Go,
        })
    }

    fn on_end(&mut self, finished: &mut Vec<Finished>) -> Result<(), TaskError> {
        if let Some(mut sink) = self.sink.take() {
            sink.finish(self.checkpointing.is_none())
                .map_err(|e| TaskError::Sink {
                    id: self.id.clone(),
                    message: format!("cannot finish writing: {e}"),
                })?;
        }
        finished.push(Finished {
            id: self.id.clone(),
            is_sink: true,
            stats: TaskStats {
                records_in: self.records,
                records_out: 0,
            },
        });
        Ok(())
    }

    fn on_abort(&mut self) {
        // Whatever arrived is kept, even when the pipeline failed upstream.
        if let Some(mut sink) = self.sink.take() {
            // What a broker sink has staged waits for the restart.
            match &mut sink {
                Sink::Kafka(k) => return k.abort(),
                Sink::Nats(n) => return n.abort(),
                _ => {}
            }
            let _ = sink.finish(self.checkpointing.is_none());
        }
    }
}
