//! Drops repeats. Keyed by the record key, it keeps the last value seen for
//! each key in value state and passes a record on only when its value differs
//! from that one (a changelog filter, Flink's "deduplicate keep last row").
//!
//! Its state is one whole value per key, so it is also the workload of
//! `weir bench --suite checkpoint`: a million keys of 1 KiB values make 1 GiB.

use weir_guest_sdk::{Context, Error, InitContext, Operator, Record, ValueState};

/// The dedupe operator; it has no configuration.
pub struct Dedupe {
    last: ValueState<Vec<u8>>,
}

impl Operator for Dedupe {
    fn init(ctx: &InitContext) -> Result<Self, Error> {
        Ok(Self {
            last: ctx.state("last").value()?,
        })
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        if self.last.get()?.as_deref() == Some(record.value) {
            return Ok(());
        }
        self.last.set(&record.value.to_vec())?;
        ctx.emit(record.key, record.value);
        Ok(())
    }
}

weir_guest_sdk::export_operator!(Dedupe);

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    use weir_guest_sdk::testing::Harness;

    use super::*;

    #[test]
    fn passes_a_value_only_when_it_changed_for_its_key() {
        let mut op = Harness::<Dedupe>::new("{}").unwrap();
        assert_eq!(
            op.process_keyed(&[("a", "1"), ("b", "1"), ("a", "1"), ("a", "2")])
                .unwrap(),
            ["1", "1", "2"]
        );
        assert_eq!(
            op.process_keyed(&[("b", "1"), ("a", "1"), ("b", "3")])
                .unwrap(),
            ["1", "3"]
        );
    }
}
