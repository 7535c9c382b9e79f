//! The host imports, behind one small surface: the real ones on wasm32, an
//! in-memory stub elsewhere so operator logic runs under a native `cargo test`.

/// Severity of a message written with [`crate::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something looks wrong but processing goes on.
    Warn,
    /// Something failed.
    Error,
}

pub(crate) use imp::*;

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::Level;
    use crate::__private::bindings::weir::operator::{host, types};

    pub(crate) fn emit(batch: &[u8]) {
        host::emit(batch);
    }

    pub(crate) fn log(level: Level, message: &str) {
        let level = match level {
            Level::Trace => types::Level::Trace,
            Level::Debug => types::Level::Debug,
            Level::Info => types::Level::Info,
            Level::Warn => types::Level::Warn,
            Level::Error => types::Level::Error,
        };
        host::log(level, message);
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use std::cell::RefCell;

    use super::Level;

    thread_local! {
        static EMITTED: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
        static LOGS: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
    }

    pub(crate) fn emit(batch: &[u8]) {
        EMITTED.with_borrow_mut(|e| e.push(batch.to_vec()));
    }

    pub(crate) fn log(level: Level, message: &str) {
        LOGS.with_borrow_mut(|l| l.push((level, message.to_owned())));
    }

    /// Batches emitted on this thread since the last call.
    pub(crate) fn take_emitted() -> Vec<Vec<u8>> {
        EMITTED.with_borrow_mut(std::mem::take)
    }

    /// Log lines written on this thread since the last call.
    pub(crate) fn take_logs() -> Vec<(Level, String)> {
        LOGS.with_borrow_mut(std::mem::take)
    }
}
