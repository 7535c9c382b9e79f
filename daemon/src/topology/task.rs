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
use crate::config::OnError;
use crate::graph::ComponentId;
use crate::graph::ERRORS_OUTPUT_INDEX;
use crate::metrics::TaskMetrics;
use crate::operator_host::{CallError, Clock, Emitted, Processor};
use crate::state::CacheCounts;
use crate::state::CaptureScope;
use crate::state::ops::TimerCounts;
use crate::watermark::Watermark;
use weir_codec::state::TimeDomain;

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
    deadline: Option<Instant>,
    beat: &Beat,
    metrics: &TaskMetrics,
) -> Result<Event, TaskError> {
    beat.idle();
    let event = inputs.next_event_until(deadline)?;
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
    /// What a record its plugin rejects does.
    pub on_error: OnError,
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
            watermark: None,
            timer_counts: TimerCounts::default(),
            cache_counts: CacheCounts::default(),
            on_error: self.on_error,
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
    /// Its watermark: the least over its inputs, once one arrived.
    watermark: Option<i64>,
    /// Timer counts as last exported.
    timer_counts: TimerCounts,
    /// What the state cache counts were last exported as.
    cache_counts: CacheCounts,
    on_error: OnError,
}

impl OperatorStage {
    fn memory_gauge(&self) {
        self.metrics
            .guest_memory
            .set(i64::try_from(self.processor.memory_bytes()).unwrap_or(i64::MAX));
    }

    fn send(&mut self, emitted: Emitted) -> Result<(), TaskError> {
        for (output, batch) in emitted {
            self.output.send_to(output, batch)?;
        }
        Ok(())
    }

    /// Fires the timers of `domain` due at `time`, sends what they emit,
    /// and exports the timer counts.
    fn fire(&mut self, domain: TimeDomain, time: i64) -> Result<(), TaskError> {
        if self
            .processor
            .next_timer(domain)
            .is_some_and(|next| next <= time)
        {
            let clock = Clock::now(self.watermark);
            let emitted = self
                .processor
                .fire_timers(domain, time, clock)
                .map_err(|error| self.timer_error(error))?;
            self.memory_gauge();
            self.send(emitted)?;
        }
        self.export_state_counts();
        Ok(())
    }

    /// The plugin rejected record `index` of `batch` (its call changed
    /// nothing: output and state changes of a failed call are dropped).
    /// Processes the records before it again, sends that one to the errors
    /// output with the error, and goes on with the rest, as often as the
    /// plugin rejects another. A failure that is not a rejection of one
    /// record fails the instance.
    fn dead_letter(
        &mut self,
        input: u32,
        batch: &Batch,
        clock: Clock,
        mut index: u32,
        mut message: String,
    ) -> Result<Emitted, TaskError> {
        let records: Vec<_> = batch.records().collect();
        let mut emitted = Vec::new();
        let mut start = 0usize;
        loop {
            let rejected = start + index as usize;
            if rejected > start {
                let before = sub_batch(&records[start..rejected]);
                let out = self
                    .processor
                    .process(input, &before, clock)
                    .map_err(|error| self.operator_error(rejected - start, error))?;
                emitted.extend(out);
            }
            let letter = dead_letter_record(
                &self.operator,
                self.instance,
                self.position + rejected as u64,
                &records[rejected],
                &message,
            );
            emitted.push((ERRORS_OUTPUT_INDEX, letter));
            self.metrics.dead_letter();
            start = rejected + 1;
            if start == records.len() {
                return Ok(emitted);
            }
            let rest = sub_batch(&records[start..]);
            match self.processor.process(input, &rest, clock) {
                Ok(out) => {
                    emitted.extend(out);
                    return Ok(emitted);
                }
                Err(CallError::Plugin {
                    record_index: Some(i),
                    message: m,
                }) if (i as usize) < records.len() - start => {
                    index = i;
                    message = m;
                }
                Err(error) => return Err(self.operator_error(records.len() - start, error)),
            }
        }
    }

    fn operator_error(&self, len: usize, error: CallError) -> TaskError {
        self.metrics.plugin_error(error.kind());
        TaskError::Operator {
            operator: self.operator.clone(),
            instance: self.instance,
            first: self.position,
            len: u32::try_from(len).unwrap_or(u32::MAX),
            error,
        }
    }

    fn timer_error(&self, error: CallError) -> TaskError {
        self.metrics.plugin_error(error.kind());
        TaskError::Timer {
            operator: self.operator.clone(),
            instance: self.instance,
            error,
        }
    }

    /// Exports the timer and state cache counts (after every batch and
    /// every firing: each is a couple of counter updates).
    fn export_state_counts(&mut self) {
        let now = self.processor.timer_counts();
        let last = std::mem::replace(&mut self.timer_counts, now);
        self.metrics.timers(
            now.registered - last.registered,
            now.fired - last.fired,
            now.pending,
        );
        let now = self.processor.cache_counts();
        let last = std::mem::replace(&mut self.cache_counts, now);
        self.metrics.state_cache(
            now.hits.saturating_sub(last.hits),
            now.misses.saturating_sub(last.misses),
        );
    }
}

impl Stage for OperatorStage {
    fn on_batch(&mut self, batch: Batch, input: u32) -> Result<(), TaskError> {
        let started = Instant::now();
        if let Some(mark) = self.watermark {
            let late = batch
                .records()
                .filter(|r| r.timestamp.is_some_and(|t| t <= mark))
                .count();
            self.metrics.late_records(late as u64);
        }
        let clock = Clock::now(self.watermark);
        let result = self.processor.process(input, &batch, clock);
        let emitted = match (result, self.on_error) {
            (Ok(emitted), _) => emitted,
            (
                Err(CallError::Plugin {
                    record_index: Some(index),
                    message,
                }),
                OnError::DeadLetter,
            ) if index < batch.len() => {
                self.metrics.plugin_error("error");
                self.dead_letter(input, &batch, clock, index, message)?
            }
            (Err(error), _) => {
                self.metrics.plugin_error(error.kind());
                return Err(TaskError::Operator {
                    operator: self.operator.clone(),
                    instance: self.instance,
                    first: self.position,
                    len: batch.len(),
                    error,
                });
            }
        };
        self.metrics
            .process_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.records_in.inc_by(u64::from(batch.len()));
        self.memory_gauge();
        self.position += u64::from(batch.len());
        self.send(emitted)?;
        // A timer registered at or behind the watermark is due already, and
        // a processing-time one may have come due while the batch ran.
        if let Some(mark) = self.watermark {
            self.fire(TimeDomain::EventTime, mark)?;
        }
        self.fire(TimeDomain::ProcessingTime, clock.processing_time)
    }

    fn next_tick(&self) -> Option<Instant> {
        let own = self
            .processor
            .next_timer(TimeDomain::ProcessingTime)
            .map(|at| {
                let wait = at.saturating_sub(crate::operator_host::now_ms()).max(0);
                Instant::now() + Duration::from_millis(wait as u64)
            });
        match (own, self.output.next_tick()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_tick(&mut self) -> Result<(), TaskError> {
        self.fire(TimeDomain::ProcessingTime, crate::operator_host::now_ms())?;
        self.output.tick_chained()
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
            self.watermark = Some(self.watermark.map_or(ms, |w| w.max(ms)));
            // Timers first: what they emit is before the watermark, which
            // then goes downstream (as in Flink).
            self.fire(TimeDomain::EventTime, ms)?;
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

/// A batch of some records of another.
fn sub_batch(records: &[weir_codec::RecordRef<'_>]) -> Batch {
    let mut w = weir_codec::BatchWriter::with_capacity(
        records
            .iter()
            .map(|r| r.key.len() + r.value.len() + 17)
            .sum(),
    );
    for r in records {
        w.push_record(r);
    }
    Batch::from_writer(w)
}

/// A dead letter: the rejected record's key and timestamp, and as value one
/// JSON line with the operator, its instance, the record's position on the
/// instance's input, the error and the record.
fn dead_letter_record(
    operator: &str,
    instance: u32,
    position: u64,
    record: &weir_codec::RecordRef<'_>,
    error: &str,
) -> Batch {
    let line = serde_json::json!({
        "operator": operator,
        "instance": instance,
        "position": position,
        "error": error,
        "key": String::from_utf8_lossy(record.key),
        "value": String::from_utf8_lossy(record.value),
        "timestamp": record.timestamp,
    });
    let mut w = weir_codec::BatchWriter::new();
    w.push(record.key, line.to_string().as_bytes(), record.timestamp);
    Batch::from_writer(w)
}
