//! Sources, sinks, partitioning and shutdown, through the real binary.

use std::io::Write;
use std::process::Stdio;
use weir_test_artifacts as plugins;

use crate::support::{
    RUN_LIMIT, Sandbox, WAIT_LIMIT, run, signal, spawn_run, stderr, toml_path, wait_until,
    wait_with_limit, weir,
};

#[test]
fn generator_to_json_file_sink() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "weir.toml",
        format!(
            "[sources.gen]\ntype = \"generator\"\ncount = 2500\nbatch_size = 100\n\
             [operators.up]\nmodule = {}\ninputs = [\"gen\"]\n\
             [sinks.out]\ntype = \"file\"\ninputs = [\"up\"]\npath = \"out/records.json\"\nencoding = \"json\"\n",
            toml_path(plugins::UPPERCASE)
        ),
    );
    let out = run("run", &path);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = sandbox.read("out/records.json");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2500);
    assert_eq!(lines[0], r#"{"key":"0","value":"0","timestamp":null}"#);
    assert_eq!(
        lines[2499],
        r#"{"key":"2499","value":"2499","timestamp":null}"#
    );
}

#[test]
fn generator_value_size_and_parallel_hash_partitioning_keep_every_record() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "weir.toml",
        format!(
            "[sources.gen]\ntype = \"generator\"\ncount = 10000\nvalue_size = 12\n\
             [operators.up]\nmodule = {}\ninputs = [\"gen\"]\nparallelism = 3\n\
             [sinks.out]\ntype = \"file\"\ninputs = [\"up\"]\npath = \"out.txt\"\n",
            toml_path(plugins::UPPERCASE)
        ),
    );
    let out = run("run", &path);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut got: Vec<String> = sandbox.read("out.txt").lines().map(str::to_owned).collect();
    got.sort();
    let mut want: Vec<String> = (0..10000).map(|n| format!("{n:X<12}")).collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn broadcast_and_round_robin_partitions() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "weir.toml",
        format!(
            "[sources.gen]\ntype = \"generator\"\ncount = 1000\nbatch_size = 10\n\
             [operators.everywhere]\nmodule = {pass}\ninputs = [\"gen\"]\nparallelism = 2\npartition = \"broadcast\"\n\
             [operators.turns]\nmodule = {pass}\ninputs = [\"gen\"]\nparallelism = 2\npartition = \"round_robin\"\n\
             [sinks.b]\ntype = \"file\"\ninputs = [\"everywhere\"]\npath = \"b.txt\"\n\
             [sinks.r]\ntype = \"file\"\ninputs = [\"turns\"]\npath = \"r.txt\"\n",
            pass = toml_path(plugins::PASSTHROUGH)
        ),
    );
    let out = run("run", &path);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        sandbox.read("b.txt").lines().count(),
        2000,
        "broadcast sends every record to both instances"
    );
    assert_eq!(
        sandbox.read("r.txt").lines().count(),
        1000,
        "round robin sends every record once"
    );
}

#[test]
fn stdin_source_to_stdout_sink() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "weir.toml",
        format!(
            "[sources.in]\ntype = \"stdin\"\n\
             [operators.words]\nmodule = {}\ninputs = [\"in\"]\n\
             [operators.up]\nmodule = {}\ninputs = [\"words\"]\n\
             [sinks.out]\ntype = \"stdout\"\ninputs = [\"up\"]\n",
            toml_path(plugins::SPLIT_WORDS),
            toml_path(plugins::UPPERCASE)
        ),
    );
    let mut child = weir()
        .args(["run", "--config"])
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"hello wasm\r\nworld\nno newline at the end")
        .unwrap();
    drop(stdin);
    let out = wait_with_limit(child, RUN_LIMIT);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "HELLO\nWASM\nWORLD\nNO\nNEWLINE\nAT\nTHE\nEND\n"
    );
}

#[test]
fn sigterm_drains_and_exits_zero_without_losing_a_record() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "weir.toml",
        format!(
            "[sources.gen]\ntype = \"generator\"\nrate = 2000.0\n\
             [operators.up]\nmodule = {}\ninputs = [\"gen\"]\n\
             [sinks.out]\ntype = \"file\"\ninputs = [\"up\"]\npath = \"out.txt\"\n",
            toml_path(plugins::PASSTHROUGH)
        ),
    );
    let child = spawn_run(&path);
    let out_file = sandbox.path("out.txt");
    wait_until(WAIT_LIMIT, "output", || {
        std::fs::read_to_string(&out_file).is_ok_and(|t| t.lines().count() > 500)
    });
    signal(&child, "TERM");
    let out = child.wait_output();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("SIGTERM: stopping sources, draining the pipeline"),
        "{}",
        stderr(&out)
    );
    let text = sandbox.read("out.txt");
    let got: Vec<u64> = text.lines().map(|l| l.parse().unwrap()).collect();
    let want: Vec<u64> = (0..got.len() as u64).collect();
    assert_eq!(
        got, want,
        "the output is the generated sequence, complete up to where it stopped"
    );
}

#[test]
fn a_followed_file_is_read_as_it_grows() {
    let sandbox = Sandbox::new();
    sandbox.write("in.log", "one\n");
    let path = sandbox.write(
        "weir.toml",
        format!(
            "[sources.log]\ntype = \"file\"\npath = \"in.log\"\nfollow = true\n\
             [operators.up]\nmodule = {}\ninputs = [\"log\"]\n\
             [sinks.out]\ntype = \"file\"\ninputs = [\"up\"]\npath = \"out.txt\"\n",
            toml_path(plugins::UPPERCASE)
        ),
    );
    let child = spawn_run(&path);
    let out_file = sandbox.path("out.txt");
    let read = || std::fs::read_to_string(&out_file).unwrap_or_default();
    wait_until(WAIT_LIMIT, "the first line", || read() == "ONE\n");
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(sandbox.path("in.log"))
        .unwrap();
    log.write_all(b"two\nthr").unwrap();
    log.flush().unwrap();
    wait_until(WAIT_LIMIT, "the second line", || read() == "ONE\nTWO\n");
    log.write_all(b"ee\n").unwrap();
    wait_until(WAIT_LIMIT, "the completed third line", || {
        read() == "ONE\nTWO\nTHREE\n"
    });
    signal(&child, "INT");
    let out = child.wait_output();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Resident memory of a process, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn a_slow_operator_slows_its_source_instead_of_growing_memory() {
    let sandbox = Sandbox::new();
    let port = crate::support::free_port();
    // An unthrottled generator makes tens of millions of 1 KiB records a second;
    // the operator takes about a microsecond each. Without backpressure the
    // daemon would queue gigabytes while the operator works through a few
    // million records.
    let path = sandbox.write(
        "weir.toml",
        format!(
            "[daemon]\nadmin_address = \"127.0.0.1:{port}\"\n\
             [sources.gen]\ntype = \"generator\"\nvalue_size = 1024\n\
             [operators.slow]\nmodule = {}\ninputs = [\"gen\"]\nconfig = {{ iterations = 2000 }}\n\
             [sinks.out]\ntype = \"blackhole\"\ninputs = [\"slow\"]\n",
            toml_path(plugins::SPIN)
        ),
    );
    let child = spawn_run(&path);
    crate::support::wait_ready(port);
    let processed = || {
        let scrape = crate::support::http("GET", port, "/metrics", "").1;
        crate::support::metric(
            &scrape,
            r#"weir_records_in_total{instance="0",operator="slow"}"#,
        )
        .unwrap_or(0.0)
    };
    wait_until(WAIT_LIMIT, "the first 100,000 records", || {
        processed() >= 1e5
    });
    let early = rss_bytes(child.id());
    let first = processed();
    wait_until(WAIT_LIMIT, "a million more records", || {
        processed() >= first + 1e6
    });
    let late = rss_bytes(child.id());
    signal(&child, "TERM");
    let out = child.wait_output();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        late < early + 32 * 1024 * 1024,
        "memory grew from {early} to {late} bytes"
    );
    assert!(late < 256 * 1024 * 1024, "resident memory {late} bytes");
}

#[test]
fn a_stop_in_the_middle_of_a_stdin_line_says_so() {
    let sandbox = Sandbox::new();
    let port = crate::support::free_port();
    let path = sandbox.write(
        "weir.toml",
        format!(
            "[daemon]\nadmin_address = \"127.0.0.1:{port}\"\n\
             [sources.in]\ntype = \"stdin\"\n\
             [sinks.out]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"out.txt\"\n"
        ),
    );
    let mut child = crate::support::weir()
        .args(["run", "--config"])
        .arg(&path)
        .stdin(Stdio::piped())
        .stderr(std::fs::File::create(sandbox.path("weir.log")).unwrap())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"one\ntwo\npartial").unwrap();
    stdin.flush().unwrap();
    crate::support::wait_ready(port);
    wait_until(WAIT_LIMIT, "two records in the sink", || {
        let scrape = crate::support::http("GET", port, "/metrics", "").1;
        crate::support::metric(
            &scrape,
            r#"weir_records_in_total{instance="0",operator="out"}"#,
        ) == Some(2.0)
    });
    // Input still open, its last line unfinished: a stop says what it left.
    signal(&child, "TERM");
    let out = wait_with_limit(child, RUN_LIMIT);
    drop(stdin);
    let log = sandbox.read("weir.log");
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("stopped in the middle of a line; its first 7 bytes were not sent"),
        "{log}"
    );
    assert_eq!(sandbox.read("out.txt"), "one\ntwo\n");
}

/// A daemon reading stdin (so it runs until killed), killed when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What `/proc/PID/status` says of the process's transparent huge pages.
fn thp_enabled(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .map(|v| v.trim().to_owned())
}

#[test]
fn the_daemon_uses_no_transparent_huge_pages_unless_asked() {
    if thp_enabled(std::process::id()).is_none() {
        eprintln!("SKIPPED: this kernel does not report THP_enabled in /proc/PID/status");
        return;
    }
    let sandbox = Sandbox::new();
    let config = sandbox.write(
        "weir.toml",
        "[sources.in]\ntype = \"stdin\"\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"in\"]\n",
    );
    let start = |allow: Option<&str>| {
        let mut cmd = weir();
        cmd.args(["run", "--config"])
            .arg(&config)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(allow) = allow {
            cmd.env("MIMALLOC_ALLOW_THP", allow);
        }
        Running(cmd.spawn().expect("start weir"))
    };
    let daemon = start(None);
    wait_until(WAIT_LIMIT, "THP_enabled: 0 for the daemon", || {
        thp_enabled(daemon.0.id()).as_deref() == Some("0")
    });
    drop(daemon);
    let daemon = start(Some("1"));
    // Given time to turn them off, it has not.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(thp_enabled(daemon.0.id()).as_deref(), Some("1"));
}
