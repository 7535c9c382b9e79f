//! Telling systemd what the daemon is doing (`sd_notify(3)`), when it runs
//! as a `Type=notify` service. Without `NOTIFY_SOCKET` every call is a no-op.
//!
//! Messages go out from a thread of their own: a datagram send blocks while
//! the receiver's queue is full (ten messages, by default), and a reader
//! that stops reading must not stall the daemon's runtime, its shutdown
//! included. What cannot be queued (a reader gone for long) is dropped and
//! counted in the log.

use std::sync::OnceLock;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use sd_notify::NotifyState;

/// Messages waiting for the notify thread.
const QUEUE: usize = 256;

/// The notify thread's queue, started on the first message.
static OUTBOX: OnceLock<Option<SyncSender<String>>> = OnceLock::new();

fn outbox() -> Option<&'static SyncSender<String>> {
    OUTBOX
        .get_or_init(|| {
            std::env::var_os("NOTIFY_SOCKET")?;
            let (tx, rx) = sync_channel::<String>(QUEUE);
            let spawned = std::thread::Builder::new()
                .name("weir-notify".into())
                .spawn(move || {
                    for message in rx {
                        let states = [NotifyState::Custom(message.trim_end())];
                        if let Err(e) = sd_notify::notify(&states) {
                            tracing::warn!("cannot notify systemd: {e}");
                        }
                    }
                });
            match spawned {
                Ok(_) => Some(tx),
                Err(e) => {
                    tracing::warn!("cannot start the systemd notify thread: {e}");
                    None
                }
            }
        })
        .as_ref()
}

/// The daemon's line to systemd.
#[derive(Debug, Clone, Copy)]
pub struct Notifier {
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` from the environment.
    pub fn from_env() -> Self {
        Self {
            watchdog: sd_notify::watchdog_enabled(),
        }
    }

    /// How often to ping the watchdog: half its timeout, if it is on.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    /// The watchdog timeout, if it is on.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    fn send(states: &[NotifyState<'_>]) {
        let Some(outbox) = outbox() else {
            return;
        };
        let message: String = states.iter().map(|s| format!("{s}\n")).collect();
        match outbox.try_send(message) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                tracing::warn!("systemd is not reading notifications; one was dropped");
            }
        }
    }

    /// The topology is running.
    pub fn ready(&self, status: &str) {
        Self::send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A line for `systemctl status`.
    pub fn status(&self, status: &str) {
        Self::send(&[NotifyState::Status(status)]);
    }

    /// A reload begins (systemd wants the monotonic time with it).
    pub fn reloading(&self) {
        let mut states = vec![NotifyState::Reloading];
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        states.push(NotifyState::Status("reloading the configuration"));
        Self::send(&states);
    }

    /// Shutting down.
    pub fn stopping(&self, status: &str) {
        Self::send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    /// The pipeline is healthy.
    pub fn watchdog_ping(&self) {
        Self::send(&[NotifyState::Watchdog]);
    }
}
