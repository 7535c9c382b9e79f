//! Write Weir stream operators in plain Rust.
//!
//! An operator is a type that implements [`Operator`]: it is built once per parallel
//! instance from its `config` table, then sees every input record and emits zero or
//! more output records through the [`Context`]. One macro call turns it into a
//! WebAssembly component that the Weir daemon loads:
//!
//! ```
//! use weir_guest_sdk::{Context, Error, InitContext, Operator, Record};
//!
//! /// Keeps records whose value contains a configured string.
//! pub struct Grep {
//!     needle: String,
//! }
//!
//! impl Operator for Grep {
//!     fn init(ctx: &InitContext) -> Result<Self, Error> {
//!         let needle = ctx.config().require_str("contains")?.to_owned();
//!         Ok(Self { needle })
//!     }
//!
//!     fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
//!         let value = std::str::from_utf8(record.value)?;
//!         if value.contains(&self.needle) {
//!             ctx.forward(&record);
//!         }
//!         Ok(())
//!     }
//! }
//!
//! weir_guest_sdk::export_operator!(Grep);
//!
//! // The same logic runs natively under `cargo test`, against an in-memory host.
//! let mut grep = weir_guest_sdk::testing::Harness::<Grep>::new(r#"{"contains": "b"}"#)?;
//! assert_eq!(grep.process_values(&["abc", "xyz"])?, ["abc"]);
//! # Ok::<(), Error>(())
//! ```
//!
//! Build the crate as a `cdylib` for `wasm32-unknown-unknown`, linked by the
//! toolchain's `wasm-component-ld` (see the repository's `.cargo/config.toml`): the
//! result is a component that imports only Weir's own interfaces.
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")
)]

extern crate self as weir_guest_sdk;

mod config;
mod context;
mod error;
pub mod metrics;
mod operator_state;
mod runtime;
pub mod state;
mod sys;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
pub mod time;
pub mod window;

pub use config::Config;
pub use context::{Context, InitContext, SideOutput};
pub use error::Error;
pub use metrics::{Counter, Gauge};
pub use operator_state::{RestoredState, SavedState};
pub use state::{
    AggregatingState, Aggregator, ListState, MapState, ReducingState, StateBuilder, Stored,
    ValueState,
};
pub use sys::Level;
pub use time::{TimeDomain, Timer, Timers};
/// One input record: key, value and optional event timestamp (ms since the epoch).
pub use weir_codec::RecordRef as Record;

/// A stream operator. One value of the implementing type exists per parallel
/// instance of the operator in the topology.
pub trait Operator: Sized + 'static {
    /// Side outputs besides the main one (`late`, `invalid`, ...), each
    /// 1 to 64 of `[a-z0-9_]`: the topology reads one as
    /// `<operator-id>.<name>`, and `weir validate` refuses a name not here.
    /// Emit to one with [`Context::emit_to`] and a handle from
    /// [`InitContext::side_output`].
    const OUTPUTS: &'static [&'static str] = &[];

    /// Builds the operator from its configuration. An error here stops the daemon
    /// before any record flows, with the message shown against the operator's id.
    fn init(ctx: &InitContext) -> Result<Self, Error>;

    /// Handles one record, emitting zero or more records through `ctx`. An error
    /// stops the pipeline and is reported with the operator id and the position of
    /// this record.
    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error>;

    /// Handles a timer registered through [`InitContext::timers`] that
    /// fired, with its key as the current key: state and emit work as in
    /// `process`. The default does nothing.
    fn on_timer(&mut self, timer: Timer<'_>, ctx: &mut Context) -> Result<(), Error> {
        let _ = (timer, ctx);
        Ok(())
    }

    /// The operator's own (non-keyed) state, saved at every checkpoint; `None`
    /// (the default) when it keeps none. Keyed state needs nothing here: the
    /// host saves it. Build the value with [`SavedState::encode`].
    fn snapshot(&mut self) -> Result<Option<SavedState>, Error> {
        Ok(None)
    }

    /// Takes back what [`Operator::snapshot`] saved, when the instance starts
    /// from a checkpoint (after `init`, before any record). Called only when
    /// something was saved; decode it with [`RestoredState::decode`].
    fn restore(&mut self, restored: RestoredState) -> Result<(), Error> {
        let _ = restored;
        Ok(())
    }
}

/// Writes `message` to the daemon's log, tagged with this operator's id.
pub fn log(level: Level, message: &str) {
    sys::log(level, message);
}

/// Exports an [`Operator`] implementation as the plugin's entry points.
///
/// Call it once per plugin crate, with the operator type.
#[macro_export]
macro_rules! export_operator {
    ($operator:ty) => {
        // Component exports exist only in the wasm build; a native build (for
        // `cargo test`) links without them.
        #[cfg(target_arch = "wasm32")]
        type __WeirExportedOperator = $crate::__private::Export<$operator>;
        #[cfg(target_arch = "wasm32")]
        $crate::__private::bindings::__export_bindings!(
            __WeirExportedOperator with_types_in $crate::__private::bindings
        );
    };
}

#[doc(hidden)]
pub mod __private {
    //! Used by [`export_operator!`]; not part of the API.
    pub use crate::runtime::Export;

    #[allow(
        missing_docs,
        unreachable_pub,
        clippy::all,
        reason = "generated bindings"
    )]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../wit",
            world: "plugin",
            pub_export_macro: true,
            export_macro_name: "__export_bindings",
            default_bindings_module: "weir_guest_sdk::__private::bindings",
            runtime_path: "weir_guest_sdk::__private::wit_bindgen_rt",
        });
    }

    pub use wit_bindgen::rt as wit_bindgen_rt;
}
