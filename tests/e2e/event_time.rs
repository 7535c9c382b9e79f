//! Event time: sources that read each record's timestamp from its line, and
//! the watermarks that follow them through the pipeline.

use std::io::Write as _;
use std::process::Stdio;

use weir_test_artifacts as plugins;

use crate::support::{
    Daemon, RUN_LIMIT, Sandbox, WAIT_LIMIT, free_port, http, metric, run, stderr, toml_path,
    wait_until, wait_with_limit, weir,
};
use crate::validate::expect_config_errors;

/// The `timestamp` of each JSON line a file sink wrote, in order.
fn timestamps(sandbox: &Sandbox, file: &str) -> Vec<Option<i64>> {
    sandbox
        .read(file)
        .lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            record["timestamp"].as_i64()
        })
        .collect()
}

#[test]
fn file_and_stdin_sources_give_each_record_the_time_in_its_json_field() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "ms.jsonl",
        "{\"user\":\"a\",\"ms\":1764583200123}\n{\"ms\":1764583199000,\"user\":\"b\"}\n{\"ms\":5}",
    );
    sandbox.write("s.jsonl", "{\"t\":1764583200}\n{\"t\":1764583200.25}\n");
    sandbox.write(
        "dates.jsonl",
        "{\"ts\":\"2025-12-01T10:00:00Z\"}\n{\"ts\":\"2025-12-01T12:00:00.5+02:00\"}\n",
    );
    let config = sandbox.write(
        "weir.toml",
        format!(
            "[sources.ms]\ntype = \"file\"\npath = \"ms.jsonl\"\ntimestamp = {{ json_field = \"ms\" }}\n\
             [sources.s]\ntype = \"file\"\npath = \"s.jsonl\"\n\
             timestamp = {{ json_field = \"t\", format = \"unix_s\" }}\n\
             [sources.dates]\ntype = \"file\"\npath = \"dates.jsonl\"\n\
             timestamp = {{ json_field = \"ts\", format = \"rfc3339\" }}\n\
             [operators.pass]\nmodule = {pass}\ninputs = [\"ms\"]\n\
             [sinks.ms_out]\ntype = \"file\"\ninputs = [\"pass\"]\npath = \"ms.out\"\nencoding = \"json\"\n\
             [sinks.s_out]\ntype = \"file\"\ninputs = [\"s\"]\npath = \"s.out\"\nencoding = \"json\"\n\
             [sinks.dates_out]\ntype = \"file\"\ninputs = [\"dates\"]\npath = \"dates.out\"\nencoding = \"json\"\n",
            pass = toml_path(plugins::PASSTHROUGH),
        ),
    );
    let out = run("run", &config);
    assert!(out.status.success(), "{}", stderr(&out));
    // Through a plugin that forwards records, the times stay.
    assert_eq!(
        timestamps(&sandbox, "ms.out"),
        [Some(1_764_583_200_123), Some(1_764_583_199_000), Some(5)]
    );
    assert_eq!(
        timestamps(&sandbox, "s.out"),
        [Some(1_764_583_200_000), Some(1_764_583_200_250)]
    );
    assert_eq!(
        timestamps(&sandbox, "dates.out"),
        [Some(1_764_583_200_000), Some(1_764_583_200_500)]
    );

    let config = sandbox.write(
        "stdin.toml",
        "[sources.in]\ntype = \"stdin\"\ntimestamp = { json_field = \"ms\" }\n\
         [sinks.out]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"stdin.out\"\nencoding = \"json\"\n",
    );
    let mut child = weir()
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weir");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"{\"ms\":1}\n{\"ms\":2}\n{\"ms\":3}")
        .expect("write stdin");
    let out = wait_with_limit(child, RUN_LIMIT);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        timestamps(&sandbox, "stdin.out"),
        [Some(1), Some(2), Some(3)]
    );
}

#[test]
fn a_line_without_its_time_stops_the_run_naming_the_source_file_byte_and_field() {
    let sandbox = Sandbox::new();
    let good = "{\"ms\":1}\n";
    sandbox.write(
        "clicks.jsonl",
        format!("{good}{{\"user\":\"b\"}}\n{{\"ms\":3}}\n"),
    );
    let config = sandbox.write(
        "weir.toml",
        "[restart]\nmax_failures = 0\n\
         [sources.clicks]\ntype = \"file\"\npath = \"clicks.jsonl\"\ntimestamp = { json_field = \"ms\" }\n\
         [sinks.out]\ntype = \"file\"\ninputs = [\"clicks\"]\npath = \"out.json\"\nencoding = \"json\"\n",
    );
    let out = run("run", &config);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let path = sandbox.path("clicks.jsonl");
    let want = format!(
        "no timestamp in the line at byte {} of {}: it has no field `ms`",
        good.len(),
        path.display()
    );
    assert!(err.contains(&want), "expected {want:?} in:\n{err}");
    assert!(err.contains("`clicks`"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_timestamp_setting_that_cannot_work_is_refused_with_its_line() {
    let sandbox = Sandbox::new();
    expect_config_errors(
        &sandbox,
        "[sources.gen]\ntype = \"generator\"\ncount = 1\ntimestamp = { json_field = \"ms\" }\n\
         [sources.f]\ntype = \"file\"\npath = \"weir.toml\"\ntimestamp = { json_field = \"\" }\n\
         [sources.g]\ntype = \"file\"\npath = \"weir.toml\"\nwatermark = { max_out_of_orderness = \"1s\" }\n\
         [sinks.out]\ntype = \"blackhole\"\ninputs = [\"gen\", \"f\", \"g\"]\n",
        &[
            "weir.toml:1:10: sources.gen: `timestamp` does not apply to a generator source",
            "weir.toml:5:10: sources.f: `timestamp.json_field` must name a field",
            "weir.toml:9:10: sources.g: `watermark` follows the records' timestamps: give the source a `timestamp` too",
        ],
    );
    let err = expect_config_errors(
        &sandbox,
        "[sources.f]\ntype = \"file\"\npath = \"weir.toml\"\n\
         timestamp = { json_field = \"ms\", format = \"iso\" }\n\
         [sinks.out]\ntype = \"blackhole\"\ninputs = [\"f\"]\n",
        &["weir.toml:4:"],
    );
    assert!(err.contains("unix_ms") && err.contains("rfc3339"), "{err}");
}

/// Appends one line to a followed file.
pub(crate) fn append(path: &std::path::Path, line: &str) {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open for append");
    writeln!(file, "{line}").expect("append");
}

#[test]
fn a_task_s_watermark_is_the_least_of_its_inputs_and_an_idle_one_stops_holding_it_back() {
    let sandbox = Sandbox::new();
    let port = free_port();
    let a = sandbox.write("a.jsonl", "{\"ms\":100000}\n");
    let b = sandbox.write("b.jsonl", "{\"ms\":20000}\n");
    let config = sandbox.write(
        "weir.toml",
        format!(
            "[daemon]\ndata_dir = \"var\"\nadmin_address = \"127.0.0.1:{port}\"\n\
             [sources.a]\ntype = \"file\"\npath = \"a.jsonl\"\nfollow = true\n\
             timestamp = {{ json_field = \"ms\" }}\nwatermark = {{ max_out_of_orderness = \"5s\" }}\n\
             [sources.b]\ntype = \"file\"\npath = \"b.jsonl\"\nfollow = true\n\
             timestamp = {{ json_field = \"ms\" }}\n\
             watermark = {{ max_out_of_orderness = \"5s\", idle_timeout = \"3s\" }}\n\
             [operators.pass]\nmodule = {pass}\ninputs = [\"a\", \"b\"]\n\
             [sinks.out]\ntype = \"blackhole\"\ninputs = [\"pass\"]\n",
            pass = toml_path(plugins::PASSTHROUGH),
        ),
    );
    let daemon = Daemon::start(&sandbox, "weir", &config, &[]);
    let series = r#"weir_watermark_milliseconds{instance="0",operator="pass"}"#;
    let sink = r#"weir_watermark_milliseconds{instance="0",operator="out"}"#;
    let watermark = |series: &str| metric(&http("GET", port, "/metrics", "").1, series);
    let reaches = |want: f64, what: &str| {
        wait_until(WAIT_LIMIT, what, || watermark(series) == Some(want));
    };
    // Each source is 5 s behind its largest time; `pass` waits for the
    // slower one, and so does what it feeds.
    reaches(14_999.0, "the watermark of b, the slower input");
    assert_eq!(watermark(sink), Some(14_999.0));
    // Its lag behind the clock, taken at the scrape.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let lag = watermark(r#"weir_watermark_lag_seconds{instance="0",operator="pass"}"#)
        .expect("a lag series");
    assert!((lag - (now - 14.999)).abs() < 60.0, "lag {lag}, now {now}");
    // b has sent nothing for 3 s: idle, it no longer holds `pass` back.
    reaches(94_999.0, "the watermark of a, once b is idle");
    append(&a, "{\"ms\":200000}");
    reaches(194_999.0, "a alone moving the watermark");
    // b comes back ahead: it counts again, and the least is still a's.
    append(&b, "{\"ms\":300000}");
    let records = r#"weir_records_in_total{instance="0",operator="pass"}"#;
    wait_until(WAIT_LIMIT, "b's record reaching `pass`", || {
        metric(&http("GET", port, "/metrics", "").1, records) == Some(4.0)
    });
    assert_eq!(watermark(series), Some(194_999.0));
    append(&a, "{\"ms\":400000}");
    reaches(294_999.0, "b holding the watermark back again");
    // A late record moves nothing back.
    append(&a, "{\"ms\":1000}");
    append(&b, "{\"ms\":310000}");
    reaches(304_999.0, "b moving on");
    daemon.signal("TERM");
    let (status, log) = daemon.wait();
    assert!(status.success(), "{log}");
}
