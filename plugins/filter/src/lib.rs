//! Keeps the records whose value contains the configured `contains` string,
//! and counts the others in `weir_plugin_filtered_out_total`.
//!
//! ```toml
//! [operators.errors]
//! module = "plugins/filter.wasm"
//! inputs = ["lines"]
//! config = { contains = "ERROR" }
//! ```

use serde::Deserialize;
use weir_guest_sdk::{Context, Counter, Error, InitContext, Operator, Record};

/// The operator's `config` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterConfig {
    /// Substring a value must contain to be kept (compared as bytes).
    contains: String,
}

/// The filter operator.
pub struct Filter {
    needle: Vec<u8>,
    filtered_out: Counter,
}

impl Operator for Filter {
    fn init(ctx: &InitContext) -> Result<Self, Error> {
        let config: FilterConfig = ctx.config().deserialize()?;
        Ok(Self {
            needle: config.contains.into_bytes(),
            filtered_out: ctx.counter(
                "filtered_out",
                "Records dropped for not containing the text.",
            )?,
        })
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        if self.needle.is_empty()
            || record
                .value
                .windows(self.needle.len())
                .any(|w| w == self.needle)
        {
            ctx.forward(&record);
        } else {
            self.filtered_out.inc();
        }
        Ok(())
    }
}

weir_guest_sdk::export_operator!(Filter);

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    use weir_guest_sdk::testing::Harness;

    use super::*;

    #[test]
    fn keeps_only_matching_values() {
        let mut op = Harness::<Filter>::new(r#"{"contains": "an"}"#).unwrap();
        assert_eq!(
            op.process_values(&["banana", "cherry", "an", "a n"])
                .unwrap(),
            ["banana", "an"]
        );
        assert_eq!(op.metric("filtered_out"), Some(2));
    }

    #[test]
    fn config_errors_name_the_key() {
        let missing = Harness::<Filter>::new("{}").err().unwrap();
        assert!(
            missing.message().contains("missing field `contains`"),
            "{missing}"
        );
        let typo = Harness::<Filter>::new(r#"{"contains": "x", "contain": "y"}"#)
            .err()
            .unwrap();
        assert!(typo.message().contains("unknown field `contain`"), "{typo}");
    }
}
