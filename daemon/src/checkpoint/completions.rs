//! The latest complete checkpoint, for the tasks that act once a checkpoint
//! is complete (a Kafka sink committing its transaction, a Kafka source
//! committing offsets for monitoring), as Flink's `notifyCheckpointComplete`.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use super::CheckpointId;

/// What the coordinator has completed; shared by the pipeline's tasks.
#[derive(Debug, Default)]
pub struct Completions {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct State {
    latest: CheckpointId,
    closed: bool,
}

/// What [`Completions::wait`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The latest complete checkpoint (0: none yet).
    pub latest: CheckpointId,
    /// The coordinator has ended: nothing more will complete.
    pub closed: bool,
}

impl Completions {
    /// Starts at `restored`, the checkpoint the pipeline started from.
    pub fn new(restored: CheckpointId) -> Self {
        Self {
            state: Mutex::new(State {
                latest: restored,
                closed: false,
            }),
            changed: Condvar::new(),
        }
    }

    /// Checkpoint `id` is complete and durable.
    pub fn completed(&self, id: CheckpointId) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.latest = s.latest.max(id);
        self.changed.notify_all();
    }

    /// The coordinator has ended.
    pub fn close(&self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.closed = true;
        self.changed.notify_all();
    }

    /// What has completed now.
    pub fn seen(&self) -> Seen {
        let s = *self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Seen {
            latest: s.latest,
            closed: s.closed,
        }
    }

    /// Waits up to `timeout` for a checkpoint after `after` to complete (or
    /// the coordinator to end).
    pub fn wait(&self, after: CheckpointId, timeout: Duration) -> Seen {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (s, _) = self
            .changed
            .wait_timeout_while(s, timeout, |s| s.latest <= after && !s.closed)
            .unwrap_or_else(PoisonError::into_inner);
        Seen {
            latest: s.latest,
            closed: s.closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_waiter_wakes_on_completion_and_on_close() {
        let c = Arc::new(Completions::new(3));
        assert_eq!(c.wait(3, Duration::from_millis(10)).latest, 3, "times out");
        let other = c.clone();
        let t = std::thread::spawn(move || other.wait(3, Duration::from_secs(30)));
        c.completed(5);
        assert_eq!(
            t.join().unwrap(),
            Seen {
                latest: 5,
                closed: false
            }
        );
        c.completed(4);
        assert_eq!(c.seen().latest, 5, "never goes back");
        let other = c.clone();
        let t = std::thread::spawn(move || other.wait(5, Duration::from_secs(30)));
        c.close();
        assert!(t.join().unwrap().closed);
    }
}
