//! `weir bench`, as a reader of the README runs it, at a size that takes
//! seconds: the checkpoint suite on both backends prints a row of figures
//! each, having checkpointed (a full file, then change files), restored and
//! counted every record; the run-path suite through `weir run`, and the
//! perf map a profile needs.

use std::path::Path;
use std::process::Stdio;

use crate::support::{RUN_LIMIT, wait_with_limit, weir};

/// The directory the test plugins are built into.
fn plugins() -> &'static Path {
    Path::new(weir_test_artifacts::DEDUPE)
        .parent()
        .expect("plugin directory")
}

/// Runs `weir bench --plugins <plugins> <args>` to success; its stdout.
fn bench(args: &[&str]) -> String {
    let child = weir()
        .args(["bench", "--plugins"])
        .arg(plugins())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start weir bench");
    let out = wait_with_limit(child, RUN_LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The columns of the table row that starts with `backend`.
fn row<'a>(stdout: &'a str, backend: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(backend))
        .unwrap_or_else(|| panic!("no {backend} row in:\n{stdout}"))
        .split_whitespace()
        .collect()
}

#[test]
fn checkpoint_benchmark_prints_a_row_per_backend() {
    let plugins = plugins();
    let stdout = bench(&[
        "--suite",
        "checkpoint",
        "--backends",
        "heap,rocksdb",
        "--keys",
        "2000",
        "--state-value-size",
        "256",
        "--state-records",
        "200000",
        "--checkpoint-interval",
        "20ms",
        "--repeats",
        "1",
    ]);
    for backend in ["heap", "rocksdb"] {
        let row = row(&stdout, backend);
        // backend, rec/s none, rec/s ckpt, cost, checkpoints completed, ...
        let rate = |i: usize| row[i].parse::<f64>().unwrap();
        assert!(rate(1) > 0.0 && rate(2) > 0.0, "{backend}: {row:?}");
        // Periodic checkpoints, so change files on a chain, not just the final one.
        let completed: u64 = row[4].parse().unwrap();
        assert!(completed >= 3, "{backend}: too few checkpoints: {row:?}");
    }
    // A backend the daemon does not have is refused by name.
    let refused = weir()
        .args(["bench", "--plugins"])
        .arg(plugins)
        .args(["--suite", "checkpoint", "--backends", "heep"])
        .output()
        .expect("run weir bench");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("invalid value 'heep' for '--backends"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn reload_benchmark_prints_the_pause_of_a_swap_and_a_rescale() {
    let stdout = bench(&[
        "--suite",
        "reload",
        "--backends",
        "heap,rocksdb",
        "--reload-keys",
        "20000",
        "--repeats",
        "1",
    ]);
    for backend in ["heap", "rocksdb"] {
        for keys in ["10000", "20000"] {
            let row = stdout
                .lines()
                .find(|l| l.starts_with(&format!("| {backend} | {keys} |")))
                .unwrap_or_else(|| panic!("no {backend}/{keys} row in:\n{stdout}"));
            let pauses: Vec<f64> = row
                .split('|')
                .filter_map(|cell| cell.trim().strip_suffix(" ms"))
                .map(|ms| ms.parse().unwrap())
                .collect();
            assert_eq!(pauses.len(), 4, "{row}");
            assert!(pauses.iter().all(|p| *p > 0.0), "{row}");
        }
    }
}

#[test]
fn run_path_benchmark_runs_weir_run_with_chaining_on_and_off() {
    let stdout = bench(&[
        "--suite",
        "run-path",
        "--backends",
        "heap,rocksdb",
        "--lines",
        "20000",
        "--repeats",
        "1",
        "--pin",
    ]);
    assert!(stdout.contains("20000 lines x 8 words"), "{stdout}");
    assert!(stdout.contains("pinned to CPU 0"), "{stdout}");
    for backend in ["heap", "rocksdb"] {
        for chaining in ["on", "off"] {
            let row: Vec<&str> = stdout
                .lines()
                .map(str::split_whitespace)
                .map(Iterator::collect::<Vec<_>>)
                .find(|cols| cols.first() == Some(&backend) && cols.get(1) == Some(&chaining))
                .unwrap_or_else(|| panic!("no {backend} {chaining} row:\n{stdout}"));
            // words/s, CPU s per million words, peak RSS in MB.
            let figures: Vec<f64> = row[2..5].iter().map(|f| f.parse().unwrap()).collect();
            assert!(figures.iter().all(|f| *f > 0.0), "{row:?}");
        }
    }
}

#[test]
fn weir_profile_perfmap_lets_perf_name_plugin_functions() {
    let sandbox = crate::support::Sandbox::new();
    let config = sandbox.write(
        "weir.toml",
        format!(
            "[sources.gen]\ntype = \"generator\"\ncount = 100\n\
             [operators.up]\nmodule = {}\ninputs = [\"gen\"]\n\
             [sinks.out]\ntype = \"blackhole\"\ninputs = [\"up\"]\n",
            crate::support::toml_path(weir_test_artifacts::UPPERCASE)
        ),
    );
    let child = weir()
        .env("WEIR_PROFILE", "perfmap")
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start weir run");
    let map = std::path::PathBuf::from(format!("/tmp/perf-{}.map", child.id()));
    let out = wait_with_limit(child, RUN_LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&map).unwrap_or_default();
    let _ = std::fs::remove_file(&map);
    assert!(
        text.lines().any(|l| l.contains("wasm[")),
        "no plugin function in {}:\n{}",
        map.display(),
        &text[..text.len().min(500)]
    );
}

#[test]
fn windows_benchmark_prints_a_row_per_backend_beside_native() {
    let stdout = bench(&[
        "--suite",
        "windows",
        "--backends",
        "heap,rocksdb",
        "--keys",
        "5000",
        "--window-records",
        "200000",
        "--window-size",
        "1s",
        "--checkpoint-interval",
        "20ms",
        // Smaller than the 5,000 keys' panes and timers: RocksDB serves
        // what the write-back cache evicts.
        "--rocksdb-cache",
        "512KiB",
    ]);
    assert!(stdout.contains("windows fire"), "{stdout}");
    assert!(
        stdout.contains("rocksdb write-back cache 512.0 KiB"),
        "{stdout}"
    );
    for backend in ["heap", "rocksdb"] {
        let row = row(&stdout, backend);
        // backend, weir rec/s, native rec/s, weir fire/s, native fire/s, ratio, ckpt rec/s, pause, ckpts
        let number = |i: usize| row[i].parse::<f64>().unwrap();
        for i in [1, 2, 3, 4, 6] {
            assert!(number(i) > 0.0, "{backend}: {row:?}");
        }
        assert!(
            number(8) >= 1.0,
            "{backend}: no checkpoint completed: {row:?}"
        );
    }
}
