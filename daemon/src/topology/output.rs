//! The output side of a task: batches routed to every consuming component,
//! through channels or, for a component chained to this one, by a call.

use std::time::Duration;

use crossbeam_channel::Sender;
use weir_codec::BatchWriter;

use super::TaskError;
use super::liveness::Beat;
use super::stage::{Finished, Flow, Stage};
use crate::batch::{Batch, Message};
use crate::config::Partition;
use crate::graph::ComponentId;
use crate::partition::{instance_for_key_group, key_group};
use crate::watermark::{Generator, Watermark};

/// Where one task instance sends its output: one [`Edge`] per consuming
/// component reached through channels, and the component chained to it, if
/// one is, which it calls in its own thread.
#[derive(Default)]
pub struct Output {
    edges: Vec<Edge>,
    chained: Option<(ComponentId, Box<dyn Stage>)>,
    /// What chained stages that ended did.
    finished: Vec<Finished>,
    records: u64,
    beat: Option<Beat>,
    counter: Option<prometheus::IntCounter>,
    /// A source's watermark strategy, fed by what it sends.
    watermarks: Option<Generator>,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("edges", &self.edges)
            .field("chained", &self.chained.as_ref().map(|(id, _)| id))
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

/// The channels to every instance of one consuming component.
#[derive(Debug)]
pub struct Edge {
    consumer: ComponentId,
    /// Which output of the producer it carries (0: the main one).
    output: u32,
    /// Which input of the consumer it is.
    input: u32,
    partition: Partition,
    senders: Vec<Sender<Message>>,
    next: usize,
    max_parallelism: u32,
}

impl Edge {
    /// An edge from the producer's output `output` to the consumer's input
    /// `input` that spreads batches over `senders` (one per consumer
    /// instance) by `partition`. A forward edge has exactly one sender.
    pub fn new(
        (consumer, input): (ComponentId, u32),
        output: u32,
        partition: Partition,
        senders: Vec<Sender<Message>>,
        max_parallelism: u32,
    ) -> Self {
        Self {
            consumer,
            output,
            input,
            partition,
            senders,
            next: 0,
            max_parallelism,
        }
    }

    fn send(&mut self, batch: Batch) -> Result<(), TaskError> {
        let input = self.input;
        let send = |tx: &Sender<Message>, batch| {
            tx.send(Message::Batch { batch, input })
                .map_err(|_| TaskError::DownstreamGone)
        };
        match (self.senders.len(), self.partition) {
            (0, _) => Ok(()),
            (1, _) => send(&self.senders[0], batch),
            (_, Partition::Forward) => send(&self.senders[0], batch),
            (n, Partition::RoundRobin) => {
                self.next = (self.next + 1) % n;
                send(&self.senders[self.next], batch)
            }
            (_, Partition::Broadcast) => {
                for tx in &self.senders {
                    send(tx, batch.clone())?;
                }
                Ok(())
            }
            (n, Partition::Hash) => {
                let parallelism = n as u32;
                let mut parts: Vec<BatchWriter> = (0..n).map(|_| BatchWriter::new()).collect();
                for record in batch.records() {
                    let group = key_group(record.key, self.max_parallelism);
                    parts
                        [instance_for_key_group(group, self.max_parallelism, parallelism) as usize]
                        .push_record(&record);
                }
                for (tx, part) in self.senders.iter().zip(parts) {
                    if !part.is_empty() {
                        send(tx, Batch::from_writer(part))?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Sends a control message to every consumer instance.
    fn broadcast(&self, message: &Message) -> Result<(), TaskError> {
        for tx in &self.senders {
            tx.send(message.clone())
                .map_err(|_| TaskError::DownstreamGone)?;
        }
        Ok(())
    }

    /// Tells every consumer instance this producer is done. One that is
    /// gone already (retired at the same barrier, say) needs no telling.
    fn end(&self) {
        for tx in &self.senders {
            let _ = tx.send(Message::End);
        }
    }
}

impl Output {
    /// An output to these edges.
    pub fn new(edges: Vec<Edge>) -> Self {
        Self {
            edges,
            ..Self::default()
        }
    }

    /// Hands everything meant for `consumer` to `stage` by a call instead of
    /// its channel (operator chaining): the edge to it goes.
    pub fn chain(&mut self, consumer: &ComponentId, stage: Box<dyn Stage>) {
        self.edges.retain(|e| e.consumer != *consumer);
        self.chained = Some((consumer.clone(), stage));
    }

    /// Sends a batch of the main output to every consuming component.
    pub fn send(&mut self, batch: Batch) -> Result<(), TaskError> {
        self.send_to(0, batch)
    }

    /// Sends a batch of output `output` (0: the main one, then the side
    /// outputs) to every component that reads it.
    pub fn send_to(&mut self, output: u32, batch: Batch) -> Result<(), TaskError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.announce_resumed()?;
        if output != 0 {
            // Side outputs are never chained, and not what the task counts.
            return self
                .edges
                .iter_mut()
                .filter(|e| e.output == output)
                .try_for_each(|e| e.send(batch.clone()));
        }
        self.records += u64::from(batch.len());
        if let Some(counter) = &self.counter {
            counter.inc_by(u64::from(batch.len()));
        }
        let mark = self.watermarks.as_mut().and_then(|g| {
            let largest = batch.records().filter_map(|r| r.timestamp).max();
            g.after_batch(largest, true)
        });
        self.send_records(batch)?;
        match mark {
            Some(mark) => self.watermark(mark),
            None => Ok(()),
        }
    }

    fn send_records(&mut self, batch: Batch) -> Result<(), TaskError> {
        if let Some((_, stage)) = &mut self.chained {
            for edge in self.edges.iter_mut().filter(|e| e.output == 0) {
                edge.send(batch.clone())?;
            }
            // The chained stage's work is this task's: it stays busy. Its
            // one input is this component.
            return stage.on_batch(batch, 0);
        }
        let Some(last) = self.edges.iter().rposition(|e| e.output == 0) else {
            return Ok(());
        };
        // A send waits while consumers are full: busy, not idle.
        if let Some(beat) = &self.beat {
            beat.busy();
        }
        for edge in self.edges[..last].iter_mut().filter(|e| e.output == 0) {
            edge.send(batch.clone())?;
        }
        let sent = self.edges[last].send(batch);
        if let Some(beat) = &self.beat {
            beat.idle();
        }
        sent
    }

    /// Sends a watermark to every consumer instance, after everything sent
    /// so far; the chained stage takes it at once.
    pub fn watermark(&mut self, mark: Watermark) -> Result<(), TaskError> {
        self.edges
            .iter()
            .try_for_each(|e| e.broadcast(&Message::Watermark(mark)))?;
        match &mut self.chained {
            Some((_, stage)) => stage.on_watermark(mark),
            None => Ok(()),
        }
    }

    /// The largest event timestamp a source's output has sent.
    pub fn largest_event_time(&self) -> Option<i64> {
        self.watermarks.as_ref().and_then(Generator::largest)
    }

    /// Announces watermarks by `generator` from the timestamps of what it
    /// sends (a source's output).
    pub fn set_watermarks(&mut self, generator: Generator) {
        self.watermarks = Some(generator);
    }

    /// Between a source's batches: announces it idle once its generator's
    /// `idle_timeout` has passed without records.
    pub fn tick(&mut self) -> Result<(), TaskError> {
        self.announce_resumed()?;
        let idle = self
            .watermarks
            .as_mut()
            .and_then(|g| g.on_tick(std::time::Instant::now()));
        if let Some(mark) = idle {
            self.watermark(mark)?;
        }
        // A stage chained to a source fires its processing-time timers here.
        self.tick_chained()
    }

    /// When the chained stage next wants a tick (a processing-time timer).
    pub fn next_tick(&self) -> Option<std::time::Instant> {
        self.chained
            .as_ref()
            .and_then(|(_, stage)| stage.next_tick())
    }

    /// Ticks the chained stage, if its time has come.
    pub fn tick_chained(&mut self) -> Result<(), TaskError> {
        match &mut self.chained {
            Some((_, stage))
                if stage
                    .next_tick()
                    .is_some_and(|at| at <= std::time::Instant::now()) =>
            {
                stage.on_tick()
            }
            _ => Ok(()),
        }
    }

    /// A source restored with event time announces the watermark it had
    /// reached before anything else, so what follows is judged late or not
    /// as in the run that took the checkpoint.
    fn announce_resumed(&mut self) -> Result<(), TaskError> {
        match self.watermarks.as_mut().and_then(Generator::take_resumed) {
            Some(mark) => self.watermark(mark),
            None => Ok(()),
        }
    }

    /// Counts what it sends in `weir_records_out_total`.
    pub fn set_counter(&mut self, counter: prometheus::IntCounter) {
        self.counter = Some(counter);
    }

    /// Marks this task busy while it sends (see [`super::liveness`]).
    pub fn set_beat(&mut self, beat: Beat) {
        self.beat = Some(beat);
    }

    /// Tells every consumer instance that this producer is done, and ends
    /// the chained stage.
    pub fn end(&mut self) -> Result<(), TaskError> {
        self.edges.iter().for_each(Edge::end);
        match self.chained.take() {
            Some((_, mut stage)) => stage.on_end(&mut self.finished),
            None => Ok(()),
        }
    }

    /// The pipeline failed: the chained stage keeps what it can.
    pub fn abort(&mut self) {
        if let Some((_, stage)) = &mut self.chained {
            stage.on_abort();
        }
    }

    /// What the chained stages that ended did.
    pub fn take_finished(&mut self) -> Vec<Finished> {
        std::mem::take(&mut self.finished)
    }

    /// Sends checkpoint barrier `id` to every consumer instance, after
    /// everything sent so far; the chained stage takes it at once.
    pub fn barrier(&mut self, id: crate::checkpoint::CheckpointId) -> Result<(), TaskError> {
        self.edges
            .iter()
            .try_for_each(|e| e.broadcast(&Message::Barrier(id)))?;
        let Some((consumer, stage)) = &mut self.chained else {
            return Ok(());
        };
        match stage.on_barrier(id, Duration::ZERO)? {
            Flow::Go => Ok(()),
            Flow::Retire => {
                if let Some((_, mut stage)) = self.chained.take() {
                    stage.on_end(&mut self.finished)?;
                }
                Ok(())
            }
            // A reload never gives a chained stage inputs: a component
            // with two inputs is not chained, and the members after a
            // replaced one are replaced with it (`chain::expand`).
            Flow::AddInputs(_) => Err(TaskError::Protocol(format!(
                "a reload gave chained component `{consumer}` another input"
            ))),
        }
    }

    /// Records sent so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Ends and drops the edges to `consumers` (retired by a reload). A
    /// consumer already gone does not matter.
    pub fn retire_edges(&mut self, consumers: &[ComponentId]) {
        self.edges.retain(|e| {
            if !consumers.contains(&e.consumer) {
                return true;
            }
            e.end();
            false
        });
    }

    /// Adds edges (to components a reload started).
    pub fn add_edges(&mut self, edges: Vec<Edge>) {
        self.edges.extend(edges);
    }
}
