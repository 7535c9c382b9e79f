//! Test plugin: each record's value is a number; it adds it to its key's sum
//! (value state) and emits `<key>,<sum>`, but returns an error for a
//! multiple of 100, after changing the sum, so a dead-lettered record must
//! leave no trace in the state.

use weir_guest_sdk::{Context, Error, InitContext, Operator, Record, ValueState};

/// The picky summer.
pub struct Picky {
    sum: ValueState<u64>,
}

impl Operator for Picky {
    fn init(ctx: &InitContext) -> Result<Self, Error> {
        Ok(Self {
            sum: ctx.state("sum").value()?,
        })
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let n: u64 = std::str::from_utf8(record.value)?
            .trim()
            .parse()
            .map_err(|_| Error::new("not a number"))?;
        let sum = self.sum.get()?.unwrap_or(0) + n;
        self.sum.set(&sum)?;
        if n.is_multiple_of(100) {
            return Err(Error::new(format!("rejected {n}: a multiple of 100")));
        }
        let key = String::from_utf8_lossy(record.key);
        ctx.emit(record.key, format!("{key},{sum}").as_bytes());
        Ok(())
    }
}

weir_guest_sdk::export_operator!(Picky);
