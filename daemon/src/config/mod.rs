//! The topology file as written: serde types that mirror the TOML one to one.
//!
//! Everything here is *raw*: paths are not yet resolved, defaults not yet applied,
//! and the graph not yet checked. [`crate::graph`] turns a [`RawConfig`] into a
//! validated [`crate::graph::Topology`], collecting every error at once.
//!
//! ```toml
//! [daemon]
//! data_dir = "var/weir"
//!
//! [sources.lines]
//! type = "file"
//! path = "data/input.txt"
//!
//! [operators.upper]
//! module = "plugins/uppercase.wasm"
//! inputs = ["lines"]
//!
//! [sinks.out]
//! type = "file"
//! inputs = ["upper"]
//! path = "out/words.txt"
//! ```

mod connectors;
mod load;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;
use serde_spanned::Spanned;

pub use connectors::{
    ClientOptions, DEFAULT_PARTITION_DISCOVERY, Delivery, Edge, RecordTime, StartAt,
    TimestampSetting,
};
pub use load::{ConfigFile, load_file, parse_str};

/// The whole topology file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Daemon-wide settings.
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// Components that produce records, by id.
    #[serde(default)]
    pub sources: BTreeMap<Spanned<String>, SourceConfig>,
    /// WebAssembly (or built-in) operators, by id.
    #[serde(default)]
    pub operators: BTreeMap<Spanned<String>, OperatorConfig>,
    /// Components that consume records, by id.
    #[serde(default)]
    pub sinks: BTreeMap<Spanned<String>, SinkConfig>,
    /// Keyed-state settings.
    #[serde(default)]
    pub state: StateConfig,
    /// Checkpoints; absent, the daemon takes none and restores nothing.
    pub checkpoint: Option<CheckpointConfig>,
    /// What happens when the pipeline fails (with checkpoints on).
    #[serde(default)]
    pub restart: RestartConfig,
}

/// The `[restart]` table: with checkpoints on, a failed pipeline (a plugin
/// trap, deadline, error) restarts from the latest complete checkpoint after a
/// backoff that doubles per failure, until too many failures come too close.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartConfig {
    /// Failures within `window` after which the daemon stops (default 3).
    pub max_failures: Option<usize>,
    /// The window (default 5m).
    #[serde(default, with = "humantime_serde")]
    pub window: Option<Duration>,
    /// First delay before a restart (default 1s).
    #[serde(default, with = "humantime_serde")]
    pub backoff: Option<Duration>,
    /// Longest delay (default 1m).
    #[serde(default, with = "humantime_serde")]
    pub max_backoff: Option<Duration>,
}

/// The `[checkpoint]` table. Its presence turns checkpoints on: the daemon
/// restores the latest complete one at start, takes one every `interval`, and a
/// final one when every source is exhausted or a stop is asked for.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Time between checkpoints; `0` or absent: only the final one.
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// A checkpoint not complete after this long is abandoned (default 60s).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Completed checkpoints kept on disk (default 3, at least 1).
    pub retain: Option<usize>,
    /// Write only the keyed state changed since the previous checkpoint, on
    /// top of the files it builds on (default true).
    pub incremental: Option<bool>,
    /// Where savepoints go when a request names no directory (default
    /// `<data_dir>/savepoints`); requests may name directories under it only.
    /// Retention never removes them.
    pub savepoint_dir: Option<PathBuf>,
    /// Start from this savepoint once, as `weir run --from-savepoint` does:
    /// read at start only; once a checkpoint is taken after it, restarts
    /// resume from the latest checkpoint.
    pub start_from_savepoint: Option<Spanned<PathBuf>>,
}

/// Where keyed state is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// In memory.
    #[default]
    Heap,
    /// RocksDB under `data_dir`, behind a write-back cache.
    Rocksdb,
}

/// The `[state]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// `heap` (default) or `rocksdb`.
    pub backend: Option<BackendKind>,
    /// Number of key groups, and so the most instances of an operator (default 128).
    pub max_parallelism: Option<u32>,
    /// rocksdb: the block cache of each operator's database (default 64MiB).
    pub block_cache: Option<ByteSize>,
    /// rocksdb: memtable size (default 64MiB).
    pub write_buffer: Option<ByteSize>,
    /// rocksdb: the write-back cache of hot and dirty entries per operator
    /// instance (default 256MiB).
    pub cache: Option<ByteSize>,
}

/// The `[daemon]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Where the daemon writes everything it keeps (default `var/weir`, relative
    /// to the config file).
    pub data_dir: Option<PathBuf>,
    /// Batches buffered on each channel between two tasks before the producer
    /// waits (backpressure). Default 8.
    pub channel_capacity: Option<usize>,
    /// `host:port` of the admin HTTP endpoint (metrics, health, savepoints,
    /// reload) on TCP. Off when absent.
    pub admin_address: Option<Spanned<String>>,
    /// The admin endpoint on a Unix socket, always on, readable and writable
    /// by the daemon's user only: what `weir reload` and `weir savepoint`
    /// use (default `<data_dir>/admin.sock`).
    pub admin_socket: Option<PathBuf>,
    /// A file holding a token that requests changing the daemon (reload,
    /// savepoints) must bring on `admin_address` as `Authorization: Bearer
    /// <token>`; without it they are allowed there. The socket needs none.
    pub admin_token_file: Option<Spanned<PathBuf>>,
    /// Run components joined by a forward edge in one thread (Flink's
    /// operator chaining; default true, or the `WEIR_CHAINING` environment
    /// variable when it is `true` or `false`).
    pub chaining: Option<bool>,
}

/// Kinds of source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Lines of a file.
    File,
    /// Lines of standard input.
    Stdin,
    /// A deterministic sequence, for tests and benchmarks.
    Generator,
    /// Records of Kafka topics, partitions spread over the instances.
    Kafka,
    /// Messages of a NATS JetStream stream.
    Nats,
}

/// A `[sources.ID]` table. Fields that belong to another kind are rejected by
/// [`crate::graph`] with the source's id.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `file`, `stdin` or `generator`.
    #[serde(rename = "type")]
    pub kind: SourceKind,
    /// file: the file to read, relative to the config file.
    pub path: Option<Spanned<PathBuf>>,
    /// file: keep reading as the file grows (default false).
    pub follow: Option<bool>,
    /// generator: how many records (endless when absent).
    pub count: Option<u64>,
    /// generator: records per second (as fast as possible when absent).
    pub rate: Option<f64>,
    /// generator: value size in bytes (default: the sequence number as text).
    pub value_size: Option<usize>,
    /// generator: cycle over this many distinct keys, each the sequence number
    /// modulo `keys` as 16 zero-padded digits (default: key = the sequence number).
    pub keys: Option<u64>,
    /// Most records per batch (default 1024).
    pub batch_size: Option<usize>,
    /// file, stdin: the longest line (default 16MiB); a longer one is an error
    /// naming the source and its byte offset. generator: bounds `value_size`.
    pub max_record_size: Option<ByteSize>,
    /// `false`: never run in one thread with the component it feeds.
    pub chain: Option<bool>,
    /// file, stdin, kafka, nats: where each record's event time is: a
    /// field of its line, or (kafka, nats) `"record"`, the broker's time.
    pub timestamp: Option<TimestampSetting>,
    /// How the source's watermark follows its timestamps (needs `timestamp`,
    /// or a generator's `event_time`).
    pub watermark: Option<WatermarkConfig>,
    /// generator: give records event time (for benchmarks and tests).
    pub event_time: Option<GeneratorTime>,
    /// kafka: `host:port` of brokers to bootstrap from. nats: server URLs.
    pub brokers: Option<Vec<String>>,
    /// kafka: the topic to read.
    pub topic: Option<String>,
    /// kafka: instead of `topic`, several.
    pub topics: Option<Vec<String>>,
    /// nats: the JetStream stream to read.
    pub stream: Option<String>,
    /// nats: only the stream's messages on subjects matching this.
    pub subject: Option<String>,
    /// kafka, nats: where to start with no checkpoint (default `earliest`).
    pub start: Option<StartAt>,
    /// kafka: instances, with the partitions spread over them (default 1).
    pub parallelism: Option<u32>,
    /// kafka: the consumer group offsets are committed to after each
    /// checkpoint, for monitoring only (default `weir-<source id>`).
    pub group: Option<String>,
    /// kafka: how often to look for new partitions (default 10 s).
    #[serde(default, with = "humantime_serde")]
    pub partition_discovery: Option<Duration>,
    /// kafka: librdkafka properties, passed through.
    pub options: Option<ClientOptions>,
}

/// A generator's event time: record `n` is at `start_ms + n / per_ms`, less
/// a pseudo-random delay of up to `max_delay` (the same on every run), so
/// the stream is out of order by at most that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorTime {
    /// The time of record 0, ms since the Unix epoch (default 0).
    #[serde(default)]
    pub start_ms: i64,
    /// Records per millisecond of event time (default 1000).
    #[serde(default = "default_per_ms")]
    pub per_ms: u64,
    /// Most a record is behind its place in the sequence (default 0).
    #[serde(default, with = "humantime_serde")]
    pub max_delay: Option<Duration>,
}

fn default_per_ms() -> u64 {
    1000
}

/// A source's watermark: bounded out-of-orderness, with idleness (Flink's
/// `forBoundedOutOfOrderness(...).withIdleness(...)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkConfig {
    /// How late a record may come behind the largest timestamp seen.
    #[serde(with = "humantime_serde")]
    pub max_out_of_orderness: Duration,
    /// After this long without a record the source stops holding back
    /// the watermark of what it feeds; absent: never.
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
}

/// Where a source's records get their event time: a top-level field of each
/// line, which must then be a JSON object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampConfig {
    /// The field that holds the time.
    pub json_field: String,
    /// How the field gives the time (default `unix_ms`).
    #[serde(default)]
    pub format: TimeFormat,
}

/// How a field gives a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// A number of milliseconds since the Unix epoch.
    #[default]
    UnixMs,
    /// A number of seconds since the Unix epoch (fractions allowed).
    UnixS,
    /// An RFC 3339 date string, such as `2026-12-01T10:00:00.250Z`.
    Rfc3339,
}

/// How records are spread over the instances of a consuming component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Partition {
    /// By a hash of the key, so one key always reaches the same instance.
    #[default]
    Hash,
    /// Instance i of the producer feeds instance i of the consumer.
    Forward,
    /// Each batch to the next instance in turn.
    RoundRobin,
    /// Every record to every instance.
    Broadcast,
}

/// An `[operators.ID]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// The WebAssembly component, relative to the config file.
    pub module: Option<Spanned<PathBuf>>,
    /// A built-in operator instead of a module (`passthrough`).
    #[serde(rename = "type")]
    pub kind: Option<Spanned<String>>,
    /// Ids of the components this operator reads from.
    #[serde(default)]
    pub inputs: Vec<Spanned<String>>,
    /// Handed to the plugin's `init` as JSON.
    pub config: Option<toml::Table>,
    /// Parallel instances (default 1).
    pub parallelism: Option<u32>,
    /// How records reach the instances (default `hash`).
    pub partition: Option<Partition>,
    /// Most linear memory one instance may use (default 64 MiB).
    pub memory_limit: Option<ByteSize>,
    /// Most time one call into the plugin may take (default 5 s).
    #[serde(default, with = "humantime_serde")]
    pub call_timeout: Option<Duration>,
    /// `false`: never run in one thread with its input or its consumer.
    pub chain: Option<bool>,
    /// What a record the plugin returns an error for does (default `fail`).
    pub on_error: Option<OnError>,
}

/// What happens to a record an operator's plugin returns an error for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The instance fails (and the pipeline restarts from a checkpoint).
    #[default]
    Fail,
    /// The record goes, with the error, to the operator's `errors` output
    /// (or a `dead_letter` directory under `data_dir`), without the state
    /// changes made for it; the next record goes on.
    DeadLetter,
}

/// Kinds of sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// Append to a file.
    File,
    /// Write to standard output.
    Stdout,
    /// Count and drop.
    Blackhole,
    /// Produce to a Kafka topic.
    Kafka,
    /// Publish to a NATS JetStream subject.
    Nats,
}

/// How a sink writes a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// The value bytes, then `\n`.
    #[default]
    Text,
    /// `{"key":..,"value":..,"timestamp":..}` per line.
    Json,
}

/// A `[sinks.ID]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// `file`, `stdout` or `blackhole`.
    #[serde(rename = "type")]
    pub kind: SinkKind,
    /// Ids of the components this sink reads from.
    #[serde(default)]
    pub inputs: Vec<Spanned<String>>,
    /// file: the output file, relative to the config file. Written as records
    /// arrive; not exactly-once (after a restore it may hold records twice).
    pub path: Option<Spanned<PathBuf>>,
    /// file: instead of `path`, a directory of part files, each made visible
    /// (renamed from `.pending/`) only when the checkpoint it belongs to is
    /// complete: exactly-once output.
    pub directory: Option<Spanned<PathBuf>>,
    /// file, stdout: `text` (default) or `json`.
    pub encoding: Option<Encoding>,
    /// `false`: never run in one thread with its input.
    pub chain: Option<bool>,
    /// kafka: `host:port` of brokers to bootstrap from. nats: server URLs.
    pub brokers: Option<Vec<String>>,
    /// kafka: the topic to write.
    pub topic: Option<String>,
    /// nats: the subject to publish on.
    pub subject: Option<String>,
    /// kafka, nats: `exactly_once` (default) or `at_least_once`.
    pub delivery: Option<Delivery>,
    /// kafka: the transactional id of instance `i` is `<prefix>-<i>`
    /// (default `weir-<sink id>`): it must be unique to this sink across
    /// every daemon writing to the cluster, and stay the same across
    /// restarts, so a restart fences the producer it replaces.
    pub transactional_id_prefix: Option<String>,
    /// kafka: librdkafka properties, passed through.
    pub options: Option<ClientOptions>,
}
