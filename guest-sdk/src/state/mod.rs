//! Keyed state: typed handles over the host's state, scoped to the key of the
//! record being processed (Flink's keyed state).
//!
//! Declare states in [`crate::Operator::init`] through
//! [`InitContext::state`](crate::InitContext::state), keep the handles in the
//! operator, and use them in `process`: every call reads or writes the state of
//! the current record's key.
//!
//! ```
//! use weir_guest_sdk::{Context, Error, InitContext, Operator, Record, ValueState};
//!
//! pub struct Count {
//!     count: ValueState<u64>,
//! }
//!
//! impl Operator for Count {
//!     fn init(ctx: &InitContext) -> Result<Self, Error> {
//!         Ok(Self { count: ctx.state("count").value()? })
//!     }
//!
//!     fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
//!         let count = self.count.get()?.unwrap_or(0) + 1;
//!         self.count.set(&count)?;
//!         ctx.emit(record.key, count.to_string().as_bytes());
//!         Ok(())
//!     }
//! }
//! # let mut op = weir_guest_sdk::testing::Harness::<Count>::new("{}")?;
//! # let out = op.process_keyed(&[("a", ""), ("b", ""), ("a", "")])?;
//! # assert_eq!(out, ["1", "1", "2"]);
//! # Ok::<(), Error>(())
//! ```
//!
//! Values are encoded with postcard (serde). State crosses into the host once per
//! batch in each direction: before the batch the value states of all its keys
//! are read in one call, changes are kept in a cache that every record sees, and
//! after the batch all changes are written back in one call.
//!
//! # Changing a state's type
//!
//! A state's values are saved in checkpoints; a new module version that reads
//! them as another type fails with `cannot decode state`. Give the state a new
//! version and a migration instead, and every saved value is converted once,
//! before the first record, on either backend:
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use weir_guest_sdk::{Error, InitContext, ValueState};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Tally {
//!     count: u64,
//!     bytes: u64,
//! }
//!
//! fn declare(ctx: &InitContext) -> Result<ValueState<Tally>, Error> {
//!     // Version 0 (no `.version`) stored a plain `u64` count.
//!     ctx.state("count")
//!         .version(1)
//!         .migrate(|old| match old.version() {
//!             0 => Ok(Tally { count: old.decode::<u64>()?, bytes: 0 }),
//!             v => Err(Error::new(format!("unknown version {v}"))),
//!         })
//!         .value()
//! }
//! ```
//!
//! A map state's values are migrated, its map keys are not; a state's kind
//! never changes (declare another name). `testing::Checkpoint` builds what an
//! older version saved, for a unit test of the migration.

mod cache;
mod handles;
mod migration;

use std::rc::Rc;
use std::time::Duration;

use serde::Serialize;

pub use handles::{AggregatingState, Aggregator, ListState, MapState, ReducingState, ValueState};
pub use migration::Stored;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use migration::{declared, failed};
pub(crate) use migration::{forget_declarations, migrate};

pub(crate) use cache::{
    begin_batch, discard_batch, end_batch, is_keyed, set_current_key, timer_op,
};

/// The operator uses timers: every batch is keyed, as with state.
pub(crate) fn note_timers() {
    note_registered();
}

use cache::note_registered;

use crate::Error;
use crate::sys::{self, StateKind};

/// Declares one state; obtained from [`crate::InitContext::state`].
#[derive(Clone)]
pub struct StateBuilder {
    name: String,
    ttl: Option<Duration>,
    version: u32,
    migrate: Option<migration::Migrate>,
}

impl std::fmt::Debug for StateBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateBuilder")
            .field("name", &self.name)
            .field("ttl", &self.ttl)
            .field("version", &self.version)
            .field("migrates", &self.migrate.is_some())
            .finish()
    }
}

impl StateBuilder {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ttl: None,
            version: 0,
            migrate: None,
        }
    }

    /// The version of the type stored in this state (0 when not given):
    /// bump it when the type changes, and give [`StateBuilder::migrate`].
    pub fn version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// How a value saved by another version of this state becomes a value
    /// of the declared type (for a list state, one element; for a map state,
    /// one value). It is called for every saved value, once, when a
    /// checkpoint saved the state at another version than
    /// [`StateBuilder::version`]; [`Stored::version`] says which, and
    /// [`Stored::decode`] reads it as the type that version stored. An error
    /// stops the instance from starting (a reload to it is rolled back).
    pub fn migrate<T, F>(mut self, migrate: F) -> Self
    where
        T: Serialize,
        F: Fn(Stored<'_>) -> Result<T, Error> + 'static,
    {
        self.migrate = Some(Rc::new(move |old| {
            let new = migrate(old)?;
            postcard::to_allocvec(&new)
                .map_err(|e| Error::new(format!("cannot encode the migrated value: {e}")))
        }));
        self
    }

    /// Entries not written for `ttl` (processing time) are no longer returned
    /// and are eventually removed.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    fn register(&self, kind: StateKind) -> Result<u32, Error> {
        let ttl_ms = self
            .ttl
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1));
        let id = sys::register_state(&self.name, kind, ttl_ms, self.version)
            .map_err(|e| Error::new(format!("cannot declare state `{}`: {e}", self.name)))?;
        migration::declare(id, &self.name, self.version, self.migrate.clone());
        if kind == StateKind::Value {
            cache::prefetch_value_state(id);
        } else {
            note_registered();
        }
        Ok(id)
    }

    /// A value per key.
    pub fn value<T>(self) -> Result<ValueState<T>, Error> {
        Ok(ValueState::new(self.register(StateKind::Value)?))
    }

    /// A list per key.
    pub fn list<T>(self) -> Result<ListState<T>, Error> {
        Ok(ListState::new(self.register(StateKind::List)?))
    }

    /// A map per key.
    pub fn map<K, V>(self) -> Result<MapState<K, V>, Error> {
        Ok(MapState::new(self.register(StateKind::Map)?))
    }

    /// A value per key that `add` folds new values into with `reduce`.
    pub fn reducing<T>(self, reduce: fn(T, T) -> T) -> Result<ReducingState<T>, Error> {
        Ok(ReducingState::new(self.value()?, reduce))
    }

    /// An accumulator per key that `add` feeds and `get` turns into a result.
    pub fn aggregating<A: Aggregator>(self, aggregator: A) -> Result<AggregatingState<A>, Error> {
        Ok(AggregatingState::new(self.value()?, aggregator))
    }
}
