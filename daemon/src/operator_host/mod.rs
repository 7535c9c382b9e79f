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

use weir_codec::state::TimeDomain;

use crate::batch::Batch;
use crate::state::CacheCounts;
use crate::state::ops::TimerCounts;
use crate::state::{CaptureScope, StateCapture, StateSpec};

pub use engine::{EpochTicker, new_engine};
pub use module::{LoadedModule, ModuleError};
pub use wasm::{CallError, WasmOperator};

/// The side output that carries an operator's dead letters: the host's own,
/// so no module may declare it.
pub const ERRORS_OUTPUT: &str = "errors";

/// Batches an operator emitted, in order, each with its output: 0 is the
/// main one, `i + 1` the `i`th side output its module declares.
pub type Emitted = Vec<(u32, Batch)>;

/// Time as an operator instance sees it during one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// Its current watermark (ms since the Unix epoch), if one arrived.
    pub watermark: Option<i64>,
    /// The wall clock (ms since the Unix epoch).
    pub processing_time: i64,
}

impl Clock {
    /// The clock now, at `watermark`.
    pub fn now(watermark: Option<i64>) -> Self {
        Self {
            watermark,
            processing_time: now_ms(),
        }
    }
}

/// The wall clock, ms since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One running operator instance.
pub trait Processor: Send {
    /// Processes one batch from input `input` (an index into the operator's
    /// `inputs`) and returns what it emitted.
    fn process(&mut self, input: u32, batch: &Batch, clock: Clock) -> Result<Emitted, CallError>;

    /// Fires the timers of `domain` due at `time` (the watermark, or the
    /// wall clock), in time order, and returns what the operator emitted.
    fn fire_timers(
        &mut self,
        _domain: TimeDomain,
        _time: i64,
        _clock: Clock,
    ) -> Result<Emitted, CallError> {
        Ok(Vec::new())
    }

    /// When its next timer of `domain` is due, if one is pending.
    fn next_timer(&self, _domain: TimeDomain) -> Option<i64> {
        None
    }

    /// Timers registered, fired and pending.
    fn timer_counts(&self) -> TimerCounts {
        TimerCounts::default()
    }

    /// Keyed state reads its backend's cache answered, and those it did not.
    fn cache_counts(&self) -> CacheCounts {
        CacheCounts::default()
    }

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
