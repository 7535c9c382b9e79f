//! `weir bench`: throughput of real pipelines, each beside a native baseline run
//! in the same process, with the ratio.
//!
//! - `pipeline`: generator -> pass-through -> blackhole, with the WebAssembly
//!   pass-through and the native one, at several batch sizes.
//! - `keyed`: a keyed count (the word-count plugin) over 16-byte keys, on the
//!   heap and the RocksDB backend, beside a native loop doing the same get and
//!   put per record on a `HashMap` and on RocksDB.
//! - `word-count`: file -> split-words -> word-count -> blackhole over a
//!   generated text, on both backends, in words/s.
//! - `checkpoint`: generator -> dedupe -> blackhole holding 1 GiB of keyed
//!   state (a million keys, 1 KiB values), on both backends: throughput with
//!   checkpoints every second against none, each checkpoint's duration, the
//!   longest pause it caused, its bytes, and the time to restore it.
//! - `reload`: how long a live reload stops records ([`reload`]).
//! - `run-path`: the word count through `weir run` itself, chaining on and
//!   off, with CPU per million words and peak RSS ([`run_path`]).
//! - `windows`: a per-key tumbling-window count over event time, out of
//!   order, on both backends, against a native loop; and its checkpoint
//!   pauses with a pending timer per key ([`windows`]).

mod kafka;
mod reload;
mod run_path;
mod windows;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use wasmtime::Engine;

use crate::checkpoint::restore::find_latest;
use crate::checkpoint::stats::Summary;
use crate::checkpoint::store::Store;
use crate::metrics::Metrics;
use crate::topology::{Checkpointing, Pipeline};
use crate::validate::{Validated, validate};

/// Which measurements to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// Stateless pass-through, WebAssembly against native.
    Pipeline,
    /// Keyed count on both backends against native map and RocksDB loops.
    Keyed,
    /// Word count over a generated text on both backends.
    WordCount,
    /// Checkpoints of 1 GiB of keyed state on both backends.
    Checkpoint,
    /// The pause of a live reload (a swap, a rescale) at two state sizes.
    Reload,
    /// Word count through `weir run`: words/s, CPU per million words, RSS.
    RunPath,
    /// Tumbling-window count over event time on both backends, against native.
    Windows,
    /// Kafka topic to topic, exactly-once, against the plain client (needs `--brokers`).
    Kafka,
}

/// What to measure (the `weir bench` arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    /// Directory of built plugins (passthrough.wasm, split_words.wasm, word_count.wasm).
    #[arg(long)]
    pub plugins: PathBuf,
    /// Which measurements (default: all).
    #[arg(long = "suite", value_enum)]
    pub suites: Vec<Suite>,
    /// pipeline: records per run at 1024-record batches (fewer for smaller batches).
    #[arg(long, default_value_t = 10_000_000)]
    pub records: u64,
    /// pipeline: value size in bytes.
    #[arg(long, default_value_t = 64)]
    pub value_size: usize,
    /// pipeline: batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 64, 1024])]
    pub batch_sizes: Vec<usize>,
    /// keyed: distinct keys.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// keyed: records.
    #[arg(long, default_value_t = 5_000_000)]
    pub keyed_records: u64,
    /// windows: records (a thousand per ms of event time, over `--keys` keys).
    #[arg(long, default_value_t = 10_000_000)]
    pub window_records: u64,
    /// windows: the tumbling window's length.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub window_size: Duration,
    /// word-count: lines of 8 words.
    #[arg(long, default_value_t = 2_000_000)]
    pub lines: u64,
    /// word-count: vocabulary size.
    #[arg(long, default_value_t = 10_000)]
    pub vocabulary: u64,
    /// checkpoint: value bytes per key (with `--keys`, the state size).
    #[arg(long, default_value_t = 1024)]
    pub state_value_size: usize,
    /// checkpoint: records (every key is written this many times over).
    #[arg(long, default_value_t = 3_000_000)]
    pub state_records: u64,
    /// checkpoint: the checkpoint interval of the measured run.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub checkpoint_interval: Duration,
    /// checkpoint: runs with and without checkpoints, alternated; the median
    /// of each is reported (a shared VM varies by 20% from run to run).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// reload: keys of the larger state (the smaller has 10,000).
    #[arg(long, default_value_t = 200_000)]
    pub reload_keys: u64,
    /// keyed, word-count, checkpoint, reload: the state backends to measure, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        value_parser = ["heap", "rocksdb"],
        default_values_t = ["heap".to_string(), "rocksdb".to_string()]
    )]
    pub backends: Vec<String>,
    /// rocksdb: the write-back cache of each operator instance (`[state]
    /// cache`; default the daemon's, 256MiB). A million keys with a window's
    /// panes and timers need about 400MiB to stay in it.
    #[arg(long)]
    pub rocksdb_cache: Option<bytesize::ByteSize>,
    /// kafka: a Kafka broker to measure against (`host:port`); without it the
    /// kafka suite is skipped by default and an error when asked for.
    #[arg(long)]
    pub brokers: Option<String>,
    /// kafka: records of the pass-through run (an eighth as many lines of 8
    /// words for the word count).
    #[arg(long, default_value_t = 1_000_000)]
    pub kafka_records: u64,
    /// run-path: run the daemon on one core (CPU 0).
    #[arg(long)]
    pub pin: bool,
    /// run-path: with operator chaining on, off, or both (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        value_parser = ["on", "off"],
        default_values_t = ["on".to_string(), "off".to_string()]
    )]
    pub chaining: Vec<String>,
}

/// Runs the chosen suites, printing each table as it completes.
pub fn run(options: &BenchOptions, engine: &Engine) -> anyhow::Result<()> {
    let plugin = |name: &str| -> anyhow::Result<PathBuf> {
        let path = options.plugins.join(name);
        std::fs::canonicalize(&path)
            .with_context(|| format!("cannot find the plugin {}", path.display()))
    };
    let scratch = tempfile::tempdir().context("cannot create a scratch directory")?;
    let all = [
        Suite::Pipeline,
        Suite::Keyed,
        Suite::WordCount,
        Suite::Checkpoint,
        Suite::Reload,
        Suite::RunPath,
        Suite::Windows,
        Suite::Kafka,
    ];
    // Everything by default; Kafka only when there is a broker to measure.
    let all: Vec<Suite> = all
        .into_iter()
        .filter(|s| *s != Suite::Kafka || options.brokers.is_some())
        .collect();
    let suites = if options.suites.is_empty() {
        &all[..]
    } else {
        &options.suites[..]
    };
    for suite in suites {
        match suite {
            Suite::Pipeline => print!(
                "{}",
                pipeline(
                    options,
                    engine,
                    &plugin("passthrough.wasm")?,
                    scratch.path()
                )?
            ),
            Suite::Keyed => print!(
                "{}",
                keyed(options, engine, &plugin("word_count.wasm")?, scratch.path())?
            ),
            Suite::Checkpoint => print!(
                "{}",
                checkpoint(options, engine, &plugin("dedupe.wasm")?, scratch.path())?
            ),
            Suite::Reload => print!(
                "{}",
                reload::reload(options, engine, &plugin("word_count.wasm")?, scratch.path())?
            ),
            Suite::RunPath => print!(
                "{}",
                run_path::run_path(
                    options,
                    &plugin("split_words.wasm")?,
                    &plugin("word_count.wasm")?,
                    scratch.path()
                )?
            ),
            Suite::Kafka => print!(
                "{}",
                kafka::kafka(
                    options,
                    engine,
                    &kafka::Plugins {
                        passthrough: &plugin("passthrough.wasm")?,
                        split_words: &plugin("split_words.wasm")?,
                        word_count: &plugin("word_count.wasm")?,
                    },
                    scratch.path()
                )?
            ),
            Suite::Windows => print!(
                "{}",
                windows::windows(
                    options,
                    engine,
                    &plugin("window_count.wasm")?,
                    scratch.path()
                )?
            ),
            Suite::WordCount => print!(
                "{}",
                word_count(
                    options,
                    engine,
                    &plugin("split_words.wasm")?,
                    &plugin("word_count.wasm")?,
                    scratch.path()
                )?
            ),
        }
        println!();
    }
    Ok(())
}

/// Writes the topology `text` to `dir/name.toml` and checks it.
fn write_and_validate(
    engine: &Engine,
    dir: &Path,
    name: &str,
    text: &str,
) -> anyhow::Result<Validated> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text)?;
    validate(&path, engine).map_err(|errors| {
        anyhow::anyhow!(
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

/// Runs the topology in `text` (written to `dir`) and returns records/s through
/// its sinks, checking that `expected` records arrived.
fn measure(
    engine: &Engine,
    dir: &Path,
    name: &str,
    text: &str,
    expected: u64,
) -> anyhow::Result<f64> {
    let validated = write_and_validate(engine, dir, name, text)?;
    let report = Pipeline::start(&validated, engine, None, &Metrics::new()?)?.wait()?;
    let moved: u64 = report.sinks.iter().map(|(_, n)| n).sum();
    if moved != expected {
        bail!("{name}: the pipeline moved {moved} records, expected {expected}");
    }
    Ok(expected as f64 / report.elapsed.as_secs_f64())
}

fn state_table(backend: &str, dir: &Path, options: &BenchOptions) -> String {
    let cache = match options.rocksdb_cache {
        Some(size) if backend == "rocksdb" => format!("cache = \"{}B\"\n", size.as_u64()),
        _ => String::new(),
    };
    format!(
        "[daemon]\ndata_dir = {:?}\n[state]\nbackend = \"{backend}\"\n{cache}",
        dir.join(format!("data-{backend}")).display().to_string()
    )
}

fn pipeline(
    options: &BenchOptions,
    engine: &Engine,
    module: &Path,
    dir: &Path,
) -> anyhow::Result<String> {
    let mut out = format!(
        "pipeline: generator -> pass-through -> blackhole, {}-byte values\n{:>6} {:>11} {:>14} {:>14} {:>6}\n",
        options.value_size, "batch", "records", "native rec/s", "wasm rec/s", "ratio"
    );
    for &batch_size in &options.batch_sizes {
        let records = (options.records * batch_size as u64 / 1024)
            .max(100_000)
            .min(options.records);
        let topology = |operator: &str| {
            format!(
                "[sources.gen]\ntype = \"generator\"\ncount = {records}\nvalue_size = {}\nbatch_size = {batch_size}\n\
                 [operators.pass]\n{operator}\ninputs = [\"gen\"]\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"pass\"]\n",
                options.value_size
            )
        };
        let native = measure(
            engine,
            dir,
            "native",
            &topology("type = \"passthrough\""),
            records,
        )?;
        let wasm = measure(
            engine,
            dir,
            "wasm",
            &topology(&format!("module = {:?}", module.display().to_string())),
            records,
        )?;
        let _ = writeln!(
            out,
            "{batch_size:>6} {records:>11} {native:>14.0} {wasm:>14.0} {:>5.0}%",
            100.0 * wasm / native
        );
    }
    Ok(out)
}

/// The key the generator gives record `n` with `keys` distinct keys.
fn key_of(n: u64, keys: u64) -> [u8; 16] {
    let mut key = [b'0'; 16];
    let digits = format!("{:016}", n % keys);
    key.copy_from_slice(&digits.as_bytes()[digits.len() - 16..]);
    key
}

fn keyed(
    options: &BenchOptions,
    engine: &Engine,
    module: &Path,
    dir: &Path,
) -> anyhow::Result<String> {
    let (records, keys) = (options.keyed_records, options.keys);
    let mut rates = Vec::new();
    for backend in &options.backends {
        let text = format!(
            "{}[sources.gen]\ntype = \"generator\"\ncount = {records}\nkeys = {keys}\n\
             [operators.count]\nmodule = {:?}\ninputs = [\"gen\"]\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"count\"]\n",
            state_table(backend, dir, options),
            module.display().to_string()
        );
        rates.push(measure(
            engine,
            dir,
            &format!("keyed-{backend}"),
            &text,
            records,
        )?);
    }
    let mut out = format!("keyed count: {records} records over {keys} distinct 16-byte keys\n");
    let _ = writeln!(
        out,
        "{:>10} {:>16} {:>16} {:>7}",
        "backend", "weir rec/s", "native rec/s", "ratio"
    );
    for (backend, rate) in options.backends.iter().zip(&rates) {
        let native = match backend.as_str() {
            "rocksdb" => native_rocksdb(records.min(2_000_000), keys, dir)?,
            _ => native_hashmap(records, keys),
        };
        let _ = writeln!(
            out,
            "{:>10} {:>16.0} {:>16.0} {:>6.0}%",
            backend,
            rate,
            native,
            100.0 * rate / native
        );
    }
    let rate_of = |name: &str| {
        options
            .backends
            .iter()
            .zip(&rates)
            .find(|(b, _)| b.as_str() == name)
            .map(|(_, r)| *r)
    };
    if let (Some(heap), Some(rocksdb)) = (rate_of("heap"), rate_of("rocksdb")) {
        let _ = writeln!(out, "weir heap / weir rocksdb: {:.2}x", heap / rocksdb);
    }
    Ok(out)
}

/// Get and put per record on a `HashMap`, natively.
fn native_hashmap(records: u64, keys: u64) -> f64 {
    let mut counts: HashMap<[u8; 16], u64> = HashMap::new();
    let start = Instant::now();
    for n in 0..records {
        let key = key_of(n, keys);
        let count = counts.get(&key).copied().unwrap_or(0) + 1;
        counts.insert(key, count);
    }
    std::hint::black_box(&counts);
    records as f64 / start.elapsed().as_secs_f64()
}

/// Get and put per record straight into RocksDB (WAL off), natively.
#[cfg(feature = "rocksdb")]
fn native_rocksdb(records: u64, keys: u64, dir: &Path) -> anyhow::Result<f64> {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    let db = rocksdb::DB::open(&opts, dir.join("native-rocksdb"))?;
    let mut write = rocksdb::WriteOptions::default();
    write.disable_wal(true);
    let start = Instant::now();
    for n in 0..records {
        let key = key_of(n, keys);
        let count = match db.get(key)? {
            Some(v) if v.len() == 8 => {
                u64::from_le_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]])
            }
            _ => 0,
        };
        db.put_opt(key, (count + 1).to_le_bytes(), &write)?;
    }
    Ok(records as f64 / start.elapsed().as_secs_f64())
}

#[cfg(not(feature = "rocksdb"))]
fn native_rocksdb(_records: u64, _keys: u64, _dir: &Path) -> anyhow::Result<f64> {
    bail!("this weir was built without the `rocksdb` feature")
}

/// Writes `lines` lines of 8 words drawn from `vocabulary` words.
fn write_text(path: &Path, lines: u64, vocabulary: u64) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..lines {
        for i in 0..8 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            if i > 0 {
                out.write_all(b" ")?;
            }
            write!(out, "w{}", seed % vocabulary)?;
        }
        out.write_all(b"\n")?;
    }
    out.flush()
}

fn word_count(
    options: &BenchOptions,
    engine: &Engine,
    split: &Path,
    count: &Path,
    dir: &Path,
) -> anyhow::Result<String> {
    let input = dir.join("words.txt");
    write_text(&input, options.lines, options.vocabulary)?;
    let words = options.lines * 8;
    let mut out = format!(
        "word count: {} lines x 8 words, {}-word vocabulary (file -> split-words -> word-count -> blackhole, parallelism 1)\n",
        options.lines, options.vocabulary
    );
    let _ = writeln!(out, "{:>10} {:>14}", "backend", "words/s");
    for backend in &options.backends {
        let text = format!(
            "{}[sources.lines]\ntype = \"file\"\npath = {:?}\n\
             [operators.split]\nmodule = {:?}\ninputs = [\"lines\"]\n\
             [operators.count]\nmodule = {:?}\ninputs = [\"split\"]\n\
             [sinks.out]\ntype = \"blackhole\"\ninputs = [\"count\"]\n",
            state_table(backend, dir, options),
            input.display().to_string(),
            split.display().to_string(),
            count.display().to_string()
        );
        let rate = measure(engine, dir, &format!("wc-{backend}"), &text, words)?;
        let _ = writeln!(out, "{backend:>10} {rate:>14.0}");
    }
    Ok(out)
}

/// One run of the checkpoint workload: records/s, and (with checkpoints) what
/// they cost and how long restoring the last one takes.
struct CheckpointRun {
    rate: f64,
    summary: Summary,
    restore: Duration,
}

fn checkpoint(
    options: &BenchOptions,
    engine: &Engine,
    module: &Path,
    dir: &Path,
) -> anyhow::Result<String> {
    let (keys, value_size, records) = (
        options.keys,
        options.state_value_size,
        options.state_records,
    );
    let interval = humantime::format_duration(options.checkpoint_interval);
    let mut out = format!(
        "checkpoint: generator -> dedupe -> blackhole, {keys} keys x {value_size}-byte values \
         ({} MiB of keyed state), {records} records, interval {interval}\n",
        keys * value_size as u64 / (1024 * 1024)
    );
    let _ = writeln!(
        out,
        "{:>8} {:>12} {:>12} {:>6} {:>6} {:>10} {:>10} {:>10} {:>9} {:>10}",
        "backend",
        "rec/s none",
        "rec/s ckpt",
        "cost",
        "ckpts",
        "mean dur",
        "max dur",
        "max pause",
        "MiB/ckpt",
        "restore"
    );
    for backend in &options.backends {
        let text = |checkpoints: bool| {
            format!(
                "{}{}[sources.gen]\ntype = \"generator\"\ncount = {records}\nkeys = {keys}\nvalue_size = {value_size}\n\
                 [operators.dedupe]\nmodule = {:?}\ninputs = [\"gen\"]\n\
                 [sinks.out]\ntype = \"blackhole\"\ninputs = [\"dedupe\"]\n",
                state_table(backend, dir, options),
                if checkpoints {
                    format!("[checkpoint]\ninterval = \"{interval}\"\nretain = 1\n")
                } else {
                    String::new()
                },
                module.display().to_string()
            )
        };
        let mut nones = Vec::new();
        let mut withs = Vec::new();
        for _ in 0..options.repeats.max(1) {
            nones.push(measure(
                engine,
                dir,
                &format!("ckpt-none-{backend}"),
                &text(false),
                records,
            )?);
            withs.push(checkpointed_run(
                engine,
                dir,
                &format!("ckpt-{backend}"),
                &text(true),
                records,
            )?);
        }
        nones.sort_by(f64::total_cmp);
        withs.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        let none = nones[nones.len() / 2];
        let with = &withs[withs.len() / 2];
        let s = &with.summary;
        let written_per_checkpoint = s.total_bytes / s.completed.max(1);
        let _ = writeln!(
            out,
            "{backend:>8} {none:>12.0} {:>12.0} {:>5.1}% {:>6} {:>10.0?} {:>10.0?} {:>10.1?} {:>9.0} {:>10.2?}",
            with.rate,
            100.0 * (1.0 - with.rate / none),
            s.completed,
            s.mean_duration(),
            s.max_duration,
            s.max_pause,
            written_per_checkpoint as f64 / (1024.0 * 1024.0),
            with.restore,
        );
    }
    let _ = writeln!(
        out,
        "medians of {} alternated runs each; cost: throughput lost to checkpoints; max pause: longest \
         a task stopped processing for one (state capture); MiB/ckpt: bytes written per checkpoint \
         (incremental ones write only changes); restore: starting the pipeline from the last checkpoint",
        options.repeats.max(1)
    );
    Ok(out)
}

/// Runs `text` with checkpoints (into a fresh data directory), then starts it
/// again from its last checkpoint to time the restore.
fn checkpointed_run(
    engine: &Engine,
    dir: &Path,
    name: &str,
    text: &str,
    expected: u64,
) -> anyhow::Result<CheckpointRun> {
    let validated = write_and_validate(engine, dir, name, text)?;
    let topology = &validated.topology;
    let metrics = Metrics::new()?;
    let root = topology.data_dir.join("checkpoints");
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    let store = Store::open(&root)?;
    let settings = topology
        .checkpoint
        .context("the benchmark topology has no [checkpoint]")?;
    let checkpointing = |store: Store, restored| -> anyhow::Result<Checkpointing> {
        Ok(Checkpointing {
            next_id: store.highest_id()? + 1,
            store,
            settings,
            restored,
        })
    };
    let report = Pipeline::start(
        &validated,
        engine,
        Some(checkpointing(store.clone(), None)?),
        &metrics,
    )?
    .wait()?;
    let moved: u64 = report.sinks.iter().map(|(_, n)| n).sum();
    if moved != expected {
        bail!("{name}: the pipeline moved {moved} records, expected {expected}");
    }
    let rate = expected as f64 / report.elapsed.as_secs_f64();

    let latest = find_latest(&store)?.context("no checkpoint was completed")?;
    let started = Instant::now();
    let pipeline = Pipeline::start(
        &validated,
        engine,
        Some(checkpointing(store, Some(latest))?),
        &metrics,
    )?;
    let restore = started.elapsed();
    // The generator resumes at its end, so this run ends at once.
    pipeline.wait()?;
    Ok(CheckpointRun {
        rate,
        summary: report.checkpoints,
        restore,
    })
}
