//! What checkpoints cost: per checkpoint, and summed over a run (for
//! `weir bench` and the run report).

use std::time::Duration;

use super::CheckpointId;

/// One completed checkpoint's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// The checkpoint.
    pub id: CheckpointId,
    /// From trigger to complete (metadata durable).
    pub duration: Duration,
    /// Bytes of state files written.
    pub bytes: u64,
    /// The longest any task stopped processing for it.
    pub max_pause: Duration,
    /// The longest barrier alignment.
    pub max_alignment: Duration,
}

/// Checkpoint figures over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Checkpoints completed.
    pub completed: u64,
    /// Checkpoints abandoned or failed.
    pub failed: u64,
    /// Sum of their durations.
    pub total_duration: Duration,
    /// The longest.
    pub max_duration: Duration,
    /// The longest pause any of them caused.
    pub max_pause: Duration,
    /// The longest alignment.
    pub max_alignment: Duration,
    /// Bytes of the last one.
    pub last_bytes: u64,
    /// Bytes of all of them.
    pub total_bytes: u64,
    /// The last one completed.
    pub last: Option<Stats>,
}

impl Summary {
    /// Adds a completed checkpoint.
    pub fn record(&mut self, s: &Stats) {
        self.completed += 1;
        self.total_duration += s.duration;
        self.max_duration = self.max_duration.max(s.duration);
        self.max_pause = self.max_pause.max(s.max_pause);
        self.max_alignment = self.max_alignment.max(s.max_alignment);
        self.last_bytes = s.bytes;
        self.total_bytes += s.bytes;
        self.last = Some(*s);
    }

    /// The mean duration of completed checkpoints.
    pub fn mean_duration(&self) -> Duration {
        u32::try_from(self.completed)
            .ok()
            .filter(|n| *n > 0)
            .map_or(Duration::ZERO, |n| self.total_duration / n)
    }
}
