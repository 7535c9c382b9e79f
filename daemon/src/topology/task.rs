//! The loop of an operator instance, and its part in checkpoints.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use super::TaskError;
use super::input::{Event, InputGate};
use super::liveness::Beat;
use super::output::Output;
use crate::checkpoint::store::write_file;
use crate::checkpoint::{CheckpointId, FileRef, Part, TaskCheckpointing, Timing};
use crate::graph::ComponentId;
use crate::metrics::TaskMetrics;
use crate::operator_host::{InstanceSnapshot, Processor};
use crate::state::snapshot::SnapshotWriter;

/// What a finished task did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskStats {
    /// Records received.
    pub records_in: u64,
    /// Records sent on.
    pub records_out: u64,
}

/// What an operator instance needs to take part in checkpoints.
#[derive(Debug, Clone)]
pub struct OperatorCheckpointing {
    /// Where it reports.
    pub task: TaskCheckpointing,
    /// The operator's parallelism.
    pub parallelism: u32,
    /// The key groups this instance owns.
    pub key_groups: Range<u32>,
    /// Background snapshot writers, joined when the pipeline ends.
    pub writers: Writers,
}

/// Threads writing snapshots out, so the pipeline can wait for them before it
/// reopens state (RocksDB holds a lock on its directory).
pub type Writers = Arc<Mutex<Vec<JoinHandle<()>>>>;

/// Waits for a task's next input event: idle while waiting, busy after (for
/// the watchdog), with the input channel depth exported.
pub fn next_event(
    inputs: &mut InputGate,
    beat: &Beat,
    metrics: &TaskMetrics,
) -> Result<Event, TaskError> {
    beat.idle();
    let event = inputs.next_event()?;
    beat.busy();
    metrics
        .channel_depth
        .set(i64::try_from(inputs.queued()).unwrap_or(i64::MAX));
    Ok(event)
}

/// An operator instance, built and ready to run on its thread.
pub struct OperatorTask {
    /// The operator.
    pub operator: ComponentId,
    /// Its instance.
    pub instance: u32,
    /// The plugin (or built-in) that processes batches.
    pub processor: Box<dyn Processor>,
    /// Its input channels.
    pub inputs: InputGate,
    /// Its consumers.
    pub output: Output,
    /// Its part in checkpoints, when they are on.
    pub checkpointing: Option<OperatorCheckpointing>,
    /// Its heartbeat.
    pub beat: Beat,
    /// Its metrics.
    pub metrics: TaskMetrics,
}

/// Runs one operator instance until all its inputs end.
///
/// At an aligned barrier the instance captures its state, forwards the
/// barrier at once, and writes the capture out on another thread, which
/// reports to the coordinator once the files are durable: processing pauses
/// only for the capture.
pub fn run_operator(task: OperatorTask) -> Result<TaskStats, TaskError> {
    let OperatorTask {
        operator,
        instance,
        mut processor,
        mut inputs,
        mut output,
        checkpointing,
        beat,
        metrics,
    } = task;
    let mut position = 0u64;
    metrics
        .guest_memory
        .set(i64::try_from(processor.memory_bytes()).unwrap_or(i64::MAX));
    loop {
        match next_event(&mut inputs, &beat, &metrics)? {
            Event::Batch(batch) => {
                let started = Instant::now();
                let emitted = processor.process(&batch).map_err(|error| {
                    metrics.plugin_error(error.kind());
                    TaskError::Operator {
                        operator: operator.clone(),
                        instance,
                        first: position,
                        len: batch.len(),
                        error,
                    }
                })?;
                metrics
                    .process_seconds
                    .observe(started.elapsed().as_secs_f64());
                metrics.records_in.inc_by(u64::from(batch.len()));
                metrics
                    .guest_memory
                    .set(i64::try_from(processor.memory_bytes()).unwrap_or(i64::MAX));
                position += u64::from(batch.len());
                for out in emitted {
                    output.send(out)?;
                }
            }
            Event::Barrier(checkpoint) => {
                let started = Instant::now();
                let snapshot = processor.snapshot().map_err(|error| TaskError::Snapshot {
                    operator: operator.clone(),
                    instance,
                    checkpoint,
                    error,
                })?;
                let timing = Timing {
                    alignment: inputs.last_alignment(),
                    pause: started.elapsed(),
                };
                output.barrier(checkpoint)?;
                if let Some(c) = &checkpointing {
                    write_in_background(c, checkpoint, snapshot, timing);
                }
            }
            Event::End => break,
        }
    }
    beat.idle();
    output.end()?;
    Ok(TaskStats {
        records_in: position,
        records_out: output.records(),
    })
}

fn write_in_background(
    c: &OperatorCheckpointing,
    checkpoint: CheckpointId,
    snapshot: InstanceSnapshot,
    timing: Timing,
) {
    let c = c.clone();
    let writer = c.clone();
    let spawned = std::thread::Builder::new()
        .name(format!(
            "snap-{}-{}",
            c.task.task.component, c.task.task.instance
        ))
        .spawn(move || {
            let part = write_snapshot(&writer, checkpoint, snapshot);
            writer.task.ack_timed(checkpoint, part, timing);
        });
    match spawned {
        Ok(handle) => {
            if let Ok(mut writers) = c.writers.lock() {
                writers.retain(|h| !h.is_finished());
                writers.push(handle);
            }
        }
        Err(e) => c.task.ack(
            checkpoint,
            Err(format!("cannot start a snapshot writer: {e}")),
        ),
    }
}

/// Writes one instance's snapshot into the checkpoint's directory.
fn write_snapshot(
    c: &OperatorCheckpointing,
    checkpoint: CheckpointId,
    snapshot: InstanceSnapshot,
) -> Result<Part, String> {
    let dir = c.task.dir(checkpoint);
    let name = format!("{}-{}", c.task.task.component, c.task.task.instance);
    let keyed = match snapshot.keyed {
        Some(capture) => {
            let file = format!("{name}.keyed");
            let mut out = SnapshotWriter::create(&dir.join(&file)).map_err(|e| e.to_string())?;
            capture.write(&mut out).map_err(|e| e.to_string())?;
            let summary = out.finish().map_err(|e| e.to_string())?;
            Some(FileRef {
                file,
                bytes: summary.bytes,
                crc32: summary.crc32,
            })
        }
        None => None,
    };
    let operator_state = match snapshot.operator_state {
        Some((version, bytes)) => Some((
            write_file(&dir, &format!("{name}.opstate"), &bytes).map_err(|e| e.to_string())?,
            version,
        )),
        None => None,
    };
    Ok(Part::Operator {
        parallelism: c.parallelism,
        key_groups: (c.key_groups.start, c.key_groups.end),
        states: snapshot.states,
        keyed,
        operator_state,
    })
}
