//! Test plugin: allocates (and keeps) 1 MiB after another until memory runs out.

use weir_guest_sdk::{Context, Error, InitContext, Operator, Record};

/// The hostile operator.
pub struct MemoryHog {
    hoard: Vec<Vec<u8>>,
}

impl Operator for MemoryHog {
    fn init(_ctx: &InitContext) -> Result<Self, Error> {
        Ok(Self { hoard: Vec::new() })
    }

    fn process(&mut self, _record: Record<'_>, _ctx: &mut Context) -> Result<(), Error> {
        loop {
            self.hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
        }
    }
}

weir_guest_sdk::export_operator!(MemoryHog);
