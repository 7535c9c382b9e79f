//! A Kafka source: the records of one or more topics, the partitions spread
//! over the source's instances ([`crate::brokers::owner`]).
//!
//! Each instance assigns its partitions itself (no consumer-group
//! rebalancing): where it reads from is the checkpoint's business. Its
//! position is the next offset of every partition it owns; a restore at
//! another parallelism hands each partition, with its offset, to its new
//! owner. A partition no checkpoint knows starts at `start` on the source's
//! first run and at its earliest offset afterwards (it was created later),
//! as in Flink. After each complete checkpoint the offsets are committed to
//! `group`, for lag monitoring only; they never decide where a restore
//! starts.
//!
//! An unreachable broker stalls the source, never fails it: it retries with
//! backoff, says so in `weir_broker_connected` and the daemon's status, and
//! keeps taking part in checkpoints at the position it has.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Headers as _, Message};
use rdkafka::{Offset, TopicPartitionList};
use weir_codec::{BatchWriter, HeadersWriter};

use super::timestamp::Stamper;
use super::{Barriers, is_full};
use crate::batch::Batch;
use crate::brokers::{Backoff, kafka_config, owner};
use crate::checkpoint::position::{PartitionMap, PartitionPosition};
use crate::checkpoint::{CheckpointId, Completions, SourcePosition};
use crate::config::ClientOptions;
use crate::graph::{ComponentId, KafkaSourceSpec, StartPosition};
use crate::metrics::BrokerHealth;
use crate::topology::output::Output;
use crate::topology::{StopSignal, TaskError};
use crate::watermark::PartitionWatermarks;

/// How long one metadata request may take before the brokers count as
/// unreachable.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// Where this instance starts and what it is part of.
pub struct Placement {
    /// This instance.
    pub instance: u32,
    /// The source's instances.
    pub parallelism: u32,
    /// Every partition of the restored checkpoint, with its offset; `None`
    /// when the source has never been checkpointed.
    pub restored: Option<PartitionMap>,
    /// Complete checkpoints, for committing offsets to the group.
    pub completions: Arc<Completions>,
    /// Reachability, for metrics and status.
    pub health: BrokerHealth,
}

/// One owned partition.
struct Owned {
    /// The next offset to read.
    next: i64,
    /// Its index in the watermark generator.
    clock: usize,
}

/// An instance of a Kafka source, opened (no broker contacted yet).
pub struct KafkaSource {
    id: ComponentId,
    spec: KafkaSourceSpec,
    placement: Placement,
    batch_size: usize,
    consumer: BaseConsumer,
    stamper: Option<Stamper>,
    watermarks: Option<PartitionWatermarks>,
    /// A record's headers, reused from one to the next.
    headers: HeadersWriter,
}

impl KafkaSource {
    /// A consumer for instance `placement.instance` of source `id`.
    pub(super) fn open(
        id: &ComponentId,
        spec: &KafkaSourceSpec,
        placement: Placement,
        batch_size: usize,
        stamper: Option<Stamper>,
        watermarks: Option<PartitionWatermarks>,
    ) -> Result<Self, TaskError> {
        // Defaults the user's `options` may change...
        let mut defaults = ClientOptions::from([
            // An offset retention has deleted resumes at the earliest kept.
            ("auto.offset.reset".to_owned(), "earliest".to_owned()),
            // A broker that ignores `fetch.max.bytes` (noida-db does) answers
            // a whole backlog in one response; librdkafka's 100 MB cap on a
            // response would then stall the source for good.
            (
                "receive.message.max.bytes".to_owned(),
                "1000000000".to_owned(),
            ),
            (
                "client.id".to_owned(),
                format!("weir-{id}-{}", placement.instance),
            ),
        ]);
        defaults.extend(spec.options.clone());
        let mut config = kafka_config(&spec.brokers, &defaults);
        // ...and what the source's guarantees rest on, which they may not.
        config
            .set("group.id", &spec.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "false");
        let consumer: BaseConsumer = config.create().map_err(|e| TaskError::Source {
            id: id.clone(),
            message: format!("cannot make a Kafka consumer: {e}"),
        })?;
        Ok(Self {
            id: id.clone(),
            spec: spec.clone(),
            placement,
            batch_size,
            consumer,
            stamper,
            watermarks,
            headers: HeadersWriter::default(),
        })
    }

    /// Reads until a stop is asked for (a Kafka topic has no end); returns
    /// the position after the last record sent.
    pub(super) fn run(
        mut self,
        stop: &StopSignal,
        output: &mut Output,
        barriers: &Barriers<'_>,
    ) -> Result<SourcePosition, TaskError> {
        let mut owned: BTreeMap<(String, i32), Owned> = BTreeMap::new();
        let mut discovery = Backoff::default();
        // Offsets to commit to the group once their checkpoint completes.
        let mut to_commit: VecDeque<(CheckpointId, SourcePosition)> = VecDeque::new();
        let mut errors = ErrorLog::default();
        let mut batch = BatchWriter::with_capacity(64 * 1024);
        let mut restored = self.placement.restored.take();
        // On a first run the partitions found first start at `start`.
        let mut first_assignment = restored.is_none();
        while !stop.is_stopped() {
            let now = Instant::now();
            if discovery.due(now) {
                match self.discover(&mut owned, restored.as_mut(), first_assignment) {
                    Ok(()) => {
                        first_assignment = false;
                        discovery.succeeded(now + self.spec.partition_discovery);
                        self.placement.health.up();
                    }
                    Err(why) => {
                        let wait = discovery.failed(now);
                        errors.report(&self.id, &why, wait);
                        self.placement.health.down(&why);
                    }
                }
            }
            self.read_batch(&mut owned, &mut batch, &mut errors)?;
            if !batch.is_empty() {
                output.send(Batch::from_writer(std::mem::take(&mut batch)))?;
            }
            if let Some(w) = self.watermarks.as_mut()
                && let Some(mark) = w.poll(Instant::now())
            {
                output.watermark(mark)?;
            }
            let injected = barriers.poll_with(|| self.position(&owned), output)?;
            if let Some(checkpoint) = injected {
                to_commit.push_back((checkpoint, self.position(&owned)));
            }
            self.commit_completed(&mut to_commit);
        }
        Ok(self.position(&owned))
    }

    /// Finds the partitions of the topics, assigns the ones this instance
    /// owns and has not assigned yet.
    fn discover(
        &mut self,
        owned: &mut BTreeMap<(String, i32), Owned>,
        mut restored: Option<&mut PartitionMap>,
        first_assignment: bool,
    ) -> Result<(), String> {
        let mut found = Vec::new();
        for topic in &self.spec.topics {
            let metadata = self
                .consumer
                .fetch_metadata(Some(topic), METADATA_TIMEOUT)
                .map_err(|e| format!("cannot read the metadata of topic `{topic}`: {e}"))?;
            for t in metadata.topics() {
                if let Some(e) = t.error() {
                    return Err(format!(
                        "topic `{topic}`: {}",
                        rdkafka::error::RDKafkaErrorCode::from(e)
                    ));
                }
                for p in t.partitions() {
                    if owner(topic, p.id(), self.placement.parallelism) == self.placement.instance
                        && !owned.contains_key(&(topic.clone(), p.id()))
                    {
                        found.push((topic.clone(), p.id()));
                    }
                }
            }
        }
        if found.is_empty() {
            return Ok(());
        }
        // Nothing changes until the assignment is made: a broker lost half
        // way leaves the next attempt the same work.
        let mut added = Vec::with_capacity(found.len());
        for (topic, partition) in &found {
            let from_checkpoint = restored
                .as_deref()
                .and_then(|r| r.get(&(topic.clone(), *partition)));
            let (next, event_time) = match from_checkpoint {
                Some(p) => (p.offset, p.event_time),
                None if first_assignment => (self.start_offset(topic, *partition)?, None),
                // Created after the source started (or after its checkpoint).
                None => (self.edge(topic, *partition, false)?, None),
            };
            added.push(((topic.clone(), *partition), next, event_time));
        }
        let mut assignment = TopicPartitionList::new();
        let every = owned
            .iter()
            .map(|(k, o)| (k, o.next))
            .chain(added.iter().map(|(k, next, _)| (k, *next)));
        for ((topic, partition), next) in every {
            assignment
                .add_partition_offset(topic, *partition, Offset::Offset(next))
                .map_err(|e| format!("partition {partition} of `{topic}`: {e}"))?;
        }
        self.consumer
            .assign(&assignment)
            .map_err(|e| format!("cannot assign partitions: {e}"))?;
        for (key, next, event_time) in added {
            if let Some(r) = restored.as_deref_mut() {
                r.remove(&key);
            }
            let clock = self.watermarks.as_mut().map_or(0, |w| w.add(event_time));
            owned.insert(key, Owned { next, clock });
        }
        tracing::info!(
            source = %self.id,
            instance = self.placement.instance,
            partitions = ?found,
            "reading new partitions"
        );
        Ok(())
    }

    /// Where a partition starts on the source's first run, as an offset (so
    /// the first checkpoint records it even before a record is read).
    fn start_offset(&self, topic: &str, partition: i32) -> Result<i64, String> {
        match self.spec.start {
            StartPosition::Earliest => self.edge(topic, partition, false),
            StartPosition::Latest => self.edge(topic, partition, true),
            StartPosition::Timestamp(ms) => {
                let mut query = TopicPartitionList::new();
                query
                    .add_partition_offset(topic, partition, Offset::Offset(ms))
                    .map_err(|e| format!("partition {partition} of `{topic}`: {e}"))?;
                let found = self
                    .consumer
                    .offsets_for_times(query, METADATA_TIMEOUT)
                    .map_err(|e| format!("cannot find the offsets for `start.timestamp`: {e}"))?;
                match found.find_partition(topic, partition).map(|e| e.offset()) {
                    Some(Offset::Offset(n)) => Ok(n),
                    // No record at or after the time: start after the last.
                    _ => self.edge(topic, partition, true),
                }
            }
        }
    }

    /// The first offset still kept, or (`latest`) the one after the last.
    fn edge(&self, topic: &str, partition: i32, latest: bool) -> Result<i64, String> {
        let (low, high) = self
            .consumer
            .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
            .map_err(|e| {
                format!("cannot read the offsets of partition {partition} of `{topic}`: {e}")
            })?;
        Ok(if latest { high } else { low })
    }

    /// Reads one batch (waiting up to 100 ms for its first record).
    fn read_batch(
        &mut self,
        owned: &mut BTreeMap<(String, i32), Owned>,
        batch: &mut BatchWriter,
        errors: &mut ErrorLog,
    ) -> Result<(), TaskError> {
        let mut wait = Duration::from_millis(100);
        while !is_full(batch, self.batch_size) {
            let Some(polled) = self.consumer.poll(wait) else {
                break;
            };
            wait = Duration::ZERO;
            let message = match polled {
                Ok(m) => m,
                Err(e) => {
                    let why = format!("{e}");
                    errors.report(&self.id, &why, Duration::ZERO);
                    self.placement.health.down(&why);
                    break;
                }
            };
            let key = (message.topic().to_owned(), message.partition());
            let Some(part) = owned.get_mut(&key) else {
                continue;
            };
            // A fetch can start before an offset a restore asked for (a
            // compacted topic): nothing before the position is sent twice.
            if message.offset() < part.next {
                continue;
            }
            part.next = message.offset() + 1;
            let value = message.payload().unwrap_or_default();
            let timestamp = match &self.stamper {
                Some(s) => Some(s.stamp(value).map_err(|why| TaskError::Source {
                    id: self.id.clone(),
                    message: format!(
                        "no timestamp in the record at offset {} of partition {} of `{}`: {why}",
                        message.offset(),
                        message.partition(),
                        message.topic()
                    ),
                })?),
                None if self.spec.record_time => message.timestamp().to_millis(),
                None => None,
            };
            if let Some(w) = self.watermarks.as_mut() {
                w.on_record(part.clock, timestamp, Instant::now());
            }
            let key = message.key().unwrap_or_default();
            match message.headers() {
                None => batch.push(key, value, timestamp),
                Some(kafka) => {
                    self.headers.clear();
                    for h in kafka.iter() {
                        self.headers
                            .push(h.key.as_bytes(), h.value.unwrap_or_default());
                    }
                    batch.push_with_headers(key, value, timestamp, self.headers.headers());
                }
            }
        }
        Ok(())
    }

    /// The next offset of every owned partition that has one.
    fn position(&self, owned: &BTreeMap<(String, i32), Owned>) -> SourcePosition {
        let mut parts = Vec::with_capacity(owned.len());
        for ((topic, partition), o) in owned {
            parts.push(PartitionPosition {
                topic: topic.clone(),
                partition: *partition,
                offset: o.next,
                event_time: self.watermarks.as_ref().and_then(|w| w.largest(o.clock)),
            });
        }
        SourcePosition::Partitions(parts)
    }

    /// Commits, for monitoring, the offsets of the latest complete checkpoint.
    fn commit_completed(&self, to_commit: &mut VecDeque<(CheckpointId, SourcePosition)>) {
        let latest = self.placement.completions.seen().latest;
        let mut done = None;
        while to_commit.front().is_some_and(|(id, _)| *id <= latest) {
            done = to_commit.pop_front();
        }
        let Some((_, SourcePosition::Partitions(parts))) = done else {
            return;
        };
        let mut offsets = TopicPartitionList::new();
        for p in &parts {
            let _ = offsets.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.offset));
        }
        if let Err(e) = self.consumer.commit(&offsets, CommitMode::Async) {
            tracing::debug!(source = %self.id, "cannot commit offsets to the group: {e}");
        }
    }
}

/// Logs broker trouble without flooding: the first report, then one a minute.
#[derive(Default)]
struct ErrorLog {
    last: Option<Instant>,
}

impl ErrorLog {
    fn report(&mut self, id: &ComponentId, why: &str, retry_in: Duration) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(60))
        {
            return;
        }
        self.last = Some(now);
        tracing::warn!(source = %id, retry_in = ?retry_in, "Kafka: {why}; retrying");
    }
}
