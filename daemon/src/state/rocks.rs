//! The RocksDB backend.
//!
//! One database per operator, shared by its instances (they own disjoint key
//! groups, so they never touch the same keys). Keys are laid out key group
//! first, so one key group is one contiguous range:
//!
//! ```text
//! key   := key_group:u16 BE  state:u32 BE  key_len:u32 BE  key  [map_key]
//! value := written_at:u64 LE  payload        (list payload: count:u32, then len:u32 + bytes each)
//! ```
//!
//! RocksDB is far slower per operation than a hash map (~120 K puts/s with the
//! WAL, ~250 K/s without, on this kind of machine), so each instance keeps a
//! write-back LRU cache of hot and dirty entries, bounded in bytes. Evicted
//! dirty entries wait in a small pending table and reach RocksDB in write
//! batches, with the WAL off: durability comes from checkpoints. Reads look in
//! the cache, then the pending table, then RocksDB, so they always see the
//! latest write.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use lru::LruCache;
use rocksdb::{
    BlockBasedOptions, Cache, DB, DBCompressionType, Direction, IteratorMode, Options, WriteBatch,
    WriteOptions,
};
use weir_codec::state::{Cursor, put_list};

use super::{Address, KeyedBackend, MapEntries, Stamped, StateError};

/// Evicted dirty entries written to RocksDB together.
const PENDING_BATCH: usize = 1024;
/// Entries an `expire` call inspects at most.
const EXPIRE_STEP: usize = 1000;
/// Per-entry bookkeeping counted against the cache bound, beyond key and value
/// (LRU links, table slot, allocation rounding).
const ENTRY_OVERHEAD: usize = 128;

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
            write,
            sweep_from: key_group_prefix(key_groups.start),
            key_groups,
        }
    }
}

fn key_group_prefix(group: u32) -> Vec<u8> {
    // Key groups are below max_parallelism, at most 2^16.
    (group as u16).to_be_bytes().to_vec()
}

fn slot_key(at: Address<'_>) -> Vec<u8> {
    let mut k = Vec::with_capacity(10 + at.key.len());
    k.extend_from_slice(&at.key_group.to_be_bytes());
    k.extend_from_slice(&at.state.to_be_bytes());
    k.extend_from_slice(&(at.key.len() as u32).to_be_bytes());
    k.extend_from_slice(at.key);
    k
}

fn stamp(written_at: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + payload.len());
    v.extend_from_slice(&written_at.to_le_bytes());
    v.extend_from_slice(payload);
    v
}

fn unstamp(stored: &[u8]) -> Result<(u64, &[u8]), StateError> {
    if stored.len() < 8 {
        return Err(StateError::Storage(
            "a stored state value is shorter than its timestamp".into(),
        ));
    }
    let (ts, payload) = stored.split_at(8);
    let mut b = [0u8; 8];
    b.copy_from_slice(ts);
    Ok((u64::from_le_bytes(b), payload))
}

/// Stored keys and values, in key order.
type KeyValues = Vec<(Vec<u8>, Vec<u8>)>;

struct CacheEntry {
    /// Stored bytes; `None` when the key is known to be absent.
    value: Option<Vec<u8>>,
    dirty: bool,
}

fn entry_size(key: &[u8], entry: &CacheEntry) -> usize {
    key.len() + entry.value.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD
}

/// RocksDB state for the key groups of one instance, behind its write-back cache.
pub struct RocksBackend {
    db: Arc<DB>,
    cache: LruCache<Vec<u8>, CacheEntry>,
    cache_bytes: usize,
    cache_limit: usize,
    pending: HashMap<Vec<u8>, Option<Vec<u8>>>,
    write: WriteOptions,
    key_groups: Range<u32>,
    sweep_from: Vec<u8>,
}

impl RocksBackend {
    fn get_raw(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(entry) = self.cache.get(key) {
            return Ok(entry.value.clone());
        }
        if let Some(value) = self.pending.get(key) {
            return Ok(value.clone());
        }
        let value = self.db.get(key).map_err(storage)?;
        self.insert(
            key.to_vec(),
            CacheEntry {
                value: value.clone(),
                dirty: false,
            },
        )?;
        Ok(value)
    }

    fn put_raw(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<(), StateError> {
        self.pending.remove(&key);
        self.insert(key, CacheEntry { value, dirty: true })
    }

    fn insert(&mut self, key: Vec<u8>, entry: CacheEntry) -> Result<(), StateError> {
        self.cache_bytes += entry_size(&key, &entry);
        if let Some((old_key, old)) = self.cache.push(key, entry) {
            // Either the same key's old entry (replaced) or an evicted one.
            self.cache_bytes -= entry_size(&old_key, &old);
            if old.dirty && self.cache.peek(&old_key).is_none() {
                self.pending.insert(old_key, old.value);
            }
        }
        while self.cache_bytes > self.cache_limit {
            let Some((key, entry)) = self.cache.pop_lru() else {
                break;
            };
            self.cache_bytes -= entry_size(&key, &entry);
            if entry.dirty {
                self.pending.insert(key, entry.value);
            }
        }
        if self.pending.len() >= PENDING_BATCH {
            self.write_pending()?;
        }
        Ok(())
    }

    fn write_pending(&mut self) -> Result<(), StateError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for (key, value) in self.pending.drain() {
            match value {
                Some(v) => batch.put(&key, &v),
                None => batch.delete(&key),
            }
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

fn map_key(at: Address<'_>, map_key: &[u8]) -> Vec<u8> {
    let mut k = slot_key(at);
    k.extend_from_slice(map_key);
    k
}

fn decode_list(payload: &[u8]) -> Result<Vec<Vec<u8>>, StateError> {
    let items = Cursor::new(payload)
        .list()
        .map_err(|e| StateError::Storage(format!("a stored list is corrupt: {e}")))?;
    Ok(items.into_iter().map(<[u8]>::to_vec).collect())
}

impl KeyedBackend for RocksBackend {
    fn value(&mut self, at: Address<'_>) -> Result<Option<Stamped<Cow<'_, [u8]>>>, StateError> {
        Ok(self.stamped(&slot_key(at))?.map(|s| Stamped {
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
        self.put_raw(slot_key(at), Some(stamp(written_at, value)))
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

    fn clear(&mut self, at: Address<'_>) -> Result<(), StateError> {
        let prefix = slot_key(at);
        for (k, _) in self.scan(&prefix)? {
            self.put_raw(k, None)?;
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

    fn flush(&mut self) -> Result<(), StateError> {
        for (key, entry) in self.cache.iter_mut() {
            if entry.dirty {
                entry.dirty = false;
                self.pending.insert(key.clone(), entry.value.clone());
            }
        }
        self.write_pending()
    }
}
