//! The loop of an operator instance, and its part in checkpoints.

use std::time::Instant;

use super::TaskError;
use super::input::{Event, InputGate};
use super::liveness::Beat;
use super::output::Output;
use super::rewire::{Instruction, Mailbox};
use super::snapshot_writer::{OperatorCheckpointing, SnapshotWriterThread};
use crate::checkpoint::Timing;
use crate::graph::ComponentId;
use crate::metrics::TaskMetrics;
use crate::operator_host::Processor;
use crate::state::CaptureScope;

/// What a finished task did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskStats {
    /// Records received.
    pub records_in: u64,
    /// Records sent on.
    pub records_out: u64,
}

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
    /// Instructions from a reload.
    pub mailbox: Mailbox,
    /// Input records it took before the checkpoint it starts from, so the
    /// positions its errors name count from its first start.
    pub records_in: u64,
}

/// Runs one operator instance until all its inputs end.
///
/// At an aligned barrier the instance captures its state, forwards the
/// barrier at once, and hands the capture to its writer thread
/// ([`super::snapshot_writer`]), which reports to the coordinator once the
/// files are durable: processing pauses only for the capture.
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
        mailbox,
        records_in,
    } = task;
    let mut position = records_in;
    let mut writer: Option<SnapshotWriterThread> = None;
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
                // What the writer will do with it: a change file on top of
                // its previous files, or a full snapshot.
                let scope = writer
                    .as_ref()
                    .map_or(CaptureScope::Full, SnapshotWriterThread::next_scope);
                let mut snapshot =
                    processor
                        .snapshot(scope)
                        .map_err(|error| TaskError::Snapshot {
                            operator: operator.clone(),
                            instance,
                            checkpoint,
                            error,
                        })?;
                snapshot.records_in = position;
                let timing = Timing {
                    alignment: inputs.last_alignment(),
                    pause: started.elapsed(),
                };
                output.barrier(checkpoint)?;
                if let Some(c) = &checkpointing {
                    if writer.is_none() {
                        match SnapshotWriterThread::start(c) {
                            Ok(w) => writer = Some(w),
                            Err(e) => c.task.ack(
                                checkpoint,
                                Err(format!("cannot start a snapshot writer: {e}")),
                            ),
                        }
                    }
                    if let Some(w) = &writer {
                        w.write(checkpoint, snapshot, timing);
                    }
                }
                match mailbox.take(checkpoint) {
                    Some(Instruction::Retire) => break,
                    Some(Instruction::Rewire(r)) => r.apply(Some(&mut output), Some(&mut inputs)),
                    None => {}
                }
            }
            Event::End => break,
        }
    }
    beat.idle();
    output.end()?;
    Ok(TaskStats {
        records_in: position - records_in,
        records_out: output.records(),
    })
}
