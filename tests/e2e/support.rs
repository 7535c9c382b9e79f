//! Helpers: a scratch directory per test and a `weir` process with a time limit.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest any single `weir` run in these tests may take before it is killed
/// and the test fails (a hang is a failure, not a slow pass).
pub(crate) const RUN_LIMIT: Duration = Duration::from_secs(60);

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

/// Starts `weir run --config <config>` in the background, stderr captured.
pub(crate) fn spawn_run(config: &Path) -> Child {
    weir()
        .args(["run", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start weir")
}

/// Waits for a child, killing it (and failing the test) past `limit`.
pub(crate) fn wait_with_limit(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().expect("poll weir").is_some() {
            return child.wait_with_output().expect("collect weir output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect weir output");
            panic!(
                "weir ran longer than {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Sends a signal to a child process.
pub(crate) fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
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
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://127.0.0.1:{port}{path}");
    let response = match method {
        "GET" => agent.get(&url).call(),
        _ => agent.post(&url).content_type("application/json").send(body),
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
    wait_until(Duration::from_secs(30), "GET /ready = 200", || {
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
