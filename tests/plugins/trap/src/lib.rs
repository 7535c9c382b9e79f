//! Test plugin: forwards records, but panics (a trap) at input record `panic_at`
//! or returns an error at input record `fail_at`, counted from 0 across batches.

use weir_guest_sdk::{Context, Error, InitContext, Operator, Record};

/// The hostile operator.
pub struct Trap {
    seen: i64,
    panic_at: Option<i64>,
    fail_at: Option<i64>,
}

impl Operator for Trap {
    fn init(ctx: &InitContext) -> Result<Self, Error> {
        let config = ctx.config();
        Ok(Self {
            seen: 0,
            panic_at: config.get_i64("panic_at")?,
            fail_at: config.get_i64("fail_at")?,
        })
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let n = self.seen;
        self.seen += 1;
        if Some(n) == self.panic_at {
            panic!("deliberate panic at input record {n}");
        }
        if Some(n) == self.fail_at {
            return Err(Error::new(format!("deliberate error at input record {n}")));
        }
        ctx.forward(&record);
        Ok(())
    }
}

weir_guest_sdk::export_operator!(Trap);
