//! The RocksDB backend's write-back cache: one hash table per key group,
//! copy-on-write as the heap backend's tables are.
//!
//! A checkpoint's capture clones the tables' `Arc`s, so the pause at a
//! barrier costs a pointer copy per key group however many entries the
//! interval wrote; the snapshot writer thread finds the interval's writes in
//! the captured tables. The first write to a key group a capture still holds
//! copies that table (short keys and values are held inline, so the copy is
//! a `memcpy` of the slots); once the capture is written, writes are in place
//! again.
//!
//! Eviction is a clock (second chance), swept a key group at a time: every
//! read and write marks its entry, and the hand keeps a marked entry (taking
//! its mark) and evicts an unmarked one. Unlike an LRU list, a hit moves no
//! links, which in a cache of millions of entries were cache misses of
//! their own; and the tables stay plain values that can be shared.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hashbrown::{Equivalent, HashMap};

use crate::state::StateError;
use crate::state::layout::same_key;

/// The longest key or value held inline in a slot.
const INLINE: usize = 30;

/// Per-entry bookkeeping counted against the cache bound, beyond key and value
/// (table slot, load factor, allocation rounding).
const ENTRY_OVERHEAD: usize = 128;

/// A stored key or value: inline when short (a layout key of a short record
/// key, a counter, a timer), so reading it follows no pointer and copying a
/// table copies it with the slot; shared behind an `Arc` when long, so a
/// table copy copies a pointer.
#[derive(Clone)]
pub(super) enum Bytes {
    /// Up to [`INLINE`] bytes.
    Inline { len: u8, data: [u8; INLINE] },
    /// Longer ones.
    Shared(Arc<Vec<u8>>),
}

impl Bytes {
    /// `parts`, concatenated.
    pub(super) fn from_parts(parts: &[&[u8]]) -> Self {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len <= INLINE {
            let mut data = [0; INLINE];
            let mut at = 0;
            for part in parts {
                data[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            }
            // At most INLINE, checked above.
            Self::Inline {
                len: len as u8,
                data,
            }
        } else {
            Self::Shared(Arc::new(parts.concat()))
        }
    }

    /// A copy of `bytes`.
    pub(super) fn new(bytes: &[u8]) -> Self {
        Self::from_parts(&[bytes])
    }

    /// The bytes.
    pub(super) fn as_slice(&self) -> &[u8] {
        match self {
            Self::Inline { len, data } => &data[..usize::from(*len)],
            Self::Shared(v) => v,
        }
    }

    /// Replaces the bytes with `parts`, concatenated: in place when they fit
    /// inline or the shared buffer is this slot's alone (no capture holds it).
    fn assign(&mut self, parts: &[&[u8]]) {
        if let Self::Shared(v) = self
            && let Some(v) = Arc::get_mut(v)
        {
            v.clear();
            for part in parts {
                v.extend_from_slice(part);
            }
            return;
        }
        *self = Self::from_parts(parts);
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Borrow<[u8]> for Bytes {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

/// Hashes as the slice does, so a table is probed with a borrowed `&[u8]`.
impl Hash for Bytes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

/// A borrowed key, to probe a table with: hashes as the slice does (as
/// [`Bytes`] does) and compares inline, not through `memcmp`.
struct Probe<'a>(&'a [u8]);

impl Hash for Probe<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl Equivalent<Bytes> for Probe<'_> {
    fn equivalent(&self, stored: &Bytes) -> bool {
        same_key(self.0, stored)
    }
}

impl PartialEq for Bytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Bytes {}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_slice())
    }
}

/// A cached item.
#[derive(Debug)]
pub(super) struct Entry {
    /// `None` when the key is known to be absent (a tombstone when dirty).
    pub(super) value: Option<Bytes>,
    /// Written since it was last handed to RocksDB.
    pub(super) dirty: bool,
    /// The capture interval of the last write.
    pub(super) epoch: u64,
    /// Read or written since the clock hand last passed. Atomic so a read
    /// marks it through a table a capture shares with the writer thread
    /// (which never looks at it) without copying the table.
    marked: AtomicBool,
}

impl Clone for Entry {
    fn clone(&self) -> Self {
        Self {
            value: self.value.clone(),
            dirty: self.dirty,
            epoch: self.epoch,
            marked: AtomicBool::new(self.marked.load(Ordering::Relaxed)),
        }
    }
}

impl Entry {
    fn mark(&self) {
        // A load first: most hits find the mark set, and a store would
        // dirty the cache line for nothing.
        if !self.marked.load(Ordering::Relaxed) {
            self.marked.store(true, Ordering::Relaxed);
        }
    }
}

/// One key group's entries.
pub(super) type Table = HashMap<Bytes, Entry>;

fn entry_size(key: &[u8], value: Option<&Bytes>) -> usize {
    key.len() + value.map_or(0, |v| v.len()) + ENTRY_OVERHEAD
}

/// An evicted entry that was dirty: its key, value and write interval.
pub(super) type Spilled = (Bytes, Option<Bytes>, u64);

/// The write-back cache of one instance's key groups, bounded in bytes.
#[derive(Debug)]
pub(super) struct WriteBackCache {
    first_group: u32,
    tables: Vec<Arc<Table>>,
    bytes: usize,
    limit: usize,
    len: usize,
    /// The key group the clock hand sweeps next.
    hand: usize,
}

impl WriteBackCache {
    /// An empty cache for `key_groups`, holding about `limit` bytes.
    pub(super) fn new(key_groups: Range<u32>, limit: usize) -> Self {
        Self {
            first_group: key_groups.start,
            tables: key_groups.map(|_| Arc::new(Table::new())).collect(),
            bytes: 0,
            limit,
            len: 0,
            hand: 0,
        }
    }

    /// The table index of a stored key (key group first, big-endian).
    fn index(&self, key: &[u8]) -> Result<usize, StateError> {
        let group = match key {
            [a, b, ..] => u32::from(u16::from_be_bytes([*a, *b])),
            _ => {
                return Err(StateError::Invalid(
                    "a stored key without a key group".into(),
                ));
            }
        };
        group
            .checked_sub(self.first_group)
            .map(|i| i as usize)
            .filter(|i| *i < self.tables.len())
            .ok_or_else(|| {
                StateError::Invalid(format!("key group {group} is not held by this backend"))
            })
    }

    /// The cached entry of `key`, marked as used.
    pub(super) fn get(&self, key: &[u8]) -> Result<Option<&Entry>, StateError> {
        let entry = self.tables[self.index(key)?].get(&Probe(key));
        if let Some(entry) = entry {
            entry.mark();
        }
        Ok(entry)
    }

    /// Writes `value` (the concatenation of its parts; `None`: removed) under
    /// `key` in interval `epoch`, dirty: in place when the key is cached.
    /// Returns whether the key was not cached before.
    pub(super) fn write(
        &mut self,
        key: &[u8],
        value: Option<&[&[u8]]>,
        epoch: u64,
    ) -> Result<bool, StateError> {
        let i = self.index(key)?;
        let table = Arc::make_mut(&mut self.tables[i]);
        if let Some(entry) = table.get_mut(&Probe(key)) {
            let before = entry_size(key, entry.value.as_ref());
            match (&mut entry.value, value) {
                (Some(old), Some(parts)) => old.assign(parts),
                (slot, parts) => *slot = parts.map(Bytes::from_parts),
            }
            entry.dirty = true;
            entry.epoch = epoch;
            *entry.marked.get_mut() = true;
            self.bytes = (self.bytes + entry_size(key, entry.value.as_ref())) - before;
            return Ok(false);
        }
        self.insert_new(i, key, value.map(Bytes::from_parts), true, epoch);
        Ok(true)
    }

    /// Caches what RocksDB holds for a key the cache did not have (clean).
    pub(super) fn fill(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        epoch: u64,
    ) -> Result<(), StateError> {
        let i = self.index(key)?;
        self.insert_new(i, key, value.map(Bytes::new), false, epoch);
        Ok(())
    }

    fn insert_new(&mut self, i: usize, key: &[u8], value: Option<Bytes>, dirty: bool, epoch: u64) {
        self.bytes += entry_size(key, value.as_ref());
        let entry = Entry {
            value,
            dirty,
            epoch,
            marked: AtomicBool::new(true),
        };
        if let Some(old) = Arc::make_mut(&mut self.tables[i]).insert(Bytes::new(key), entry) {
            self.bytes -= entry_size(key, old.value.as_ref());
        } else {
            self.len += 1;
        }
    }

    /// Takes `key`'s entry out of the cache.
    pub(super) fn remove(&mut self, key: &[u8]) -> Result<Option<Entry>, StateError> {
        let i = self.index(key)?;
        if !self.tables[i].contains_key(&Probe(key)) {
            return Ok(None);
        }
        let removed = Arc::make_mut(&mut self.tables[i]).remove(&Probe(key));
        if let Some(old) = &removed {
            self.bytes -= entry_size(key, old.value.as_ref());
            self.len -= 1;
        }
        Ok(removed)
    }

    /// Whether the cache holds more than its bound.
    pub(super) fn over_limit(&self) -> bool {
        self.bytes > self.limit
    }

    /// Sweeps the clock hand over key groups until the cache is within its
    /// bound, handing over each evicted entry that was dirty.
    pub(super) fn evict(&mut self, mut spill: impl FnMut(Spilled)) {
        let groups = self.tables.len();
        // Two turns of the hand at most: the first takes every mark, so the
        // second evicts all it passes.
        for _ in 0..=2 * groups {
            if !self.over_limit() || groups == 0 {
                return;
            }
            let i = self.hand;
            self.hand = (i + 1) % groups;
            if self.tables[i].is_empty() {
                continue;
            }
            let table = Arc::make_mut(&mut self.tables[i]);
            let evicted = table.extract_if(|_, e| !std::mem::take(e.marked.get_mut()));
            for (key, entry) in evicted {
                self.bytes -= entry_size(&key, entry.value.as_ref());
                self.len -= 1;
                if entry.dirty {
                    spill((key, entry.value, entry.epoch));
                }
            }
        }
    }

    /// Marks every dirty entry clean, handing each over (to be written).
    pub(super) fn clean(&mut self, mut spill: impl FnMut(Spilled)) {
        for table in &mut self.tables {
            if !table.values().any(|e| e.dirty) {
                continue;
            }
            for (key, entry) in Arc::make_mut(table).iter_mut() {
                if entry.dirty {
                    entry.dirty = false;
                    spill((key.clone(), entry.value.clone(), entry.epoch));
                }
            }
        }
    }

    /// The tables as they are now, for a capture: they stay as they are
    /// while it holds them (writes copy a held table first).
    pub(super) fn share(&self) -> Vec<Arc<Table>> {
        self.tables.clone()
    }

    /// Cached entries.
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(group: u16, name: &str) -> Vec<u8> {
        let mut k = group.to_be_bytes().to_vec();
        k.extend_from_slice(name.as_bytes());
        k
    }

    #[test]
    fn bytes_are_inline_when_short_and_rewritten_in_place() {
        let short = Bytes::from_parts(&[b"ab", b"cd"]);
        assert!(matches!(short, Bytes::Inline { .. }));
        assert_eq!(short.as_slice(), b"abcd");
        let long = vec![7u8; INLINE + 1];
        let mut shared = Bytes::new(&long);
        let Bytes::Shared(before) = &shared else {
            panic!("long bytes are shared");
        };
        let before = Arc::as_ptr(before);
        shared.assign(&[&long, b"x"]);
        let Bytes::Shared(after) = &shared else {
            panic!("still shared");
        };
        assert_eq!(Arc::as_ptr(after), before, "rewritten in place");
        // Held elsewhere (by a capture): a new buffer, the old one untouched.
        let held = shared.clone();
        shared.assign(&[b"new"]);
        assert_eq!(shared.as_slice(), b"new");
        assert_eq!(held.len(), INLINE + 2);
    }

    #[test]
    fn a_shared_table_is_copied_on_write_and_the_capture_keeps_its_view() {
        let mut cache = WriteBackCache::new(0..2, 1 << 20);
        cache.write(&key(1, "a"), Some(&[b"1"]), 0).unwrap();
        let captured = cache.share();
        cache.write(&key(1, "a"), Some(&[b"2"]), 1).unwrap();
        cache.write(&key(1, "b"), Some(&[b"3"]), 1).unwrap();
        let held = &captured[1];
        assert_eq!(held.len(), 1);
        assert_eq!(
            held.get(key(1, "a").as_slice()).unwrap().value.as_deref(),
            Some(&b"1"[..])
        );
        let now = cache.get(&key(1, "a")).unwrap().unwrap();
        assert_eq!((now.value.as_deref(), now.epoch), (Some(&b"2"[..]), 1));
        assert!(
            Arc::ptr_eq(&captured[0], &cache.share()[0]),
            "unwritten group not copied"
        );
        assert!(cache.get(&key(2, "a")).is_err(), "a key group not held");
    }

    #[test]
    fn the_clock_evicts_unmarked_entries_first_and_spills_the_dirty() {
        let size = entry_size(&key(0, "k00"), Some(&Bytes::new(b"v")));
        let mut cache = WriteBackCache::new(0..1, 10 * size);
        for i in 0..10 {
            cache
                .fill(&key(0, &format!("k{i:02}")), Some(b"v"), 0)
                .unwrap();
        }
        // Every entry is marked: the first turn of the hand takes the marks,
        // the second evicts what nothing used meanwhile.
        cache.limit = 0;
        cache.evict(|_| panic!("only clean entries were cached"));
        assert_eq!(cache.len(), 0);
        cache.limit = 10 * size;
        for i in 0..10 {
            cache
                .fill(&key(0, &format!("k{i:02}")), Some(b"v"), 0)
                .unwrap();
        }
        for table in &mut cache.tables {
            for e in Arc::make_mut(table).values_mut() {
                *e.marked.get_mut() = false;
            }
        }
        cache.get(&key(0, "k01")).unwrap();
        cache.write(&key(0, "k02"), Some(&[b"w"]), 4).unwrap();
        cache.fill(&key(0, "k10"), Some(b"v"), 0).unwrap();
        let mut spilled = Vec::new();
        cache.evict(|s| spilled.push(s));
        assert!(!cache.over_limit());
        assert!(cache.get(&key(0, "k01")).unwrap().is_some(), "read: kept");
        assert!(
            cache.get(&key(0, "k02")).unwrap().is_some(),
            "written: kept"
        );
        assert!(cache.get(&key(0, "k10")).unwrap().is_some(), "new: kept");
        assert!(
            cache.get(&key(0, "k05")).unwrap().is_none(),
            "unused: evicted"
        );
        assert!(spilled.is_empty(), "the evicted were clean");
        cache.clean(|s| spilled.push(s));
        assert_eq!(spilled.len(), 1);
        assert_eq!(
            (spilled[0].0.as_slice(), spilled[0].2),
            (key(0, "k02").as_slice(), 4)
        );
    }
}
