//! Test plugin: burns CPU. With `config.iterations = N` it spins N iterations per
//! record and then forwards it (a slow operator, for backpressure); without it,
//! its first `process` call never returns. With `config.spin_in_init = 1`,
//! `init` never returns.

use weir_guest_sdk::{Context, Error, InitContext, Operator, Record};

/// The hostile operator.
pub struct Spin {
    iterations: Option<i64>,
}

impl Operator for Spin {
    fn init(ctx: &InitContext) -> Result<Self, Error> {
        if ctx.config().get_i64("spin_in_init")?.unwrap_or(0) != 0 {
            let mut n = 0u64;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        Ok(Self {
            iterations: ctx.config().get_i64("iterations")?,
        })
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let mut n = 0i64;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
            if self.iterations.is_some_and(|limit| n >= limit) {
                ctx.forward(&record);
                return Ok(());
            }
        }
    }
}

weir_guest_sdk::export_operator!(Spin);
