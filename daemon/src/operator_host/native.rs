//! Operators built into the daemon.

use weir_codec::BatchWriter;

use super::{CallError, Clock, Emitted, Processor};
use crate::batch::Batch;
use crate::graph::NativeOperator;

/// Builds a native operator instance.
pub fn instantiate(kind: NativeOperator) -> Box<dyn Processor> {
    match kind {
        NativeOperator::Passthrough => Box::new(Passthrough),
    }
}

/// Re-emits every record, doing the same per-record work a plugin does (decode,
/// re-encode), so that it is a fair baseline for the WebAssembly pass-through.
struct Passthrough;

impl Processor for Passthrough {
    fn process(&mut self, _input: u32, batch: &Batch, _clock: Clock) -> Result<Emitted, CallError> {
        let mut out = BatchWriter::with_capacity(batch.as_bytes().len());
        for record in batch.records() {
            out.push_record(&record);
        }
        Ok(vec![(0, Batch::from_writer(out))])
    }
}
