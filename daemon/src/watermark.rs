//! Watermarks: how far event time has got, carried in-band on the same
//! channels as records and barriers, as in Flink.
//!
//! A source with a `watermark` strategy follows the largest timestamp it has
//! sent and, after each batch, announces `largest - max_out_of_orderness - 1`
//! when that has advanced (Flink's bounded out-of-orderness generator); after
//! `idle_timeout` without a record it announces itself idle, so it no longer
//! holds the rest back. At the end of its input every source announces the
//! largest watermark, so everything waiting on event time completes before
//! the final checkpoint.
//!
//! A task's watermark ([`Valve`]) is the least of its open, active input
//! channels' watermarks, and never goes back. An idle channel does not count
//! until a record or a watermark arrives on it; one that comes back behind the
//! task's watermark counts again once it has caught up. A channel that ended
//! does not count. When every open channel is idle, so is the task.

use std::time::{Duration, Instant};

/// What a channel carries about event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watermark {
    /// No record with a timestamp at or before this (ms since the epoch)
    /// will follow on this channel.
    Time(i64),
    /// The producer has nothing to send for now: do not wait for it.
    Idle,
}

/// The watermark that ends every input: everything has happened.
pub const END_OF_TIME: i64 = i64::MAX;

#[derive(Debug, Clone, Copy)]
struct Channel {
    mark: i64,
    idle: bool,
    open: bool,
    /// Whether its watermark has reached the task's (so it counts in the
    /// least); false for a channel that came back from idle behind it.
    aligned: bool,
}

impl Channel {
    const fn new() -> Self {
        Self {
            mark: i64::MIN,
            idle: false,
            open: true,
            aligned: true,
        }
    }

    fn counts(&self) -> bool {
        self.open && !self.idle && self.aligned
    }
}

/// Combines the watermarks of a task's input channels into the task's.
#[derive(Debug, Clone)]
pub struct Valve {
    channels: Vec<Channel>,
    /// The task's watermark, once it has one.
    current: Option<i64>,
    /// Whether the task has announced itself idle.
    idle: bool,
}

impl Valve {
    /// A valve over `n` channels, none of which has a watermark yet.
    pub fn new(n: usize) -> Self {
        Self {
            channels: vec![Channel::new(); n],
            current: None,
            idle: false,
        }
    }

    /// Adds `n` channels (producers a reload started), with no watermark yet.
    pub fn add(&mut self, n: usize) {
        self.channels.extend(std::iter::repeat_n(Channel::new(), n));
    }

    /// The task's watermark, if it has one.
    pub fn current(&self) -> Option<i64> {
        self.current
    }

    /// Channel `i` delivered `mark`: what the task announces, if anything.
    pub fn on_watermark(&mut self, i: usize, mark: Watermark) -> Option<Watermark> {
        let channel = self.channels.get_mut(i)?;
        match mark {
            Watermark::Time(t) => {
                channel.idle = false;
                channel.mark = channel.mark.max(t);
                if !channel.aligned && self.current.is_none_or(|c| channel.mark >= c) {
                    channel.aligned = true;
                }
            }
            Watermark::Idle => channel.idle = true,
        }
        self.recompute()
    }

    /// Channel `i` delivered records: it is active again.
    pub fn on_records(&mut self, i: usize) -> Option<Watermark> {
        let current = self.current;
        let channel = self.channels.get_mut(i)?;
        if !channel.idle {
            return None;
        }
        channel.idle = false;
        // Back behind the task's watermark: it counts again once it has
        // caught up, so the task's watermark does not go back.
        channel.aligned = current.is_none_or(|c| channel.mark >= c);
        self.recompute()
    }

    /// Channel `i` ended.
    pub fn on_end(&mut self, i: usize) -> Option<Watermark> {
        let channel = self.channels.get_mut(i)?;
        channel.open = false;
        self.recompute()
    }

    fn recompute(&mut self) -> Option<Watermark> {
        let mut open = self.channels.iter().filter(|c| c.open).peekable();
        // Every open channel idle: the task is idle too. (One that is
        // active but behind keeps it active: its records are on their way.)
        if open.peek().is_some() && open.all(|c| c.idle) {
            return (!std::mem::replace(&mut self.idle, true)).then_some(Watermark::Idle);
        }
        let was_idle = std::mem::replace(&mut self.idle, false);
        let least = self
            .channels
            .iter()
            .filter(|c| c.counts())
            .map(|c| c.mark)
            .min();
        if let Some(least) = least
            && least > i64::MIN
            && self.current.is_none_or(|c| least > c)
        {
            self.current = Some(least);
            return Some(Watermark::Time(least));
        }
        // Active again without a new watermark: say so with the current
        // one, so consumers count this task again.
        match (was_idle, self.current) {
            (true, Some(c)) => Some(Watermark::Time(c)),
            _ => None,
        }
    }
}

/// A source's watermark strategy: bounded out-of-orderness, with idleness.
#[derive(Debug, Clone)]
pub struct Generator {
    delay_ms: i64,
    idle_timeout: Option<Duration>,
    largest: Option<i64>,
    announced: Option<i64>,
    last_record: Instant,
    idle: bool,
    /// Restored from a checkpoint, and not announced yet.
    resumed: bool,
}

impl Generator {
    /// A generator that lets records be `max_out_of_orderness` late and
    /// announces the source idle after `idle_timeout` without records.
    pub fn new(max_out_of_orderness: Duration, idle_timeout: Option<Duration>) -> Self {
        Self {
            delay_ms: i64::try_from(max_out_of_orderness.as_millis()).unwrap_or(i64::MAX),
            idle_timeout,
            largest: None,
            announced: None,
            last_record: Instant::now(),
            idle: false,
            resumed: false,
        }
    }

    /// Goes on from a checkpoint, where the source had sent timestamps up
    /// to `largest`: the watermark it had is announced first
    /// ([`Generator::take_resumed`]).
    pub fn resume(&mut self, largest: i64) {
        self.largest = Some(largest);
        self.resumed = true;
    }

    /// The watermark a restored source had, once, before anything it sends.
    pub fn take_resumed(&mut self) -> Option<Watermark> {
        if !std::mem::replace(&mut self.resumed, false) {
            return None;
        }
        let mark = self
            .largest?
            .saturating_sub(self.delay_ms)
            .saturating_sub(1);
        self.announced = Some(mark);
        Some(Watermark::Time(mark))
    }

    /// The largest timestamp it has seen.
    pub fn largest(&self) -> Option<i64> {
        self.largest
    }

    /// After a batch whose largest timestamp was `largest` (if it had any):
    /// what to announce.
    pub fn after_batch(&mut self, largest: Option<i64>, records: bool) -> Option<Watermark> {
        if records {
            self.last_record = Instant::now();
        }
        let was_idle = std::mem::replace(&mut self.idle, false) && records;
        if let Some(t) = largest {
            self.largest = Some(self.largest.map_or(t, |l| l.max(t)));
        }
        let mark = self
            .largest?
            .saturating_sub(self.delay_ms)
            .saturating_sub(1);
        if self.announced.is_none_or(|a| mark > a) {
            self.announced = Some(mark);
            return Some(Watermark::Time(mark));
        }
        was_idle.then_some(Watermark::Time(mark))
    }

    /// Between batches, with nothing read: `Idle` once `idle_timeout` has
    /// passed since the last record.
    pub fn on_tick(&mut self, now: Instant) -> Option<Watermark> {
        let timeout = self.idle_timeout?;
        if self.idle || now.duration_since(self.last_record) < timeout {
            return None;
        }
        self.idle = true;
        Some(Watermark::Idle)
    }
}

/// A partitioned source's watermark (Flink's per-split watermarks): each
/// partition follows its own largest timestamp, the source announces the
/// least of its partitions' that are not idle, and it is idle when all are
/// (or it owns none).
#[derive(Debug, Clone)]
pub struct PartitionWatermarks {
    delay_ms: i64,
    idle_timeout: Option<Duration>,
    parts: Vec<PartitionClock>,
    announced: Option<i64>,
    idle: bool,
}

#[derive(Debug, Clone, Copy)]
struct PartitionClock {
    largest: Option<i64>,
    last_record: Instant,
    idle: bool,
}

impl PartitionWatermarks {
    /// Bounded out-of-orderness per partition, each idle after `idle_timeout`
    /// without records.
    pub fn new(max_out_of_orderness: Duration, idle_timeout: Option<Duration>) -> Self {
        Self {
            delay_ms: i64::try_from(max_out_of_orderness.as_millis()).unwrap_or(i64::MAX),
            idle_timeout,
            parts: Vec::new(),
            announced: None,
            idle: false,
        }
    }

    /// Adds a partition (index = the number added before), resuming from the
    /// largest timestamp a checkpoint recorded for it.
    pub fn add(&mut self, largest: Option<i64>) -> usize {
        self.parts.push(PartitionClock {
            largest,
            last_record: Instant::now(),
            idle: false,
        });
        self.parts.len() - 1
    }

    /// The largest timestamp partition `part` has seen.
    pub fn largest(&self, part: usize) -> Option<i64> {
        self.parts.get(part).and_then(|p| p.largest)
    }

    /// A record of partition `part` at `time` (if it has one) was read.
    pub fn on_record(&mut self, part: usize, time: Option<i64>, now: Instant) {
        if let Some(p) = self.parts.get_mut(part) {
            p.last_record = now;
            p.idle = false;
            if let Some(t) = time {
                p.largest = Some(p.largest.map_or(t, |l| l.max(t)));
            }
        }
    }

    /// What to announce now: partitions that have gone `idle_timeout`
    /// without records stop counting; the least of the others' watermarks,
    /// when it has advanced (or the source comes back from idle); `Idle`
    /// once every partition is.
    pub fn poll(&mut self, now: Instant) -> Option<Watermark> {
        if let Some(timeout) = self.idle_timeout {
            for p in &mut self.parts {
                if !p.idle && now.duration_since(p.last_record) >= timeout {
                    p.idle = true;
                }
            }
        }
        let active: Vec<&PartitionClock> = self.parts.iter().filter(|p| !p.idle).collect();
        if active.is_empty() {
            // A source that owns no partition holds no one back.
            let idle = self.idle_timeout.is_some() || self.parts.is_empty();
            if idle && !self.idle {
                self.idle = true;
                return Some(Watermark::Idle);
            }
            return None;
        }
        // A partition that has sent nothing yet holds the rest back until it
        // does or goes idle, as in Flink.
        let mark = active
            .iter()
            .map(|p| {
                p.largest
                    .map(|l| l.saturating_sub(self.delay_ms).saturating_sub(1))
            })
            .min()
            .flatten()?;
        let was_idle = std::mem::replace(&mut self.idle, false);
        if self.announced.is_none_or(|a| mark > a) {
            self.announced = Some(mark);
            return Some(Watermark::Time(mark));
        }
        was_idle.then(|| Watermark::Time(self.announced.unwrap_or(mark)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use Watermark::{Idle, Time};

    #[test]
    fn a_task_holds_the_least_of_its_channels_and_never_goes_back() {
        let mut v = Valve::new(2);
        assert_eq!(v.on_watermark(0, Time(10)), None, "channel 1 has none yet");
        assert_eq!(v.on_watermark(1, Time(5)), Some(Time(5)));
        assert_eq!(v.on_watermark(1, Time(20)), Some(Time(10)));
        assert_eq!(
            v.on_watermark(1, Time(3)),
            None,
            "a channel never goes back"
        );
        assert_eq!(v.on_watermark(0, Time(15)), Some(Time(15)));
        assert_eq!(v.current(), Some(15));
        // An ended channel no longer holds the rest back.
        assert_eq!(v.on_end(0), Some(Time(20)));
        assert_eq!(
            v.on_watermark(1, Time(END_OF_TIME)),
            Some(Time(END_OF_TIME))
        );
    }

    #[test]
    fn an_idle_channel_stops_holding_back_until_it_catches_up() {
        let mut v = Valve::new(2);
        v.on_watermark(0, Time(100));
        assert_eq!(v.on_watermark(1, Time(10)), Some(Time(10)));
        assert_eq!(v.on_watermark(1, Idle), Some(Time(100)));
        // Back with records, behind the task: does not pull it back...
        assert_eq!(v.on_records(1), None);
        assert_eq!(v.on_watermark(0, Time(150)), Some(Time(150)));
        assert_eq!(v.on_watermark(1, Time(120)), None);
        // ...and counts again once it has caught up.
        assert_eq!(v.on_watermark(1, Time(160)), None);
        assert_eq!(v.on_watermark(0, Time(300)), Some(Time(160)));
    }

    #[test]
    fn a_task_whose_every_channel_is_idle_is_idle_and_comes_back() {
        let mut v = Valve::new(2);
        v.on_watermark(0, Time(7));
        assert_eq!(v.on_watermark(1, Time(9)), Some(Time(7)));
        assert_eq!(v.on_watermark(0, Idle), Some(Time(9)));
        assert_eq!(v.on_watermark(1, Idle), Some(Idle));
        assert_eq!(v.on_watermark(1, Idle), None);
        // Active again at its old watermark: announced, so consumers count
        // this task again.
        assert_eq!(v.on_records(1), Some(Time(9)));
    }

    #[test]
    fn a_channel_back_from_idle_behind_the_task_makes_it_active_not_idle() {
        let mut v = Valve::new(2);
        v.on_watermark(0, Time(100));
        v.on_watermark(1, Time(10));
        v.on_watermark(1, Idle);
        assert_eq!(v.on_watermark(0, Idle), Some(Idle));
        // Channel 1 sends again, behind the task's 100: the task is active
        // (its records may follow), at the watermark it had.
        assert_eq!(v.on_records(1), Some(Time(100)));
        assert_eq!(v.on_watermark(1, Time(50)), None);
        // Caught up, it counts; channel 0, idle, does not.
        assert_eq!(v.on_watermark(1, Time(120)), Some(Time(120)));
        assert_eq!(v.on_watermark(1, Time(130)), Some(Time(130)));
    }

    #[test]
    fn a_source_lags_its_largest_timestamp_and_goes_idle() {
        let mut g = Generator::new(Duration::from_secs(5), Some(Duration::from_millis(50)));
        assert_eq!(g.after_batch(None, true), None);
        assert_eq!(g.after_batch(Some(20_000), true), Some(Time(14_999)));
        assert_eq!(
            g.after_batch(Some(12_000), true),
            None,
            "late records do not move it"
        );
        assert_eq!(g.after_batch(Some(30_000), true), Some(Time(24_999)));
        let later = Instant::now() + Duration::from_millis(60);
        assert_eq!(g.on_tick(later), Some(Idle));
        assert_eq!(g.on_tick(later), None);
        // A record ends the idleness, even one that does not move the mark.
        assert_eq!(g.after_batch(Some(1), true), Some(Time(24_999)));
        let mut never = Generator::new(Duration::ZERO, None);
        assert_eq!(never.on_tick(later), None);
    }

    #[test]
    fn a_partitioned_source_holds_its_slowest_active_partition() {
        let start = Instant::now();
        let later = |ms| start + Duration::from_millis(ms);
        let mut w =
            PartitionWatermarks::new(Duration::from_millis(10), Some(Duration::from_secs(1)));
        let (a, b) = (w.add(None), w.add(Some(100)));
        assert_eq!(w.poll(start), None, "partition a has sent nothing yet");
        w.on_record(a, Some(50), later(1));
        assert_eq!(w.poll(later(1)), Some(Time(39)));
        w.on_record(a, Some(500), later(2));
        assert_eq!(
            w.poll(later(2)),
            Some(Time(89)),
            "b (resumed at 100) holds it"
        );
        w.on_record(a, Some(600), later(1500));
        assert_eq!(
            w.poll(later(1500)),
            Some(Time(589)),
            "b has gone a second without records: idle, it no longer counts"
        );
        w.on_record(b, Some(200), later(1600));
        assert_eq!(
            w.poll(later(1600)),
            None,
            "b is back, behind: the watermark never goes back"
        );
        assert_eq!(w.poll(later(3000)), Some(Idle), "both idle");
        w.on_record(b, Some(700), later(3001));
        assert_eq!(w.poll(later(3001)), Some(Time(689)));
    }

    #[test]
    fn a_source_with_no_partitions_is_idle() {
        let mut w = PartitionWatermarks::new(Duration::ZERO, None);
        assert_eq!(w.poll(Instant::now()), Some(Idle));
        assert_eq!(w.poll(Instant::now()), None, "once");
    }
}
