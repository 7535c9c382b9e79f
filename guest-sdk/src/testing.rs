//! Run an operator natively, against an in-memory stand-in for the host.
//!
//! The harness goes through the same batch encoding and the same per-record loop
//! as the WebAssembly build, so a passing unit test exercises the real code path
//! short of the component boundary.

use serde::Serialize;
use weir_codec::{BatchReader, BatchWriter};

use crate::runtime::{Clock, Failure, Instance};
use crate::sys::StateKind;
use crate::time::TimeDomain;
use crate::{Error, Level, Operator, SavedState, sys};

/// An owned record, for feeding a [`Harness`] and reading what it emitted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OwnedRecord {
    /// Key bytes.
    pub key: Vec<u8>,
    /// Value bytes.
    pub value: Vec<u8>,
    /// Event timestamp, in ms since the Unix epoch.
    pub timestamp: Option<i64>,
}

impl OwnedRecord {
    /// A record without a timestamp.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            timestamp: None,
        }
    }
}

/// What a checkpoint holds of one operator instance: its keyed state (with
/// each state's version) and its operator state. Take one from a running
/// [`Harness`] with [`Harness::checkpoint`], or build what an older version
/// of the plugin saved by hand, and start a harness from it with
/// [`Harness::restore_from`]: states declared at another version go through
/// their migration first, as in the daemon.
///
/// ```
/// use weir_guest_sdk::testing::{Checkpoint, Harness};
/// # use weir_guest_sdk::{Context, Error, InitContext, Operator, Record, ValueState};
/// # struct Count { count: ValueState<String> }
/// # impl Operator for Count {
/// #     fn init(ctx: &InitContext) -> Result<Self, Error> {
/// #         let count = ctx.state("count").version(1)
/// #             .migrate(|old| Ok(old.decode::<u64>()?.to_string())).value()?;
/// #         Ok(Self { count })
/// #     }
/// #     fn process(&mut self, _: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
/// #         let n: u64 = self.count.get()?.unwrap_or_default().parse().unwrap_or(0) + 1;
/// #         self.count.set(&n.to_string())?;
/// #         ctx.emit(b"", n.to_string().as_bytes());
/// #         Ok(())
/// #     }
/// # }
/// // Version 0 of `count` held a u64.
/// let saved = Checkpoint::new().value("count", 0, "a", &41u64)?;
/// let mut op = Harness::<Count>::restore_from("{}", &saved)?;
/// assert_eq!(op.process_keyed(&[("a", "")])?, ["42"]);
/// # Ok::<(), Error>(())
/// ```
#[derive(Clone, Default)]
pub struct Checkpoint {
    keyed: sys::Store,
    operator: Option<SavedState>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("operator", &self.operator)
            .finish_non_exhaustive()
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    postcard::to_allocvec(value).map_err(|e| Error::new(format!("cannot encode state: {e}")))
}

impl Checkpoint {
    /// Nothing saved.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key`'s value of value state `state`, saved at `version`.
    pub fn value<T: Serialize>(
        mut self,
        state: &str,
        version: u32,
        key: impl AsRef<[u8]>,
        value: &T,
    ) -> Result<Self, Error> {
        let id = self
            .keyed
            .declare(state, StateKind::Value, version)
            .map_err(Error::new)?;
        self.keyed.put_value(id, key.as_ref(), encode(value)?);
        Ok(self)
    }

    /// Appends `items` to `key`'s list of list state `state`, saved at `version`.
    pub fn list<T: Serialize>(
        mut self,
        state: &str,
        version: u32,
        key: impl AsRef<[u8]>,
        items: &[T],
    ) -> Result<Self, Error> {
        let id = self
            .keyed
            .declare(state, StateKind::List, version)
            .map_err(Error::new)?;
        let items = items.iter().map(encode).collect::<Result<_, _>>()?;
        self.keyed.push_list(id, key.as_ref(), items);
        Ok(self)
    }

    /// Adds one entry to `key`'s map of map state `state`, saved at `version`.
    pub fn map_entry<K: Serialize, V: Serialize>(
        mut self,
        state: &str,
        version: u32,
        key: impl AsRef<[u8]>,
        map_key: &K,
        value: &V,
    ) -> Result<Self, Error> {
        let id = self
            .keyed
            .declare(state, StateKind::Map, version)
            .map_err(Error::new)?;
        self.keyed
            .put_map(id, key.as_ref(), encode(map_key)?, encode(value)?);
        Ok(self)
    }

    /// Sets the operator state (what [`crate::Operator::snapshot`] saved).
    pub fn operator_state(mut self, saved: SavedState) -> Self {
        self.operator = Some(saved);
        self
    }
}

/// One operator instance with an in-memory host.
///
/// Time is the test's: [`Harness::advance_watermark`] moves event time on
/// and fires the event-time timers it passes, [`Harness::advance_processing_time`]
/// does the same for processing time (which starts at 0), as the daemon would.
pub struct Harness<T> {
    instance: Instance<T>,
    watermark: Option<i64>,
    /// What went to side outputs, by name, in order.
    side: Vec<(String, OwnedRecord)>,
}

/// Timers fired per call, as the host batches them.
const TIMERS_PER_CALL: usize = 4096;

impl<T: Operator> Harness<T> {
    /// Builds the operator as instance 0 of an operator with id `test`, from a
    /// config given as JSON text.
    pub fn new(config_json: &str) -> Result<Self, Error> {
        Self::with_id("test", 0, config_json)
    }

    /// Builds the operator with a chosen id and instance index.
    pub fn with_id(operator_id: &str, instance: u32, config_json: &str) -> Result<Self, Error> {
        Self::with_inputs(operator_id, instance, config_json, &["input"])
    }

    /// Builds the operator with its inputs named as the topology would
    /// (`clicks`, `users`): [`Harness::process_from`] feeds one of them.
    pub fn with_inputs(
        operator_id: &str,
        instance: u32,
        config_json: &str,
        inputs: &[&str],
    ) -> Result<Self, Error> {
        sys::reset_state();
        let inputs = inputs.iter().map(|i| (*i).to_owned()).collect();
        let instance = Instance::init(operator_id.to_owned(), instance, config_json, inputs);
        crate::metrics::flush();
        Ok(Self {
            instance: instance.map_err(describe)?,
            watermark: None,
            side: Vec::new(),
        })
    }

    /// Builds the operator as instance 0 of `test` from a checkpoint, as the
    /// daemon restores one: keyed state first, then `init`, then the
    /// migration of every state `init` declares at another version than the
    /// checkpoint saved it, then the operator state through
    /// [`crate::Operator::restore`].
    pub fn restore_from(config_json: &str, checkpoint: &Checkpoint) -> Result<Self, Error> {
        sys::reset_state();
        sys::load_store(checkpoint.keyed.clone());
        let instance = Instance::init("test".to_owned(), 0, config_json, vec!["input".into()]);
        crate::metrics::flush();
        let mut harness = Self {
            instance: instance.map_err(describe)?,
            watermark: None,
            side: Vec::new(),
        };
        for (state, from) in sys::take_migrations() {
            sys::migrate_stored(state, |values| crate::state::migrate(state, from, values))
                .map_err(|message| {
                    let (name, to) = crate::state::declared(state).unwrap_or_default();
                    Error::new(crate::state::failed(&name, from, to, &message))
                })?;
        }
        if let Some(saved) = &checkpoint.operator {
            harness.restore(vec![saved.clone()])?;
        }
        Ok(harness)
    }

    /// What a checkpoint taken now would hold: the keyed state, and what
    /// [`crate::Operator::snapshot`] saves.
    pub fn checkpoint(&mut self) -> Result<Checkpoint, Error> {
        let operator = self.snapshot()?;
        Ok(Checkpoint {
            keyed: sys::saved_store(),
            operator,
        })
    }

    /// Processes one batch and returns everything the operator emitted for it
    /// on its main output (side outputs: [`Harness::take_side_output`]).
    pub fn process(&mut self, records: &[OwnedRecord]) -> Result<Vec<OwnedRecord>, Error> {
        self.process_from(0, records)
    }

    /// Processes one batch from input `input` (an index into the inputs
    /// given to [`Harness::with_inputs`]).
    pub fn process_from(
        &mut self,
        input: u32,
        records: &[OwnedRecord],
    ) -> Result<Vec<OwnedRecord>, Error> {
        let mut batch = BatchWriter::new();
        for r in records {
            batch.push(&r.key, &r.value, r.timestamp);
        }
        let clock = self.clock();
        self.call(|instance| instance.process(input, &batch.finish(), clock))
    }

    /// Processes one batch of `(key, value, timestamp)` text records and
    /// returns the emitted values as text.
    pub fn process_timed(&mut self, records: &[(&str, &str, i64)]) -> Result<Vec<String>, Error> {
        let input: Vec<OwnedRecord> = records
            .iter()
            .map(|(k, v, t)| OwnedRecord {
                timestamp: Some(*t),
                ..OwnedRecord::new(*k, *v)
            })
            .collect();
        Ok(values(self.process(&input)?))
    }

    /// Moves the watermark to `time` (it never goes back) and fires every
    /// event-time timer at or before it, in time order, as the daemon does
    /// when a watermark arrives; returns the values they emitted.
    pub fn advance_watermark(&mut self, time: i64) -> Result<Vec<String>, Error> {
        let time = self.watermark.map_or(time, |w| w.max(time));
        self.watermark = Some(time);
        Ok(values(self.fire(TimeDomain::EventTime, time)?))
    }

    /// The watermark the operator sees, once [`Harness::advance_watermark`]
    /// was called.
    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// Event-time and processing-time timers pending.
    pub fn pending_timers(&self) -> usize {
        sys::pending_timers()
    }

    /// Records the operator sent to side output `name` since the last call.
    pub fn take_side_output(&mut self, name: &str) -> Vec<OwnedRecord> {
        let (taken, kept) = std::mem::take(&mut self.side)
            .into_iter()
            .partition(|(n, _)| n == name);
        self.side = kept;
        taken.into_iter().map(|(_, r)| r).collect()
    }

    fn clock(&self) -> Clock {
        Clock {
            watermark: self.watermark,
            processing_time: i64::try_from(sys::processing_time()).unwrap_or(i64::MAX),
        }
    }

    fn fire(&mut self, domain: TimeDomain, time: i64) -> Result<Vec<OwnedRecord>, Error> {
        let mut out = Vec::new();
        loop {
            let due = sys::pop_due_timers(domain, time, TIMERS_PER_CALL);
            if due.is_empty() {
                return Ok(out);
            }
            let mut batch = BatchWriter::new();
            for (at, key) in &due {
                batch.push(key, &[domain.code()], Some(*at));
            }
            let clock = self.clock();
            out.extend(self.call(|instance| instance.on_timer(&batch.finish(), clock))?);
        }
    }

    fn call(
        &mut self,
        f: impl FnOnce(&mut Instance<T>) -> Result<(), Failure>,
    ) -> Result<Vec<OwnedRecord>, Error> {
        sys::take_emitted();
        let result = f(&mut self.instance);
        crate::metrics::flush();
        let emitted = sys::take_emitted();
        result.map_err(describe)?;
        let mut out = Vec::new();
        for (output, bytes) in &emitted {
            for record in BatchReader::new(bytes)?.iter() {
                let r = record?;
                let owned = OwnedRecord {
                    key: r.key.to_vec(),
                    value: r.value.to_vec(),
                    timestamp: r.timestamp,
                };
                match (*output as usize).checked_sub(1) {
                    None => out.push(owned),
                    Some(i) => {
                        let name = T::OUTPUTS.get(i).copied().unwrap_or("?");
                        self.side.push((name.to_owned(), owned));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Processes one batch of values (with empty keys) and returns the emitted
    /// values as text.
    pub fn process_values(&mut self, values: &[&str]) -> Result<Vec<String>, Error> {
        let records: Vec<(&str, &str)> = values.iter().map(|v| ("", *v)).collect();
        self.process_keyed(&records)
    }

    /// Processes one batch of `(key, value)` text records and returns the emitted
    /// values as text.
    pub fn process_keyed(&mut self, records: &[(&str, &str)]) -> Result<Vec<String>, Error> {
        let input: Vec<OwnedRecord> = records
            .iter()
            .map(|(k, v)| OwnedRecord::new(*k, *v))
            .collect();
        Ok(values(self.process(&input)?))
    }

    /// What the operator saves at a checkpoint.
    pub fn snapshot(&mut self) -> Result<Option<SavedState>, Error> {
        let saved = self.instance.snapshot();
        crate::metrics::flush();
        saved.map_err(describe)
    }

    /// Gives the operator saved state back, as the host does when an instance
    /// starts from a checkpoint; all parts must share a version.
    pub fn restore(&mut self, saved: Vec<SavedState>) -> Result<(), Error> {
        let version = saved.first().map_or(0, |s| s.version);
        if saved.iter().any(|s| s.version != version) {
            return Err(Error::new("restored parts have different versions"));
        }
        let parts = saved.into_iter().map(|s| s.bytes).collect();
        let restored = self.instance.restore(version, parts);
        crate::metrics::flush();
        restored.map_err(describe)
    }

    /// The value of a metric the operator declared (a counter's total, a
    /// gauge's last value), as the daemon would export it.
    pub fn metric(&self, name: &str) -> Option<i64> {
        sys::metric(name)
    }

    /// Moves the host's processing time on and fires the processing-time
    /// timers it passes; returns the values they emitted. Keyed state written
    /// with a TTL expires once this clock has passed its write time plus the
    /// TTL, as it does in the daemon, where the clock is the wall clock. It
    /// starts at 0.
    pub fn advance_processing_time(
        &mut self,
        by: std::time::Duration,
    ) -> Result<Vec<String>, Error> {
        sys::advance_processing_time(u64::try_from(by.as_millis()).unwrap_or(u64::MAX));
        let now = i64::try_from(sys::processing_time()).unwrap_or(i64::MAX);
        Ok(values(self.fire(TimeDomain::ProcessingTime, now)?))
    }

    /// The host's processing time, in ms since the harness was made.
    pub fn processing_time(&self) -> u64 {
        sys::processing_time()
    }

    /// Log lines the operator wrote since the last call.
    pub fn take_logs(&mut self) -> Vec<(Level, String)> {
        sys::take_logs()
    }
}

fn values(records: Vec<OwnedRecord>) -> Vec<String> {
    records
        .into_iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect()
}

fn describe(failure: Failure) -> Error {
    match failure.record_index {
        Some(index) => Error::new(format!("record {index}: {}", failure.message)),
        None => Error::new(failure.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Context, InitContext, ListState, MapState, Record, RestoredState};

    /// Version 1 of an operator: its list and map states hold text where
    /// version 0 held numbers, and its operator state is a pair where version
    /// 0 saved one number.
    struct Renamed {
        seen: ListState<String>,
        last: MapState<String, String>,
        totals: (u64, u64),
    }

    fn number_to_text(old: crate::Stored<'_>) -> Result<String, Error> {
        Ok(format!("#{}", old.decode::<u32>()?))
    }

    impl Operator for Renamed {
        fn init(ctx: &InitContext) -> Result<Self, Error> {
            Ok(Self {
                seen: ctx
                    .state("seen")
                    .version(1)
                    .migrate(number_to_text)
                    .list()?,
                last: ctx.state("last").version(1).migrate(number_to_text).map()?,
                totals: (0, 0),
            })
        }

        fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
            let seen = self.seen.get()?.join(" ");
            let last = self.last.get(&"k".to_owned())?.unwrap_or_default();
            ctx.emit(
                record.key,
                format!("{seen}|{last}|{:?}", self.totals).as_bytes(),
            );
            Ok(())
        }

        fn snapshot(&mut self) -> Result<Option<SavedState>, Error> {
            SavedState::encode(1, &self.totals).map(Some)
        }

        fn restore(&mut self, restored: RestoredState) -> Result<(), Error> {
            self.totals = match restored.version() {
                0 => (restored.decode::<u64>()?.iter().sum(), 0),
                _ => restored.decode::<(u64, u64)>()?[0],
            };
            Ok(())
        }
    }

    #[test]
    fn list_map_and_operator_state_saved_by_an_older_version_are_migrated() {
        let saved = Checkpoint::new()
            .list("seen", 0, "a", &[1u32, 2])
            .and_then(|c| c.map_entry("last", 0, "a", &"k".to_owned(), &7u32))
            .map(|c| c.operator_state(SavedState::encode(0, &5u64).expect("encode")))
            .expect("a checkpoint");
        let mut op = Harness::<Renamed>::restore_from("{}", &saved).expect("restored");
        assert_eq!(
            op.process_keyed(&[("a", "")]).expect("processed"),
            ["#1 #2|#7|(5, 0)"]
        );
        // Saved again by version 1, it restores with nothing to migrate.
        let again = op.checkpoint().expect("checkpoint");
        let mut op = Harness::<Renamed>::restore_from("{}", &again).expect("restored");
        assert_eq!(
            op.process_keyed(&[("a", "")]).expect("processed"),
            ["#1 #2|#7|(5, 0)"]
        );
        // A state's kind is part of what was saved.
        let e = Checkpoint::new()
            .list("seen", 0, "a", &[1u32])
            .and_then(|c| c.value("seen", 0, "b", &1u32))
            .expect_err("a kind conflict");
        assert!(
            e.message().contains("was given before as List state"),
            "{e}"
        );
    }
}
