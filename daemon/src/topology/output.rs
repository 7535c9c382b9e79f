//! The output side of a task: batches routed to every consuming component.

use crossbeam_channel::Sender;
use weir_codec::BatchWriter;

use super::TaskError;
use super::liveness::Beat;
use crate::batch::{Batch, Message};
use crate::config::Partition;
use crate::graph::ComponentId;
use crate::partition::{instance_for_key_group, key_group};

/// Where one task instance sends its output: one [`Edge`] per consuming component.
#[derive(Debug, Default)]
pub struct Output {
    edges: Vec<Edge>,
    records: u64,
    beat: Option<Beat>,
    counter: Option<prometheus::IntCounter>,
}

/// The channels to every instance of one consuming component.
#[derive(Debug)]
pub struct Edge {
    consumer: ComponentId,
    partition: Partition,
    senders: Vec<Sender<Message>>,
    next: usize,
    max_parallelism: u32,
}

impl Edge {
    /// An edge to `consumer` that spreads batches over `senders` (one per
    /// consumer instance) by `partition`. A forward edge has exactly one sender.
    pub fn new(
        consumer: ComponentId,
        partition: Partition,
        senders: Vec<Sender<Message>>,
        max_parallelism: u32,
    ) -> Self {
        Self {
            consumer,
            partition,
            senders,
            next: 0,
            max_parallelism,
        }
    }

    fn send(&mut self, batch: Batch) -> Result<(), TaskError> {
        let send = |tx: &Sender<Message>, batch| {
            tx.send(Message::Batch(batch))
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
}

impl Output {
    /// An output to these edges.
    pub fn new(edges: Vec<Edge>) -> Self {
        Self {
            edges,
            records: 0,
            beat: None,
            counter: None,
        }
    }

    /// Sends a batch to every consuming component.
    pub fn send(&mut self, batch: Batch) -> Result<(), TaskError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.records += u64::from(batch.len());
        if let Some(counter) = &self.counter {
            counter.inc_by(u64::from(batch.len()));
        }
        let Some((last, rest)) = self.edges.split_last_mut() else {
            return Ok(());
        };
        // A send waits while consumers are full: busy, not idle.
        if let Some(beat) = &self.beat {
            beat.busy();
        }
        for edge in rest {
            edge.send(batch.clone())?;
        }
        let sent = last.send(batch);
        if let Some(beat) = &self.beat {
            beat.idle();
        }
        sent
    }

    /// Counts what it sends in `weir_records_out_total`.
    pub fn set_counter(&mut self, counter: prometheus::IntCounter) {
        self.counter = Some(counter);
    }

    /// Marks this task busy while it sends (see [`super::liveness`]).
    pub fn set_beat(&mut self, beat: Beat) {
        self.beat = Some(beat);
    }

    /// Tells every consumer instance that this producer is done.
    pub fn end(&self) -> Result<(), TaskError> {
        self.edges
            .iter()
            .try_for_each(|e| e.broadcast(&Message::End))
    }

    /// Sends checkpoint barrier `id` to every consumer instance, after
    /// everything sent so far.
    pub fn barrier(&self, id: crate::checkpoint::CheckpointId) -> Result<(), TaskError> {
        self.edges
            .iter()
            .try_for_each(|e| e.broadcast(&Message::Barrier(id)))
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
            let _ = e.broadcast(&Message::End);
            false
        });
    }

    /// Adds edges (to components a reload started).
    pub fn add_edges(&mut self, edges: Vec<Edge>) {
        self.edges.extend(edges);
    }
}
