//! Operator chaining through the real binary: forward-joined components share
//! a thread (seen in `/proc`), each still reports under its own id, and
//! `chain = false` or `[daemon] chaining = false` gives them their own.

use std::collections::BTreeSet;

use weir_test_artifacts as plugins;

use crate::checkpoints::committed;
use crate::support::{
    Sandbox, WAIT_LIMIT, free_port, http, metric, signal, stderr, toml_path, wait_ready, wait_until,
};

/// Generator -> split-words -> word-count -> exactly-once directory sink,
/// everything at parallelism 1 (so every edge chains), with `extra` added
/// to `[daemon]` and `count_extra` to the counting operator.
fn config(port: u16, extra: &str, count_extra: &str) -> String {
    format!(
        "[daemon]\ndata_dir = \"var\"\nadmin_address = \"127.0.0.1:{port}\"\n{extra}\n\
         [checkpoint]\ninterval = \"200ms\"\n\
         [sources.gen]\ntype = \"generator\"\nrate = 2000.0\nbatch_size = 20\nkeys = 50\n\
         [operators.split]\nmodule = {split}\ninputs = [\"gen\"]\n\
         [operators.count]\nmodule = {count}\ninputs = [\"split\"]\n{count_extra}\n\
         [sinks.out]\ntype = \"file\"\ndirectory = \"out\"\ninputs = [\"count\"]\n",
        split = toml_path(plugins::SPLIT_WORDS),
        count = toml_path(plugins::WORD_COUNT),
    )
}

/// The names of the daemon's threads that run tasks.
fn task_threads(pid: u32) -> BTreeSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| ["src-", "op-", "sink-"].iter().any(|p| name.starts_with(p)))
        .collect()
}

/// Runs `config` until output is committed; returns the task threads, the
/// `chained_after` of every component and the records each took in.
fn observe(port: u16, text: &str) -> (BTreeSet<String>, Vec<(String, String)>, Vec<f64>) {
    let sandbox = Sandbox::new();
    let path = sandbox.write("weir.toml", text);
    let child = crate::support::spawn_run(&path);
    wait_ready(port);
    wait_until(WAIT_LIMIT, "committed output", || {
        sandbox.path("out").exists() && committed(&sandbox.path("out")).len() > 200
    });
    let threads = task_threads(child.id());
    let (status, body) = http("GET", port, "/topology", "");
    assert_eq!(status, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    let chained = view["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| {
            Some((
                c["id"].as_str()?.to_owned(),
                c["chained_after"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let scrape = http("GET", port, "/metrics", "").1;
    let records = ["split", "count", "out"]
        .iter()
        .map(|id| {
            metric(
                &scrape,
                &format!(r#"weir_records_in_total{{instance="0",operator="{id}"}}"#),
            )
            .unwrap_or(0.0)
        })
        .collect();
    signal(&child, "TERM");
    let out = child.wait_output();
    assert!(out.status.success(), "{}", stderr(&out));
    // Exactly once, in order per key, whatever the threads.
    let mut next = std::collections::HashMap::new();
    for line in committed(&sandbox.path("out")) {
        let (key, count) = line.split_once(',').unwrap();
        let expected = next.entry(key.to_owned()).or_insert(1u64);
        assert_eq!(count.parse::<u64>().unwrap(), *expected, "{line}");
        *expected += 1;
    }
    (threads, chained, records)
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[test]
fn forward_joined_components_share_a_thread_and_still_report_apart() {
    let port = free_port();
    let (threads, chained, records) = observe(port, &config(port, "", ""));
    assert_eq!(threads, names(&["src-gen"]), "one thread runs the chain");
    assert_eq!(
        chained,
        pairs(&[("split", "gen"), ("count", "split"), ("out", "count")])
    );
    assert!(
        records.iter().all(|r| *r > 0.0),
        "each member counts its own records: {records:?}"
    );
    // Words out of split are records into count and out.
    assert!(records[1] >= records[0], "{records:?}");

    // `chain = false` on one component (Flink's `disableChaining`) keeps it
    // out of chains on both sides: it and the sink after it get threads.
    let port = free_port();
    let (threads, chained, _) = observe(port, &config(port, "", "chain = false"));
    assert_eq!(threads, names(&["src-gen", "op-count-0", "sink-out"]));
    assert_eq!(chained, pairs(&[("split", "gen")]));

    // And `[daemon] chaining = false` one per component, as without chaining.
    let port = free_port();
    let (threads, chained, _) = observe(port, &config(port, "chaining = false", ""));
    assert_eq!(
        threads,
        names(&["src-gen", "op-split-0", "op-count-0", "sink-out"])
    );
    assert!(chained.is_empty(), "{chained:?}");
}

#[test]
fn a_misspelt_weir_chaining_is_warned_about_not_taken_as_false() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "weir.toml",
        "[sources.gen]\ntype = \"generator\"\ncount = 10\n\
         [sinks.out]\ntype = \"blackhole\"\ninputs = [\"gen\"]\n",
    );
    let out = crate::support::weir()
        .env("WEIR_CHAINING", "flase")
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("the environment variable WEIR_CHAINING is \"flase\", neither true nor false: chaining stays on"),
        "{err}"
    );
}
