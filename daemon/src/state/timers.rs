//! Keyed timers (Flink's timer service): one per (key, domain, time), kept
//! as keyed state so checkpoints, key groups and rescaling treat them as
//! they treat every other state, with an in-memory queue per domain that
//! says which fires next.
//!
//! A key's timers are the value of the internal value state [`TIMER_STATE`]
//! for that key: 9-byte entries (the domain, then the time big-endian with
//! the sign flipped, so they sort by time), sorted. Most keys have one or two
//! timers (a window's end, its cleanup), and a value that short sits in the
//! heap backend's table itself: registering a timer allocates nothing there,
//! which a map state entry (a map per key) did, at twice the cost per timer.
//! The queue is rebuilt from those values when an instance starts from a
//! checkpoint, for the key groups it owns, whatever parallelism saved them.
//!
//! The stored timers are the truth; the queue only orders them. It is not
//! told of deletions: a deleted timer's entry stays until it comes due or
//! the queue is compacted, and firing skips every entry the stored timers
//! no longer hold. So registering a timer costs one lookup (the key's stored
//! timers, which say whether it is new) and an append, where a queue that
//! also answered "is this pending?" cost a second lookup in a table of a
//! million keys, which misses the CPU cache as the first does.

use std::collections::BTreeMap;

use weir_codec::state::TimeDomain;

use super::layout::{parse_key, unstamp};
use super::{Address, KeyedBackend, StateError};

/// The internal state that holds an operator's timers. Plugins cannot
/// declare a name in the `weir.` namespace.
pub const TIMER_STATE: &str = "weir.timers";

/// A fired timer: its time and its key.
pub type Fired = (i64, Vec<u8>);

/// Queued timers of one domain: keys by time, so the many keys of one window
/// end share an entry. Keys of one time fire in no particular order (as in
/// Flink).
type Queue = BTreeMap<i64, Vec<Vec<u8>>>;

/// Below this many stale entries the queue is never compacted.
const MIN_STALE_TO_COMPACT: usize = 4096;

/// The timers of one instance, by domain, in firing order; may hold entries
/// of timers deleted since (stale), never misses a pending one.
#[derive(Debug, Default)]
pub struct TimerQueue {
    event: Queue,
    processing: Queue,
    /// Timers pending (in the stored timers).
    pending: usize,
    /// Entries whose timer is no longer pending: deleted, or queued twice.
    stale: usize,
}

impl TimerQueue {
    fn queue(&self, domain: TimeDomain) -> &Queue {
        match domain {
            TimeDomain::EventTime => &self.event,
            TimeDomain::ProcessingTime => &self.processing,
        }
    }

    fn queue_mut(&mut self, domain: TimeDomain) -> &mut Queue {
        match domain {
            TimeDomain::EventTime => &mut self.event,
            TimeDomain::ProcessingTime => &mut self.processing,
        }
    }

    /// Queues a timer the stored timers just took as new.
    pub fn push(&mut self, domain: TimeDomain, key: &[u8], time: i64) {
        self.queue_mut(domain)
            .entry(time)
            .or_default()
            .push(key.to_vec());
        self.pending += 1;
    }

    /// Notes that a pending timer was deleted from the stored timers: its
    /// entry here is stale.
    pub fn deleted(&mut self) {
        self.pending = self.pending.saturating_sub(1);
        self.stale += 1;
    }

    /// Takes up to `max` entries of `domain` due at `now` (time ≤ now), in
    /// time order. Each must then be checked against the stored timers and
    /// reported to [`TimerQueue::settle`].
    pub fn pop_due(&mut self, domain: TimeDomain, now: i64, max: usize) -> Vec<Fired> {
        let queue = self.queue_mut(domain);
        let mut due = Vec::new();
        while due.len() < max {
            let Some(mut entry) = queue.first_entry() else {
                break;
            };
            let time = *entry.key();
            if time > now {
                break;
            }
            let room = max - due.len();
            let keys = entry.get_mut();
            if keys.len() <= room {
                due.extend(entry.remove().into_iter().map(|k| (time, k)));
            } else {
                // The last `room`: the rest stay.
                let taken = keys.split_off(keys.len() - room);
                due.extend(taken.into_iter().map(|k| (time, k)));
            }
        }
        due
    }

    /// Reports what became of entries [`TimerQueue::pop_due`] took: `fired`
    /// were pending and fired, `stale` were not.
    pub fn settle(&mut self, fired: usize, stale: usize) {
        self.pending = self.pending.saturating_sub(fired);
        self.stale = self.stale.saturating_sub(stale);
    }

    /// When the next entry of `domain` is due, if any is queued (its timer
    /// may have been deleted since).
    pub fn next(&self, domain: TimeDomain) -> Option<i64> {
        self.queue(domain).keys().next().copied()
    }

    /// Pending timers of both domains.
    pub fn len(&self) -> usize {
        self.pending
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// Whether stale entries outnumber pending timers (and are many): then
    /// [`TimerQueue::compact`] costs no more, spread over the deletions that
    /// made them, than those deletions would have cost a queue that removed
    /// entries as they went.
    pub fn needs_compaction(&self) -> bool {
        self.stale >= MIN_STALE_TO_COMPACT && self.stale > self.pending
    }

    /// Drops the stale entries: those `pending` says are not pending, and
    /// second entries of one timer.
    pub fn compact(
        &mut self,
        mut pending: impl FnMut(TimeDomain, &[u8], i64) -> Result<bool, StateError>,
    ) -> Result<(), StateError> {
        let mut kept = 0;
        for domain in [TimeDomain::EventTime, TimeDomain::ProcessingTime] {
            let queue = std::mem::take(self.queue_mut(domain));
            let mut compacted = Queue::new();
            for (time, mut keys) in queue {
                keys.sort_unstable();
                keys.dedup();
                let mut live = Vec::with_capacity(keys.len());
                for key in keys {
                    if pending(domain, &key, time)? {
                        live.push(key);
                    }
                }
                if !live.is_empty() {
                    kept += live.len();
                    compacted.insert(time, live);
                }
            }
            *self.queue_mut(domain) = compacted;
        }
        self.pending = kept;
        self.stale = 0;
        Ok(())
    }
}

/// The bytes of one timer in a key's [`TIMER_STATE`] value.
pub const ENTRY_LEN: usize = 9;

/// A timer's entry in a key's [`TIMER_STATE`] value.
pub fn entry_key(domain: TimeDomain, time: i64) -> [u8; ENTRY_LEN] {
    let mut k = [0u8; 9];
    k[0] = domain.code();
    // Flipping the sign bit makes the big-endian bytes sort as the numbers do.
    k[1..].copy_from_slice(&((time as u64) ^ (1 << 63)).to_be_bytes());
    k
}

/// Adds `entry` to a key's timers (sorted entries); false if it was there.
pub fn add_entry(entries: &mut Vec<u8>, entry: &[u8; ENTRY_LEN]) -> bool {
    match search(entries, entry) {
        Ok(_) => false,
        Err(at) => {
            entries.splice(at..at, entry.iter().copied());
            true
        }
    }
}

/// Removes `entry` from a key's timers; false if it was not there.
pub fn remove_entry(entries: &mut Vec<u8>, entry: &[u8; ENTRY_LEN]) -> bool {
    match search(entries, entry) {
        Ok(at) => {
            entries.drain(at..at + ENTRY_LEN);
            true
        }
        Err(_) => false,
    }
}

/// Where `entry` is (or would go) in sorted entries, as a byte offset.
fn search(entries: &[u8], entry: &[u8; ENTRY_LEN]) -> Result<usize, usize> {
    // A key has a timer or two: a scan beats a binary search.
    for (i, stored) in entries.chunks(ENTRY_LEN).enumerate() {
        match stored.cmp(entry.as_slice()) {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => return Ok(i * ENTRY_LEN),
            std::cmp::Ordering::Greater => return Err(i * ENTRY_LEN),
        }
    }
    Err(entries.len())
}

/// The domain and time of a timer's entry.
pub fn parse_entry_key(k: &[u8]) -> Result<(TimeDomain, i64), StateError> {
    let bad = || StateError::Storage(format!("a stored timer is malformed ({} bytes)", k.len()));
    let (&code, time) = k.split_first().ok_or_else(bad)?;
    let domain = TimeDomain::from_code(u32::from(code)).ok_or_else(bad)?;
    let bytes: [u8; 8] = time.try_into().map_err(|_| bad())?;
    Ok((domain, (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64))
}

/// Rebuilds the queue from the timers stored in value state `state` of `groups`.
pub fn load(
    backend: &mut dyn KeyedBackend,
    state: u32,
    groups: std::ops::Range<u32>,
) -> Result<TimerQueue, StateError> {
    let mut queue = TimerQueue::default();
    for group in groups {
        // Key groups are below max_parallelism, itself at most u16::MAX + 1.
        for (stored, value) in backend.state_items(group as u16, state)? {
            let (at, _): (Address<'_>, _) = parse_key(&stored)?;
            let (_, entries) = unstamp(&value)?;
            if entries.len() % ENTRY_LEN != 0 {
                return Err(StateError::Storage(format!(
                    "the stored timers of a key are malformed ({} bytes)",
                    entries.len()
                )));
            }
            for entry in entries.chunks(ENTRY_LEN) {
                let (domain, time) = parse_entry_key(entry)?;
                queue.push(domain, at.key, time);
            }
        }
    }
    Ok(queue)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_keys_sort_by_time_and_round_trip() {
        let times = [i64::MIN, -1_000, -1, 0, 1, 59_999, i64::MAX];
        let keys: Vec<_> = times
            .iter()
            .map(|&t| entry_key(TimeDomain::EventTime, t))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        for (&t, k) in times.iter().zip(&keys) {
            assert_eq!(parse_entry_key(k).unwrap(), (TimeDomain::EventTime, t));
        }
        assert!(parse_entry_key(&[7, 0]).is_err());
        assert!(parse_entry_key(&[]).is_err());
    }

    #[test]
    fn a_keys_entries_stay_sorted_and_unique() {
        let mut entries = Vec::new();
        let e = |t| entry_key(TimeDomain::EventTime, t);
        assert!(add_entry(&mut entries, &e(20)));
        assert!(add_entry(&mut entries, &e(-5)));
        assert!(add_entry(
            &mut entries,
            &entry_key(TimeDomain::ProcessingTime, 1)
        ));
        assert!(!add_entry(&mut entries, &e(20)));
        let times: Vec<_> = entries
            .chunks(ENTRY_LEN)
            .map(|c| parse_entry_key(c).unwrap())
            .collect();
        assert_eq!(
            times,
            [
                (TimeDomain::EventTime, -5),
                (TimeDomain::EventTime, 20),
                (TimeDomain::ProcessingTime, 1)
            ]
        );
        assert!(remove_entry(&mut entries, &e(-5)));
        assert!(!remove_entry(&mut entries, &e(-5)));
        assert_eq!(
            entries,
            e(20)
                .iter()
                .chain(&entry_key(TimeDomain::ProcessingTime, 1))
                .copied()
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_queue_gives_due_entries_in_time_order_and_drops_stale_ones_when_compacted() {
        let mut q = TimerQueue::default();
        q.push(TimeDomain::EventTime, b"b", 20);
        q.push(TimeDomain::EventTime, b"a", 20);
        q.push(TimeDomain::EventTime, b"c", 10);
        q.push(TimeDomain::ProcessingTime, b"c", 10);
        assert_eq!(q.len(), 4);
        assert_eq!(q.next(TimeDomain::EventTime), Some(10));
        assert_eq!(q.pop_due(TimeDomain::EventTime, 9, 10), vec![]);
        let popped = q.pop_due(TimeDomain::EventTime, 20, 2);
        assert_eq!(popped[0], (10, b"c".to_vec()), "time order first");
        assert_eq!(popped[1].0, 20);
        q.settle(2, 0);
        assert_eq!(q.len(), 2);
        // The other key of time 20 is deleted: its entry stays, stale.
        q.deleted();
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop_due(TimeDomain::EventTime, i64::MAX, 10).len(), 1);
        q.settle(0, 1);
        assert_eq!(q.len(), 1, "the processing-time timer is untouched");

        let mut q = TimerQueue::default();
        for n in 0..MIN_STALE_TO_COMPACT as u32 + 1 {
            q.push(TimeDomain::EventTime, &n.to_be_bytes(), i64::from(n % 3));
            q.deleted();
        }
        q.push(TimeDomain::EventTime, b"kept", 1);
        q.push(TimeDomain::EventTime, b"kept", 1);
        q.deleted();
        assert!(q.needs_compaction());
        q.compact(|_, key, _| Ok(key == b"kept")).unwrap();
        assert!(!q.needs_compaction());
        assert_eq!(q.len(), 1);
        assert_eq!(
            q.pop_due(TimeDomain::EventTime, i64::MAX, usize::MAX),
            vec![(1, b"kept".to_vec())],
            "one entry per timer after compaction"
        );
    }
}
