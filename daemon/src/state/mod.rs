//! Keyed state on the host: the backends that keep it and the execution of the
//! operations plugins send through the `keyed-state` interface.
//!
//! State is Flink's keyed state. Each record key hashes into one of
//! `max_parallelism` key groups ([`crate::partition`]); an operator instance owns
//! a contiguous range of key groups and only ever reads or writes keys in it.
//! Every stored item is addressed by (key group, state id, record key[, map key])
//! and carries the time it was written, for TTL.
//!
//! - [`heap`]: in memory, organised by key group.
//! - [`rocks`]: RocksDB (one database per operator, WAL off) behind a bounded
//!   write-back cache.
//! - [`ops`]: decoding a plugin's operation buffers and running them against a
//!   backend, checking key-group ownership.
//! - [`registry`]: state names to stable ids, kinds and TTLs, per operator.
//! - [`timers`]: keyed timers, kept as an internal value state and queued in
//!   memory by time.
//! - [`snapshot`]: the checkpoint files of keyed state; [`compaction`] folds
//!   an incremental chain of them into one full file.

pub mod compaction;
#[cfg(test)]
mod conformance;
mod direct_file;
pub mod heap;
pub mod layout;
pub mod ops;
pub mod registry;
#[cfg(feature = "rocksdb")]
pub mod rocks;
pub mod snapshot;
pub mod timers;

use std::borrow::Cow;
use std::ops::Range;

use thiserror::Error;

pub use registry::{Registry, StateKind, StateSpec};

/// Why a state operation failed.
#[derive(Debug, Error)]
pub enum StateError {
    /// The storage failed.
    #[error("state storage failed: {0}")]
    Storage(String),
    /// The plugin sent something the host cannot accept.
    #[error("{0}")]
    Invalid(String),
}

/// A stored item and when it was last written (ms since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped<T> {
    /// The item.
    pub item: T,
    /// When it was written.
    pub written_at: u64,
}

/// Takes the answers of [`KeyedBackend::values`]: the address's index and
/// its value.
pub type FoundValue<'f> = dyn FnMut(usize, Option<Stamped<&[u8]>>) -> Result<(), StateError> + 'f;

/// Answers [`KeyedBackend::values`] with one [`KeyedBackend::value`] per
/// address.
fn values_one_by_one<B: KeyedBackend + ?Sized>(
    backend: &mut B,
    at: &[Address<'_>],
    found: &mut FoundValue<'_>,
) -> Result<(), StateError> {
    for (i, at) in at.iter().enumerate() {
        let value = backend.value(*at)?;
        found(
            i,
            value.as_ref().map(|v| Stamped {
                item: &*v.item,
                written_at: v.written_at,
            }),
        )?;
    }
    Ok(())
}

/// A map's entries: map key and stamped value, ordered by map key.
pub type MapEntries = Vec<(Vec<u8>, Stamped<Vec<u8>>)>;

/// Where one item lives: key group, state, record key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address<'a> {
    /// The record key's key group.
    pub key_group: u16,
    /// The state's id.
    pub state: u32,
    /// The record key.
    pub key: &'a [u8],
}

/// Point reads of a backend that keeps a cache in front of its storage:
/// answered from memory (hits) or from the storage (misses). Cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounts {
    /// Reads the cache (or the table of evicted writes) answered.
    pub hits: u64,
    /// Reads that went to the storage.
    pub misses: u64,
}

/// Storage for the keyed state of one operator instance. Reads must see every
/// earlier write. TTL is applied by the caller ([`ops`]), which hands each
/// backend the write time and filters on read; backends only drop expired items
/// when asked (`expire`).
pub trait KeyedBackend: Send {
    /// A value state's value: borrowed where the backend holds it in memory, so
    /// the hot read of a counter copies nothing.
    fn value(&mut self, at: Address<'_>) -> Result<Option<Stamped<Cow<'_, [u8]>>>, StateError>;
    /// Value states' values for many addresses, handed to `found` in order
    /// (index, value). A backend may look them all up before it hands any
    /// over, so the lookups' cache misses overlap instead of queueing.
    fn values(&mut self, at: &[Address<'_>], found: &mut FoundValue<'_>) -> Result<(), StateError> {
        self.warm(at)?;
        values_one_by_one(self, at, found)
    }
    /// A hint: the value states at these addresses are about to be read and
    /// written one by one. A backend whose lookups miss the CPU cache may
    /// probe them all now, together, so the misses overlap.
    fn warm(&mut self, at: &[Address<'_>]) -> Result<(), StateError> {
        let _ = at;
        Ok(())
    }
    /// Sets a value state's value, written at `written_at`.
    fn set_value(
        &mut self,
        at: Address<'_>,
        value: &[u8],
        written_at: u64,
    ) -> Result<(), StateError>;
    /// A list state's elements.
    fn list(&mut self, at: Address<'_>) -> Result<Option<Stamped<Vec<Vec<u8>>>>, StateError>;
    /// Replaces a list state's elements.
    fn set_list(&mut self, at: Address<'_>, items: Stamped<Vec<Vec<u8>>>)
    -> Result<(), StateError>;
    /// Appends to a list state (the backend may do better than read-modify-write).
    fn append_list(
        &mut self,
        at: Address<'_>,
        items: Vec<Vec<u8>>,
        now: u64,
    ) -> Result<(), StateError> {
        let mut list = self.list(at)?.map(|l| l.item).unwrap_or_default();
        list.extend(items);
        self.set_list(
            at,
            Stamped {
                item: list,
                written_at: now,
            },
        )
    }
    /// One map entry.
    fn map_get(
        &mut self,
        at: Address<'_>,
        map_key: &[u8],
    ) -> Result<Option<Stamped<Vec<u8>>>, StateError>;
    /// Puts one map entry.
    fn map_put(
        &mut self,
        at: Address<'_>,
        map_key: &[u8],
        value: Stamped<Vec<u8>>,
    ) -> Result<(), StateError>;
    /// Removes one map entry.
    fn map_remove(&mut self, at: Address<'_>, map_key: &[u8]) -> Result<(), StateError>;
    /// Every map entry, ordered by map key.
    fn map_entries(&mut self, at: Address<'_>) -> Result<MapEntries, StateError>;
    /// Removes the state of a key, of kind `kind` (a map's entries are
    /// items of their own; a value or a list is one).
    fn clear(&mut self, at: Address<'_>, kind: StateKind) -> Result<(), StateError>;
    /// Removes some items for which `expired(state, written_at)` holds; called
    /// now and then so items nobody reads again are eventually removed.
    fn expire(&mut self, expired: &dyn Fn(u32, u64) -> bool) -> Result<(), StateError>;
    /// Makes every write visible to the underlying storage (RocksDB: flushes
    /// the write-back cache in write batches).
    fn flush(&mut self) -> Result<(), StateError>;
    /// Reads answered by its cache and by its storage, for a backend that
    /// has both (RocksDB); zero for one that is all memory.
    fn cache_counts(&self) -> CacheCounts {
        CacheCounts::default()
    }
    /// Captures the state as it is now, for a checkpoint. The capture is written
    /// out on another thread while this backend goes on changing, so this call
    /// does as little as it can; with [`CaptureScope::Changes`], perhaps only
    /// what a change file needs.
    fn capture(&mut self, scope: CaptureScope) -> Result<Box<dyn StateCapture>, StateError>;
    /// Adds one item from a snapshot (restore), in the [`layout`] encoding;
    /// `kind` is its state's kind.
    fn load(&mut self, key: &[u8], value: &[u8], kind: StateKind) -> Result<(), StateError>;
    /// Every item of state `state` in `key_group`, in the [`layout`]
    /// encoding (a map's entries one by one), expired or not: what a state
    /// migration rewrites. One key group at a time bounds what it holds.
    fn state_items(&mut self, key_group: u16, state: u32) -> Result<KeyValues, StateError>;
}

/// Stored keys and values, in the [`layout`] encoding.
pub type KeyValues = Vec<(Vec<u8>, Vec<u8>)>;

/// What a checkpoint expects to write of a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureScope {
    /// All of it: a full snapshot file.
    Full,
    /// Only its changes since the previous capture, on top of the files the
    /// previous checkpoint wrote. A backend may then leave out what only a
    /// full write needs (RocksDB: the database snapshot, and the copy of its
    /// write-back cache, which costs the operator's thread time at the
    /// barrier); [`StateCapture::can_write_full`] says whether it did.
    Changes,
}

/// An instance's keyed state as it was at a checkpoint barrier.
pub trait StateCapture: Send {
    /// Whether it knows what changed since the backend's previous capture, so
    /// [`StateCapture::write_changes`] can be used instead of a full write.
    fn has_changes(&self) -> bool;
    /// Whether [`StateCapture::write`] can write it whole; false for a
    /// capture taken with [`CaptureScope::Changes`] that left that out.
    fn can_write_full(&self) -> bool {
        true
    }
    /// Writes every item into a snapshot file, key group by key group.
    fn write(
        self: Box<Self>,
        out: &mut snapshot::SnapshotWriter,
    ) -> Result<(), snapshot::SnapshotError>;
    /// Writes only what changed since the backend's previous capture, as a
    /// change file ([`snapshot`]): every item written since, and a tombstone
    /// for every item or slot removed. Applied on top of a restore of the
    /// previous capture, it gives this one. Only valid when `has_changes`.
    fn write_changes(
        self: Box<Self>,
        out: &mut snapshot::SnapshotWriter,
    ) -> Result<(), snapshot::SnapshotError>;
}

/// The key groups, out of `max_parallelism`, that instance `instance` of
/// `parallelism` owns.
pub fn key_group_range(max_parallelism: u32, parallelism: u32, instance: u32) -> Range<u32> {
    // Inverse of `instance_for_key_group`: the smallest g with g*p/max >= i.
    let start =
        (u64::from(instance) * u64::from(max_parallelism)).div_ceil(u64::from(parallelism)) as u32;
    let end = (u64::from(instance + 1) * u64::from(max_parallelism))
        .div_ceil(u64::from(parallelism)) as u32;
    start..end
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::instance_for_key_group;

    #[test]
    fn key_group_ranges_match_the_routing() {
        for max in [1, 7, 128, 1000] {
            for p in 1..=max.min(40) {
                for g in 0..max {
                    let owner = instance_for_key_group(g, max, p);
                    assert!(
                        key_group_range(max, p, owner).contains(&g),
                        "max {max} p {p} g {g}"
                    );
                }
            }
        }
    }
}

/// Where the keyed state of every instance of one operator lives.
#[derive(Debug)]
pub enum OperatorStore {
    /// In memory.
    Heap,
    /// One RocksDB database for the operator.
    #[cfg(feature = "rocksdb")]
    Rocks(rocks::RocksStore),
}

impl OperatorStore {
    /// Opens the store for `operator`. RocksDB lives in `data_dir/state/<operator>`;
    /// until a run restores from a checkpoint, whatever a previous run left there
    /// is not a consistent state, so it is removed.
    #[cfg_attr(
        not(feature = "rocksdb"),
        expect(unused_variables, reason = "only RocksDB keeps files")
    )]
    pub fn open(
        settings: &crate::graph::StateSettings,
        data_dir: &std::path::Path,
        operator: &str,
    ) -> Result<Self, StateError> {
        match settings.backend {
            crate::config::BackendKind::Heap => Ok(Self::Heap),
            #[cfg(feature = "rocksdb")]
            crate::config::BackendKind::Rocksdb => {
                let dir = data_dir.join("state").join(operator);
                let io = |e: std::io::Error| StateError::Storage(format!("{}: {e}", dir.display()));
                if dir.exists() {
                    std::fs::remove_dir_all(&dir).map_err(io)?;
                }
                std::fs::create_dir_all(&dir).map_err(io)?;
                let size = |b: u64| usize::try_from(b).unwrap_or(usize::MAX);
                let options = rocks::RocksOptions {
                    block_cache: size(settings.block_cache),
                    write_buffer: size(settings.write_buffer),
                    cache: size(settings.cache),
                };
                Ok(Self::Rocks(rocks::RocksStore::open(&dir, options)?))
            }
            #[cfg(not(feature = "rocksdb"))]
            crate::config::BackendKind::Rocksdb => Err(StateError::Storage(
                "this weir was built without the `rocksdb` feature".into(),
            )),
        }
    }

    /// The state of instance `instance` of `parallelism`.
    pub fn instance(
        &self,
        max_parallelism: u32,
        parallelism: u32,
        instance: u32,
        registry: Registry,
    ) -> ops::InstanceState {
        let groups = key_group_range(max_parallelism, parallelism, instance);
        let backend: Box<dyn KeyedBackend> = match self {
            Self::Heap => Box::new(heap::HeapBackend::new(groups.clone())),
            #[cfg(feature = "rocksdb")]
            Self::Rocks(store) => Box::new(store.backend(groups.clone())),
        };
        ops::InstanceState::new(backend, registry, groups, max_parallelism)
    }
}
