//! Test plugin: written against the raw `weir:operator` bindings instead of
//! the SDK (which has no way to emit outside `process`), it emits a record
//! from `init`. Nothing reads an operator's output before its first batch, so
//! the host must refuse it rather than drop the record silently.
#![cfg(target_arch = "wasm32")]

#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    reason = "generated bindings"
)]
mod bindings {
    wit_bindgen::generate!({ path: "../../../wit", world: "plugin" });
}

use bindings::exports::weir::operator::operator::Guest;
use bindings::weir::operator::host;
use bindings::weir::operator::types::{Clock, Descriptor, OperatorState, PluginError};

struct Component;

impl Guest for Component {
    fn describe() -> Descriptor {
        Descriptor {
            outputs: Vec::new(),
        }
    }

    fn init(
        _operator_id: String,
        _instance: u32,
        _config: String,
        _inputs: Vec<String>,
    ) -> Result<(), PluginError> {
        let mut batch = weir_codec::BatchWriter::new();
        batch.push(b"k", b"emitted from init", None);
        host::emit(0, &batch.finish());
        Ok(())
    }

    fn process(_input: u32, batch: Vec<u8>, _clock: Clock) -> Result<(), PluginError> {
        host::emit(0, &batch);
        Ok(())
    }

    fn on_timer(_timers: Vec<u8>, _clock: Clock) -> Result<(), PluginError> {
        Ok(())
    }

    fn snapshot() -> Result<OperatorState, PluginError> {
        Ok(OperatorState {
            version: 0,
            bytes: Vec::new(),
        })
    }

    fn restore(_version: u32, _parts: Vec<Vec<u8>>) -> Result<(), PluginError> {
        Ok(())
    }

    fn migrate_state(_state: u32, _from: u32, values: Vec<u8>) -> Result<Vec<u8>, PluginError> {
        Ok(values)
    }
}

bindings::export!(Component with_types_in bindings);
