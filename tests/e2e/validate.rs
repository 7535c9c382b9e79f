//! `weir validate` (and `weir run`, which validates first): every class of bad
//! input is reported at once, each with file and line or component id, exit 78.

use weir_test_artifacts as plugins;

use crate::support::{Sandbox, run, stderr, toml_path};

pub(crate) const EX_CONFIG: i32 = 78;

pub(crate) fn expect_config_errors(sandbox: &Sandbox, config: &str, expected: &[&str]) -> String {
    let path = sandbox.write("weir.toml", config);
    let out = run("validate", &path);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{err}");
    for e in expected {
        assert!(err.contains(e), "expected {e:?} in:\n{err}");
    }
    err
}

#[test]
fn graph_errors_are_all_reported_with_lines() {
    let sandbox = Sandbox::new();
    let config = format!(
        r#"[sources.gen]
type = "generator"
count = 10

[operators.a]
module = {pass}
inputs = ["gne"]

[operators.b]
module = {pass}
inputs = ["c"]

[operators.c]
module = {pass}
inputs = ["b"]

[sinks.gen]
type = "stdout"
inputs = ["a", "missing"]
"#,
        pass = toml_path(plugins::PASSTHROUGH)
    );
    let err = expect_config_errors(
        &sandbox,
        &config,
        &[
            "weir.toml:7:11: operators.a: input `gne` does not exist (did you mean `gen`?)",
            "the graph has a cycle: operators.c -> operators.b -> operators.c",
            "weir.toml:17:8: sinks.gen: id `gen` is already used by sources.gen",
            "weir.toml:19:16: sinks.gen: input `missing` does not exist",
            "4 errors found",
        ],
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn syntax_errors_and_unknown_keys_name_the_line() {
    let sandbox = Sandbox::new();
    expect_config_errors(
        &sandbox,
        "[sources.a]\ntype = \"generator\"\ncount = \n",
        &["weir.toml:3:9:"],
    );
    expect_config_errors(
        &sandbox,
        "[sources.a]\ntype = \"generator\"\n\n[sinks.b]\ntype = \"stdout\"\ninputs = [\"a\"]\nbatchsize = 3\n",
        &["weir.toml:7:1: unknown field `batchsize`"],
    );
    expect_config_errors(
        &sandbox,
        "[sources.a]\ntype = \"generator\"\n[operators.o]\ntype = \"passthrough\"\ninputs = [\"a\"]\ncall_timeout = \"soon\"\n",
        &["weir.toml:6:16:", "soon"],
    );
}

#[test]
fn bad_modules_are_rejected_with_their_path_and_the_missing_name() {
    let sandbox = Sandbox::new();
    sandbox.write("garbage.wasm", "this is not wasm");
    sandbox.write("core.wasm", b"\0asm\x01\0\0\0");
    let config = format!(
        r#"[sources.gen]
type = "generator"
[operators.missing]
module = "nope.wasm"
inputs = ["gen"]
[operators.garbage]
module = "garbage.wasm"
inputs = ["gen"]
[operators.core]
module = "core.wasm"
inputs = ["gen"]
[operators.extra]
module = {extra}
inputs = ["gen"]
[operators.noexport]
module = {noexport}
inputs = ["gen"]
[operators.old]
module = {old}
inputs = ["gen"]
[sinks.out]
type = "blackhole"
inputs = ["missing", "garbage", "core", "extra", "noexport", "old"]
"#,
        extra = toml_path(plugins::EXTRA_IMPORT),
        noexport = toml_path(plugins::NO_EXPORT),
        old = toml_path(plugins::OLD_CONTRACT),
    );
    let err = expect_config_errors(
        &sandbox,
        &config,
        &[
            "nope.wasm: operators.missing: cannot read the module",
            "garbage.wasm: operators.garbage: not a valid WebAssembly component",
            "core.wasm: operators.core: this is a core WebAssembly module, not a component",
            "hostile_extra_import.wasm: operators.extra:",
            "test:extra-import/clock",
            "hostile_no_export.wasm: operators.noexport: does not export the weir:operator/operator@0.3.0 interface",
            "hostile_old_contract.wasm: operators.old: it was built against weir:operator@0.1.0 \
             (weir:operator/host@0.1.0), and this daemon runs plugins built against \
             weir:operator@0.3.0: rebuild it with the guest-sdk of this Weir release",
            "6 errors found",
        ],
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn run_validates_first_and_touches_nothing_on_error() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "weir.toml",
        "[sources.gen]\ntype = \"generator\"\ncount = 5\n[sinks.out]\ntype = \"file\"\ninputs = [\"gen\", \"oops\"]\npath = \"out.txt\"\n",
    );
    let out = run("run", &path);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("input `oops` does not exist"),
        "{}",
        stderr(&out)
    );
    assert!(!sandbox.path("out.txt").exists());
}

#[test]
fn a_valid_topology_passes() {
    let sandbox = Sandbox::new();
    let path = sandbox.write(
        "weir.toml",
        format!(
            "[sources.gen]\ntype = \"generator\"\n[operators.up]\nmodule = {}\ninputs = [\"gen\"]\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"up\"]\n",
            toml_path(plugins::UPPERCASE)
        ),
    );
    let out = run("validate", &path);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (3 components)"));
}

#[test]
fn broker_connector_mistakes_are_each_named_with_their_line() {
    let sandbox = Sandbox::new();
    let err = expect_config_errors(
        &sandbox,
        r#"[sources.orders]
type = "kafka"
brokers = ["127.0.0.1:9092"]
topic = "a"
topics = ["b"]

[sources.no_topic]
type = "kafka"
brokers = ["127.0.0.1:9092"]
start = { timestamp = "yesterday" }

[sources.lines]
type = "file"
path = "weir.toml"
brokers = ["127.0.0.1:9092"]
parallelism = 2
timestamp = "record"

[sources.events]
type = "nats"
brokers = []

[sinks.results]
type = "kafka"
brokers = ["127.0.0.1:9092"]
inputs = ["orders", "no_topic", "lines", "events"]

[sinks.alerts]
type = "nats"
brokers = ["nats://127.0.0.1:4222"]
inputs = ["orders"]
encoding = "json"
"#,
        &[
            "weir.toml:1:10: sources.orders: a kafka source takes `topic` or `topics`, not both",
            "weir.toml:7:10: sources.no_topic: a kafka source needs `topic` (or `topics`)",
            "weir.toml:12:10: sources.lines: `brokers` does not apply to a file source",
            "weir.toml:12:10: sources.lines: `parallelism` does not apply to a file source",
            "weir.toml:12:10: sources.lines: `timestamp = \"record\"` takes the time a broker gives",
            "weir.toml:19:10: sources.events: a nats source needs `brokers`",
            "weir.toml:19:10: sources.events: a nats source needs `stream`",
            "weir.toml:23:8: sinks.results: a kafka sink needs `topic`",
            "weir.toml:28:8: sinks.alerts: a nats sink needs `subject`",
            "weir.toml:28:8: sinks.alerts: `encoding` does not apply to a nats sink",
        ],
    );
    // Exactly-once output is released by checkpoints.
    assert!(
        err.contains("`delivery = \"exactly_once\"` (the default)"),
        "{err}"
    );
    let err = expect_config_errors(
        &sandbox,
        "[sources.o]\ntype = \"kafka\"\nbrokers = [\"b:1\"]\ntopic = \"t\"\nstart = { timestamp = \"soon\" }\n\
         [sinks.s]\ntype = \"blackhole\"\ninputs = [\"o\"]\n",
        &["weir.toml:1:10: sources.o: `start.timestamp` is not an RFC 3339 time: \"soon\""],
    );
    assert!(!err.contains("exactly_once"), "{err}");
}
