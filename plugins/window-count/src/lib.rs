//! Counts records per key in event-time windows: tumbling, or sliding when
//! `slide` is set. When the watermark passes a window's end it emits, keyed
//! by the record key, one JSON line per key and window:
//! `{"key":"u1","start":60000,"end":120000,"count":3}`, timestamped with the
//! window's last millisecond. A record late for every window it falls in
//! (past `allowed_lateness`) goes unchanged to the side output `late`; one
//! within it fires its window again with the new count.
//!
//! ```toml
//! [operators.per_minute]
//! module = "plugins/window_count.wasm"
//! inputs = ["clicks"]
//! partition = "hash"
//! config = { size = "1m", allowed_lateness = "5s" }   # slide = "10s" for sliding windows
//!
//! [sinks.late]
//! type = "file"
//! inputs = ["per_minute.late"]
//! path = "late.jsonl"
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_guest_sdk::window::{Assigner, Fired, Reduce, Windows};
use weir_guest_sdk::{Context, Error, InitContext, Operator, Record, Timer};

/// The operator's config table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Window length.
    #[serde(with = "humantime_serde")]
    size: Duration,
    /// Distance between window starts (sliding windows); none: tumbling.
    #[serde(default, with = "humantime_serde")]
    slide: Option<Duration>,
    /// How long a window takes late records after it fired.
    #[serde(default, with = "humantime_serde")]
    allowed_lateness: Option<Duration>,
}

/// One window's count, as emitted.
#[derive(Debug, Serialize)]
struct Count<'a> {
    key: &'a str,
    start: i64,
    end: i64,
    count: u64,
}

/// The window-count operator.
pub struct WindowCount {
    windows: Windows<Reduce<u64>>,
}

impl WindowCount {
    fn emit(fired: Vec<Fired<u64>>, key: &[u8], ctx: &mut Context) -> Result<(), Error> {
        for Fired { window, result } in fired {
            let line = serde_json::to_vec(&Count {
                key: &String::from_utf8_lossy(key),
                start: window.start,
                end: window.end,
                count: result,
            })
            .map_err(|e| Error::new(e.to_string()))?;
            ctx.emit_at(key, &line, window.max_timestamp());
        }
        Ok(())
    }
}

impl Operator for WindowCount {
    const OUTPUTS: &'static [&'static str] = &["late"];

    fn init(ctx: &InitContext) -> Result<Self, Error> {
        let settings: Settings = ctx.config().deserialize()?;
        if settings.size.is_zero() || settings.slide.is_some_and(|s| s.is_zero()) {
            return Err(Error::new(
                "config.size and config.slide must be at least 1ms",
            ));
        }
        let assigner = match settings.slide {
            Some(slide) => Assigner::sliding(settings.size, slide),
            None => Assigner::tumbling(settings.size),
        };
        let windows = ctx
            .windows("counts", assigner)
            .allowed_lateness(settings.allowed_lateness.unwrap_or_default())
            .late_output(ctx.side_output("late")?)
            .reduce(|a, b| a + b)?;
        Ok(Self { windows })
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let fired = self.windows.add(&record, 1, ctx)?;
        Self::emit(fired, record.key, ctx)
    }

    fn on_timer(&mut self, timer: Timer<'_>, ctx: &mut Context) -> Result<(), Error> {
        let fired = self.windows.on_timer(&timer)?;
        Self::emit(fired, timer.key, ctx)
    }
}

weir_guest_sdk::export_operator!(WindowCount);

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    use weir_guest_sdk::testing::Harness;

    use super::*;

    #[test]
    fn counts_per_key_and_window_and_sends_the_too_late_aside() {
        let mut op = Harness::<WindowCount>::new(r#"{"size": "10s"}"#).unwrap();
        op.process_timed(&[("a", "", 1_000), ("b", "", 2_000), ("a", "", 9_999)])
            .unwrap();
        op.process_timed(&[("a", "", 10_000)]).unwrap();
        assert_eq!(
            op.advance_watermark(9_999).unwrap(),
            [
                r#"{"key":"a","start":0,"end":10000,"count":2}"#,
                r#"{"key":"b","start":0,"end":10000,"count":1}"#
            ]
        );
        assert!(
            op.process_timed(&[("a", "late", 5_000)])
                .unwrap()
                .is_empty()
        );
        assert_eq!(op.take_side_output("late").len(), 1);
        assert_eq!(
            op.advance_watermark(i64::MAX).unwrap(),
            [r#"{"key":"a","start":10000,"end":20000,"count":1}"#]
        );
    }

    #[test]
    fn slides_when_told_to() {
        let mut op = Harness::<WindowCount>::new(r#"{"size": "10s", "slide": "5s"}"#).unwrap();
        op.process_timed(&[("a", "", 7_000)]).unwrap();
        assert_eq!(op.advance_watermark(i64::MAX).unwrap().len(), 2);
    }

    #[test]
    fn refuses_a_zero_size() {
        assert!(Harness::<WindowCount>::new(r#"{"size": "0s"}"#).is_err());
        assert!(Harness::<WindowCount>::new("{}").is_err());
    }
}
