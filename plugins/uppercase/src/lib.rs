//! Upper-cases each record's value (Unicode-aware for UTF-8, ASCII otherwise);
//! the key and timestamp pass through unchanged.

use weir_guest_sdk::{Context, Error, InitContext, Operator, Record};

/// The uppercase operator; it has no configuration.
pub struct Uppercase {
    scratch: Vec<u8>,
}

impl Operator for Uppercase {
    fn init(_ctx: &InitContext) -> Result<Self, Error> {
        Ok(Self {
            scratch: Vec::new(),
        })
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        self.scratch.clear();
        match std::str::from_utf8(record.value) {
            Ok(text) => self
                .scratch
                .extend_from_slice(text.to_uppercase().as_bytes()),
            Err(_) => self
                .scratch
                .extend(record.value.iter().map(u8::to_ascii_uppercase)),
        }
        match record.timestamp {
            Some(ts) => ctx.emit_at(record.key, &self.scratch, ts),
            None => ctx.emit(record.key, &self.scratch),
        }
        Ok(())
    }
}

weir_guest_sdk::export_operator!(Uppercase);

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    use weir_guest_sdk::testing::{Harness, OwnedRecord};

    use super::*;

    #[test]
    fn upper_cases_the_value_and_keeps_the_key() {
        let mut op = Harness::<Uppercase>::new("{}").unwrap();
        let mut input = OwnedRecord::new("k", "straße ok");
        input.timestamp = Some(42);
        let out = op
            .process(&[input, OwnedRecord::new("", vec![b'a', 0xff])])
            .unwrap();
        assert_eq!(out[0].key, b"k");
        assert_eq!(String::from_utf8_lossy(&out[0].value), "STRASSE OK");
        assert_eq!(out[0].timestamp, Some(42));
        assert_eq!(out[1].value, [b'A', 0xff]);
    }
}
