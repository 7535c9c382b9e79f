//! Committed output is never removed, replaced or silently repeated: no
//! checkpoint left, a savepoint planted among the checkpoints, a restart from
//! a savepoint, a disk that fills up.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use weir_test_artifacts as plugins;

use crate::checkpoints::{assert_contiguous, committed};
use crate::support::{
    Daemon, Sandbox, WAIT_LIMIT, free_port, http, newest_completed_checkpoint, run, stderr,
    toml_path, wait_until, weir,
};

/// A generator numbered by `sequence` into an exactly-once directory sink.
/// (`count` absent: endless.)
fn numbered(sandbox: &Sandbox, count: Option<u64>, rate: f64, extra: &str) -> std::path::PathBuf {
    let count = count.map_or(String::new(), |c| format!("count = {c}\n"));
    sandbox.write(
        "weir.toml",
        format!(
            "[daemon]\ndata_dir = \"var\"\n{extra}\
             [checkpoint]\ninterval = \"100ms\"\n\
             [sources.nums]\ntype = \"generator\"\n{count}rate = {rate:?}\nbatch_size = 100\n\
             [operators.seq]\nmodule = {}\ninputs = [\"nums\"]\n\
             [sinks.out]\ntype = \"file\"\ndirectory = \"out\"\ninputs = [\"seq\"]\n",
            toml_path(plugins::SEQUENCE)
        ),
    )
}

/// The committed parts of a directory sink: name -> contents.
fn parts(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("part-"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Every part of `before` is in `after`, unchanged.
fn assert_kept(before: &BTreeMap<String, Vec<u8>>, after: &BTreeMap<String, Vec<u8>>) {
    for (name, bytes) in before {
        assert_eq!(
            after.get(name),
            Some(bytes),
            "{name} was replaced or removed"
        );
    }
}

#[test]
fn committed_output_without_a_checkpoint_is_not_written_again_unless_asked() {
    let sandbox = Sandbox::new();
    let config = numbered(&sandbox, Some(5000), 50_000.0, "");
    let out = run("run", &config);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = parts(&sandbox.path("out"));
    assert!(!before.is_empty());
    std::fs::remove_dir_all(sandbox.path("var/checkpoints")).unwrap();

    let out = run("run", &config);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("sink `out`"), "{err}");
    assert!(
        err.contains("holds output committed by an earlier run"),
        "{err}"
    );
    assert!(err.contains("--start-over"), "the option is named:\n{err}");
    assert_eq!(parts(&sandbox.path("out")), before, "the output changed");

    let out = weir()
        .args(["run", "--start-over", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let after = parts(&sandbox.path("out"));
    assert_kept(&before, &after);
    let newest_before = before.keys().max().unwrap();
    let new: Vec<&String> = after.keys().filter(|n| !before.contains_key(*n)).collect();
    assert!(!new.is_empty());
    assert!(
        new.iter().all(|n| *n > newest_before),
        "new parts sort after the old: {new:?}"
    );
    assert_eq!(committed(&sandbox.path("out")).len(), 10_000);
}

#[test]
fn a_savepoint_planted_among_the_checkpoints_is_not_restored() {
    let sandbox = Sandbox::new();
    let config = numbered(&sandbox, Some(20_000), 20_000.0, "");
    let out = weir()
        .args(["run", "--config"])
        .arg(&config)
        .env("WEIR_FAILPOINT", "before-commit:4")
        .output()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(6),
        "{}",
        stderr(&out)
    );
    // What a savepoint request once wrote into the checkpoint directory: the
    // newest checkpoint's files, marked as a savepoint, under the largest id.
    let checkpoints = sandbox.path("var/checkpoints");
    let newest = newest_completed_checkpoint(&sandbox.path("var"));
    let from = checkpoints.join(format!("chk-{newest:010}"));
    let planted = checkpoints.join(format!("chk-{}", u64::MAX));
    std::fs::create_dir(&planted).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), planted.join(entry.file_name())).unwrap();
    }
    crate::support::reseal(&planted, |m| m["kind"] = "savepoint".into());

    let out = run("run", &config);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("is a savepoint, not a checkpoint the daemon took"),
        "{err}"
    );
    assert!(
        err.contains(&format!("restoring from checkpoint checkpoint={newest} ")),
        "{err}"
    );
    let names = parts(&sandbox.path("out"));
    assert!(
        !names.keys().any(|n| n.starts_with("part-0000000000")),
        "an id wrapped to 0: {:?}",
        names.keys()
    );
    let lines = committed(&sandbox.path("out"));
    assert_contiguous(&lines, "after the planted savepoint");
    assert_eq!(lines.len(), 20_000);
}

#[test]
fn starting_from_a_savepoint_keeps_committed_output_and_happens_once() {
    let sandbox = Sandbox::new();
    let port = free_port();
    let config = numbered(
        &sandbox,
        None,
        20_000.0,
        &format!("admin_address = \"127.0.0.1:{port}\"\n"),
    );
    let first = Daemon::start(&sandbox, "first", &config, &[]);
    crate::support::wait_ready(port);
    wait_until(WAIT_LIMIT, "a first checkpoint", || {
        newest_completed_checkpoint(&sandbox.path("var")) >= 2
    });
    let (status, body) = http("POST", port, "/savepoints", "");
    assert_eq!(status, 200, "{body}");
    let taken: serde_json::Value = serde_json::from_str(&body).unwrap();
    let savepoint = std::path::PathBuf::from(taken["directory"].as_str().unwrap());
    let at = taken["id"].as_u64().unwrap();
    wait_until(WAIT_LIMIT, "three checkpoints after the savepoint", || {
        newest_completed_checkpoint(&sandbox.path("var")) >= at + 3
    });
    crate::support::signal(&first, "TERM");
    let (status, log) = first.wait();
    assert!(status.success(), "{log}");
    let before = parts(&sandbox.path("out"));
    let old_lines = committed(&sandbox.path("out"));
    assert_contiguous(&old_lines, "first run");

    // The savepoint's generator position: where the repeat starts.
    let metadata = crate::support::read_metadata(&savepoint);
    let position = metadata["sources"]["nums"][0].as_u64().unwrap();
    assert!(position < old_lines.len() as u64);

    let args = ["--from-savepoint".as_ref(), savepoint.as_os_str()];
    let highest = newest_completed_checkpoint(&sandbox.path("var"));
    let mut second = Daemon::start(&sandbox, "second", &config, &args);
    let ran = second.wait_for("a checkpoint after the savepoint start", |_| {
        newest_completed_checkpoint(&sandbox.path("var")) > highest
    });
    assert!(ran, "{}", second.log());
    let (_, log) = second.kill();
    assert!(
        log.contains(&format!("restoring from checkpoint checkpoint={at} ")),
        "{log}"
    );
    assert!(
        log.contains("is older than output committed up to checkpoint"),
        "the repeat is announced:\n{log}"
    );

    // A restart with the savepoint named again, here by the config's
    // `[checkpoint] start_from_savepoint` (as a unit's ExecStart would keep
    // naming it after Restart=): it resumes from the latest checkpoint
    // instead of rewinding again.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[checkpoint]\n",
        &format!(
            "[checkpoint]\nstart_from_savepoint = {:?}\n",
            savepoint.display().to_string()
        ),
    );
    std::fs::write(&config, text).unwrap();
    let mut third = Daemon::start(&sandbox, "third", &config, &[]);
    let resumed = third.wait_for("the restart to resume", |log| {
        log.contains("started from this savepoint before")
    });
    assert!(resumed, "{}", third.log());
    crate::support::wait_ready(port);
    crate::support::signal(&third, "TERM");
    let (status, log) = third.wait();
    assert!(status.success(), "{log}");

    let after = parts(&sandbox.path("out"));
    assert_kept(&before, &after);
    let newest_before = before.keys().max().unwrap().clone();
    let new_lines: Vec<String> = after
        .iter()
        .filter(|(n, _)| **n > newest_before)
        .flat_map(|(_, b)| {
            String::from_utf8_lossy(b)
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(!new_lines.is_empty());
    // After the old parts, one unbroken sequence from the savepoint on.
    for (i, line) in new_lines.iter().enumerate() {
        let seq = position + i as u64;
        assert_eq!(line, &format!("{}:{seq}", seq + 1), "new line {i}");
    }
}

#[test]
fn a_full_disk_fails_checkpoints_loudly_and_loses_nothing() {
    let sandbox = Sandbox::new();
    let disk = sandbox.path("disk");
    std::fs::create_dir(&disk).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&disk)
        .output()
        .unwrap();
    if !mounted.status.success() {
        eprintln!(
            "SKIPPED a_full_disk_fails_checkpoints_loudly_and_loses_nothing: cannot mount a tmpfs ({}); run the tests as root",
            String::from_utf8_lossy(&mounted.stderr).trim()
        );
        return;
    }
    let unmount = Unmount(disk.clone());
    let port = free_port();
    let config = sandbox.write(
        "weir.toml",
        format!(
            "[daemon]\ndata_dir = \"disk/var\"\nadmin_address = \"127.0.0.1:{port}\"\n\
             [checkpoint]\ninterval = \"100ms\"\n\
             [sources.nums]\ntype = \"generator\"\ncount = 60000\nrate = 10000.0\nbatch_size = 100\n\
             [operators.seq]\nmodule = {}\ninputs = [\"nums\"]\n\
             [sinks.out]\ntype = \"file\"\ndirectory = \"out\"\ninputs = [\"seq\"]\n",
            toml_path(plugins::SEQUENCE)
        ),
    );
    let mut daemon = Daemon::start(&sandbox, "weir", &config, &[]);
    crate::support::wait_ready(port);
    wait_until(WAIT_LIMIT, "a checkpoint", || {
        newest_completed_checkpoint(&sandbox.path("disk/var")) >= 1
    });
    // Fill the disk to the last byte.
    let filler = disk.join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .output()
        .unwrap();
    let failing = daemon.wait_for("/ready to say checkpoints fail", |_| {
        let (status, body) = http("GET", port, "/ready", "");
        status == 503 && body.contains("checkpoints failed in a row")
    });
    assert!(failing, "{}", daemon.log());
    std::thread::sleep(Duration::from_millis(500));
    std::fs::remove_file(&filler).unwrap();
    let (status, log) = daemon.wait();
    assert!(status.success(), "{log}");
    assert!(log.contains("No space left on device"), "{log}");
    let lines = committed(&sandbox.path("out"));
    assert_contiguous(&lines, "after a full disk");
    assert_eq!(lines.len(), 60_000, "records lost to the full disk");
    drop(unmount);
}

/// Unmounts a test's tmpfs, even when the test fails.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
