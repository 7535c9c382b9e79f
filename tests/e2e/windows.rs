//! Event-time windows and keyed timers through the real binary: out-of-order
//! input into a tumbling per-user count and a session window, checked line
//! for line against a model the test computes from the same input (late
//! output included), on both backends, across SIGKILLs and a rescale; an
//! idle source that does not stall windows; processing-time timers that fire
//! with no input arriving.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_test_artifacts as plugins;

use crate::checkpoints::committed;
use crate::event_time::append;
use crate::support::{
    Daemon, Sandbox, WAIT_LIMIT, free_port, http, metric, newest_completed_checkpoint, run, stderr,
    toml_path, wait_until,
};

/// How far behind its largest timestamp the source's watermark stays.
const OUT_OF_ORDERNESS: i64 = 5_000;
const WINDOW: i64 = 10_000;
const LATENESS: i64 = 2_000;
const GAP: i64 = 2_000;

/// xorshift: the same input on every run.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// One click: its user and time.
#[derive(Debug, Clone)]
struct Click {
    user: u64,
    ms: i64,
}

/// Out-of-order clicks: most up to 5 s behind the newest, one in twenty up
/// to 12 s (late for its window even with the allowed lateness).
fn clicks(n: usize, seed: &mut u64, start: i64) -> Vec<Click> {
    let mut now = start;
    (0..n)
        .map(|_| {
            now += (next(seed) % 100) as i64;
            let back = if next(seed).is_multiple_of(20) {
                next(seed) % 12_000
            } else {
                next(seed) % 5_000
            };
            Click {
                user: next(seed) % 60,
                ms: now - back as i64,
            }
        })
        .collect()
}

fn line(c: &Click) -> String {
    format!("{{\"u\":\"u{}\",\"ms\":{}}}\n", c.user, c.ms)
}

/// What `key-by` (on `,`) makes of a line: the key and the value.
fn split(c: &Click) -> (String, String) {
    let text = line(c);
    let (key, value) = text.trim_end().split_once(',').unwrap();
    (key.to_owned(), value.to_owned())
}

/// What the pipeline must commit, computed the way Flink's event-time
/// windows define it: each record meets the watermark the source announced
/// after the record before it (batches of one record), windows fire when the
/// watermark reaches their last millisecond, and the end of the input is the
/// end of time.
#[derive(Debug, Default, PartialEq, Eq)]
struct Expected {
    /// (key, start, end, count), sorted.
    counts: Vec<(String, i64, i64, u64)>,
    /// (key, timestamp) of records too late for the count, sorted.
    late: Vec<(String, i64)>,
    /// (key, start, end, values), sorted.
    sessions: Vec<(String, i64, i64, Vec<String>)>,
    /// (key, timestamp) of records too late for any session, sorted.
    late_sessions: Vec<(String, i64)>,
}

/// Open sessions by key: (start, end, values).
type Sessions = BTreeMap<String, Vec<(i64, i64, Vec<String>)>>;

fn model(clicks: &[Click]) -> Expected {
    let mut e = Expected::default();
    let mut counts: BTreeMap<(String, i64), u64> = BTreeMap::new();
    let mut sessions: Sessions = BTreeMap::new();
    let mut watermark = i64::MIN;
    let mut largest = i64::MIN;
    let advance = |to: i64,
                   from: i64,
                   counts: &mut BTreeMap<(String, i64), u64>,
                   sessions: &mut Sessions,
                   e: &mut Expected| {
        for ((key, start), n) in counts.iter() {
            let max = start + WINDOW - 1;
            if max > from && max <= to {
                e.counts.push((key.clone(), *start, start + WINDOW, *n));
            }
        }
        counts.retain(|(_, start), _| start + WINDOW - 1 + LATENESS > to);
        for (key, list) in sessions.iter_mut() {
            list.retain(|(start, end, values)| {
                if end - 1 > from && end - 1 <= to {
                    e.sessions.push((key.clone(), *start, *end, values.clone()));
                }
                end - 1 > to
            });
        }
    };
    for c in clicks {
        let (key, value) = split(c);
        let t = c.ms;
        // The tumbling count, with allowed lateness.
        let start = t - t.rem_euclid(WINDOW);
        let max = start + WINDOW - 1;
        if max + LATENESS <= watermark {
            e.late.push((key.clone(), t));
        } else {
            let n = counts.entry((key.clone(), start)).or_default();
            *n += 1;
            if max <= watermark {
                e.counts.push((key.clone(), start, start + WINDOW, *n));
            }
        }
        // Sessions, no lateness: a record merges every session it touches.
        let list = sessions.entry(key.clone()).or_default();
        let (mut s, mut end) = (t, t + GAP);
        let touching: Vec<usize> = (0..list.len())
            .filter(|&i| list[i].0 <= end && s <= list[i].1)
            .collect();
        if touching.is_empty() && end - 1 <= watermark {
            e.late_sessions.push((key.clone(), t));
        } else {
            let mut values = Vec::new();
            for &i in &touching {
                s = s.min(list[i].0);
                end = end.max(list[i].1);
                values.extend(list[i].2.iter().cloned());
            }
            for &i in touching.iter().rev() {
                list.remove(i);
            }
            values.push(value);
            let at = list.partition_point(|w| (w.0, w.1) < (s, end));
            list.insert(at, (s, end, values));
        }
        largest = largest.max(t);
        let next = largest - OUT_OF_ORDERNESS - 1;
        if next > watermark {
            advance(next, watermark, &mut counts, &mut sessions, &mut e);
            watermark = next;
        }
    }
    advance(i64::MAX, watermark, &mut counts, &mut sessions, &mut e);
    e.counts.sort();
    e.late.sort();
    e.sessions.sort();
    e.late_sessions.sort();
    e
}

/// What the pipeline committed, in the model's shape.
fn committed_output(sandbox: &Sandbox) -> Expected {
    let json = |line: &str| -> serde_json::Value { serde_json::from_str(line).unwrap() };
    let late = |dir: &str| {
        let mut v: Vec<(String, i64)> = committed(&sandbox.path(dir))
            .iter()
            .map(|l| {
                let r = json(l);
                (
                    r["key"].as_str().unwrap().to_owned(),
                    r["timestamp"].as_i64().unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let mut counts: Vec<_> = committed(&sandbox.path("counts"))
        .iter()
        .map(|l| {
            let r = json(l);
            (
                r["key"].as_str().unwrap().to_owned(),
                r["start"].as_i64().unwrap(),
                r["end"].as_i64().unwrap(),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect();
    counts.sort();
    let mut sessions: Vec<_> = committed(&sandbox.path("sessions"))
        .iter()
        .map(|l| {
            let r = json(l);
            let values = r["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect();
            (
                r["key"].as_str().unwrap().to_owned(),
                r["start"].as_i64().unwrap(),
                r["end"].as_i64().unwrap(),
                values,
            )
        })
        .collect();
    sessions.sort();
    Expected {
        counts,
        late: late("late"),
        sessions,
        late_sessions: late("late_sessions"),
    }
}

/// The clicks pipeline: a file source with event time, `key-by`, then a
/// tumbling count and sessions, each with its late output, all into
/// exactly-once directory sinks.
fn setup(sandbox: &Sandbox, backend: &str, parallelism: u32) -> PathBuf {
    setup_following(sandbox, backend, parallelism, false)
}

/// [`setup`], the source following its file when `follow` (so the input
/// never ends, and no end-of-input watermark fires windows early).
fn setup_following(sandbox: &Sandbox, backend: &str, parallelism: u32, follow: bool) -> PathBuf {
    sandbox.write(
        "weir.toml",
        format!(
            "[daemon]\ndata_dir = \"var\"\n\
             [checkpoint]\ninterval = \"100ms\"\n\
             [state]\nbackend = \"{backend}\"\n\
             [sources.clicks]\ntype = \"file\"\npath = \"clicks.jsonl\"\nbatch_size = 1\nfollow = {follow}\n\
             timestamp = {{ json_field = \"ms\" }}\n\
             watermark = {{ max_out_of_orderness = \"5s\" }}\n\
             [operators.by_user]\nmodule = {key_by}\ninputs = [\"clicks\"]\n\
             config = {{ separator = \",\" }}\n\
             [operators.counts]\nmodule = {count}\ninputs = [\"by_user\"]\nparallelism = {parallelism}\n\
             config = {{ size = \"10s\", allowed_lateness = \"2s\" }}\n\
             [operators.sessions]\nmodule = {sessions}\ninputs = [\"by_user\"]\nparallelism = {parallelism}\n\
             config = {{ gap = \"2s\" }}\n\
             [sinks.counts_out]\ntype = \"file\"\ndirectory = \"counts\"\ninputs = [\"counts\"]\n\
             [sinks.late]\ntype = \"file\"\ndirectory = \"late\"\ninputs = [\"counts.late\"]\nencoding = \"json\"\n\
             [sinks.sessions_out]\ntype = \"file\"\ndirectory = \"sessions\"\ninputs = [\"sessions\"]\n\
             [sinks.late_sessions]\ntype = \"file\"\ndirectory = \"late_sessions\"\n\
             inputs = [\"sessions.late\"]\nencoding = \"json\"\n",
            key_by = toml_path(plugins::KEY_BY),
            count = toml_path(plugins::WINDOW_COUNT),
            sessions = toml_path(plugins::SESSIONS),
        ),
    )
}

/// Appends clicks to the input, continuing where it left off.
fn add_clicks(sandbox: &Sandbox, all: &mut Vec<Click>, n: usize, seed: &mut u64) {
    let start = all.iter().map(|c| c.ms).max().unwrap_or(1_700_000_000_000) + 1;
    let more = clicks(n, seed, start);
    let text: String = more.iter().map(line).collect();
    let path = sandbox.path("clicks.jsonl");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
    all.extend(more);
}

fn assert_matches_model(sandbox: &Sandbox, clicks: &[Click], context: &str) {
    let want = model(clicks);
    assert!(
        want.late.len() > 10 && want.late_sessions.len() > 10 && want.counts.len() > 100,
        "{context}: the input exercises lateness ({} late, {} late for sessions)",
        want.late.len(),
        want.late_sessions.len()
    );
    assert!(
        want.counts.len()
            > want
                .counts
                .iter()
                .map(|c| (&c.0, c.1))
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
        "{context}: some windows fire again within the allowed lateness"
    );
    let got = committed_output(sandbox);
    // Field by field, so a failure says which output differs.
    assert_eq!(
        got.counts.len(),
        want.counts.len(),
        "{context}: count lines"
    );
    assert!(
        got.counts == want.counts,
        "{context}: the counts differ from the model"
    );
    assert!(
        got.late == want.late,
        "{context}: the late output differs from the model"
    );
    assert_eq!(
        got.sessions.len(),
        want.sessions.len(),
        "{context}: sessions"
    );
    assert!(
        got.sessions == want.sessions,
        "{context}: the sessions differ from the model"
    );
    assert!(
        got.late_sessions == want.late_sessions,
        "{context}: the late sessions differ from the model"
    );
}

fn finish(config: &Path, context: &str) -> String {
    let out = run("run", config);
    let err = stderr(&out);
    assert!(out.status.success(), "{context}: the run failed:\n{err}");
    err
}

fn clean_run_matches_the_model(backend: &str) {
    let sandbox = Sandbox::new();
    let mut all = Vec::new();
    let mut seed = 0x5eed_0001;
    add_clicks(&sandbox, &mut all, 6_000, &mut seed);
    let config = setup(&sandbox, backend, 2);
    finish(&config, backend);
    assert_matches_model(&sandbox, &all, backend);
}

#[test]
fn windows_match_the_model_on_heap() {
    clean_run_matches_the_model("heap");
}

#[test]
fn windows_match_the_model_on_rocksdb() {
    clean_run_matches_the_model("rocksdb");
}

fn killed_by_9(status: std::process::ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(9)
}

/// Five SIGKILLs at random moments after a checkpoint of each run, then a
/// run to the end: every window once, as the model says.
fn kills_change_nothing(backend: &str) {
    let sandbox = Sandbox::new();
    let mut all = Vec::new();
    let mut seed = 0x5eed_0002 ^ backend.len() as u64;
    add_clicks(&sandbox, &mut all, 40_000, &mut seed);
    // The killed runs follow the file, so none ends on its own: a run that
    // reached the end of its input would fire every window at the end of
    // time, which one uninterrupted run over all the clicks never does.
    let following = setup_following(&sandbox, backend, 2, true);
    let data_dir = sandbox.path("var");
    for kill in 1..=5 {
        let (daemon, checkpointed) =
            Daemon::start_until_checkpoint(&sandbox, &format!("run-{kill}"), &following, &data_dir);
        assert!(
            checkpointed,
            "{backend}: run {kill} ended:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(next(&mut seed) % 300));
        let (status, log) = daemon.kill();
        assert!(
            killed_by_9(status),
            "{backend}: run {kill} ended by itself:\n{log}"
        );
        // More clicks arrive while it is down.
        add_clicks(&sandbox, &mut all, 10_000, &mut seed);
    }
    let config = setup(&sandbox, backend, 2);
    let log = finish(&config, backend);
    assert!(
        log.contains("restoring from checkpoint"),
        "{backend}: never restored:\n{log}"
    );
    assert_matches_model(&sandbox, &all, &format!("{backend} after 5 kills"));
}

#[test]
fn sigkills_change_no_window_on_heap() {
    kills_change_nothing("heap");
}

#[test]
fn sigkills_change_no_window_on_rocksdb() {
    kills_change_nothing("rocksdb");
}

#[test]
fn a_restore_at_another_parallelism_fires_every_window_once() {
    let sandbox = Sandbox::new();
    let mut all = Vec::new();
    let mut seed = 0x5eed_0003;
    add_clicks(&sandbox, &mut all, 30_000, &mut seed);
    let config = setup(&sandbox, "rocksdb", 2);
    let data_dir = sandbox.path("var");
    let mut daemon = Daemon::start(&sandbox, "first", &config, &[]);
    assert!(
        daemon.wait_for("checkpoint 3", |_| newest_completed_checkpoint(&data_dir)
            >= 3),
        "no third checkpoint"
    );
    let (status, log) = daemon.kill();
    assert!(killed_by_9(status), "the run ended before the kill:\n{log}");
    let metadata = crate::support::newest_metadata(&data_dir);
    assert!(
        metadata["operators"]["counts"]["states"]["weir.timers"].is_object(),
        "the checkpoint holds timers: {metadata}"
    );
    let config = setup(&sandbox, "rocksdb", 3);
    finish(&config, "rescaled from 2 to 3");
    assert_matches_model(&sandbox, &all, "after a restore at parallelism 3");
}

#[test]
fn an_idle_source_does_not_stall_windows_past_its_idle_timeout() {
    let sandbox = Sandbox::new();
    let port = free_port();
    sandbox.write("a.jsonl", "{\"u\":\"x\",\"ms\":1000}\n");
    sandbox.write("b.jsonl", "{\"u\":\"y\",\"ms\":1000}\n");
    let config = sandbox.write(
        "weir.toml",
        format!(
            "[daemon]\ndata_dir = \"var\"\nadmin_address = \"127.0.0.1:{port}\"\n\
             [sources.a]\ntype = \"file\"\npath = \"a.jsonl\"\nfollow = true\n\
             timestamp = {{ json_field = \"ms\" }}\nwatermark = {{ max_out_of_orderness = \"0s\" }}\n\
             [sources.b]\ntype = \"file\"\npath = \"b.jsonl\"\nfollow = true\n\
             timestamp = {{ json_field = \"ms\" }}\n\
             watermark = {{ max_out_of_orderness = \"0s\", idle_timeout = \"1s\" }}\n\
             [operators.by_user]\nmodule = {key_by}\ninputs = [\"a\", \"b\"]\nconfig = {{ separator = \",\" }}\n\
             [operators.counts]\nmodule = {count}\ninputs = [\"by_user\"]\nconfig = {{ size = \"10s\" }}\n\
             [sinks.out]\ntype = \"file\"\ninputs = [\"counts\"]\npath = \"counts.jsonl\"\n",
            key_by = toml_path(plugins::KEY_BY),
            count = toml_path(plugins::WINDOW_COUNT),
        ),
    );
    let daemon = Daemon::start(&sandbox, "weir", &config, &[]);
    // b says nothing more; once it is idle, a alone closes the first window.
    std::thread::sleep(Duration::from_millis(1_500));
    append(&sandbox.path("a.jsonl"), "{\"u\":\"x\",\"ms\":25000}");
    wait_until(WAIT_LIMIT, "the first windows to fire with b idle", || {
        std::fs::read_to_string(sandbox.path("counts.jsonl")).is_ok_and(|t| t.lines().count() == 2)
    });
    let text = sandbox.read("counts.jsonl");
    assert!(
        text.contains("\"start\":0,\"end\":10000,\"count\":1"),
        "{text}"
    );
    let scrape = http("GET", port, "/metrics", "").1;
    let fired = metric(
        &scrape,
        r#"weir_timers_fired_total{instance="0",operator="counts"}"#,
    );
    assert_eq!(fired, Some(2.0), "{scrape}");
    let pending = metric(
        &scrape,
        r#"weir_timers_pending{instance="0",operator="counts"}"#,
    );
    assert_eq!(pending, Some(1.0), "the window of 25000 waits");
    daemon.signal("TERM");
    let (status, log) = daemon.wait();
    assert!(status.success(), "{log}");
}

#[test]
fn processing_time_timers_fire_with_no_input_arriving() {
    let sandbox = Sandbox::new();
    let port = free_port();
    sandbox.write("beats.txt", "a\nb\n");
    let config = sandbox.write(
        "weir.toml",
        format!(
            "[daemon]\ndata_dir = \"var\"\nadmin_address = \"127.0.0.1:{port}\"\n\
             [checkpoint]\ninterval = \"100ms\"\n\
             [sources.beats]\ntype = \"file\"\npath = \"beats.txt\"\nfollow = true\n\
             [operators.key]\nmodule = {key_by}\ninputs = [\"beats\"]\n\
             [operators.quiet]\nmodule = {timeout}\ninputs = [\"key\"]\nconfig = {{ timeout = \"700ms\" }}\n\
             [sinks.out]\ntype = \"file\"\ninputs = [\"quiet\"]\npath = \"quiet.txt\"\n",
            key_by = toml_path(plugins::KEY_BY),
            timeout = toml_path(plugins::TIMEOUT),
        ),
    );
    let daemon = Daemon::start(&sandbox, "weir", &config, &[]);
    let started = std::time::Instant::now();
    wait_until(WAIT_LIMIT, "both keys reported quiet", || {
        std::fs::read_to_string(sandbox.path("quiet.txt")).is_ok_and(|t| t.lines().count() == 2)
    });
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "fired before the timeout: {:?}",
        started.elapsed()
    );
    let text = sandbox.read("quiet.txt");
    assert!(
        text.contains("a quiet since") && text.contains("b quiet since"),
        "{text}"
    );
    let scrape = http("GET", port, "/metrics", "").1;
    assert_eq!(
        metric(
            &scrape,
            r#"weir_timers_registered_total{instance="0",operator="quiet"}"#
        ),
        Some(2.0),
        "{scrape}"
    );
    daemon.signal("TERM");
    let (status, log) = daemon.wait();
    assert!(status.success(), "{log}");
}
