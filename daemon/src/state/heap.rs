//! The heap backend: keyed state in memory, one hash table per key group.
//!
//! Copy-on-write, as Flink's `CopyOnWriteStateMap`: each key group's table
//! sits behind an `Arc`, and so does each slot in it, except a short value
//! (a counter), which the table holds itself: reading it follows no pointer,
//! and copying it costs what copying a pointer would. A checkpoint's capture
//! clones the table pointers only, so the pause at a barrier is microseconds
//! whatever the state size; the writer thread serialises the captured tables.
//! A write to a key group still held by a capture first copies that table
//! (pointer and short-value copies), and a write to a slot still held copies
//! that slot; once the capture is written and dropped, writes are in place
//! again.
//!
//! For incremental checkpoints each slot in a table carries the capture
//! interval it was last written in, next to its pointer, so the writer finds
//! the changed slots by scanning the tables without following a pointer or
//! looking anything up, and a key group whose table is still the previous
//! capture's `Arc` is skipped whole. Removals are noted per key group; only a
//! group with removals is compared with the previous capture's table (which
//! the backend keeps) to find the keys that are gone, as is a changed map
//! with the previous version of itself.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use hashbrown::{Equivalent, HashMap};
use smallvec::SmallVec;

use weir_codec::state::put_list;

use super::layout::{self, decode_list, parse_key, same_key, unstamp};
use super::snapshot::{SnapshotError, SnapshotWriter};
use super::{
    Address, CaptureScope, FoundValue, KeyValues, KeyedBackend, MapEntries, Stamped, StateCapture,
    StateError, StateKind,
};

/// A record key, inline when short (most are: a word, an id, a 16-byte
/// UUID), so comparing one in a lookup follows no pointer.
type InlineKey = SmallVec<[u8; 16]>;

/// The longest value state's value kept in the table itself (a counter,
/// a timestamp, a small sum, a window's pane): no allocation, and no pointer
/// to follow on a read. Longer ones are shared behind an `Arc` like lists
/// and maps.
const SMALL_VALUE: usize = 14;

/// A stored slot's key: state id and record key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SlotKey {
    state: u32,
    key: InlineKey,
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
        self.state == other.state && same_key(self.key, &other.key)
    }
}

/// A slot's contents, when shared: a table copied for a capture copies the
/// pointer, and a write to a slot a capture holds copies the slot.
#[derive(Debug, Clone)]
enum Slot {
    Value(Stamped<Vec<u8>>),
    List(Stamped<Vec<Vec<u8>>>),
    Map(BTreeMap<Vec<u8>, Stamped<Vec<u8>>>),
}

/// A short value, in the table itself. Copying it costs what copying an
/// `Arc` would, so tables stay cheap to copy on write.
#[derive(Debug, Clone, Copy)]
struct SmallValue {
    written_at: u64,
    /// The length plus one: never zero, so [`Body`] needs no tag of its own.
    len_plus_one: std::num::NonZeroU8,
    bytes: [u8; SMALL_VALUE],
}

impl SmallValue {
    fn new(value: &[u8], written_at: u64) -> Option<Self> {
        let mut bytes = [0; SMALL_VALUE];
        bytes.get_mut(..value.len())?.copy_from_slice(value);
        Some(Self {
            written_at,
            // At most SMALL_VALUE + 1, checked above.
            len_plus_one: std::num::NonZeroU8::new(value.len() as u8 + 1)?,
            bytes,
        })
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len_plus_one.get() - 1)]
    }
}

/// What a table holds for a slot.
#[derive(Debug, Clone)]
enum Body {
    Small(SmallValue),
    Shared(Arc<Slot>),
}

/// A slot, borrowed whatever way it is held.
enum View<'a> {
    Value(Stamped<&'a [u8]>),
    List(&'a Stamped<Vec<Vec<u8>>>),
    Map(&'a BTreeMap<Vec<u8>, Stamped<Vec<u8>>>),
}

impl Body {
    fn value(value: &[u8], written_at: u64) -> Self {
        match SmallValue::new(value, written_at) {
            Some(small) => Self::Small(small),
            None => Self::Shared(Arc::new(Slot::Value(Stamped {
                item: value.to_vec(),
                written_at,
            }))),
        }
    }

    fn view(&self) -> View<'_> {
        match self {
            Self::Small(v) => View::Value(Stamped {
                item: v.bytes(),
                written_at: v.written_at,
            }),
            Self::Shared(slot) => match slot.as_ref() {
                Slot::Value(v) => View::Value(Stamped {
                    item: &v.item,
                    written_at: v.written_at,
                }),
                Slot::List(l) => View::List(l),
                Slot::Map(m) => View::Map(m),
            },
        }
    }

    /// A shared slot, for writing: copied first if a capture holds it.
    fn shared_mut(&mut self) -> Option<&mut Slot> {
        match self {
            Self::Small(_) => None,
            Self::Shared(slot) => Some(Arc::make_mut(slot)),
        }
    }
}

/// A slot in a table: the capture interval it was last written in, kept out
/// of the shared slot so a scan for changes reads only the table.
#[derive(Debug, Clone)]
struct Held {
    epoch: u64,
    body: Body,
}

/// One key group's slots.
type Table = HashMap<SlotKey, Held>;

// A slot is one cache line: over a million keys nearly every lookup misses
// the CPU cache, and a slot that straddles two lines misses twice.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<(SlotKey, Held)>() == 64);

/// Keyed state in memory for the key groups one instance owns.
#[derive(Debug)]
pub struct HeapBackend {
    first_group: u32,
    groups: Vec<Arc<Table>>,
    /// The tables of the last capture, to find what the next one changed.
    previous: Option<Vec<Arc<Table>>>,
    /// Captures taken so far: the interval writes now belong to.
    epoch: u64,
    /// Per key group: whether a slot was removed in this interval.
    removed: Vec<bool>,
    /// Next key group `expire` sweeps.
    sweep: usize,
}

impl HeapBackend {
    /// Empty state for `key_groups`.
    pub fn new(key_groups: Range<u32>) -> Self {
        Self {
            first_group: key_groups.start,
            groups: key_groups
                .clone()
                .map(|_| Arc::new(HashMap::new()))
                .collect(),
            previous: None,
            epoch: 0,
            removed: vec![false; key_groups.len()],
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

    fn slot_ref(&self, at: Address<'_>) -> Result<Option<View<'_>>, StateError> {
        Ok(self
            .group_ref(at.key_group)?
            .get(&SlotRef {
                state: at.state,
                key: at.key,
            })
            .map(|held| held.body.view()))
    }

    /// A slot, for writing: copied first if a capture holds it.
    fn slot(&mut self, at: Address<'_>) -> Result<Option<&mut Slot>, StateError> {
        let epoch = self.epoch;
        Ok(self
            .group(at.key_group)?
            .get_mut(&SlotRef {
                state: at.state,
                key: at.key,
            })
            .and_then(|held| {
                held.epoch = epoch;
                held.body.shared_mut()
            }))
    }

    fn put(&mut self, at: Address<'_>, body: Body) -> Result<(), StateError> {
        let held = Held {
            epoch: self.epoch,
            body,
        };
        let group = self.group(at.key_group)?;
        match group.get_mut(&SlotRef {
            state: at.state,
            key: at.key,
        }) {
            Some(existing) => *existing = held,
            None => {
                group.insert(
                    SlotKey {
                        state: at.state,
                        key: InlineKey::from_slice(at.key),
                    },
                    held,
                );
            }
        }
        Ok(())
    }

    /// Notes that a slot of `key_group` was removed in this interval.
    fn note_removal(&mut self, key_group: u16) -> Result<(), StateError> {
        let i = self.index(key_group)?;
        self.removed[i] = true;
        Ok(())
    }

    fn map_mut(
        &mut self,
        at: Address<'_>,
    ) -> Result<&mut BTreeMap<Vec<u8>, Stamped<Vec<u8>>>, StateError> {
        let epoch = self.epoch;
        let group = self.group(at.key_group)?;
        let probe = SlotRef {
            state: at.state,
            key: at.key,
        };
        if !matches!(
            group.get(&probe).map(|held| held.body.view()),
            Some(View::Map(_))
        ) {
            group.insert(
                SlotKey {
                    state: at.state,
                    key: InlineKey::from_slice(at.key),
                },
                Held {
                    epoch,
                    body: Body::Shared(Arc::new(Slot::Map(BTreeMap::new()))),
                },
            );
        }
        let held = group
            .get_mut(&probe)
            .ok_or_else(|| StateError::Invalid("map vanished".into()))?;
        held.epoch = epoch;
        match held.body.shared_mut() {
            Some(Slot::Map(m)) => Ok(m),
            _ => Err(StateError::Invalid("not a map".into())),
        }
    }
}

impl KeyedBackend for HeapBackend {
    fn value(&mut self, at: Address<'_>) -> Result<Option<Stamped<Cow<'_, [u8]>>>, StateError> {
        Ok(match self.slot_ref(at)? {
            Some(View::Value(v)) => Some(Stamped {
                item: Cow::Borrowed(v.item),
                written_at: v.written_at,
            }),
            _ => None,
        })
    }

    fn values(&mut self, at: &[Address<'_>], found: &mut FoundValue<'_>) -> Result<(), StateError> {
        // All the probes first, in a loop short enough that the CPU runs
        // several at once: over a million keys each probe misses the cache,
        // and one at a time they queue behind each other.
        let mut slots = Vec::with_capacity(at.len());
        for at in at {
            slots.push(self.slot_ref(*at)?);
        }
        for (i, slot) in slots.into_iter().enumerate() {
            let value = match slot {
                Some(View::Value(v)) => Some(v),
                _ => None,
            };
            found(i, value)?;
        }
        Ok(())
    }

    fn warm(&mut self, at: &[Address<'_>]) -> Result<(), StateError> {
        for at in at {
            std::hint::black_box(self.slot_ref(*at)?.is_some());
        }
        Ok(())
    }

    fn set_value(
        &mut self,
        at: Address<'_>,
        value: &[u8],
        written_at: u64,
    ) -> Result<(), StateError> {
        let epoch = self.epoch;
        let group = self.group(at.key_group)?;
        if let Some(held) = group.get_mut(&SlotRef {
            state: at.state,
            key: at.key,
        }) {
            held.epoch = epoch;
            // The hot path of a counter: in place, no allocation.
            if let Body::Small(small) = &mut held.body
                && let Some(new) = SmallValue::new(value, written_at)
            {
                *small = new;
                return Ok(());
            }
            match &mut held.body {
                // Reuse the allocation if no capture holds the old value.
                Body::Shared(slot) if matches!(slot.as_ref(), Slot::Value(_)) => {
                    if let Some(Slot::Value(v)) = Arc::get_mut(slot) {
                        v.item.clear();
                        v.item.extend_from_slice(value);
                        v.written_at = written_at;
                        return Ok(());
                    }
                    // A capture holds the old value: a new slot, not a copy
                    // of the old one that is then overwritten.
                    held.body = Body::value(value, written_at);
                }
                _ => held.body = Body::value(value, written_at),
            }
            return Ok(());
        }
        self.put(at, Body::value(value, written_at))
    }

    fn list(&mut self, at: Address<'_>) -> Result<Option<Stamped<Vec<Vec<u8>>>>, StateError> {
        Ok(match self.slot_ref(at)? {
            Some(View::List(l)) => Some(l.clone()),
            _ => None,
        })
    }

    fn set_list(
        &mut self,
        at: Address<'_>,
        items: Stamped<Vec<Vec<u8>>>,
    ) -> Result<(), StateError> {
        self.put(at, Body::Shared(Arc::new(Slot::List(items))))
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
            Body::Shared(Arc::new(Slot::List(Stamped {
                item: items,
                written_at: now,
            }))),
        )
    }

    fn map_get(
        &mut self,
        at: Address<'_>,
        map_key: &[u8],
    ) -> Result<Option<Stamped<Vec<u8>>>, StateError> {
        Ok(match self.slot_ref(at)? {
            Some(View::Map(m)) => m.get(map_key).cloned(),
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
        let epoch = self.epoch;
        let group = self.group(at.key_group)?;
        let probe = SlotRef {
            state: at.state,
            key: at.key,
        };
        let Some(held) = group.get_mut(&probe) else {
            return Ok(());
        };
        if !matches!(held.body.view(), View::Map(m) if m.contains_key(map_key)) {
            return Ok(());
        }
        held.epoch = epoch;
        if let Some(Slot::Map(m)) = held.body.shared_mut() {
            m.remove(map_key);
            if m.is_empty() {
                group.remove(&probe);
                self.note_removal(at.key_group)?;
            }
        }
        Ok(())
    }

    fn map_entries(&mut self, at: Address<'_>) -> Result<MapEntries, StateError> {
        Ok(match self.slot_ref(at)? {
            Some(View::Map(m)) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            _ => Vec::new(),
        })
    }

    fn clear(&mut self, at: Address<'_>, _kind: StateKind) -> Result<(), StateError> {
        let probe = SlotRef {
            state: at.state,
            key: at.key,
        };
        // Only a slot that is there is removed (and copies the table).
        if self.group_ref(at.key_group)?.contains_key(&probe) {
            self.group(at.key_group)?.remove(&probe);
            self.note_removal(at.key_group)?;
        }
        Ok(())
    }

    fn expire(&mut self, expired: &dyn Fn(u32, u64) -> bool) -> Result<(), StateError> {
        // One key group per call keeps each call short.
        if self.groups.is_empty() {
            return Ok(());
        }
        self.sweep = (self.sweep + 1) % self.groups.len();
        let epoch = self.epoch;
        let table = Arc::make_mut(&mut self.groups[self.sweep]);
        let before = table.len();
        table.retain(|key, held| match held.body.view() {
            View::Value(v) => !expired(key.state, v.written_at),
            View::List(l) => !expired(key.state, l.written_at),
            View::Map(m) => {
                if m.values().any(|v| expired(key.state, v.written_at))
                    && let Some(Slot::Map(m)) = held.body.shared_mut()
                {
                    m.retain(|_, v| !expired(key.state, v.written_at));
                    held.epoch = epoch;
                }
                matches!(held.body.view(), View::Map(m) if !m.is_empty())
            }
        });
        if table.len() != before {
            self.removed[self.sweep] = true;
        }
        Ok(())
    }

    /// The table pointers serve a full write and a change file alike.
    fn capture(&mut self, _scope: CaptureScope) -> Result<Box<dyn StateCapture>, StateError> {
        let groups = self.groups.clone();
        let since = self.previous.replace(groups.clone());
        let removed = std::mem::replace(&mut self.removed, vec![false; self.groups.len()]);
        let epoch = self.epoch;
        self.epoch += 1;
        Ok(Box::new(HeapCapture {
            first_group: self.first_group,
            groups,
            since,
            epoch,
            removed,
        }))
    }

    fn state_items(&mut self, key_group: u16, state: u32) -> Result<KeyValues, StateError> {
        let mut items = Vec::new();
        for (slot_key, held) in self.group_ref(key_group)? {
            if slot_key.state != state {
                continue;
            }
            let at = Address {
                key_group,
                state,
                key: &slot_key.key,
            };
            match held.body.view() {
                View::Value(v) => {
                    items.push((layout::slot_key(at), layout::stamp(v.written_at, v.item)))
                }
                View::List(l) => {
                    let mut payload = Vec::new();
                    put_list(&mut payload, l.item.iter().map(Vec::as_slice));
                    items.push((layout::slot_key(at), layout::stamp(l.written_at, &payload)));
                }
                View::Map(m) => items.extend(m.iter().map(|(mk, v)| {
                    (
                        layout::map_key(at, mk),
                        layout::stamp(v.written_at, &v.item),
                    )
                })),
            }
        }
        Ok(items)
    }

    fn load(&mut self, key: &[u8], value: &[u8], kind: StateKind) -> Result<(), StateError> {
        let (at, mk) = parse_key(key)?;
        let (written_at, payload) = unstamp(value)?;
        let bad =
            || StateError::Storage(format!("a stored {kind:?} state item has the wrong shape"));
        match (kind, mk) {
            (StateKind::Value, None) => self.put(at, Body::value(payload, written_at)),
            (StateKind::List, None) => self.put(
                at,
                Body::Shared(Arc::new(Slot::List(Stamped {
                    item: decode_list(payload)?,
                    written_at,
                }))),
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
    /// The interval this capture closes: its slots written since `since`.
    epoch: u64,
    /// Per key group: whether slots were removed since `since`.
    removed: Vec<bool>,
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
    fn slot(&mut self, at: Address<'_>, slot: View<'_>) {
        match slot {
            View::Value(v) => self.item(at, None, v.written_at, v.item),
            View::List(l) => {
                let mut payload = std::mem::take(&mut self.payload);
                payload.clear();
                put_list(&mut payload, l.item.iter().map(Vec::as_slice));
                self.item(at, None, l.written_at, &payload);
                self.payload = payload;
            }
            View::Map(m) => {
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
            for (slot_key, held) in group.iter() {
                items.slot(address(key_group, slot_key), held.body.view());
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
            for (slot_key, held) in group.iter() {
                if held.epoch != self.epoch {
                    continue;
                }
                let at = address(key_group, slot_key);
                // A changed map writes only its changed entries, and
                // tombstones for the removed ones.
                let old = match held.body.view() {
                    View::Map(_) => before.get(slot_key).map(|h| h.body.view()),
                    _ => None,
                };
                match (old, held.body.view()) {
                    (Some(View::Map(old)), View::Map(new)) => {
                        for (mk, v) in new {
                            if old.get(mk) != Some(v) {
                                items.item(at, Some(mk), v.written_at, &v.item);
                            }
                        }
                        for mk in old.keys().filter(|mk| !new.contains_key(*mk)) {
                            items.tombstone(at, Some(mk));
                        }
                    }
                    (_, slot) => items.slot(at, slot),
                }
            }
            if self.removed.get(i).copied().unwrap_or(true) {
                for (slot_key, old) in before.iter() {
                    if group.contains_key(slot_key) {
                        continue;
                    }
                    let at = address(key_group, slot_key);
                    match old.body.view() {
                        View::Map(m) => {
                            for mk in m.keys() {
                                items.tombstone(at, Some(mk));
                            }
                        }
                        _ => items.tombstone(at, None),
                    }
                }
            }
            items.drain(key_group, out)?;
        }
        Ok(())
    }
}
