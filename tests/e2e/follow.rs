//! A followed file rotated as logrotate rotates it (rename, then a new file
//! at the path) or truncated in place: every line is read once, whether the
//! rotation happens while the daemon runs or while it is stopped between a
//! checkpoint and a restore.

use std::io::Write as _;

use weir_test_artifacts as plugins;

use crate::checkpoints::committed;
use crate::support::{Daemon, Sandbox, signal};

fn lines(from: usize, to: usize) -> String {
    (from..to).map(|i| format!("line-{i}\n")).collect()
}

fn append(path: &std::path::Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Waits until the sink has committed `n` lines, then checks they are the
/// upper-cased `line-0` .. `line-{n-1}`, once each, in order.
fn wait_for_lines(daemon: &mut Daemon, sandbox: &Sandbox, n: usize) {
    let out = sandbox.path("out");
    let done = daemon.wait_for(&format!("{n} committed lines"), |_| {
        out.is_dir() && committed(&out).len() >= n
    });
    assert!(done, "the daemon ended early:\n{}", daemon.log());
    let got = committed(&out);
    let want: Vec<String> = (0..n).map(|i| format!("LINE-{i}")).collect();
    assert!(
        got == want,
        "got {} lines, not line-0..{n} once each in order: {:?}",
        got.len(),
        &got[got.len().saturating_sub(5)..]
    );
}

#[test]
fn a_rotated_followed_file_is_finished_then_the_new_one_read() {
    let sandbox = Sandbox::new();
    let log = sandbox.path("app.log");
    append(&log, &lines(0, 100));
    let config = sandbox.write(
        "weir.toml",
        format!(
            "[daemon]\ndata_dir = \"var\"\n[checkpoint]\ninterval = \"100ms\"\n\
             [sources.log]\ntype = \"file\"\npath = \"app.log\"\nfollow = true\nbatch_size = 10\n\
             [operators.up]\nmodule = {}\ninputs = [\"log\"]\n\
             [sinks.out]\ntype = \"file\"\ndirectory = \"out\"\ninputs = [\"up\"]\n",
            crate::support::toml_path(plugins::UPPERCASE)
        ),
    );
    let mut daemon = Daemon::start(&sandbox, "run-1", &config, &[]);
    wait_for_lines(&mut daemon, &sandbox, 100);

    // While it runs: the last lines of the old file, including one without
    // its newline yet, a rename, and a new file.
    append(&log, &lines(100, 149));
    append(&log, "line-149");
    std::fs::rename(&log, sandbox.path("app.log.1")).unwrap();
    append(&log, &lines(150, 200));
    wait_for_lines(&mut daemon, &sandbox, 200);
    // No re-reading: a while later the count is the same.
    append(&log, &lines(200, 210));
    wait_for_lines(&mut daemon, &sandbox, 210);
    signal(&daemon, "TERM");
    let (status, out) = daemon.wait();
    assert!(status.success(), "{out}");
    assert!(out.contains("followed file was rotated"), "{out}");
    assert!(
        !out.contains("truncated"),
        "a rotation is not a truncation:\n{out}"
    );

    // While it is stopped: more lines, a rotation, a new file. The restore
    // finds the checkpointed file under its new name and finishes it first.
    append(&log, &lines(210, 230));
    std::fs::rename(sandbox.path("app.log.1"), sandbox.path("app.log.2")).unwrap();
    std::fs::rename(&log, sandbox.path("app.log.1")).unwrap();
    append(&log, &lines(230, 250));
    let mut daemon = Daemon::start(&sandbox, "run-2", &config, &[]);
    wait_for_lines(&mut daemon, &sandbox, 250);
    let log_text = daemon.log();
    assert!(
        log_text.contains("the checkpointed file was rotated"),
        "{log_text}"
    );

    // A truncation in place starts the file again.
    std::fs::write(&log, lines(250, 260)).unwrap();
    wait_for_lines(&mut daemon, &sandbox, 260);
    signal(&daemon, "TERM");
    let (status, out) = daemon.wait();
    assert!(status.success(), "{out}");
}
