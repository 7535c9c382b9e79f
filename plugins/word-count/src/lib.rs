//! Counts words. Keyed by the word (the record key), it keeps a count in value
//! state and emits, for every input record, key = the word and value =
//! `<word>,<count>`, where the count includes this record.
//!
//! After `split-words`, the line `a b a` yields `a,1`, `b,1`, `a,2`.

use weir_guest_sdk::{Context, Error, InitContext, Operator, Record, ValueState};

/// The word-count operator; it has no configuration.
pub struct WordCount {
    count: ValueState<u64>,
    line: Vec<u8>,
}

impl Operator for WordCount {
    fn init(ctx: &InitContext) -> Result<Self, Error> {
        Ok(Self {
            count: ctx.state("count").value()?,
            line: Vec::new(),
        })
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let count = self.count.get()?.unwrap_or(0) + 1;
        self.count.set(&count)?;
        self.line.clear();
        self.line.extend_from_slice(record.key);
        self.line.push(b',');
        self.line
            .extend_from_slice(itoa::Buffer::new().format(count).as_bytes());
        ctx.emit(record.key, &self.line);
        Ok(())
    }
}

weir_guest_sdk::export_operator!(WordCount);

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]
mod tests {
    use weir_guest_sdk::testing::Harness;

    use super::*;

    #[test]
    fn counts_each_word_including_this_record() {
        let mut op = Harness::<WordCount>::new("{}").unwrap();
        assert_eq!(
            op.process_keyed(&[("a", "a"), ("b", "b"), ("a", "a")])
                .unwrap(),
            ["a,1", "b,1", "a,2"]
        );
        assert_eq!(
            op.process_keyed(&[("b", "b"), ("a", "a")]).unwrap(),
            ["b,2", "a,3"]
        );
    }
}
