//! Joins two streams by key, knowing which input each record came from (no
//! tagging of values by hand): records of the `reference` input (a user's
//! profile, say) are kept per key in value state; a record of any other
//! input is emitted as `<value>|<reference value>`. One that arrives before
//! its key has a reference waits in list state and goes out, in order, when
//! the reference comes. A stream-table join, as Flink's enrichment examples.
//!
//! ```toml
//! [operators.enriched]
//! module = "plugins/enrich.wasm"
//! inputs = ["users", "clicks"]          # both keyed by user id
//! config = { reference = "users" }
//! ```

use serde::Deserialize;
use weir_guest_sdk::{Context, Error, InitContext, ListState, Operator, Record, ValueState};

/// The operator's config table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The input whose records are the reference (as `inputs` names it).
    reference: String,
}

/// The enrich operator.
pub struct Enrich {
    reference: u32,
    current: ValueState<Vec<u8>>,
    waiting: ListState<Vec<u8>>,
}

fn joined(value: &[u8], reference: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(value.len() + 1 + reference.len());
    line.extend_from_slice(value);
    line.push(b'|');
    line.extend_from_slice(reference);
    line
}

impl Operator for Enrich {
    fn init(ctx: &InitContext) -> Result<Self, Error> {
        let settings: Settings = ctx.config().deserialize()?;
        Ok(Self {
            reference: ctx.input(&settings.reference)?,
            current: ctx.state("reference").value()?,
            waiting: ctx.state("waiting").list()?,
        })
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        if ctx.input() == self.reference {
            self.current.set(&record.value.to_vec())?;
            for value in self.waiting.get()? {
                ctx.emit(record.key, &joined(&value, record.value));
            }
            return self.waiting.clear();
        }
        match self.current.get()? {
            Some(reference) => ctx.emit(record.key, &joined(record.value, &reference)),
            None => self.waiting.append(&record.value.to_vec())?,
        }
        Ok(())
    }
}

weir_guest_sdk::export_operator!(Enrich);

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    use weir_guest_sdk::testing::{Harness, OwnedRecord};

    use super::*;

    fn values(out: Vec<OwnedRecord>) -> Vec<String> {
        out.into_iter()
            .map(|r| String::from_utf8(r.value).unwrap())
            .collect()
    }

    #[test]
    fn a_record_takes_its_key_s_reference_and_waits_for_one() {
        let config = r#"{"reference": "users"}"#;
        let mut op = Harness::<Enrich>::with_inputs("e", 0, config, &["users", "clicks"]).unwrap();
        let clicks = [OwnedRecord::new("u1", "c1"), OwnedRecord::new("u2", "c2")];
        assert!(op.process_from(1, &clicks).unwrap().is_empty());
        let users = [OwnedRecord::new("u1", "ann")];
        assert_eq!(values(op.process_from(0, &users).unwrap()), ["c1|ann"]);
        let more = [OwnedRecord::new("u1", "c3")];
        assert_eq!(values(op.process_from(1, &more).unwrap()), ["c3|ann"]);
    }

    #[test]
    fn an_unknown_reference_input_is_an_error_naming_the_inputs() {
        let e = Harness::<Enrich>::with_inputs(
            "e",
            0,
            r#"{"reference": "user"}"#,
            &["users", "clicks"],
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains("no input `user`") && e.contains("users, clicks"),
            "{e}"
        );
    }
}
