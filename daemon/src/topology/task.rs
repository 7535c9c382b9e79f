//! An operator instance: what it does with each batch and barrier, and its
//! part in checkpoints.

use std::time::{Duration, Instant};

use super::TaskError;
use super::input::{Event, InputGate};
use super::liveness::Beat;
use super::output::Output;
use super::rewire::{Instruction, Mailbox};
use super::snapshot_writer::{OperatorCheckpointing, SnapshotWriterThread};
use super::stage::{Finished, Flow, Stage, drive};
use crate::batch::Batch;
use crate::checkpoint::{CheckpointId, Timing};
use crate::graph::ComponentId;
use crate::metrics::TaskMetrics;
use crate::operator_host::Processor;
use crate::state::CaptureScope;
use crate::watermark::Watermark;

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

/// Runs one operator instance on this thread until all its inputs end.
pub fn run_operator(task: OperatorTask) -> Result<Vec<Finished>, TaskError> {
    let (mut stage, inputs, beat) = task.into_stage();
    let metrics = stage.metrics.clone();
    drive(&mut stage, inputs, &beat, &metrics)
}

impl OperatorTask {
    /// The operator as a [`Stage`], with the inputs and heartbeat that drive
    /// it on its own thread (unused when it is chained).
    pub fn into_stage(self) -> (OperatorStage, InputGate, Beat) {
        let stage = OperatorStage {
            operator: self.operator,
            instance: self.instance,
            processor: self.processor,
            output: self.output,
            checkpointing: self.checkpointing,
            metrics: self.metrics,
            mailbox: self.mailbox,
            first: self.records_in,
            position: self.records_in,
            writer: None,
        };
        (stage, self.inputs, self.beat)
    }
}

/// One operator instance, event by event.
///
/// At a barrier the instance captures its state, forwards the barrier at
/// once, and hands the capture to its writer thread
/// ([`super::snapshot_writer`]), which reports to the coordinator once the
/// files are durable: processing pauses only for the capture.
pub struct OperatorStage {
    operator: ComponentId,
    instance: u32,
    processor: Box<dyn Processor>,
    output: Output,
    checkpointing: Option<OperatorCheckpointing>,
    metrics: TaskMetrics,
    mailbox: Mailbox,
    /// Input records before this run (from the checkpoint it started from).
    first: u64,
    /// Input records so far, counted from the instance's first start.
    position: u64,
    writer: Option<SnapshotWriterThread>,
}

impl OperatorStage {
    fn memory_gauge(&self) {
        self.metrics
            .guest_memory
            .set(i64::try_from(self.processor.memory_bytes()).unwrap_or(i64::MAX));
    }
}

impl Stage for OperatorStage {
    fn on_batch(&mut self, batch: Batch) -> Result<(), TaskError> {
        let started = Instant::now();
        let emitted = self.processor.process(&batch).map_err(|error| {
            self.metrics.plugin_error(error.kind());
            TaskError::Operator {
                operator: self.operator.clone(),
                instance: self.instance,
                first: self.position,
                len: batch.len(),
                error,
            }
        })?;
        self.metrics
            .process_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.records_in.inc_by(u64::from(batch.len()));
        self.memory_gauge();
        self.position += u64::from(batch.len());
        for out in emitted {
            self.output.send(out)?;
        }
        Ok(())
    }

    fn on_barrier(
        &mut self,
        checkpoint: CheckpointId,
        alignment: Duration,
    ) -> Result<Flow, TaskError> {
        let started = Instant::now();
        // What the writer will do with it: a change file on top of its
        // previous files, or a full snapshot.
        let scope = self
            .writer
            .as_ref()
            .map_or(CaptureScope::Full, SnapshotWriterThread::next_scope);
        let mut snapshot = self
            .processor
            .snapshot(scope)
            .map_err(|error| TaskError::Snapshot {
                operator: self.operator.clone(),
                instance: self.instance,
                checkpoint,
                error,
            })?;
        snapshot.records_in = self.position;
        let timing = Timing {
            alignment,
            pause: started.elapsed(),
        };
        self.output.barrier(checkpoint)?;
        if let Some(c) = &self.checkpointing {
            if self.writer.is_none() {
                match SnapshotWriterThread::start(c) {
                    Ok(w) => self.writer = Some(w),
                    Err(e) => c.task.ack(
                        checkpoint,
                        Err(format!("cannot start a snapshot writer: {e}")),
                    ),
                }
            }
            if let Some(w) = &self.writer {
                w.write(checkpoint, snapshot, timing);
            }
        }
        Ok(match self.mailbox.take(checkpoint) {
            Some(Instruction::Retire) => Flow::Retire,
            Some(Instruction::Rewire(r)) => {
                let inputs = r.apply_to_output(&mut self.output);
                if inputs.is_empty() {
                    Flow::Go
                } else {
                    Flow::AddInputs(inputs)
                }
            }
            None => Flow::Go,
        })
    }

    fn on_watermark(&mut self, mark: Watermark) -> Result<(), TaskError> {
        if let Watermark::Time(ms) = mark {
            self.metrics.watermark(ms);
        }
        self.output.watermark(mark)
    }

    fn on_end(&mut self, finished: &mut Vec<Finished>) -> Result<(), TaskError> {
        self.output.end()?;
        finished.push(Finished {
            id: self.operator.clone(),
            is_sink: false,
            stats: TaskStats {
                records_in: self.position - self.first,
                records_out: self.output.records(),
            },
        });
        finished.append(&mut self.output.take_finished());
        Ok(())
    }

    fn on_abort(&mut self) {
        self.output.abort();
    }
}
