//! Turning a validated [`crate::graph::Topology`] into running tasks.
//!
//! Every source, operator instance and sink runs on an OS thread, so CPU-bound
//! plugin calls never block the daemon's I/O runtime. Components joined by a
//! forward edge share one thread (operator chaining, [`chain`]): the first
//! calls the next. Other tasks are connected by bounded channels, one per
//! (producer instance, consumer instance) pair as in Flink, so a slow consumer
//! makes its producers wait instead of growing memory.
//!
//! - [`output`]: routes a task's batches to its consumers (hash, forward, ...).
//! - [`input`]: merges a task's input channels and tracks which have ended.
//! - [`stage`]: what an operator or sink does per batch and barrier, on its
//!   own thread or chained.
//! - [`task`]: the operator instance.
//! - [`chain`]: which components share a thread.
//! - [`snapshot_writer`]: an operator instance's snapshots, written in the
//!   background, full or as changes (incremental checkpoints).
//! - [`pipeline`]: builds every task, starts them and waits for the outcome.
//! - [`reconfigure`]: applying a reload to the running pipeline.
//! - [`rewire`]: retiring and rewiring tasks at a barrier (hot reload).
//! - [`liveness`]: which tasks are busy, and for how long (the watchdog).

pub mod chain;
pub mod input;
pub mod liveness;
pub mod output;
pub mod pipeline;
pub mod reconfigure;
pub mod rewire;
pub mod snapshot_writer;
pub mod stage;
pub mod task;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use thiserror::Error;

use crate::graph::ComponentId;
use crate::operator_host::CallError;

pub use pipeline::{Checkpointing, Pipeline, RunReport};

/// Asks sources to stop producing; the pipeline then drains and ends.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    /// Asks every source to stop.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether a stop was asked for.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why a task ended early.
#[derive(Debug, Error)]
pub enum TaskError {
    /// An operator call failed.
    #[error("operator `{operator}` (instance {instance}) {}: {error}", describe_position(*.first, *.len, .error))]
    Operator {
        /// The operator.
        operator: ComponentId,
        /// Its instance.
        instance: u32,
        /// Position on this instance's input of the batch's first record.
        first: u64,
        /// Records in the batch.
        len: u32,
        /// What went wrong.
        error: CallError,
    },
    /// Firing an operator's timers failed.
    #[error("operator `{operator}` (instance {instance}) failed while firing timers: {error}")]
    Timer {
        /// The operator.
        operator: ComponentId,
        /// Its instance.
        instance: u32,
        /// What went wrong.
        error: CallError,
    },
    /// An operator instance could not be started (instantiation or `init`).
    #[error("operator `{operator}` (instance {instance}) failed to start: {error}")]
    Init {
        /// The operator.
        operator: ComponentId,
        /// Its instance.
        instance: u32,
        /// What went wrong.
        error: CallError,
    },
    /// An operator instance could not hand over its state at a checkpoint.
    #[error(
        "operator `{operator}` (instance {instance}) failed to snapshot for checkpoint {checkpoint}: {error}"
    )]
    Snapshot {
        /// The operator.
        operator: ComponentId,
        /// Its instance.
        instance: u32,
        /// The checkpoint.
        checkpoint: crate::checkpoint::CheckpointId,
        /// What went wrong.
        error: CallError,
    },
    /// A checkpoint failed in a way that loses output.
    #[error("{0}")]
    Checkpoint(String),
    /// Restoring from a checkpoint failed.
    #[error("cannot restore {what}: {message}")]
    Restore {
        /// What was being restored.
        what: String,
        /// What went wrong.
        message: String,
    },
    /// A task thread panicked: a bug in Weir, reported rather than aborting.
    #[error("task {task} panicked: {message}")]
    Panicked {
        /// Which task.
        task: String,
        /// The panic message.
        message: String,
    },
    /// A source failed.
    #[error("source `{id}`: {message}")]
    Source {
        /// The source.
        id: ComponentId,
        /// What went wrong.
        message: String,
    },
    /// A sink failed.
    #[error("sink `{id}`: {message}")]
    Sink {
        /// The sink.
        id: ComponentId,
        /// What went wrong.
        message: String,
    },
    /// Checkpoint barriers arrived out of order: a bug in Weir.
    #[error("checkpoint barriers out of order: {0}")]
    Protocol(String),
    /// An input channel closed without an end-of-stream: its producer failed.
    #[error("stopped because a task upstream failed")]
    UpstreamGone,
    /// An output channel closed: its consumer failed.
    #[error("stopped because a task downstream failed")]
    DownstreamGone,
    /// Not a failure: a reload retired the task at a barrier.
    #[error("retired by a reload")]
    Retired,
}

impl TaskError {
    /// The operator that failed, if an operator did.
    pub fn operator(&self) -> Option<&ComponentId> {
        match self {
            Self::Operator { operator, .. }
            | Self::Init { operator, .. }
            | Self::Snapshot { operator, .. } => Some(operator),
            _ => None,
        }
    }
}

impl TaskError {
    /// Whether this error only follows from another task's failure.
    pub fn is_consequence(&self) -> bool {
        matches!(self, Self::UpstreamGone | Self::DownstreamGone)
    }

    /// Whether restarting from a checkpoint may get past it: not when the
    /// checkpoint itself cannot be restored.
    pub fn is_restartable(&self) -> bool {
        !matches!(self, Self::Restore { .. } | Self::Protocol(_))
    }
}

fn describe_position(first: u64, len: u32, error: &CallError) -> String {
    match error {
        CallError::Plugin {
            record_index: Some(i),
            ..
        } => {
            format!(
                "failed at input record {} (record {i} of a {len}-record batch)",
                first + u64::from(*i)
            )
        }
        _ => format!(
            "failed while processing input records {first}..{}",
            first + u64::from(len)
        ),
    }
}
