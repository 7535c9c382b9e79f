//! The validated topology: a DAG of sources, operators and sinks with every id
//! resolved, every path absolute, every default applied.
//!
//! [`build`] checks a [`ConfigFile`] and reports *all* problems at once (unknown
//! inputs, cycles, fields that do not fit a component's kind, ...), each with the
//! file, line and column or the component's id.
//!
//! The checks are split by concern: [`builder`] walks the file and assembles
//! the result, `components` checks each source, operator and sink, `settings`
//! the daemon-wide tables, `bounds` the ranges of numbers, `paths` what the
//! files named must be, and `edges` the graph itself (inputs, cycles,
//! partitioning).

pub(crate) mod bounds;
mod builder;
mod components;
mod connectors;
mod edges;
mod paths;
mod settings;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::BackendKind;
use crate::config::{ConfigFile, Encoding, Partition};
use crate::diagnostic::Diagnostic;

/// A component's id: its key in the topology file. Stable across reloads.
pub type ComponentId = Arc<str>;

/// Default batches per channel.
pub const DEFAULT_CHANNEL_CAPACITY: usize = 8;
/// Default most records per source batch.
pub const DEFAULT_BATCH_SIZE: usize = 1024;
/// Default linear-memory limit of an operator instance.
pub const DEFAULT_MEMORY_LIMIT: u64 = 64 * 1024 * 1024;
/// Default time limit of one call into a plugin.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A checked topology, components in dependency order.
#[derive(Debug, Clone)]
pub struct Topology {
    /// The config file it came from.
    pub config_path: PathBuf,
    /// Where the daemon keeps its files.
    pub data_dir: PathBuf,
    /// Batches per channel.
    pub channel_capacity: usize,
    /// `[daemon] chaining`: forward-joined components share a thread.
    pub chaining: bool,
    /// Where the admin endpoint listens on TCP, if it does.
    pub admin_address: Option<SocketAddr>,
    /// Where it listens on a Unix socket.
    pub admin_socket: PathBuf,
    /// The token changes need on `admin_address`, if any.
    pub admin_token_file: Option<PathBuf>,
    /// Where savepoints go when a request names no directory, and the only
    /// place a request may name.
    pub savepoint_dir: PathBuf,
    /// `[checkpoint] start_from_savepoint`: the savepoint to start from once.
    pub start_from_savepoint: Option<PathBuf>,
    /// Every component, each after all of its inputs.
    pub components: Vec<Component>,
    /// Keyed-state settings.
    pub state: StateSettings,
    /// Checkpoint settings; `None` when checkpoints are off.
    pub checkpoint: Option<CheckpointSettings>,
    /// Restarts after failures.
    pub restart: RestartSettings,
    /// Things that are allowed but probably not meant.
    pub warnings: Vec<Diagnostic>,
}

impl Topology {
    /// The component with this id.
    pub fn get(&self, id: &str) -> Option<&Component> {
        self.components.iter().find(|c| &*c.id == id)
    }

    /// Files and directories the daemon reads or owns, into which nothing
    /// else (a savepoint) may be written: checkpoints, state, hand-over,
    /// every sink's output and every source's input.
    pub fn managed_paths(&self) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = ["checkpoints", "state", "handoff"]
            .iter()
            .map(|d| self.data_dir.join(d))
            .collect();
        for c in &self.components {
            match &c.kind {
                ComponentKind::Sink(SinkSpec::Directory { dir, .. }) => paths.push(dir.clone()),
                ComponentKind::Sink(SinkSpec::File { path, .. })
                | ComponentKind::Source(SourceSpec {
                    input: SourceInput::File { path, .. },
                    ..
                }) => paths.push(path.clone()),
                _ => {}
            }
        }
        paths
    }
}

/// Default time after which an unfinished checkpoint is abandoned.
pub const DEFAULT_CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default number of completed checkpoints kept.
pub const DEFAULT_RETAIN: usize = 3;

/// Default RocksDB block cache and memtable sizes.
pub const DEFAULT_ROCKSDB_BUFFER: u64 = 64 * 1024 * 1024;
/// Default write-back cache per instance in front of RocksDB: room for about
/// 1.5 million small entries.
pub const DEFAULT_STATE_CACHE: u64 = 256 * 1024 * 1024;

/// Keyed-state settings, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateSettings {
    /// Where state is kept.
    pub backend: BackendKind,
    /// Number of key groups.
    pub max_parallelism: u32,
    /// rocksdb: block cache bytes per operator.
    pub block_cache: u64,
    /// rocksdb: memtable bytes.
    pub write_buffer: u64,
    /// rocksdb: write-back cache bytes per instance.
    pub cache: u64,
}

/// Checkpoint settings, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointSettings {
    /// Time between checkpoints; `None`: only the final one.
    pub interval: Option<Duration>,
    /// When an unfinished checkpoint is abandoned.
    pub timeout: Duration,
    /// Completed checkpoints kept.
    pub retain: usize,
    /// Keyed state written as changes on top of earlier files.
    pub incremental: bool,
}

/// Restart settings, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartSettings {
    /// Failures within `window` after which the daemon gives up.
    pub max_failures: usize,
    /// The window.
    pub window: Duration,
    /// First delay.
    pub backoff: Duration,
    /// Longest delay.
    pub max_backoff: Duration,
}

/// One source, operator or sink.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    /// Its id.
    pub id: ComponentId,
    /// What it is.
    pub kind: ComponentKind,
    /// The components it reads from, one per input (a component whose main
    /// output and a side output it both reads is there twice).
    pub inputs: Vec<ComponentId>,
    /// Per input, which output of that component it reads (0: the main one,
    /// `i + 1` its module's `i`th side output) and its name as the topology
    /// writes it (`sessions`, `sessions.late`).
    pub input_outputs: Vec<(u32, Arc<str>)>,
    /// How many instances run.
    pub parallelism: u32,
    /// How records from its inputs are spread over its instances.
    pub partition: Partition,
    /// Whether it may run in one thread with a neighbour (`chain`).
    pub chain: bool,
}

impl Component {
    /// Its inputs as the topology writes them, in order (what its plugin's
    /// `init` is told).
    pub fn input_names(&self) -> Vec<String> {
        self.input_outputs
            .iter()
            .map(|(_, name)| name.to_string())
            .collect()
    }
}

/// What a component is.
#[derive(Debug, Clone, PartialEq)]
pub enum ComponentKind {
    /// Produces records.
    Source(SourceSpec),
    /// Transforms records.
    Operator(OperatorSpec),
    /// Consumes records.
    Sink(SinkSpec),
}

/// A source, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSpec {
    /// Where records come from.
    pub input: SourceInput,
    /// Most records per batch.
    pub batch_size: usize,
    /// Longest record (a line, for file and stdin sources), in bytes.
    pub max_record_bytes: u64,
    /// Where each record's event time is (file and stdin sources).
    pub timestamp: Option<crate::config::TimestampConfig>,
    /// How its watermark follows the timestamps.
    pub watermark: Option<crate::config::WatermarkConfig>,
}

/// Where a source's records come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceInput {
    /// Lines of a file.
    File {
        /// The file.
        path: PathBuf,
        /// Keep reading as it grows.
        follow: bool,
    },
    /// Lines of standard input.
    Stdin,
    /// A deterministic sequence.
    Generator {
        /// How many records; endless when `None`.
        count: Option<u64>,
        /// Records per second; unthrottled when `None`.
        rate: Option<f64>,
        /// Value size; the sequence number as text when `None`.
        value_size: Option<usize>,
        /// Distinct keys, 16 digits each; key = sequence number when `None`.
        keys: Option<u64>,
        /// Event time, if the records get any.
        event_time: Option<crate::config::GeneratorTime>,
    },
    /// Records of Kafka topics.
    Kafka(KafkaSourceSpec),
    /// Messages of a JetStream stream.
    Nats(NatsSourceSpec),
}

pub use connectors::StartPosition;

/// A Kafka source, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSourceSpec {
    /// Bootstrap brokers.
    pub brokers: Vec<String>,
    /// The topics read.
    pub topics: Vec<String>,
    /// Where a partition no checkpoint knows starts.
    pub start: StartPosition,
    /// The group offsets are committed to after checkpoints (monitoring only).
    pub group: String,
    /// How often to look for new partitions.
    pub partition_discovery: std::time::Duration,
    /// Event time from the Kafka record timestamp.
    pub record_time: bool,
    /// librdkafka properties passed through.
    pub options: crate::config::ClientOptions,
}

/// A JetStream source, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct NatsSourceSpec {
    /// Server URLs.
    pub servers: Vec<String>,
    /// The stream read.
    pub stream: String,
    /// Only messages on subjects matching this.
    pub subject: Option<String>,
    /// Where to start with no checkpoint.
    pub start: StartPosition,
    /// Event time from the message's timestamp.
    pub record_time: bool,
}

/// A Kafka sink, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSinkSpec {
    /// Bootstrap brokers.
    pub brokers: Vec<String>,
    /// The topic written.
    pub topic: String,
    /// Where each checkpoint's output waits until its transaction commits.
    pub staging: PathBuf,
    /// Transactions, or plain sends flushed at barriers.
    pub delivery: crate::config::Delivery,
    /// Instance `i`'s transactional id is `<prefix>-<i>`.
    pub transactional_id_prefix: String,
    /// librdkafka properties passed through.
    pub options: crate::config::ClientOptions,
}

/// A JetStream sink, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct NatsSinkSpec {
    /// Server URLs.
    pub servers: Vec<String>,
    /// The subject published on.
    pub subject: String,
    /// Where each checkpoint's output waits until it is published.
    pub staging: PathBuf,
    /// Stable message ids after checkpoints, or plain publishes.
    pub delivery: crate::config::Delivery,
}

/// An operator, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorSpec {
    /// What runs.
    pub body: OperatorBody,
    /// Its limits.
    pub limits: Limits,
    /// What a record its plugin rejects does.
    pub on_error: crate::config::OnError,
}

/// The output index of an operator's dead letters (`<id>.errors`): the
/// host's, after every side output a module may declare.
pub const ERRORS_OUTPUT_INDEX: u32 = u32::MAX;

/// What runs inside an operator.
#[derive(Debug, Clone, PartialEq)]
pub enum OperatorBody {
    /// A WebAssembly component.
    Wasm {
        /// The module file.
        module: PathBuf,
        /// The `config` table as JSON text, for `init`.
        config_json: String,
    },
    /// An operator built into the daemon.
    Native(NativeOperator),
}

/// Operators built into the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NativeOperator {
    /// Emits every record unchanged; the benchmark's native baseline.
    Passthrough,
}

/// Resource limits of one operator instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most linear memory, in bytes.
    pub memory_bytes: u64,
    /// Most time one plugin call may take.
    pub call_timeout: Duration,
}

/// A sink, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkSpec {
    /// Writes to a file.
    File {
        /// The file.
        path: PathBuf,
        /// How records are written.
        encoding: Encoding,
    },
    /// Writes part files into a directory, committed per checkpoint.
    Directory {
        /// The directory.
        dir: PathBuf,
        /// How records are written.
        encoding: Encoding,
    },
    /// Writes to standard output.
    Stdout {
        /// How records are written.
        encoding: Encoding,
    },
    /// Drops records.
    Blackhole,
    /// Produces to a Kafka topic.
    Kafka(KafkaSinkSpec),
    /// Publishes to a JetStream subject.
    Nats(NatsSinkSpec),
}

/// Checks a parsed config file and builds its topology, or returns every
/// problem found. Inputs that name a side output (`op.late`) are not
/// checked against what the module declares: see [`build_with_outputs`].
pub fn build(file: &ConfigFile) -> Result<Topology, Vec<Diagnostic>> {
    builder::Builder::new(file, &|_| None).build()
}

/// [`build`], with the side outputs each operator's module declares
/// (`outputs(operator id)`, none when its module is unknown): an input that
/// names another is an error.
pub fn build_with_outputs(
    file: &ConfigFile,
    outputs: &dyn Fn(&str) -> Option<Vec<String>>,
) -> Result<Topology, Vec<Diagnostic>> {
    builder::Builder::new(file, outputs).build()
}

/// An input as the topology writes it, taken apart: the component, and the
/// side output if it names one (`sessions.late`).
pub fn split_input(name: &str) -> (&str, Option<&str>) {
    match name.split_once('.') {
        Some((id, output)) => (id, Some(output)),
        None => (name, None),
    }
}
