//! Runs operators: WebAssembly components under wasmtime, and the built-in
//! native ones, behind one [`Processor`] interface that the runtime calls with
//! whole batches.
//!
//! - [`engine`]: the one wasmtime `Engine` and the epoch ticker behind call deadlines.
//! - [`module`]: loading a component and checking it fits the `weir:operator` world.
//! - [`wasm`]: one sandboxed instance: memory limit, deadline, trap classification.
//! - [`native`]: operators built into the daemon (the benchmark's baseline).
//! - [`plugin_metrics`]: the counters and gauges a plugin declares.

pub mod engine;
pub mod module;
pub mod native;
pub mod plugin_metrics;
pub mod wasm;

use std::collections::BTreeMap;

use crate::batch::Batch;
use crate::state::{CaptureScope, StateCapture, StateSpec};

pub use engine::{EpochTicker, new_engine};
pub use module::{LoadedModule, ModuleError};
pub use wasm::{CallError, WasmOperator};

/// One running operator instance.
pub trait Processor: Send {
    /// Processes one batch and returns the batches it emitted, in order.
    fn process(&mut self, batch: &Batch) -> Result<Vec<Batch>, CallError>;

    /// Captures what the instance saves at a checkpoint barrier. Only the
    /// capture happens here; writing it out is left to another thread.
    /// `scope` says what of its keyed state the checkpoint expects to write.
    fn snapshot(&mut self, _scope: CaptureScope) -> Result<InstanceSnapshot, CallError> {
        Ok(InstanceSnapshot::default())
    }

    /// Bytes of linear memory the instance holds (0 for native operators).
    fn memory_bytes(&self) -> u64 {
        0
    }
}

/// What one operator instance saves at a checkpoint.
#[derive(Default)]
pub struct InstanceSnapshot {
    /// Its keyed state, if it declared any.
    pub keyed: Option<Box<dyn StateCapture>>,
    /// The declared keyed states.
    pub states: BTreeMap<String, StateSpec>,
    /// The plugin's operator state and its version, if it saved any.
    pub operator_state: Option<(u32, Vec<u8>)>,
    /// Input records the instance had taken (set by its task).
    pub records_in: u64,
}

#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    reason = "generated bindings"
)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        imports: { default: trappable },
    });
}
