//! Emits every record unchanged: the operator the benchmark runs, and the
//! smallest complete example of a plugin.

use weir_guest_sdk::{Context, Error, InitContext, Operator, Record};

/// The pass-through operator; it has no configuration.
pub struct Passthrough;

impl Operator for Passthrough {
    fn init(_ctx: &InitContext) -> Result<Self, Error> {
        Ok(Self)
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        ctx.forward(&record);
        Ok(())
    }
}

weir_guest_sdk::export_operator!(Passthrough);

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    use weir_guest_sdk::testing::{Harness, OwnedRecord};

    use super::*;

    #[test]
    fn forwards_records_unchanged() {
        let mut op = Harness::<Passthrough>::new("{}").unwrap();
        let input = vec![OwnedRecord {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            timestamp: Some(1),
        }];
        assert_eq!(op.process(&input).unwrap(), input);
    }
}
