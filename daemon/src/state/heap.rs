//! The heap backend: keyed state in memory, one hash table per key group.
//!
//! Copy-on-write, as Flink's `CopyOnWriteStateMap`: each key group's table
//! and each slot in it sit behind an `Arc`. A checkpoint's capture clones the
//! table pointers only, so the pause at a barrier is microseconds whatever
//! the state size; the writer thread serialises the captured tables. A write
//! to a key group still held by a capture first copies that table (pointer
//! copies), and a write to a slot still held copies that slot; once the
//! capture is written and dropped, writes are in place again.
//!
//! The backend keeps its previous capture's tables, so the next capture can
//! tell what changed without any bookkeeping on the write path: a key group
//! whose table is the same `Arc` is unchanged, and within a changed one a slot
//! whose `Arc` is the same was not written (any write to a slot a capture
//! holds replaces or copies it). That is what an incremental checkpoint
//! writes.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use hashbrown::{Equivalent, HashMap};

use weir_codec::state::put_list;

use super::layout::{self, decode_list, parse_key, unstamp};
use super::snapshot::{SnapshotError, SnapshotWriter};
use super::{
    Address, CaptureScope, KeyedBackend, MapEntries, Stamped, StateCapture, StateError, StateKind,
};

/// A stored slot's key: state id and record key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SlotKey {
    state: u32,
    key: Arc<[u8]>,
}

/// A borrowed [`SlotKey`], so lookups need no allocation. Hashes the same way:
/// the state, then the key as a slice.
#[derive(Hash)]
struct SlotRef<'a> {
    state: u32,
    key: &'a [u8],
}

impl Equivalent<SlotKey> for SlotRef<'_> {
    fn equivalent(&self, other: &SlotKey) -> bool {
        self.state == other.state && *self.key == *other.key
    }
}

#[derive(Debug, Clone)]
enum Slot {
    Value(Stamped<Vec<u8>>),
    List(Stamped<Vec<Vec<u8>>>),
    Map(BTreeMap<Vec<u8>, Stamped<Vec<u8>>>),
}

/// One key group's slots.
type Table = HashMap<SlotKey, Arc<Slot>>;

/// Keyed state in memory for the key groups one instance owns.
#[derive(Debug)]
pub struct HeapBackend {
    first_group: u32,
    groups: Vec<Arc<Table>>,
    /// The tables of the last capture, to find what the next one changed.
    previous: Option<Vec<Arc<Table>>>,
    /// Next key group `expire` sweeps.
    sweep: usize,
}

impl HeapBackend {
    /// Empty state for `key_groups`.
    pub fn new(key_groups: Range<u32>) -> Self {
        Self {
            first_group: key_groups.start,
            groups: key_groups.map(|_| Arc::new(HashMap::new())).collect(),
            previous: None,
            sweep: 0,
        }
    }

    fn index(&self, key_group: u16) -> Result<usize, StateError> {
        u32::from(key_group)
            .checked_sub(self.first_group)
            .map(|i| i as usize)
            .filter(|i| *i < self.groups.len())
            .ok_or_else(|| {
                StateError::Invalid(format!("key group {key_group} is not held by this backend"))
            })
    }

    /// A key group's table, for reading.
    fn group_ref(&self, key_group: u16) -> Result<&Table, StateError> {
        Ok(&self.groups[self.index(key_group)?])
    }

    /// A key group's table, for writing: copied first if a capture holds it.
    fn group(&mut self, key_group: u16) -> Result<&mut Table, StateError> {
        let i = self.index(key_group)?;
        Ok(Arc::make_mut(&mut self.groups[i]))
    }

    fn slot_ref(&self, at: Address<'_>) -> Result<Option<&Slot>, StateError> {
        Ok(self
            .group_ref(at.key_group)?
            .get(&SlotRef {
                state: at.state,
                key: at.key,
            })
            .map(Arc::as_ref))
    }

    /// A slot, for writing: copied first if a capture holds it.
    fn slot(&mut self, at: Address<'_>) -> Result<Option<&mut Slot>, StateError> {
        Ok(self
            .group(at.key_group)?
            .get_mut(&SlotRef {
                state: at.state,
                key: at.key,
            })
            .map(Arc::make_mut))
    }

    fn put(&mut self, at: Address<'_>, slot: Slot) -> Result<(), StateError> {
        let group = self.group(at.key_group)?;
        match group.get_mut(&SlotRef {
            state: at.state,
            key: at.key,
        }) {
            Some(existing) => *existing = Arc::new(slot),
            None => {
                group.insert(
                    SlotKey {
                        state: at.state,
                        key: at.key.into(),
                    },
                    Arc::new(slot),
                );
            }
        }
        Ok(())
    }

    fn map_mut(
        &mut self,
        at: Address<'_>,
    ) -> Result<&mut BTreeMap<Vec<u8>, Stamped<Vec<u8>>>, StateError> {
        let group = self.group(at.key_group)?;
        let probe = SlotRef {
            state: at.state,
            key: at.key,
        };
        if !matches!(group.get(&probe).map(Arc::as_ref), Some(Slot::Map(_))) {
            group.insert(
                SlotKey {
                    state: at.state,
                    key: at.key.into(),
                },
                Arc::new(Slot::Map(BTreeMap::new())),
            );
        }
        match group
            .get_mut(&probe)
            .map(Arc::make_mut)
            .ok_or_else(|| StateError::Invalid("map vanished".into()))?
        {
            Slot::Map(m) => Ok(m),
            _ => Err(StateError::Invalid("not a map".into())),
        }
    }
}

impl KeyedBackend for HeapBackend {
    fn value(&mut self, at: Address<'_>) -> Result<Option<Stamped<Cow<'_, [u8]>>>, StateError> {
        Ok(match self.slot_ref(at)? {
            Some(Slot::Value(v)) => Some(Stamped {
                item: Cow::Borrowed(v.item.as_slice()),
                written_at: v.written_at,
            }),
            _ => None,
        })
    }

    fn set_value(
        &mut self,
        at: Address<'_>,
        value: &[u8],
        written_at: u64,
    ) -> Result<(), StateError> {
        let group = self.group(at.key_group)?;
        if let Some(slot) = group.get_mut(&SlotRef {
            state: at.state,
            key: at.key,
        }) {
            match Arc::get_mut(slot) {
                Some(Slot::Value(v)) => {
                    // Reuse the allocation: the hot path of a counter.
                    v.item.clear();
                    v.item.extend_from_slice(value);
                    v.written_at = written_at;
                }
                // A capture holds the old value: a new slot, not a copy of
                // the old one that is then overwritten.
                _ => {
                    *slot = Arc::new(Slot::Value(Stamped {
                        item: value.to_vec(),
                        written_at,
                    }));
                }
            }
            return Ok(());
        }
        self.put(
            at,
            Slot::Value(Stamped {
                item: value.to_vec(),
                written_at,
            }),
        )
    }

    fn list(&mut self, at: Address<'_>) -> Result<Option<Stamped<Vec<Vec<u8>>>>, StateError> {
        Ok(match self.slot_ref(at)? {
            Some(Slot::List(l)) => Some(l.clone()),
            _ => None,
        })
    }

    fn set_list(
        &mut self,
        at: Address<'_>,
        items: Stamped<Vec<Vec<u8>>>,
    ) -> Result<(), StateError> {
        self.put(at, Slot::List(items))
    }

    fn append_list(
        &mut self,
        at: Address<'_>,
        items: Vec<Vec<u8>>,
        now: u64,
    ) -> Result<(), StateError> {
        if let Some(Slot::List(l)) = self.slot(at)? {
            l.item.extend(items);
            l.written_at = now;
            return Ok(());
        }
        self.put(
            at,
            Slot::List(Stamped {
                item: items,
                written_at: now,
            }),
        )
    }

    fn map_get(
        &mut self,
        at: Address<'_>,
        map_key: &[u8],
    ) -> Result<Option<Stamped<Vec<u8>>>, StateError> {
        Ok(match self.slot_ref(at)? {
            Some(Slot::Map(m)) => m.get(map_key).cloned(),
            _ => None,
        })
    }

    fn map_put(
        &mut self,
        at: Address<'_>,
        map_key: &[u8],
        value: Stamped<Vec<u8>>,
    ) -> Result<(), StateError> {
        self.map_mut(at)?.insert(map_key.to_vec(), value);
        Ok(())
    }

    fn map_remove(&mut self, at: Address<'_>, map_key: &[u8]) -> Result<(), StateError> {
        let group = self.group(at.key_group)?;
        let probe = SlotRef {
            state: at.state,
            key: at.key,
        };
        if let Some(Slot::Map(m)) = group.get_mut(&probe).map(Arc::make_mut) {
            m.remove(map_key);
            if m.is_empty() {
                group.remove(&probe);
            }
        }
        Ok(())
    }

    fn map_entries(&mut self, at: Address<'_>) -> Result<MapEntries, StateError> {
        Ok(match self.slot_ref(at)? {
            Some(Slot::Map(m)) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            _ => Vec::new(),
        })
    }

    fn clear(&mut self, at: Address<'_>) -> Result<(), StateError> {
        self.group(at.key_group)?.remove(&SlotRef {
            state: at.state,
            key: at.key,
        });
        Ok(())
    }

    fn expire(&mut self, expired: &dyn Fn(u32, u64) -> bool) -> Result<(), StateError> {
        // One key group per call keeps each call short.
        if self.groups.is_empty() {
            return Ok(());
        }
        self.sweep = (self.sweep + 1) % self.groups.len();
        Arc::make_mut(&mut self.groups[self.sweep]).retain(|key, slot| match slot.as_ref() {
            Slot::Value(v) => !expired(key.state, v.written_at),
            Slot::List(l) => !expired(key.state, l.written_at),
            Slot::Map(m) => {
                if m.values().any(|v| expired(key.state, v.written_at))
                    && let Slot::Map(m) = Arc::make_mut(slot)
                {
                    m.retain(|_, v| !expired(key.state, v.written_at));
                }
                matches!(slot.as_ref(), Slot::Map(m) if !m.is_empty())
            }
        });
        Ok(())
    }

    /// The table pointers serve a full write and a change file alike.
    fn capture(&mut self, _scope: CaptureScope) -> Result<Box<dyn StateCapture>, StateError> {
        let groups = self.groups.clone();
        let since = self.previous.replace(groups.clone());
        Ok(Box::new(HeapCapture {
            first_group: self.first_group,
            groups,
            since,
        }))
    }

    fn load(&mut self, key: &[u8], value: &[u8], kind: StateKind) -> Result<(), StateError> {
        let (at, mk) = parse_key(key)?;
        let (written_at, payload) = unstamp(value)?;
        let bad =
            || StateError::Storage(format!("a stored {kind:?} state item has the wrong shape"));
        match (kind, mk) {
            (StateKind::Value, None) => self.put(
                at,
                Slot::Value(Stamped {
                    item: payload.to_vec(),
                    written_at,
                }),
            ),
            (StateKind::List, None) => self.put(
                at,
                Slot::List(Stamped {
                    item: decode_list(payload)?,
                    written_at,
                }),
            ),
            // An empty map key's entry is stored under the slot's own key.
            (StateKind::Map, mk) => {
                self.map_mut(at)?.insert(
                    mk.unwrap_or_default().to_vec(),
                    Stamped {
                        item: payload.to_vec(),
                        written_at,
                    },
                );
                Ok(())
            }
            _ => Err(bad()),
        }
    }

    fn flush(&mut self) -> Result<(), StateError> {
        Ok(())
    }
}

/// The heap's tables at a barrier, shared with the live backend until it
/// writes to them; serialised on the writer's thread.
struct HeapCapture {
    first_group: u32,
    groups: Vec<Arc<Table>>,
    /// The previous capture's tables, if there was one.
    since: Option<Vec<Arc<Table>>>,
}

/// One key group's items, encoded as a snapshot file lays them out, so they
/// go to the file in one write.
#[derive(Default)]
struct GroupItems {
    buf: Vec<u8>,
    items: u64,
    /// Scratch for encoding a list.
    payload: Vec<u8>,
}

impl GroupItems {
    fn item(&mut self, at: Address<'_>, map_key: Option<&[u8]>, written_at: u64, payload: &[u8]) {
        layout::push_item(&mut self.buf, at, map_key, written_at, payload);
        self.items += 1;
    }

    fn tombstone(&mut self, at: Address<'_>, map_key: Option<&[u8]>) {
        layout::push_tombstone(&mut self.buf, at, map_key);
        self.items += 1;
    }

    /// Appends a slot's items.
    fn slot(&mut self, at: Address<'_>, slot: &Slot) {
        match slot {
            Slot::Value(v) => self.item(at, None, v.written_at, &v.item),
            Slot::List(l) => {
                let mut payload = std::mem::take(&mut self.payload);
                payload.clear();
                put_list(&mut payload, l.item.iter().map(Vec::as_slice));
                self.item(at, None, l.written_at, &payload);
                self.payload = payload;
            }
            Slot::Map(m) => {
                for (mk, v) in m {
                    self.item(at, Some(mk), v.written_at, &v.item);
                }
            }
        }
    }

    /// Writes the items out as `key_group`'s, and empties the buffer.
    fn drain(&mut self, key_group: u16, out: &mut SnapshotWriter) -> Result<(), SnapshotError> {
        out.encoded_items(key_group, self.items, &self.buf)?;
        self.buf.clear();
        self.items = 0;
        Ok(())
    }
}

fn address(key_group: u16, slot_key: &SlotKey) -> Address<'_> {
    Address {
        key_group,
        state: slot_key.state,
        key: &slot_key.key,
    }
}

impl StateCapture for HeapCapture {
    fn has_changes(&self) -> bool {
        self.since
            .as_ref()
            .is_some_and(|s| s.len() == self.groups.len())
    }

    fn write(self: Box<Self>, out: &mut SnapshotWriter) -> Result<(), SnapshotError> {
        // One key group at a time: memory bounded by the largest group.
        let mut items = GroupItems::default();
        for (i, group) in self.groups.iter().enumerate() {
            // Key groups are below max_parallelism, at most 2^16.
            let key_group = (self.first_group + i as u32) as u16;
            for (slot_key, slot) in group.iter() {
                items.slot(address(key_group, slot_key), slot);
            }
            items.drain(key_group, out)?;
        }
        Ok(())
    }

    fn write_changes(self: Box<Self>, out: &mut SnapshotWriter) -> Result<(), SnapshotError> {
        let since = match &self.since {
            Some(since) if since.len() == self.groups.len() => since,
            _ => {
                return Err(SnapshotError::State(StateError::Invalid(
                    "no previous capture to write changes against".into(),
                )));
            }
        };
        let mut items = GroupItems::default();
        for (i, (group, before)) in self.groups.iter().zip(since).enumerate() {
            if Arc::ptr_eq(group, before) {
                continue;
            }
            let key_group = (self.first_group + i as u32) as u16;
            for (slot_key, slot) in group.iter() {
                let old = before.get(slot_key);
                if old.is_some_and(|old| Arc::ptr_eq(old, slot)) {
                    continue;
                }
                let at = address(key_group, slot_key);
                match (old.map(Arc::as_ref), slot.as_ref()) {
                    (Some(Slot::Map(old)), Slot::Map(new)) => {
                        for (mk, v) in new {
                            if old.get(mk) != Some(v) {
                                items.item(at, Some(mk), v.written_at, &v.item);
                            }
                        }
                        for mk in old.keys().filter(|mk| !new.contains_key(*mk)) {
                            items.tombstone(at, Some(mk));
                        }
                    }
                    _ => items.slot(at, slot),
                }
            }
            for (slot_key, old) in before.iter() {
                if group.contains_key(slot_key) {
                    continue;
                }
                let at = address(key_group, slot_key);
                match old.as_ref() {
                    Slot::Map(m) => {
                        for mk in m.keys() {
                            items.tombstone(at, Some(mk));
                        }
                    }
                    _ => items.tombstone(at, None),
                }
            }
            items.drain(key_group, out)?;
        }
        Ok(())
    }
}
