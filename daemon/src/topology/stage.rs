//! What a component instance does with each thing that reaches it, apart
//! from how it is reached: on its own thread, fed by an [`InputGate`]
//! ([`drive`]), or called by the component before it in the same thread
//! (operator chaining, [`super::chain`]), as Flink's chained operators are
//! called by their predecessor's output.
//!
//! Either way a stage keeps its own id, metrics, checkpoint part and reload
//! mailbox, so chaining changes threads and hand-overs, nothing a user sees.

use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::TaskError;
use super::input::{Event, InputGate};
use super::liveness::Beat;
use super::task::{TaskStats, next_event};
use crate::batch::{Batch, Message};
use crate::checkpoint::CheckpointId;
use crate::graph::ComponentId;
use crate::metrics::TaskMetrics;
use crate::watermark::Watermark;

/// What a stage did, once it has ended (or retired).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The component.
    pub id: ComponentId,
    /// Whether it is a sink (what the run report counts as output).
    pub is_sink: bool,
    /// What it took and sent.
    pub stats: TaskStats,
}

/// What comes after a barrier.
#[derive(Debug)]
pub enum Flow {
    /// Go on as before.
    Go,
    /// The stage is retired by a reload: it has forwarded the barrier and
    /// takes nothing more; end it.
    Retire,
    /// Go on, reading these channels as well (a reload started producers).
    AddInputs(Vec<Receiver<Message>>),
}

/// One operator instance or sink, driven event by event.
pub trait Stage: Send {
    /// Takes a batch from its input `input` (an index into its `inputs`).
    fn on_batch(&mut self, batch: Batch, input: u32) -> Result<(), TaskError>;

    /// When it (or a stage chained after it) next wants [`Stage::on_tick`]:
    /// a processing-time timer is due then.
    fn next_tick(&self) -> Option<Instant> {
        None
    }

    /// The time [`Stage::next_tick`] named has come: fires what is due.
    fn on_tick(&mut self) -> Result<(), TaskError> {
        Ok(())
    }

    /// Takes checkpoint barrier `checkpoint`, aligned across its inputs in
    /// `alignment`: snapshots, forwards the barrier, follows its mailbox.
    fn on_barrier(
        &mut self,
        checkpoint: CheckpointId,
        alignment: Duration,
    ) -> Result<Flow, TaskError>;

    /// Takes a watermark: event time on every input has reached it (or every
    /// input is idle). Stages pass it on after acting on it.
    fn on_watermark(&mut self, mark: Watermark) -> Result<(), TaskError>;

    /// Its inputs have ended (or it retired): finishes, ends its outputs and
    /// adds what it (and whatever is chained after it) did to `finished`.
    fn on_end(&mut self, finished: &mut Vec<Finished>) -> Result<(), TaskError>;

    /// The pipeline failed around it: keeps what it can (a sink keeps what
    /// arrived), says nothing.
    fn on_abort(&mut self) {}
}

/// Runs `stage` on the current thread from `inputs` until they end or it
/// retires: a task thread's loop.
pub fn drive(
    stage: &mut dyn Stage,
    mut inputs: InputGate,
    beat: &Beat,
    metrics: &TaskMetrics,
) -> Result<Vec<Finished>, TaskError> {
    let result = (|| loop {
        match next_event(&mut inputs, stage.next_tick(), beat, metrics)? {
            Event::Batch { batch, input } => stage.on_batch(batch, input)?,
            Event::Tick => stage.on_tick()?,
            Event::Watermark(mark) => stage.on_watermark(mark)?,
            Event::Barrier(checkpoint) => {
                match stage.on_barrier(checkpoint, inputs.last_alignment())? {
                    Flow::Go => {}
                    Flow::Retire => return Ok(()),
                    Flow::AddInputs(channels) => inputs.add(channels),
                }
            }
            Event::End => return Ok(()),
        }
    })();
    beat.idle();
    if let Err(e) = result {
        stage.on_abort();
        return Err(e);
    }
    let mut finished = Vec::new();
    stage.on_end(&mut finished)?;
    Ok(finished)
}
