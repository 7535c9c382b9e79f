//! `on_error = "dead_letter"`: a plugin that rejects every multiple of 100;
//! the pipeline finishes, the dead letters hold exactly those records with
//! their errors, the state keeps no trace of them, and a SIGKILL repeats and
//! loses none.

use std::collections::BTreeMap;
use std::time::Duration;

use weir_test_artifacts as plugins;

use crate::checkpoints::{committed, killed_by};
use crate::support::{Daemon, Sandbox, run, stderr, toml_path};
use crate::validate::expect_config_errors;

/// `k<i> <n>` lines for each n in `numbers`, over 7 keys.
fn input(numbers: std::ops::RangeInclusive<u64>) -> String {
    numbers.map(|n| format!("k{} {n}\n", n % 7)).collect()
}

/// Per key, the running sums of its numbers but the multiples of 100.
fn expected_sums(count: u64) -> Vec<String> {
    let mut sums: BTreeMap<String, u64> = BTreeMap::new();
    let mut out = Vec::new();
    for n in (1..=count).filter(|n| !n.is_multiple_of(100)) {
        let key = format!("k{}", n % 7);
        let sum = sums.entry(key.clone()).or_default();
        *sum += n;
        out.push(format!("{key},{sum}"));
    }
    out.sort();
    out
}

fn config(sandbox: &Sandbox, errors_sink: bool) -> std::path::PathBuf {
    let errors = if errors_sink {
        "[sinks.errors]\ntype = \"file\"\ndirectory = \"errors\"\ninputs = [\"picky.errors\"]\n"
    } else {
        ""
    };
    sandbox.write(
        "weir.toml",
        format!(
            "[daemon]\ndata_dir = \"var\"\n\
             [checkpoint]\ninterval = \"100ms\"\n\
             [sources.numbers]\ntype = \"file\"\npath = \"numbers.txt\"\nbatch_size = 16\n\
             [operators.key]\nmodule = {key_by}\ninputs = [\"numbers\"]\n\
             [operators.picky]\nmodule = {picky}\ninputs = [\"key\"]\nparallelism = 2\n\
             on_error = \"dead_letter\"\n\
             [sinks.sums]\ntype = \"file\"\ndirectory = \"sums\"\ninputs = [\"picky\"]\n{errors}",
            key_by = toml_path(plugins::KEY_BY),
            picky = toml_path(plugins::PICKY),
        ),
    )
}

/// The dead letters, checked one by one: exactly the multiples of 100, once
/// each, with the operator, the error and the record.
fn assert_dead_letters(lines: &[String], count: u64, context: &str) {
    let mut numbers: Vec<u64> = lines
        .iter()
        .map(|line| {
            let letter: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(letter["operator"], "picky", "{context}: {line}");
            let n: u64 = letter["value"].as_str().unwrap().parse().unwrap();
            assert_eq!(letter["key"], format!("k{}", n % 7), "{context}: {line}");
            assert_eq!(
                letter["error"],
                format!("rejected {n}: a multiple of 100"),
                "{context}: {line}"
            );
            assert!(letter["position"].is_u64(), "{context}: {line}");
            n
        })
        .collect();
    numbers.sort_unstable();
    let want: Vec<u64> = (1..=count).filter(|n| n.is_multiple_of(100)).collect();
    assert_eq!(numbers, want, "{context}: the dead letters");
}

fn assert_sums(sandbox: &Sandbox, count: u64, context: &str) {
    let mut sums = committed(&sandbox.path("sums"));
    sums.sort();
    assert!(
        sums == expected_sums(count),
        "{context}: the sums differ (a rejected record changed the state, or output repeats)"
    );
}

#[test]
fn rejected_records_go_to_the_errors_output_and_the_rest_goes_on() {
    let sandbox = Sandbox::new();
    sandbox.write("numbers.txt", input(1..=5_000));
    let config = config(&sandbox, true);
    let out = run("run", &config);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_dead_letters(&committed(&sandbox.path("errors")), 5_000, "errors output");
    assert_sums(&sandbox, 5_000, "errors output");
}

#[test]
fn with_no_reader_dead_letters_go_to_a_directory_under_data_dir() {
    let sandbox = Sandbox::new();
    sandbox.write("numbers.txt", input(1..=1_000));
    let config = config(&sandbox, false);
    let out = run("run", &config);
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = sandbox.path("var/dead_letter/picky");
    assert_dead_letters(&committed(&dir), 1_000, "the default dead-letter sink");
    assert_sums(&sandbox, 1_000, "the default dead-letter sink");
}

#[test]
fn dead_letters_are_exactly_once_across_a_kill() {
    let sandbox = Sandbox::new();
    let mut count = 200_000;
    sandbox.write("numbers.txt", input(1..=count));
    let config = config(&sandbox, true);
    let data_dir = sandbox.path("var");
    // On a fast machine a run can finish between its checkpoint and the kill:
    // then it is run again over more input, as the kill tests of
    // `checkpoints` do, until a kill lands while it runs.
    let mut killed = false;
    for attempt in 1..=5 {
        let (mut daemon, checkpointed) =
            Daemon::start_until_checkpoint(&sandbox, &format!("run-{attempt}"), &config, &data_dir);
        assert!(checkpointed, "run {attempt}: no checkpoint");
        std::thread::sleep(Duration::from_millis(50));
        let (status, log) = if daemon.exited() {
            daemon.wait()
        } else {
            daemon.kill()
        };
        if killed_by(status, 9) {
            assert!(
                !log.contains("pipeline finished"),
                "the kill came after the run finished:\n{log}"
            );
            killed = true;
            break;
        }
        assert!(status.success(), "run {attempt}: {log}");
        let more = count + 200_000;
        append(&sandbox, &input(count + 1..=more));
        count = more;
    }
    assert!(killed, "no kill landed while the pipeline ran in 5 runs");
    let out = run("run", &config);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("restoring from checkpoint"), "{err}");
    assert_dead_letters(&committed(&sandbox.path("errors")), count, "after a kill");
    assert_sums(&sandbox, count, "after a kill");
}

fn append(sandbox: &Sandbox, lines: &str) {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(sandbox.path("numbers.txt"))
        .expect("open the input");
    file.write_all(lines.as_bytes())
        .expect("append to the input");
}

#[test]
fn reading_dead_letters_needs_on_error_dead_letter() {
    let sandbox = Sandbox::new();
    sandbox.write("in.txt", "1\n");
    expect_config_errors(
        &sandbox,
        &format!(
            "[sources.in]\ntype = \"file\"\npath = \"in.txt\"\n\
             [operators.pass]\nmodule = {pass}\ninputs = [\"in\"]\n\
             [sinks.errors]\ntype = \"blackhole\"\ninputs = [\"pass.errors\"]\n\
             [sinks.late]\ntype = \"blackhole\"\ninputs = [\"pass.late\", \"in.x\"]\n",
            pass = toml_path(plugins::PASSTHROUGH),
        ),
        &[
            "weir.toml:9:11: sinks.errors: input `pass.errors`: operator `pass` has no dead \
             letters to read: give it `on_error = \"dead_letter\"`",
            "weir.toml:12:11: sinks.late: input `pass.late`: operator `pass` declares no side \
             outputs (its module's `describe`); read its main output as `pass`",
            "weir.toml:12:24: sinks.late: input `in.x`: sources.in has one output; read it as `in`",
        ],
    );
}
