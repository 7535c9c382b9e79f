//! Says when a key goes quiet, by processing time: after each record it
//! (re)arms a processing-time timer `timeout` ahead for the record's key, and
//! when one fires (no record of that key since), it emits the key with value
//! `<key> quiet since <ms>`. Timers fire from the host's clock, whether
//! records arrive or not, and survive restarts with the checkpoint.
//!
//! ```toml
//! [operators.quiet]
//! module = "plugins/timeout.wasm"
//! inputs = ["heartbeats"]
//! partition = "hash"
//! config = { timeout = "30s" }
//! ```

use std::time::Duration;

use serde::Deserialize;
use weir_guest_sdk::{Context, Error, InitContext, Operator, Record, Timer, Timers, ValueState};

/// The operator's config table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Silence after which a key is reported.
    #[serde(with = "humantime_serde")]
    timeout: Duration,
}

/// The timeout operator.
pub struct Timeout {
    timeout: i64,
    /// The armed timer of each key.
    armed: ValueState<i64>,
    timers: Timers,
}

impl Operator for Timeout {
    fn init(ctx: &InitContext) -> Result<Self, Error> {
        let settings: Settings = ctx.config().deserialize()?;
        let timeout = i64::try_from(settings.timeout.as_millis()).unwrap_or(i64::MAX);
        if timeout == 0 {
            return Err(Error::new("config.timeout must be at least 1ms"));
        }
        Ok(Self {
            timeout,
            armed: ctx.state("armed").value()?,
            timers: ctx.timers(),
        })
    }

    fn process(&mut self, _record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        if let Some(armed) = self.armed.get()? {
            self.timers.delete_processing_time(armed)?;
        }
        let at = ctx.processing_time().saturating_add(self.timeout);
        self.timers.register_processing_time(at)?;
        self.armed.set(&at)
    }

    fn on_timer(&mut self, timer: Timer<'_>, ctx: &mut Context) -> Result<(), Error> {
        self.armed.clear()?;
        let since = timer.time - self.timeout;
        let line = format!("{} quiet since {since}", String::from_utf8_lossy(timer.key));
        ctx.emit(timer.key, line.as_bytes());
        Ok(())
    }
}

weir_guest_sdk::export_operator!(Timeout);

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    use weir_guest_sdk::testing::Harness;

    use super::*;

    #[test]
    fn a_key_is_reported_once_after_the_timeout_without_records() {
        let mut op = Harness::<Timeout>::new(r#"{"timeout": "1s"}"#).unwrap();
        op.process_keyed(&[("a", ""), ("b", "")]).unwrap();
        op.advance_processing_time(Duration::from_millis(600))
            .unwrap();
        op.process_keyed(&[("a", "")]).unwrap();
        assert_eq!(
            op.advance_processing_time(Duration::from_millis(400))
                .unwrap(),
            ["b quiet since 0"]
        );
        assert_eq!(
            op.advance_processing_time(Duration::from_secs(5)).unwrap(),
            ["a quiet since 600"]
        );
        assert_eq!(op.pending_timers(), 0);
    }
}
