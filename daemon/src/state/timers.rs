//! Keyed timers (Flink's timer service): one per (key, domain, time), kept
//! as keyed state so checkpoints, key groups and rescaling treat them as
//! they treat every other state, with an in-memory queue per domain that
//! says which fires next.
//!
//! A timer is an entry of the internal map state [`TIMER_STATE`]: its record
//! key is the timer's key, its map key the domain and the time (big-endian,
//! sign flipped, so a key's timers sort by time), its value empty. The queue
//! is rebuilt from those entries when an instance starts from a checkpoint,
//! for the key groups it owns, whatever parallelism saved them.

use std::collections::{BTreeMap, BTreeSet};

use weir_codec::state::TimeDomain;

use super::layout::parse_key;
use super::{Address, KeyedBackend, StateError};

/// The internal state that holds an operator's timers. Plugins cannot
/// declare a name in the `weir.` namespace.
pub const TIMER_STATE: &str = "weir.timers";

/// A fired timer: its time and its key.
pub type Fired = (i64, Vec<u8>);

/// Pending timers of one domain: keys by time, so the many keys of one
/// window end share an entry and a repeated registration allocates nothing.
type Queue = BTreeMap<i64, BTreeSet<Box<[u8]>>>;

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
        if self.contains(domain, key, time) {
            return false;
        }
        self.queue_mut(domain)
            .entry(time)
            .or_default()
            .insert(Box::from(key));
        self.len += 1;
        true
    }

    /// Removes a timer; false if there was none.
    pub fn remove(&mut self, domain: TimeDomain, key: &[u8], time: i64) -> bool {
        let queue = self.queue_mut(domain);
        let Some(keys) = queue.get_mut(&time) else {
            return false;
        };
        let removed = keys.remove(key);
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
            .is_some_and(|keys| keys.contains(key))
    }

    /// Takes up to `max` timers of `domain` due at `now` (time ≤ now), in
    /// time order, then key order.
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
            let keys = entry.get_mut();
            while fired.len() < max {
                match keys.pop_first() {
                    Some(key) => fired.push((time, key.into_vec())),
                    None => break,
                }
            }
            if keys.is_empty() {
                entry.remove();
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

/// The map key of a timer in [`TIMER_STATE`].
pub fn entry_key(domain: TimeDomain, time: i64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = domain.code();
    // Flipping the sign bit makes the big-endian bytes sort as the numbers do.
    k[1..].copy_from_slice(&((time as u64) ^ (1 << 63)).to_be_bytes());
    k
}

/// The domain and time of a timer's map key.
pub fn parse_entry_key(k: &[u8]) -> Result<(TimeDomain, i64), StateError> {
    let bad = || StateError::Storage(format!("a stored timer is malformed ({} bytes)", k.len()));
    let (&code, time) = k.split_first().ok_or_else(bad)?;
    let domain = TimeDomain::from_code(u32::from(code)).ok_or_else(bad)?;
    let bytes: [u8; 8] = time.try_into().map_err(|_| bad())?;
    Ok((domain, (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64))
}

/// Rebuilds the queue from the timers stored in state `state` of `groups`.
pub fn load(
    backend: &mut dyn KeyedBackend,
    state: u32,
    groups: std::ops::Range<u32>,
) -> Result<TimerQueue, StateError> {
    let mut queue = TimerQueue::default();
    for group in groups {
        // Key groups are below max_parallelism, itself at most u16::MAX + 1.
        for (stored, _) in backend.state_items(group as u16, state)? {
            let (at, map_key): (Address<'_>, _) = parse_key(&stored)?;
            let (domain, time) = parse_entry_key(map_key.unwrap_or_default())?;
            queue.insert(domain, at.key, time);
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
        assert_eq!(
            q.pop_due(TimeDomain::EventTime, 20, 2),
            vec![(10, b"c".to_vec()), (20, b"a".to_vec())]
        );
        assert!(q.remove(TimeDomain::EventTime, b"b", 20));
        assert!(!q.remove(TimeDomain::EventTime, b"b", 20));
        assert_eq!(q.pop_due(TimeDomain::EventTime, i64::MAX, 10), vec![]);
        assert_eq!(q.len(), 1, "the processing-time timer is untouched");
    }
}
