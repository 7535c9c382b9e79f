//! Telling systemd what the daemon is doing (`sd_notify(3)`), when it runs
//! as a `Type=notify` service. Without `NOTIFY_SOCKET` every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;

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
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!("cannot notify systemd: {e}");
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
