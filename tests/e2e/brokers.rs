//! Real brokers for the connector tests, and tests of the broker guarantees
//! the connectors rely on, with the clients they use: a Kafka-protocol broker
//! (noida-db, from PyPI) must hide aborted transactions from read_committed
//! readers, fence an older producer and commit offsets with a transaction;
//! NATS JetStream (Debian's nats-server) must drop a repeated `Nats-Msg-Id`
//! within the stream's duplicate window and replay from a sequence.
//!
//! `scripts/setup.sh --tests` installs both. A test whose broker is missing
//! says so loudly and passes, except under CI (`CI` set), where it fails:
//! CI installs the brokers, so a missing one there is a broken set-up.

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::support::{Daemon, Sandbox, free_port, wait_until};

/// How long a broker may take to listen, and a client call to answer.
const BROKER_LIMIT: Duration = Duration::from_secs(30);

/// Where `scripts/setup.sh --tests` puts noida-db.
fn noida_db() -> PathBuf {
    let root = std::env::var_os("WEIR_BROKERS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/weir-brokers")))
        .unwrap_or_else(|| PathBuf::from(".cache/weir-brokers"));
    root.join("venv/bin/noida-db")
}

/// Starts a run of `config` and waits until `count` (of its output, read
/// from the broker) reaches `want`, then stops it with SIGTERM and checks
/// that it stopped cleanly.
pub(crate) fn run_until_output(
    sandbox: &Sandbox,
    config: &Path,
    name: &str,
    want: usize,
    mut count: impl FnMut() -> usize,
) {
    let mut daemon = Daemon::start(sandbox, name, config, &[]);
    // A SIGTERM before the daemon listens for it would kill it outright.
    daemon.wait_for("the pipeline running", |log| {
        log.contains("pipeline running")
    });
    wait_until(Duration::from_secs(240), "all the output", || {
        assert!(!daemon.exited(), "{name} exited:\n{}", daemon.log());
        count() >= want
    });
    daemon.signal("TERM");
    let (status, log) = daemon.wait();
    assert!(status.success(), "{name}:\n{log}");
}

/// `got`, a word count's output read back from a broker, is what one clean
/// run over `input` gives: every `w,i` once.
pub(crate) fn assert_word_counts(mut got: Vec<String>, input: &str, context: &str) {
    let want = crate::keyed_state::exact_counts(input);
    got.sort();
    assert_eq!(got.len(), want.len(), "{context}: output count records");
    assert!(
        got == want,
        "{context}: the output counts differ from one clean run"
    );
}

/// Says loudly that `broker` is missing; fails under CI.
fn missing(broker: &str, how: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{broker} is not installed, and CI must have it: {how}"
    );
    eprintln!(
        "\n*** SKIPPED: {broker} is not installed ({how}); run scripts/setup.sh --tests ***\n"
    );
}

/// A broker process on a free loopback port, stopped (SIGTERM) when dropped.
pub(crate) struct Broker {
    child: Child,
    /// Its address, `127.0.0.1:PORT`.
    pub(crate) address: String,
}

impl Broker {
    /// noida-db serving only Kafka, its data in `dir`; None if not installed.
    pub(crate) fn kafka(dir: &Path) -> Option<Self> {
        Self::kafka_on(dir, free_port())
    }

    /// noida-db on `port` (a restart, after [`Broker::stop`], on the same one).
    pub(crate) fn kafka_on(dir: &Path, port: u16) -> Option<Self> {
        let bin = noida_db();
        if !bin.exists() {
            missing(
                "noida-db (the Kafka-protocol broker)",
                &bin.display().to_string(),
            );
            return None;
        }
        // Its own process group: `noida-db` is a wrapper whose broker is a
        // child process, and both must stop.
        let child = Command::new(&bin)
            .process_group(0)
            .args(["start", "--data-dir"])
            .arg(dir)
            .args(["--only", "kafka", "--kafka-port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        Some(Self::listening(child, port))
    }

    /// nats-server with JetStream, its store in `dir`; None if not installed.
    pub(crate) fn nats(dir: &Path) -> Option<Self> {
        Self::nats_on(dir, free_port())
    }

    /// nats-server on `port` (a restart, on the same one).
    pub(crate) fn nats_on(dir: &Path, port: u16) -> Option<Self> {
        let found = Command::new("nats-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            missing("nats-server", "Debian's nats-server package");
            return None;
        }
        let child = Command::new("nats-server")
            .process_group(0)
            .args(["-js", "-sd"])
            .arg(dir)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        Some(Self::listening(child, port))
    }

    fn listening(child: Child, port: u16) -> Self {
        let address = format!("127.0.0.1:{port}");
        let start = Instant::now();
        while TcpStream::connect(&address).is_err() {
            assert!(
                start.elapsed() < BROKER_LIMIT,
                "the broker did not listen on {address} within {BROKER_LIMIT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, address }
    }

    /// Its port.
    pub(crate) fn port(&self) -> u16 {
        self.address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("an address with a port")
    }

    /// Stops it (SIGTERM), as dropping it does.
    pub(crate) fn stop(self) {}

    /// SIGKILLs it (nats-server keeps what it acknowledged).
    pub(crate) fn kill(mut self) {
        self.signal_group("KILL");
        let _ = self.child.wait();
    }

    /// Signals its whole process group (it leads one).
    fn signal_group(&self, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg("--")
            .arg(format!("-{}", self.child.id()))
            .status();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // SIGTERM: noida-db loses what it acknowledged just before a SIGKILL.
        self.signal_group("TERM");
        let start = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            if start.elapsed() > BROKER_LIMIT {
                self.signal_group("KILL");
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
    }
}

/// A client config for the broker at `address`. noida-db needs a session
/// timeout of at least 6 s.
fn kafka_config(address: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", address)
        .set("session.timeout.ms", "6000")
        .set("log_level", "3");
    config
}

/// Creates `topic` with `partitions` partitions.
pub(crate) fn create_topic(address: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        kafka_config(address).create().expect("an admin client");
    let options = AdminOptions::new().operation_timeout(Some(BROKER_LIMIT));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = runtime
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &options,
        ))
        .expect("create topics");
    for result in results {
        result.unwrap_or_else(|(topic, code)| panic!("create topic {topic}: {code}"));
    }
}

/// Grows `topic` to `partitions` partitions.
pub(crate) fn add_partitions(address: &str, topic: &str, partitions: usize) {
    use rdkafka::admin::NewPartitions;
    let admin: AdminClient<DefaultClientContext> =
        kafka_config(address).create().expect("an admin client");
    let options = AdminOptions::new().operation_timeout(Some(BROKER_LIMIT));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = runtime
        .block_on(admin.create_partitions(&[NewPartitions::new(topic, partitions)], &options))
        .expect("create partitions");
    for result in results {
        result.unwrap_or_else(|(topic, code)| panic!("add partitions to {topic}: {code}"));
    }
}

/// A Kafka broker with a one-partition `topic`; None if not installed.
fn kafka_with_topic(sandbox: &Sandbox, topic: &str) -> Option<Broker> {
    let broker = Broker::kafka(&sandbox.path("kafka"))?;
    create_topic(&broker.address, topic, 1);
    Some(broker)
}

/// Sends `value` to partition 0 of `topic`.
fn send(producer: &BaseProducer, topic: &str, value: &str) {
    producer
        .send(BaseRecord::<(), str>::to(topic).payload(value).partition(0))
        .map_err(|(e, _)| e)
        .expect("send");
}

/// A transactional producer with id `id`, its transactions initialised.
fn transactional(address: &str, id: &str) -> BaseProducer {
    let producer: BaseProducer = kafka_config(address)
        .set("transactional.id", id)
        .create()
        .expect("a producer");
    producer
        .init_transactions(BROKER_LIMIT)
        .expect("init transactions");
    producer
}

/// Sends `values` to partition 0 of `topic` in one transaction, committed or aborted.
fn transaction(producer: &BaseProducer, topic: &str, values: &[&str], commit: bool) {
    producer.begin_transaction().expect("begin");
    for value in values {
        send(producer, topic, value);
    }
    producer.flush(BROKER_LIMIT).expect("flush");
    if commit {
        producer.commit_transaction(BROKER_LIMIT).expect("commit");
    } else {
        producer.abort_transaction(BROKER_LIMIT).expect("abort");
    }
}

/// Sends `(partition, key, value)` records to `topic` and waits until the
/// broker has them all.
pub(crate) fn produce(address: &str, topic: &str, records: &[(i32, &str, &str)]) {
    produce_at(address, topic, records, None);
}

/// [`produce`], with every record's Kafka timestamp set to `timestamp_ms`
/// (the broker's send time when `None`).
pub(crate) fn produce_at(
    address: &str,
    topic: &str,
    records: &[(i32, &str, &str)],
    timestamp_ms: Option<i64>,
) {
    let producer: BaseProducer = kafka_config(address)
        .set("enable.idempotence", "true")
        .create()
        .expect("a producer");
    for (partition, key, value) in records {
        let mut record = BaseRecord::<str, str>::to(topic)
            .payload(value)
            .partition(*partition);
        if !key.is_empty() {
            record = record.key(key);
        }
        if let Some(ms) = timestamp_ms {
            record = record.timestamp(ms);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("send to {topic}: {e}"),
            }
        }
    }
    producer.flush(BROKER_LIMIT).expect("flush");
}

/// Every `(key, value)` of every partition of `topic` a reader at
/// `isolation` sees (read until nothing comes for two seconds), partition
/// by partition.
pub(crate) fn read_topic(address: &str, topic: &str, isolation: &str) -> Vec<(String, String)> {
    let consumer: BaseConsumer = kafka_config(address)
        .set("group.id", "weir-test-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .expect("a consumer");
    // A broker just restarted drops its first connections, the metadata
    // request's among them.
    let mut attempts = 0;
    let metadata = loop {
        attempts += 1;
        match consumer.fetch_metadata(Some(topic), BROKER_LIMIT) {
            Ok(metadata) => break metadata,
            Err(KafkaError::MetadataFetch(
                RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown,
            )) if attempts < 10 => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => panic!("metadata of {topic}, attempt {attempts}: {e}"),
        }
    };
    let mut partitions = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            partitions
                .add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
        }
    }
    consumer.assign(&partitions).expect("assign");
    let mut by_partition: std::collections::BTreeMap<i32, Vec<(String, String)>> =
        std::collections::BTreeMap::new();
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(2) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let text =
                    |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
                by_partition
                    .entry(m.partition())
                    .or_default()
                    .push((text(m.key()), text(m.payload())));
                quiet_since = Instant::now();
            }
            // A broker just restarted drops its first connections.
            Some(Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown,
            ))) => {}
            Some(Err(e)) => panic!("read {topic}: {e}"),
            None => {}
        }
    }
    by_partition.into_values().flatten().collect()
}

fn nats_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Makes JetStream stream `name` capturing `subject`, with a two-minute
/// duplicate window.
pub(crate) fn nats_stream(address: &str, name: &str, subject: &str) {
    use async_nats::jetstream::{self, stream};
    nats_runtime().block_on(async {
        let client = async_nats::connect(address).await.unwrap();
        jetstream::new(client)
            .get_or_create_stream(stream::Config {
                name: name.into(),
                subjects: vec![subject.into()],
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .unwrap();
    });
}

/// Publishes `values` on `subject`, every ack awaited.
pub(crate) fn nats_publish(address: &str, subject: &str, values: &[&str]) {
    use async_nats::jetstream;
    nats_runtime().block_on(async {
        let client = async_nats::connect(address).await.unwrap();
        let js = jetstream::new(client);
        for chunk in values.chunks(1000) {
            let mut acks = Vec::new();
            for v in chunk {
                acks.push(
                    js.publish(subject.to_owned(), v.to_string().into())
                        .await
                        .unwrap(),
                );
            }
            for a in acks {
                a.await.unwrap();
            }
        }
    });
}

/// Every message of stream `name`, in order (its value).
pub(crate) fn nats_read(address: &str, name: &str) -> Vec<String> {
    use async_nats::jetstream::{self, consumer};
    use futures_util::StreamExt;
    nats_runtime().block_on(async {
        let client = async_nats::connect(address).await.unwrap();
        let js = jetstream::new(client);
        let mut stream = js.get_stream(name).await.unwrap();
        let last = stream.info().await.unwrap().state.last_sequence;
        let mut values = Vec::new();
        if last == 0 {
            return values;
        }
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig::default())
            .await
            .unwrap();
        let mut messages = consumer.messages().await.unwrap();
        loop {
            let m = tokio::time::timeout(BROKER_LIMIT, messages.next())
                .await
                .expect("the stream delivers")
                .expect("the stream goes on")
                .unwrap();
            values.push(String::from_utf8_lossy(&m.payload).into_owned());
            if m.info().unwrap().stream_sequence >= last {
                return values;
            }
        }
    })
}

/// Every value of partition 0 of `topic` a reader at `isolation` sees, up to
/// the partition's end (read until nothing comes for a second).
pub(crate) fn read_partition(address: &str, topic: &str, isolation: &str) -> Vec<String> {
    let consumer: BaseConsumer = kafka_config(address)
        .set("group.id", "weir-test-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .expect("a consumer");
    let mut partitions = TopicPartitionList::new();
    partitions
        .add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&partitions).expect("assign");
    let mut values = Vec::new();
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(1) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                values.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
                quiet_since = Instant::now();
            }
            Some(Err(e)) => panic!("read {topic}: {e}"),
            None => {}
        }
    }
    values
}

#[test]
fn kafka_read_committed_hides_aborted_transactions() {
    let sandbox = Sandbox::new();
    let Some(broker) = kafka_with_topic(&sandbox, "t") else {
        return;
    };
    let producer = transactional(&broker.address, "weir-test-1");
    transaction(&producer, "t", &["a", "b", "c"], true);
    transaction(&producer, "t", &["aborted-1", "aborted-2"], false);
    transaction(&producer, "t", &["d"], true);
    assert_eq!(
        read_partition(&broker.address, "t", "read_committed"),
        ["a", "b", "c", "d"]
    );
    let everything = read_partition(&broker.address, "t", "read_uncommitted");
    assert!(
        everything.contains(&"aborted-1".to_owned()),
        "a read_uncommitted reader sees aborted records, so the read_committed one hid them: \
         {everything:?}"
    );
}

#[test]
fn kafka_a_new_producer_with_the_same_transactional_id_fences_the_old() {
    let sandbox = Sandbox::new();
    let Some(broker) = kafka_with_topic(&sandbox, "t") else {
        return;
    };
    let old = transactional(&broker.address, "weir-test-fence");
    old.begin_transaction().unwrap();
    send(&old, "t", "from-the-old");
    old.flush(BROKER_LIMIT).unwrap();
    // The restart: a new producer with the same id aborts the old one's
    // open transaction and fences it.
    let new = transactional(&broker.address, "weir-test-fence");
    let refused = old.commit_transaction(BROKER_LIMIT);
    match refused {
        Err(KafkaError::Transaction(e)) => assert!(
            e.is_fatal() || e.txn_requires_abort() || e.code() == RDKafkaErrorCode::Fenced,
            "the old producer's commit failed, but not as fenced: {e}"
        ),
        other => panic!("the fenced producer's commit went through: {other:?}"),
    }
    transaction(&new, "t", &["from-the-new"], true);
    assert_eq!(
        read_partition(&broker.address, "t", "read_committed"),
        ["from-the-new"]
    );
}

#[test]
fn kafka_offsets_sent_in_a_transaction_commit_and_abort_with_it() {
    let sandbox = Sandbox::new();
    let Some(broker) = kafka_with_topic(&sandbox, "t") else {
        return;
    };
    // A consumer of the sink's own group, never subscribed: its metadata
    // is the "standalone" form a producer sends offsets to.
    let group: BaseConsumer = kafka_config(&broker.address)
        .set("group.id", "weir-test-sink")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = group.group_metadata().expect("a group id is set");
    let producer = transactional(&broker.address, "weir-test-offsets");
    let offsets = |n: i64| {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset("t", 0, Offset::Offset(n))
            .unwrap();
        list
    };
    let committed = || {
        let mut query = TopicPartitionList::new();
        query.add_partition("t", 0);
        let got = group.committed_offsets(query, BROKER_LIMIT).unwrap();
        got.elements()[0].offset()
    };
    for (n, commit) in [(7, true), (9, false)] {
        producer.begin_transaction().unwrap();
        send(&producer, "t", "x");
        producer
            .send_offsets_to_transaction(&offsets(n), &metadata, BROKER_LIMIT)
            .unwrap();
        producer.flush(BROKER_LIMIT).unwrap();
        if commit {
            producer.commit_transaction(BROKER_LIMIT).unwrap();
        } else {
            producer.abort_transaction(BROKER_LIMIT).unwrap();
        }
        assert_eq!(
            committed(),
            Offset::Offset(7),
            "after the transaction sending offset {n} (committed: {commit})"
        );
    }
}

#[test]
fn nats_jetstream_drops_a_repeated_msg_id_and_replays_from_a_sequence() {
    use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
    use futures_util::StreamExt;

    let sandbox = Sandbox::new();
    let Some(broker) = Broker::nats(&sandbox.path("nats")) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = async_nats::connect(broker.address.as_str()).await.unwrap();
        let js = jetstream::new(client);
        let stream = js
            .get_or_create_stream(stream::Config {
                name: "EVENTS".into(),
                subjects: vec!["events.>".into()],
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut duplicates = 0;
        for (id, value) in [("a", "1"), ("b", "2"), ("a", "1 again"), ("c", "3")] {
            let ack = js
                .send_publish(
                    "events.x",
                    PublishMessage::build().payload(value.into()).message_id(id),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            duplicates += usize::from(ack.duplicate);
        }
        assert_eq!(duplicates, 1, "the repeated id is a duplicate");
        assert_eq!(stream.get_info().await.unwrap().state.last_sequence, 3);
        // Replay from sequence 2, as a restore does.
        let replay = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: 2 },
                ..Default::default()
            })
            .await
            .unwrap();
        let mut messages = replay.messages().await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let m = tokio::time::timeout(BROKER_LIMIT, messages.next())
                .await
                .expect("the replay delivers")
                .expect("the replay goes on")
                .unwrap();
            let sequence = m.info().unwrap().stream_sequence;
            seen.push((sequence, String::from_utf8_lossy(&m.payload).into_owned()));
        }
        assert_eq!(seen, [(2, "2".to_owned()), (3, "3".to_owned())]);
    });
}
