//! Checkpoints through the real binary: SIGKILL at random moments, crashes at
//! each point of the checkpoint path, a damaged newest checkpoint and a restore
//! at another parallelism all end with committed output that is exactly what
//! one uninterrupted run gives. Two file sources feed one operator, so a
//! snapshot taken without barrier alignment would count some words twice.

use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use weir_test_artifacts as plugins;

use crate::keyed_state::{exact_counts, text};
use crate::support::{
    Daemon, Sandbox, free_port, http, metric, run, stderr, toml_path, wait_with_limit,
};

/// Small batches make the run long enough (seconds) to be killed mid-way.
const LINES: usize = 100_000;

/// Two halves of the input, two sources, one word count (and, after it, a
/// `sequence` operator whose numbering lives in operator state), both into
/// exactly-once directory sinks.
fn setup(sandbox: &Sandbox, backend: &str, parallelism: u32, extra: &str) -> std::path::PathBuf {
    if !sandbox.path("a.txt").exists() {
        let input = text(LINES, 400);
        let half = input.len() / 2;
        let cut = half + input[half..].find('\n').unwrap_or(0) + 1;
        sandbox.write("a.txt", &input[..cut]);
        sandbox.write("b.txt", &input[cut..]);
    }
    let rocks = if backend == "rocksdb" {
        "cache = \"256KiB\"\n"
    } else {
        ""
    };
    let config = format!(
        "[daemon]\ndata_dir = \"var\"\n\
         [checkpoint]\ninterval = \"150ms\"\n{extra}\
         [state]\nbackend = \"{backend}\"\n{rocks}\
         [sources.a]\ntype = \"file\"\npath = \"a.txt\"\nbatch_size = 8\n\
         [sources.b]\ntype = \"file\"\npath = \"b.txt\"\nbatch_size = 1\n\
         [operators.split]\nmodule = {split}\ninputs = [\"a\", \"b\"]\n\
         [operators.count]\nmodule = {count}\ninputs = [\"split\"]\nparallelism = {parallelism}\n\
         [operators.seq]\nmodule = {seq}\ninputs = [\"count\"]\npartition = \"round_robin\"\n\
         [sinks.counts]\ntype = \"file\"\ndirectory = \"counts\"\ninputs = [\"count\"]\n\
         [sinks.numbered]\ntype = \"file\"\ndirectory = \"numbered\"\ninputs = [\"seq\"]\n",
        split = toml_path(plugins::SPLIT_WORDS),
        count = toml_path(plugins::WORD_COUNT),
        seq = toml_path(plugins::SEQUENCE),
    );
    sandbox.write("wc.toml", config)
}

/// The committed lines of a directory sink, in commit order.
pub(crate) fn committed(dir: &Path) -> Vec<String> {
    let mut parts: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    parts.sort();
    parts
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// What one uninterrupted run commits: for every word with total count c,
/// `w,1` … `w,c` once each; and the numbered copy of those lines, numbered
/// 1..=N without gaps or repeats.
fn assert_exactly_once(sandbox: &Sandbox, context: &str) {
    let input = std::fs::read_to_string(sandbox.path("a.txt")).unwrap()
        + &std::fs::read_to_string(sandbox.path("b.txt")).unwrap();
    let want = exact_counts(&input);
    let mut counts = committed(&sandbox.path("counts"));
    counts.sort();
    assert_eq!(counts.len(), want.len(), "{context}: committed count lines");
    assert!(
        counts == want,
        "{context}: committed counts differ from one clean run"
    );

    let numbered = committed(&sandbox.path("numbered"));
    let mut numbers = Vec::with_capacity(numbered.len());
    let mut payloads = Vec::with_capacity(numbered.len());
    for line in &numbered {
        let (n, rest) = line.split_once(':').unwrap();
        numbers.push(n.parse::<u64>().unwrap());
        payloads.push(rest.to_owned());
    }
    numbers.sort_unstable();
    let expected: Vec<u64> = (1..=want.len() as u64).collect();
    assert!(
        numbers == expected,
        "{context}: operator-state numbering has gaps or repeats"
    );
    payloads.sort();
    assert!(payloads == want, "{context}: numbered copy differs");
}

/// Runs to the end (restoring whatever is there) and checks success.
fn finish(config: &Path, context: &str) -> String {
    let out = run("run", config);
    let err = stderr(&out);
    assert!(out.status.success(), "{context}: final run failed:\n{err}");
    err
}

pub(crate) fn killed_by(status: ExitStatus, signal: i32) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(signal)
}

/// xorshift, so kill times are random-looking yet the same on every run.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Adds as many lines again to both inputs: a run that ended before a kill
/// could land gets more to do next time.
fn grow_input(sandbox: &Sandbox) {
    use std::io::Write as _;
    let more = text(LINES, 400);
    let half = more.len() / 2;
    let cut = half + more[half..].find('\n').unwrap_or(0) + 1;
    for (file, part) in [("a.txt", &more[..cut]), ("b.txt", &more[cut..])] {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(sandbox.path(file))
            .unwrap();
        f.write_all(part.as_bytes()).unwrap();
    }
}

/// Five SIGKILLs, each landing while the pipeline runs and after that run
/// completed a checkpoint of its own (so every restart restores new state),
/// at a random moment after it; then a run to the end.
fn kill_9_at_random_moments(backend: &str) {
    let sandbox = Sandbox::new();
    let config = setup(&sandbox, backend, 2, "");
    let data_dir = sandbox.path("var");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ backend.len() as u64;
    let mut kills = 0;
    let mut attempts = 0;
    while kills < 5 {
        attempts += 1;
        assert!(
            attempts <= 15,
            "{backend}: {attempts} runs, only {kills} kills landed while the pipeline ran"
        );
        let (mut daemon, checkpointed) = Daemon::start_until_checkpoint(
            &sandbox,
            &format!("run-{attempts}"),
            &config,
            &data_dir,
        );
        if checkpointed {
            std::thread::sleep(Duration::from_millis(next(&mut seed) % 400));
        }
        if daemon.exited() {
            // The run finished before the kill: that is no kill.
            let (status, log) = daemon.wait();
            assert!(status.success(), "{backend}: {log}");
            grow_input(&sandbox);
            continue;
        }
        let (status, log) = daemon.kill();
        if !killed_by(status, 9) {
            // It exited on its own between the check and the kill.
            assert!(status.success(), "{backend}: {log}");
            grow_input(&sandbox);
            continue;
        }
        assert!(
            !log.contains("pipeline finished"),
            "{backend}: the kill came after the run finished:\n{log}"
        );
        kills += 1;
    }
    let log = finish(&config, backend);
    assert!(
        log.contains("restoring from checkpoint"),
        "{backend}: never restored:\n{log}"
    );
    assert_exactly_once(&sandbox, &format!("{backend} after {kills} kills"));
    assert!(
        std::fs::read_dir(sandbox.path("counts/.pending"))
            .unwrap()
            .next()
            .is_none(),
        "{backend}: pending files left after the final checkpoint"
    );
}

#[test]
fn kill_9_loses_and_duplicates_nothing_on_heap() {
    kill_9_at_random_moments("heap");
}

#[test]
fn kill_9_loses_and_duplicates_nothing_on_rocksdb() {
    kill_9_at_random_moments("rocksdb");
}

/// Runs with `WEIR_FAILPOINT` set, expecting the abort, then to the end.
fn crash_at(point: &str, backend: &str, extra: &str) {
    let sandbox = Sandbox::new();
    let config = setup(&sandbox, backend, 2, extra);
    let child = crate::support::weir()
        .args(["run", "--config"])
        .arg(&config)
        .env("WEIR_FAILPOINT", point)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_with_limit(child, crate::support::RUN_LIMIT);
    assert!(
        killed_by(out.status, 6),
        "{point}: the failpoint did not fire: {}",
        stderr(&out)
    );
    finish(&config, point);
    assert_exactly_once(&sandbox, &format!("crash at {point} ({backend})"));
}

#[test]
fn a_crash_before_the_metadata_rename_loses_nothing() {
    crash_at("before-metadata:3", "heap", "");
}

#[test]
fn a_crash_after_the_rename_but_before_the_commit_loses_nothing() {
    crash_at("before-commit:3", "rocksdb", "");
}

#[test]
fn a_crash_during_cleanup_loses_nothing() {
    crash_at("during-cleanup:2", "heap", "retain = 1\n");
}

/// Stops a run after a few checkpoints (crashing right after completing the
/// fourth), so tests can damage or rescale what it left.
fn run_until_checkpoint_4(sandbox: &Sandbox, backend: &str) -> std::path::PathBuf {
    run_until_checkpoint_4_with(sandbox, backend, "")
}

fn run_until_checkpoint_4_with(
    sandbox: &Sandbox,
    backend: &str,
    extra: &str,
) -> std::path::PathBuf {
    let config = setup(sandbox, backend, 2, extra);
    let out = crate::support::weir()
        .args(["run", "--config"])
        .arg(&config)
        .env("WEIR_FAILPOINT", "before-commit:4")
        .output()
        .unwrap();
    assert!(killed_by(out.status, 6), "{}", stderr(&out));
    config
}

fn newest_checkpoint(sandbox: &Sandbox) -> std::path::PathBuf {
    let mut dirs: Vec<_> = std::fs::read_dir(sandbox.path("var/checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("chk-"))
        .collect();
    dirs.sort();
    dirs.pop().unwrap()
}

#[test]
fn a_truncated_newest_metadata_falls_back_to_the_previous_checkpoint() {
    let sandbox = Sandbox::new();
    let config = run_until_checkpoint_4(&sandbox, "heap");
    let newest = newest_checkpoint(&sandbox);
    let metadata = newest.join("_metadata");
    let bytes = std::fs::read(&metadata).unwrap();
    std::fs::write(&metadata, &bytes[..bytes.len() / 2]).unwrap();
    let damaged = newest
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace("chk-", "corrupt-");
    let log = finish(&config, "truncated metadata");
    assert!(log.contains("skipping a damaged checkpoint"), "{log}");
    assert_exactly_once(&sandbox, "after a truncated metadata file");
    // Set aside, and its id not used again.
    assert!(sandbox.path("var/checkpoints").join(&damaged).is_dir());
    assert!(
        !newest.exists(),
        "the damaged checkpoint's id was used again"
    );
}

#[test]
fn a_missing_data_file_falls_back_to_the_previous_checkpoint() {
    let sandbox = Sandbox::new();
    let config = run_until_checkpoint_4(&sandbox, "rocksdb");
    let newest = newest_checkpoint(&sandbox);
    let keyed = std::fs::read_dir(&newest)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "keyed"))
        .unwrap();
    std::fs::remove_file(&keyed).unwrap();
    let log = finish(&config, "missing data file");
    assert!(log.contains("skipping a damaged checkpoint"), "{log}");
    assert_exactly_once(&sandbox, "after a missing data file");
}

#[test]
fn no_usable_checkpoint_is_an_error_not_an_empty_start() {
    let sandbox = Sandbox::new();
    let config = run_until_checkpoint_4(&sandbox, "heap");
    for entry in std::fs::read_dir(sandbox.path("var/checkpoints")).unwrap() {
        let metadata = entry.unwrap().path().join("_metadata");
        if metadata.exists() {
            std::fs::write(&metadata, b"{").unwrap();
        }
    }
    let out = run("run", &config);
    let err = stderr(&out);
    assert!(!out.status.success(), "started anyway:\n{err}");
    assert!(err.contains("no usable checkpoint"), "{err}");
    assert!(
        err.contains("_metadata"),
        "the error names the files:\n{err}"
    );
}

/// The keyed-state files `count`'s instances list in checkpoint `dir`:
/// (full file, change files) per instance.
fn keyed_chains(dir: &Path) -> Vec<(String, Vec<String>)> {
    let metadata = crate::support::read_metadata(dir);
    let name = |f: &serde_json::Value| f["file"].as_str().unwrap().to_owned();
    metadata["operators"]["count"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let changes = i
                .get("keyed_changes")
                .and_then(serde_json::Value::as_array)
                .map(|c| c.iter().map(name).collect())
                .unwrap_or_default();
            (name(&i["keyed"]), changes)
        })
        .collect()
}

/// After the first checkpoint, checkpoints write only the keys that changed:
/// a retained one lists change files on top of a full file an earlier
/// checkpoint wrote (hard-linked, so it survives that checkpoint's removal),
/// and restoring from the newest is exact. (The newest itself may hold a
/// full file: a chain grown to three times its full file is folded into one.)
fn incremental_checkpoints_restore_exactly(backend: &str) {
    use std::os::unix::fs::MetadataExt;
    let sandbox = Sandbox::new();
    let config = run_until_checkpoint_4(&sandbox, backend);
    let mut complete: Vec<_> = std::fs::read_dir(sandbox.path("var/checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|d| d.join("_metadata").is_file())
        .collect();
    complete.sort();
    let with_changes = complete.iter().rev().find_map(|dir| {
        let chains = keyed_chains(dir);
        chains
            .iter()
            .any(|(_, changes)| !changes.is_empty())
            .then(|| (dir.clone(), chains))
    });
    let Some((newest, chains)) = with_changes else {
        panic!("{backend}: no checkpoint lists change files: {complete:?}");
    };
    for (full, changes) in &chains {
        for file in std::iter::once(full).chain(changes) {
            assert!(newest.join(file).is_file(), "{backend}: {file} missing");
        }
        if !changes.is_empty() {
            let links = std::fs::metadata(newest.join(full)).unwrap().nlink();
            assert!(links >= 2, "{backend}: {full} is not shared ({links} link)");
        }
    }
    finish(&config, "after incremental checkpoints");
    assert_exactly_once(&sandbox, &format!("incremental checkpoints ({backend})"));
}

/// A word count rewrites its keys every interval, so a RocksDB chain soon
/// adds up to a full rewrite's worth: the writer folds it into a full file
/// (no full capture), and a crash after that restores exactly from it.
#[test]
fn a_compacted_rocksdb_chain_restores_exactly_after_a_crash() {
    let sandbox = Sandbox::new();
    let config = setup(&sandbox, "rocksdb", 2, "");
    let out = crate::support::weir()
        .args(["run", "--config"])
        .arg(&config)
        .env("WEIR_FAILPOINT", "before-commit:8")
        .env("WEIR_LOG", "info,weir::topology::snapshot_writer=debug")
        .output()
        .unwrap();
    let log = stderr(&out);
    assert!(killed_by(out.status, 6), "{log}");
    assert!(
        log.contains("compacted the incremental chain into a full file"),
        "no chain was compacted in 8 checkpoints:\n{log}"
    );
    finish(&config, "after a compacted chain");
    assert_exactly_once(&sandbox, "a compacted RocksDB chain");
}

#[test]
fn incremental_heap_checkpoints_restore_exactly() {
    incremental_checkpoints_restore_exactly("heap");
}

#[test]
fn incremental_rocksdb_checkpoints_restore_exactly() {
    incremental_checkpoints_restore_exactly("rocksdb");
}

#[test]
fn incremental_false_writes_full_checkpoints() {
    let sandbox = Sandbox::new();
    let config = run_until_checkpoint_4_with(&sandbox, "heap", "incremental = false\n");
    let chains = keyed_chains(&newest_checkpoint(&sandbox));
    assert!(
        chains.iter().all(|(_, changes)| changes.is_empty()),
        "{chains:?}"
    );
    finish(&config, "after full checkpoints");
    assert_exactly_once(&sandbox, "full checkpoints");
}

#[test]
fn a_restore_at_another_parallelism_gives_the_same_output() {
    let sandbox = Sandbox::new();
    run_until_checkpoint_4(&sandbox, "rocksdb");
    let config = setup(&sandbox, "rocksdb", 3, "");
    finish(&config, "rescaled to 3");
    assert_exactly_once(&sandbox, "after a restore from parallelism 2 to 3");
}

#[test]
fn a_finished_run_restarts_from_its_final_checkpoint_and_adds_nothing() {
    let sandbox = Sandbox::new();
    let config = setup(&sandbox, "heap", 1, "");
    finish(&config, "first run");
    finish(&config, "second run");
    assert_exactly_once(&sandbox, "after running a finished pipeline again");
}

/// Enough one-record batches that checkpoints come while the run goes on:
/// with checkpoints every 10 ms, a run of even 0.2 s (a fast machine) takes
/// the two after record 2,000 that the transient fault waits for.
const FLAKY_LINES: usize = 200_000;

/// A pipeline whose plugin panics at a record chosen by the test (once, or
/// every time).
fn flaky_pipeline(sandbox: &Sandbox, once: bool, restart: &str) -> std::path::PathBuf {
    let lines: String = (0..FLAKY_LINES).map(|i| format!("line-{i}\n")).collect();
    sandbox.write("lines.txt", lines);
    let config = format!(
        "[daemon]\ndata_dir = \"var\"\n\
         [checkpoint]\ninterval = \"10ms\"\n\
         [restart]\n{restart}\
         [sources.lines]\ntype = \"file\"\npath = \"lines.txt\"\nbatch_size = 1\n\
         [operators.flaky]\nmodule = {trap}\ninputs = [\"lines\"]\n\
         [operators.flaky.config]\npanic_at = 2000\nonce = {once}\n\
         [sinks.out]\ntype = \"file\"\ndirectory = \"out\"\ninputs = [\"flaky\"]\n",
        trap = toml_path(plugins::TRAP),
    );
    sandbox.write("flaky.toml", config)
}

#[test]
fn a_trap_restarts_the_pipeline_from_the_latest_checkpoint() {
    let sandbox = Sandbox::new();
    let config = flaky_pipeline(&sandbox, true, "backoff = \"50ms\"\n");
    let log = finish(&config, "flaky");
    assert!(
        log.contains("restarting from the latest checkpoint"),
        "{log}"
    );
    assert!(log.contains("deliberate panic once"), "{log}");
    let want: Vec<String> = (0..FLAKY_LINES).map(|i| format!("line-{i}")).collect();
    assert!(
        committed(&sandbox.path("out")) == want,
        "the output after the restart is not exactly the input, in order"
    );
}

#[test]
fn too_many_failures_in_the_window_stop_the_daemon_naming_the_operator() {
    let sandbox = Sandbox::new();
    let config = flaky_pipeline(
        &sandbox,
        false,
        "max_failures = 2\nwindow = \"1m\"\nbackoff = \"20ms\"\n",
    );
    let out = run("run", &config);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.matches("restarting from the latest checkpoint").count(),
        2,
        "{err}"
    );
    assert!(err.contains("giving up: 3 failures within 1m"), "{err}");
    assert!(err.contains("operator `flaky`"), "{err}");
}

#[test]
fn a_run_starts_from_a_savepoint_directory_elsewhere() {
    let sandbox = Sandbox::new();
    let config = run_until_checkpoint_4(&sandbox, "heap");
    // A checkpoint directory is self-contained: move it out of data_dir and
    // start a fresh data_dir from it.
    let savepoint = sandbox.path("savepoint");
    std::fs::rename(newest_checkpoint(&sandbox), &savepoint).unwrap();
    std::fs::remove_dir_all(sandbox.path("var")).unwrap();
    let out = crate::support::weir()
        .args(["run", "--config"])
        .arg(&config)
        .arg("--from-savepoint")
        .arg(&savepoint)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("restoring from checkpoint"), "{err}");
    assert_exactly_once(&sandbox, "after starting from a savepoint");

    let out = crate::support::weir()
        .args(["run", "--config"])
        .arg(&config)
        .arg("--from-savepoint")
        .arg(sandbox.path("no-such-savepoint"))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot start from savepoint"), "{err}");
    assert!(err.contains("no-such-savepoint"), "{err}");
}

/// The committed lines of a sink that numbered a generator's records: each is
/// `<n>:<seq>` with n = seq + 1, and the seqs run 0..len without gaps.
pub(crate) fn assert_contiguous(lines: &[String], context: &str) {
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(
            line,
            &format!("{}:{i}", i + 1),
            "{context}: line {i} breaks the sequence"
        );
    }
}

#[test]
fn sigterm_takes_a_final_checkpoint_and_the_next_run_resumes_the_generator() {
    let sandbox = Sandbox::new();
    let port = free_port();
    let config = sandbox.write(
        "gen.toml",
        format!(
            "[daemon]\ndata_dir = \"var\"\nadmin_address = \"127.0.0.1:{port}\"\n\
             [checkpoint]\ninterval = \"1h\"\n\
             [sources.nums]\ntype = \"generator\"\nrate = 20000.0\nbatch_size = 100\n\
             [operators.seq]\nmodule = {seq}\ninputs = [\"nums\"]\n\
             [sinks.out]\ntype = \"file\"\ndirectory = \"out\"\ninputs = [\"seq\"]\n",
            seq = toml_path(plugins::SEQUENCE),
        ),
    );
    let mut total = 0;
    for run in 1..=2 {
        let mut daemon = Daemon::start(&sandbox, &format!("run-{run}"), &config, &[]);
        // SIGTERM only once the daemon handles it and records have flowed.
        let flowing = daemon.wait_for("records reaching `seq`", |_| {
            let (status, body) = http("GET", port, "/metrics", "");
            status == 200
                && metric(
                    &body,
                    r#"weir_records_in_total{instance="0",operator="seq"}"#,
                )
                .is_some_and(|n| n > 0.0)
        });
        assert!(flowing, "run {run} ended by itself:\n{}", daemon.log());
        daemon.signal("TERM");
        let (status, err) = daemon.wait();
        assert!(status.success(), "run {run}: {err}");
        assert!(
            err.contains("last=true"),
            "run {run}: no final checkpoint:\n{err}"
        );
        let lines = committed(&sandbox.path("out"));
        assert!(lines.len() > total, "run {run} committed nothing new");
        // With a 1h interval, only the final checkpoint committed anything.
        assert_contiguous(&lines, &format!("after SIGTERM {run}"));
        total = lines.len();
    }
}

#[test]
fn a_changed_max_parallelism_is_refused_with_the_checkpoint_named() {
    let sandbox = Sandbox::new();
    let config = run_until_checkpoint_4(&sandbox, "heap");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[state]\n", "[state]\nmax_parallelism = 64\n");
    std::fs::write(&config, text).unwrap();
    let out = run("run", &config);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("taken with max_parallelism = 128, the config says 64"),
        "{err}"
    );
    assert!(err.contains("chk-"), "the checkpoint is named:\n{err}");
}

/// A metadata file changed in any way, even with its checksum made to fit,
/// is damage: the restore falls back to the checkpoint before, and the
/// output is exact.
#[test]
fn changed_metadata_falls_back_to_the_previous_checkpoint() {
    for (case, what) in [
        ("digit", "checksum"),
        ("key", "unknown field `keyed_changez`"),
    ] {
        let sandbox = Sandbox::new();
        let config = run_until_checkpoint_4(&sandbox, "heap");
        let newest = newest_checkpoint(&sandbox);
        let path = newest.join("_metadata");
        match case {
            "digit" => {
                // One digit of a source position, in the file as written.
                let text = std::fs::read_to_string(&path).unwrap();
                let at = text.find("\"sources\"").unwrap();
                let digit = at + text[at..].find(|c: char| c.is_ascii_digit()).unwrap();
                let mut bytes = text.into_bytes();
                bytes[digit] = if bytes[digit] == b'9' {
                    b'8'
                } else {
                    bytes[digit] + 1
                };
                std::fs::write(&path, bytes).unwrap();
            }
            _ => crate::support::reseal(&newest, |m| {
                let text = m.to_string().replace("keyed_changes", "keyed_changez");
                *m = serde_json::from_str(&text).unwrap();
            }),
        }
        let log = finish(&config, case);
        assert!(
            log.contains("skipping a damaged checkpoint"),
            "{case}: {log}"
        );
        assert!(log.contains(what), "{case}: {log}");
        assert_exactly_once(&sandbox, &format!("after a changed {case} in _metadata"));
    }
}
