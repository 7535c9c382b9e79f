//! Running under systemd: the unit file passes systemd's own checks, and the
//! logs leave time stamps to the journal when stderr is the journal. (The
//! `sd_notify` conversation is in `reload.rs`.)

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::Command;

use weir_test_artifacts as plugins;

use crate::support::{RUN_LIMIT, Sandbox, stderr, toml_path, wait_with_limit, weir};

/// `config/weir.service` with its binary path pointed at the one under test
/// (`systemd-analyze verify` checks that the commands exist).
fn unit_under_test(sandbox: &Sandbox) -> std::path::PathBuf {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/weir.service");
    let text = std::fs::read_to_string(unit).unwrap();
    assert!(text.contains("ExecStart=/usr/local/bin/weir run --config /etc/weir/weir.toml"));
    assert!(text.contains("ExecReload=/usr/local/bin/weir reload --config /etc/weir/weir.toml"));
    sandbox.write(
        "weir.service",
        text.replace("/usr/local/bin/weir", env!("CARGO_BIN_EXE_weir")),
    )
}

#[test]
fn the_unit_passes_systemd_analyze_verify_and_rates_ok_for_security() {
    let sandbox = Sandbox::new();
    let unit = unit_under_test(&sandbox);
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze (Debian package systemd) is installed; .ci/run installs it");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.trim().is_empty(), "warnings: {said}");

    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&unit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let overall = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no rating in:\n{report}"));
    let score: f64 = overall
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no score in {overall}"));
    assert!(
        overall.contains(" OK") || overall.contains(" SAFE"),
        "{overall}"
    );
    assert!(score < 2.0, "{overall}");
}

fn log_lines_with(journal: bool) -> String {
    let sandbox = Sandbox::new();
    sandbox.write("in.txt", "a\nb\n");
    let config = sandbox.write(
        "weir.toml",
        format!(
            "[sources.in]\ntype = \"file\"\npath = \"in.txt\"\n\
             [operators.up]\nmodule = {}\ninputs = [\"in\"]\n\
             [sinks.out]\ntype = \"blackhole\"\ninputs = [\"up\"]\n",
            toml_path(plugins::UPPERCASE)
        ),
    );
    let log = sandbox.path("stderr.log");
    let file = std::fs::File::create(&log).unwrap();
    let meta = file.metadata().unwrap();
    let mut cmd = weir();
    cmd.args(["run", "--config"])
        .arg(&config)
        .stderr(file)
        .env_remove("JOURNAL_STREAM");
    if journal {
        cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
    }
    let out = wait_with_limit(cmd.spawn().unwrap(), RUN_LIMIT);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::read_to_string(log).unwrap()
}

#[test]
fn logs_to_the_journal_carry_no_time_stamp_of_their_own() {
    let journal = log_lines_with(true);
    let first = journal.lines().next().unwrap_or_default();
    assert!(first.trim_start().starts_with("INFO"), "{journal}");
    assert!(
        !journal.contains("\x1b["),
        "no colours in the journal: {journal}"
    );

    let terminal = log_lines_with(false);
    let first = terminal.lines().next().unwrap_or_default();
    assert!(first.starts_with("20"), "a time stamp first: {terminal}");
}
