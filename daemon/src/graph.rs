//! The validated topology: a DAG of sources, operators and sinks with every id
//! resolved, every path absolute, every default applied.
//!
//! [`build`] checks a [`ConfigFile`] and reports *all* problems at once (unknown
//! inputs, cycles, fields that do not fit a component's kind, ...), each with the
//! file, line and column or the component's id.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_spanned::Spanned;

use crate::config::BackendKind;
use crate::config::{
    ConfigFile, Encoding, OperatorConfig, Partition, SinkConfig, SinkKind, SourceConfig, SourceKind,
};
use crate::diagnostic::Diagnostic;
use crate::partition::{DEFAULT_MAX_PARALLELISM, MAX_KEY_GROUPS};

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
    /// Where the admin endpoint listens, if it is on.
    pub admin_address: Option<SocketAddr>,
    /// Where savepoints go when a request names no directory.
    pub savepoint_dir: PathBuf,
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
    /// The components it reads from.
    pub inputs: Vec<ComponentId>,
    /// How many instances run.
    pub parallelism: u32,
    /// How records from its inputs are spread over its instances.
    pub partition: Partition,
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
    },
}

/// An operator, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorSpec {
    /// What runs.
    pub body: OperatorBody,
    /// Its limits.
    pub limits: Limits,
}

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
}

/// Checks a parsed config file and builds its topology, or returns every
/// problem found.
pub fn build(file: &ConfigFile) -> Result<Topology, Vec<Diagnostic>> {
    Builder {
        file,
        errors: Vec::new(),
        warnings: Vec::new(),
    }
    .build()
}

struct Builder<'a> {
    file: &'a ConfigFile,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

/// A component before its inputs are resolved.
struct Pending<'a> {
    section: &'static str,
    key: &'a Spanned<String>,
    kind: Option<ComponentKind>,
    inputs: &'a [Spanned<String>],
    parallelism: u32,
    partition: Partition,
}

impl Pending<'_> {
    fn label(&self) -> String {
        format!("{}.{}", self.section, self.key.get_ref())
    }
}

impl<'a> Builder<'a> {
    fn build(mut self) -> Result<Topology, Vec<Diagnostic>> {
        let raw = &self.file.raw;
        let mut pending: Vec<Pending<'a>> = Vec::new();
        for (key, source) in &raw.sources {
            let kind = self.source(key, source).map(ComponentKind::Source);
            pending.push(Pending {
                section: "sources",
                key,
                kind,
                inputs: &[],
                parallelism: 1,
                partition: Partition::Hash,
            });
        }
        for (key, op) in &raw.operators {
            let kind = self.operator(key, op).map(ComponentKind::Operator);
            let parallelism = self.parallelism(key, op);
            let partition = op.partition.unwrap_or_default();
            pending.push(Pending {
                section: "operators",
                key,
                kind,
                inputs: &op.inputs,
                parallelism,
                partition,
            });
        }
        for (key, sink) in &raw.sinks {
            let kind = self.sink(key, sink).map(ComponentKind::Sink);
            pending.push(Pending {
                section: "sinks",
                key,
                kind,
                inputs: &sink.inputs,
                parallelism: 1,
                partition: Partition::Hash,
            });
        }
        if raw.sources.is_empty() {
            self.errors.push(Diagnostic::file(
                &self.file.path,
                "the topology has no sources: add a [sources.ID] table",
            ));
        }

        let state = self.state();
        let checkpoint = raw.checkpoint.as_ref().map(|c| CheckpointSettings {
            interval: c.interval.filter(|i| !i.is_zero()),
            timeout: c.timeout.unwrap_or(DEFAULT_CHECKPOINT_TIMEOUT),
            retain: c.retain.unwrap_or(DEFAULT_RETAIN).max(1),
            incremental: c.incremental.unwrap_or(true),
        });
        let r = &raw.restart;
        let restart = RestartSettings {
            max_failures: r.max_failures.unwrap_or(3),
            window: r.window.unwrap_or(Duration::from_secs(300)),
            backoff: r.backoff.unwrap_or(Duration::from_secs(1)),
            max_backoff: r.max_backoff.unwrap_or(Duration::from_secs(60)),
        };
        let admin_address = self.admin_address();
        let by_id = self.index_ids(&pending);
        self.check_inputs(&pending, &by_id);
        let order = self.order(&pending, &by_id);
        self.check_forward(&pending, &by_id);
        self.warn_unconsumed(&pending);

        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        let components = order
            .into_iter()
            .filter_map(|i| {
                let p = &pending[i];
                Some(Component {
                    id: p.key.get_ref().as_str().into(),
                    kind: p.kind.clone()?,
                    inputs: p
                        .inputs
                        .iter()
                        .map(|i| i.get_ref().as_str().into())
                        .collect(),
                    parallelism: p.parallelism,
                    partition: p.partition,
                })
            })
            .collect();
        let daemon = &raw.daemon;
        let data_dir = self.resolve(daemon.data_dir.as_deref().unwrap_or(Path::new("var/weir")));
        Ok(Topology {
            config_path: self.file.path.clone(),
            channel_capacity: daemon
                .channel_capacity
                .unwrap_or(DEFAULT_CHANNEL_CAPACITY)
                .max(1),
            admin_address,
            savepoint_dir: absolute(
                self.resolve(
                    raw.checkpoint
                        .as_ref()
                        .and_then(|c| c.savepoint_dir.as_deref())
                        .unwrap_or(&data_dir.join("savepoints")),
                ),
            ),
            data_dir,
            components,
            state,
            checkpoint,
            restart,
            warnings: self.warnings,
        })
    }

    /// `[daemon] admin_address`: an IP address and port (no host names, so
    /// what it binds is never a surprise).
    fn admin_address(&mut self) -> Option<SocketAddr> {
        let text = self.file.raw.daemon.admin_address.as_ref()?;
        match text.get_ref().parse::<SocketAddr>() {
            Ok(address) => Some(address),
            Err(_) => {
                let e = self.at(
                    text,
                    "daemon.admin_address",
                    format!(
                        "`{}` is not an address and port, e.g. \"127.0.0.1:9187\"",
                        text.get_ref()
                    ),
                );
                self.errors.push(e);
                None
            }
        }
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.file.dir.join(path)
        }
    }

    fn at<T>(&self, spanned: &Spanned<T>, label: &str, message: impl Into<String>) -> Diagnostic {
        self.file
            .text
            .at(spanned.span().start, message)
            .in_component(label)
    }

    fn source(&mut self, key: &Spanned<String>, s: &SourceConfig) -> Option<SourceSpec> {
        let label = format!("sources.{}", key.get_ref());
        let before = self.errors.len();
        self.check_id(key, &label);
        let not_for = |field: &str, present: bool, errors: &mut Vec<Diagnostic>| {
            if present {
                let kind = format!("{:?}", s.kind).to_lowercase();
                errors.push(self.at(
                    key,
                    &label,
                    format!("`{field}` does not apply to a {kind} source"),
                ));
            }
        };
        let mut errors = Vec::new();
        if s.kind != SourceKind::File {
            not_for("path", s.path.is_some(), &mut errors);
            not_for("follow", s.follow.is_some(), &mut errors);
        }
        if s.kind != SourceKind::Generator {
            not_for("count", s.count.is_some(), &mut errors);
            not_for("rate", s.rate.is_some(), &mut errors);
            not_for("value_size", s.value_size.is_some(), &mut errors);
            not_for("keys", s.keys.is_some(), &mut errors);
        }
        self.errors.append(&mut errors);
        let input = match s.kind {
            SourceKind::File => match &s.path {
                Some(path) => SourceInput::File {
                    path: self.resolve(path.get_ref()),
                    follow: s.follow.unwrap_or(false),
                },
                None => {
                    self.errors
                        .push(self.at(key, &label, "a file source needs `path`"));
                    return None;
                }
            },
            SourceKind::Stdin => SourceInput::Stdin,
            SourceKind::Generator => {
                if let Some(rate) = s.rate.filter(|r| !(r.is_finite() && *r > 0.0)) {
                    self.errors.push(self.at(
                        key,
                        &label,
                        format!("`rate` must be a positive number, not {rate}"),
                    ));
                }
                if s.keys == Some(0) {
                    self.errors
                        .push(self.at(key, &label, "`keys` must be at least 1"));
                }
                SourceInput::Generator {
                    count: s.count,
                    rate: s.rate,
                    value_size: s.value_size,
                    keys: s.keys,
                }
            }
        };
        let batch_size = s.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
        if batch_size == 0 || batch_size > 1 << 20 {
            self.errors
                .push(self.at(key, &label, "`batch_size` must be between 1 and 1048576"));
        }
        (self.errors.len() == before).then_some(SourceSpec { input, batch_size })
    }

    fn parallelism(&mut self, key: &Spanned<String>, op: &OperatorConfig) -> u32 {
        let max = self.max_parallelism();
        let parallelism = op.parallelism.unwrap_or(1);
        if parallelism == 0 || parallelism > max {
            let label = format!("operators.{}", key.get_ref());
            self.errors.push(self.at(
                key,
                &label,
                format!("`parallelism` must be between 1 and {max} (`[state] max_parallelism`), not {parallelism}"),
            ));
        }
        parallelism.clamp(1, max)
    }

    fn max_parallelism(&self) -> u32 {
        self.file
            .raw
            .state
            .max_parallelism
            .unwrap_or(DEFAULT_MAX_PARALLELISM)
            .clamp(1, MAX_KEY_GROUPS)
    }

    fn state(&mut self) -> StateSettings {
        let raw = &self.file.raw.state;
        if let Some(max) = raw
            .max_parallelism
            .filter(|m| *m == 0 || *m > MAX_KEY_GROUPS)
        {
            self.errors.push(Diagnostic::file(
                &self.file.path,
                format!(
                    "[state] max_parallelism must be between 1 and {MAX_KEY_GROUPS}, not {max}"
                ),
            ));
        }
        let backend = raw.backend.unwrap_or_default();
        if backend == BackendKind::Rocksdb && !cfg!(feature = "rocksdb") {
            self.errors.push(Diagnostic::file(
                &self.file.path,
                "[state] backend = \"rocksdb\" is not available: this weir was built without the `rocksdb` feature",
            ));
        }
        let size = |s: Option<bytesize::ByteSize>| s.map_or(DEFAULT_ROCKSDB_BUFFER, |b| b.as_u64());
        StateSettings {
            backend,
            max_parallelism: self.max_parallelism(),
            block_cache: size(raw.block_cache),
            write_buffer: size(raw.write_buffer),
            cache: raw
                .cache
                .map_or(DEFAULT_STATE_CACHE, |b| b.as_u64())
                .max(64 * 1024),
        }
    }

    fn operator(&mut self, key: &Spanned<String>, op: &OperatorConfig) -> Option<OperatorSpec> {
        let label = format!("operators.{}", key.get_ref());
        let before = self.errors.len();
        self.check_id(key, &label);
        let body = match (&op.module, &op.kind) {
            (Some(module), None) => {
                let config = op.config.clone().unwrap_or_default();
                match serde_json::to_string(&config) {
                    Ok(config_json) => Some(OperatorBody::Wasm {
                        module: self.resolve(module.get_ref()),
                        config_json,
                    }),
                    Err(e) => {
                        self.errors.push(self.at(
                            key,
                            &label,
                            format!("`config` cannot be passed to the plugin: {e}"),
                        ));
                        None
                    }
                }
            }
            (None, Some(kind)) => match kind.get_ref().as_str() {
                "passthrough" => Some(OperatorBody::Native(NativeOperator::Passthrough)),
                other => {
                    self.errors.push(self.at(
                        kind,
                        &label,
                        format!("unknown built-in operator type `{other}` (expected `passthrough`, or use `module`)"),
                    ));
                    None
                }
            },
            (Some(module), Some(_)) => {
                self.errors.push(self.at(
                    module,
                    &label,
                    "give either `module` or `type`, not both",
                ));
                None
            }
            (None, None) => {
                self.errors.push(self.at(
                    key,
                    &label,
                    "an operator needs `module` (a WebAssembly component) or `type`",
                ));
                None
            }
        };
        if op.config.is_some() && op.kind.is_some() {
            self.errors
                .push(self.at(key, &label, "`config` applies only to module operators"));
        }
        if op.inputs.is_empty() {
            self.errors
                .push(self.at(key, &label, "`inputs` must name at least one component"));
        }
        let memory_bytes = op.memory_limit.map_or(DEFAULT_MEMORY_LIMIT, |m| m.as_u64());
        if memory_bytes < 1024 * 1024 {
            self.errors
                .push(self.at(key, &label, "`memory_limit` must be at least 1MiB"));
        }
        let call_timeout = op.call_timeout.unwrap_or(DEFAULT_CALL_TIMEOUT);
        if call_timeout < Duration::from_millis(1) {
            self.errors
                .push(self.at(key, &label, "`call_timeout` must be at least 1ms"));
        }
        let body = body?;
        (self.errors.len() == before).then_some(OperatorSpec {
            body,
            limits: Limits {
                memory_bytes,
                call_timeout,
            },
        })
    }

    fn sink(&mut self, key: &Spanned<String>, s: &SinkConfig) -> Option<SinkSpec> {
        let label = format!("sinks.{}", key.get_ref());
        let before = self.errors.len();
        self.check_id(key, &label);
        if s.inputs.is_empty() {
            self.errors
                .push(self.at(key, &label, "`inputs` must name at least one component"));
        }
        let encoding = s.encoding.unwrap_or_default();
        let spec = match s.kind {
            SinkKind::File => match (&s.path, &s.directory) {
                (Some(path), None) => {
                    if self.file.raw.checkpoint.is_some() {
                        self.warnings.push(self.at(
                            path,
                            &label,
                            "`path` is written as records arrive, so after a restore from a \
                             checkpoint it may hold records twice; use `directory` for \
                             exactly-once output",
                        ));
                    }
                    Some(SinkSpec::File {
                        path: self.resolve(path.get_ref()),
                        encoding,
                    })
                }
                (None, Some(dir)) => Some(SinkSpec::Directory {
                    dir: self.resolve(dir.get_ref()),
                    encoding,
                }),
                (Some(_), Some(dir)) => {
                    self.errors.push(self.at(
                        dir,
                        &label,
                        "a file sink takes `path` or `directory`, not both",
                    ));
                    None
                }
                (None, None) => {
                    self.errors.push(self.at(
                        key,
                        &label,
                        "a file sink needs `path` (one file) or `directory` (exactly-once part files)",
                    ));
                    None
                }
            },
            SinkKind::Stdout => Some(SinkSpec::Stdout { encoding }),
            SinkKind::Blackhole => Some(SinkSpec::Blackhole),
        };
        if s.kind != SinkKind::File && s.path.is_some() {
            self.errors
                .push(self.at(key, &label, "`path` applies only to file sinks"));
        }
        if s.kind != SinkKind::File && s.directory.is_some() {
            self.errors
                .push(self.at(key, &label, "`directory` applies only to file sinks"));
        }
        if s.kind == SinkKind::Blackhole && s.encoding.is_some() {
            self.errors
                .push(self.at(key, &label, "`encoding` does not apply to a blackhole sink"));
        }
        let spec = spec?;
        (self.errors.len() == before).then_some(spec)
    }

    fn check_id(&mut self, key: &Spanned<String>, label: &str) {
        let id = key.get_ref();
        let valid = !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            self.errors.push(self.at(
                key,
                label,
                "component ids may use only ASCII letters, digits, `_` and `-`",
            ));
        }
    }

    /// Maps ids to components; an id used in two sections is an error.
    fn index_ids(&mut self, pending: &[Pending<'a>]) -> HashMap<&'a str, usize> {
        let mut by_id: HashMap<&'a str, usize> = HashMap::new();
        for (i, p) in pending.iter().enumerate() {
            if let Some(&first) = by_id.get(p.key.get_ref().as_str()) {
                let message = format!(
                    "id `{}` is already used by {}",
                    p.key.get_ref(),
                    pending[first].label()
                );
                self.errors.push(self.at(p.key, &p.label(), message));
            } else {
                by_id.insert(p.key.get_ref().as_str(), i);
            }
        }
        by_id
    }

    fn check_inputs(&mut self, pending: &[Pending<'a>], by_id: &HashMap<&'a str, usize>) {
        for p in pending {
            let mut seen = Vec::new();
            for input in p.inputs {
                let name = input.get_ref().as_str();
                match by_id.get(name) {
                    None => {
                        let mut message = format!("input `{name}` does not exist");
                        if let Some(close) = closest(name, by_id.keys().copied()) {
                            message.push_str(&format!(" (did you mean `{close}`?)"));
                        }
                        self.errors.push(self.at(input, &p.label(), message));
                    }
                    Some(&j) if pending[j].section == "sinks" => {
                        let message = format!("input `{name}` is a sink, which has no output");
                        self.errors.push(self.at(input, &p.label(), message));
                    }
                    Some(_) if seen.contains(&name) => {
                        self.errors.push(self.at(
                            input,
                            &p.label(),
                            format!("input `{name}` is listed twice"),
                        ));
                    }
                    Some(_) => {}
                }
                seen.push(name);
            }
        }
    }

    /// A topological order (Kahn); components on a cycle are reported.
    fn order(&mut self, pending: &[Pending<'a>], by_id: &HashMap<&'a str, usize>) -> Vec<usize> {
        let edges: Vec<Vec<usize>> = pending
            .iter()
            .map(|p| {
                p.inputs
                    .iter()
                    .filter_map(|i| by_id.get(i.get_ref().as_str()).copied())
                    .collect()
            })
            .collect();
        let mut indegree: Vec<usize> = edges.iter().map(Vec::len).collect();
        let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); pending.len()];
        for (to, froms) in edges.iter().enumerate() {
            for &from in froms {
                consumers[from].push(to);
            }
        }
        let mut ready: Vec<usize> = (0..pending.len()).filter(|&i| indegree[i] == 0).collect();
        let mut order = Vec::with_capacity(pending.len());
        while let Some(i) = ready.pop() {
            order.push(i);
            for &c in &consumers[i] {
                indegree[c] -= 1;
                if indegree[c] == 0 {
                    ready.push(c);
                }
            }
        }
        if order.len() < pending.len()
            && let Some(cycle) = find_cycle(&edges, &indegree)
        {
            let names: Vec<String> = cycle.iter().map(|&i| pending[i].label()).collect();
            let first = &pending[cycle[0]];
            let message = format!(
                "the graph has a cycle: {} -> {}",
                names.join(" -> "),
                names[0]
            );
            self.errors
                .push(self.at(first.key, &first.label(), message));
        }
        order
    }

    fn check_forward(&mut self, pending: &[Pending<'a>], by_id: &HashMap<&'a str, usize>) {
        for p in pending.iter().filter(|p| p.partition == Partition::Forward) {
            for input in p.inputs {
                if let Some(&j) = by_id.get(input.get_ref().as_str())
                    && pending[j].parallelism != p.parallelism
                {
                    let message = format!(
                        "`partition = \"forward\"` needs the same parallelism as input `{}` ({} here, {} there)",
                        input.get_ref(),
                        p.parallelism,
                        pending[j].parallelism
                    );
                    self.errors.push(self.at(input, &p.label(), message));
                }
            }
        }
    }

    fn warn_unconsumed(&mut self, pending: &[Pending<'a>]) {
        let consumed: Vec<&str> = pending
            .iter()
            .flat_map(|p| p.inputs.iter().map(|i| i.get_ref().as_str()))
            .collect();
        for p in pending.iter().filter(|p| p.section != "sinks") {
            if !consumed.contains(&p.key.get_ref().as_str()) {
                self.warnings.push(self.at(
                    p.key,
                    &p.label(),
                    "nothing reads this component's output; it is dropped",
                ));
            }
        }
    }
}

/// One cycle among the nodes Kahn's algorithm could not order.
/// `path` made absolute against the working directory: savepoint requests
/// come from other processes, so the daemon answers with absolute paths.
fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

fn find_cycle(edges: &[Vec<usize>], indegree: &[usize]) -> Option<Vec<usize>> {
    let start = (0..edges.len()).find(|&i| indegree[i] > 0)?;
    // Walk backwards along inputs that are also stuck; a walk in a finite set repeats.
    let mut path = vec![start];
    let mut at = start;
    loop {
        let next = *edges[at].iter().find(|&&j| indegree[j] > 0)?;
        if let Some(pos) = path.iter().position(|&n| n == next) {
            let mut cycle = path.split_off(pos);
            cycle.reverse();
            return Some(cycle);
        }
        path.push(next);
        at = next;
    }
}

/// The known id closest to a misspelt one, if any is close.
fn closest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    fn errors(text: &str) -> Vec<String> {
        let file = parse_str(Path::new("t.toml"), text.to_owned()).unwrap();
        build(&file)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const SRC: &str = "[sources.src]\ntype = \"generator\"\n";

    #[test]
    fn reports_every_bad_input_at_once_with_lines() {
        let e = errors(&format!(
            "{SRC}[operators.a]\ntype = \"passthrough\"\ninputs = [\"srcc\"]\n[sinks.out]\ntype = \"stdout\"\ninputs = [\"nope\", \"a\"]\n"
        ));
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with(
                "t.toml:5:11: operators.a: input `srcc` does not exist (did you mean `src`?)"
            ),
            "{e:?}"
        );
        assert!(
            e[1].starts_with("t.toml:8:11: sinks.out: input `nope` does not exist"),
            "{e:?}"
        );
    }

    #[test]
    fn finds_cycles() {
        let e = errors(&format!(
            "{SRC}[operators.a]\ntype = \"passthrough\"\ninputs = [\"src\", \"b\"]\n[operators.b]\ntype = \"passthrough\"\ninputs = [\"a\"]\n"
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("the graph has a cycle: operators.") && e[0].contains("operators.a"),
            "{e:?}"
        );
    }

    #[test]
    fn rejects_duplicate_ids_sink_inputs_and_misplaced_fields() {
        let e = errors(&format!(
            "{SRC}follow = true\n[operators.src]\ntype = \"passthrough\"\ninputs = [\"out\"]\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"src\"]\npath = \"x\"\n"
        ));
        let all = e.join("\n");
        assert!(
            all.contains("sources.src: `follow` does not apply to a generator source"),
            "{all}"
        );
        assert!(
            all.contains("id `src` is already used by sources.src"),
            "{all}"
        );
        assert!(all.contains("input `out` is a sink"), "{all}");
        assert!(all.contains("`path` applies only to file sinks"), "{all}");
    }

    #[test]
    fn needs_module_or_type_and_checks_forward_parallelism() {
        let e = errors(&format!(
            "{SRC}[operators.a]\ninputs = [\"src\"]\n[operators.b]\ntype = \"passthrough\"\ninputs = [\"src\"]\nparallelism = 2\npartition = \"forward\"\n"
        ));
        let all = e.join("\n");
        assert!(
            all.contains("operators.a: an operator needs `module`"),
            "{all}"
        );
        assert!(
            all.contains("operators.b: `partition = \"forward\"` needs the same parallelism"),
            "{all}"
        );
    }

    #[test]
    fn builds_an_ordered_topology_with_resolved_paths() {
        let text = "[sources.lines]\ntype = \"file\"\npath = \"in.txt\"\n\
                    [operators.up]\nmodule = \"m/up.wasm\"\ninputs = [\"lines\"]\nconfig = { a = 1 }\n\
                    [sinks.out]\ntype = \"file\"\ninputs = [\"up\"]\npath = \"/abs/out.txt\"\nencoding = \"json\"\n";
        let file = parse_str(Path::new("cfg/t.toml"), text.to_owned()).unwrap();
        let t = build(&file).unwrap();
        let ids: Vec<&str> = t.components.iter().map(|c| &*c.id).collect();
        assert_eq!(ids, ["lines", "up", "out"]);
        match &t.components[1].kind {
            ComponentKind::Operator(OperatorSpec {
                body:
                    OperatorBody::Wasm {
                        module,
                        config_json,
                    },
                ..
            }) => {
                assert_eq!(module, Path::new("cfg/m/up.wasm"));
                assert_eq!(config_json, r#"{"a":1}"#);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(t.data_dir, Path::new("cfg/var/weir"));
        assert!(t.savepoint_dir.is_absolute());
        assert!(t.savepoint_dir.ends_with("cfg/var/weir/savepoints"));
        assert_eq!(t.admin_address, None);
        assert!(t.warnings.is_empty());
    }

    #[test]
    fn the_admin_address_is_an_ip_and_port() {
        let e = errors(&format!("[daemon]\nadmin_address = \"localhost\"\n{SRC}"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("t.toml:2"), "{e:?}");
        assert!(
            e[0].contains("`localhost` is not an address and port"),
            "{e:?}"
        );
        let file = parse_str(
            Path::new("t.toml"),
            format!("[daemon]\nadmin_address = \"127.0.0.1:9187\"\n{SRC}"),
        )
        .unwrap();
        let t = build(&file).unwrap();
        assert_eq!(t.admin_address, Some(([127, 0, 0, 1], 9187).into()));
    }

    #[test]
    fn file_sinks_take_path_or_directory_and_path_warns_under_checkpoints() {
        let e = errors(&format!(
            "{SRC}[sinks.both]\ntype = \"file\"\ninputs = [\"src\"]\npath = \"a\"\ndirectory = \"b\"\n\
             [sinks.none]\ntype = \"file\"\ninputs = [\"src\"]\n\
             [sinks.std]\ntype = \"stdout\"\ninputs = [\"src\"]\ndirectory = \"c\"\n"
        ));
        let all = e.join("\n");
        assert!(
            all.contains("sinks.both: a file sink takes `path` or `directory`, not both"),
            "{all}"
        );
        assert!(
            all.contains("sinks.none: a file sink needs `path` (one file) or `directory`"),
            "{all}"
        );
        assert!(
            all.contains("sinks.std: `directory` applies only to file sinks"),
            "{all}"
        );

        let text = format!(
            "{SRC}[checkpoint]\ninterval = \"0s\"\nretain = 0\n\
             [sinks.out]\ntype = \"file\"\ninputs = [\"src\"]\npath = \"out.txt\"\n"
        );
        let file = parse_str(Path::new("t.toml"), text).unwrap();
        let t = build(&file).unwrap();
        let c = t.checkpoint.unwrap();
        assert_eq!(c.interval, None, "0 means only the final checkpoint");
        assert_eq!(c.retain, 1, "at least one checkpoint is kept");
        assert_eq!(c.timeout, DEFAULT_CHECKPOINT_TIMEOUT);
        let warnings: Vec<String> = t.warnings.iter().map(ToString::to_string).collect();
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("sinks.out") && w.contains("use `directory` for exactly-once")),
            "{warnings:?}"
        );
    }
}
