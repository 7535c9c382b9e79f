//! The systemd watchdog: a task of its own pings every half `WatchdogSec`
//! while neither the running pipeline nor the supervisor is wedged, so a
//! reload, a restart or a start in progress never silences it, and a plugin
//! call, send or write stuck past half the timeout does.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::notify::Notifier;
use crate::topology::liveness::{Beat, Liveness};

/// What the watchdog watches: the supervisor's own heartbeat (busy while it
/// starts or reloads a pipeline) and the running pipeline's tasks.
#[derive(Debug, Clone)]
pub(super) struct Watched {
    supervisor: Liveness,
    pipeline: Arc<Mutex<Option<Liveness>>>,
}

impl Watched {
    /// Nothing running yet; the supervisor's heartbeat.
    pub(super) fn new() -> (Self, Beat) {
        let supervisor = Liveness::default();
        let beat = supervisor.register("the supervisor");
        (
            Self {
                supervisor,
                pipeline: Arc::default(),
            },
            beat,
        )
    }

    /// The pipeline whose tasks are watched from now on.
    pub(super) fn pipeline(&self, liveness: Liveness) {
        *self.pipeline.lock().unwrap_or_else(PoisonError::into_inner) = Some(liveness);
    }

    /// The task busy longest past `limit`, if any.
    fn wedged(&self, limit: Duration) -> Option<(String, Duration)> {
        let pipeline = self
            .pipeline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        self.supervisor
            .wedged(limit)
            .into_iter()
            .chain(pipeline.and_then(|p| p.wedged(limit)))
            .max_by_key(|(_, busy)| *busy)
    }
}

/// Pings the watchdog (if `WATCHDOG_USEC` asks for it) until the runtime ends.
pub(super) fn spawn(notifier: Notifier, watched: Watched) {
    let (Some(interval), Some(timeout)) = (notifier.watchdog_interval(), notifier.watchdog())
    else {
        return;
    };
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        let mut wedged = false;
        loop {
            ticks.tick().await;
            match watched.wedged(timeout / 2) {
                None => {
                    notifier.watchdog_ping();
                    wedged = false;
                }
                Some((task, busy)) => {
                    if !wedged {
                        tracing::error!(%task, busy = ?busy, "the pipeline is wedged; not pinging the watchdog");
                        notifier.status(&format!("wedged: {task} busy for {busy:?}"));
                    }
                    wedged = true;
                }
            }
        }
    });
}
