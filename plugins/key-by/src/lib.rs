//! Keys each record by a prefix of its value: the key becomes the text before the
//! first `separator` (default a space) and the value the text after it. A value
//! without the separator becomes the key, with an empty value. Put it before a
//! keyed operator when records arrive without keys (from a file, say).
//!
//! ```toml
//! [operators.by_user]
//! module = "plugins/key_by.wasm"
//! inputs = ["lines"]
//! config = { separator = "," }
//! ```

use serde::Deserialize;
use weir_guest_sdk::{Context, Error, InitContext, Operator, Record};

/// The operator's `config` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyByConfig {
    /// What separates the key from the rest (default " ").
    #[serde(default = "space")]
    separator: String,
}

fn space() -> String {
    " ".to_owned()
}

/// The key-by operator.
pub struct KeyBy {
    separator: Vec<u8>,
}

impl Operator for KeyBy {
    fn init(ctx: &InitContext) -> Result<Self, Error> {
        let config: KeyByConfig = ctx.config().deserialize()?;
        if config.separator.is_empty() {
            return Err(Error::new("config.separator must not be empty"));
        }
        Ok(Self {
            separator: config.separator.into_bytes(),
        })
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let value = record.value;
        let (key, rest) = match value
            .windows(self.separator.len())
            .position(|w| w == self.separator)
        {
            Some(at) => (&value[..at], &value[at + self.separator.len()..]),
            None => (value, &[][..]),
        };
        match record.timestamp {
            Some(ts) => ctx.emit_at(key, rest, ts),
            None => ctx.emit(key, rest),
        }
        Ok(())
    }
}

weir_guest_sdk::export_operator!(KeyBy);

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    use weir_guest_sdk::testing::{Harness, OwnedRecord};

    use super::*;

    #[test]
    fn splits_at_the_first_separator() {
        let mut op = Harness::<KeyBy>::new(r#"{"separator": "::"}"#).unwrap();
        let out = op
            .process(&[
                OwnedRecord::new("", "user::a::b"),
                OwnedRecord::new("", "alone"),
            ])
            .unwrap();
        assert_eq!(
            (out[0].key.as_slice(), out[0].value.as_slice()),
            (&b"user"[..], &b"a::b"[..])
        );
        assert_eq!(
            (out[1].key.as_slice(), out[1].value.as_slice()),
            (&b"alone"[..], &b""[..])
        );
    }
}
