//! Plugins that trap, fail, loop forever or eat memory stop the pipeline with an
//! error naming the operator and the record, and the process exits 1 on its own
//! (no panic, no abort, no hang).

use std::time::{Duration, Instant};

use weir_test_artifacts as plugins;

use crate::support::{Sandbox, run, stderr, toml_path};

/// Runs generator (100 records, batches of 10) -> `operator` -> file sink and
/// returns stderr after checking that weir failed cleanly with exit code 1.
fn run_failing(operator: &str) -> String {
    let sandbox = Sandbox::new();
    let config = format!(
        "[sources.gen]\ntype = \"generator\"\ncount = 100\nbatch_size = 10\n\
         [operators.bad]\n{operator}\ninputs = [\"gen\"]\n\
         [sinks.out]\ntype = \"file\"\ninputs = [\"bad\"]\npath = \"out.txt\"\n"
    );
    let path = sandbox.write("weir.toml", config);
    let out = run("run", &path);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "weir must exit 1, not crash:\n{err}"
    );
    assert!(
        !err.contains("panicked at") || err.contains("operator panicked"),
        "the daemon itself panicked:\n{err}"
    );
    err
}

#[test]
fn a_panicking_plugin_is_named_with_its_record_and_message() {
    let err = run_failing(&format!(
        "module = {}\nconfig = {{ panic_at = 25 }}",
        toml_path(plugins::TRAP)
    ));
    assert!(
        err.contains("operator `bad` (instance 0) failed while processing input records 20..30"),
        "{err}"
    );
    assert!(err.contains("trapped"), "{err}");
    assert!(
        err.contains("while processing record 5 of the batch"),
        "{err}"
    );
    assert!(err.contains("deliberate panic at input record 25"), "{err}");
}

#[test]
fn a_plugin_error_names_the_exact_record() {
    let err = run_failing(&format!(
        "module = {}\nconfig = {{ fail_at = 42 }}",
        toml_path(plugins::TRAP)
    ));
    assert!(
        err.contains("operator `bad` (instance 0) failed at input record 42 (record 2 of a 10-record batch): deliberate error at input record 42"),
        "{err}"
    );
}

#[test]
fn after_a_restart_an_error_names_the_record_counted_from_the_first_start() {
    // A first run takes some records and stops with a final checkpoint; the
    // second fails on the first record it sees. The position is the
    // instance's input record since it first started, not since the restart.
    let sandbox = Sandbox::new();
    let config = |fail: &str| {
        format!(
            "[daemon]\ndata_dir = \"var\"\n[checkpoint]\ninterval = \"100ms\"\n\
             [sources.gen]\ntype = \"generator\"\nrate = 2000.0\nbatch_size = 10\n\
             [operators.bad]\nmodule = {}\ninputs = [\"gen\"]\nconfig = {{ {fail} }}\n\
             [sinks.out]\ntype = \"file\"\ninputs = [\"bad\"]\ndirectory = \"out\"\n",
            toml_path(plugins::TRAP)
        )
    };
    let path = sandbox.write("weir.toml", config(""));
    let child = crate::support::spawn_run(&path);
    crate::support::wait_until(crate::support::WAIT_LIMIT, "a checkpoint", || {
        crate::support::newest_completed_checkpoint(&sandbox.path("var")) >= 3
    });
    crate::support::signal(&child, "TERM");
    let out = child.wait_output();
    assert!(out.status.success(), "{}", stderr(&out));
    let metadata = crate::support::newest_metadata(&sandbox.path("var"));
    let taken = metadata["sources"]["gen"][0].as_u64().unwrap();
    assert!(taken > 0);
    assert_eq!(
        metadata["operators"]["bad"]["instances"][0]["records_in"],
        taken
    );

    sandbox.write("weir.toml", config("fail_at = 0"));
    let out = run("run", &path);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "operator `bad` (instance 0) failed at input record {taken} (record 0 of a"
        )),
        "{err}"
    );
}

#[test]
fn records_emitted_from_init_are_refused_not_dropped() {
    let err = run_failing(&format!("module = {}", toml_path(plugins::EMIT_IN_INIT)));
    assert!(
        err.contains("`init` emitted records; emit from `process` only"),
        "{err}"
    );
    assert!(err.contains("operator `bad`"), "{err}");
}

#[test]
fn an_endless_loop_is_stopped_by_the_deadline() {
    let start = Instant::now();
    let err = run_failing(&format!(
        "module = {}\ncall_timeout = \"200ms\"",
        toml_path(plugins::SPIN)
    ));
    assert!(
        err.contains("operator `bad` (instance 0) failed while processing input records 0..10"),
        "{err}"
    );
    assert!(err.contains("exceeded its call deadline of 200ms"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(90),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn growing_memory_past_the_limit_is_stopped() {
    let err = run_failing(&format!(
        "module = {}\nmemory_limit = \"8MiB\"",
        toml_path(plugins::MEMORY_HOG)
    ));
    assert!(err.contains("operator `bad` (instance 0)"), "{err}");
    assert!(
        err.contains("exceeded its memory limit of 8.0 MiB"),
        "{err}"
    );
}

#[test]
fn a_failing_init_names_the_operator() {
    let err = run_failing(&format!(
        "module = {}\nconfig = {{ contain = \"x\" }}",
        toml_path(plugins::FILTER)
    ));
    assert!(
        err.contains(
            "operator `bad` (instance 0) failed to start: invalid config: unknown field `contain`"
        ),
        "{err}"
    );
}

#[test]
fn an_init_that_never_returns_is_stopped_by_the_deadline() {
    let start = Instant::now();
    let err = run_failing(&format!(
        "module = {}\ncall_timeout = \"200ms\"\nconfig = {{ spin_in_init = 1 }}",
        toml_path(plugins::SPIN)
    ));
    assert!(
        err.contains(
            "operator `bad` (instance 0) failed to start: exceeded its call deadline of 200ms"
        ),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(90),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn output_of_one_call_beyond_the_memory_limit_is_refused() {
    let err = run_failing(&format!(
        "module = {}\nmemory_limit = \"64MiB\"\nconfig = {{ emit = true }}",
        toml_path(plugins::MEMORY_HOG)
    ));
    assert!(err.contains("operator `bad` (instance 0)"), "{err}");
    assert!(
        err.contains("more than 64MiB in one call (the operator's memory_limit)"),
        "{err}"
    );
}

#[test]
fn a_plugin_that_floods_the_log_is_cut_off_and_counted() {
    let sandbox = Sandbox::new();
    let config = sandbox.write(
        "weir.toml",
        format!(
            "[sources.gen]\ntype = \"generator\"\ncount = 10\n\
             [operators.loud]\nmodule = {}\ninputs = [\"gen\"]\nconfig = {{ log_lines = 100000 }}\n\
             [sinks.out]\ntype = \"blackhole\"\ninputs = [\"loud\"]\n",
            toml_path(plugins::TRAP)
        ),
    );
    let out = run("run", &config);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let lines = err.matches("flood line").count();
    assert!(
        (1000..2000).contains(&lines),
        "{lines} of 100000 plugin lines reached the log"
    );
    // Reported (more than once, as the plugin goes on) and counted exactly.
    let reports: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("lines were dropped"))
        .collect();
    assert!(!reports.is_empty(), "the drop is not reported");
    assert!(
        reports.iter().all(|r| r.contains("operator=\"loud\"")),
        "{reports:?}"
    );
    let dropped: usize = reports
        .iter()
        .filter_map(|r| {
            r.split("dropped=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    let said = reports.join("\n");
    assert_eq!(lines + dropped, 100_000, "{said}");
}
