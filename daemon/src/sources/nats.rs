//! A NATS JetStream source: the messages of one stream (optionally only
//! those on subjects matching `subject`), read by an ordered consumer from a
//! stream sequence. Its position is the next stream sequence, kept in the
//! checkpoint as the one partition of the stream, so a restore replays from
//! exactly there. Each message becomes a record with its subject as the key
//! and its payload as the value; with `timestamp = "record"`, the time the
//! stream stored it is its event time.
//!
//! An unreachable server stalls the source, never fails it: it retries with
//! backoff, says so, and keeps taking part in checkpoints.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use weir_codec::BatchWriter;

use super::kafka::Placement;
use super::timestamp::Stamper;
use super::{Barriers, is_full};
use crate::batch::Batch;
use crate::brokers::Backoff;
use crate::checkpoint::SourcePosition;
use crate::checkpoint::position::PartitionPosition;
use crate::graph::{ComponentId, NatsSourceSpec, StartPosition};
use crate::topology::output::Output;
use crate::topology::{StopSignal, TaskError};
use crate::watermark::PartitionWatermarks;

type Messages = consumer::pull::Ordered;

/// A JetStream source instance, opened (no server contacted yet).
pub struct NatsSource {
    id: ComponentId,
    spec: NatsSourceSpec,
    placement: Placement,
    batch_size: usize,
    stamper: Option<Stamper>,
    watermarks: Option<PartitionWatermarks>,
    runtime: tokio::runtime::Runtime,
}

impl NatsSource {
    pub(super) fn open(
        id: &ComponentId,
        spec: &NatsSourceSpec,
        placement: Placement,
        batch_size: usize,
        stamper: Option<Stamper>,
        watermarks: Option<PartitionWatermarks>,
    ) -> Result<Self, TaskError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TaskError::Source {
                id: id.clone(),
                message: format!("cannot start the NATS client's runtime: {e}"),
            })?;
        Ok(Self {
            id: id.clone(),
            spec: spec.clone(),
            placement,
            batch_size,
            stamper,
            watermarks,
            runtime,
        })
    }

    /// Reads until a stop is asked for; returns the position after the
    /// last record sent.
    pub(super) fn run(
        mut self,
        stop: &StopSignal,
        output: &mut Output,
        barriers: &Barriers<'_>,
    ) -> Result<SourcePosition, TaskError> {
        let restored = self
            .placement
            .restored
            .take()
            .and_then(|mut r| r.remove(&(self.spec.stream.clone(), 0)));
        // The next sequence; `None` until the first connection says where
        // `start` is.
        let mut next: Option<u64> = restored.as_ref().and_then(|p| u64::try_from(p.offset).ok());
        let clock = self
            .watermarks
            .as_mut()
            .map_or(0, |w| w.add(restored.and_then(|p| p.event_time)));
        let mut messages: Option<Messages> = None;
        let mut backoff = Backoff::default();
        let mut batch = BatchWriter::with_capacity(64 * 1024);
        let mut logged: Option<Instant> = None;
        while !stop.is_stopped() {
            let now = Instant::now();
            if messages.is_none() && backoff.due(now) {
                match self.runtime.block_on(self.connect(&mut next)) {
                    Ok(m) => {
                        messages = Some(m);
                        backoff.succeeded(now);
                        self.placement.health.up();
                    }
                    Err(why) => {
                        let wait = backoff.failed(now);
                        if logged.is_none_or(|t| now.duration_since(t) > Duration::from_secs(60)) {
                            tracing::warn!(source = %self.id, retry_in = ?wait, "NATS: {why}; retrying");
                            logged = Some(now);
                        }
                        self.placement.health.down(&why);
                    }
                }
            }
            if let Some(m) = messages.as_mut() {
                match self.read_batch(m, &mut next, clock, &mut batch) {
                    Ok(()) => {}
                    Err(Read::Lost(why)) => {
                        tracing::warn!(source = %self.id, "NATS: {why}; reconnecting");
                        self.placement.health.down(&why);
                        messages = None;
                    }
                    Err(Read::Fail(e)) => return Err(e),
                }
            } else {
                std::thread::sleep(Duration::from_millis(50));
            }
            if !batch.is_empty() {
                output.send(Batch::from_writer(std::mem::take(&mut batch)))?;
            }
            if let Some(w) = self.watermarks.as_mut()
                && let Some(mark) = w.poll(Instant::now())
            {
                output.watermark(mark)?;
            }
            barriers.poll_with(|| self.position(next, clock), output)?;
        }
        Ok(self.position(next, clock))
    }

    /// An ordered consumer from `next` (or, on a first run, from `start`,
    /// which fixes `next`).
    async fn connect(&self, next: &mut Option<u64>) -> Result<Messages, String> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(self.spec.servers.join(","))
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.spec.servers.join(", ")))?;
        let js = jetstream::new(client);
        let mut stream = js
            .get_stream(&self.spec.stream)
            .await
            .map_err(|e| format!("cannot open stream `{}`: {e}", self.spec.stream))?;
        let start = match *next {
            Some(n) => n,
            None => {
                let (first, last) = {
                    let info = stream
                        .info()
                        .await
                        .map_err(|e| format!("cannot read stream `{}`: {e}", self.spec.stream))?;
                    (info.state.first_sequence, info.state.last_sequence)
                };
                let n = match self.spec.start {
                    StartPosition::Earliest => first.max(1),
                    StartPosition::Latest => last + 1,
                    StartPosition::Timestamp(ms) => self.sequence_at(&mut stream, ms, last).await?,
                };
                *next = Some(n);
                n
            }
        };
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
                filter_subject: self.spec.subject.clone().unwrap_or_default(),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cannot make a consumer on `{}`: {e}", self.spec.stream))?;
        consumer
            .messages()
            .await
            .map_err(|e| format!("cannot read `{}`: {e}", self.spec.stream))
    }

    /// The first sequence stored at or after `ms`.
    async fn sequence_at(
        &self,
        stream: &mut jetstream::stream::Stream,
        ms: i64,
        last: u64,
    ) -> Result<u64, String> {
        let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .map_err(|e| format!("`start.timestamp`: {e}"))?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time: at },
                ..Default::default()
            })
            .await
            .map_err(|e| {
                format!(
                    "cannot find `start.timestamp` in `{}`: {e}",
                    self.spec.stream
                )
            })?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| format!("cannot read `{}`: {e}", self.spec.stream))?;
        match tokio::time::timeout(Duration::from_secs(2), messages.next()).await {
            Ok(Some(Ok(m))) => m
                .info()
                .map(|i| i.stream_sequence)
                .map_err(|e| format!("a message without its sequence: {e}")),
            // Nothing at or after the time yet: start after the last.
            _ => Ok(last + 1),
        }
    }

    fn read_batch(
        &mut self,
        messages: &mut Messages,
        next: &mut Option<u64>,
        clock: usize,
        batch: &mut BatchWriter,
    ) -> Result<(), Read> {
        let mut wait = Duration::from_millis(100);
        while !is_full(batch, self.batch_size) {
            let polled = self
                .runtime
                .block_on(async { tokio::time::timeout(wait, messages.next()).await });
            wait = Duration::from_millis(1);
            let message = match polled {
                Err(_) => break,
                Ok(None) => return Err(Read::Lost("the consumer ended".into())),
                Ok(Some(Err(e))) => return Err(Read::Lost(e.to_string())),
                Ok(Some(Ok(m))) => m,
            };
            let info = message
                .info()
                .map_err(|e| Read::Lost(format!("a message without its sequence: {e}")))?;
            let sequence = info.stream_sequence;
            let published = i64::try_from(info.published.unix_timestamp_nanos() / 1_000_000)
                .unwrap_or(i64::MAX);
            if next.is_some_and(|n| sequence < n) {
                continue;
            }
            *next = Some(sequence + 1);
            let value = &message.payload;
            let timestamp = match &self.stamper {
                Some(s) => Some(s.stamp(value).map_err(|why| {
                    Read::Fail(TaskError::Source {
                        id: self.id.clone(),
                        message: format!(
                            "no timestamp in the message at sequence {sequence} of stream `{}`: {why}",
                            self.spec.stream
                        ),
                    })
                })?),
                None if self.spec.record_time => Some(published),
                None => None,
            };
            if let Some(w) = self.watermarks.as_mut() {
                w.on_record(clock, timestamp, Instant::now());
            }
            batch.push(message.subject.as_str().as_bytes(), value, timestamp);
        }
        Ok(())
    }

    fn position(&self, next: Option<u64>, clock: usize) -> SourcePosition {
        SourcePosition::Partitions(
            next.map(|n| PartitionPosition {
                topic: self.spec.stream.clone(),
                partition: 0,
                offset: i64::try_from(n).unwrap_or(i64::MAX),
                event_time: self.watermarks.as_ref().and_then(|w| w.largest(clock)),
            })
            .into_iter()
            .collect(),
        )
    }
}

enum Read {
    /// The connection or consumer is gone: connect again from `next`.
    Lost(String),
    /// A record the source cannot take.
    Fail(TaskError),
}
