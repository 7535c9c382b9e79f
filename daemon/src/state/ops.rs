//! Runs the state operations a plugin sends (`wit/STATE_ENCODING.md`) against
//! one instance's backend: checks every handle, kind and key group, stamps
//! writes with the processing time, and hides items past their TTL.

use std::collections::HashMap;
use std::ops::Range;

use weir_codec::state::{Cursor, ReadOp, TimeDomain, WriteOp, put_entries, put_list, put_option};

use super::layout::{decode_list, parse_key, unstamp};
use super::registry::Migration;
use super::snapshot::{SnapshotError, SnapshotReader};
use super::timers::{self, Fired, TIMER_STATE, TimerQueue};
use super::{
    Address, CaptureScope, KeyedBackend, Registry, Stamped, StateCapture, StateError, StateKind,
    StateSpec,
};
use crate::partition::key_group;

/// How often (ms of processing time) a backend is asked to drop expired items.
const EXPIRE_EVERY_MS: u64 = 100;

/// The keyed state of one operator instance, as its plugin sees it.
pub struct InstanceState {
    backend: Box<dyn KeyedBackend>,
    registry: Registry,
    /// Declared states, indexed by id.
    specs: Vec<Option<StateSpec>>,
    key_groups: Range<u32>,
    max_parallelism: u32,
    last_expire: u64,
    /// States declared at another version than the restored checkpoint saved.
    migrations: Vec<Migration>,
    /// The id of [`TIMER_STATE`], once a timer exists.
    timer_state: Option<u32>,
    timers: TimerQueue,
    /// Timers registered (new ones) and fired so far.
    timer_counts: TimerCounts,
}

/// How many timers an instance registered and fired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimerCounts {
    /// New timers (a registration of a pending one is not counted).
    pub registered: u64,
    /// Timers fired.
    pub fired: u64,
    /// Timers pending now.
    pub pending: u64,
}

impl std::fmt::Debug for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceState")
            .field("key_groups", &self.key_groups)
            .finish_non_exhaustive()
    }
}

fn invalid(message: impl Into<String>) -> StateError {
    StateError::Invalid(message.into())
}

impl InstanceState {
    /// The state of the instance that owns `key_groups`, kept in `backend`.
    pub fn new(
        backend: Box<dyn KeyedBackend>,
        registry: Registry,
        key_groups: Range<u32>,
        max_parallelism: u32,
    ) -> Self {
        Self {
            backend,
            registry,
            specs: Vec::new(),
            key_groups,
            max_parallelism,
            last_expire: 0,
            migrations: Vec::new(),
            timer_state: None,
            timers: TimerQueue::default(),
            timer_counts: TimerCounts::default(),
        }
    }

    /// State with no key groups, to stand in while the real one is lent out
    /// (during a migration, when the plugin has no business with state).
    pub fn placeholder() -> Self {
        Self::new(
            Box::new(super::heap::HeapBackend::new(0..0)),
            Registry::default(),
            0..0,
            1,
        )
    }

    /// Declares a state (from the plugin's `init`).
    pub fn register(
        &mut self,
        name: &str,
        kind: StateKind,
        ttl_ms: Option<u64>,
        version: u32,
    ) -> Result<u32, String> {
        if name.starts_with("weir.") {
            return Err(format!(
                "state names starting with `weir.` are the host's own (`{name}`)"
            ));
        }
        self.declare(name, kind, ttl_ms, version)
    }

    fn declare(
        &mut self,
        name: &str,
        kind: StateKind,
        ttl_ms: Option<u64>,
        version: u32,
    ) -> Result<u32, String> {
        let spec = self.registry.register(name, kind, ttl_ms, version)?;
        let index = spec.id as usize;
        if self.specs.len() <= index {
            self.specs.resize(index + 1, None);
        }
        self.specs[index] = Some(spec);
        self.migrations.retain(|m| m.spec.id != spec.id);
        self.migrations.extend(self.registry.migration(spec));
        Ok(spec.id)
    }

    /// Takes the states `init` declared at another version than their saved
    /// values have: each must go through [`InstanceState::migrate`].
    pub fn take_migrations(&mut self) -> Vec<Migration> {
        std::mem::take(&mut self.migrations)
    }

    /// Passes every value of `migration`'s state that this instance holds
    /// through `convert`, in chunks of about `chunk_bytes`, and stores what
    /// it returns in place, with the old write times (a migration is not a
    /// write, so TTLs run on). `convert` takes and returns a chunk of values
    /// as a `list` (`wit/STATE_ENCODING.md`): a value state's values, a list
    /// state's elements, a map state's values. Returns how many values it
    /// converted.
    pub fn migrate<E: From<StateError>>(
        &mut self,
        migration: Migration,
        chunk_bytes: usize,
        mut convert: impl FnMut(&[u8]) -> Result<Vec<u8>, E>,
    ) -> Result<u64, E> {
        let kind = migration.spec.kind;
        let mut converted = 0;
        for group in self.key_groups.clone() {
            // Key groups are below max_parallelism, itself at most u16::MAX + 1.
            let items = self.backend.state_items(group as u16, migration.spec.id)?;
            let mut decoded = Vec::with_capacity(items.len());
            for (key, stored) in &items {
                let (written_at, payload) = unstamp(stored)?;
                let values = match kind {
                    StateKind::List => decode_list(payload)?,
                    StateKind::Value | StateKind::Map => vec![payload.to_vec()],
                };
                decoded.push((key.as_slice(), written_at, values));
            }
            let mut rest = decoded.as_slice();
            while !rest.is_empty() {
                let mut take = 0;
                let mut bytes = 0;
                while take < rest.len() && (take == 0 || bytes < chunk_bytes) {
                    bytes += rest[take].2.iter().map(|v| v.len() + 4).sum::<usize>();
                    take += 1;
                }
                let (chunk, after) = rest.split_at(take);
                rest = after;
                let values: Vec<&[u8]> = chunk
                    .iter()
                    .flat_map(|(_, _, v)| v.iter().map(Vec::as_slice))
                    .collect();
                let mut encoded = Vec::with_capacity(bytes + 4);
                put_list(&mut encoded, values.iter().copied());
                let result = convert(&encoded)?;
                let new = Cursor::new(&result).list().map_err(|e| {
                    invalid(format!(
                        "the plugin's migration returned a malformed list: {e}"
                    ))
                })?;
                if new.len() != values.len() {
                    return Err(invalid(format!(
                        "the plugin's migration returned {} values for {}",
                        new.len(),
                        values.len()
                    ))
                    .into());
                }
                let mut new = new.into_iter();
                for (key, written_at, old) in chunk {
                    let (at, map_key) = parse_key(key)?;
                    let mut next = || new.next().map(<[u8]>::to_vec).unwrap_or_default();
                    match kind {
                        StateKind::Value => self.backend.set_value(at, &next(), *written_at)?,
                        StateKind::List => self.backend.set_list(
                            at,
                            Stamped {
                                item: old.iter().map(|_| next()).collect(),
                                written_at: *written_at,
                            },
                        )?,
                        StateKind::Map => self.backend.map_put(
                            at,
                            map_key.unwrap_or_default(),
                            Stamped {
                                item: next(),
                                written_at: *written_at,
                            },
                        )?,
                    }
                }
                converted += values.len() as u64;
            }
        }
        self.backend.flush()?;
        Ok(converted)
    }

    fn address<'a>(
        &self,
        state: u32,
        key: &'a [u8],
        kind: StateKind,
    ) -> Result<(Address<'a>, StateSpec), StateError> {
        let spec = self
            .spec(state)
            .ok_or_else(|| invalid(format!("state handle {state} was never registered")))?;
        if spec.kind != kind {
            return Err(invalid(format!(
                "state handle {state} is {:?} state, used as {kind:?} state",
                spec.kind
            )));
        }
        let group = key_group(key, self.max_parallelism);
        if !self.key_groups.contains(&group) {
            return Err(invalid(format!(
                "key {:?} is in key group {group}, which this instance does not own ({:?}); \
                 keyed state needs its input partitioned by key (`partition = \"hash\"`)",
                String::from_utf8_lossy(key),
                self.key_groups
            )));
        }
        // Key groups are below max_parallelism, itself at most u16::MAX + 1.
        Ok((
            Address {
                key_group: group as u16,
                state,
                key,
            },
            spec,
        ))
    }

    fn address_any<'a>(
        &self,
        state: u32,
        key: &'a [u8],
    ) -> Result<(Address<'a>, StateKind), StateError> {
        let kind = self.spec(state).map_or(StateKind::Value, |s| s.kind);
        self.address(state, key, kind).map(|(a, _)| (a, kind))
    }

    fn spec(&self, state: u32) -> Option<StateSpec> {
        self.specs.get(state as usize).copied().flatten()
    }

    /// Runs encoded read operations; returns their encoded results, which
    /// may not grow past `max_bytes` (the plugin's memory limit: it could not
    /// take more in), so a plugin cannot make the host build a result of any
    /// size by asking for one large value many times.
    pub fn read(&mut self, ops: &[u8], now: u64, max_bytes: usize) -> Result<Vec<u8>, StateError> {
        let bad = |e| invalid(format!("malformed state read: {e}"));
        let mut cursor = Cursor::new(ops);
        let count = cursor.op_count().map_err(bad)?;
        // Every operation takes a few bytes of `ops`: the count cannot make
        // the host reserve more than the request is worth.
        let mut out = Vec::with_capacity((count as usize).min(ops.len()).saturating_mul(16));
        // Consecutive value reads (a batch's prefetch is all of them) go to
        // the backend together.
        let mut values: Vec<(Address<'_>, StateSpec)> = Vec::new();
        for _ in 0..count {
            if out.len() > max_bytes {
                return Err(too_large(max_bytes));
            }
            let op = cursor.read_op().map_err(bad)?;
            if let ReadOp::ValueGet { state, key } = op {
                values.push(self.address(state, key, StateKind::Value)?);
                continue;
            }
            self.read_values(&mut values, now, max_bytes, &mut out)?;
            match op {
                ReadOp::ValueGet { .. } => {}
                ReadOp::ListGet { state, key } => {
                    let (at, spec) = self.address(state, key, StateKind::List)?;
                    let list = self
                        .backend
                        .list(at)?
                        .filter(|l| live(&spec, l.written_at, now));
                    let items = list.map(|l| l.item).unwrap_or_default();
                    put_list(&mut out, items.iter().map(Vec::as_slice));
                }
                ReadOp::MapGet {
                    state,
                    key,
                    map_key,
                } => {
                    let (at, spec) = self.address(state, key, StateKind::Map)?;
                    let value = self
                        .backend
                        .map_get(at, map_key)?
                        .filter(|v| live(&spec, v.written_at, now));
                    put_option(&mut out, value.as_ref().map(|v| v.item.as_slice()));
                }
                ReadOp::MapEntries { state, key } => {
                    let (at, spec) = self.address(state, key, StateKind::Map)?;
                    let entries: Vec<_> = self
                        .backend
                        .map_entries(at)?
                        .into_iter()
                        .filter(|(_, v)| live(&spec, v.written_at, now))
                        .collect();
                    put_entries(
                        &mut out,
                        entries
                            .iter()
                            .map(|(k, v)| (k.as_slice(), v.item.as_slice())),
                    );
                }
            }
        }
        self.read_values(&mut values, now, max_bytes, &mut out)?;
        if out.len() > max_bytes {
            return Err(too_large(max_bytes));
        }
        if !cursor.is_empty() {
            return Err(invalid(
                "malformed state read: bytes after the last operation",
            ));
        }
        Ok(out)
    }

    /// Answers the value reads gathered in `values` (and empties it).
    fn read_values(
        &mut self,
        values: &mut Vec<(Address<'_>, StateSpec)>,
        now: u64,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), StateError> {
        if values.is_empty() {
            return Ok(());
        }
        let at: Vec<Address<'_>> = values.iter().map(|(at, _)| *at).collect();
        self.backend.values(&at, &mut |i, value| {
            if out.len() > max_bytes {
                return Err(too_large(max_bytes));
            }
            let value = value.filter(|v| live(&values[i].1, v.written_at, now));
            put_option(out, value.map(|v| v.item));
            Ok(())
        })?;
        values.clear();
        Ok(())
    }

    /// Applies encoded write operations, in order.
    pub fn write(&mut self, ops: &[u8], now: u64) -> Result<(), StateError> {
        let bad = |e| invalid(format!("malformed state write: {e}"));
        let mut cursor = Cursor::new(ops);
        let count = cursor.op_count().map_err(bad)?;
        // Timer changes reach the stored timers after the other operations:
        // nothing in a write reads them, and together they can be warmed.
        let mut timer_edits: Vec<TimerEdit<'_>> = Vec::new();
        for _ in 0..count {
            match cursor.write_op().map_err(bad)? {
                WriteOp::ValueSet { state, key, value } => {
                    let (at, _) = self.address(state, key, StateKind::Value)?;
                    self.backend.set_value(at, value, now)?;
                }
                WriteOp::ListAppend { state, key, items } => {
                    let (at, spec) = self.address(state, key, StateKind::List)?;
                    let items = items.iter().map(|i| i.to_vec()).collect();
                    // An expired list is gone: appending starts a new one.
                    if spec.ttl_ms.is_some()
                        && self
                            .backend
                            .list(at)?
                            .is_some_and(|l| !live(&spec, l.written_at, now))
                    {
                        self.backend.set_list(
                            at,
                            Stamped {
                                item: items,
                                written_at: now,
                            },
                        )?;
                    } else {
                        self.backend.append_list(at, items, now)?;
                    }
                }
                WriteOp::ListReplace { state, key, items } => {
                    let (at, _) = self.address(state, key, StateKind::List)?;
                    let items = items.iter().map(|i| i.to_vec()).collect();
                    self.backend.set_list(
                        at,
                        Stamped {
                            item: items,
                            written_at: now,
                        },
                    )?;
                }
                WriteOp::MapPut {
                    state,
                    key,
                    map_key,
                    value,
                } => {
                    let (at, _) = self.address(state, key, StateKind::Map)?;
                    self.backend.map_put(
                        at,
                        map_key,
                        Stamped {
                            item: value.to_vec(),
                            written_at: now,
                        },
                    )?;
                }
                WriteOp::MapRemove {
                    state,
                    key,
                    map_key,
                } => {
                    let (at, _) = self.address(state, key, StateKind::Map)?;
                    self.backend.map_remove(at, map_key)?;
                }
                WriteOp::Clear { state, key } => {
                    let (at, kind) = self.address_any(state, key)?;
                    self.backend.clear(at, kind)?;
                }
                WriteOp::TimerRegister { domain, key, time } => {
                    self.timer_state()?;
                    timer_edits.push((key, domain, time, true));
                }
                WriteOp::TimerDelete { domain, key, time } => {
                    self.timer_state()?;
                    timer_edits.push((key, domain, time, false));
                }
            }
        }
        if !cursor.is_empty() {
            return Err(invalid(
                "malformed state write: bytes after the last operation",
            ));
        }
        let Some(state) = self.timer_state.filter(|_| !timer_edits.is_empty()) else {
            return Ok(());
        };
        self.warm_timers(state, timer_edits.iter().map(|(key, ..)| *key))?;
        for (key, domain, time, register) in timer_edits {
            let entry = timers::entry_key(domain, time);
            // The stored timers say whether the timer is new (or was
            // pending); the queue only hears of what changed.
            if register {
                if self.edit_timers(state, key, Some(now), |e| timers::add_entry(e, &entry))? {
                    self.timers.push(domain, key, time);
                    self.timer_counts.registered += 1;
                }
            } else if self
                .edit_timers(state, key, Some(now), |e| timers::remove_entry(e, &entry))?
            {
                self.timers.deleted();
            }
        }
        if self.timers.needs_compaction() {
            self.compact_timers(state)?;
        }
        Ok(())
    }

    /// Drops the queue's entries of deleted timers, asking the stored timers
    /// which are still pending.
    fn compact_timers(&mut self, state: u32) -> Result<(), StateError> {
        let (backend, groups, max_parallelism) = (
            self.backend.as_mut(),
            &self.key_groups,
            self.max_parallelism,
        );
        self.timers.compact(|domain, key, time| {
            let group = key_group(key, max_parallelism);
            if !groups.contains(&group) {
                return Ok(false);
            }
            let at = Address {
                // Key groups are below max_parallelism, itself at most u16::MAX + 1.
                key_group: group as u16,
                state,
                key,
            };
            let entry = timers::entry_key(domain, time);
            Ok(backend.value(at)?.is_some_and(|v| {
                v.item
                    .chunks(timers::ENTRY_LEN)
                    .any(|stored| stored == entry.as_slice())
            }))
        })
    }

    /// Hints to the backend that the stored timers of `keys` are next.
    fn warm_timers<'k>(
        &mut self,
        state: u32,
        keys: impl Iterator<Item = &'k [u8]>,
    ) -> Result<(), StateError> {
        let mut at = Vec::with_capacity(keys.size_hint().0);
        for key in keys {
            at.push(self.address(state, key, StateKind::Value)?.0);
        }
        self.backend.warm(&at)
    }

    /// Changes the stored timers of `key` (in timer state `state`), stamped
    /// `now` or, without it, as they were (timers have no TTL: the stamp
    /// only says when); a key left with none has its value cleared. `edit`
    /// says whether it changed anything; only then is the value written.
    fn edit_timers(
        &mut self,
        state: u32,
        key: &[u8],
        now: Option<u64>,
        edit: impl FnOnce(&mut Vec<u8>) -> bool,
    ) -> Result<bool, StateError> {
        let (at, _) = self.address(state, key, StateKind::Value)?;
        let (mut entries, written_at) = match self.backend.value(at)? {
            Some(v) => (v.item.into_owned(), v.written_at),
            None => (Vec::new(), 0),
        };
        if !edit(&mut entries) {
            return Ok(false);
        }
        if entries.is_empty() {
            self.backend.clear(at, StateKind::Value)?;
        } else {
            self.backend
                .set_value(at, &entries, now.unwrap_or(written_at))?;
        }
        Ok(true)
    }

    /// The id of the state that keeps timers, declared with the first one.
    fn timer_state(&mut self) -> Result<u32, StateError> {
        if let Some(id) = self.timer_state {
            return Ok(id);
        }
        let id = self
            .declare(TIMER_STATE, StateKind::Value, None, 0)
            .map_err(StateError::Storage)?;
        self.timer_state = Some(id);
        Ok(id)
    }

    /// Rebuilds the timer queue from the timers restored into this
    /// instance's key groups; call it once every snapshot is loaded.
    pub fn load_timers(&mut self) -> Result<(), StateError> {
        if !self.registry.specs().contains_key(TIMER_STATE) {
            return Ok(());
        }
        let id = self.timer_state()?;
        self.timers = timers::load(self.backend.as_mut(), id, self.key_groups.clone())?;
        Ok(())
    }

    /// Takes up to `max` timers of `domain` due at `now`, in time order, and
    /// removes them from the state: they fire once.
    pub fn fire_timers(
        &mut self,
        domain: TimeDomain,
        now: i64,
        max: usize,
    ) -> Result<Vec<Fired>, StateError> {
        let (Some(state), Some(next)) = (self.timer_state, self.timers.next(domain)) else {
            return Ok(Vec::new());
        };
        if next > now {
            return Ok(Vec::new());
        }
        let mut fired = Vec::new();
        // The queue's entries of deleted timers are skipped: the stored
        // timers no longer hold them.
        while fired.len() < max {
            let due = self.timers.pop_due(domain, now, max - fired.len());
            if due.is_empty() {
                break;
            }
            self.warm_timers(state, due.iter().map(|(_, key)| key.as_slice()))?;
            let (before, popped) = (fired.len(), due.len());
            for (time, key) in due {
                let entry = timers::entry_key(domain, time);
                if self.edit_timers(state, &key, None, |e| timers::remove_entry(e, &entry))? {
                    fired.push((time, key));
                }
            }
            let pending = fired.len() - before;
            self.timers.settle(pending, popped - pending);
        }
        self.timer_counts.fired += fired.len() as u64;
        Ok(fired)
    }

    /// When the next timer of `domain` is due, if one is pending.
    pub fn next_timer(&self, domain: TimeDomain) -> Option<i64> {
        self.timers.next(domain)
    }

    /// Timers registered, fired and pending.
    pub fn timer_counts(&self) -> TimerCounts {
        TimerCounts {
            pending: self.timers.len() as u64,
            ..self.timer_counts
        }
    }

    /// Reads the backend's cache answered and those it did not.
    pub fn cache_counts(&self) -> super::CacheCounts {
        self.backend.cache_counts()
    }

    /// Called after each batch: now and then, drops expired items.
    pub fn after_batch(&mut self, now: u64) -> Result<(), StateError> {
        if now.saturating_sub(self.last_expire) < EXPIRE_EVERY_MS
            || self.specs.iter().flatten().all(|s| s.ttl_ms.is_none())
        {
            return Ok(());
        }
        self.expire(now)
    }

    /// Asks the backend to drop some items that have expired by `now`.
    pub fn expire(&mut self, now: u64) -> Result<(), StateError> {
        self.last_expire = now;
        let ttls: HashMap<u32, u64> = self
            .specs
            .iter()
            .flatten()
            .filter_map(|s| Some((s.id, s.ttl_ms?)))
            .collect();
        self.backend.expire(&|state, written_at| {
            ttls.get(&state)
                .is_some_and(|ttl| now.saturating_sub(written_at) >= *ttl)
        })
    }

    /// Captures the keyed state for a checkpoint (see [`KeyedBackend::capture`]).
    pub fn capture(&mut self, scope: CaptureScope) -> Result<Box<dyn StateCapture>, StateError> {
        self.backend.capture(scope)
    }

    /// Loads this instance's key groups from a snapshot file (of any
    /// instance, at any parallelism); the registry must already hold the
    /// states the snapshot was taken with.
    pub fn restore(&mut self, snapshot: &SnapshotReader) -> Result<(), SnapshotError> {
        let registry = self.registry.clone();
        let backend = self.backend.as_mut();
        snapshot.read_groups(&self.key_groups, &mut |key, value| {
            let (at, map_key) = parse_key(key)?;
            let kind = registry.kind_of(at.state).ok_or_else(|| {
                StateError::Storage(format!(
                    "the snapshot holds state id {} that its checkpoint does not declare",
                    at.state
                ))
            })?;
            if !value.is_empty() {
                return backend.load(key, value, kind);
            }
            // A change file's tombstone: the item with this key was removed.
            match kind {
                StateKind::Map => backend.map_remove(at, map_key.unwrap_or_default()),
                StateKind::Value | StateKind::List => backend.clear(at, kind),
            }
        })?;
        Ok(self.backend.flush()?)
    }

    /// The operator's state registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The backend, for flushing and snapshots.
    pub fn backend_mut(&mut self) -> &mut dyn KeyedBackend {
        self.backend.as_mut()
    }
}

/// A timer change a write made: key, domain, time, and whether registered
/// (or deleted).
type TimerEdit<'a> = (&'a [u8], TimeDomain, i64, bool);

/// A state read's result grew past what the plugin can take in.
fn too_large(max_bytes: usize) -> StateError {
    invalid(format!(
        "one state read returned more than {}, the operator's memory_limit: read fewer or \
         smaller values per batch, or raise memory_limit",
        crate::graph::bounds::show_bytes(max_bytes as u64)
    ))
}

fn live(spec: &StateSpec, written_at: u64, now: u64) -> bool {
    spec.ttl_ms
        .is_none_or(|ttl| now.saturating_sub(written_at) < ttl)
}
