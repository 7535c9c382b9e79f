//! The input side of a task: several channels merged into one stream, with
//! checkpoint barriers aligned across them.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select};

use super::TaskError;
use crate::batch::{Batch, Message};
use crate::checkpoint::CheckpointId;
use crate::watermark::{Valve, Watermark};

/// What a task takes from its inputs next.
#[derive(Debug)]
pub enum Event {
    /// Records from one of the channels, from input `input` (an index into
    /// the task's `inputs`).
    Batch {
        /// The records.
        batch: Batch,
        /// Which input they came from.
        input: u32,
    },
    /// A deadline given to [`InputGate::next_event_until`] passed first.
    Tick,
    /// Barrier `n` has come on every open channel: everything before it, on
    /// every channel, has been handed out, and nothing after it yet.
    Barrier(CheckpointId),
    /// The task's watermark advanced, or it went idle (or came back).
    Watermark(Watermark),
    /// Every channel has ended.
    End,
}

/// The input channels of one task instance, merged.
///
/// Barrier alignment (as in Flink's aligned checkpoints): once a channel has
/// delivered barrier `n`, it is not read again until barrier `n` has come on
/// every other open channel, so a snapshot taken at [`Event::Barrier`] reflects
/// exactly the records before the barrier on every input. A channel that ends
/// counts as aligned.
#[derive(Debug)]
pub struct InputGate {
    channels: Vec<Receiver<Message>>,
    open: Vec<bool>,
    open_count: usize,
    /// Channels that delivered the barrier being aligned.
    blocked: Vec<bool>,
    blocked_count: usize,
    aligning: Option<CheckpointId>,
    /// When the first channel delivered the barrier being aligned.
    aligning_since: Option<Instant>,
    /// How long the last aligned barrier held its first channel back.
    last_alignment: Duration,
    /// The channels' watermarks, combined.
    valve: Valve,
    /// A watermark to hand out before reading on.
    pending: Option<Watermark>,
}

impl InputGate {
    /// A gate over these channels.
    pub fn new(channels: Vec<Receiver<Message>>) -> Self {
        let n = channels.len();
        Self {
            open: vec![true; n],
            blocked: vec![false; n],
            channels,
            open_count: n,
            blocked_count: 0,
            aligning: None,
            aligning_since: None,
            last_alignment: Duration::ZERO,
            valve: Valve::new(n),
            pending: None,
        }
    }

    /// Adds channels (from producers a reload started). Called between events,
    /// never while a barrier is being aligned: right after the barrier at
    /// which the reload happens.
    pub fn add(&mut self, channels: Vec<Receiver<Message>>) {
        debug_assert!(self.aligning.is_none(), "channels added while aligning");
        let n = channels.len();
        self.channels.extend(channels);
        self.open.resize(self.open.len() + n, true);
        self.blocked.resize(self.blocked.len() + n, false);
        self.open_count += n;
        self.valve.add(n);
    }

    /// How long the barrier last returned by [`Self::next_event`] was being
    /// aligned: from its arrival on the first channel to its arrival on the
    /// last (zero with one input).
    pub fn last_alignment(&self) -> Duration {
        self.last_alignment
    }

    /// Messages waiting on the channels (backpressure from this task).
    pub fn queued(&self) -> usize {
        self.channels.iter().map(Receiver::len).sum()
    }

    /// The next batch, aligned barrier, or the end of every channel.
    pub fn next_event(&mut self) -> Result<Event, TaskError> {
        self.next_event_until(None)
    }

    /// [`Self::next_event`], or [`Event::Tick`] once `deadline` has passed
    /// with nothing to hand out (a processing-time timer is due).
    pub fn next_event_until(&mut self, deadline: Option<Instant>) -> Result<Event, TaskError> {
        if let Some(mark) = self.pending.take() {
            return Ok(Event::Watermark(mark));
        }
        loop {
            if let Some(id) = self.aligned() {
                return Ok(Event::Barrier(id));
            }
            if self.open_count == 0 {
                return Ok(Event::End);
            }
            let Some((index, message)) = self.recv_any(deadline)? else {
                return Ok(Event::Tick);
            };
            match message {
                Message::Batch { batch, input } => {
                    // A channel back from idle: announced after its records
                    // (it cannot move the watermark, only stop the idling).
                    if let Some(mark) = self.valve.on_records(index) {
                        self.pending = Some(mark);
                    }
                    return Ok(Event::Batch { batch, input });
                }
                Message::Watermark(mark) => {
                    if let Some(mark) = self.valve.on_watermark(index, mark) {
                        return Ok(Event::Watermark(mark));
                    }
                }
                Message::Barrier(id) => {
                    match self.aligning {
                        None => {
                            self.aligning = Some(id);
                            self.aligning_since = Some(Instant::now());
                        }
                        Some(current) if current == id => {}
                        Some(current) => {
                            return Err(TaskError::Protocol(format!(
                                "barrier {id} arrived while aligning barrier {current}"
                            )));
                        }
                    }
                    self.blocked[index] = true;
                    self.blocked_count += 1;
                }
                Message::End => {
                    self.open[index] = false;
                    self.open_count -= 1;
                    if let Some(mark) = self.valve.on_end(index)
                        && self.open_count > 0
                    {
                        return Ok(Event::Watermark(mark));
                    }
                }
            }
        }
    }

    /// The barrier being aligned, once every open channel has delivered it;
    /// unblocks them all.
    fn aligned(&mut self) -> Option<CheckpointId> {
        let id = self.aligning?;
        if self.blocked_count < self.open_count {
            return None;
        }
        self.blocked.fill(false);
        self.blocked_count = 0;
        self.aligning = None;
        self.last_alignment = self
            .aligning_since
            .take()
            .map_or(Duration::ZERO, |since| since.elapsed());
        Some(id)
    }

    /// A message from any readable channel; none if `deadline` passed first.
    fn recv_any(&self, deadline: Option<Instant>) -> Result<Option<(usize, Message)>, TaskError> {
        let readable = |i: &usize| self.open[*i] && !self.blocked[*i];
        if self.channels.len() == 1 && readable(&0) {
            let Some(deadline) = deadline else {
                return self.channels[0]
                    .recv()
                    .map(|m| Some((0, m)))
                    .map_err(|_| TaskError::UpstreamGone);
            };
            return match self.channels[0].recv_deadline(deadline) {
                Ok(m) => Ok(Some((0, m))),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => Ok(None),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    Err(TaskError::UpstreamGone)
                }
            };
        }
        let mut select = Select::new();
        let mut indices = Vec::with_capacity(self.open_count);
        for i in (0..self.channels.len()).filter(readable) {
            select.recv(&self.channels[i]);
            indices.push(i);
        }
        let op = match deadline {
            None => select.select(),
            Some(deadline) => match select.select_deadline(deadline) {
                Ok(op) => op,
                Err(_) => return Ok(None),
            },
        };
        let index = indices[op.index()];
        op.recv(&self.channels[index])
            .map(|m| Some((index, m)))
            .map_err(|_| TaskError::UpstreamGone)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use crossbeam_channel::unbounded;
    use weir_codec::BatchWriter;

    use super::*;

    fn batch(value: &str) -> Message {
        let mut w = BatchWriter::new();
        w.push(b"", value.as_bytes(), None);
        Message::Batch {
            batch: Batch::from_writer(w),
            input: 0,
        }
    }

    fn value(event: Event) -> String {
        match event {
            Event::Batch { batch, .. } => {
                String::from_utf8(batch.records().next().unwrap().value.to_vec()).unwrap()
            }
            Event::Tick => "tick".into(),
            Event::Barrier(id) => format!("barrier {id}"),
            Event::Watermark(mark) => format!("{mark:?}"),
            Event::End => "end".into(),
        }
    }

    #[test]
    fn a_channel_past_the_barrier_waits_for_the_others() {
        let (a, ra) = unbounded();
        let (b, rb) = unbounded();
        let mut gate = InputGate::new(vec![ra, rb]);
        // `a` is fast: its barrier and the records after it arrive first.
        a.send(batch("a1")).unwrap();
        a.send(Message::Barrier(1)).unwrap();
        a.send(batch("a2")).unwrap();
        a.send(Message::End).unwrap();
        let mut seen = vec![value(gate.next_event().unwrap())];
        // Only `b` may be read now; `a2` must not come before barrier 1.
        b.send(batch("b1")).unwrap();
        seen.push(value(gate.next_event().unwrap()));
        b.send(Message::Barrier(1)).unwrap();
        seen.push(value(gate.next_event().unwrap()));
        b.send(Message::End).unwrap();
        seen.push(value(gate.next_event().unwrap()));
        seen.push(value(gate.next_event().unwrap()));
        assert_eq!(seen, ["a1", "b1", "barrier 1", "a2", "end"]);
    }

    #[test]
    fn watermarks_come_out_combined_and_after_the_records_before_them() {
        use crate::watermark::Watermark::{Idle, Time};
        let (a, ra) = unbounded();
        let (b, rb) = unbounded();
        let mut gate = InputGate::new(vec![ra, rb]);
        let mut next = || value(gate.next_event().unwrap());
        a.send(Message::Watermark(Time(50))).unwrap();
        b.send(Message::Watermark(Time(30))).unwrap();
        // The first is held back by the other channel, the second is the least.
        assert_eq!(next(), "Time(30)");
        b.send(Message::Watermark(Idle)).unwrap();
        assert_eq!(next(), "Time(50)");
        // Back from idle behind the task: its records come, nothing goes back.
        b.send(batch("b1")).unwrap();
        assert_eq!(next(), "b1");
        a.send(Message::Watermark(Time(80))).unwrap();
        assert_eq!(next(), "Time(80)");
        a.send(Message::Watermark(Idle)).unwrap();
        b.send(Message::Watermark(Idle)).unwrap();
        assert_eq!(next(), "Idle");
        b.send(Message::End).unwrap();
        a.send(batch("a1")).unwrap();
        assert_eq!(next(), "a1");
        // Active again: announced at the watermark it had.
        assert_eq!(next(), "Time(80)");
        a.send(Message::End).unwrap();
        assert_eq!(next(), "end");
    }

    #[test]
    fn an_ended_channel_counts_as_aligned() {
        let (a, ra) = unbounded();
        let (b, rb) = unbounded();
        let mut gate = InputGate::new(vec![ra, rb]);
        a.send(Message::Barrier(4)).unwrap();
        b.send(batch("b1")).unwrap();
        b.send(Message::End).unwrap();
        assert_eq!(value(gate.next_event().unwrap()), "b1");
        assert_eq!(value(gate.next_event().unwrap()), "barrier 4");
        a.send(Message::End).unwrap();
        assert_eq!(value(gate.next_event().unwrap()), "end");
    }
}
