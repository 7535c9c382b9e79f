//! The checks, one table at a time.

use std::path::Path;

use super::*;
use crate::config::parse_str;

fn errors(text: &str) -> Vec<String> {
    let file = parse_str(Path::new("t.toml"), text.to_owned()).unwrap();
    build(&file)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect()
}

const SRC: &str = "[sources.src]\ntype = \"generator\"\n";

#[test]
fn reports_every_bad_input_at_once_with_lines() {
    let e = errors(&format!(
        "{SRC}[operators.a]\ntype = \"passthrough\"\ninputs = [\"srcc\"]\n[sinks.out]\ntype = \"stdout\"\ninputs = [\"nope\", \"a\"]\n"
    ));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with(
            "t.toml:5:11: operators.a: input `srcc` does not exist (did you mean `src`?)"
        ),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("t.toml:8:11: sinks.out: input `nope` does not exist"),
        "{e:?}"
    );
}

#[test]
fn finds_cycles() {
    let e = errors(&format!(
        "{SRC}[operators.a]\ntype = \"passthrough\"\ninputs = [\"src\", \"b\"]\n[operators.b]\ntype = \"passthrough\"\ninputs = [\"a\"]\n"
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("the graph has a cycle: operators.") && e[0].contains("operators.a"),
        "{e:?}"
    );
}

#[test]
fn rejects_duplicate_ids_sink_inputs_and_misplaced_fields() {
    let e = errors(&format!(
        "{SRC}follow = true\n[operators.src]\ntype = \"passthrough\"\ninputs = [\"out\"]\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"src\"]\npath = \"x\"\n"
    ));
    let all = e.join("\n");
    assert!(
        all.contains("sources.src: `follow` does not apply to a generator source"),
        "{all}"
    );
    assert!(
        all.contains("id `src` is already used by sources.src"),
        "{all}"
    );
    assert!(all.contains("input `out` is a sink"), "{all}");
    assert!(all.contains("`path` applies only to file sinks"), "{all}");
}

#[test]
fn needs_module_or_type_and_checks_forward_parallelism() {
    let e = errors(&format!(
        "{SRC}[operators.a]\ninputs = [\"src\"]\n[operators.b]\ntype = \"passthrough\"\ninputs = [\"src\"]\nparallelism = 2\npartition = \"forward\"\n"
    ));
    let all = e.join("\n");
    assert!(
        all.contains("operators.a: an operator needs `module`"),
        "{all}"
    );
    assert!(
        all.contains("operators.b: `partition = \"forward\"` needs the same parallelism"),
        "{all}"
    );
}

#[test]
fn builds_an_ordered_topology_with_resolved_paths() {
    let text = "[sources.lines]\ntype = \"file\"\npath = \"in.txt\"\n\
                [operators.up]\nmodule = \"m/up.wasm\"\ninputs = [\"lines\"]\nconfig = { a = 1 }\n\
                [sinks.out]\ntype = \"file\"\ninputs = [\"up\"]\npath = \"/abs/out.txt\"\nencoding = \"json\"\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("cfg")).unwrap();
    std::fs::write(dir.path().join("cfg/in.txt"), "a\n").unwrap();
    let file = parse_str(&dir.path().join("cfg/t.toml"), text.to_owned()).unwrap();
    let t = build(&file).unwrap();
    let ids: Vec<&str> = t.components.iter().map(|c| &*c.id).collect();
    assert_eq!(ids, ["lines", "up", "out"]);
    assert!(t.admin_socket.ends_with("cfg/var/weir/admin.sock"));
    match &t.components[1].kind {
        ComponentKind::Operator(OperatorSpec {
            body:
                OperatorBody::Wasm {
                    module,
                    config_json,
                },
            ..
        }) => {
            assert!(module.is_absolute() && module.ends_with("cfg/m/up.wasm"));
            assert_eq!(config_json, r#"{"a":1}"#);
        }
        other => panic!("{other:?}"),
    }
    assert!(t.data_dir.is_absolute() && t.data_dir.ends_with("cfg/var/weir"));
    assert!(t.savepoint_dir.is_absolute());
    assert!(t.savepoint_dir.ends_with("cfg/var/weir/savepoints"));
    assert_eq!(t.admin_address, None);
    assert!(t.warnings.is_empty());
}

#[test]
fn numbers_outside_their_range_name_field_line_and_range() {
    let e = errors(
        "[daemon]\nchannel_capacity = 0\n[state]\ncache = \"1KiB\"\n\
         [restart]\nbackoff = \"2days\"\nmax_failures = 2000000\n\
         [sources.g]\ntype = \"generator\"\nbatch_size = 0\nkeys = 0\nmax_record_size = \"2GiB\"\n\
         [operators.o]\ntype = \"passthrough\"\ninputs = [\"g\"]\nmemory_limit = \"8GiB\"\ncall_timeout = \"0s\"\n",
    );
    let all = e.join("\n");
    for want in [
        "t.toml:2:1: [daemon]: `channel_capacity` must be between 1 and 1024, not 0",
        "t.toml:4:1: [state]: `cache` must be between 64KiB and 64GiB, not 1KiB",
        "t.toml:6:1: [restart]: `backoff` must be between 0s and 1day, not 2days",
        "t.toml:7:1: [restart]: `max_failures` must be between 0 and 1000000, not 2000000",
        "t.toml:10:1: sources.g: `batch_size` must be between 1 and 1048576, not 0",
        "t.toml:11:1: sources.g: `keys` must be between 1 and",
        "t.toml:12:1: sources.g: `max_record_size` must be between 1KiB and 1GiB, not 2GiB",
        "t.toml:16:1: operators.o: `memory_limit` must be between 2MiB and 4GiB, not 8GiB",
        "t.toml:17:1: operators.o: `call_timeout` must be between 1ms and 1h, not 0s",
    ] {
        assert!(all.contains(want), "{want}\nin:\n{all}");
    }
    assert_eq!(e.len(), 9, "{all}");
}

#[test]
fn the_admin_address_is_an_ip_and_port() {
    let e = errors(&format!("[daemon]\nadmin_address = \"localhost\"\n{SRC}"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("t.toml:2"), "{e:?}");
    assert!(
        e[0].contains("`localhost` is not an address and port"),
        "{e:?}"
    );
    let file = parse_str(
        Path::new("t.toml"),
        format!("[daemon]\nadmin_address = \"127.0.0.1:9187\"\n{SRC}"),
    )
    .unwrap();
    let t = build(&file).unwrap();
    assert_eq!(t.admin_address, Some(([127, 0, 0, 1], 9187).into()));
}

#[test]
fn file_sinks_take_path_or_directory_and_path_warns_under_checkpoints() {
    let e = errors(&format!(
        "{SRC}[sinks.both]\ntype = \"file\"\ninputs = [\"src\"]\npath = \"a\"\ndirectory = \"b\"\n\
         [sinks.none]\ntype = \"file\"\ninputs = [\"src\"]\n\
         [sinks.std]\ntype = \"stdout\"\ninputs = [\"src\"]\ndirectory = \"c\"\n"
    ));
    let all = e.join("\n");
    assert!(
        all.contains("sinks.both: a file sink takes `path` or `directory`, not both"),
        "{all}"
    );
    assert!(
        all.contains("sinks.none: a file sink needs `path` (one file) or `directory`"),
        "{all}"
    );
    assert!(
        all.contains("sinks.std: `directory` applies only to file sinks"),
        "{all}"
    );

    let text = format!(
        "{SRC}[checkpoint]\ninterval = \"0s\"\nretain = 0\n\
         [sinks.out]\ntype = \"file\"\ninputs = [\"src\"]\npath = \"out.txt\"\n"
    );
    let file = parse_str(Path::new("t.toml"), text).unwrap();
    let t = build(&file).unwrap();
    let c = t.checkpoint.unwrap();
    assert_eq!(c.interval, None, "0 means only the final checkpoint");
    assert_eq!(c.retain, 1, "at least one checkpoint is kept");
    assert_eq!(c.timeout, DEFAULT_CHECKPOINT_TIMEOUT);
    let warnings: Vec<String> = t.warnings.iter().map(ToString::to_string).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("sinks.out") && w.contains("use `directory` for exactly-once")),
        "{warnings:?}"
    );
}
