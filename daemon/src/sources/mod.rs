//! Sources: where records enter the pipeline. Each runs on its own thread, sends
//! batches through its [`Output`] (which may call the operator chained to it)
//! and checks the [`StopSignal`] between batches.

mod file;
pub(crate) mod generator;
pub mod kafka;
mod nats;
mod stdin;
pub(crate) mod timestamp;

use crossbeam_channel::Receiver;

use crate::checkpoint::{CheckpointId, Part, Report, SourcePosition, TaskCheckpointing, Trigger};
use crate::graph::{ComponentId, SourceInput, SourceSpec};
use crate::topology::output::Output;
use crate::topology::rewire::{Instruction, Mailbox};
use crate::topology::stage::Finished;
use crate::topology::task::TaskStats;
use crate::topology::{StopSignal, TaskError};
use crate::watermark::{END_OF_TIME, Watermark};

/// A source, opened and ready to run.
pub enum Source {
    /// Lines of a file.
    File(file::FileSource),
    /// Lines of standard input.
    Stdin(stdin::StdinSource),
    /// A deterministic sequence.
    Generator(generator::Generator),
    /// Partitions of Kafka topics.
    Kafka(Box<kafka::KafkaSource>),
    /// A JetStream stream.
    Nats(Box<nats::NatsSource>),
}

/// What a source instance is opened with besides its spec.
pub struct Opening<'a> {
    /// This instance, of how many.
    pub instance: u32,
    /// The source's parallelism.
    pub parallelism: u32,
    /// The checkpoint the pipeline starts from.
    pub restored: Option<&'a crate::checkpoint::restore::Restored>,
    /// Complete checkpoints.
    pub completions: std::sync::Arc<crate::checkpoint::Completions>,
    /// The daemon's metrics.
    pub metrics: &'a crate::metrics::Metrics,
}

impl Source {
    /// Opens a source, to resume at `position` (from a checkpoint) if given; a
    /// file that cannot be opened is an error now, not later.
    pub fn open(id: &ComponentId, spec: &SourceSpec, at: &Opening<'_>) -> Result<Self, TaskError> {
        let placement = |at: &Opening<'_>| kafka::Placement {
            instance: at.instance,
            parallelism: at.parallelism,
            restored: at
                .restored
                .filter(|r| r.has_source(id))
                .map(|r| r.source_partitions(id)),
            completions: at.completions.clone(),
            health: at.metrics.broker(id),
        };
        let position = at.restored.and_then(|r| r.source_position(id, at.instance));
        let batch_size = spec.batch_size;
        let stamper = spec.timestamp.as_ref().map(timestamp::Stamper::new);
        Ok(match &spec.input {
            SourceInput::File { path, follow } => {
                let mut source = file::FileSource::open(
                    path,
                    *follow,
                    batch_size,
                    spec.max_record_bytes,
                    position,
                )
                .map_err(|e| TaskError::Source {
                    id: id.clone(),
                    message: format!("cannot open {}: {e}", path.display()),
                })?;
                if let Some(stamper) = stamper {
                    source.set_stamper(stamper);
                }
                Self::File(source)
            }
            SourceInput::Stdin => {
                if position.is_some() {
                    tracing::warn!(source = %id, "standard input cannot be rewound: records read before the crash after the restored checkpoint are not read again");
                }
                Self::Stdin(stdin::StdinSource::new(
                    batch_size,
                    spec.max_record_bytes,
                    stamper,
                ))
            }
            SourceInput::Generator {
                count,
                rate,
                value_size,
                keys,
                event_time,
            } => {
                let sequence = generator::Sequence {
                    count: *count,
                    rate: *rate,
                    value_size: *value_size,
                    keys: *keys,
                    event_time: *event_time,
                };
                Self::Generator(generator::Generator::new(
                    sequence,
                    batch_size,
                    position.as_ref().map_or(0, SourcePosition::offset),
                ))
            }
            SourceInput::Kafka(kafka) => Self::Kafka(Box::new(kafka::KafkaSource::open(
                id,
                kafka,
                placement(at),
                batch_size,
                stamper,
                partition_watermarks(spec),
            )?)),
            SourceInput::Nats(nats) => Self::Nats(Box::new(nats::NatsSource::open(
                id,
                nats,
                placement(at),
                batch_size,
                stamper,
                partition_watermarks(spec),
            )?)),
        })
    }

    /// Reports, for a file source, the bytes not read yet in `gauge`; other
    /// sources do not know their lag.
    pub fn set_lag_gauge(&mut self, gauge: prometheus::IntGauge) {
        if let Self::File(s) = self {
            s.set_lag_gauge(gauge);
        }
    }

    /// Produces records until the input ends or a stop is asked for, then ends
    /// the output. With checkpoints, it injects barriers between batches when
    /// triggered, and once its input is done it waits for the final checkpoint
    /// before ending.
    pub fn run(
        self,
        id: &ComponentId,
        stop: &StopSignal,
        mut output: Output,
        checkpointing: Option<&SourceCheckpointing>,
    ) -> Result<Vec<Finished>, TaskError> {
        let io = |e: std::io::Error| TaskError::Source {
            id: id.clone(),
            message: e.to_string(),
        };
        let barriers = Barriers(checkpointing);
        let run = match self {
            Self::File(s) => s
                .run(stop, &mut output, &barriers)
                .map_err(|e| e.into_task_error(io)),
            Self::Stdin(s) => s
                .run(stop, &mut output, &barriers)
                .map_err(|e| e.into_task_error(io)),
            Self::Generator(s) => s.run(stop, &mut output, &barriers),
            Self::Kafka(s) => s.run(stop, &mut output, &barriers),
            Self::Nats(s) => s.run(stop, &mut output, &barriers),
        };
        let ended = run
            .and_then(|position| {
                // Input done, not stopped: everything waiting on event time
                // completes before the final checkpoint (Flink's end of
                // input). A stop (for an upgrade, say) leaves it waiting.
                if !stop.is_stopped() {
                    output.watermark(Watermark::Time(END_OF_TIME))?;
                }
                barriers.finish(position, &mut output)
            })
            .and_then(|()| output.end());
        match ended {
            // Retired at a reload's barrier: its output has ended there.
            Ok(()) | Err(TaskError::Retired) => {}
            Err(e) => {
                output.abort();
                return Err(e);
            }
        }
        let mut finished = vec![Finished {
            id: id.clone(),
            is_sink: false,
            stats: TaskStats {
                records_in: 0,
                records_out: output.records(),
            },
        }];
        finished.append(&mut output.take_finished());
        Ok(finished)
    }
}

/// A partitioned source's watermarks, when it has a strategy.
fn partition_watermarks(spec: &SourceSpec) -> Option<crate::watermark::PartitionWatermarks> {
    spec.watermark
        .map(|w| crate::watermark::PartitionWatermarks::new(w.max_out_of_orderness, w.idle_timeout))
}

/// What a source needs to take part in checkpoints.
#[derive(Debug)]
pub struct SourceCheckpointing {
    /// Where it reports.
    pub task: TaskCheckpointing,
    /// Checkpoints the coordinator starts.
    pub triggers: Receiver<Trigger>,
    /// Instructions from a reload.
    pub mailbox: Mailbox,
}

/// Barrier injection, the same for every source. Sources call it only between
/// batches, with the position just after the last record they sent, so a
/// barrier splits the stream exactly where the recorded position says.
struct Barriers<'a>(Option<&'a SourceCheckpointing>);

impl Barriers<'_> {
    /// Injects a barrier for every checkpoint triggered since the last call.
    fn poll(&self, position: SourcePosition, output: &mut Output) -> Result<(), TaskError> {
        self.poll_with(|| position.clone(), output).map(drop)
    }

    /// [`Barriers::poll`] for a source whose position costs something to
    /// build (one entry per partition): `position` runs only for a trigger.
    /// Returns the last checkpoint whose barrier went out.
    fn poll_with(
        &self,
        position: impl Fn() -> SourcePosition,
        output: &mut Output,
    ) -> Result<Option<CheckpointId>, TaskError> {
        // Sources poll between batches and while waiting for input: where
        // idleness is noticed too.
        output.tick()?;
        let Some(c) = self.0 else {
            return Ok(None);
        };
        let mut injected = None;
        while let Ok(trigger) = c.triggers.try_recv() {
            inject(c, trigger, position(), output)?;
            injected = Some(trigger.checkpoint);
        }
        Ok(injected)
    }

    /// The input is done (or a stop was asked for): tells the coordinator and
    /// serves triggers until the final checkpoint's barrier is out.
    fn finish(&self, position: SourcePosition, output: &mut Output) -> Result<(), TaskError> {
        let Some(c) = self.0 else {
            return Ok(());
        };
        let _ = c.task.reports.send(Report::Exhausted(c.task.task.clone()));
        // A coordinator that went away has stopped the pipeline.
        while let Ok(trigger) = c.triggers.recv() {
            inject(c, trigger, position.clone(), output)?;
            if trigger.last {
                break;
            }
        }
        Ok(())
    }
}

fn inject(
    c: &SourceCheckpointing,
    trigger: Trigger,
    position: SourcePosition,
    output: &mut Output,
) -> Result<(), TaskError> {
    output.barrier(trigger.checkpoint)?;
    // A partitioned source keeps event time per partition, in its position.
    let event_time = match position {
        SourcePosition::Partitions(_) => None,
        _ => output.largest_event_time(),
    };
    c.task.ack(
        trigger.checkpoint,
        Ok(Part::Source {
            position,
            event_time,
        }),
    );
    match c.mailbox.take(trigger.checkpoint) {
        Some(Instruction::Retire) => {
            // Nothing after the barrier: the replacement resumes there.
            output.end()?;
            return Err(TaskError::Retired);
        }
        Some(Instruction::Rewire(r)) => r.apply(Some(output), None),
        None => {}
    }
    Ok(())
}

/// A source's failure: its own I/O, or its consumers going away.
enum SourceError {
    Io(std::io::Error),
    Task(TaskError),
}

impl SourceError {
    fn into_task_error(self, io: impl FnOnce(std::io::Error) -> TaskError) -> TaskError {
        match self {
            Self::Io(e) => io(e),
            Self::Task(e) => e,
        }
    }
}

impl From<std::io::Error> for SourceError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<TaskError> for SourceError {
    fn from(e: TaskError) -> Self {
        Self::Task(e)
    }
}

/// A source sends its batch once it holds this many bytes, whatever
/// `batch_size` says: 1,024 lines of 100 KB must not become one 100 MB call
/// into a plugin whose memory is 64 MiB.
pub(crate) const MAX_BATCH_BYTES: usize = 4 << 20;

/// Whether `batch` is full: `batch_size` records or [`MAX_BATCH_BYTES`].
fn is_full(batch: &weir_codec::BatchWriter, batch_size: usize) -> bool {
    batch.len() as usize >= batch_size || batch.encoded_len() >= MAX_BATCH_BYTES
}

/// Reads one line into `line` as `BufRead::read_until(b'\n')` does (the
/// bytes consumed; 0 at the end), but fails once the line, without its
/// newline, would be longer than `max` bytes: a file without newlines (or
/// `/dev/zero`) must not grow one record until memory runs out. `start` is the
/// line's byte offset, for the error.
fn read_line(
    reader: &mut impl std::io::BufRead,
    line: &mut Vec<u8>,
    max: u64,
    start: u64,
) -> std::io::Result<usize> {
    let mut read = 0;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(read);
        }
        let newline = available.iter().position(|&b| b == b'\n');
        let used = newline.map_or(available.len(), |i| i + 1);
        let content = line.len() + used - usize::from(newline.is_some());
        if content as u64 > max {
            return Err(record_too_long(max, start));
        }
        line.extend_from_slice(&available[..used]);
        reader.consume(used);
        read += used;
        if newline.is_some() {
            return Ok(read);
        }
    }
}

/// The error for a line longer than `max_record_size`.
fn record_too_long(max: u64, start: u64) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "the record at byte offset {start} is longer than `max_record_size` ({}): \
             raise it, or check that the input has newlines",
            crate::graph::bounds::show_bytes(max)
        ),
    )
}

/// Strips a line's `\n` or `\r\n`.
fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}
