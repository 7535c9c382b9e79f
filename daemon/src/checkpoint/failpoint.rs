//! Crash points inside the checkpoint path, so tests can show that a crash at
//! any of them loses nothing and duplicates nothing.
//!
//! `WEIR_FAILPOINT=<name>` makes the daemon abort (as abruptly as SIGKILL: no
//! destructors, no flushing) the first time it reaches that point;
//! `WEIR_FAILPOINT=<name>:<n>` the n-th time. Unset, each check is one
//! relaxed load of a cached value.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// Every part is durable; the metadata file is not written yet.
    BeforeMetadata,
    /// The metadata file is in place; sinks are not committed yet.
    BeforeCommit,
    /// Sinks are committed; old checkpoints are being removed.
    DuringCleanup,
    /// A Kafka sink's transaction holds a checkpoint's output and marker;
    /// it is not committed yet.
    KafkaBeforeCommit,
    /// A Kafka sink's transaction is committed; its staged file is not
    /// removed yet.
    KafkaAfterCommit,
}

impl Point {
    fn name(self) -> &'static str {
        match self {
            Self::BeforeMetadata => "before-metadata",
            Self::BeforeCommit => "before-commit",
            Self::DuringCleanup => "during-cleanup",
            Self::KafkaBeforeCommit => "kafka-before-commit",
            Self::KafkaAfterCommit => "kafka-after-commit",
        }
    }
}

static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

/// Aborts the process here if `WEIR_FAILPOINT` names this point (and this is
/// the chosen hit).
pub fn check(point: Point) {
    let armed = ARMED.get_or_init(|| {
        let value = std::env::var("WEIR_FAILPOINT").ok()?;
        let (name, nth) = match value.split_once(':') {
            Some((name, n)) => (name.to_owned(), n.parse().unwrap_or(1)),
            None => (value, 1),
        };
        Some((name, nth))
    });
    if let Some((name, nth)) = armed
        && name == point.name()
        && HITS.fetch_add(1, Ordering::Relaxed) + 1 == *nth
    {
        tracing::error!(point = point.name(), "WEIR_FAILPOINT: aborting");
        std::process::abort();
    }
}
