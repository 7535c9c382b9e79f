//! Whether a running pipeline is making progress, for the systemd watchdog.
//!
//! Each task holds a [`Beat`] and marks itself busy while it works on a batch
//! (a plugin call, a send to its consumers, a write) and idle while it waits
//! for input. A task busy for longer than a limit is wedged: its call did not
//! return, or its consumers stopped taking batches. An idle pipeline (a
//! quiet source) is healthy; a wedged one stops the watchdog pings, so
//! systemd restarts the daemon.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// One task's heartbeat.
#[derive(Debug, Clone)]
pub struct Beat {
    base: Instant,
    /// Milliseconds since `base` (plus one) when the current work began; 0
    /// while idle.
    busy_since: Arc<AtomicU64>,
}

impl Beat {
    /// The task starts working on something.
    pub fn busy(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.busy_since.store(ms + 1, Ordering::Relaxed);
    }

    /// The task waits for input (or has ended).
    pub fn idle(&self) {
        self.busy_since.store(0, Ordering::Relaxed);
    }
}

/// A task's name and when its current work began (see [`Beat`]).
type Named = (String, Arc<AtomicU64>);

/// Every task's heartbeat in one pipeline.
#[derive(Debug, Clone)]
pub struct Liveness {
    base: Instant,
    beats: Arc<Mutex<Vec<Named>>>,
}

impl Default for Liveness {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            beats: Arc::default(),
        }
    }
}

impl Liveness {
    /// A heartbeat for task `name`.
    pub fn register(&self, name: &str) -> Beat {
        let busy_since = Arc::new(AtomicU64::new(0));
        let mut beats = self.beats.lock().unwrap_or_else(PoisonError::into_inner);
        // Tasks a reload retired have dropped their beat.
        beats.retain(|(_, since)| Arc::strong_count(since) > 1);
        beats.push((name.to_owned(), busy_since.clone()));
        Beat {
            base: self.base,
            busy_since,
        }
    }

    /// The task that has been busy the longest, if longer than `limit`.
    pub fn wedged(&self, limit: Duration) -> Option<(String, Duration)> {
        let now = self.base.elapsed();
        let beats = self.beats.lock().unwrap_or_else(PoisonError::into_inner);
        beats
            .iter()
            .filter_map(|(name, since)| {
                let since = since.load(Ordering::Relaxed);
                (since > 0).then(|| (name, now.saturating_sub(Duration::from_millis(since - 1))))
            })
            .max_by_key(|(_, busy)| *busy)
            .filter(|(_, busy)| *busy > limit)
            .map(|(name, busy)| (name.clone(), busy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_busy_past_the_limit_is_wedged_and_an_idle_one_is_not() {
        let liveness = Liveness::default();
        let a = liveness.register("op-a-0");
        let b = liveness.register("sink-b");
        assert_eq!(liveness.wedged(Duration::ZERO), None);
        a.busy();
        b.busy();
        b.idle();
        std::thread::sleep(Duration::from_millis(30));
        let (name, busy) = liveness.wedged(Duration::from_millis(10)).unwrap();
        assert_eq!(name, "op-a-0");
        assert!(busy >= Duration::from_millis(20), "{busy:?}");
        assert_eq!(liveness.wedged(Duration::from_secs(10)), None);
        a.idle();
        assert_eq!(liveness.wedged(Duration::ZERO), None);
    }
}
