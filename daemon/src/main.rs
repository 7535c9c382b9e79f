//! The `weir` command line: `run`, `validate`, `reload`, `savepoint` and `bench`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;
use weir::admin::{self, Shared, client};
use weir::bench::{self, BenchOptions};
use weir::checkpoint::restore;
use weir::diagnostic::Diagnostic;
use weir::metrics::Metrics;
use weir::operator_host::new_engine;
use weir::supervisor::start::StartOptions;
use weir::supervisor::{Exit, Supervisor};
use weir::validate::{Validated, validate};

/// Batches of ~100 KB are allocated on one thread and freed on another; glibc's
/// allocator hands such memory back to the kernel and faults it in again, which
/// cost a quarter of the pipeline's time. mimalloc keeps it for reuse.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` and `mi_option_allow_thp` (the same
/// in mimalloc 2 and 3, whose option numbers are stable: retired ones keep
/// their place).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// Keeps freed memory for reuse instead of handing it back to the kernel,
/// and keeps it in 4 KiB pages.
///
/// With checkpoints, the heap backend's copy-on-write frees one interval's
/// overwritten values on the snapshot writer's thread and allocates as many
/// again during the next. mimalloc returned those pages to the kernel after a
/// second unused, so each interval faulted them in again: 257,000 page faults
/// in one checkpoint benchmark run instead of 3,600, and a fifth of the
/// operator thread's time spent zeroing pages. A long-running daemon's memory
/// stays at its high-water mark, as a JVM heap does; `MIMALLOC_PURGE_DELAY`
/// (milliseconds) still overrides this.
///
/// Transparent huge pages, which mimalloc asks the kernel for by default,
/// made that high-water mark several times what is in use: a 2 MiB page is
/// resident as soon as one byte of it is touched, and never purged. The word
/// count job held 5 MB of live allocations in 45 MB of huge pages (peak RSS
/// 98 MB on RocksDB, 55 MB without them, at the same speed). Where state is
/// large they do save TLB misses: the 1 GiB-state checkpoint benchmark ran
/// ~4% faster with them and restored ~13% faster. As the JVM (which uses no
/// THP unless told to), the process does without them by default, so its
/// memory is what it uses; `MIMALLOC_ALLOW_THP=1` turns them back on.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mimalloc's options are not synchronised; this runs first in
        // `main`, before any other thread exists.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: as above. mimalloc reads the option on every fresh region
        // it maps (whether to madvise it for huge pages).
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0) };
        // With the kernel's THP set to `always`, only the process flag keeps
        // huge pages out (of RocksDB's and wasmtime's memory too). A kernel
        // without THP refuses it, which is the same outcome.
        // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory.
        let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}

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
        /// the latest checkpoint under `data_dir`, once: after the first
        /// checkpoint taken since, restarts resume from the latest checkpoint.
        /// Needs `[checkpoint]`; overrides `[checkpoint] start_from_savepoint`.
        #[arg(long, value_name = "DIR")]
        from_savepoint: Option<PathBuf>,
        /// Start from empty state although exactly-once sinks hold output
        /// committed by an earlier run and no checkpoint is left to restore
        /// (refused otherwise); the new parts follow the old ones.
        #[arg(long)]
        start_over: bool,
        /// When the checkpoint restored is older than committed output (a
        /// savepoint, or the fallback past a damaged checkpoint), remove that
        /// output instead of writing its records again after it.
        #[arg(long)]
        remove_newer_output: bool,
    },
    /// Checks a topology file and its modules; prints every error, exits 78 on any.
    Validate {
        /// The topology file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Asks the running daemon to reload its config and modules; waits until
    /// the new topology runs (exit 0) or the reload is refused (exit 1).
    Reload {
        /// The running daemon's topology file (for `[daemon] admin_socket`).
        #[arg(long, short)]
        config: PathBuf,
        /// Reach the daemon at this TCP address (its `admin_address`) instead
        /// of its admin socket.
        #[arg(long, value_name = "ADDR")]
        admin: Option<SocketAddr>,
        /// Longest wait for the reload.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Asks the running daemon for a savepoint and waits until it is written.
    Savepoint {
        /// The running daemon's topology file (for `[daemon] admin_socket`).
        #[arg(long, short)]
        config: PathBuf,
        /// Reach the daemon at this TCP address (its `admin_address`) instead
        /// of its admin socket.
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
    /// Creates something new from a template.
    #[command(subcommand)]
    New(New),
}

#[derive(Debug, Subcommand)]
enum New {
    /// A plugin crate of your own, outside this repository: builds to a Weir
    /// component with `cargo build --release --target wasm32-unknown-unknown`
    /// and tests natively with `cargo test`.
    Plugin {
        /// The crate's name (lower case, digits, `-`, `_`).
        name: String,
        /// Start from an operator with keyed state (a count per key).
        #[arg(long)]
        state: bool,
        /// Where to create it (default: ./NAME).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The SDK as a path to a checkout's `guest-sdk` (default: the one this
        /// weir was built from).
        #[arg(long, value_name = "PATH", conflicts_with = "sdk_git")]
        sdk: Option<PathBuf>,
        /// The SDK from a git repository of Weir.
        #[arg(long, value_name = "URL")]
        sdk_git: Option<String>,
    },
}

fn main() -> ExitCode {
    tune_allocator();
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
        .with_writer(std::io::stderr)
        .with_ansi(colour_logs());
    match format {
        // The journal stamps every line itself.
        LogFormat::Text if stderr_is_journal() => builder.without_time().init(),
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Colour only on a terminal, and not when `NO_COLOR` is set (no-color.org):
/// a log file or pipe gets plain text that `grep` can match.
fn colour_logs() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Whether stderr is connected to the journal: `JOURNAL_STREAM` names its
/// device and inode (systemd.exec(5)).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
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
    if let Command::Reload {
        config,
        admin,
        timeout,
    } = &command
    {
        let endpoint = client::endpoint(config, *admin)?;
        let answer = client::post(&endpoint, "/reload", &serde_json::json!({}), *timeout)?;
        let outcome: weir::supervisor::reload::Outcome = serde_json::from_value(answer)
            .context("the daemon's answer is not a reload outcome")?;
        println!("reloaded: {outcome}");
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::New(New::Plugin {
        name,
        state,
        dir,
        sdk,
        sdk_git,
    }) = &command
    {
        return new_plugin(
            name,
            *state,
            dir.as_deref(),
            sdk.as_deref(),
            sdk_git.as_deref(),
        );
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
            start_over,
            remove_newer_output,
        } => {
            let validated = match validate(&config, &engine) {
                Ok(v) => v,
                Err(errors) => return Ok(report_invalid(&errors)),
            };
            print_warnings(&validated);
            let from_savepoint =
                from_savepoint.or_else(|| validated.topology.start_from_savepoint.clone());
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
            let options = StartOptions {
                savepoint,
                start_over,
                remove_newer_output,
            };
            run_pipeline(validated, &engine, options)
        }
        Command::Bench(options) => {
            bench::run(&options, &engine)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Savepoint { .. } | Command::Reload { .. } | Command::New(_) => {
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `weir new plugin`: writes the crate and says what to run next.
fn new_plugin(
    name: &str,
    with_state: bool,
    dir: Option<&std::path::Path>,
    sdk: Option<&std::path::Path>,
    sdk_git: Option<&str>,
) -> anyhow::Result<ExitCode> {
    use weir::scaffold::{PluginTemplate, SdkSource};
    let sdk = match (sdk, sdk_git) {
        (Some(path), _) => SdkSource::Path(
            std::fs::canonicalize(path).with_context(|| format!("--sdk {}", path.display()))?,
        ),
        (None, Some(url)) => SdkSource::Git(url.to_owned()),
        (None, None) => SdkSource::built_with().context(
            "the guest-sdk this weir was built from is gone: give --sdk PATH (a checkout's \
             guest-sdk) or --sdk-git URL",
        )?,
    };
    let dir = dir.map_or_else(|| PathBuf::from(name), std::path::Path::to_path_buf);
    let template = PluginTemplate {
        name: name.to_owned(),
        with_state,
        sdk,
    };
    template.write(&dir)?;
    println!(
        "created {} ({})",
        dir.display(),
        if with_state {
            "with keyed state"
        } else {
            "stateless"
        }
    );
    println!("  cd {}", dir.display());
    println!("  cargo test");
    println!("  cargo build --release --target wasm32-unknown-unknown");
    println!("  weir run --config weir.toml");
    Ok(ExitCode::SUCCESS)
}

/// `weir savepoint`: POST /savepoints to the running daemon.
fn take_savepoint(
    config: &std::path::Path,
    admin: Option<SocketAddr>,
    timeout: Duration,
    directory: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let endpoint = client::endpoint(config, admin)?;
    let mut body = serde_json::json!({});
    if let Some(dir) = directory {
        let dir = std::path::absolute(dir)
            .with_context(|| format!("cannot resolve {}", dir.display()))?;
        body["directory"] = serde_json::Value::String(dir.to_string_lossy().into_owned());
    }
    let answer = client::post(&endpoint, "/savepoints", &body, timeout)?;
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

fn run_pipeline(
    validated: Validated,
    engine: &wasmtime::Engine,
    options: StartOptions,
) -> anyhow::Result<ExitCode> {
    // Two workers: the supervisor starts pipelines (plugins' `init`) in
    // `block_in_place`, and the admin endpoint, signals and the watchdog go
    // on on the other.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("weir-runtime")
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let metrics = Metrics::new().context("cannot set up the metrics")?;
        let shared = Arc::new(Shared::new(metrics));
        let socket = validated.topology.admin_socket.clone();
        let listener = admin::socket::bind(&socket).await.with_context(|| {
            format!(
                "cannot listen on [daemon] admin_socket {}",
                socket.display()
            )
        })?;
        tracing::info!(socket = %socket.display(), "admin socket listening");
        tokio::spawn(admin::server::serve_socket(listener, shared.clone()));
        if let Some(address) = validated.topology.admin_address {
            let token = match &validated.topology.admin_token_file {
                Some(file) => {
                    Some(Arc::from(admin::token::read(file).map_err(|e| {
                        anyhow::anyhow!("[daemon] admin_token_file: {e}")
                    })?))
                }
                None => None,
            };
            let listener = admin::server::bind(address)
                .await
                .with_context(|| format!("cannot listen on [daemon] admin_address {address}"))?;
            tracing::info!(%address, token = token.is_some(), "admin endpoint listening");
            tokio::spawn(admin::server::serve(listener, shared.clone(), token));
        }
        let supervisor = Supervisor::new(engine.clone(), validated, shared, options);
        let exit = supervisor.run().await;
        // Only this daemon answers there; a crash leaves a stale socket that
        // the next start replaces.
        let _ = std::fs::remove_file(&socket);
        Ok(match exit? {
            Exit::Finished => ExitCode::SUCCESS,
            Exit::Failed(message) => {
                eprintln!("error: {message}");
                ExitCode::FAILURE
            }
        })
    })
}
