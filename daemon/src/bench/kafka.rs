//! `weir bench --suite kafka --brokers HOST:PORT`: Weir between two Kafka
//! topics, exactly-once with 1 s checkpoints, beside the same client doing
//! the plain job in the same run (the broker's own ceiling):
//!
//! - pass-through: a topic of `--kafka-records` records → the passthrough
//!   plugin → a topic; against a plain consume-and-produce loop;
//! - word count: a topic of lines → split-words → word-count → a topic;
//!   against a plain loop that consumes, counts in a map and produces;
//! - latency: records produced at a steady rate, each stamped with its send
//!   time, timed from the send to a read_committed consumer's receipt, through
//!   Weir (pass-through) and through the plain loop.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use wasmtime::Engine;

use super::{BenchOptions, write_and_validate};
use crate::checkpoint::store::Store;
use crate::metrics::Metrics;
use crate::topology::{Checkpointing, Pipeline};

const PARTITIONS: i32 = 2;
const VALUE_SIZE: usize = 100;
const LIMIT: Duration = Duration::from_secs(30);
/// The latency runs' rate and length.
const LATENCY_RATE: u64 = 10_000;
const LATENCY_SECS: u64 = 10;

pub(super) struct Plugins<'a> {
    pub(super) passthrough: &'a Path,
    pub(super) split_words: &'a Path,
    pub(super) word_count: &'a Path,
}

pub(super) fn kafka(
    options: &BenchOptions,
    engine: &Engine,
    plugins: &Plugins<'_>,
    dir: &Path,
) -> anyhow::Result<String> {
    let brokers = options.brokers.as_deref().context(
        "--suite kafka needs --brokers HOST:PORT (scripts/bench-kafka.sh starts a broker and passes it)",
    )?;
    let records = options.kafka_records;
    let run = format!("{:x}", std::process::id() ^ now_ms() as u32);
    let topic = |name: &str| format!("bench-{run}-{name}");
    for name in [
        "in",
        "plain",
        "weir",
        "lines",
        "plain-counts",
        "counts",
        "lat-in",
        "lat-plain",
        "lat-weir",
    ] {
        create_topic(brokers, &topic(name))?;
    }
    let mut out = format!(
        "kafka: {records} records of {VALUE_SIZE} bytes over {PARTITIONS} partitions, brokers {brokers}; \
         Weir exactly-once (a transaction per checkpoint), 1s checkpoints\n"
    );
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>14} {:>8}",
        "job", "plain rec/s", "weir rec/s", "weir/plain"
    );

    // Pass-through.
    let values: Vec<String> = (0..records)
        .map(|i| format!("{i:0>width$}", width = VALUE_SIZE))
        .collect();
    let produced = Instant::now();
    produce(
        brokers,
        &topic("in"),
        values.iter().map(|v| ("", v.as_str())),
    )?;
    let produce_rate = records as f64 / produced.elapsed().as_secs_f64();
    let plain = plain_pipe(
        brokers,
        &topic("in"),
        &topic("plain"),
        records,
        |k, v, out| {
            out.push((k.to_vec(), v.to_vec()));
        },
    )?;
    let weir = weir_run(
        engine,
        dir,
        "kafka-pass",
        &pass_through(
            brokers,
            &topic("in"),
            &topic("weir"),
            plugins.passthrough,
            dir,
        ),
        brokers,
        &topic("weir"),
        records,
    )?;
    let _ = writeln!(
        out,
        "{:>12} {:>14.0} {:>14.0} {:>7.0}%",
        "pass-through",
        plain,
        weir,
        100.0 * weir / plain
    );

    // Word count: lines of 8 words from a 10,000-word vocabulary.
    let lines = (records / 8).max(1);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let text: Vec<String> = (0..lines)
        .map(|_| {
            (0..8)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    format!("w{}", seed % 10_000)
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    produce(
        brokers,
        &topic("lines"),
        text.iter().map(|l| ("", l.as_str())),
    )?;
    let words = lines * 8;
    let mut counts: HashMap<Vec<u8>, u64> = HashMap::new();
    let plain_wc = plain_pipe(
        brokers,
        &topic("lines"),
        &topic("plain-counts"),
        words,
        |_, line, out| {
            for word in line.split(|b| *b == b' ').filter(|w| !w.is_empty()) {
                let n = counts.entry(word.to_vec()).or_default();
                *n += 1;
                let mut value = word.to_vec();
                value.push(b',');
                value.extend_from_slice(n.to_string().as_bytes());
                out.push((word.to_vec(), value));
            }
        },
    )?;
    let weir_wc = weir_run(
        engine,
        dir,
        "kafka-wc",
        &word_count(brokers, &topic("lines"), &topic("counts"), plugins, dir),
        brokers,
        &topic("counts"),
        words,
    )?;
    let _ = writeln!(
        out,
        "{:>12} {:>14.0} {:>14.0} {:>7.0}%   (words/s)",
        "word count",
        plain_wc,
        weir_wc,
        100.0 * weir_wc / plain_wc
    );
    let _ = writeln!(out, "plain produce alone: {produce_rate:.0} rec/s");

    // Latency.
    let plain_latency = latency(brokers, &topic("lat-in"), &topic("lat-plain"), None)?;
    let weir_latency = latency(
        brokers,
        &topic("lat-in"),
        &topic("lat-weir"),
        Some((engine, dir, plugins.passthrough)),
    )?;
    let _ = writeln!(
        out,
        "latency at {LATENCY_RATE} rec/s for {LATENCY_SECS}s, send to read_committed receipt: \
         plain p50 {:?} p99 {:?}; weir p50 {:?} p99 {:?} (a record waits for its checkpoint)",
        plain_latency.0, plain_latency.1, weir_latency.0, weir_latency.1
    );
    Ok(out)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn client(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers).set("log_level", "3");
    c
}

fn create_topic(brokers: &str, topic: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = client(brokers).create()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let results = runtime.block_on(admin.create_topics(
        &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
        &AdminOptions::new().operation_timeout(Some(LIMIT)),
    ))?;
    for r in results {
        r.map_err(|(t, e)| anyhow::anyhow!("cannot create topic {t}: {e}"))?;
    }
    Ok(())
}

fn producer(brokers: &str) -> anyhow::Result<BaseProducer> {
    Ok(client(brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?)
}

fn send(producer: &BaseProducer, mut record: BaseRecord<'_, [u8], [u8]>) -> anyhow::Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(1));
            }
            Err((e, _)) => bail!("send: {e}"),
        }
    }
}

fn produce<'a>(
    brokers: &str,
    topic: &str,
    records: impl Iterator<Item = (&'a str, &'a str)>,
) -> anyhow::Result<()> {
    let p = producer(brokers)?;
    for (key, value) in records {
        let mut r = BaseRecord::<[u8], [u8]>::to(topic).payload(value.as_bytes());
        if !key.is_empty() {
            r = r.key(key.as_bytes());
        }
        send(&p, r)?;
        p.poll(Duration::ZERO);
    }
    p.flush(LIMIT)?;
    Ok(())
}

fn consumer(brokers: &str, topic: &str) -> anyhow::Result<BaseConsumer> {
    let c: BaseConsumer = client(brokers)
        .set("group.id", "weir-bench")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("receive.message.max.bytes", "1000000000")
        .create()?;
    let mut list = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        list.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    c.assign(&list)?;
    Ok(c)
}

/// Consumes `from` and produces what `job` makes of each record to `to`
/// until `expected` records went out (all acknowledged): records/s.
fn plain_pipe(
    brokers: &str,
    from: &str,
    to: &str,
    expected: u64,
    mut job: impl FnMut(&[u8], &[u8], &mut Vec<(Vec<u8>, Vec<u8>)>),
) -> anyhow::Result<f64> {
    let c = consumer(brokers, from)?;
    let p = producer(brokers)?;
    let started = Instant::now();
    let mut sent = 0u64;
    let mut made = Vec::new();
    while sent < expected {
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the plain loop moved {sent} of {expected} records in 10 minutes");
        }
        let Some(m) = c.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m?;
        job(
            m.key().unwrap_or_default(),
            m.payload().unwrap_or_default(),
            &mut made,
        );
        for (k, v) in made.drain(..) {
            let mut r = BaseRecord::<[u8], [u8]>::to(to).payload(&v);
            if !k.is_empty() {
                r = r.key(&k);
            }
            send(&p, r)?;
            sent += 1;
        }
        p.poll(Duration::ZERO);
    }
    p.flush(LIMIT)?;
    Ok(expected as f64 / started.elapsed().as_secs_f64())
}

fn pass_through(brokers: &str, from: &str, to: &str, module: &Path, dir: &Path) -> String {
    format!(
        "[daemon]\ndata_dir = {data:?}\n[checkpoint]\ninterval = \"1s\"\nretain = 1\n\
         [sources.in]\ntype = \"kafka\"\nbrokers = [\"{brokers}\"]\ntopic = \"{from}\"\nparallelism = {PARTITIONS}\n\
         timestamp = \"record\"\n\
         [operators.pass]\nmodule = {module:?}\ninputs = [\"in\"]\nparallelism = {PARTITIONS}\npartition = \"forward\"\n\
         [sinks.out]\ntype = \"kafka\"\nbrokers = [\"{brokers}\"]\ntopic = \"{to}\"\ninputs = [\"pass\"]\n",
        data = dir.join(format!("data-{to}")).display().to_string(),
        module = module.display().to_string(),
    )
}

fn word_count(brokers: &str, from: &str, to: &str, plugins: &Plugins<'_>, dir: &Path) -> String {
    format!(
        "[daemon]\ndata_dir = {data:?}\n[checkpoint]\ninterval = \"1s\"\nretain = 1\n\
         [sources.in]\ntype = \"kafka\"\nbrokers = [\"{brokers}\"]\ntopic = \"{from}\"\nparallelism = {PARTITIONS}\n\
         [operators.split]\nmodule = {split:?}\ninputs = [\"in\"]\nparallelism = {PARTITIONS}\npartition = \"forward\"\n\
         [operators.count]\nmodule = {count:?}\ninputs = [\"split\"]\nparallelism = {PARTITIONS}\n\
         [sinks.out]\ntype = \"kafka\"\nbrokers = [\"{brokers}\"]\ntopic = \"{to}\"\ninputs = [\"count\"]\n",
        data = dir.join(format!("data-{to}")).display().to_string(),
        split = plugins.split_words.display().to_string(),
        count = plugins.word_count.display().to_string(),
    )
}

/// A running Weir pipeline, stopped (at a final checkpoint) when dropped.
struct Running {
    stop: crate::topology::StopSignal,
    waiter: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    fn start(engine: &Engine, dir: &Path, name: &str, text: &str) -> anyhow::Result<Self> {
        let validated = write_and_validate(engine, dir, name, text)?;
        let topology = &validated.topology;
        let root = topology.data_dir.join("checkpoints");
        let store = Store::open(&root)?;
        let settings = topology
            .checkpoint
            .context("the benchmark topology has no [checkpoint]")?;
        let checkpointing = Checkpointing {
            next_id: store.highest_id()? + 1,
            store,
            settings,
            restored: None,
        };
        let pipeline = Pipeline::start(&validated, engine, Some(checkpointing), &Metrics::new()?)?;
        let stop = pipeline.stop_signal();
        let waiter = std::thread::spawn(move || pipeline.wait().map(drop).map_err(Into::into));
        Ok(Self {
            stop,
            waiter: Some(waiter),
        })
    }

    fn finish(mut self) -> anyhow::Result<()> {
        self.stop.stop();
        match self.waiter.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => bail!("the pipeline panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.stop();
    }
}

/// Runs `text` until `expected` records are committed to `output`:
/// records/s from the start.
fn weir_run(
    engine: &Engine,
    dir: &Path,
    name: &str,
    text: &str,
    brokers: &str,
    output: &str,
    expected: u64,
) -> anyhow::Result<f64> {
    let reader = consumer(brokers, output)?;
    let started = Instant::now();
    let running = Running::start(engine, dir, name, text)?;
    let mut seen = 0u64;
    while seen < expected {
        if started.elapsed() > Duration::from_secs(600) {
            bail!("{name}: {seen} of {expected} records committed in 10 minutes");
        }
        if let Some(m) = reader.poll(Duration::from_millis(100)) {
            m?;
            seen += 1;
        }
    }
    let rate = expected as f64 / started.elapsed().as_secs_f64();
    running.finish()?;
    Ok(rate)
}

/// Sends records at [`LATENCY_RATE`] to `from` (each stamped with its send
/// time) while the plain loop, or Weir, moves them to `to`; returns the p50
/// and p99 of send-to-receipt.
fn latency(
    brokers: &str,
    from: &str,
    to: &str,
    weir: Option<(&Engine, &Path, &Path)>,
) -> anyhow::Result<(Duration, Duration)> {
    let total = LATENCY_RATE * LATENCY_SECS;
    let reader = consumer(brokers, to)?;
    // Only what is sent from now on: the plain run before used `from` too.
    let skip = count_committed(brokers, from)?;
    let done = Arc::new(AtomicBool::new(false));
    let running = match weir {
        Some((engine, dir, module)) => {
            let text = pass_through(brokers, from, to, module, dir)
                .replace("[sources.in]\n", "[sources.in]\nstart = \"latest\"\n");
            Some(Running::start(engine, dir, "kafka-latency", &text)?)
        }
        None => None,
    };
    let pipe = match &running {
        None => {
            let (brokers, from, to, done) = (
                brokers.to_owned(),
                from.to_owned(),
                to.to_owned(),
                done.clone(),
            );
            Some(std::thread::spawn(move || {
                plain_forward(&brokers, &from, &to, skip, &done)
            }))
        }
        Some(_) => None,
    };
    // Let the reader and the pipeline reach their partitions.
    std::thread::sleep(Duration::from_secs(3));
    let p = producer(brokers)?;
    let value = "x".repeat(VALUE_SIZE);
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for i in 0..total {
        let due = started + Duration::from_micros(i * 1_000_000 / LATENCY_RATE);
        while Instant::now() < due {
            drain_latencies(&reader, &mut latencies)?;
            p.poll(Duration::ZERO);
        }
        let partition = i32::try_from(i % PARTITIONS as u64).unwrap_or(0);
        send(
            &p,
            BaseRecord::<[u8], [u8]>::to(from)
                .payload(value.as_bytes())
                .partition(partition)
                .timestamp(now_ms()),
        )?;
    }
    p.flush(LIMIT)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while (latencies.len() as u64) < total && Instant::now() < deadline {
        drain_latencies(&reader, &mut latencies)?;
    }
    done.store(true, Ordering::SeqCst);
    if let Some(pipe) = pipe {
        let _ = pipe.join();
    }
    if let Some(r) = running {
        r.finish()?;
    }
    if (latencies.len() as u64) < total {
        bail!(
            "only {} of {total} records came through in time",
            latencies.len()
        );
    }
    latencies.sort_unstable();
    let at = |q: f64| Duration::from_millis(latencies[((latencies.len() - 1) as f64 * q) as usize]);
    Ok((at(0.50), at(0.99)))
}

fn drain_latencies(reader: &BaseConsumer, into: &mut Vec<u64>) -> anyhow::Result<()> {
    while let Some(m) = reader.poll(Duration::ZERO) {
        let m = m?;
        let sent = m.timestamp().to_millis().unwrap_or(0);
        into.push(u64::try_from(now_ms() - sent).unwrap_or(0));
    }
    Ok(())
}

/// The plain loop for the latency run: forwards records (keeping their
/// timestamps) after the first `skip`, until `done`.
fn plain_forward(
    brokers: &str,
    from: &str,
    to: &str,
    skip: u64,
    done: &AtomicBool,
) -> anyhow::Result<()> {
    let c = consumer(brokers, from)?;
    let p = producer(brokers)?;
    let mut seen = 0u64;
    while !done.load(Ordering::SeqCst) {
        if let Some(m) = c.poll(Duration::from_millis(10)) {
            let m = m?;
            seen += 1;
            if seen > skip {
                let mut r =
                    BaseRecord::<[u8], [u8]>::to(to).payload(m.payload().unwrap_or_default());
                if let Some(t) = m.timestamp().to_millis() {
                    r = r.timestamp(t);
                }
                send(&p, r)?;
            }
        }
        p.poll(Duration::ZERO);
    }
    Ok(())
}

fn count_committed(brokers: &str, topic: &str) -> anyhow::Result<u64> {
    let c: BaseConsumer = client(brokers).set("group.id", "weir-bench").create()?;
    let mut n = 0;
    for p in 0..PARTITIONS {
        let (low, high) = c.fetch_watermarks(topic, p, LIMIT)?;
        n += u64::try_from(high - low).unwrap_or(0);
    }
    Ok(n)
}
