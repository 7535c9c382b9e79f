//! State versions and migrations: what converts the values an older version of
//! a plugin saved into the type the current one declares.
//!
//! A state's version is a number the author bumps when the type stored in it
//! changes. When a checkpoint saved the state at another version, the host
//! hands every saved value to the plugin's `migrate-state` export, in chunks,
//! after `init` and before the first record, and stores what comes back; the
//! checkpoints after that hold the new version. This is Flink's state schema
//! evolution, with the conversion written by the author instead of derived
//! from a serializer.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use serde::de::DeserializeOwned;
use weir_codec::state::{Cursor, put_list};

use crate::Error;

/// One value as an older version of the state saved it, given to the
/// function passed to [`StateBuilder::migrate`](crate::StateBuilder::migrate).
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    version: u32,
    bytes: &'a [u8],
}

impl<'a> Stored<'a> {
    /// A saved value; what the host hands over, and what a test can build.
    pub fn new(version: u32, bytes: &'a [u8]) -> Self {
        Self { version, bytes }
    }

    /// The version of the state that saved it.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The value as it was saved (postcard).
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The value decoded as the type that version stored.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Error> {
        postcard::from_bytes(self.bytes).map_err(|e| {
            Error::new(format!(
                "cannot decode a value saved at version {} as the type given: {e}",
                self.version
            ))
        })
    }
}

/// A migration: a saved value in, the new value's encoding out.
pub(crate) type Migrate = Rc<dyn Fn(Stored<'_>) -> Result<Vec<u8>, Error>>;

/// A state as `init` declared it (name and version are for the harness).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
struct Declared {
    name: String,
    version: u32,
    migrate: Option<Migrate>,
}

thread_local! {
    /// The states of this instance, by handle.
    static DECLARED: RefCell<HashMap<u32, Declared>> = RefCell::new(HashMap::new());
}

/// Forgets every declaration, before `init` declares them again.
pub(crate) fn forget_declarations() {
    DECLARED.with_borrow_mut(HashMap::clear);
}

/// Notes a declared state's version and migration.
pub(crate) fn declare(id: u32, name: &str, version: u32, migrate: Option<Migrate>) {
    DECLARED.with_borrow_mut(|d| {
        d.insert(
            id,
            Declared {
                name: name.to_owned(),
                version,
                migrate,
            },
        );
    });
}

/// Converts a chunk of values of state `state` saved at version `from`:
/// `values` and the result are a `list` (`wit/STATE_ENCODING.md`). An error
/// says what went wrong, not which state: the host (and the harness) add that.
pub(crate) fn migrate(state: u32, from: u32, values: &[u8]) -> Result<Vec<u8>, String> {
    DECLARED.with_borrow(|declared| {
        let d = declared
            .get(&state)
            .ok_or_else(|| format!("state handle {state} was not declared in `init`"))?;
        let migrate = d.migrate.as_ref().ok_or_else(|| {
            "its declaration has no migration: give it `.migrate(|old| ...)`, which turns a \
             value saved by the old version into the new type"
                .to_owned()
        })?;
        let values = Cursor::new(values)
            .list()
            .map_err(|e| format!("the host sent malformed values to migrate: {e}"))?;
        let mut converted = Vec::with_capacity(values.len());
        for (index, bytes) in values.into_iter().enumerate() {
            let value = migrate(Stored::new(from, bytes))
                .map_err(|e| format!("value {index} of the chunk: {e}"))?;
            converted.push(value);
        }
        let mut out = Vec::with_capacity(converted.iter().map(|v| v.len() + 4).sum::<usize>() + 4);
        put_list(&mut out, converted.iter().map(Vec::as_slice));
        Ok(out)
    })
}

/// How a failed migration of `state` from version `from` is reported, by
/// the host and the harness alike.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn failed(state: &str, from: u32, to: u32, message: &str) -> String {
    format!("cannot migrate state `{state}` from version {from} to {to}: {message}")
}

/// The declared name and version of state `state` (for the harness).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn declared(state: u32) -> Option<(String, u32)> {
    DECLARED.with_borrow(|d| d.get(&state).map(|d| (d.name.clone(), d.version)))
}
