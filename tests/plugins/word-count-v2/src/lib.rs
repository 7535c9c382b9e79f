//! Version 2 of `plugins/word-count`, for the reload tests: it reads the same
//! `count` value state, so counts carry over from version 1, and writes
//! `<word>=<count>` instead of `<word>,<count>`, so the switch shows.

use weir_guest_sdk::{Context, Error, InitContext, Operator, Record, ValueState};

/// Word count, version 2.
pub struct WordCountV2 {
    count: ValueState<u64>,
    line: Vec<u8>,
}

impl Operator for WordCountV2 {
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
        self.line.push(b'=');
        self.line
            .extend_from_slice(itoa::Buffer::new().format(count).as_bytes());
        ctx.emit(record.key, &self.line);
        Ok(())
    }
}

weir_guest_sdk::export_operator!(WordCountV2);
