//! The Kafka source and sink through the real binary against a real broker
//! (noida-db): a word count from a topic to a topic stays exactly-once
//! through SIGKILLs, restarts at other parallelisms, crashes between a
//! checkpoint and its transaction, and a broker restart; a source started
//! before its broker waits for it and says so.

use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_test_artifacts as plugins;

use crate::brokers::{
    Broker, add_partitions, assert_word_counts, create_topic, produce, produce_at, read_topic,
    run_until_output,
};
use crate::checkpoints::killed_by;
use crate::keyed_state::{exact_counts, text};
use crate::support::{
    Daemon, Sandbox, free_port, http, metric, newest_completed_checkpoint, toml_path, wait_until,
};

const INPUT_PARTITIONS: i32 = 3;

/// `lines` (three partitions) → split-words → word-count (by word) → `counts`,
/// exactly-once, the source at `parallelism`.
fn word_count_config(
    sandbox: &Sandbox,
    broker: &str,
    parallelism: u32,
    admin_port: u16,
) -> PathBuf {
    let config = format!(
        "[daemon]\ndata_dir = \"var\"\nadmin_address = \"127.0.0.1:{admin_port}\"\n\
         [checkpoint]\ninterval = \"150ms\"\n\
         [sources.lines]\ntype = \"kafka\"\nbrokers = [\"{broker}\"]\ntopic = \"lines\"\n\
         parallelism = {parallelism}\nbatch_size = 50\npartition_discovery = \"500ms\"\n\
         [operators.split]\nmodule = {split}\ninputs = [\"lines\"]\nparallelism = {parallelism}\n\
         [operators.count]\nmodule = {count}\ninputs = [\"split\"]\nparallelism = 2\n\
         [sinks.counts]\ntype = \"kafka\"\nbrokers = [\"{broker}\"]\ntopic = \"counts\"\n\
         inputs = [\"count\"]\n",
        split = toml_path(plugins::SPLIT_WORDS),
        count = toml_path(plugins::WORD_COUNT),
    );
    sandbox.write("wc.toml", config)
}

/// A broker with `lines` and `counts`, and `lines` holding `input`.
fn broker_with_input(sandbox: &Sandbox, input: &str) -> Option<Broker> {
    let broker = Broker::kafka(&sandbox.path("kafka"))?;
    create_topic(&broker.address, "lines", INPUT_PARTITIONS);
    create_topic(&broker.address, "counts", 2);
    send_lines(&broker.address, input, 0, INPUT_PARTITIONS);
    Some(broker)
}

/// Sends `input`'s lines to `lines`, round robin over its first `partitions`
/// partitions, the first line to the partition after line `first`'s.
fn send_lines(address: &str, input: &str, first: usize, partitions: i32) {
    send_lines_at(address, input, first, partitions, None);
}

/// [`send_lines`], every record stamped `timestamp_ms` (or the send time).
fn send_lines_at(
    address: &str,
    input: &str,
    first: usize,
    partitions: i32,
    timestamp_ms: Option<i64>,
) {
    let records: Vec<(i32, &str, &str)> = input
        .lines()
        .enumerate()
        .map(|(i, line)| (((first + i) % partitions as usize) as i32, "", line))
        .collect();
    produce_at(address, "lines", &records, timestamp_ms);
}

/// Runs until `counts` holds `want` records, then stops with SIGTERM.
fn run_until_counted(sandbox: &Sandbox, config: &Path, address: &str, want: usize, name: &str) {
    run_until_output(sandbox, config, name, want, || {
        read_topic(address, "counts", "read_committed").len()
    });
}

fn assert_exactly_once(address: &str, input: &str, context: &str) {
    let got = read_topic(address, "counts", "read_committed")
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_word_counts(got, input, context);
}

#[test]
fn a_word_count_from_topic_to_topic_is_exactly_once_through_five_sigkills() {
    let sandbox = Sandbox::new();
    let mut input = text(20_000, 300);
    let Some(broker) = broker_with_input(&sandbox, &input) else {
        return;
    };
    let data_dir = sandbox.path("var");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut kills = 0;
    let mut attempts = 0;
    while kills < 5 {
        attempts += 1;
        assert!(attempts <= 15, "{attempts} runs, only {kills} kills landed");
        // Each restart reads at another parallelism: the partitions, with
        // their offsets, go to other instances.
        let parallelism = 1 + attempts % 3;
        let config = word_count_config(&sandbox, &broker.address, parallelism, free_port());
        let (daemon, _) = Daemon::start_until_checkpoint(
            &sandbox,
            &format!("run-{attempts}"),
            &config,
            &data_dir,
        );
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(seed % 600));
        let (status, log) = daemon.kill();
        assert!(
            killed_by(status, 9),
            "run {attempts} ended by itself:\n{log}"
        );
        assert!(
            attempts == 1 || log.contains("restoring from checkpoint"),
            "run {attempts} did not restore:\n{log}"
        );
        kills += 1;
        // More input arrives while the pipeline is down, so every run has
        // work in flight when it is killed.
        let more = text(8_000, 300);
        send_lines(
            &broker.address,
            &more,
            input.lines().count(),
            INPUT_PARTITIONS,
        );
        input.push_str(&more);
    }
    let config = word_count_config(&sandbox, &broker.address, 2, free_port());
    let want = exact_counts(&input).len();
    run_until_counted(&sandbox, &config, &broker.address, want, "final");
    assert_exactly_once(&broker.address, &input, &format!("after {kills} kills"));
    assert_eq!(staged(&data_dir), 0, "sent output is removed");
}

/// Staged files of the `counts` sink waiting to be sent.
fn staged(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("kafka-sinks/counts"))
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".staged"))
            })
            .count()
        })
        .unwrap_or(0)
}

/// A crash at `point` (the `nth` time it is reached), then a run to the end.
fn crash_at(point: &str, nth: u32) {
    let sandbox = Sandbox::new();
    let input = text(20_000, 200);
    let Some(broker) = broker_with_input(&sandbox, &input) else {
        return;
    };
    let config = word_count_config(&sandbox, &broker.address, 2, free_port());
    let failpoint = format!("WEIR_FAILPOINT={point}:{nth}");
    let child = crate::support::weir()
        .args(["run", "--config"])
        .arg(&config)
        .env("WEIR_FAILPOINT", format!("{point}:{nth}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = crate::support::wait_with_limit(child, Duration::from_secs(120));
    assert!(
        killed_by(out.status, 6),
        "{failpoint} did not abort:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        staged(&sandbox.path("var")) > 0,
        "{failpoint}: the crash left no output waiting, so it tests nothing"
    );
    let want = exact_counts(&input).len();
    run_until_counted(&sandbox, &config, &broker.address, want, "after the crash");
    assert_exactly_once(&broker.address, &input, point);
    assert_eq!(staged(&sandbox.path("var")), 0, "sent output is removed");
}

#[test]
fn a_crash_after_the_checkpoint_is_durable_and_before_the_transaction_loses_nothing() {
    crash_at("before-commit", 2);
}

#[test]
fn a_crash_with_the_transaction_open_duplicates_nothing() {
    crash_at("kafka-before-commit", 1);
}

#[test]
fn a_crash_after_the_transaction_commits_duplicates_nothing() {
    crash_at("kafka-after-commit", 1);
}

#[test]
fn the_broker_restarting_under_a_running_pipeline_loses_and_duplicates_nothing() {
    let sandbox = Sandbox::new();
    let input = text(20_000, 300);
    let Some(broker) = broker_with_input(&sandbox, &input) else {
        return;
    };
    let port = broker.port();
    let address = broker.address.clone();
    let admin = free_port();
    let config = word_count_config(&sandbox, &address, 2, admin);
    let data_dir = sandbox.path("var");
    let mut daemon = Daemon::start(&sandbox, "run", &config, &[]);
    daemon.wait_for("a checkpoint", |_| {
        newest_completed_checkpoint(&data_dir) > 0
    });
    broker.stop();
    wait_until(
        Duration::from_secs(120),
        "the outage in the metrics",
        || {
            let (_, scrape) = http("GET", admin, "/metrics", "");
            metric(&scrape, "weir_broker_connected{component=\"lines\"}") == Some(0.0)
                || metric(&scrape, "weir_broker_connected{component=\"counts\"}") == Some(0.0)
        },
    );
    assert!(
        !daemon.exited(),
        "a lost broker stalls the pipeline, never ends it:\n{}",
        daemon.log()
    );
    let Some(_broker) = Broker::kafka_on(&sandbox.path("kafka"), port) else {
        return;
    };
    let want = exact_counts(&input).len();
    wait_until(Duration::from_secs(240), "every count committed", || {
        assert!(!daemon.exited(), "exited:\n{}", daemon.log());
        read_topic(&address, "counts", "read_committed").len() >= want
    });
    daemon.signal("TERM");
    let (status, log) = daemon.wait();
    assert!(status.success(), "{log}");
    assert_exactly_once(&address, &input, "through a broker restart");
}

#[test]
fn a_source_started_before_its_broker_waits_for_it_and_says_so() {
    let sandbox = Sandbox::new();
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let admin = free_port();
    let config = word_count_config(&sandbox, &address, 1, admin);
    // `validate` checks the config only.
    let out = crate::support::run("validate", &config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut daemon = Daemon::start(&sandbox, "run", &config, &[]);
    wait_until(
        Duration::from_secs(60),
        "the status naming the source",
        || {
            assert!(
                !daemon.exited(),
                "no broker must not end the run:\n{}",
                daemon.log()
            );
            let (status, body) = http("GET", admin, "/ready", "");
            status == 503 && body.contains("`lines` cannot reach its brokers")
        },
    );
    let (_, scrape) = http("GET", admin, "/metrics", "");
    assert_eq!(
        metric(&scrape, "weir_broker_connected{component=\"lines\"}"),
        Some(0.0),
        "{scrape}"
    );
    let Some(broker) = Broker::kafka_on(&sandbox.path("kafka"), port) else {
        return;
    };
    create_topic(&broker.address, "lines", INPUT_PARTITIONS);
    create_topic(&broker.address, "counts", 2);
    let input = text(2_000, 100);
    send_lines(&broker.address, &input, 0, INPUT_PARTITIONS);
    let want = exact_counts(&input).len();
    wait_until(Duration::from_secs(240), "every count committed", || {
        assert!(!daemon.exited(), "exited:\n{}", daemon.log());
        read_topic(&address, "counts", "read_committed").len() >= want
    });
    let (_, scrape) = http("GET", admin, "/metrics", "");
    assert_eq!(
        metric(&scrape, "weir_broker_connected{component=\"lines\"}"),
        Some(1.0),
        "{scrape}"
    );
    daemon.signal("TERM");
    let (status, log) = daemon.wait();
    assert!(status.success(), "{log}");
    assert_exactly_once(&address, &input, "after waiting for the broker");
}

#[test]
fn the_example_topology_counts_words_from_topic_to_topic() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sandbox = Sandbox::new();
    let input = text(2_000, 100);
    let Some(broker) = broker_with_input(&sandbox, &input) else {
        return;
    };
    let example = std::fs::read_to_string(repo.join("config/kafka.toml")).unwrap();
    assert!(example.contains("127.0.0.1:9092"), "{example}");
    let config = sandbox.write(
        "kafka.toml",
        example.replace("127.0.0.1:9092", &broker.address),
    );
    for (name, path) in [
        ("split_words", plugins::SPLIT_WORDS),
        ("word_count", plugins::WORD_COUNT),
    ] {
        sandbox.write(
            &format!("plugins/{name}.wasm"),
            std::fs::read(path).unwrap(),
        );
    }
    let want = exact_counts(&input).len();
    run_until_counted(&sandbox, &config, &broker.address, want, "example");
    assert_exactly_once(&broker.address, &input, "config/kafka.toml");
}

#[test]
fn partitions_added_while_running_are_read_and_at_least_once_output_has_every_record() {
    let sandbox = Sandbox::new();
    let Some(broker) = Broker::kafka(&sandbox.path("kafka")) else {
        return;
    };
    let address = broker.address.clone();
    create_topic(&address, "lines", 1);
    create_topic(&address, "counts", 2);
    create_topic(&address, "words", 1);
    let first = text(1_000, 100);
    send_lines(&address, &first, 0, 1);
    // The word count as before, and every word, at least once, to `words`.
    let config = std::fs::read_to_string(word_count_config(&sandbox, &address, 2, free_port()))
        .unwrap()
        + &format!(
            "[sinks.words]\ntype = \"kafka\"\nbrokers = [\"{address}\"]\ntopic = \"words\"\n\
             inputs = [\"split\"]\ndelivery = \"at_least_once\"\n"
        );
    let config = sandbox.write("wc.toml", config);
    let mut daemon = Daemon::start(&sandbox, "run", &config, &[]);
    let counted = |n: usize| read_topic(&address, "counts", "read_committed").len() >= n;
    wait_until(Duration::from_secs(120), "the first lines counted", || {
        assert!(!daemon.exited(), "{}", daemon.log());
        counted(exact_counts(&first).len())
    });
    add_partitions(&address, "lines", 3);
    let second = text(1_000, 100);
    // Only into the new partitions.
    let records: Vec<(i32, &str, &str)> = second
        .lines()
        .enumerate()
        .map(|(i, l)| (1 + (i % 2) as i32, "", l))
        .collect();
    produce(&address, "lines", &records);
    let input = first.clone() + &second;
    wait_until(
        Duration::from_secs(120),
        "the new partitions' lines counted",
        || {
            assert!(!daemon.exited(), "{}", daemon.log());
            counted(exact_counts(&input).len())
        },
    );
    assert!(
        daemon.log().contains("reading new partitions"),
        "{}",
        daemon.log()
    );
    daemon.signal("TERM");
    let (status, log) = daemon.wait();
    assert!(status.success(), "{log}");
    assert_exactly_once(&address, &input, "with partitions added");
    let mut words: Vec<String> = read_topic(&address, "words", "read_uncommitted")
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    words.sort();
    let mut want: Vec<String> = input.split_whitespace().map(str::to_owned).collect();
    want.sort();
    assert_eq!(
        words, want,
        "every word once (no crash, so at least once is exactly once)"
    );
}

#[test]
fn keys_values_timestamps_and_headers_pass_from_topic_to_topic() {
    use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
    let sandbox = Sandbox::new();
    let Some(broker) = Broker::kafka(&sandbox.path("kafka")) else {
        return;
    };
    let address = broker.address.clone();
    create_topic(&address, "in", 1);
    create_topic(&address, "out", 1);
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &address)
        .create()
        .unwrap();
    for i in 0..10i64 {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "trace",
                value: Some(format!("t{i}").as_bytes()),
            })
            .insert(Header {
                key: "n",
                value: Some(&i.to_le_bytes()[..]),
            });
        let value = format!("v{i}");
        let key = format!("k{i}");
        let mut record = BaseRecord::<str, str>::to("in")
            .key(&key)
            .payload(&value)
            .timestamp(1_700_000_000_000 + i);
        if i % 2 == 0 {
            record = record.headers(headers);
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let config = sandbox.write(
        "copy.toml",
        format!(
            "[daemon]\ndata_dir = \"var\"\n[checkpoint]\ninterval = \"200ms\"\n\
             [sources.in]\ntype = \"kafka\"\nbrokers = [\"{address}\"]\ntopic = \"in\"\ntimestamp = \"record\"\n\
             [sinks.out]\ntype = \"kafka\"\nbrokers = [\"{address}\"]\ntopic = \"out\"\ninputs = [\"in\"]\n"
        ),
    );
    let mut daemon = Daemon::start(&sandbox, "run", &config, &[]);
    daemon.wait_for("the pipeline running", |log| {
        log.contains("pipeline running")
    });
    wait_until(Duration::from_secs(120), "the copies committed", || {
        read_topic(&address, "out", "read_committed").len() >= 10
    });
    daemon.signal("TERM");
    let (status, log) = daemon.wait();
    assert!(status.success(), "{log}");

    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &address)
        .set("group.id", "check")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition_offset("out", 0, rdkafka::Offset::Beginning)
        .unwrap();
    rdkafka::consumer::Consumer::assign(&consumer, &list).unwrap();
    let mut seen = 0i64;
    while seen < 10 {
        let m = consumer
            .poll(Duration::from_secs(30))
            .expect("a copy")
            .expect("readable");
        let i = seen;
        assert_eq!(m.key(), Some(format!("k{i}").as_bytes()));
        assert_eq!(m.payload(), Some(format!("v{i}").as_bytes()));
        assert_eq!(m.timestamp().to_millis(), Some(1_700_000_000_000 + i));
        let headers: Vec<(String, Vec<u8>)> = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        if i % 2 == 0 {
            assert_eq!(
                headers,
                [
                    ("trace".to_owned(), format!("t{i}").into_bytes()),
                    ("n".to_owned(), i.to_le_bytes().to_vec())
                ]
            );
        } else {
            assert!(headers.is_empty(), "{headers:?}");
        }
        seen += 1;
    }
}

#[test]
fn a_source_can_start_at_latest_and_its_group_gets_the_checkpointed_offsets() {
    use rdkafka::consumer::Consumer as _;
    let sandbox = Sandbox::new();
    let Some(broker) = Broker::kafka(&sandbox.path("kafka")) else {
        return;
    };
    let address = broker.address.clone();
    create_topic(&address, "lines", 1);
    create_topic(&address, "counts", 2);
    let old = text(300, 50);
    send_lines(&address, &old, 0, 1);
    let config = std::fs::read_to_string(word_count_config(&sandbox, &address, 1, free_port()))
        .unwrap()
        .replace(
            "topic = \"lines\"\n",
            "topic = \"lines\"\nstart = \"latest\"\ngroup = \"monitor\"\n",
        );
    let config = sandbox.write("wc.toml", config);
    let data_dir = sandbox.path("var");
    let mut daemon = Daemon::start(&sandbox, "run", &config, &[]);
    daemon.wait_for("a checkpoint", |_| {
        newest_completed_checkpoint(&data_dir) > 0
    });
    let new = text(200, 40);
    send_lines(&address, &new, 0, 1);
    wait_until(Duration::from_secs(120), "the new lines counted", || {
        assert!(!daemon.exited(), "{}", daemon.log());
        read_topic(&address, "counts", "read_committed").len() >= exact_counts(&new).len()
    });
    let group: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &address)
        .set("group.id", "monitor")
        .create()
        .unwrap();
    wait_until(
        Duration::from_secs(60),
        "the offsets committed to the group",
        || {
            let mut query = rdkafka::TopicPartitionList::new();
            query.add_partition("lines", 0);
            let committed = group
                .committed_offsets(query, Duration::from_secs(10))
                .unwrap();
            committed.elements()[0].offset() == rdkafka::Offset::Offset(500)
        },
    );
    daemon.signal("TERM");
    let (status, log) = daemon.wait();
    assert!(status.success(), "{log}");
    assert_exactly_once(
        &address,
        &new,
        "from latest: only the lines sent after the start",
    );
}

#[test]
fn a_source_can_start_at_a_timestamp() {
    let sandbox = Sandbox::new();
    let Some(broker) = Broker::kafka(&sandbox.path("kafka")) else {
        return;
    };
    let address = broker.address.clone();
    create_topic(&address, "lines", 2);
    create_topic(&address, "counts", 2);
    // Near now: the broker deletes records older than its retention (7 days).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let hour = 3_600_000;
    let (old, new) = (text(300, 50), text(200, 40));
    send_lines_at(&address, &old, 0, 2, Some(now - hour));
    send_lines_at(&address, &new, 0, 2, Some(now));
    let start = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + Duration::from_millis((now - hour / 2) as u64),
    );
    let config = std::fs::read_to_string(word_count_config(&sandbox, &address, 2, free_port()))
        .unwrap()
        .replace(
            "topic = \"lines\"\n",
            &format!("topic = \"lines\"\nstart = {{ timestamp = \"{start}\" }}\n"),
        );
    let config = sandbox.write("wc.toml", config);
    run_until_counted(
        &sandbox,
        &config,
        &address,
        exact_counts(&new).len(),
        "from a timestamp",
    );
    assert_exactly_once(
        &address,
        &new,
        "from a timestamp: only the lines stamped after it",
    );
}

#[test]
fn the_slowest_partition_holds_the_watermark_until_it_goes_idle() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
    let sandbox = Sandbox::new();
    let Some(broker) = Broker::kafka(&sandbox.path("kafka")) else {
        return;
    };
    let address = broker.address.clone();
    create_topic(&address, "clicks", 2);
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &address)
        .create()
        .unwrap();
    let send = |partition: i32, key: &str, ms: i64| {
        producer
            .send(
                BaseRecord::<str, str>::to("clicks")
                    .key(key)
                    .payload("x")
                    .partition(partition)
                    .timestamp(ms),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        producer.flush(Duration::from_secs(30)).unwrap();
    };
    // Times a minute ago, on a window boundary: records far older than the
    // topic's retention (7 days) would be deleted as soon as written.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let base = (now - 60_000) / 10_000 * 10_000;
    // Partition 0 runs ahead to 25 s; partition 1 has one click at 1 s.
    for s in 1..=25 {
        send(0, "a", base + s * 1000);
    }
    send(1, "b", base + 1000);
    let admin = free_port();
    let config = sandbox.write(
        "windows.toml",
        format!(
            "[daemon]\ndata_dir = \"var\"\nadmin_address = \"127.0.0.1:{admin}\"\n[checkpoint]\ninterval = \"100ms\"\n\
             [sources.clicks]\ntype = \"kafka\"\nbrokers = [\"{address}\"]\ntopic = \"clicks\"\n\
             timestamp = \"record\"\nwatermark = {{ max_out_of_orderness = \"0s\", idle_timeout = \"5s\" }}\n\
             [operators.counts]\nmodule = {count}\ninputs = [\"clicks\"]\nconfig = {{ size = \"10s\" }}\n\
             [sinks.out]\ntype = \"file\"\ndirectory = \"counts\"\ninputs = [\"counts\"]\n",
            count = toml_path(plugins::WINDOW_COUNT),
        ),
    );
    let data_dir = sandbox.path("var");
    let mut daemon = Daemon::start(&sandbox, "run", &config, &[]);
    daemon.wait_for("checkpoints", |_| {
        newest_completed_checkpoint(&data_dir) >= 5
    });
    let windows = || crate::checkpoints::committed(&sandbox.path("counts"));
    assert_eq!(
        windows(),
        Vec::<String>::new(),
        "partition 1 (at 1 s) holds the watermark back: no window is done"
    );
    // Partition 1 stays quiet for longer than idle_timeout while partition 0
    // goes on: partition 0 alone decides, and the windows up to 20 s fire.
    // (Were both quiet, the source would be idle and its watermark stay, as
    // in Flink.)
    let mut ms = base + 25_000;
    let started = std::time::Instant::now();
    while windows().len() < 3 {
        ms += 1;
        send(0, "a", ms);
        std::thread::sleep(Duration::from_millis(200));
        if started.elapsed() > Duration::from_secs(60) {
            let (_, scrape) = http("GET", admin, "/metrics", "");
            let marks: Vec<&str> = scrape
                .lines()
                .filter(|l| l.contains("watermark") && !l.starts_with('#'))
                .collect();
            panic!("no windows; watermarks {marks:?}\n{}", daemon.log());
        }
    }
    let mut got = windows();
    got.sort();
    let window = |key: &str, from: i64, count: u32| {
        format!(
            r#"{{"key":"{key}","start":{},"end":{},"count":{count}}}"#,
            base + from,
            base + from + 10_000
        )
    };
    assert_eq!(
        got,
        [
            window("a", 0, 9),
            window("a", 10_000, 10),
            window("b", 0, 1)
        ],
        "{}",
        daemon.log()
    );
    daemon.signal("TERM");
    let (status, log) = daemon.wait();
    assert!(status.success(), "{log}");
}
