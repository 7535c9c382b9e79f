//! The per-batch state cache between the typed handles and the host.
//!
//! Before a batch: the distinct keys of its records are indexed, and the value
//! states of all of them are read from the host in one call. While processing,
//! every read and write goes through the cache, so each record sees the latest
//! state of its key. After the batch: all changes go to the host in one call.
//! If the batch fails, its changes are dropped with its output.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap;

use weir_codec::BatchReader;
use weir_codec::state::{Cursor, OpWriter, ReadOp, TimeDomain, WriteOp};

use crate::Error;
use crate::sys;

/// Replaces a list or map wholesale.
pub(crate) enum Slot {
    List(Vec<Vec<u8>>),
    Map(BTreeMap<Vec<u8>, Vec<u8>>),
}

type SlotKey = (u32, u32);

#[derive(Default)]
struct ListSlot {
    /// The whole list, once read from the host (or replaced).
    loaded: Option<Vec<Vec<u8>>>,
    /// Appended while the list was not loaded.
    appended: Vec<Vec<u8>>,
    /// `loaded` must be written back whole.
    replace: bool,
}

#[derive(Default)]
struct MapSlot {
    /// Entries known so far: `None` means known absent.
    entries: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Map keys changed in this batch.
    dirty: BTreeSet<Vec<u8>>,
    /// The map was cleared in this batch (before the dirty changes).
    cleared: bool,
    /// Every entry is in `entries`.
    complete: bool,
}

/// A value state's value for one key of the batch.
#[derive(Default)]
struct ValueSlot {
    value: Vec<u8>,
    present: bool,
    dirty: bool,
}

#[derive(Default)]
struct Cache {
    registered: bool,
    /// Value states, all read before each batch; a state's position here is
    /// its column in `values`.
    prefetch: Vec<u32>,
    /// The batch's distinct keys, concatenated, and where each one is.
    keys: Vec<u8>,
    key_ranges: Vec<(u32, u32)>,
    /// Index into `key_ranges` of each record's key.
    record_keys: Vec<u32>,
    current: Option<u32>,
    /// Row per distinct key, column per value state: no hashing on the hot path.
    values: Vec<ValueSlot>,
    lists: FxHashMap<SlotKey, ListSlot>,
    maps: FxHashMap<SlotKey, MapSlot>,
    /// Timer registrations (true) and deletions of the batch, in order, by
    /// key index.
    timers: Vec<(u32, TimeDomain, i64, bool)>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
    /// Whether any state was declared: stateless operators skip the per-record
    /// bookkeeping (a cheap, const-initialised flag instead of the cache).
    static KEYED: Cell<bool> = const { Cell::new(false) };
}

/// Whether the operator declared any keyed state.
pub(crate) fn is_keyed() -> bool {
    KEYED.get()
}

const NO_KEY: &str = "keyed state is only available while processing a record";

pub(crate) fn prefetch_value_state(id: u32) {
    KEYED.set(true);
    CACHE.with_borrow_mut(|c| {
        c.registered = true;
        c.prefetch.push(id);
    });
}

pub(crate) fn note_registered() {
    KEYED.set(true);
    CACHE.with_borrow_mut(|c| c.registered = true);
}

/// Registers (`register`) or deletes a timer of the current key; it goes to
/// the host with the batch's state changes.
pub(crate) fn timer_op(domain: TimeDomain, time: i64, register: bool) -> Result<(), Error> {
    CACHE.with_borrow_mut(|c| {
        let k = c.current.ok_or_else(|| {
            Error::new("timers are only available while processing a record or a timer")
        })?;
        c.timers.push((k, domain, time, register));
        Ok(())
    })
}

/// Indexes the batch's keys and prefetches its value states.
pub(crate) fn begin_batch(reader: &BatchReader<'_>) -> Result<(), String> {
    CACHE.with_borrow_mut(|c| {
        c.clear_batch();
        if !c.registered {
            return Ok(());
        }
        let mut index: FxHashMap<&[u8], u32> = FxHashMap::default();
        index.reserve(reader.len() as usize);
        for record in reader.iter() {
            let record = record.map_err(|e| format!("the host sent a malformed batch: {e}"))?;
            let next = index.len() as u32;
            let i = *index.entry(record.key).or_insert(next);
            if i == next {
                let start = c.keys.len() as u32;
                c.keys.extend_from_slice(record.key);
                c.key_ranges.push((start, c.keys.len() as u32));
            }
            c.record_keys.push(i);
        }
        let columns = c.prefetch.len();
        if columns == 0 || c.key_ranges.is_empty() {
            return Ok(());
        }
        // Per read: code, state, key length, key.
        let mut ops =
            OpWriter::with_capacity(4 + columns * (c.keys.len() + 9 * c.key_ranges.len()));
        for k in 0..c.key_ranges.len() {
            for &state in &c.prefetch {
                ops.read(&ReadOp::ValueGet {
                    state,
                    key: c.key_at(k as u32),
                });
            }
        }
        let result = sys::state_read(&ops.finish());
        let mut cursor = Cursor::new(&result);
        c.values
            .resize_with(c.key_ranges.len() * columns, ValueSlot::default);
        for slot in &mut c.values {
            let value = cursor
                .option()
                .map_err(|e| format!("the host answered a state read badly: {e}"))?;
            slot.value.clear();
            slot.dirty = false;
            slot.present = value.is_some();
            if let Some(v) = value {
                slot.value.extend_from_slice(v);
            }
        }
        Ok(())
    })
}

pub(crate) fn set_current_key(record_index: u32) {
    CACHE.with_borrow_mut(|c| c.current = c.record_keys.get(record_index as usize).copied());
}

/// Writes every change of the batch to the host.
pub(crate) fn end_batch() {
    CACHE.with_borrow_mut(|c| {
        let columns = c.prefetch.len().max(1);
        // Room for every value slot rewritten: code, state, key, value (each
        // with its length); lists and maps grow the buffer as they need.
        let values: usize = c.values.iter().map(|s| s.value.len() + 13).sum();
        let mut ops = OpWriter::with_capacity(4 + columns * c.keys.len() + values);
        for (i, slot) in c.values.iter().enumerate().filter(|(_, s)| s.dirty) {
            let (state, key) = (c.prefetch[i % columns], c.key_at((i / columns) as u32));
            if slot.present {
                ops.write(&WriteOp::ValueSet {
                    state,
                    key,
                    value: &slot.value,
                });
            } else {
                ops.write(&WriteOp::Clear { state, key });
            }
        }
        for (&(state, k), list) in &c.lists {
            let key = c.key_at(k);
            match &list.loaded {
                Some(items) if list.replace => ops.write(&WriteOp::ListReplace {
                    state,
                    key,
                    items: items.iter().map(Vec::as_slice).collect(),
                }),
                _ if !list.appended.is_empty() => ops.write(&WriteOp::ListAppend {
                    state,
                    key,
                    items: list.appended.iter().map(Vec::as_slice).collect(),
                }),
                _ => {}
            }
        }
        for (&(state, k), map) in &c.maps {
            let key = c.key_at(k);
            if map.cleared {
                ops.write(&WriteOp::Clear { state, key });
            }
            for map_key in &map.dirty {
                match map.entries.get(map_key) {
                    Some(Some(value)) => ops.write(&WriteOp::MapPut {
                        state,
                        key,
                        map_key,
                        value,
                    }),
                    _ if !map.cleared => ops.write(&WriteOp::MapRemove {
                        state,
                        key,
                        map_key,
                    }),
                    _ => {}
                }
            }
        }
        for &(k, domain, time, register) in &c.timers {
            let key = c.key_at(k);
            ops.write(&if register {
                WriteOp::TimerRegister { domain, key, time }
            } else {
                WriteOp::TimerDelete { domain, key, time }
            });
        }
        if !ops.is_empty() {
            sys::state_write(&ops.finish());
        }
        c.clear_batch();
    });
}

/// Drops the batch's changes.
pub(crate) fn discard_batch() {
    CACHE.with_borrow_mut(Cache::clear_batch);
}

impl Cache {
    fn clear_batch(&mut self) {
        self.keys.clear();
        self.key_ranges.clear();
        self.record_keys.clear();
        self.current = None;
        // Keep the slots (and their buffers) for the next batch.
        self.values.truncate(0);
        self.lists.clear();
        self.maps.clear();
        self.timers.clear();
    }

    fn key_at(&self, k: u32) -> &[u8] {
        let (start, end) = self.key_ranges[k as usize];
        &self.keys[start as usize..end as usize]
    }

    /// The current key's slot of value state `state`.
    fn value_slot(&mut self, state: u32) -> Result<&mut ValueSlot, Error> {
        let k = self.current.ok_or_else(|| Error::new(NO_KEY))? as usize;
        let column = self
            .prefetch
            .iter()
            .position(|&s| s == state)
            .ok_or_else(|| Error::new(format!("state handle {state} is not a value state")))?;
        let index = k * self.prefetch.len() + column;
        self.values.get_mut(index).ok_or_else(|| Error::new(NO_KEY))
    }

    fn slot(&self, state: u32) -> Result<SlotKey, Error> {
        self.current
            .map(|k| (state, k))
            .ok_or_else(|| Error::new(NO_KEY))
    }

    fn key(&self, slot: SlotKey) -> &[u8] {
        self.key_at(slot.1)
    }
}

/// Runs one read operation against the host.
fn read_one<R>(
    op: ReadOp<'_>,
    parse: impl FnOnce(&mut Cursor<'_>) -> Result<R, weir_codec::DecodeError>,
) -> Result<R, Error> {
    let mut ops = OpWriter::new();
    ops.read(&op);
    let result = sys::state_read(&ops.finish());
    parse(&mut Cursor::new(&result))
        .map_err(|e| Error::new(format!("the host answered a state read badly: {e}")))
}

pub(crate) fn with_value<R>(state: u32, f: impl FnOnce(Option<&[u8]>) -> R) -> Result<R, Error> {
    CACHE.with_borrow_mut(|c| {
        let slot = c.value_slot(state)?;
        Ok(f(slot.present.then_some(slot.value.as_slice())))
    })
}

/// Writes an encoded value into the buffer it is given, and returns it.
pub(crate) type Encoder<'a> = dyn Fn(Vec<u8>) -> Result<Vec<u8>, Error> + 'a;

/// Sets the current key's value: `fill` writes the encoded value into a reused
/// buffer; `None` clears it.
pub(crate) fn write_value(state: u32, fill: Option<&Encoder<'_>>) -> Result<(), Error> {
    CACHE.with_borrow_mut(|c| {
        let slot = c.value_slot(state)?;
        slot.dirty = true;
        match fill {
            Some(fill) => {
                let mut buf = std::mem::take(&mut slot.value);
                buf.clear();
                slot.value = fill(buf)?;
                slot.present = true;
            }
            None => slot.present = false,
        }
        Ok(())
    })
}

pub(crate) fn with_list<R>(state: u32, f: impl FnOnce(&[Vec<u8>]) -> R) -> Result<R, Error> {
    CACHE.with_borrow_mut(|c| {
        let slot = c.slot(state)?;
        let loaded = c.lists.get(&slot).is_some_and(|l| l.loaded.is_some());
        if !loaded {
            let mut items = read_one(
                ReadOp::ListGet {
                    state,
                    key: c.key(slot),
                },
                |cur| {
                    Ok(cur
                        .list()?
                        .into_iter()
                        .map(<[u8]>::to_vec)
                        .collect::<Vec<_>>())
                },
            )?;
            let list = c.lists.entry(slot).or_default();
            // Appends made before the read follow what the host had.
            list.replace = !list.appended.is_empty();
            items.append(&mut list.appended);
            list.loaded = Some(items);
        }
        Ok(f(c
            .lists
            .get(&slot)
            .and_then(|l| l.loaded.as_deref())
            .unwrap_or_default()))
    })
}

pub(crate) fn append_list(state: u32, item: Vec<u8>) -> Result<(), Error> {
    CACHE.with_borrow_mut(|c| {
        let slot = c.slot(state)?;
        let list = c.lists.entry(slot).or_default();
        match &mut list.loaded {
            Some(items) => {
                items.push(item);
                list.replace = true;
            }
            None => list.appended.push(item),
        }
        Ok(())
    })
}

pub(crate) fn update_slot(state: u32, new: Slot) -> Result<(), Error> {
    CACHE.with_borrow_mut(|c| {
        let slot = c.slot(state)?;
        match new {
            Slot::List(items) => {
                c.lists.insert(
                    slot,
                    ListSlot {
                        loaded: Some(items),
                        appended: Vec::new(),
                        replace: true,
                    },
                );
            }
            Slot::Map(entries) => {
                let dirty = entries.keys().cloned().collect();
                let entries = entries.into_iter().map(|(k, v)| (k, Some(v))).collect();
                c.maps.insert(
                    slot,
                    MapSlot {
                        entries,
                        dirty,
                        cleared: true,
                        complete: true,
                    },
                );
            }
        }
        Ok(())
    })
}

pub(crate) fn with_map_entry<R>(
    state: u32,
    map_key: &[u8],
    f: impl FnOnce(Option<&[u8]>) -> R,
) -> Result<R, Error> {
    CACHE.with_borrow_mut(|c| {
        let slot = c.slot(state)?;
        let map = c.maps.entry(slot).or_default();
        if !map.complete && !map.entries.contains_key(map_key) {
            let (start, end) = c.key_ranges[slot.1 as usize];
            let key = &c.keys[start as usize..end as usize];
            let value = read_one(
                ReadOp::MapGet {
                    state,
                    key,
                    map_key,
                },
                |cur| Ok(cur.option()?.map(<[u8]>::to_vec)),
            )?;
            map.entries.insert(map_key.to_vec(), value);
        }
        Ok(f(map.entries.get(map_key).and_then(|v| v.as_deref())))
    })
}

pub(crate) fn write_map_entry(
    state: u32,
    map_key: Vec<u8>,
    value: Option<Vec<u8>>,
) -> Result<(), Error> {
    CACHE.with_borrow_mut(|c| {
        let slot = c.slot(state)?;
        let map = c.maps.entry(slot).or_default();
        map.dirty.insert(map_key.clone());
        map.entries.insert(map_key, value);
        Ok(())
    })
}

pub(crate) fn with_map<R>(
    state: u32,
    f: impl FnOnce(&BTreeMap<&[u8], &[u8]>) -> R,
) -> Result<R, Error> {
    CACHE.with_borrow_mut(|c| {
        let slot = c.slot(state)?;
        let map = c.maps.entry(slot).or_default();
        if !map.complete {
            let (start, end) = c.key_ranges[slot.1 as usize];
            let key = &c.keys[start as usize..end as usize];
            let stored = read_one(ReadOp::MapEntries { state, key }, |cur| {
                Ok(cur
                    .entries()?
                    .into_iter()
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .collect::<Vec<_>>())
            })?;
            for (k, v) in stored {
                // What this batch changed wins over what the host has.
                map.entries.entry(k).or_insert(Some(v));
            }
            map.complete = true;
        }
        let view: BTreeMap<&[u8], &[u8]> = map
            .entries
            .iter()
            .filter_map(|(k, v)| v.as_deref().map(|v| (k.as_slice(), v)))
            .collect();
        Ok(f(&view))
    })
}
