//! The host imports, behind one small surface: the real ones on wasm32, an
//! in-memory stub elsewhere so operator logic runs under a native `cargo test`.

/// Severity of a message written with [`crate::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something looks wrong but processing goes on.
    Warn,
    /// Something failed.
    Error,
}

/// Kinds of keyed state, as the host knows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateKind {
    Value,
    List,
    Map,
}

pub(crate) use imp::*;

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::{Level, StateKind};
    use crate::__private::bindings::weir::operator::keyed_state::{self, StateKind as Kind};
    use crate::__private::bindings::weir::operator::metrics::{self, MetricKind as HostKind};
    use crate::__private::bindings::weir::operator::{host, types};
    use crate::metrics::MetricKind;

    pub(crate) fn register_metric(name: &str, kind: MetricKind, help: &str) -> Result<u32, String> {
        let kind = match kind {
            MetricKind::Counter => HostKind::Counter,
            MetricKind::Gauge => HostKind::Gauge,
        };
        metrics::register_metric(name, kind, help)
    }

    pub(crate) fn update_metrics(updates: &[(u32, i64)]) {
        metrics::update(updates);
    }

    pub(crate) fn register_state(
        name: &str,
        kind: StateKind,
        ttl_ms: Option<u64>,
        version: u32,
    ) -> Result<u32, String> {
        let kind = match kind {
            StateKind::Value => Kind::Value,
            StateKind::List => Kind::List,
            StateKind::Map => Kind::Map,
        };
        keyed_state::register_state(name, kind, keyed_state::StateOptions { ttl_ms, version })
    }

    pub(crate) fn state_read(ops: &[u8]) -> Vec<u8> {
        keyed_state::read(ops)
    }

    pub(crate) fn state_write(ops: &[u8]) {
        keyed_state::write(ops);
    }

    pub(crate) fn emit(output: u32, batch: &[u8]) {
        host::emit(output, batch);
    }

    pub(crate) fn log(level: Level, message: &str) {
        let level = match level {
            Level::Trace => types::Level::Trace,
            Level::Debug => types::Level::Debug,
            Level::Info => types::Level::Info,
            Level::Warn => types::Level::Warn,
            Level::Error => types::Level::Error,
        };
        host::log(level, message);
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use std::cell::RefCell;
    use std::collections::{BTreeMap, BTreeSet, HashMap};

    use weir_codec::state::{
        Cursor, ReadOp, TimeDomain, WriteOp, put_entries, put_list, put_option,
    };

    use super::{Level, StateKind};
    use crate::metrics::MetricKind;

    /// A state id and a record key.
    type Slot = (u32, Vec<u8>);

    /// A value and the processing time (ms) it was written at.
    type Stamped<T> = (T, u64);

    /// The stand-in host's keyed state: plain maps, with TTL expiry as the
    /// host does it (an entry written at `t` is gone from `t + ttl` on, by a
    /// processing-time clock the test moves).
    #[derive(Default, Clone)]
    pub(crate) struct Store {
        names: HashMap<String, (u32, StateKind)>,
        ttls: HashMap<u32, u64>,
        /// Declared versions, by state id.
        versions: HashMap<u32, u32>,
        /// Versions as the checkpoint restored from saved them.
        saved_versions: HashMap<u32, u32>,
        /// States declared at another version than saved: (id, saved version).
        migrations: Vec<(u32, u32)>,
        now: u64,
        values: HashMap<Slot, Stamped<Vec<u8>>>,
        lists: HashMap<Slot, Stamped<Vec<Vec<u8>>>>,
        maps: HashMap<Slot, BTreeMap<Vec<u8>, Stamped<Vec<u8>>>>,
        /// Pending timers: domain, time, key.
        timers: BTreeSet<(TimeDomain, i64, Vec<u8>)>,
    }

    impl Store {
        /// Declares a state, as a checkpoint built by hand records it.
        pub(crate) fn declare(
            &mut self,
            name: &str,
            kind: StateKind,
            version: u32,
        ) -> Result<u32, String> {
            let next = self.names.len() as u32;
            let (id, existing) = *self.names.entry(name.to_owned()).or_insert((next, kind));
            if existing != kind {
                return Err(format!(
                    "state `{name}` was given before as {existing:?} state"
                ));
            }
            match self.versions.insert(id, version) {
                Some(before) if before != version => Err(format!(
                    "state `{name}` was given before at version {before}, not {version}"
                )),
                _ => Ok(id),
            }
        }

        pub(crate) fn put_value(&mut self, state: u32, key: &[u8], value: Vec<u8>) {
            self.values.insert((state, key.to_vec()), (value, self.now));
        }

        pub(crate) fn push_list(&mut self, state: u32, key: &[u8], items: Vec<Vec<u8>>) {
            let list = self.lists.entry((state, key.to_vec())).or_default();
            list.0.extend(items);
            list.1 = self.now;
        }

        pub(crate) fn put_map(&mut self, state: u32, key: &[u8], map_key: Vec<u8>, value: Vec<u8>) {
            let now = self.now;
            self.maps
                .entry((state, key.to_vec()))
                .or_default()
                .insert(map_key, (value, now));
        }

        fn live(&self, state: u32, written_at: u64) -> bool {
            self.ttls
                .get(&state)
                .is_none_or(|ttl| self.now.saturating_sub(written_at) < *ttl)
        }
    }

    thread_local! {
        static EMITTED: RefCell<Vec<(u32, Vec<u8>)>> = const { RefCell::new(Vec::new()) };
        static LOGS: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
        static STORE: RefCell<Store> = RefCell::new(Store::default());
        /// Declared metrics: name, kind, value.
        static METRICS: RefCell<Vec<(String, MetricKind, i64)>> = const { RefCell::new(Vec::new()) };
    }

    /// Forgets all state (and metrics) kept on this thread.
    pub(crate) fn reset_state() {
        STORE.with_borrow_mut(|s| *s = Store::default());
        METRICS.with_borrow_mut(Vec::clear);
    }

    pub(crate) fn register_metric(
        name: &str,
        kind: MetricKind,
        _help: &str,
    ) -> Result<u32, String> {
        weir_codec::metrics::check_name(name)?;
        METRICS.with_borrow_mut(|m| {
            if let Some(i) = m.iter().position(|(n, ..)| n == name) {
                return if m[i].1 == kind {
                    Ok(i as u32)
                } else {
                    Err(format!("`{name}` is declared already as another kind"))
                };
            }
            if m.len() >= weir_codec::metrics::MAX_METRICS {
                return Err(format!(
                    "a plugin may declare at most {} metrics",
                    weir_codec::metrics::MAX_METRICS
                ));
            }
            m.push((name.to_owned(), kind, 0));
            Ok(m.len() as u32 - 1)
        })
    }

    pub(crate) fn update_metrics(updates: &[(u32, i64)]) {
        METRICS.with_borrow_mut(|m| {
            for &(id, value) in updates {
                let metric = &mut m[id as usize];
                match metric.1 {
                    MetricKind::Counter => metric.2 += value,
                    MetricKind::Gauge => metric.2 = value,
                }
            }
        });
    }

    /// A declared metric's value.
    pub(crate) fn metric(name: &str) -> Option<i64> {
        METRICS.with_borrow(|m| m.iter().find(|(n, ..)| n == name).map(|(.., v)| *v))
    }

    /// The stand-in host's processing time, in ms.
    pub(crate) fn processing_time() -> u64 {
        STORE.with_borrow(|s| s.now)
    }

    /// Takes up to `max` timers of `domain` due at `time`, in time order
    /// (then key order), as the host fires them.
    pub(crate) fn pop_due_timers(domain: TimeDomain, time: i64, max: usize) -> Vec<(i64, Vec<u8>)> {
        STORE.with_borrow_mut(|s| {
            let due: Vec<_> = s
                .timers
                .iter()
                .filter(|(d, t, _)| *d == domain && *t <= time)
                .take(max)
                .cloned()
                .collect();
            for timer in &due {
                s.timers.remove(timer);
            }
            due.into_iter().map(|(_, t, k)| (t, k)).collect()
        })
    }

    /// Timers pending on the stand-in host.
    pub(crate) fn pending_timers() -> usize {
        STORE.with_borrow(|s| s.timers.len())
    }

    /// Moves the stand-in host's processing time on by `ms`.
    pub(crate) fn advance_processing_time(ms: u64) {
        STORE.with_borrow_mut(|s| s.now = s.now.saturating_add(ms));
    }

    pub(crate) fn register_state(
        name: &str,
        kind: StateKind,
        ttl_ms: Option<u64>,
        version: u32,
    ) -> Result<u32, String> {
        STORE.with_borrow_mut(|s| {
            let next = s.names.len() as u32;
            let (id, existing) = *s.names.entry(name.to_owned()).or_insert((next, kind));
            if existing != kind {
                return Err(format!("it was declared before as {existing:?} state"));
            }
            match ttl_ms {
                Some(ttl) => s.ttls.insert(id, ttl),
                None => s.ttls.remove(&id),
            };
            s.versions.insert(id, version);
            s.migrations.retain(|(i, _)| *i != id);
            if let Some(&from) = s.saved_versions.get(&id)
                && from != version
            {
                s.migrations.push((id, from));
            }
            Ok(id)
        })
    }

    /// The keyed state kept on this thread, as a checkpoint would save it.
    pub(crate) fn saved_store() -> Store {
        STORE.with_borrow(|s| Store {
            saved_versions: HashMap::new(),
            migrations: Vec::new(),
            ..s.clone()
        })
    }

    /// Replaces the keyed state kept on this thread with a saved one, as a
    /// restore does: what `init` then declares at another version is to be
    /// migrated.
    pub(crate) fn load_store(saved: Store) {
        STORE.with_borrow_mut(|s| {
            *s = Store {
                saved_versions: saved.versions.clone(),
                migrations: Vec::new(),
                ..saved
            };
        });
    }

    /// The states declared at another version than saved: (id, saved version).
    pub(crate) fn take_migrations() -> Vec<(u32, u32)> {
        STORE.with_borrow_mut(|s| std::mem::take(&mut s.migrations))
    }

    /// Passes every value of state `state` through `convert` (as the host
    /// does, but in one chunk) and stores the result in place.
    pub(crate) fn migrate_stored(
        state: u32,
        convert: impl FnOnce(&[u8]) -> Result<Vec<u8>, String>,
    ) -> Result<(), String> {
        STORE.with_borrow_mut(|s| {
            let mut values: Vec<&[u8]> = Vec::new();
            let mut slots: Vec<&Slot> = s.values.keys().filter(|k| k.0 == state).collect();
            slots.sort();
            values.extend(slots.iter().map(|k| s.values[*k].0.as_slice()));
            let mut lists: Vec<&Slot> = s.lists.keys().filter(|k| k.0 == state).collect();
            lists.sort();
            for k in &lists {
                values.extend(s.lists[*k].0.iter().map(Vec::as_slice));
            }
            let mut maps: Vec<&Slot> = s.maps.keys().filter(|k| k.0 == state).collect();
            maps.sort();
            for k in &maps {
                values.extend(s.maps[*k].values().map(|(v, _)| v.as_slice()));
            }
            let count = values.len();
            let mut encoded = Vec::new();
            put_list(&mut encoded, values.into_iter());
            let result = convert(&encoded)?;
            let converted = Cursor::new(&result)
                .list()
                .map_err(|e| format!("the migration returned a malformed list: {e}"))?;
            if converted.len() != count {
                return Err(format!(
                    "the migration returned {} values for {count}",
                    converted.len()
                ));
            }
            let mut converted = converted.into_iter().map(<[u8]>::to_vec);
            let (slots, lists, maps): (Vec<Slot>, Vec<Slot>, Vec<Slot>) = (
                slots.into_iter().cloned().collect(),
                lists.into_iter().cloned().collect(),
                maps.into_iter().cloned().collect(),
            );
            for k in slots {
                if let (Some(v), Some(new)) = (s.values.get_mut(&k), converted.next()) {
                    v.0 = new;
                }
            }
            for k in lists {
                if let Some(l) = s.lists.get_mut(&k) {
                    for item in &mut l.0 {
                        *item = converted.next().unwrap_or_default();
                    }
                }
            }
            for k in maps {
                if let Some(m) = s.maps.get_mut(&k) {
                    for (v, _) in m.values_mut() {
                        *v = converted.next().unwrap_or_default();
                    }
                }
            }
            Ok(())
        })
    }

    pub(crate) fn state_read(ops: &[u8]) -> Vec<u8> {
        STORE.with_borrow(|s| {
            let mut out = Vec::new();
            let mut cur = Cursor::new(ops);
            let count = cur.op_count().expect("well-formed state ops");
            for _ in 0..count {
                match cur.read_op().expect("well-formed state op") {
                    ReadOp::ValueGet { state, key } => put_option(
                        &mut out,
                        s.values
                            .get(&(state, key.to_vec()))
                            .filter(|(_, at)| s.live(state, *at))
                            .map(|(v, _)| v.as_slice()),
                    ),
                    ReadOp::ListGet { state, key } => {
                        let items = s
                            .lists
                            .get(&(state, key.to_vec()))
                            .filter(|(_, at)| s.live(state, *at))
                            .map(|(l, _)| l.as_slice())
                            .unwrap_or_default();
                        put_list(&mut out, items.iter().map(Vec::as_slice));
                    }
                    ReadOp::MapGet {
                        state,
                        key,
                        map_key,
                    } => put_option(
                        &mut out,
                        s.maps
                            .get(&(state, key.to_vec()))
                            .and_then(|m| m.get(map_key))
                            .filter(|(_, at)| s.live(state, *at))
                            .map(|(v, _)| v.as_slice()),
                    ),
                    ReadOp::MapEntries { state, key } => {
                        let empty = BTreeMap::new();
                        let map = s.maps.get(&(state, key.to_vec())).unwrap_or(&empty);
                        let live: Vec<(&[u8], &[u8])> = map
                            .iter()
                            .filter(|(_, (_, at))| s.live(state, *at))
                            .map(|(k, (v, _))| (k.as_slice(), v.as_slice()))
                            .collect();
                        put_entries(&mut out, live.into_iter());
                    }
                }
            }
            out
        })
    }

    pub(crate) fn state_write(ops: &[u8]) {
        STORE.with_borrow_mut(|s| {
            let now = s.now;
            let mut cur = Cursor::new(ops);
            let count = cur.op_count().expect("well-formed state ops");
            for _ in 0..count {
                match cur.write_op().expect("well-formed state op") {
                    WriteOp::ValueSet { state, key, value } => {
                        s.values
                            .insert((state, key.to_vec()), (value.to_vec(), now));
                    }
                    WriteOp::ListAppend { state, key, items } => {
                        let live = s
                            .lists
                            .get(&(state, key.to_vec()))
                            .is_some_and(|(_, at)| s.live(state, *at));
                        let list = s.lists.entry((state, key.to_vec())).or_default();
                        if !live {
                            list.0.clear();
                        }
                        list.0.extend(items.iter().map(|i| i.to_vec()));
                        list.1 = now;
                    }
                    WriteOp::ListReplace { state, key, items } => {
                        s.lists.insert(
                            (state, key.to_vec()),
                            (items.iter().map(|i| i.to_vec()).collect(), now),
                        );
                    }
                    WriteOp::MapPut {
                        state,
                        key,
                        map_key,
                        value,
                    } => {
                        s.maps
                            .entry((state, key.to_vec()))
                            .or_default()
                            .insert(map_key.to_vec(), (value.to_vec(), now));
                    }
                    WriteOp::MapRemove {
                        state,
                        key,
                        map_key,
                    } => {
                        if let Some(m) = s.maps.get_mut(&(state, key.to_vec())) {
                            m.remove(map_key);
                        }
                    }
                    WriteOp::Clear { state, key } => {
                        let k = (state, key.to_vec());
                        s.values.remove(&k);
                        s.lists.remove(&k);
                        s.maps.remove(&k);
                    }
                    WriteOp::TimerRegister { domain, key, time } => {
                        s.timers.insert((domain, time, key.to_vec()));
                    }
                    WriteOp::TimerDelete { domain, key, time } => {
                        s.timers.remove(&(domain, time, key.to_vec()));
                    }
                }
            }
        });
    }

    pub(crate) fn emit(output: u32, batch: &[u8]) {
        EMITTED.with_borrow_mut(|e| e.push((output, batch.to_vec())));
    }

    pub(crate) fn log(level: Level, message: &str) {
        LOGS.with_borrow_mut(|l| l.push((level, message.to_owned())));
    }

    /// Batches emitted on this thread since the last call, by output.
    pub(crate) fn take_emitted() -> Vec<(u32, Vec<u8>)> {
        EMITTED.with_borrow_mut(std::mem::take)
    }

    /// Log lines written on this thread since the last call.
    pub(crate) fn take_logs() -> Vec<(Level, String)> {
        LOGS.with_borrow_mut(std::mem::take)
    }
}
