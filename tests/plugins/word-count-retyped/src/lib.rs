//! A mistaken new version of `plugins/word-count`, for the reload tests: it
//! keeps the state name `count` but stores text in it, so the first record
//! whose count version 1 saved fails to decode. A reload to it must roll back.

use weir_guest_sdk::{Context, Error, InitContext, Operator, Record, ValueState};

/// Word count with its state retyped.
pub struct WordCountRetyped {
    count: ValueState<String>,
}

impl Operator for WordCountRetyped {
    fn init(ctx: &InitContext) -> Result<Self, Error> {
        Ok(Self {
            count: ctx.state("count").value()?,
        })
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let count: u64 = self.count.get()?.map_or(Ok(0), |c| c.parse())? + 1;
        self.count.set(&count.to_string())?;
        let line = format!("{}#{count}", String::from_utf8_lossy(record.key));
        ctx.emit(record.key, line.as_bytes());
        Ok(())
    }
}

weir_guest_sdk::export_operator!(WordCountRetyped);
