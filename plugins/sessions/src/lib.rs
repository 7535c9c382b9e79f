//! Session windows per key over event time: records of a key less than `gap`
//! apart form one session, which closes `gap` after its last record. When
//! the watermark passes a session's end it emits one JSON line with every
//! value the session took, in arrival order (a process-the-whole-window
//! function): `{"key":"u1","start":1000,"end":1800000,"count":2,"values":["a","b"]}`.
//! A record that bridges two sessions merges them. Late records (past
//! `allowed_lateness`) go unchanged to the side output `late`.
//!
//! ```toml
//! [operators.sessions]
//! module = "plugins/sessions.wasm"
//! inputs = ["clicks"]
//! partition = "hash"
//! config = { gap = "30m", allowed_lateness = "1m" }
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_guest_sdk::window::{Assigner, Collect, Fired, Windows};
use weir_guest_sdk::{Context, Error, InitContext, Operator, Record, Timer};

/// The operator's config table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The silence that ends a session.
    #[serde(with = "humantime_serde")]
    gap: Duration,
    /// How long a session takes late records after it closed.
    #[serde(default, with = "humantime_serde")]
    allowed_lateness: Option<Duration>,
}

/// One session, as emitted.
#[derive(Debug, Serialize)]
struct Session<'a> {
    key: &'a str,
    start: i64,
    end: i64,
    count: usize,
    values: &'a [String],
}

/// The sessions operator.
pub struct Sessions {
    windows: Windows<Collect<String>>,
}

impl Sessions {
    fn emit(fired: Vec<Fired<Vec<String>>>, key: &[u8], ctx: &mut Context) -> Result<(), Error> {
        for Fired { window, result } in fired {
            let line = serde_json::to_vec(&Session {
                key: &String::from_utf8_lossy(key),
                start: window.start,
                end: window.end,
                count: result.len(),
                values: &result,
            })
            .map_err(|e| Error::new(e.to_string()))?;
            ctx.emit_at(key, &line, window.max_timestamp());
        }
        Ok(())
    }
}

impl Operator for Sessions {
    const OUTPUTS: &'static [&'static str] = &["late"];

    fn init(ctx: &InitContext) -> Result<Self, Error> {
        let settings: Settings = ctx.config().deserialize()?;
        if settings.gap.is_zero() {
            return Err(Error::new("config.gap must be at least 1ms"));
        }
        let windows = ctx
            .windows("sessions", Assigner::session(settings.gap))
            .allowed_lateness(settings.allowed_lateness.unwrap_or_default())
            .late_output(ctx.side_output("late")?)
            .process()?;
        Ok(Self { windows })
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let value = String::from_utf8_lossy(record.value).into_owned();
        let fired = self.windows.add(&record, value, ctx)?;
        Self::emit(fired, record.key, ctx)
    }

    fn on_timer(&mut self, timer: Timer<'_>, ctx: &mut Context) -> Result<(), Error> {
        let fired = self.windows.on_timer(&timer)?;
        Self::emit(fired, timer.key, ctx)
    }
}

weir_guest_sdk::export_operator!(Sessions);

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    use weir_guest_sdk::testing::Harness;

    use super::*;

    #[test]
    fn a_session_closes_after_the_gap_with_all_its_values() {
        let mut op = Harness::<Sessions>::new(r#"{"gap": "1s"}"#).unwrap();
        op.process_timed(&[("u", "a", 0), ("u", "b", 500), ("u", "c", 3_000)])
            .unwrap();
        assert_eq!(
            op.advance_watermark(1_499).unwrap(),
            [r#"{"key":"u","start":0,"end":1500,"count":2,"values":["a","b"]}"#]
        );
        assert_eq!(
            op.advance_watermark(i64::MAX).unwrap(),
            [r#"{"key":"u","start":3000,"end":4000,"count":1,"values":["c"]}"#]
        );
    }
}
