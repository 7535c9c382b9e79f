//! The RocksDB backend.
//!
//! One database per operator, shared by its instances (they own disjoint key
//! groups, so they never touch the same keys). Keys and values are stored in
//! the [`super::layout`] encoding, key group first, so one key group is one
//! contiguous range.
//!
//! RocksDB is far slower per operation than a hash map (~120 K puts/s with the
//! WAL, ~250 K/s without, on this kind of machine), so each instance keeps a
//! write-back LRU cache of hot and dirty entries, bounded in bytes. Evicted
//! dirty entries wait in a small pending table and reach RocksDB in write
//! batches, with the WAL off: durability comes from checkpoints. Reads look in
//! the cache, then the pending table, then RocksDB, so they always see the
//! latest write.
//!
//! For incremental checkpoints each write carries the number of the capture
//! interval it happened in. What reaches RocksDB during the current interval
//! is remembered (shared pointers, bounded; past the bound the next capture is
//! simply a full one), so a capture knows every item written since the
//! previous one: those remembered, plus the cache's and pending table's
//! entries written in this interval. The cache's are found through a list of
//! the keys it made dirty in the interval, not by walking the cache (unless
//! most of it was written): a capture's pause is then in proportion to the
//! interval's writes, not to the cache's size.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use lru::LruCache;
use rocksdb::{
    BlockBasedOptions, Cache, DB, DBCompressionType, Direction, IteratorMode, Options, ReadOptions,
    WriteBatch, WriteOptions,
};
use weir_codec::state::put_list;

use super::layout::{
    decode_list, key_group_prefix, map_key, short_slot_key, slot_key, stamp, unstamp,
};
use super::snapshot::{SnapshotError, SnapshotWriter};
use super::{Address, CacheCounts, KeyValues, KeyedBackend, MapEntries, Stamped, StateError};
use super::{CaptureScope, StateCapture, StateKind};

/// Evicted dirty entries written to RocksDB together.
const PENDING_BATCH: usize = 1024;
/// Entries an `expire` call inspects at most.
const EXPIRE_STEP: usize = 1000;
/// Per-entry bookkeeping counted against the cache bound, beyond key and value
/// (LRU links, table slot, allocation rounding).
const ENTRY_OVERHEAD: usize = 128;
/// The least memory the record of changes since the last capture may hold
/// before it is given up (and the next checkpoint is a full one).
const MIN_CHANGES_LIMIT: usize = 256 << 20;
/// Read-ahead of a full snapshot's scan of the database.
const SCAN_READAHEAD: usize = 2 << 20;

fn storage(e: rocksdb::Error) -> StateError {
    StateError::Storage(e.to_string())
}

/// RocksDB tuning, from `[state]`.
#[derive(Debug, Clone, Copy)]
pub struct RocksOptions {
    /// Shared block cache per database.
    pub block_cache: usize,
    /// Memtable size.
    pub write_buffer: usize,
    /// Write-back cache per instance.
    pub cache: usize,
}

/// One operator's database.
#[derive(Clone)]
pub struct RocksStore {
    db: Arc<DB>,
    options: RocksOptions,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("path", &self.db.path())
            .finish_non_exhaustive()
    }
}

impl RocksStore {
    /// Opens (creating) the database at `path`.
    pub fn open(path: &Path, options: RocksOptions) -> Result<Self, StateError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_write_buffer_size(options.write_buffer);
        opts.set_compression_type(DBCompressionType::Lz4);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&Cache::new_lru_cache(options.block_cache));
        // Most lookups of a new key find nothing: a bloom filter answers those
        // without reading blocks.
        table.set_bloom_filter(10.0, false);
        opts.set_block_based_table_factory(&table);
        let db = DB::open(&opts, path)
            .map_err(|e| StateError::Storage(format!("cannot open {}: {e}", path.display())))?;
        Ok(Self {
            db: Arc::new(db),
            options,
        })
    }

    /// A backend for the instance that owns `key_groups`.
    pub fn backend(&self, key_groups: Range<u32>) -> RocksBackend {
        let mut write = WriteOptions::default();
        write.disable_wal(true);
        RocksBackend {
            db: self.db.clone(),
            cache: LruCache::unbounded(),
            cache_bytes: 0,
            cache_limit: self.options.cache,
            pending: HashMap::new(),
            epoch: 0,
            changes: None,
            changes_bytes: 0,
            changes_limit: self.options.cache.saturating_mul(4).max(MIN_CHANGES_LIMIT),
            touched: Vec::new(),
            write,
            sweep_from: key_group_prefix(key_groups.start),
            key_groups,
            reads: CacheCounts::default(),
        }
    }
}

/// A cached key. Keys and values are shared, not owned, so a checkpoint's
/// capture of the dirty entries copies pointers, not bytes: the pause at a
/// barrier stays in milliseconds however large the cache.
type Key = Arc<[u8]>;
/// A cached value; `None` when the key is known to be absent.
type Value = Option<Arc<Vec<u8>>>;

struct CacheEntry {
    value: Value,
    dirty: bool,
    /// The capture interval of the last write.
    epoch: u64,
}

fn entry_size(key: &[u8], entry: &CacheEntry) -> usize {
    key.len() + entry.value.as_ref().map_or(0, |v| v.len()) + ENTRY_OVERHEAD
}

/// RocksDB state for the key groups of one instance, behind its write-back cache.
pub struct RocksBackend {
    db: Arc<DB>,
    cache: LruCache<Key, CacheEntry>,
    cache_bytes: usize,
    cache_limit: usize,
    /// Evicted dirty entries, with the capture interval they were written in.
    pending: HashMap<Key, (Value, u64)>,
    /// Captures taken so far: the interval writes now belong to.
    epoch: u64,
    /// Items written in this interval that already reached RocksDB; `None`
    /// before the first capture, or once the record grew past its limit.
    changes: Option<Vec<(Key, Value)>>,
    changes_bytes: usize,
    changes_limit: usize,
    /// Keys the cache made dirty in this interval while `changes` is kept (a
    /// key may appear twice if it was evicted and written again).
    touched: Vec<Key>,
    write: WriteOptions,
    key_groups: Range<u32>,
    sweep_from: Vec<u8>,
    /// Point reads answered from memory and from RocksDB.
    reads: CacheCounts,
}

impl RocksBackend {
    fn get_raw(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(entry) = self.cache.get(key) {
            self.reads.hits += 1;
            return Ok(entry.value.as_deref().cloned());
        }
        if let Some((value, _)) = self.pending.get(key) {
            self.reads.hits += 1;
            return Ok(value.as_deref().cloned());
        }
        self.reads.misses += 1;
        let value = self.db.get(key).map_err(storage)?;
        self.insert(
            key.into(),
            CacheEntry {
                value: value.clone().map(Arc::new),
                dirty: false,
                epoch: self.epoch,
            },
        )?;
        Ok(value)
    }

    fn put_raw(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<(), StateError> {
        self.pending.remove(key.as_slice());
        self.insert(
            key.into(),
            CacheEntry {
                value: value.map(Arc::new),
                dirty: true,
                epoch: self.epoch,
            },
        )
    }

    fn insert(&mut self, key: Key, entry: CacheEntry) -> Result<(), StateError> {
        self.cache_bytes += entry_size(&key, &entry);
        let noted = entry.dirty.then(|| key.clone());
        let mut noted_before = false;
        if let Some((old_key, old)) = self.cache.push(key, entry) {
            // Either the same key's old entry (replaced) or an evicted one.
            self.cache_bytes -= entry_size(&old_key, &old);
            if self.cache.peek(&old_key).is_some() {
                noted_before = old.dirty && old.epoch == self.epoch;
            } else if old.dirty {
                self.pending.insert(old_key, (old.value, old.epoch));
            }
        }
        if let Some(key) = noted
            && !noted_before
        {
            self.touch(&key);
        }
        self.shrink_cache()
    }

    /// Evicts least recently used entries while the cache is over its bound.
    fn shrink_cache(&mut self) -> Result<(), StateError> {
        while self.cache_bytes > self.cache_limit {
            let Some((key, entry)) = self.cache.pop_lru() else {
                break;
            };
            self.cache_bytes -= entry_size(&key, &entry);
            if entry.dirty {
                self.pending.insert(key, (entry.value, entry.epoch));
            }
        }
        if self.pending.len() >= PENDING_BATCH {
            self.write_pending()?;
        }
        Ok(())
    }

    /// Notes that the cache holds a write of this interval under `key`.
    fn touch(&mut self, key: &Key) {
        if self.changes.is_none() {
            return;
        }
        self.touched.push(key.clone());
        // The list counts against the record of changes: a cache churned
        // through many times in one interval gives up on it, as for writes.
        self.changes_bytes += key.len() + size_of::<Key>();
        if self.changes_bytes > self.changes_limit {
            self.give_up_changes();
        }
    }

    /// Forgets the changes of this interval: the next capture is a full one.
    fn give_up_changes(&mut self) {
        self.changes = None;
        self.touched = Vec::new();
    }

    fn write_pending(&mut self) -> Result<(), StateError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for (key, (value, epoch)) in self.pending.drain() {
            match &value {
                Some(v) => batch.put(&key, v.as_slice()),
                None => batch.delete(&key),
            }
            if epoch == self.epoch
                && let Some(changes) = &mut self.changes
            {
                self.changes_bytes += key.len() + value.as_ref().map_or(0, |v| v.len());
                changes.push((key, value));
            }
        }
        if self.changes_bytes > self.changes_limit {
            self.give_up_changes();
        }
        self.db.write_opt(batch, &self.write).map_err(storage)
    }

    /// Every stored key that starts with `prefix` (after a flush).
    fn scan(&mut self, prefix: &[u8]) -> Result<KeyValues, StateError> {
        self.flush()?;
        let mut out = Vec::new();
        for item in self
            .db
            .iterator(IteratorMode::From(prefix, Direction::Forward))
        {
            let (k, v) = item.map_err(storage)?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn stamped(&mut self, key: &[u8]) -> Result<Option<Stamped<Vec<u8>>>, StateError> {
        match self.get_raw(key)? {
            None => Ok(None),
            Some(stored) => {
                let (written_at, payload) = unstamp(&stored)?;
                Ok(Some(Stamped {
                    item: payload.to_vec(),
                    written_at,
                }))
            }
        }
    }
}

impl KeyedBackend for RocksBackend {
    fn value(&mut self, at: Address<'_>) -> Result<Option<Stamped<Cow<'_, [u8]>>>, StateError> {
        let key = short_slot_key(at);
        // The hot path: a cached value is lent, not copied. (Looked up twice
        // because a borrow returned from one branch cannot be given up in
        // the other; the second lookup finds the entry in the CPU's cache.)
        if self.cache.contains(key.as_slice()) {
            self.reads.hits += 1;
            let entry = self
                .cache
                .get(key.as_slice())
                .ok_or_else(|| StateError::Invalid("a cached state entry vanished".into()))?;
            return match entry.value.as_deref() {
                None => Ok(None),
                Some(stored) => {
                    let (written_at, payload) = unstamp(stored)?;
                    Ok(Some(Stamped {
                        item: Cow::Borrowed(payload),
                        written_at,
                    }))
                }
            };
        }
        Ok(self.stamped(&key)?.map(|s| Stamped {
            item: Cow::Owned(s.item),
            written_at: s.written_at,
        }))
    }

    fn set_value(
        &mut self,
        at: Address<'_>,
        value: &[u8],
        written_at: u64,
    ) -> Result<(), StateError> {
        let key = short_slot_key(at);
        // The hot path of a counter: a cached key's value is rewritten in
        // place, no allocation, unless a capture still shares it. A cached
        // key is never also pending (see `get_raw` and `put_raw`).
        let epoch = self.epoch;
        if let Some((cached, entry)) = self.cache.get_key_value_mut(key.as_slice()) {
            let newly_dirty = !(entry.dirty && entry.epoch == epoch);
            let cached = newly_dirty.then(|| cached.clone());
            let before = key.len() + entry.value.as_ref().map_or(0, |v| v.len());
            match entry.value.as_mut().and_then(Arc::get_mut) {
                Some(stored) => {
                    stored.clear();
                    stored.extend_from_slice(&written_at.to_le_bytes());
                    stored.extend_from_slice(value);
                }
                None => entry.value = Some(Arc::new(stamp(written_at, value))),
            }
            entry.dirty = true;
            entry.epoch = epoch;
            let after = key.len() + 8 + value.len();
            self.cache_bytes = (self.cache_bytes + after).saturating_sub(before);
            if let Some(cached) = cached {
                self.touch(&cached);
            }
            if after > before {
                return self.shrink_cache();
            }
            return Ok(());
        }
        self.put_raw(key.to_vec(), Some(stamp(written_at, value)))
    }

    fn list(&mut self, at: Address<'_>) -> Result<Option<Stamped<Vec<Vec<u8>>>>, StateError> {
        match self.stamped(&slot_key(at))? {
            None => Ok(None),
            Some(s) => Ok(Some(Stamped {
                item: decode_list(&s.item)?,
                written_at: s.written_at,
            })),
        }
    }

    fn set_list(
        &mut self,
        at: Address<'_>,
        items: Stamped<Vec<Vec<u8>>>,
    ) -> Result<(), StateError> {
        let mut payload = Vec::new();
        put_list(&mut payload, items.item.iter().map(Vec::as_slice));
        self.put_raw(slot_key(at), Some(stamp(items.written_at, &payload)))
    }

    fn map_get(
        &mut self,
        at: Address<'_>,
        mk: &[u8],
    ) -> Result<Option<Stamped<Vec<u8>>>, StateError> {
        self.stamped(&map_key(at, mk))
    }

    fn map_put(
        &mut self,
        at: Address<'_>,
        mk: &[u8],
        value: Stamped<Vec<u8>>,
    ) -> Result<(), StateError> {
        self.put_raw(map_key(at, mk), Some(stamp(value.written_at, &value.item)))
    }

    fn map_remove(&mut self, at: Address<'_>, mk: &[u8]) -> Result<(), StateError> {
        self.put_raw(map_key(at, mk), None)
    }

    fn map_entries(&mut self, at: Address<'_>) -> Result<MapEntries, StateError> {
        let prefix = slot_key(at);
        let mut out = Vec::new();
        for (k, v) in self.scan(&prefix)? {
            let (written_at, payload) = unstamp(&v)?;
            out.push((
                k[prefix.len()..].to_vec(),
                Stamped {
                    item: payload.to_vec(),
                    written_at,
                },
            ));
        }
        Ok(out)
    }

    fn clear(&mut self, at: Address<'_>, kind: StateKind) -> Result<(), StateError> {
        let prefix = slot_key(at);
        // Only a map has items under the slot's key; a value or a list is
        // the one item, and scanning for more would flush the whole cache
        // (a fired window clears its state: that made each one cost as
        // much as every dirty entry).
        if kind == StateKind::Map {
            for (k, _) in self.scan(&prefix)? {
                self.put_raw(k, None)?;
            }
        }
        self.put_raw(prefix, None)
    }

    fn expire(&mut self, expired: &dyn Fn(u32, u64) -> bool) -> Result<(), StateError> {
        self.flush()?;
        let end = key_group_prefix(self.key_groups.end);
        let mut doomed = Vec::new();
        let mut next = None;
        for (seen, item) in self
            .db
            .iterator(IteratorMode::From(&self.sweep_from, Direction::Forward))
            .enumerate()
        {
            let (k, v) = item.map_err(storage)?;
            let in_range = self.key_groups.end > u32::from(u16::MAX) || k.as_ref() < end.as_slice();
            if !in_range {
                break;
            }
            if seen >= EXPIRE_STEP {
                next = Some(k.to_vec());
                break;
            }
            if k.len() >= 6 && v.len() >= 8 {
                let state = u32::from_be_bytes([k[2], k[3], k[4], k[5]]);
                let (written_at, _) = unstamp(&v)?;
                if expired(state, written_at) {
                    doomed.push(k.to_vec());
                }
            }
        }
        // Wrap around to the first owned key group once the range is swept.
        self.sweep_from = next.unwrap_or_else(|| key_group_prefix(self.key_groups.start));
        for k in doomed {
            self.put_raw(k, None)?;
        }
        Ok(())
    }

    fn capture(&mut self, scope: CaptureScope) -> Result<Box<dyn StateCapture>, StateError> {
        let mut changes = self.changes.take();
        // A full write needs what is not in RocksDB yet copied (bounded by the
        // cache size) and a RocksDB snapshot for the rest, read later on the
        // writer's thread; a change file needs neither.
        let full = scope == CaptureScope::Full || changes.is_none();
        let started = std::time::Instant::now();
        let touched = std::mem::take(&mut self.touched);
        let noted = touched.len();
        let epoch = self.epoch;
        let mut overlay: Vec<(Key, Value)> = Vec::new();
        // A lookup per noted key costs a few cache misses, a step of a walk
        // over the cache about as many: past this share of the cache noted,
        // walking it is cheaper (and a full capture walks it anyway).
        let walk = full || touched.len().saturating_mul(4) >= self.cache.len().saturating_mul(3);
        if walk {
            for (key, e) in self.cache.iter().filter(|(_, e)| e.dirty) {
                if full {
                    // Every write not in RocksDB yet, of any interval.
                    overlay.push((key.clone(), e.value.clone()));
                }
                if e.epoch == epoch
                    && let Some(changes) = &mut changes
                {
                    changes.push((key.clone(), e.value.clone()));
                }
            }
            if full {
                overlay.extend(
                    self.pending
                        .iter()
                        .map(|(k, (v, _))| (k.clone(), v.clone())),
                );
            }
        } else if let Some(changes) = &mut changes {
            // This interval's writes still in the cache: each key once,
            // however often it was noted.
            for key in touched {
                if let Some(e) = self.cache.peek_mut(&*key)
                    && e.dirty
                    && e.epoch == epoch
                {
                    // Marked as taken: a second note of the key finds it so.
                    e.epoch = epoch.wrapping_sub(1);
                    changes.push((key, e.value.clone()));
                }
            }
        }
        if let Some(changes) = &mut changes {
            let pending = self.pending.iter().filter(|(_, (_, e))| *e == epoch);
            changes.extend(pending.map(|(k, (v, _))| (k.clone(), v.clone())));
        }
        tracing::debug!(
            full,
            noted,
            walk,
            overlay = overlay.len(),
            changes = changes.as_ref().map(Vec::len),
            cached = self.cache.len(),
            took = ?started.elapsed(),
            "captured RocksDB state"
        );
        self.epoch += 1;
        self.changes = Some(Vec::new());
        self.changes_bytes = 0;
        let snapshot = full.then(|| DbSnapshot::new(self.db.clone(), |db| db.snapshot()));
        Ok(Box::new(RocksCapture {
            snapshot,
            overlay,
            changes,
            start: key_group_prefix(self.key_groups.start),
            end: (self.key_groups.end <= u32::from(u16::MAX))
                .then(|| key_group_prefix(self.key_groups.end)),
        }))
    }

    fn state_items(&mut self, key_group: u16, state: u32) -> Result<KeyValues, StateError> {
        let mut prefix = key_group.to_be_bytes().to_vec();
        prefix.extend_from_slice(&state.to_be_bytes());
        self.scan(&prefix)
    }

    fn load(&mut self, key: &[u8], value: &[u8], _kind: StateKind) -> Result<(), StateError> {
        // Stored as it comes: the snapshot holds items in this very layout.
        // A change file may hold the same key again: the cache must not keep
        // an older version in front of it.
        if let Some(old) = self.cache.pop(key) {
            self.cache_bytes -= entry_size(key, &old);
        }
        self.pending
            .insert(key.into(), (Some(Arc::new(value.to_vec())), self.epoch));
        if self.pending.len() >= PENDING_BATCH {
            self.write_pending()?;
        }
        Ok(())
    }

    fn cache_counts(&self) -> CacheCounts {
        self.reads
    }

    fn flush(&mut self) -> Result<(), StateError> {
        for (key, entry) in self.cache.iter_mut() {
            if entry.dirty {
                entry.dirty = false;
                self.pending
                    .insert(key.clone(), (entry.value.clone(), entry.epoch));
            }
        }
        self.write_pending()
    }
}

type Snapshot<'a> = rocksdb::SnapshotWithThreadMode<'a, DB>;

self_cell::self_cell!(
    /// A RocksDB snapshot that owns a handle on its database, so it can move to
    /// the thread that writes it out.
    struct DbSnapshot {
        owner: Arc<DB>,
        #[covariant]
        dependent: Snapshot,
    }
);

/// An instance's state at a barrier: a RocksDB snapshot, overlaid with the
/// cache's writes that had not reached RocksDB.
struct RocksCapture {
    /// `None` when captured for a change file only.
    snapshot: Option<DbSnapshot>,
    overlay: Vec<(Key, Value)>,
    /// Every item written since the previous capture, oldest first, if known.
    changes: Option<Vec<(Key, Value)>>,
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl StateCapture for RocksCapture {
    fn has_changes(&self) -> bool {
        self.changes.is_some()
    }

    fn can_write_full(&self) -> bool {
        self.snapshot.is_some()
    }

    fn write_changes(self: Box<Self>, out: &mut SnapshotWriter) -> Result<(), SnapshotError> {
        // Release the database snapshot first: while it lives, flushes and
        // compactions keep every version of a key it can see, which the
        // operator's reads then wade through.
        let Self { changes, .. } = *self;
        let Some(mut changes) = changes else {
            return Err(SnapshotError::State(StateError::Invalid(
                "no record of the changes since the previous capture".into(),
            )));
        };
        // Stable: of one key's writes, the newest is last.
        changes.sort_by(|a, b| a.0.cmp(&b.0));
        let mut changes = changes.into_iter().peekable();
        while let Some((key, mut value)) = changes.next() {
            while let Some((_, newer)) = changes.next_if(|(k, _)| *k == key) {
                value = newer;
            }
            match value {
                Some(v) => out.item(&key, &v)?,
                None => out.tombstone(&key)?,
            }
        }
        Ok(())
    }

    fn write(self: Box<Self>, out: &mut SnapshotWriter) -> Result<(), SnapshotError> {
        let Self {
            snapshot,
            mut overlay,
            start,
            end,
            changes: _,
        } = *self;
        let Some(snapshot) = snapshot else {
            return Err(SnapshotError::State(StateError::Invalid(
                "a capture taken for a change file cannot be written whole".into(),
            )));
        };
        overlay.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut overlay = overlay.into_iter().peekable();
        // A scan of the whole state: it must not evict the blocks the
        // operator is reading from the block cache, and it reads ahead.
        let mut read = ReadOptions::default();
        read.fill_cache(false);
        read.set_readahead_size(SCAN_READAHEAD);
        snapshot.with_dependent(|_, snap| {
            for item in snap.iterator_opt(IteratorMode::From(&start, Direction::Forward), read) {
                let (k, v) = item.map_err(storage)?;
                if end.as_deref().is_some_and(|end| k.as_ref() >= end) {
                    break;
                }
                while let Some((ok, ov)) = overlay.next_if(|(ok, _)| ok.as_ref() < k.as_ref()) {
                    if let Some(ov) = ov {
                        out.item(&ok, &ov)?;
                    }
                }
                match overlay.next_if(|(ok, _)| ok.as_ref() == k.as_ref()) {
                    Some((_, Some(ov))) => out.item(&k, &ov)?,
                    Some((_, None)) => {}
                    None => out.item(&k, &v)?,
                }
            }
            for (ok, ov) in overlay {
                if let Some(ov) = ov {
                    out.item(&ok, &ov)?;
                }
            }
            Ok(())
        })
    }
}
