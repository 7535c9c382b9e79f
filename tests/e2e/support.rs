//! Helpers: a scratch directory per test and a `weir` process with a time limit.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest any single `weir` run in these tests may take before it is killed
/// and the test fails (a hang is a failure, not a slow pass). Generous, so a
/// busy machine is slow, not failing: tests wait for conditions, not times.
pub(crate) const RUN_LIMIT: Duration = Duration::from_secs(600);

/// Longest a test waits for a condition of a running daemon (a checkpoint, a
/// log line, a count) before it fails saying what it waited for.
pub(crate) const WAIT_LIMIT: Duration = Duration::from_secs(300);

/// A scratch directory holding one test's config, input and output.
pub(crate) struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub(crate) fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("create a temp dir"),
        }
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file (creating its directory) and returns its path.
    pub(crate) fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create dir");
        }
        std::fs::write(&path, contents).expect("write file");
        path
    }

    pub(crate) fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }
}

/// The `weir` binary under test.
pub(crate) fn weir() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
    cmd.env("WEIR_LOG", "info").env("NO_COLOR", "1");
    cmd
}

/// Runs `weir <args> --config <config>` to completion within [`RUN_LIMIT`].
pub(crate) fn run(subcommand: &str, config: &Path) -> Output {
    let child = weir()
        .arg(subcommand)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start weir");
    wait_with_limit(child, RUN_LIMIT)
}

/// Starts `weir run --config <config>` in the background, logging to a file
/// beside the config.
pub(crate) fn spawn_run(config: &Path) -> Daemon {
    Daemon::spawn(config, &[])
}

/// A `weir run` in the background whose log goes to a file (a pipe nobody
/// reads would fill and stall it), so tests can wait for what it says.
pub(crate) struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `weir run --config <config> <args>`, logging to `<sandbox>/<name>.log`.
    pub(crate) fn start(
        sandbox: &Sandbox,
        name: &str,
        config: &Path,
        args: &[&std::ffi::OsStr],
    ) -> Self {
        Self::start_logging_to(sandbox.path(&format!("{name}.log")), config, args)
    }

    /// Starts `weir run --config <config>` as [`Daemon::start`] does and waits
    /// until it completes a checkpoint of its own (newer than any in
    /// `data_dir` before it started), so a kill after it restores new state.
    /// The flag is false if the run ended first.
    pub(crate) fn start_until_checkpoint(
        sandbox: &Sandbox,
        name: &str,
        config: &Path,
        data_dir: &Path,
    ) -> (Self, bool) {
        let before = newest_completed_checkpoint(data_dir);
        let mut daemon = Self::start(sandbox, name, config, &[]);
        let checkpointed = daemon.wait_for("a checkpoint of this run", |_| {
            newest_completed_checkpoint(data_dir) > before
        });
        (daemon, checkpointed)
    }

    /// Starts `weir run --config <config> <args>`, logging to a new file
    /// beside the config.
    pub(crate) fn spawn(config: &Path, args: &[&std::ffi::OsStr]) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        Self::start_logging_to(config.with_extension(format!("run-{n}.log")), config, args)
    }

    fn start_logging_to(log: PathBuf, config: &Path, args: &[&std::ffi::OsStr]) -> Self {
        let child = weir()
            .args(["run", "--config"])
            .arg(config)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the log file"))
            .spawn()
            .expect("start weir");
        Self { child, log }
    }

    /// What it has logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited.
    pub(crate) fn exited(&mut self) -> bool {
        self.child.try_wait().expect("poll weir").is_some()
    }

    /// Waits until `f` holds (true) or the process exits first (false); fails
    /// after [`WAIT_LIMIT`], saying what it waited for and what was logged.
    pub(crate) fn wait_for(&mut self, what: &str, mut f: impl FnMut(&str) -> bool) -> bool {
        let start = Instant::now();
        loop {
            let log = self.log();
            if f(&log) {
                return true;
            }
            if self.exited() {
                return f(&self.log());
            }
            assert!(
                start.elapsed() < WAIT_LIMIT,
                "timed out after {WAIT_LIMIT:?} waiting for {what}; log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (`TERM`, `HUP`, `KILL`, ...).
    pub(crate) fn signal(&self, name: &str) {
        signal(&self.child, name);
    }

    /// SIGKILLs it: the status and the log.
    pub(crate) fn kill(mut self) -> (std::process::ExitStatus, String) {
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait for weir");
        (status, self.log())
    }

    /// Waits for the exit (within [`RUN_LIMIT`]), as an `Output` whose stderr
    /// is the log.
    pub(crate) fn wait_output(self) -> Output {
        let (status, log) = self.wait();
        Output {
            status,
            stdout: Vec::new(),
            stderr: log.into_bytes(),
        }
    }

    /// Waits for the exit (within [`RUN_LIMIT`]): the status and the log.
    pub(crate) fn wait(mut self) -> (std::process::ExitStatus, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("poll weir") {
                return (status, self.log());
            }
            if start.elapsed() > RUN_LIMIT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("weir ran longer than {RUN_LIMIT:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A failed test must not leave a daemon running.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a checkpoint's (or savepoint's) `_metadata` says: the metadata
/// inside its checksum seal.
pub(crate) fn read_metadata(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("_metadata")).expect("read _metadata");
    let sealed: serde_json::Value = serde_json::from_str(&text).expect("_metadata is JSON");
    sealed["metadata"].clone()
}

/// Rewrites a `_metadata` after `edit`, sealed again with a checksum that
/// fits: what a checkpoint the daemon wrote that way would hold.
pub(crate) fn reseal(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut metadata = read_metadata(dir);
    edit(&mut metadata);
    let inner = serde_json::to_string_pretty(&metadata).unwrap();
    let crc = crc32fast::hash(inner.as_bytes());
    std::fs::write(
        dir.join("_metadata"),
        format!("{{\"crc32\": \"{crc:08x}\", \"metadata\": {inner}}}"),
    )
    .unwrap();
}

/// The newest checkpoint id with its `_metadata` in place under `data_dir`
/// (0 when there is none): a checkpoint the daemon completed.
pub(crate) fn newest_completed_checkpoint(data_dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(data_dir.join("checkpoints")) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join("_metadata").is_file())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("chk-")?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

/// The `_metadata` of the newest checkpoint completed under `data_dir`.
pub(crate) fn newest_metadata(data_dir: &Path) -> serde_json::Value {
    let newest = newest_completed_checkpoint(data_dir);
    assert!(
        newest > 0,
        "no completed checkpoint under {}",
        data_dir.display()
    );
    read_metadata(&weir::checkpoint::store::checkpoint_dir(
        &data_dir.join("checkpoints"),
        newest,
    ))
}

/// Waits for a child, killing it (and failing the test) past `limit`.
pub(crate) fn wait_with_limit(mut child: Child, limit: Duration) -> Output {
    // Read the pipes as the child writes them: a daemon that logs more than
    // a pipe holds (a slow machine takes more checkpoints) must not block.
    fn drain(
        pipe: Option<impl std::io::Read + Send + 'static>,
    ) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll weir") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr.join().unwrap_or_default();
            panic!(
                "weir ran longer than {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A process a test can signal.
pub(crate) trait Process {
    /// Its process id.
    fn pid(&self) -> u32;
}

impl Process for Child {
    fn pid(&self) -> u32 {
        self.id()
    }
}

impl Process for Daemon {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Sends a signal to a process.
pub(crate) fn signal(process: &impl Process, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(process.pid().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} failed");
}

/// Polls until `f` is true, failing after `limit`.
pub(crate) fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TOML string literal for a path.
pub(crate) fn toml_path(path: &str) -> String {
    format!("{path:?}")
}

/// A TCP port free right now on 127.0.0.1, for an admin endpoint.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
        .port()
}

/// An HTTP request to the daemon: the status and the body.
pub(crate) fn http(method: &str, port: u16, path: &str, body: &str) -> (u16, String) {
    http_with(method, port, path, body, &[])
}

/// An HTTP request with extra headers.
pub(crate) fn http_with(
    method: &str,
    port: u16,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://127.0.0.1:{port}{path}");
    let response = match method {
        "GET" => {
            let mut request = agent.get(&url);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            request.call()
        }
        _ => {
            let mut request = agent.post(&url).content_type("application/json");
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            request.send(body)
        }
    };
    match response {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(e) => (0, e.to_string()),
    }
}

/// Waits until the daemon on `port` answers `/ready` with 200.
pub(crate) fn wait_ready(port: u16) {
    wait_until(WAIT_LIMIT, "GET /ready = 200", || {
        http("GET", port, "/ready", "").0 == 200
    });
}

/// The value of one series in a Prometheus text scrape, e.g.
/// `weir_records_in_total{instance="0",operator="count"}`.
pub(crate) fn metric(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}
