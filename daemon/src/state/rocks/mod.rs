//! The RocksDB backend.
//!
//! One database per operator, shared by its instances (they own disjoint key
//! groups, so they never touch the same keys). Keys and values are stored in
//! the [`super::layout`] encoding, key group first, so one key group is one
//! contiguous range.
//!
//! RocksDB is far slower per operation than a hash map (~120 K puts/s with the
//! WAL, ~250 K/s without, on this kind of machine), so each instance keeps a
//! write-back cache of hot and dirty entries, bounded in bytes
//! ([`cache`]: copy-on-write tables per key group, clock eviction). Evicted
//! dirty entries wait in a small pending table and reach RocksDB in write
//! batches, with the WAL off: durability comes from checkpoints. Reads look in
//! the cache, then the pending table, then RocksDB, so they always see the
//! latest write.
//!
//! For incremental checkpoints each write carries the number of the capture
//! interval it happened in. What reaches RocksDB during the current interval
//! is remembered (bounded; past the bound the next capture is simply a full
//! one), so a capture knows every item written since the previous one: those
//! remembered, the pending table's, and the cache's entries written in the
//! interval. A capture shares the cache's tables rather than copying their
//! entries, so its pause is a pointer per key group whatever the interval
//! wrote; the writer thread picks the interval's entries out of them
//! ([`capture`]).

mod cache;
mod capture;

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    BlockBasedOptions, Cache, DB, DBCompressionType, Direction, IteratorMode, Options, WriteBatch,
    WriteOptions,
};
use weir_codec::state::put_list;

use self::cache::{Bytes, Spilled, WriteBackCache};
use self::capture::{Change, DbSnapshot, RocksCapture};
use super::layout::{
    ShortKey, decode_list, key_group_prefix, map_key, short_slot_key, slot_key, unstamp,
};
use super::{
    Address, CacheCounts, FoundValue, KeyValues, KeyedBackend, MapEntries, Stamped, StateError,
};
use super::{CaptureScope, StateCapture, StateKind};

/// Evicted dirty entries written to RocksDB together.
const PENDING_BATCH: usize = 1024;
/// Entries an `expire` call inspects at most.
const EXPIRE_STEP: usize = 1000;
/// The least memory the record of changes since the last capture may hold
/// before it is given up (and the next checkpoint is a full one).
const MIN_CHANGES_LIMIT: usize = 256 << 20;

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
            cache: WriteBackCache::new(key_groups.clone(), self.options.cache),
            pending: HashMap::new(),
            epoch: 0,
            changes: None,
            changes_bytes: 0,
            changes_limit: self.options.cache.saturating_mul(4).max(MIN_CHANGES_LIMIT),
            write,
            sweep_from: key_group_prefix(key_groups.start),
            key_groups,
            reads: CacheCounts::default(),
        }
    }
}

/// RocksDB state for the key groups of one instance, behind its write-back cache.
pub struct RocksBackend {
    db: Arc<DB>,
    cache: WriteBackCache,
    /// Evicted dirty entries, with the capture interval they were written in.
    /// A key is never both here and in the cache.
    pending: HashMap<Bytes, (Option<Bytes>, u64)>,
    /// Captures taken so far: the interval writes now belong to.
    epoch: u64,
    /// Items written in this interval that already reached RocksDB; `None`
    /// before the first capture, or once the record grew past its limit.
    changes: Option<Vec<Change>>,
    changes_bytes: usize,
    changes_limit: usize,
    write: WriteOptions,
    key_groups: Range<u32>,
    sweep_from: Vec<u8>,
    /// Point reads answered from memory and from RocksDB.
    reads: CacheCounts,
}

impl RocksBackend {
    fn get_raw(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(entry) = self.cache.get(key)? {
            self.reads.hits += 1;
            return Ok(entry.value.as_deref().map(<[u8]>::to_vec));
        }
        if let Some((value, _)) = self.pending.get(key) {
            self.reads.hits += 1;
            return Ok(value.as_deref().map(<[u8]>::to_vec));
        }
        self.reads.misses += 1;
        let value = self.db.get(key).map_err(storage)?;
        self.cache.fill(key, value.as_deref(), self.epoch)?;
        self.after_insert()?;
        Ok(value)
    }

    /// Writes `value` (its parts concatenated; `None`: removed) under `key`.
    fn put_parts(&mut self, key: &[u8], value: Option<&[&[u8]]>) -> Result<(), StateError> {
        if self.cache.write(key, value, self.epoch)? {
            self.pending.remove(key);
            self.after_insert()?;
        } else if self.cache.over_limit() {
            // A rewrite that grew the value.
            self.after_insert()?;
        }
        Ok(())
    }

    fn put_raw(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), StateError> {
        self.put_parts(key, value.as_ref().map(std::slice::from_ref))
    }

    fn put_stamped(
        &mut self,
        key: &[u8],
        written_at: u64,
        payload: &[u8],
    ) -> Result<(), StateError> {
        self.put_parts(key, Some(&[&written_at.to_le_bytes(), payload]))
    }

    /// Evicts while the cache is over its bound; writes the pending table
    /// to RocksDB once it holds a batch.
    fn after_insert(&mut self) -> Result<(), StateError> {
        if self.cache.over_limit() {
            let pending = &mut self.pending;
            self.cache.evict(|(key, value, epoch): Spilled| {
                pending.insert(key, (value, epoch));
            });
        }
        if self.pending.len() >= PENDING_BATCH {
            self.write_pending()?;
        }
        Ok(())
    }

    /// Forgets the changes of this interval: the next capture is a full one.
    fn give_up_changes(&mut self) {
        self.changes = None;
    }

    fn write_pending(&mut self) -> Result<(), StateError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for (key, (value, epoch)) in self.pending.drain() {
            match &value {
                Some(v) => batch.put(&*key, v.as_slice()),
                None => batch.delete(&*key),
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
        if self.cache.get(&key)?.is_some() {
            self.reads.hits += 1;
            let entry = self
                .cache
                .get(&key)?
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

    fn values(&mut self, at: &[Address<'_>], found: &mut FoundValue<'_>) -> Result<(), StateError> {
        let keys: Vec<ShortKey> = at.iter().map(|at| short_slot_key(*at)).collect();
        // Every cache lookup first, in one short loop: over a million keys
        // each misses the CPU cache, and this way the misses overlap.
        let mut cached = Vec::with_capacity(keys.len());
        for key in &keys {
            cached.push(self.cache.get(key)?);
        }
        if cached.iter().all(Option::is_some) {
            self.reads.hits += keys.len() as u64;
            for (i, entry) in cached.into_iter().enumerate() {
                let value = match entry.and_then(|e| e.value.as_deref()) {
                    None => None,
                    Some(stored) => {
                        let (written_at, item) = unstamp(stored)?;
                        Some(Stamped { item, written_at })
                    }
                };
                found(i, value)?;
            }
            return Ok(());
        }
        // The keys neither cached nor waiting to be written are read from
        // RocksDB in one `multi_get` and cached; then every key is answered
        // as `value` answers it (from the cache, now).
        let missing: Vec<&[u8]> = keys
            .iter()
            .zip(&cached)
            .filter(|(key, entry)| entry.is_none() && !self.pending.contains_key(key.as_slice()))
            .map(|(key, _)| key.as_slice())
            .collect();
        let hits = (keys.len() - missing.len()) as u64;
        drop(cached);
        let read = self.db.multi_get(&missing);
        for (key, value) in missing.iter().zip(read) {
            let value = value.map_err(storage)?;
            self.cache.fill(key, value.as_deref(), self.epoch)?;
            self.after_insert()?;
        }
        let counts = self.reads;
        super::values_one_by_one(self, at, found)?;
        self.reads = CacheCounts {
            hits: counts.hits + hits,
            misses: counts.misses + missing.len() as u64,
        };
        Ok(())
    }

    fn set_value(
        &mut self,
        at: Address<'_>,
        value: &[u8],
        written_at: u64,
    ) -> Result<(), StateError> {
        // A cached key's value is rewritten in place: no allocation for a
        // short one, nor for a long one no capture still holds.
        self.put_stamped(&short_slot_key(at), written_at, value)
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
        self.put_stamped(&slot_key(at), items.written_at, &payload)
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
        self.put_stamped(&map_key(at, mk), value.written_at, &value.item)
    }

    fn map_remove(&mut self, at: Address<'_>, mk: &[u8]) -> Result<(), StateError> {
        self.put_raw(&map_key(at, mk), None)
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
                self.put_raw(&k, None)?;
            }
        }
        self.put_raw(&prefix, None)
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
            self.put_raw(&k, None)?;
        }
        Ok(())
    }

    fn capture(&mut self, scope: CaptureScope) -> Result<Box<dyn StateCapture>, StateError> {
        let changes = self.changes.take();
        // A full write needs a RocksDB snapshot for what reached it, read
        // later on the writer's thread; a change file does not.
        let full = scope == CaptureScope::Full || changes.is_none();
        let started = std::time::Instant::now();
        let pending: Vec<_> = self
            .pending
            .iter()
            .map(|(k, (v, e))| (k.clone(), v.clone(), *e))
            .collect();
        let capture = RocksCapture {
            snapshot: full.then(|| DbSnapshot::new(self.db.clone(), |db| db.snapshot())),
            tables: self.cache.share(),
            pending,
            changes,
            epoch: self.epoch,
            start: key_group_prefix(self.key_groups.start),
            end: (self.key_groups.end <= u32::from(u16::MAX))
                .then(|| key_group_prefix(self.key_groups.end)),
        };
        tracing::debug!(
            full,
            pending = capture.pending.len(),
            changes = capture.changes.as_ref().map(Vec::len),
            cached = self.cache.len(),
            took = ?started.elapsed(),
            "captured RocksDB state"
        );
        self.epoch += 1;
        self.changes = Some(Vec::new());
        self.changes_bytes = 0;
        Ok(Box::new(capture))
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
        self.cache.remove(key)?;
        self.pending
            .insert(Bytes::new(key), (Some(Bytes::new(value)), self.epoch));
        if self.pending.len() >= PENDING_BATCH {
            self.write_pending()?;
        }
        Ok(())
    }

    fn cache_counts(&self) -> CacheCounts {
        self.reads
    }

    fn flush(&mut self) -> Result<(), StateError> {
        let pending = &mut self.pending;
        self.cache.clean(|(key, value, epoch): Spilled| {
            pending.insert(key, (value, epoch));
        });
        self.write_pending()
    }
}
