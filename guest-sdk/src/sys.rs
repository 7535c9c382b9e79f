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
    use crate::__private::bindings::weir::operator::{host, types};

    pub(crate) fn register_state(
        name: &str,
        kind: StateKind,
        ttl_ms: Option<u64>,
    ) -> Result<u32, String> {
        let kind = match kind {
            StateKind::Value => Kind::Value,
            StateKind::List => Kind::List,
            StateKind::Map => Kind::Map,
        };
        keyed_state::register_state(name, kind, ttl_ms)
    }

    pub(crate) fn state_read(ops: &[u8]) -> Vec<u8> {
        keyed_state::read(ops)
    }

    pub(crate) fn state_write(ops: &[u8]) {
        keyed_state::write(ops);
    }

    pub(crate) fn emit(batch: &[u8]) {
        host::emit(batch);
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
    use std::collections::{BTreeMap, HashMap};

    use weir_codec::state::{Cursor, ReadOp, WriteOp, put_entries, put_list, put_option};

    use super::{Level, StateKind};

    /// A state id and a record key.
    type Slot = (u32, Vec<u8>);

    /// The stand-in host's keyed state: plain maps, no TTL expiry.
    #[derive(Default)]
    struct Store {
        names: HashMap<String, (u32, StateKind)>,
        values: HashMap<Slot, Vec<u8>>,
        lists: HashMap<Slot, Vec<Vec<u8>>>,
        maps: HashMap<Slot, BTreeMap<Vec<u8>, Vec<u8>>>,
    }

    thread_local! {
        static EMITTED: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
        static LOGS: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
        static STORE: RefCell<Store> = RefCell::new(Store::default());
    }

    /// Forgets all state kept on this thread.
    pub(crate) fn reset_state() {
        STORE.with_borrow_mut(|s| *s = Store::default());
    }

    pub(crate) fn register_state(
        name: &str,
        kind: StateKind,
        _ttl_ms: Option<u64>,
    ) -> Result<u32, String> {
        STORE.with_borrow_mut(|s| {
            let next = s.names.len() as u32;
            let (id, existing) = *s.names.entry(name.to_owned()).or_insert((next, kind));
            if existing == kind {
                Ok(id)
            } else {
                Err(format!("it was declared before as {existing:?} state"))
            }
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
                        s.values.get(&(state, key.to_vec())).map(Vec::as_slice),
                    ),
                    ReadOp::ListGet { state, key } => {
                        let items = s
                            .lists
                            .get(&(state, key.to_vec()))
                            .map(Vec::as_slice)
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
                            .map(Vec::as_slice),
                    ),
                    ReadOp::MapEntries { state, key } => {
                        let empty = BTreeMap::new();
                        let map = s.maps.get(&(state, key.to_vec())).unwrap_or(&empty);
                        put_entries(
                            &mut out,
                            map.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
                        );
                    }
                }
            }
            out
        })
    }

    pub(crate) fn state_write(ops: &[u8]) {
        STORE.with_borrow_mut(|s| {
            let mut cur = Cursor::new(ops);
            let count = cur.op_count().expect("well-formed state ops");
            for _ in 0..count {
                match cur.write_op().expect("well-formed state op") {
                    WriteOp::ValueSet { state, key, value } => {
                        s.values.insert((state, key.to_vec()), value.to_vec());
                    }
                    WriteOp::ListAppend { state, key, items } => {
                        s.lists
                            .entry((state, key.to_vec()))
                            .or_default()
                            .extend(items.iter().map(|i| i.to_vec()));
                    }
                    WriteOp::ListReplace { state, key, items } => {
                        s.lists.insert(
                            (state, key.to_vec()),
                            items.iter().map(|i| i.to_vec()).collect(),
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
                            .insert(map_key.to_vec(), value.to_vec());
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
                }
            }
        });
    }

    pub(crate) fn emit(batch: &[u8]) {
        EMITTED.with_borrow_mut(|e| e.push(batch.to_vec()));
    }

    pub(crate) fn log(level: Level, message: &str) {
        LOGS.with_borrow_mut(|l| l.push((level, message.to_owned())));
    }

    /// Batches emitted on this thread since the last call.
    pub(crate) fn take_emitted() -> Vec<Vec<u8>> {
        EMITTED.with_borrow_mut(std::mem::take)
    }

    /// Log lines written on this thread since the last call.
    pub(crate) fn take_logs() -> Vec<(Level, String)> {
        LOGS.with_borrow_mut(std::mem::take)
    }
}
