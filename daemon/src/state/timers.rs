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

use std::collections::BTreeMap;

use hashbrown::HashMap;
use hashbrown::hash_map::EntryRef;
use weir_codec::state::TimeDomain;

use super::layout::{parse_key, unstamp};
use super::{Address, KeyedBackend, StateError};

/// The internal state that holds an operator's timers. Plugins cannot
/// declare a name in the `weir.` namespace.
pub const TIMER_STATE: &str = "weir.timers";

/// A fired timer: its time and its key.
pub type Fired = (i64, Vec<u8>);

/// Pending timers of one domain: keys by time, so the many keys of one
/// window end share an entry and a repeated registration allocates nothing.
/// The keys of one time are a hash set, not a sorted one: a million keys
/// whose windows end together make one set, where a B-tree insert costs a
/// dozen cache misses. Timers of one time fire in no particular key order
/// (as in Flink).
type Queue = BTreeMap<i64, HashMap<Vec<u8>, ()>>;

/// The pending timers of one instance, by domain, in firing order.
#[derive(Debug, Default)]
pub struct TimerQueue {
    event: Queue,
    processing: Queue,
    len: usize,
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

    /// Adds a timer; false if it was there.
    pub fn insert(&mut self, domain: TimeDomain, key: &[u8], time: i64) -> bool {
        // One hash lookup, and the key copied only when it is new.
        match self
            .queue_mut(domain)
            .entry(time)
            .or_default()
            .entry_ref(key)
        {
            EntryRef::Occupied(_) => false,
            EntryRef::Vacant(slot) => {
                slot.insert(());
                self.len += 1;
                true
            }
        }
    }

    /// Removes a timer; false if there was none.
    pub fn remove(&mut self, domain: TimeDomain, key: &[u8], time: i64) -> bool {
        let queue = self.queue_mut(domain);
        let Some(keys) = queue.get_mut(&time) else {
            return false;
        };
        let removed = keys.remove(key).is_some();
        if keys.is_empty() {
            queue.remove(&time);
        }
        self.len -= usize::from(removed);
        removed
    }

    /// Whether this timer is pending.
    pub fn contains(&self, domain: TimeDomain, key: &[u8], time: i64) -> bool {
        self.queue(domain)
            .get(&time)
            .is_some_and(|keys| keys.contains_key(key))
    }

    /// Takes up to `max` timers of `domain` due at `now` (time ≤ now), in
    /// time order.
    pub fn pop_due(&mut self, domain: TimeDomain, now: i64, max: usize) -> Vec<Fired> {
        let queue = self.queue_mut(domain);
        let mut fired = Vec::new();
        while fired.len() < max {
            let Some(mut entry) = queue.first_entry() else {
                break;
            };
            let time = *entry.key();
            if time > now {
                break;
            }
            let room = max - fired.len();
            if entry.get().len() <= room {
                fired.extend(entry.remove().into_keys().map(|k| (time, k)));
            } else {
                // Stops after `room`: the rest stay.
                let taken = entry.get_mut().extract_if(|_, _| true).take(room);
                fired.extend(taken.map(|(k, ())| (time, k)));
            }
        }
        self.len -= fired.len();
        fired
    }

    /// When the next timer of `domain` is due, if any is pending.
    pub fn next(&self, domain: TimeDomain) -> Option<i64> {
        self.queue(domain).keys().next().copied()
    }

    /// Pending timers of both domains.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
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
                queue.insert(domain, at.key, time);
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
    fn the_queue_fires_due_timers_in_time_order_once() {
        let mut q = TimerQueue::default();
        assert!(q.insert(TimeDomain::EventTime, b"b", 20));
        assert!(q.insert(TimeDomain::EventTime, b"a", 20));
        assert!(q.insert(TimeDomain::EventTime, b"c", 10));
        assert!(
            !q.insert(TimeDomain::EventTime, b"c", 10),
            "one per key and time"
        );
        assert!(q.insert(TimeDomain::ProcessingTime, b"c", 10));
        assert_eq!(q.len(), 4);
        assert_eq!(q.next(TimeDomain::EventTime), Some(10));
        assert_eq!(q.pop_due(TimeDomain::EventTime, 9, 10), vec![]);
        let popped = q.pop_due(TimeDomain::EventTime, 20, 2);
        assert_eq!(popped[0], (10, b"c".to_vec()), "time order first");
        assert_eq!(popped[1].0, 20);
        let other: &[u8] = if popped[1].1 == b"a" { b"b" } else { b"a" };
        assert!(q.remove(TimeDomain::EventTime, other, 20));
        assert!(!q.remove(TimeDomain::EventTime, other, 20));
        assert_eq!(q.pop_due(TimeDomain::EventTime, i64::MAX, 10), vec![]);
        assert_eq!(q.len(), 1, "the processing-time timer is untouched");
    }
}
