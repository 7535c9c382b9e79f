//! Drops duplicates within a time window: a record passes if no record with
//! its key passed in the last `window_ms` milliseconds of processing time,
//! and is dropped otherwise. What users of an event stream with retried
//! deliveries want (an order id seen twice within minutes is one order).
//!
//! The keys that passed live in value state with a TTL of the window, so the
//! state holds only the keys of the last window and expires the rest by
//! itself. A duplicate does not renew its key's TTL: the window runs from
//! the record that passed.
//!
//! ```toml
//! [operators.dedupe]
//! module = "plugins/dedupe_ttl.wasm"
//! inputs = ["orders"]
//! config = { window_ms = 600000 }    # default 60000
//! ```

use std::time::Duration;

use serde::Deserialize;
use weir_guest_sdk::{Context, Error, InitContext, Operator, Record, ValueState};

/// The operator's config table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The window, in ms.
    #[serde(default = "default_window_ms")]
    window_ms: u64,
}

fn default_window_ms() -> u64 {
    60_000
}

/// The dedupe-within-a-window operator.
pub struct DedupeTtl {
    passed: ValueState<()>,
}

impl Operator for DedupeTtl {
    fn init(ctx: &InitContext) -> Result<Self, Error> {
        let settings: Settings = ctx.config().deserialize()?;
        if settings.window_ms == 0 {
            return Err(Error::new("config.window_ms must be at least 1"));
        }
        Ok(Self {
            passed: ctx
                .state("passed")
                .ttl(Duration::from_millis(settings.window_ms))
                .value()?,
        })
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        if self.passed.get()?.is_some() {
            return Ok(());
        }
        self.passed.set(&())?;
        ctx.emit(record.key, record.value);
        Ok(())
    }
}

weir_guest_sdk::export_operator!(DedupeTtl);

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    use std::time::Duration;

    use weir_guest_sdk::testing::Harness;

    use super::*;

    #[test]
    fn a_key_passes_again_once_its_window_has_expired() {
        let mut op = Harness::<DedupeTtl>::new(r#"{"window_ms": 1000}"#).unwrap();
        assert_eq!(
            op.process_keyed(&[("a", "1"), ("b", "1"), ("a", "2")])
                .unwrap(),
            ["1", "1"]
        );
        op.advance_processing_time(Duration::from_millis(999))
            .unwrap();
        assert_eq!(
            op.process_keyed(&[("a", "3"), ("b", "3")]).unwrap(),
            Vec::<String>::new()
        );
        op.advance_processing_time(Duration::from_millis(1))
            .unwrap();
        assert_eq!(op.process_keyed(&[("a", "4"), ("a", "5")]).unwrap(), ["4"]);
        // `b`'s window ran from its first record, not its duplicates.
        assert_eq!(op.process_keyed(&[("b", "6")]).unwrap(), ["6"]);
    }

    #[test]
    fn a_zero_window_is_refused() {
        let e = Harness::<DedupeTtl>::new(r#"{"window_ms": 0}"#)
            .err()
            .unwrap();
        assert!(e.to_string().contains("window_ms"), "{e}");
    }
}
