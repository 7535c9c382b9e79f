//! Checkpoints: Chandy–Lamport barrier snapshots of the whole pipeline, as in
//! Flink's asynchronous barrier snapshotting.
//!
//! 1. The [`coordinator`] starts checkpoint `n`: every source records its
//!    position and sends barrier `n` downstream, in order with its records.
//! 2. Each operator instance aligns barrier `n` across its inputs
//!    ([`crate::topology::input`]), captures its keyed state and its plugin's
//!    operator state, forwards the barrier, and writes the capture out on
//!    another thread. Each sink instance closes its pending part file.
//! 3. Every task reports its [`Part`] once it is durable. When all have, the
//!    coordinator writes the metadata file last (temp file, fsync, rename,
//!    directory fsync: [`store`]); only then is the checkpoint complete, and
//!    only then are sinks' part files committed and old checkpoints removed.
//!
//! On start, [`restore`] finds the latest complete checkpoint whose files
//! check out and plans what every instance of the new topology loads from it.
//!
//! - [`metadata`]: what the metadata file records.
//! - [`store`]: the directory layout, durable writes, finding and retaining.
//! - [`coordinator`]: triggering, collecting, completing, committing.
//! - [`restore`]: choosing a checkpoint and assigning its state to instances.
//! - [`stats`]: what checkpoints cost (durations, pauses, bytes).
//! - [`savepoint`]: checkpoints a person asks for, written where they say.
//! - [`failpoint`]: crash points inside the checkpoint path, for tests.

pub mod completions;
pub mod coordinator;
pub mod failpoint;
pub mod metadata;
pub mod position;
pub mod restore;
pub mod savepoint;
pub mod stats;
pub mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::graph::ComponentId;
use crate::state::StateSpec;

pub use completions::Completions;
pub use metadata::{Committable, FileRef, Metadata};
pub use position::SourcePosition;

/// Checkpoint ids count up from 1 and never repeat within a data directory.
pub type CheckpointId = u64;

/// One task instance: a source, an operator instance or a sink.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskKey {
    /// The component.
    pub component: ComponentId,
    /// Its instance.
    pub instance: u32,
}

/// What one task contributes to a checkpoint, once durable.
#[derive(Debug, Clone)]
pub enum Part {
    /// A source's position: the next record it will read after a restore.
    Source {
        /// Where it resumes.
        position: SourcePosition,
        /// The largest event timestamp it had sent, when it assigns event
        /// time: its watermark resumes from there, so a restored run calls
        /// the same records late as an uninterrupted one.
        event_time: Option<i64>,
    },
    /// An operator instance's state.
    Operator {
        /// The operator's parallelism when the snapshot was taken.
        parallelism: u32,
        /// Its key groups.
        key_groups: (u32, u32),
        /// The declared keyed states.
        states: BTreeMap<String, StateSpec>,
        /// The keyed-state snapshot file, if the operator has keyed state.
        keyed: Option<FileRef>,
        /// Change files on top of it, oldest first.
        keyed_changes: Vec<FileRef>,
        /// Bytes this checkpoint wrote (the rest is linked from earlier ones).
        written: u64,
        /// The plugin's operator state file and its version, if it saved any.
        operator_state: Option<(FileRef, u32)>,
        /// Input records the instance had taken at the barrier.
        records_in: u64,
    },
    /// A sink instance's part file, pending until the checkpoint completes.
    Sink {
        /// Files to commit, if any records came since the last barrier.
        committables: Vec<Committable>,
    },
    /// A task with nothing to save (a built-in operator, a blackhole sink).
    Nothing,
}

/// A task's report for checkpoint `checkpoint`, or why it could not take part.
#[derive(Debug)]
pub struct Ack {
    /// The checkpoint.
    pub checkpoint: CheckpointId,
    /// Who reports.
    pub task: TaskKey,
    /// The part, or what went wrong (the checkpoint is then abandoned).
    pub part: Result<Part, String>,
    /// What the checkpoint cost the task.
    pub timing: Timing,
}

/// What taking part in a checkpoint cost one task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timing {
    /// From the barrier's arrival on its first input to its arrival on the
    /// last, during which the first input was not read.
    pub alignment: std::time::Duration,
    /// How long processing stopped for the snapshot (operators: capturing
    /// state; sinks: syncing the pending part).
    pub pause: std::time::Duration,
}

/// Messages tasks send to the coordinator.
#[derive(Debug)]
pub enum Report {
    /// A part of a checkpoint.
    Ack(Ack),
    /// A source has nothing more to read (or was asked to stop); it waits for
    /// the final checkpoint.
    Exhausted(TaskKey),
    /// The pipeline failed: abandon what is in flight and end.
    Stop,
    /// Someone asks for a savepoint.
    Savepoint(savepoint::Request),
    /// A reload changes the running pipeline at the next checkpoint.
    Reconfigure(Reconfiguration),
    /// The reload's new tasks run: checkpoints go on with them.
    Resume {
        /// New source instances and their trigger channels.
        sources: Vec<(TaskKey, crossbeam_channel::Sender<Trigger>)>,
        /// New tasks that report parts (sources included).
        tasks: Vec<TaskKey>,
    },
}

/// A reload applied at a checkpoint barrier ([`crate::topology::rewire`]).
pub struct Reconfiguration {
    /// Called with the checkpoint's id just before its barrier is triggered:
    /// leaves every affected task its instruction.
    pub prepare: Box<dyn FnOnce(CheckpointId) + Send>,
    /// The tasks that stop at the barrier.
    pub retire: std::collections::BTreeSet<TaskKey>,
    /// Told the checkpoint's id once it is complete (the retired tasks' state
    /// is then durable), or why it is not. Until [`Report::Resume`], no
    /// further checkpoint starts.
    pub reply: crossbeam_channel::Sender<Result<CheckpointId, String>>,
}

impl std::fmt::Debug for Reconfiguration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconfiguration")
            .field("retire", &self.retire)
            .finish_non_exhaustive()
    }
}

/// A handle on a running pipeline's checkpoints, for the admin endpoint.
#[derive(Debug, Clone)]
pub struct Control {
    reports: crossbeam_channel::Sender<Report>,
    targets: savepoint::Targets,
}

impl Control {
    /// A handle that reaches the coordinator reading `reports`, which
    /// writes savepoints only where `targets` allows.
    pub fn new(reports: crossbeam_channel::Sender<Report>, targets: savepoint::Targets) -> Self {
        Self { reports, targets }
    }

    /// Checks that a savepoint may be written to `directory`.
    pub fn check_target(&self, directory: &std::path::Path) -> Result<(), store::StoreError> {
        self.targets.check(directory)
    }

    /// Asks for a savepoint in `directory` (absolute; `None`: a new directory
    /// under the savepoint directory). The answer comes once it is written; if
    /// the pipeline ends first, the sender is dropped.
    pub fn savepoint(
        &self,
        directory: Option<PathBuf>,
    ) -> tokio::sync::oneshot::Receiver<Result<savepoint::Taken, String>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let _ = self
            .reports
            .send(Report::Savepoint(savepoint::Request { directory, reply }));
        answer
    }
}

/// What a task needs to take part in checkpoints.
#[derive(Debug, Clone)]
pub struct TaskCheckpointing {
    /// Who this task is.
    pub task: TaskKey,
    /// Where checkpoint directories live.
    pub root: PathBuf,
    /// Where to report.
    pub reports: crossbeam_channel::Sender<Report>,
}

impl TaskCheckpointing {
    /// Reports a part (or failure) of `checkpoint`. A coordinator that is gone
    /// has stopped caring: the report is dropped.
    pub fn ack(&self, checkpoint: CheckpointId, part: Result<Part, String>) {
        self.ack_timed(checkpoint, part, Timing::default());
    }

    /// Reports a part with what it cost.
    pub fn ack_timed(&self, checkpoint: CheckpointId, part: Result<Part, String>, timing: Timing) {
        let _ = self.reports.send(Report::Ack(Ack {
            checkpoint,
            task: self.task.clone(),
            part,
            timing,
        }));
    }

    /// The directory of checkpoint `id`.
    pub fn dir(&self, id: CheckpointId) -> PathBuf {
        store::checkpoint_dir(&self.root, id)
    }
}

/// What a source is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trigger {
    /// The checkpoint.
    pub checkpoint: CheckpointId,
    /// The final checkpoint: after its barrier, the source ends.
    pub last: bool,
}
