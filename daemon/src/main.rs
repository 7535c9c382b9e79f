//! The `weir` command line: `run`, `validate`, `savepoint` and `bench`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;
use weir::admin::{self, Shared, client, view::TopologyView};
use weir::bench::{self, BenchOptions};
use weir::checkpoint::CheckpointId;
use weir::checkpoint::restore::{self, Restored};
use weir::checkpoint::store::Store;
use weir::diagnostic::Diagnostic;
use weir::operator_host::module::hex_sha256;
use weir::operator_host::new_engine;
use weir::topology::{Checkpointing, Pipeline};
use weir::validate::{Validated, validate};

/// Batches of ~100 KB are allocated on one thread and freed on another; glibc's
/// allocator hands such memory back to the kernel and faults it in again, which
/// cost a quarter of the pipeline's time. mimalloc keeps it for reuse.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// sysexits.h EX_CONFIG: the configuration is wrong.
const EX_CONFIG: u8 = 78;

/// Runs stream operators compiled to WebAssembly, wired by a TOML topology.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about)]
struct Cli {
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the pipeline until every finite source is exhausted, or SIGINT/SIGTERM.
    Run {
        /// The topology file.
        #[arg(long, short)]
        config: PathBuf,
        /// Start from this savepoint (or any checkpoint directory) instead of
        /// the latest checkpoint under `data_dir`; needs `[checkpoint]`.
        #[arg(long, value_name = "DIR")]
        from_savepoint: Option<PathBuf>,
    },
    /// Checks a topology file and its modules; prints every error, exits 78 on any.
    Validate {
        /// The topology file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Asks the running daemon for a savepoint and waits until it is written.
    Savepoint {
        /// The running daemon's topology file (for `[daemon] admin_address`).
        #[arg(long, short)]
        config: PathBuf,
        /// The admin endpoint, instead of the config's `admin_address`.
        #[arg(long, value_name = "ADDR")]
        admin: Option<SocketAddr>,
        /// Longest wait for the savepoint.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Where to write it (must be absent or empty); default: a new
        /// directory under `[checkpoint] savepoint_dir`.
        directory: Option<PathBuf>,
    },
    /// Measures pipelines against native baselines in the same process.
    Bench(BenchOptions),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    if let Command::Savepoint {
        config,
        admin,
        timeout,
        directory,
    } = &command
    {
        return take_savepoint(config, *admin, *timeout, directory.as_deref());
    }
    let engine =
        new_engine().map_err(|e| anyhow::anyhow!("cannot create the WebAssembly engine: {e:#}"))?;
    match command {
        Command::Validate { config } => Ok(match validate(&config, &engine) {
            Ok(validated) => {
                print_warnings(&validated);
                println!(
                    "{}: ok ({} components)",
                    config.display(),
                    validated.topology.components.len()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => report_invalid(&errors),
        }),
        Command::Run {
            config,
            from_savepoint,
        } => {
            let validated = match validate(&config, &engine) {
                Ok(v) => v,
                Err(errors) => return Ok(report_invalid(&errors)),
            };
            print_warnings(&validated);
            let savepoint = match from_savepoint {
                Some(dir) => {
                    if validated.topology.checkpoint.is_none() {
                        anyhow::bail!(
                            "--from-savepoint needs checkpoints: add a [checkpoint] table to {}",
                            config.display()
                        );
                    }
                    Some(restore::open(&dir).with_context(|| {
                        format!("cannot start from savepoint {}", dir.display())
                    })?)
                }
                None => None,
            };
            run_pipeline(&validated, &engine, savepoint)
        }
        Command::Bench(options) => {
            bench::run(&options, &engine)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Savepoint { .. } => Ok(ExitCode::FAILURE),
    }
}

/// `weir savepoint`: POST /savepoints to the running daemon.
fn take_savepoint(
    config: &std::path::Path,
    admin: Option<SocketAddr>,
    timeout: Duration,
    directory: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let address = client::admin_address(config, admin)?;
    let mut body = serde_json::json!({});
    if let Some(dir) = directory {
        let dir = std::path::absolute(dir)
            .with_context(|| format!("cannot resolve {}", dir.display()))?;
        body["directory"] = serde_json::Value::String(dir.to_string_lossy().into_owned());
    }
    let answer = client::post(address, "/savepoints", &body, timeout)?;
    let taken: weir::checkpoint::savepoint::Taken = serde_json::from_value(answer)
        .context("the daemon's answer is not a savepoint description")?;
    println!(
        "savepoint {} written to {}",
        taken.id,
        taken.directory.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn report_invalid(errors: &[Diagnostic]) -> ExitCode {
    for e in errors {
        eprintln!("error: {e}");
    }
    eprintln!(
        "{} error{} found",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
    ExitCode::from(EX_CONFIG)
}

fn print_warnings(validated: &Validated) {
    for w in &validated.topology.warnings {
        tracing::warn!("{w}");
    }
}

/// With `[checkpoint]`: opens the checkpoint store, finds the checkpoint to
/// start from and commits its sink files.
/// Where a run starts when `--from-savepoint` was given: the savepoint, until
/// a checkpoint taken after it exists.
struct StartingPoint {
    savepoint: Option<Restored>,
    /// Checkpoints from this id on were taken after the savepoint.
    first_new: CheckpointId,
}

fn prepare_checkpoints(
    validated: &Validated,
    start: &mut StartingPoint,
) -> anyhow::Result<Option<Checkpointing>> {
    let topology = &validated.topology;
    let Some(settings) = topology.checkpoint else {
        return Ok(None);
    };
    let store = Store::open(&topology.data_dir.join("checkpoints"))?;
    let latest = restore::find_latest(&store)?;
    let restored = match (&start.savepoint, latest) {
        (Some(savepoint), latest) => {
            if start.first_new == 0 {
                start.first_new = store.highest_id()?.max(savepoint.id()) + 1;
            }
            match latest {
                Some(l) if l.id() >= start.first_new => Some(l),
                _ => Some(savepoint.clone()),
            }
        }
        (None, latest) => latest,
    };
    if let Some(r) = &restored {
        r.commit_sinks()
            .context("cannot commit the restored checkpoint's output")?;
        tracing::info!(checkpoint = r.id(), dir = %r.dir.display(), "restoring from checkpoint");
    }
    let next_id = store
        .highest_id()?
        .max(restored.as_ref().map_or(0, |r| r.id()))
        + 1;
    Ok(Some(Checkpointing {
        store,
        settings,
        restored,
        next_id,
    }))
}

fn run_pipeline(
    validated: &Validated,
    engine: &wasmtime::Engine,
    savepoint: Option<Restored>,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let start = StartingPoint {
        savepoint,
        first_new: 0,
    };
    runtime.block_on(async {
        let shared = Arc::new(Shared::default());
        if let Some(address) = validated.topology.admin_address {
            let listener = admin::server::bind(address)
                .await
                .with_context(|| format!("cannot listen on [daemon] admin_address {address}"))?;
            tracing::info!(%address, "admin endpoint listening");
            tokio::spawn(admin::server::serve(listener, shared.clone()));
        }
        supervise(validated, engine, start, &shared).await
    })
}

/// Runs the pipeline; with checkpoints on, restarts it from the latest
/// complete checkpoint after a failure, with a backoff that doubles, until
/// `[restart] max_failures` come within `window`. SIGINT/SIGTERM drain it.
async fn supervise(
    validated: &Validated,
    engine: &wasmtime::Engine,
    mut start: StartingPoint,
    shared: &Shared,
) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let restart = validated.topology.restart;
    let mut failures: VecDeque<Instant> = VecDeque::new();
    let mut backoff = restart.backoff;
    let config_sha256 = std::fs::read(&validated.topology.config_path)
        .map(|bytes| hex_sha256(&bytes))
        .unwrap_or_default();
    let view = Arc::new(TopologyView::new(validated, config_sha256));
    loop {
        let checkpointing = prepare_checkpoints(validated, &mut start)?;
        let restartable = checkpointing.is_some();
        let pipeline = Pipeline::start(validated, engine, checkpointing)?;
        let stop = pipeline.stop_signal();
        shared.running(view.clone(), pipeline.checkpoints());
        let components = validated.topology.components.len();
        tracing::info!(config = %validated.topology.config_path.display(), components, "pipeline running");
        let waiter = tokio::task::spawn_blocking(move || pipeline.wait());
        tokio::pin!(waiter);
        let mut stopping = false;
        let result = loop {
            let name = tokio::select! {
                result = &mut waiter => {
                    shared.not_running();
                    break result.context("the pipeline waiter failed")?;
                }
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            if stop.is_stopped() {
                tracing::warn!("{name} again: exiting without draining");
                std::process::exit(130);
            }
            tracing::info!("{name}: stopping sources, draining the pipeline");
            stopping = true;
            stop.stop();
        };
        let error = match result {
            Ok(report) => {
                for (id, records) in &report.sinks {
                    tracing::info!(sink = %id, records, "sink finished");
                }
                tracing::info!(elapsed = ?report.elapsed, final_checkpoint = ?report.final_checkpoint, "pipeline finished");
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => e,
        };
        if !restartable || stopping || !error.is_restartable() {
            eprintln!("error: {error}");
            return Ok(ExitCode::FAILURE);
        }
        let now = Instant::now();
        failures.push_back(now);
        while failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > restart.window)
        {
            failures.pop_front();
        }
        if failures.len() > restart.max_failures {
            eprintln!("error: {error}");
            eprintln!(
                "error: giving up: {} failures within {}",
                failures.len(),
                humantime::format_duration(restart.window)
            );
            return Ok(ExitCode::FAILURE);
        }
        tracing::warn!(
            failures = failures.len(),
            backoff = %humantime::format_duration(backoff),
            "pipeline failed: {error}; restarting from the latest checkpoint"
        );
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = term.recv() => return Ok(ExitCode::SUCCESS),
            _ = int.recv() => return Ok(ExitCode::SUCCESS),
        }
        backoff = (backoff * 2).min(restart.max_backoff);
    }
}
