//! One model-based property test for every backend: random sequences of state
//! operations over several keys, key groups and states, through the same
//! encoded-operation path plugins use, with every read compared to a plain
//! in-memory model.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use weir_codec::state::{Cursor, OpWriter, ReadOp, WriteOp};

use super::heap::HeapBackend;
use super::ops::InstanceState;
use super::snapshot::{SnapshotReader, SnapshotWriter};
use super::{Address, CaptureScope, KeyedBackend, Registry, StateCapture, StateError, StateKind};

const MAX_PARALLELISM: u32 = 128;
const TTL_MS: u64 = 50;
/// (name, kind, ttl) of the states under test; their ids are their indices.
const STATES: [(&str, StateKind, Option<u64>); 5] = [
    ("value", StateKind::Value, None),
    ("list", StateKind::List, None),
    ("map", StateKind::Map, None),
    ("value_ttl", StateKind::Value, Some(TTL_MS)),
    ("map_ttl", StateKind::Map, Some(TTL_MS)),
];

#[derive(Debug, Clone)]
enum Op {
    Set(u32, usize, Vec<u8>),
    Get(u32, usize),
    /// Every key of a value state in one read, with a list read among them,
    /// so the backend answers runs of value reads together.
    GetAll(u32),
    Append(usize, Vec<Vec<u8>>),
    Replace(usize, Vec<Vec<u8>>),
    List(usize),
    Put(u32, usize, u8, Vec<u8>),
    Remove(u32, usize, u8),
    MapGet(u32, usize, u8),
    Entries(u32, usize),
    Clear(u32, usize),
    Advance(u64),
    Expire,
    Flush,
    /// Checkpoint: a full snapshot file, or a change file on top of the
    /// files since the last full one when the backend knows its changes.
    Checkpoint,
    /// Checkpoint, and go on from a fresh backend restored from the files.
    Restore,
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..24)
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0usize..8;
    let value_state = prop_oneof![Just(0u32), Just(3u32)];
    let map_state = prop_oneof![Just(2u32), Just(4u32)];
    prop_oneof![
        (value_state.clone(), key.clone(), bytes()).prop_map(|(s, k, v)| Op::Set(s, k, v)),
        (value_state.clone(), key.clone()).prop_map(|(s, k)| Op::Get(s, k)),
        value_state.clone().prop_map(Op::GetAll),
        (key.clone(), prop::collection::vec(bytes(), 0..4)).prop_map(|(k, v)| Op::Append(k, v)),
        (key.clone(), prop::collection::vec(bytes(), 0..4)).prop_map(|(k, v)| Op::Replace(k, v)),
        key.clone().prop_map(Op::List),
        (map_state.clone(), key.clone(), 0u8..5, bytes())
            .prop_map(|(s, k, m, v)| Op::Put(s, k, m, v)),
        (map_state.clone(), key.clone(), 0u8..5).prop_map(|(s, k, m)| Op::Remove(s, k, m)),
        (map_state.clone(), key.clone(), 0u8..5).prop_map(|(s, k, m)| Op::MapGet(s, k, m)),
        (map_state, key.clone()).prop_map(|(s, k)| Op::Entries(s, k)),
        (0u32..5, key).prop_map(|(s, k)| Op::Clear(s, k)),
        (0u64..40).prop_map(Op::Advance),
        Just(Op::Expire),
        Just(Op::Flush),
        Just(Op::Checkpoint),
        Just(Op::Restore),
    ]
}

/// Keys spread over several key groups.
fn key(i: usize) -> Vec<u8> {
    format!("key-{i}").into_bytes()
}

/// Map key to value and write time.
type ModelMap = BTreeMap<Vec<u8>, (Vec<u8>, u64)>;

#[derive(Default)]
struct Model {
    values: HashMap<(u32, usize), (Vec<u8>, u64)>,
    lists: HashMap<usize, Vec<Vec<u8>>>,
    maps: HashMap<(u32, usize), ModelMap>,
}

fn live(state: u32, written_at: u64, now: u64) -> bool {
    STATES[state as usize]
        .2
        .is_none_or(|ttl| now - written_at < ttl)
}

fn read(state: &mut InstanceState, op: ReadOp<'_>, now: u64) -> Vec<u8> {
    let mut w = OpWriter::new();
    w.read(&op);
    state
        .read(&w.finish(), now, usize::MAX)
        .expect("read succeeds")
}

fn write(state: &mut InstanceState, op: WriteOp<'_>, now: u64) {
    let mut w = OpWriter::new();
    w.write(&op);
    state.write(&w.finish(), now).expect("write succeeds");
}

/// A fresh, empty backend owning `key_groups`.
type Fresh<'a> = dyn FnMut(std::ops::Range<u32>) -> Box<dyn KeyedBackend> + 'a;

/// An instance owning every key group, with every state under test declared.
fn instance(backend: Box<dyn KeyedBackend>, registry: &Registry) -> InstanceState {
    instance_of(backend, registry, 0..MAX_PARALLELISM)
}

fn instance_of(
    backend: Box<dyn KeyedBackend>,
    registry: &Registry,
    key_groups: std::ops::Range<u32>,
) -> InstanceState {
    let mut state = InstanceState::new(backend, registry.clone(), key_groups, MAX_PARALLELISM);
    for (id, (name, kind, ttl)) in STATES.iter().enumerate() {
        assert_eq!(
            state.register(name, *kind, *ttl, 0).expect("register"),
            id as u32
        );
    }
    state
}

/// Captures `state` into a snapshot file (in `dir`) and opens it again.
fn snapshot_file(state: &mut InstanceState, dir: &tempfile::TempDir) -> SnapshotReader {
    let path = dir.path().join("keyed");
    let capture = state.capture(CaptureScope::Full).expect("capture");
    let mut out = SnapshotWriter::create(&path).expect("create");
    capture.write(&mut out).expect("write");
    let summary = out.finish().expect("finish");
    SnapshotReader::open(&path, &summary).expect("open")
}

/// Snapshot files of one backend, as an incremental checkpoint keeps them:
/// a full one, then change files.
struct Chain {
    dir: tempfile::TempDir,
    files: Vec<(std::path::PathBuf, super::snapshot::FileSummary)>,
}

impl Chain {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            files: Vec::new(),
        }
    }

    /// Captures `state` and writes its changes if it can, else all of it.
    fn checkpoint(&mut self, state: &mut InstanceState) {
        let scope = if self.files.is_empty() {
            CaptureScope::Full
        } else {
            CaptureScope::Changes
        };
        let capture = state.capture(scope).expect("capture");
        let path = self.dir.path().join(format!("{}", self.files.len()));
        let mut out = SnapshotWriter::create(&path).expect("create");
        if capture.has_changes() && !self.files.is_empty() {
            capture.write_changes(&mut out).expect("write changes");
        } else {
            self.files.clear();
            capture.write(&mut out).expect("write");
        }
        self.files.push((path, out.finish().expect("finish")));
    }

    /// A fresh backend restored from every file, in order.
    fn restore(&self, registry: &Registry, fresh: &mut Fresh<'_>) -> InstanceState {
        let mut restored = instance(fresh(0..MAX_PARALLELISM), registry);
        for (path, summary) in &self.files {
            let reader = SnapshotReader::open(path, summary).expect("open");
            restored.restore(&reader).expect("restore");
        }
        restored
    }
}

fn check(fresh: &mut Fresh<'_>, ops: &[Op]) -> Result<(), TestCaseError> {
    let registry = Registry::default();
    let mut state = instance(fresh(0..MAX_PARALLELISM), &registry);
    let mut model = Model::default();
    let mut chain = Chain::new();
    let mut now = 1_000u64;
    for op in ops {
        match op {
            Op::Set(s, k, v) => {
                write(
                    &mut state,
                    WriteOp::ValueSet {
                        state: *s,
                        key: &key(*k),
                        value: v,
                    },
                    now,
                );
                model.values.insert((*s, *k), (v.clone(), now));
            }
            Op::Get(s, k) => {
                let got = read(
                    &mut state,
                    ReadOp::ValueGet {
                        state: *s,
                        key: &key(*k),
                    },
                    now,
                );
                let want = model
                    .values
                    .get(&(*s, *k))
                    .filter(|(_, t)| live(*s, *t, now))
                    .map(|(v, _)| v.as_slice());
                prop_assert_eq!(
                    Cursor::new(&got).option().expect("option"),
                    want,
                    "get {:?}",
                    op
                );
            }
            Op::GetAll(s) => {
                let keys: Vec<Vec<u8>> = (0..8).map(key).collect();
                let mut w = OpWriter::new();
                for (i, k) in keys.iter().enumerate() {
                    if i == 5 {
                        w.read(&ReadOp::ListGet { state: 1, key: k });
                    }
                    w.read(&ReadOp::ValueGet { state: *s, key: k });
                }
                let got = state
                    .read(&w.finish(), now, usize::MAX)
                    .expect("read succeeds");
                let mut cursor = Cursor::new(&got);
                for k in 0..8 {
                    if k == 5 {
                        let list: Vec<Vec<u8>> = cursor
                            .list()
                            .expect("list")
                            .into_iter()
                            .map(<[u8]>::to_vec)
                            .collect();
                        let want = model.lists.get(&5).cloned().unwrap_or_default();
                        prop_assert_eq!(list, want, "list among {:?}", op);
                    }
                    let want = model
                        .values
                        .get(&(*s, k))
                        .filter(|(_, t)| live(*s, *t, now))
                        .map(|(v, _)| v.as_slice());
                    prop_assert_eq!(
                        cursor.option().expect("option"),
                        want,
                        "key {} of {:?}",
                        k,
                        op
                    );
                }
                prop_assert!(cursor.is_empty(), "bytes after the last answer");
            }
            Op::Append(k, items) => {
                let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
                write(
                    &mut state,
                    WriteOp::ListAppend {
                        state: 1,
                        key: &key(*k),
                        items: refs,
                    },
                    now,
                );
                model
                    .lists
                    .entry(*k)
                    .or_default()
                    .extend(items.iter().cloned());
            }
            Op::Replace(k, items) => {
                let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
                write(
                    &mut state,
                    WriteOp::ListReplace {
                        state: 1,
                        key: &key(*k),
                        items: refs,
                    },
                    now,
                );
                model.lists.insert(*k, items.clone());
            }
            Op::List(k) => {
                let got = read(
                    &mut state,
                    ReadOp::ListGet {
                        state: 1,
                        key: &key(*k),
                    },
                    now,
                );
                let got: Vec<Vec<u8>> = Cursor::new(&got)
                    .list()
                    .expect("list")
                    .into_iter()
                    .map(<[u8]>::to_vec)
                    .collect();
                let want = model.lists.get(k).cloned().unwrap_or_default();
                prop_assert_eq!(got, want, "list {:?}", op);
            }
            Op::Put(s, k, m, v) => {
                write(
                    &mut state,
                    WriteOp::MapPut {
                        state: *s,
                        key: &key(*k),
                        map_key: &[*m],
                        value: v,
                    },
                    now,
                );
                model
                    .maps
                    .entry((*s, *k))
                    .or_default()
                    .insert(vec![*m], (v.clone(), now));
            }
            Op::Remove(s, k, m) => {
                write(
                    &mut state,
                    WriteOp::MapRemove {
                        state: *s,
                        key: &key(*k),
                        map_key: &[*m],
                    },
                    now,
                );
                if let Some(map) = model.maps.get_mut(&(*s, *k)) {
                    map.remove(&vec![*m]);
                }
            }
            Op::MapGet(s, k, m) => {
                let got = read(
                    &mut state,
                    ReadOp::MapGet {
                        state: *s,
                        key: &key(*k),
                        map_key: &[*m],
                    },
                    now,
                );
                let want = model
                    .maps
                    .get(&(*s, *k))
                    .and_then(|map| map.get(&vec![*m]))
                    .filter(|(_, t)| live(*s, *t, now))
                    .map(|(v, _)| v.as_slice());
                prop_assert_eq!(
                    Cursor::new(&got).option().expect("option"),
                    want,
                    "map get {:?}",
                    op
                );
            }
            Op::Entries(s, k) => {
                let got = read(
                    &mut state,
                    ReadOp::MapEntries {
                        state: *s,
                        key: &key(*k),
                    },
                    now,
                );
                let entries: Vec<(Vec<u8>, Vec<u8>)> = Cursor::new(&got)
                    .entries()
                    .expect("entries")
                    .into_iter()
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .collect();
                let want: Vec<(Vec<u8>, Vec<u8>)> = model
                    .maps
                    .get(&(*s, *k))
                    .map(|map| {
                        map.iter()
                            .filter(|(_, (_, t))| live(*s, *t, now))
                            .map(|(mk, (v, _))| (mk.clone(), v.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                prop_assert_eq!(entries, want, "entries {:?}", op);
            }
            Op::Clear(s, k) => {
                write(
                    &mut state,
                    WriteOp::Clear {
                        state: *s,
                        key: &key(*k),
                    },
                    now,
                );
                model.values.remove(&(*s, *k));
                model.maps.remove(&(*s, *k));
                if *s == 1 {
                    model.lists.remove(k);
                }
            }
            Op::Advance(ms) => now += ms,
            Op::Expire => state.expire(now).expect("expire"),
            Op::Flush => state.backend_mut().flush().expect("flush"),
            Op::Checkpoint => chain.checkpoint(&mut state),
            Op::Restore => {
                chain.checkpoint(&mut state);
                state = chain.restore(&registry, fresh);
                chain = Chain::new();
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn heap_backend_matches_the_model(ops in prop::collection::vec(op(), 1..120)) {
        check(&mut |groups| Box::new(HeapBackend::new(groups)), &ops)?;
    }

    #[cfg(feature = "rocksdb")]
    #[test]
    fn rocksdb_backend_matches_the_model(ops in prop::collection::vec(op(), 1..120)) {
        let mut dirs = Vec::new();
        check(&mut |groups| {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = super::rocks::RocksStore::open(dir.path(), small_rocks()).expect("open");
            dirs.push(dir);
            Box::new(store.backend(groups))
        }, &ops)?;
    }

    /// A cache that holds every key: writes rewrite cached values in place,
    /// and an incremental capture finds them in the tables it shares.
    #[cfg(feature = "rocksdb")]
    #[test]
    fn rocksdb_backend_with_a_roomy_cache_matches_the_model(
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let mut dirs = Vec::new();
        check(&mut |groups| {
            let dir = tempfile::tempdir().expect("temp dir");
            let options = super::rocks::RocksOptions { cache: 64 << 20, ..small_rocks() };
            let store = super::rocks::RocksStore::open(dir.path(), options).expect("open");
            dirs.push(dir);
            Box::new(store.backend(groups))
        }, &ops)?;
    }
}

/// A change to timers, or a firing, or a restore, against a model.
#[derive(Debug, Clone)]
enum TimerOp {
    /// Registrations (true) and deletions in one write: (key, domain, time).
    Write(Vec<(bool, usize, bool, i64)>),
    /// Fire one domain up to a time, at most this many.
    Fire(bool, i64, usize),
    Restore,
}

fn timer_op() -> impl Strategy<Value = TimerOp> {
    let change = (any::<bool>(), 0usize..6, any::<bool>(), 0i64..30);
    prop_oneof![
        6 => prop::collection::vec(change, 1..5).prop_map(TimerOp::Write),
        2 => (any::<bool>(), 0i64..40, 1usize..5).prop_map(|(d, t, m)| TimerOp::Fire(d, t, m)),
        1 => Just(TimerOp::Restore),
    ]
}

fn domain_of(event: bool) -> weir_codec::state::TimeDomain {
    if event {
        weir_codec::state::TimeDomain::EventTime
    } else {
        weir_codec::state::TimeDomain::ProcessingTime
    }
}

/// Runs `ops` against an instance and against a set of pending timers:
/// every firing gives due timers in time order, each pending one exactly
/// once, whatever was registered twice or deleted and registered again.
fn check_timers(fresh: &mut Fresh<'_>, ops: &[TimerOp]) -> Result<(), TestCaseError> {
    use std::collections::BTreeSet;
    let registry = Registry::default();
    let mut state = instance(fresh(0..MAX_PARALLELISM), &registry);
    // (domain is event time, time, key)
    let mut model: BTreeSet<(bool, i64, Vec<u8>)> = BTreeSet::new();
    let mut registered = 0;
    for op in ops {
        match op {
            TimerOp::Write(changes) => {
                let keys: Vec<Vec<u8>> = changes.iter().map(|c| key(c.1)).collect();
                let mut w = OpWriter::new();
                for ((register, _, event, time), key) in changes.iter().zip(&keys) {
                    let (domain, time) = (domain_of(*event), *time);
                    w.write(&if *register {
                        WriteOp::TimerRegister { domain, key, time }
                    } else {
                        WriteOp::TimerDelete { domain, key, time }
                    });
                    if *register {
                        registered += u64::from(model.insert((*event, time, key.clone())));
                    } else {
                        model.remove(&(*event, time, key.clone()));
                    }
                }
                state.write(&w.finish(), 1).expect("write");
            }
            TimerOp::Fire(event, now, max) => {
                let fired = state
                    .fire_timers(domain_of(*event), *now, *max)
                    .expect("fire");
                let due: Vec<i64> = model
                    .iter()
                    .filter(|(e, t, _)| e == event && t <= now)
                    .map(|(_, t, _)| *t)
                    .take(*max)
                    .collect();
                let times: Vec<i64> = fired.iter().map(|(t, _)| *t).collect();
                prop_assert_eq!(&times, &due, "due timers, in time order");
                for (time, key) in fired {
                    prop_assert!(
                        model.remove(&(*event, time, key)),
                        "a fired timer was pending"
                    );
                }
            }
            TimerOp::Restore => {
                let dir = tempfile::tempdir().expect("temp dir");
                let reader = snapshot_file(&mut state, &dir);
                state = instance(fresh(0..MAX_PARALLELISM), &registry);
                state.restore(&reader).expect("restore");
                state.load_timers().expect("load timers");
                registered = 0;
            }
        }
        let counts = state.timer_counts();
        prop_assert_eq!(counts.pending, model.len() as u64);
        prop_assert_eq!(counts.registered, registered);
        for event in [true, false] {
            if let Some((_, first, _)) = model.iter().find(|(e, ..)| *e == event) {
                prop_assert!(
                    state
                        .next_timer(domain_of(event))
                        .is_some_and(|n| n <= *first),
                    "the next timer is no later than the first pending"
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn heap_timers_match_the_model(ops in prop::collection::vec(timer_op(), 1..60)) {
        check_timers(&mut |groups| Box::new(HeapBackend::new(groups)), &ops)?;
    }

    #[cfg(feature = "rocksdb")]
    #[test]
    fn rocksdb_timers_match_the_model(ops in prop::collection::vec(timer_op(), 1..60)) {
        let mut dirs = Vec::new();
        check_timers(&mut |groups| {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = super::rocks::RocksStore::open(dir.path(), small_rocks()).expect("open");
            dirs.push(dir);
            Box::new(store.backend(groups))
        }, &ops)?;
    }
}

/// Many more deletions than pending timers (session windows merging): the
/// queue drops its stale entries, and what fires is exactly what is pending.
fn deleted_timers_do_not_pile_up(backend: Box<dyn KeyedBackend>) {
    use weir_codec::state::TimeDomain::EventTime;
    let registry = Registry::default();
    let mut state = instance(backend, &registry);
    let keys: Vec<Vec<u8>> = (0..10_000).map(key).collect();
    for round in 0..3i64 {
        let mut w = OpWriter::new();
        for (n, key) in keys.iter().enumerate() {
            let time = round * 10 + (n % 7) as i64;
            w.write(&WriteOp::TimerRegister {
                domain: EventTime,
                key,
                time,
            });
            // All but every hundredth key's timer of this round go again.
            if n % 100 != 0 {
                w.write(&WriteOp::TimerDelete {
                    domain: EventTime,
                    key,
                    time,
                });
            }
        }
        state.write(&w.finish(), 1).expect("write");
    }
    // Key 0 registers its round-0 timer again after it was deleted... it
    // was kept (n % 100 == 0), so this is a repeat: still one.
    write(
        &mut state,
        WriteOp::TimerRegister {
            domain: EventTime,
            key: &keys[0],
            time: 0,
        },
        1,
    );
    assert_eq!(state.timer_counts().pending, 300);
    let fired = state
        .fire_timers(EventTime, i64::MAX, usize::MAX)
        .expect("fire");
    assert_eq!(fired.len(), 300);
    assert!(fired.windows(2).all(|w| w[0].0 <= w[1].0), "in time order");
    let mut keys_fired: Vec<_> = fired.iter().map(|(t, k)| (*t, k.clone())).collect();
    keys_fired.sort();
    keys_fired.dedup();
    assert_eq!(keys_fired.len(), 300, "each once");
    assert_eq!(state.timer_counts().pending, 0);
    assert_eq!(state.next_timer(EventTime), None, "no entry left behind");
}

#[test]
fn heap_deleted_timers_do_not_pile_up() {
    deleted_timers_do_not_pile_up(Box::new(HeapBackend::new(0..MAX_PARALLELISM)));
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_deleted_timers_do_not_pile_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rocks = super::rocks::RocksStore::open(dir.path(), small_rocks()).expect("open");
    deleted_timers_do_not_pile_up(Box::new(rocks.backend(0..MAX_PARALLELISM)));
}

/// Writes TTL'd values, lets them expire, sweeps, and checks the backend no
/// longer holds them (reading the backend directly, under the TTL filter).
fn expired_items_are_removed(backend: Box<dyn KeyedBackend>) {
    let mut state = InstanceState::new(
        backend,
        Registry::default(),
        0..MAX_PARALLELISM,
        MAX_PARALLELISM,
    );
    let id = state
        .register("short", StateKind::Value, Some(TTL_MS), 0)
        .expect("register");
    let keep = state
        .register("kept", StateKind::Value, None, 0)
        .expect("register");
    for k in 0..200 {
        write(
            &mut state,
            WriteOp::ValueSet {
                state: id,
                key: &key(k),
                value: b"v",
            },
            1_000,
        );
        write(
            &mut state,
            WriteOp::ValueSet {
                state: keep,
                key: &key(k),
                value: b"v",
            },
            1_000,
        );
    }
    // Every key group gets swept, however the backend spreads the work.
    for step in 0..2 * MAX_PARALLELISM as u64 {
        state.expire(2_000 + step).expect("expire");
    }
    for k in 0..200 {
        let key = key(k);
        let group = crate::partition::key_group(&key, MAX_PARALLELISM) as u16;
        let at = |state| super::Address {
            key_group: group,
            state,
            key: &key,
        };
        assert_eq!(
            state.backend_mut().value(at(id)).expect("read"),
            None,
            "key {k} expired but still stored"
        );
        assert!(
            state.backend_mut().value(at(keep)).expect("read").is_some(),
            "key {k} without TTL was removed"
        );
    }
}

#[test]
fn heap_backend_removes_expired_items() {
    expired_items_are_removed(Box::new(HeapBackend::new(0..MAX_PARALLELISM)));
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_backend_removes_expired_items() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = super::rocks::RocksOptions {
        block_cache: 1 << 20,
        write_buffer: 1 << 20,
        cache: 4096,
    };
    let store = super::rocks::RocksStore::open(dir.path(), options).expect("open");
    expired_items_are_removed(Box::new(store.backend(0..MAX_PARALLELISM)));
}

/// RocksDB with a write-back cache so small that most operations miss it.
#[cfg(feature = "rocksdb")]
fn small_rocks() -> super::rocks::RocksOptions {
    super::rocks::RocksOptions {
        block_cache: 1 << 20,
        write_buffer: 1 << 20,
        cache: 600,
    }
}

/// Fills one backend, snapshots it, restores the snapshot into backends that
/// split the key groups differently (another parallelism, another backend
/// kind), and checks every key reads the same from whichever instance owns it.
fn rescaled_restore_keeps_every_key(from: Box<dyn KeyedBackend>, fresh: &mut Fresh<'_>) {
    let registry = Registry::default();
    let mut state = instance(from, &registry);
    let value_of = |k: usize| format!("v{k}").into_bytes();
    for k in 0..300 {
        write(
            &mut state,
            WriteOp::ValueSet {
                state: 0,
                key: &key(k),
                value: &value_of(k),
            },
            1,
        );
        write(
            &mut state,
            WriteOp::MapPut {
                state: 2,
                key: &key(k),
                map_key: b"m",
                value: &value_of(k),
            },
            1,
        );
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let reader = snapshot_file(&mut state, &dir);
    let parallelism = 3;
    let mut instances: Vec<InstanceState> = (0..parallelism)
        .map(|i| {
            let groups = super::key_group_range(MAX_PARALLELISM, parallelism, i);
            let mut s = instance_of(fresh(groups.clone()), &registry, groups);
            s.restore(&reader).expect("restore");
            s
        })
        .collect();
    for k in 0..300 {
        let group = crate::partition::key_group(&key(k), MAX_PARALLELISM);
        let owner = crate::partition::instance_for_key_group(group, MAX_PARALLELISM, parallelism);
        let s = &mut instances[owner as usize];
        let got = read(
            s,
            ReadOp::ValueGet {
                state: 0,
                key: &key(k),
            },
            2,
        );
        assert_eq!(
            Cursor::new(&got).option().expect("option"),
            Some(value_of(k).as_slice())
        );
        let got = read(
            s,
            ReadOp::MapGet {
                state: 2,
                key: &key(k),
                map_key: b"m",
            },
            2,
        );
        assert_eq!(
            Cursor::new(&got).option().expect("option"),
            Some(value_of(k).as_slice())
        );
    }
}

#[test]
fn heap_snapshot_restores_at_another_parallelism() {
    rescaled_restore_keeps_every_key(
        Box::new(HeapBackend::new(0..MAX_PARALLELISM)),
        &mut |groups| Box::new(HeapBackend::new(groups)),
    );
}

#[cfg(feature = "rocksdb")]
#[test]
fn snapshots_move_between_backends_and_parallelisms() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rocks = super::rocks::RocksStore::open(dir.path(), small_rocks()).expect("open");
    // RocksDB (its cache mostly flushed, partly dirty) into heap instances.
    rescaled_restore_keeps_every_key(Box::new(rocks.backend(0..MAX_PARALLELISM)), &mut |groups| {
        Box::new(HeapBackend::new(groups))
    });
    // Heap into RocksDB instances sharing one database.
    let dir = tempfile::tempdir().expect("temp dir");
    let rocks = super::rocks::RocksStore::open(dir.path(), small_rocks()).expect("open");
    rescaled_restore_keeps_every_key(
        Box::new(HeapBackend::new(0..MAX_PARALLELISM)),
        &mut |groups| Box::new(rocks.backend(groups)),
    );
}

/// Saves value, list and map state at version 0, restores it at another
/// parallelism with three of the states declared at version 1, and checks
/// the migration converts every value of those (in small chunks) and nothing
/// else, keeps write times, and that a checkpoint taken afterwards (a change
/// file on top of the restored one, where the backend can) restores the
/// converted values.
fn migration_converts_every_saved_value(from: Box<dyn KeyedBackend>, fresh: &mut Fresh<'_>) {
    let registry = Registry::default();
    let mut state = instance(from, &registry);
    let value_of = |k: usize| format!("v{k}").into_bytes();
    for k in 0..200 {
        let v = value_of(k);
        let at = |state| (state, key(k));
        let (s0, key0) = at(0);
        write(
            &mut state,
            WriteOp::ValueSet {
                state: s0,
                key: &key0,
                value: &v,
            },
            7,
        );
        write(
            &mut state,
            WriteOp::ValueSet {
                state: 3,
                key: &key0,
                value: &v,
            },
            7,
        );
        write(
            &mut state,
            WriteOp::ListAppend {
                state: 1,
                key: &key0,
                items: vec![&v, b"second"],
            },
            7,
        );
        for mk in [&b"a"[..], b""] {
            write(
                &mut state,
                WriteOp::MapPut {
                    state: 2,
                    key: &key0,
                    map_key: mk,
                    value: &v,
                },
                7,
            );
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let reader = snapshot_file(&mut state, &dir);
    let restored = Registry::from_specs(registry.specs());
    let parallelism = 2;
    let mut converted = 0;
    for i in 0..parallelism {
        let groups = super::key_group_range(MAX_PARALLELISM, parallelism, i);
        let mut s = InstanceState::new(
            fresh(groups.clone()),
            restored.clone(),
            groups.clone(),
            MAX_PARALLELISM,
        );
        s.restore(&reader).expect("restore");
        for (name, kind, ttl) in STATES {
            let version = u32::from(matches!(name, "value" | "list" | "map"));
            s.register(name, kind, ttl, version).expect("register");
        }
        let migrations = s.take_migrations();
        assert_eq!(migrations.len(), 3, "{migrations:?}");
        for m in migrations {
            assert_eq!(m.from, 0);
            converted += s
                .migrate(m, 64, |values| -> Result<Vec<u8>, StateError> {
                    let values = Cursor::new(values).list().expect("a list");
                    let mut out = Vec::new();
                    let new: Vec<Vec<u8>> = values.iter().map(|v| [b"new-", *v].concat()).collect();
                    weir_codec::state::put_list(&mut out, new.iter().map(Vec::as_slice));
                    Ok(out)
                })
                .expect("migrate");
        }
        let mut chain = Chain::new();
        chain.checkpoint(&mut s);
        let check = |s: &mut InstanceState| {
            let mine = |k: &usize| {
                groups.contains(&crate::partition::key_group(&key(*k), MAX_PARALLELISM))
            };
            for k in (0..200).filter(mine) {
                let new = [b"new-", &value_of(k)[..]].concat();
                let key = key(k);
                let got = read(
                    s,
                    ReadOp::ValueGet {
                        state: 0,
                        key: &key,
                    },
                    8,
                );
                assert_eq!(Cursor::new(&got).option().expect("option"), Some(&new[..]));
                let got = read(
                    s,
                    ReadOp::ValueGet {
                        state: 3,
                        key: &key,
                    },
                    8,
                );
                assert_eq!(
                    Cursor::new(&got).option().expect("option"),
                    Some(&value_of(k)[..]),
                    "untouched"
                );
                let got = read(
                    s,
                    ReadOp::ListGet {
                        state: 1,
                        key: &key,
                    },
                    8,
                );
                assert_eq!(
                    Cursor::new(&got).list().expect("list"),
                    [&new[..], b"new-second"]
                );
                let got = read(
                    s,
                    ReadOp::MapEntries {
                        state: 2,
                        key: &key,
                    },
                    8,
                );
                let entries = Cursor::new(&got).entries().expect("entries");
                assert_eq!(entries.len(), 2);
                assert!(entries.iter().all(|e| e.1 == new.as_slice()), "{entries:?}");
                // Write times are kept: a TTL runs on from the old write.
                let at = Address {
                    key_group: crate::partition::key_group(&key, MAX_PARALLELISM) as u16,
                    state: 0,
                    key: &key,
                };
                let stored = s.backend_mut().value(at).expect("value").expect("present");
                assert_eq!(stored.written_at, 7);
            }
        };
        check(&mut s);
        // The converted values are what the next checkpoint saved.
        let mut again = chain.restore(&Registry::from_specs(restored.specs()), fresh);
        check(&mut again);
        // A plugin that returns the wrong number of values fails the start.
        let mut s = InstanceState::new(
            fresh(groups.clone()),
            restored.clone(),
            groups,
            MAX_PARALLELISM,
        );
        s.restore(&reader).expect("restore");
        s.register("value", StateKind::Value, None, 5)
            .expect("register");
        let m = s.take_migrations().remove(0);
        let e = s
            .migrate(m, 1 << 20, |_| -> Result<Vec<u8>, StateError> {
                Ok(vec![0, 0, 0, 0])
            })
            .unwrap_err();
        assert!(e.to_string().contains("returned 0 values for"), "{e}");
    }
    // 200 values, 400 list elements, 400 map values.
    assert_eq!(converted, 1000);
}

#[test]
fn heap_migration_converts_every_saved_value() {
    migration_converts_every_saved_value(
        Box::new(HeapBackend::new(0..MAX_PARALLELISM)),
        &mut |groups| Box::new(HeapBackend::new(groups)),
    );
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_migration_converts_every_saved_value() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rocks = super::rocks::RocksStore::open(dir.path(), small_rocks()).expect("open");
    let dir = tempfile::tempdir().expect("temp dir");
    let into = super::rocks::RocksStore::open(dir.path(), small_rocks()).expect("open");
    migration_converts_every_saved_value(
        Box::new(rocks.backend(0..MAX_PARALLELISM)),
        &mut |groups| Box::new(into.backend(groups)),
    );
}

/// A RocksDB capture taken for a change file carries no database snapshot:
/// it writes its changes, refuses a full write, and the next full capture is
/// whole again.
#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_capture_for_changes_only_refuses_a_full_write() {
    let registry = Registry::default();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = super::rocks::RocksStore::open(dir.path(), small_rocks()).expect("open");
    let mut state = instance(Box::new(store.backend(0..MAX_PARALLELISM)), &registry);
    let mut chain = Chain::new();
    let put = |state: &mut InstanceState, k: usize, v: &[u8]| {
        let at = Address {
            key_group: 0,
            state: 0,
            key: &key(k),
        };
        state.backend_mut().set_value(at, v, 1).expect("write");
    };
    for k in 0..50 {
        put(&mut state, k, b"first");
    }
    chain.checkpoint(&mut state);
    for k in 0..10 {
        put(&mut state, k, b"second");
    }
    let capture = state.capture(CaptureScope::Changes).expect("capture");
    assert!(capture.has_changes() && !capture.can_write_full());
    let path = chain.dir.path().join("whole");
    let mut out = SnapshotWriter::create(&path).expect("create");
    let refused = capture.write(&mut out);
    assert!(
        refused.is_err(),
        "a changes-only capture wrote a full snapshot"
    );
    // The full capture that follows is whole: both generations of writes.
    let capture = state.capture(CaptureScope::Full).expect("capture");
    assert!(capture.can_write_full());
    let mut out = SnapshotWriter::create(&path).expect("create");
    capture.write(&mut out).expect("write");
    let summary = out.finish().expect("finish");
    let reader = SnapshotReader::open(&path, &summary).expect("open");
    let store =
        super::rocks::RocksStore::open(&dir.path().join("restored"), small_rocks()).expect("open");
    let mut restored = instance(Box::new(store.backend(0..MAX_PARALLELISM)), &registry);
    restored.restore(&reader).expect("restore");
    for k in 0..50 {
        let at = Address {
            key_group: 0,
            state: 0,
            key: &key(k),
        };
        let value = restored
            .backend_mut()
            .value(at)
            .expect("read")
            .map(|v| v.item.to_vec());
        let expected: &[u8] = if k < 10 { b"second" } else { b"first" };
        assert_eq!(value.as_deref(), Some(expected), "key {k}");
    }
}

/// A read whose result would outgrow the plugin's memory fails, naming the
/// limit, instead of the host building it.
#[test]
fn a_state_read_larger_than_the_plugin_may_hold_is_refused() {
    let registry = Registry::default();
    let mut state = instance(Box::new(HeapBackend::new(0..MAX_PARALLELISM)), &registry);
    let big = vec![7u8; 1024];
    for k in 0..3 {
        write(
            &mut state,
            WriteOp::ValueSet {
                state: 0,
                key: &key(k),
                value: &big,
            },
            0,
        );
    }
    let mut w = OpWriter::new();
    for k in 0..3 {
        w.read(&ReadOp::ValueGet {
            state: 0,
            key: &key(k),
        });
    }
    let ops = w.finish();
    assert!(state.read(&ops, 0, 4096).is_ok());
    let e = state.read(&ops, 0, 2048).unwrap_err().to_string();
    assert!(
        e.contains("more than 2KiB, the operator's memory_limit"),
        "{e}"
    );
}

/// The value `k` holds in round `round`: short ones (kept inline by the heap
/// backend) and long ones, so overwrites cross between the two.
fn round_value(k: usize, round: usize) -> Option<Vec<u8>> {
    match (k + round) % 4 {
        0 => Some(format!("{round}").into_bytes()),
        1 => Some(format!("a long value, round {round}, key {k}").into_bytes()),
        2 => Some(vec![b'x'; 15 + round]),
        _ => (round == 0).then(|| b"gone next round".to_vec()),
    }
}

fn value_now(state: &mut InstanceState, k: usize) -> Option<Vec<u8>> {
    let got = read(
        state,
        ReadOp::ValueGet {
            state: 0,
            key: &key(k),
        },
        2,
    );
    Cursor::new(&got)
        .option()
        .expect("option")
        .map(<[u8]>::to_vec)
}

/// A capture holds the values of its barrier while the operator overwrites
/// and clears them (in place where nothing else holds them, copied where the
/// capture does), and writes those, not the new ones, however late it is
/// written; a change file written after it holds the new ones.
fn a_held_capture_keeps_what_it_saw(backend: Box<dyn KeyedBackend>, fresh: &mut Fresh<'_>) {
    let registry = Registry::default();
    let mut state = instance(backend, &registry);
    let set = |state: &mut InstanceState, round: usize| {
        for k in 0..64 {
            match round_value(k, round) {
                Some(value) => write(
                    state,
                    WriteOp::ValueSet {
                        state: 0,
                        key: &key(k),
                        value: &value,
                    },
                    1,
                ),
                None => write(
                    state,
                    WriteOp::Clear {
                        state: 0,
                        key: &key(k),
                    },
                    1,
                ),
            }
        }
    };
    set(&mut state, 0);
    // Written twice before the capture: in place, no capture holds it.
    set(&mut state, 0);
    let first = state.capture(CaptureScope::Full).expect("capture");
    set(&mut state, 1);
    set(&mut state, 2);
    for k in 0..64 {
        assert_eq!(value_now(&mut state, k), round_value(k, 2), "live key {k}");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let write_file = |name: &str, capture: Box<dyn StateCapture>, full: bool| {
        let path = dir.path().join(name);
        let mut out = SnapshotWriter::create(&path).expect("create");
        if full {
            capture.write(&mut out).expect("write");
        } else {
            capture.write_changes(&mut out).expect("write changes");
        }
        (path.clone(), out.finish().expect("finish"))
    };
    let full = write_file("full", first, true);
    let changes = state.capture(CaptureScope::Changes).expect("capture");
    assert!(changes.has_changes());
    let changes = write_file("changes", changes, false);

    let open = |(path, summary): &(std::path::PathBuf, super::snapshot::FileSummary)| {
        SnapshotReader::open(path, summary).expect("open")
    };
    let mut at_first = instance(fresh(0..MAX_PARALLELISM), &registry);
    at_first.restore(&open(&full)).expect("restore");
    let mut at_second = instance(fresh(0..MAX_PARALLELISM), &registry);
    at_second.restore(&open(&full)).expect("restore");
    at_second.restore(&open(&changes)).expect("restore changes");
    for k in 0..64 {
        assert_eq!(value_now(&mut at_first, k), round_value(k, 0), "key {k}");
        assert_eq!(value_now(&mut at_second, k), round_value(k, 2), "key {k}");
    }
}

#[test]
fn heap_held_capture_keeps_what_it_saw() {
    a_held_capture_keeps_what_it_saw(
        Box::new(HeapBackend::new(0..MAX_PARALLELISM)),
        &mut |groups| Box::new(HeapBackend::new(groups)),
    );
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_held_capture_keeps_what_it_saw() {
    // A cache that holds every key (values rewritten in place) and one that
    // holds almost none (values through RocksDB).
    for cache in [64 << 20, 600] {
        let options = super::rocks::RocksOptions {
            cache,
            ..small_rocks()
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let store =
            super::rocks::RocksStore::open(&dir.path().join("live"), options).expect("open");
        let mut n = 0;
        a_held_capture_keeps_what_it_saw(
            Box::new(store.backend(0..MAX_PARALLELISM)),
            &mut |groups| {
                n += 1;
                let store =
                    super::rocks::RocksStore::open(&dir.path().join(format!("fresh-{n}")), options)
                        .expect("open");
                Box::new(store.backend(groups))
            },
        );
    }
}

/// Timers: one per key, domain and time; fired once, in time order, and gone;
/// a checkpoint restored at another parallelism gives every pending timer to
/// the instance that owns its key, once.
fn timers_survive_a_rescaled_restore(from: Box<dyn KeyedBackend>, fresh: &mut Fresh<'_>) {
    use weir_codec::state::TimeDomain::{EventTime, ProcessingTime};
    let registry = Registry::default();
    let mut state = instance(from, &registry);
    for k in 0..200 {
        for time in [k as i64 * 10, 5_000] {
            for _ in 0..2 {
                write(
                    &mut state,
                    WriteOp::TimerRegister {
                        domain: EventTime,
                        key: &key(k),
                        time,
                    },
                    1,
                );
            }
        }
        write(
            &mut state,
            WriteOp::TimerRegister {
                domain: ProcessingTime,
                key: &key(k),
                time: 7,
            },
            1,
        );
    }
    write(
        &mut state,
        WriteOp::TimerDelete {
            domain: EventTime,
            key: &key(3),
            time: 5_000,
        },
        1,
    );
    let counts = state.timer_counts();
    assert_eq!((counts.registered, counts.pending), (600, 599));
    // Up to 995: the first hundred keys' own timers, in time order.
    let fired = state.fire_timers(EventTime, 995, 1_000).expect("fire");
    let times: Vec<i64> = fired.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, (0..100).map(|k| k * 10).collect::<Vec<_>>());
    assert!(
        state
            .fire_timers(EventTime, 995, 1_000)
            .expect("fire")
            .is_empty()
    );
    assert_eq!(state.next_timer(EventTime), Some(1_000));
    assert_eq!(state.next_timer(ProcessingTime), Some(7));

    let dir = tempfile::tempdir().expect("temp dir");
    let reader = snapshot_file(&mut state, &dir);
    let parallelism = 3;
    let (mut total, mut processing) = (0, 0);
    let mut keys_at_5000 = Vec::new();
    for i in 0..parallelism {
        let groups = super::key_group_range(MAX_PARALLELISM, parallelism, i);
        let mut s = instance_of(fresh(groups.clone()), &registry, groups.clone());
        s.restore(&reader).expect("restore");
        s.load_timers().expect("load timers");
        let pending = s.timer_counts().pending;
        total += pending;
        for (time, k) in s
            .fire_timers(EventTime, i64::MAX, usize::MAX)
            .expect("fire")
        {
            let group = crate::partition::key_group(&k, MAX_PARALLELISM);
            assert!(groups.contains(&group), "a timer of another instance's key");
            if time == 5_000 {
                keys_at_5000.push(k);
            }
        }
        // Processing-time timers follow their own clock.
        processing += s
            .fire_timers(ProcessingTime, 7, usize::MAX)
            .expect("fire")
            .len();
        assert_eq!(s.timer_counts().pending, 0);
    }
    assert_eq!(
        total, 499,
        "100 event-time timers fired before the checkpoint"
    );
    assert_eq!(processing, 200);
    keys_at_5000.sort();
    assert_eq!(keys_at_5000.len(), 199, "every key but the one deleted");
    assert!(!keys_at_5000.contains(&key(3)));
}

#[test]
fn heap_timers_survive_a_rescaled_restore() {
    timers_survive_a_rescaled_restore(
        Box::new(HeapBackend::new(0..MAX_PARALLELISM)),
        &mut |groups| Box::new(HeapBackend::new(groups)),
    );
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_timers_survive_a_rescaled_restore() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rocks = super::rocks::RocksStore::open(dir.path(), small_rocks()).expect("open");
    timers_survive_a_rescaled_restore(Box::new(rocks.backend(0..MAX_PARALLELISM)), &mut |groups| {
        Box::new(rocks.backend(groups))
    });
}

/// Registrations and deletions in one write (a batch's) reach the stored
/// timers in order, so a restore finds exactly the timers the queue held.
fn timers_changed_in_one_write_are_stored_in_order(
    from: Box<dyn KeyedBackend>,
    fresh: &mut Fresh<'_>,
) {
    use weir_codec::state::TimeDomain::EventTime;
    let registry = Registry::default();
    let mut state = instance(from, &registry);
    let (k1, k2, k3) = (key(1), key(2), key(3));
    let mut w = OpWriter::new();
    for (register, key, time) in [
        (true, &k1, 10),
        (true, &k1, 20),
        (false, &k1, 10),
        (true, &k2, 30),
        (false, &k2, 30),
        (true, &k2, 30),
        (true, &k3, 40),
        (true, &k3, 40),
        (false, &k3, 40),
    ] {
        w.write(&if register {
            WriteOp::TimerRegister {
                domain: EventTime,
                key,
                time,
            }
        } else {
            WriteOp::TimerDelete {
                domain: EventTime,
                key,
                time,
            }
        });
    }
    state.write(&w.finish(), 1).expect("write");
    assert_eq!(state.timer_counts().pending, 2);
    let dir = tempfile::tempdir().expect("temp dir");
    let reader = snapshot_file(&mut state, &dir);
    let mut restored = instance(fresh(0..MAX_PARALLELISM), &registry);
    restored.restore(&reader).expect("restore");
    restored.load_timers().expect("load timers");
    let fired = restored
        .fire_timers(EventTime, i64::MAX, usize::MAX)
        .expect("fire");
    assert_eq!(fired, vec![(20, k1), (30, k2)]);
}

#[test]
fn heap_timers_changed_in_one_write_are_stored_in_order() {
    timers_changed_in_one_write_are_stored_in_order(
        Box::new(HeapBackend::new(0..MAX_PARALLELISM)),
        &mut |groups| Box::new(HeapBackend::new(groups)),
    );
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_timers_changed_in_one_write_are_stored_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rocks = super::rocks::RocksStore::open(dir.path(), small_rocks()).expect("open");
    timers_changed_in_one_write_are_stored_in_order(
        Box::new(rocks.backend(0..MAX_PARALLELISM)),
        &mut |groups| Box::new(rocks.backend(groups)),
    );
}
