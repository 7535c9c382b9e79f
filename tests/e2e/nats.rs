//! The NATS JetStream source and sink through the real binary against a
//! real nats-server: a word count from a stream to a stream stays
//! exactly-once through SIGKILLs, a crash between a checkpoint and its
//! publishing, and the server being killed and restarted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_test_artifacts as plugins;

use crate::brokers::{
    Broker, assert_word_counts, nats_publish, nats_read, nats_stream, run_until_output,
};
use crate::checkpoints::killed_by;
use crate::keyed_state::{exact_counts, text};
use crate::support::{Daemon, Sandbox, newest_completed_checkpoint, toml_path, wait_until};

/// Stream `LINES` (subject `lines`) → split-words → word-count → subject
/// `counts` (stream `COUNTS`), exactly-once.
fn config(sandbox: &Sandbox, server: &str) -> PathBuf {
    let config = format!(
        "[daemon]\ndata_dir = \"var\"\n\
         [checkpoint]\ninterval = \"150ms\"\n\
         [sources.lines]\ntype = \"nats\"\nbrokers = [\"nats://{server}\"]\nstream = \"LINES\"\nbatch_size = 50\n\
         [operators.split]\nmodule = {split}\ninputs = [\"lines\"]\n\
         [operators.count]\nmodule = {count}\ninputs = [\"split\"]\nparallelism = 2\n\
         [sinks.counts]\ntype = \"nats\"\nbrokers = [\"nats://{server}\"]\nsubject = \"counts\"\n\
         inputs = [\"count\"]\n",
        split = toml_path(plugins::SPLIT_WORDS),
        count = toml_path(plugins::WORD_COUNT),
    );
    sandbox.write("wc.toml", config)
}

fn server_with_input(sandbox: &Sandbox, input: &str) -> Option<Broker> {
    let server = Broker::nats(&sandbox.path("nats"))?;
    nats_stream(&server.address, "LINES", "lines");
    nats_stream(&server.address, "COUNTS", "counts");
    let lines: Vec<&str> = input.lines().collect();
    nats_publish(&server.address, "lines", &lines);
    Some(server)
}

fn run_until_counted(sandbox: &Sandbox, config: &Path, server: &str, want: usize, name: &str) {
    run_until_output(sandbox, config, name, want, || {
        nats_read(server, "COUNTS").len()
    });
}

fn assert_exactly_once(server: &str, input: &str, context: &str) {
    assert_word_counts(nats_read(server, "COUNTS"), input, context);
}

#[test]
fn a_word_count_from_stream_to_stream_is_exactly_once_through_five_sigkills() {
    let sandbox = Sandbox::new();
    let mut input = text(10_000, 300);
    let Some(server) = server_with_input(&sandbox, &input) else {
        return;
    };
    let config = config(&sandbox, &server.address);
    let data_dir = sandbox.path("var");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for kill in 1..=5 {
        let (daemon, _) =
            Daemon::start_until_checkpoint(&sandbox, &format!("run-{kill}"), &config, &data_dir);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(seed % 500));
        let (status, log) = daemon.kill();
        assert!(killed_by(status, 9), "run {kill} ended by itself:\n{log}");
        assert!(
            kill == 1 || log.contains("restoring from checkpoint"),
            "run {kill} did not restore:\n{log}"
        );
        // More input while it is down, so every run has work in flight.
        let more = text(5_000, 300);
        let lines: Vec<&str> = more.lines().collect();
        nats_publish(&server.address, "lines", &lines);
        input.push_str(&more);
    }
    let want = exact_counts(&input).len();
    run_until_counted(&sandbox, &config, &server.address, want, "final");
    assert_exactly_once(&server.address, &input, "after 5 kills");
}

#[test]
fn a_crash_after_the_checkpoint_is_durable_and_before_publishing_loses_nothing() {
    let sandbox = Sandbox::new();
    let input = text(20_000, 200);
    let Some(server) = server_with_input(&sandbox, &input) else {
        return;
    };
    let config = config(&sandbox, &server.address);
    let child = crate::support::weir()
        .args(["run", "--config"])
        .arg(&config)
        .env("WEIR_FAILPOINT", "before-commit:2")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = crate::support::wait_with_limit(child, Duration::from_secs(120));
    assert!(
        killed_by(out.status, 6),
        "the failpoint did not abort:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let staged = std::fs::read_dir(sandbox.path("var/nats-sinks/counts"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".staged")
        })
        .count();
    assert!(
        staged > 0,
        "the crash left no output waiting, so it tests nothing"
    );
    let want = exact_counts(&input).len();
    run_until_counted(&sandbox, &config, &server.address, want, "after the crash");
    assert_exactly_once(&server.address, &input, "before-commit");
}

#[test]
fn the_server_killed_and_restarted_under_a_running_pipeline_loses_and_duplicates_nothing() {
    let sandbox = Sandbox::new();
    let input = text(10_000, 300);
    let Some(server) = server_with_input(&sandbox, &input) else {
        return;
    };
    let port = server.port();
    let address = server.address.clone();
    let config = config(&sandbox, &address);
    let data_dir = sandbox.path("var");
    let mut daemon = Daemon::start(&sandbox, "run", &config, &[]);
    daemon.wait_for("a checkpoint", |_| {
        newest_completed_checkpoint(&data_dir) > 0
    });
    server.kill();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !daemon.exited(),
        "a lost server stalls the pipeline, never ends it:\n{}",
        daemon.log()
    );
    let Some(_server) = Broker::nats_on(&sandbox.path("nats"), port) else {
        return;
    };
    let want = exact_counts(&input).len();
    wait_until(Duration::from_secs(240), "every count published", || {
        assert!(!daemon.exited(), "exited:\n{}", daemon.log());
        nats_read(&address, "COUNTS").len() >= want
    });
    daemon.signal("TERM");
    let (status, log) = daemon.wait();
    assert!(status.success(), "{log}");
    assert_exactly_once(&address, &input, "through a server restart");
}
