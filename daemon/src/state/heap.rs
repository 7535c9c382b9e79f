//! The heap backend: keyed state in memory, one hash table per key group.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;

use hashbrown::{Equivalent, HashMap};

use weir_codec::state::put_list;

use super::layout::{self, decode_list, parse_key, unstamp};
use super::snapshot::{SnapshotError, SnapshotWriter};
use super::{Address, KeyedBackend, MapEntries, Stamped, StateCapture, StateError, StateKind};

/// A stored slot's key: state id and record key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SlotKey {
    state: u32,
    key: Box<[u8]>,
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

/// Keyed state in memory for the key groups one instance owns.
#[derive(Debug)]
pub struct HeapBackend {
    first_group: u32,
    groups: Vec<HashMap<SlotKey, Slot>>,
    /// Next key group `expire` sweeps.
    sweep: usize,
}

impl HeapBackend {
    /// Empty state for `key_groups`.
    pub fn new(key_groups: Range<u32>) -> Self {
        Self {
            first_group: key_groups.start,
            groups: key_groups.map(|_| HashMap::new()).collect(),
            sweep: 0,
        }
    }

    fn group(&mut self, key_group: u16) -> Result<&mut HashMap<SlotKey, Slot>, StateError> {
        let index = u32::from(key_group).checked_sub(self.first_group);
        index
            .and_then(|i| self.groups.get_mut(i as usize))
            .ok_or_else(|| {
                StateError::Invalid(format!("key group {key_group} is not held by this backend"))
            })
    }

    fn slot(&mut self, at: Address<'_>) -> Result<Option<&mut Slot>, StateError> {
        Ok(self.group(at.key_group)?.get_mut(&SlotRef {
            state: at.state,
            key: at.key,
        }))
    }

    fn put(&mut self, at: Address<'_>, slot: Slot) -> Result<(), StateError> {
        let group = self.group(at.key_group)?;
        match group.get_mut(&SlotRef {
            state: at.state,
            key: at.key,
        }) {
            Some(existing) => *existing = slot,
            None => {
                group.insert(
                    SlotKey {
                        state: at.state,
                        key: at.key.into(),
                    },
                    slot,
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
        if !matches!(group.get(&probe), Some(Slot::Map(_))) {
            group.insert(
                SlotKey {
                    state: at.state,
                    key: at.key.into(),
                },
                Slot::Map(BTreeMap::new()),
            );
        }
        match group
            .get_mut(&probe)
            .ok_or_else(|| StateError::Invalid("map vanished".into()))?
        {
            Slot::Map(m) => Ok(m),
            _ => Err(StateError::Invalid("not a map".into())),
        }
    }
}

impl KeyedBackend for HeapBackend {
    fn value(&mut self, at: Address<'_>) -> Result<Option<Stamped<Cow<'_, [u8]>>>, StateError> {
        Ok(match self.slot(at)? {
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
        if let Some(Slot::Value(v)) = self.slot(at)? {
            // Reuse the allocation: the hot path of a counter.
            v.item.clear();
            v.item.extend_from_slice(value);
            v.written_at = written_at;
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
        Ok(match self.slot(at)? {
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
        Ok(match self.slot(at)? {
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
        if let Some(Slot::Map(m)) = group.get_mut(&probe) {
            m.remove(map_key);
            if m.is_empty() {
                group.remove(&probe);
            }
        }
        Ok(())
    }

    fn map_entries(&mut self, at: Address<'_>) -> Result<MapEntries, StateError> {
        Ok(match self.slot(at)? {
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
        self.groups[self.sweep].retain(|key, slot| match slot {
            Slot::Value(v) => !expired(key.state, v.written_at),
            Slot::List(l) => !expired(key.state, l.written_at),
            Slot::Map(m) => {
                m.retain(|_, v| !expired(key.state, v.written_at));
                !m.is_empty()
            }
        });
        Ok(())
    }

    fn capture(&mut self) -> Result<Box<dyn StateCapture>, StateError> {
        // Serialised here, in one pass, so the tables can change again at once;
        // only the file writing happens on the writer's thread.
        let mut buf = Vec::new();
        let mut payload = Vec::new();
        for (i, group) in self.groups.iter().enumerate() {
            // Key groups are below max_parallelism, at most 2^16.
            let key_group = (self.first_group + i as u32) as u16;
            for (slot_key, slot) in group {
                let at = Address {
                    key_group,
                    state: slot_key.state,
                    key: &slot_key.key,
                };
                match slot {
                    Slot::Value(v) => layout::push_item(&mut buf, at, None, v.written_at, &v.item),
                    Slot::List(l) => {
                        payload.clear();
                        put_list(&mut payload, l.item.iter().map(Vec::as_slice));
                        layout::push_item(&mut buf, at, None, l.written_at, &payload);
                    }
                    Slot::Map(m) => {
                        for (mk, v) in m {
                            layout::push_item(&mut buf, at, Some(mk), v.written_at, &v.item);
                        }
                    }
                }
            }
        }
        Ok(Box::new(HeapCapture(buf)))
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
            (StateKind::Map, Some(mk)) => {
                self.map_mut(at)?.insert(
                    mk.to_vec(),
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

/// The heap's items at a barrier, already serialised.
struct HeapCapture(Vec<u8>);

impl StateCapture for HeapCapture {
    fn write(self: Box<Self>, out: &mut SnapshotWriter) -> Result<(), SnapshotError> {
        for item in layout::items(&self.0) {
            let (key, value) = item?;
            out.item(key, value)?;
        }
        Ok(())
    }
}
