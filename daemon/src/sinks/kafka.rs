//! A Kafka sink.
//!
//! `exactly_once`: each barrier seals the output since the last one into a
//! staged file ([`super::staging`]); once that checkpoint is complete, the
//! instance's committer thread sends it in one Kafka transaction, with the
//! transactional id `<prefix>-<instance>`, and inside the same transaction
//! commits offset `checkpoint` of the output topic's partition 0 for the
//! group `<prefix>-<instance>.commits`: a marker, committed or aborted with
//! the records. A restarted sink (or one whose transaction failed) makes a
//! new producer with the same id, which fences the old one and aborts what
//! it left open, reads the marker, and sends again every staged checkpoint
//! after it. A marker carries the staging directory's lineage (a random
//! token made with the directory), so a wiped data directory, whose
//! checkpoint ids start again at 1, does not read another lineage's marker
//! as its own.
//!
//! `at_least_once`: records are produced as they come and the producer is
//! flushed at each barrier, so a checkpoint counts only once everything
//! before it is acknowledged.
//!
//! Keys, values and timestamps pass through; records are partitioned by
//! Kafka's default partitioner (by key).

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::committer::{Context, Failure, Publisher, StagedSink};
use super::staging::{self, Staged};
use crate::batch::Batch;
use crate::brokers::kafka_config;
use crate::checkpoint::CheckpointId;
use crate::config::Delivery;
use crate::graph::{ComponentId, KafkaSinkSpec};

/// How long one broker request of the committer may take.
const BROKER_TIMEOUT: Duration = Duration::from_secs(30);

/// A Kafka sink instance.
pub enum KafkaSink {
    /// Transactions released by checkpoints.
    ExactlyOnce(StagedSink),
    /// Plain sends, flushed at barriers.
    AtLeastOnce {
        /// The producer.
        producer: ThreadedProducer<Deliveries>,
        /// The topic.
        topic: String,
    },
}

impl KafkaSink {
    /// Opens instance `cx.instance` of sink `id`; an exactly-once one first
    /// takes up what an earlier run staged.
    pub fn open(id: &ComponentId, spec: &KafkaSinkSpec, cx: Context) -> Result<Self, String> {
        match spec.delivery {
            Delivery::ExactlyOnce => Ok(Self::ExactlyOnce(StagedSink::open(
                id,
                &spec.staging,
                cx,
                |lineage| KafkaPublisher {
                    id: id.clone(),
                    spec: spec.clone(),
                    lineage,
                    producers: Vec::new(),
                },
            )?)),
            Delivery::AtLeastOnce => {
                let producer: ThreadedProducer<Deliveries> =
                    kafka_config(&spec.brokers, &spec.options)
                        .set("enable.idempotence", "true")
                        .set("client.id", format!("weir-{id}-{}", cx.instance))
                        .create_with_context(Deliveries::default())
                        .map_err(|e| format!("cannot make a Kafka producer: {e}"))?;
                Ok(Self::AtLeastOnce {
                    producer,
                    topic: spec.topic.clone(),
                })
            }
        }
    }

    /// Takes a batch.
    pub fn write(&mut self, batch: &Batch) -> Result<(), String> {
        match self {
            Self::ExactlyOnce(staged) => staged.write(batch),
            Self::AtLeastOnce { producer, topic } => {
                if let Some(e) = producer.context().failed() {
                    return Err(format!("Kafka did not take a record: {e}"));
                }
                for r in batch.records() {
                    send_threaded(producer, kafka_record(topic, &r))?;
                }
                Ok(())
            }
        }
    }

    /// At barrier `checkpoint`.
    pub fn pre_commit(&mut self, checkpoint: CheckpointId) -> Result<(), String> {
        match self {
            Self::ExactlyOnce(staged) => staged.seal(checkpoint),
            Self::AtLeastOnce { producer, .. } => {
                producer
                    .flush(BROKER_TIMEOUT)
                    .map_err(|e| format!("Kafka did not acknowledge the output in time: {e}"))?;
                match producer.context().failed() {
                    Some(e) => Err(format!("Kafka did not take a record: {e}")),
                    None => Ok(()),
                }
            }
        }
    }

    /// The input has ended: an exactly-once sink waits (a bounded time) for
    /// its last checkpoint's transaction.
    pub fn finish(&mut self) {
        if let Self::ExactlyOnce(staged) = self {
            staged.finish();
        }
    }

    /// The pipeline failed: nothing more is sent; what is staged waits for
    /// the restart.
    pub fn abort(&mut self) {
        if let Self::ExactlyOnce(staged) = self {
            staged.abort();
        }
    }
}

/// A Weir record as a Kafka one: key (none when empty), value, timestamp
/// and headers.
fn kafka_record<'a>(topic: &'a str, r: &weir_codec::RecordRef<'a>) -> BaseRecord<'a, [u8], [u8]> {
    let mut record = BaseRecord::<[u8], [u8]>::to(topic).payload(r.value);
    if !r.key.is_empty() {
        record = record.key(r.key);
    }
    if let Some(t) = r.timestamp {
        record = record.timestamp(t);
    }
    if !r.headers.is_empty() {
        let mut headers = OwnedHeaders::new();
        for (name, value) in r.headers.iter() {
            headers = headers.insert(Header {
                key: &String::from_utf8_lossy(name),
                value: Some(value),
            });
        }
        record = record.headers(headers);
    }
    record
}

/// Sends a record, serving delivery reports while librdkafka's queue is full.
fn send_base(
    producer: &BaseProducer,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), String> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(format!("cannot send a record to Kafka: {e}")),
        }
    }
}

/// Sends a record, waiting while librdkafka's queue is full (its own
/// thread serves delivery reports).
fn send_threaded(
    producer: &ThreadedProducer<Deliveries>,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), String> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(format!("cannot send a record to Kafka: {e}")),
        }
    }
}

/// Delivery reports of an at-least-once producer: the first failure.
#[derive(Default)]
pub struct Deliveries {
    failed: Mutex<Option<String>>,
}

impl Deliveries {
    fn failed(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            let mut failed = self
                .failed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            failed.get_or_insert_with(|| e.to_string());
        }
    }
}

/// A transactional producer for one transactional id, and what it knows.
struct Transactional {
    instance: u32,
    producer: BaseProducer,
    /// The marker group's consumer, for `group_metadata`.
    group: BaseConsumer,
    /// The last checkpoint committed under this id in this lineage.
    marker: CheckpointId,
}

/// Sends staged output in Kafka transactions.
struct KafkaPublisher {
    id: ComponentId,
    spec: KafkaSinkSpec,
    lineage: String,
    producers: Vec<Transactional>,
}

impl Publisher for KafkaPublisher {
    fn send(&mut self, staged: &Staged) -> Result<(), Failure> {
        self.send_transaction(staged)
    }

    fn reset(&mut self, instance: u32) {
        // Start again from a new producer: it fences and aborts whatever the
        // old one left open, and rereads the marker.
        self.producers.retain(|p| p.instance != instance);
    }
}

impl KafkaPublisher {
    /// Sends one checkpoint's staged output in a transaction, unless the
    /// marker says it was sent already.
    fn send_transaction(&mut self, staged: &Staged) -> Result<(), Failure> {
        let index = match self
            .producers
            .iter()
            .position(|p| p.instance == staged.instance)
        {
            Some(i) => i,
            None => {
                let p = self.connect(staged.instance)?;
                self.producers.push(p);
                self.producers.len() - 1
            }
        };
        let t = &mut self.producers[index];
        if t.marker >= staged.checkpoint {
            tracing::info!(sink = %self.id, checkpoint = staged.checkpoint, "Kafka has this checkpoint's output already");
            return Ok(());
        }
        let batches = staging::read(&staged.path).map_err(Failure::Fatal)?;
        let topic = &self.spec.topic;
        t.producer
            .begin_transaction()
            .map_err(retry("begin a transaction"))?;
        for batch in &batches {
            for r in batch.records() {
                send_base(&t.producer, kafka_record(topic, &r)).map_err(Failure::Retry)?;
            }
            t.producer.poll(Duration::ZERO);
        }
        let mut marker = TopicPartitionList::new();
        marker
            .add_partition_offset(topic, 0, Offset::Offset(marker_offset(staged.checkpoint)))
            .map_err(retry("make the marker"))?;
        set_metadata(&mut marker, topic, &self.lineage);
        let metadata = t
            .group
            .group_metadata()
            .ok_or_else(|| Failure::Retry("the marker group has no metadata".into()))?;
        t.producer
            .send_offsets_to_transaction(&marker, &metadata, BROKER_TIMEOUT)
            .map_err(retry("add the marker to the transaction"))?;
        crate::checkpoint::failpoint::check(crate::checkpoint::failpoint::Point::KafkaBeforeCommit);
        t.producer
            .commit_transaction(BROKER_TIMEOUT)
            .map_err(retry("commit the transaction"))?;
        crate::checkpoint::failpoint::check(crate::checkpoint::failpoint::Point::KafkaAfterCommit);
        t.marker = staged.checkpoint;
        Ok(())
    }

    /// A new transactional producer for `instance`'s id: fences any other,
    /// aborts what it left open, and reads the marker.
    fn connect(&self, instance: u32) -> Result<Transactional, Failure> {
        let tid = format!("{}-{instance}", self.spec.transactional_id_prefix);
        let producer: BaseProducer = kafka_config(&self.spec.brokers, &self.spec.options)
            .set("transactional.id", &tid)
            .set("transaction.timeout.ms", "60000")
            .set("client.id", format!("weir-{}-{instance}", self.id))
            .create()
            .map_err(|e| Failure::Fatal(format!("cannot make a Kafka producer: {e}")))?;
        producer
            .init_transactions(BROKER_TIMEOUT)
            .map_err(retry("start transactions"))?;
        let group: BaseConsumer = kafka_config(&self.spec.brokers, &self.spec.options)
            .set("group.id", format!("{tid}.commits"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .map_err(|e| Failure::Fatal(format!("cannot make a Kafka consumer: {e}")))?;
        let mut query = TopicPartitionList::new();
        query.add_partition(&self.spec.topic, 0);
        let committed = group
            .committed_offsets(query, BROKER_TIMEOUT)
            .map_err(retry("read the commit marker"))?;
        let marker = committed
            .find_partition(&self.spec.topic, 0)
            .and_then(|e| match e.offset() {
                Offset::Offset(n) if e.metadata() == self.lineage => checkpoint_of(n),
                _ => None,
            })
            .unwrap_or(0);
        tracing::info!(sink = %self.id, transactional_id = %tid, marker, "Kafka transactions ready");
        Ok(Transactional {
            instance,
            producer,
            group,
            marker,
        })
    }
}

fn set_metadata(list: &mut TopicPartitionList, topic: &str, metadata: &str) {
    for mut e in list.elements_for_topic(topic) {
        e.set_metadata(metadata);
    }
}

/// Markers are offsets: checkpoint ids, which start at 1.
fn marker_offset(checkpoint: CheckpointId) -> i64 {
    i64::try_from(checkpoint).unwrap_or(i64::MAX)
}

fn checkpoint_of(offset: i64) -> Option<CheckpointId> {
    u64::try_from(offset).ok()
}

fn retry(what: &'static str) -> impl Fn(KafkaError) -> Failure {
    move |e| {
        let fenced = matches!(
            e.rdkafka_error_code(),
            Some(RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced)
        );
        let message = format!("cannot {what}: {e}");
        if fenced {
            Failure::Fatal(format!(
                "{message}: another producer took this sink's transactional id; give each sink, in every daemon, its own `transactional_id_prefix`"
            ))
        } else {
            Failure::Retry(message)
        }
    }
}
