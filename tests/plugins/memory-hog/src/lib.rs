//! Test plugin: allocates (and keeps) 1 MiB after another until memory runs
//! out; with `config.emit = true`, emits eight 1 MiB records per input record
//! instead, holding little itself, so the host is the one asked to hold them.

use weir_guest_sdk::{Context, Error, InitContext, Operator, Record};

/// The hostile operator.
pub struct MemoryHog {
    hoard: Vec<Vec<u8>>,
    emit: bool,
}

impl Operator for MemoryHog {
    fn init(ctx: &InitContext) -> Result<Self, Error> {
        let emit = ctx.config().get("emit").and_then(|v| v.as_bool()) == Some(true);
        Ok(Self {
            hoard: Vec::new(),
            emit,
        })
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let chunk = vec![1u8; 1 << 20];
        if self.emit {
            for _ in 0..8 {
                ctx.emit(record.key, std::hint::black_box(&chunk));
            }
            return Ok(());
        }
        loop {
            self.hoard.push(std::hint::black_box(chunk.clone()));
        }
    }
}

weir_guest_sdk::export_operator!(MemoryHog);
