//! Test plugin: never returns from its first `process` call.

use weir_guest_sdk::{Context, Error, InitContext, Operator, Record};

/// The hostile operator.
pub struct Spin;

impl Operator for Spin {
    fn init(_ctx: &InitContext) -> Result<Self, Error> {
        Ok(Self)
    }

    fn process(&mut self, _record: Record<'_>, _ctx: &mut Context) -> Result<(), Error> {
        let mut n = 0u64;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

weir_guest_sdk::export_operator!(Spin);
