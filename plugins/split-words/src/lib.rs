//! Splits each input line into words: one record per whitespace-separated word,
//! with key = value = the word.

use weir_guest_sdk::{Context, Error, InitContext, Operator, Record};

/// The split-words operator; it has no configuration.
pub struct SplitWords;

impl Operator for SplitWords {
    fn init(_ctx: &InitContext) -> Result<Self, Error> {
        Ok(Self)
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let line = std::str::from_utf8(record.value)?;
        for word in line.split_whitespace() {
            match record.timestamp {
                Some(ts) => ctx.emit_at(word.as_bytes(), word.as_bytes(), ts),
                None => ctx.emit(word.as_bytes(), word.as_bytes()),
            }
        }
        Ok(())
    }
}

weir_guest_sdk::export_operator!(SplitWords);

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    use weir_guest_sdk::testing::{Harness, OwnedRecord};

    use super::*;

    #[test]
    fn emits_one_record_per_word_keyed_by_the_word() {
        let mut op = Harness::<SplitWords>::new("{}").unwrap();
        let out = op
            .process(&[OwnedRecord::new("", "  a b\ta "), OwnedRecord::new("", "")])
            .unwrap();
        let pairs: Vec<_> = out
            .iter()
            .map(|r| (r.key.as_slice(), r.value.as_slice()))
            .collect();
        assert_eq!(pairs, [(&b"a"[..], &b"a"[..]), (b"b", b"b"), (b"a", b"a")]);
    }

    #[test]
    fn invalid_utf8_names_the_record() {
        let mut op = Harness::<SplitWords>::new("{}").unwrap();
        let err = op
            .process(&[OwnedRecord::new("", "ok"), OwnedRecord::new("", vec![0xff])])
            .unwrap_err();
        assert!(
            err.message().starts_with("record 1: invalid utf-8"),
            "{err}"
        );
    }
}
