//! Hostile and mistaken input a newcomer meets: numbers out of range, files
//! that are not files, a sink aimed at its own input, records without end,
//! a relative config, logs read by `grep`. Each gets a clear error naming the
//! file, line, field or source, and nothing hangs, panics or loses output.

use std::process::Stdio;
use std::time::Duration;

use weir_test_artifacts as plugins;

use crate::checkpoints::committed;
use crate::support::{RUN_LIMIT, Sandbox, run, stderr, toml_path, wait_with_limit, weir};
use crate::validate::{EX_CONFIG, expect_config_errors};

/// `weir validate` refuses `config` with every one of `expected`, and
/// nothing panics.
fn refused(sandbox: &Sandbox, config: &str, expected: &[&str]) -> String {
    let err = expect_config_errors(sandbox, config, expected);
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn numbers_out_of_range_are_refused_with_field_line_and_range() {
    let sandbox = Sandbox::new();
    refused(
        &sandbox,
        "[daemon]\ndata_dir = \"var\"\nchannel_capacity = 9223372036854775807\n\
         [checkpoint]\ninterval = \"100000years\"\n\
         [sources.gen]\ntype = \"generator\"\nvalue_size = 18446744073709551615\nrate = 1e300\n\
         [sinks.out]\ntype = \"blackhole\"\ninputs = [\"gen\"]\n",
        &[
            "weir.toml:3:1: [daemon]: `channel_capacity` must be between 1 and 1024, not 9223372036854775807",
            "weir.toml:5:1: [checkpoint]: `interval` must be between 0s and 30days",
            "weir.toml:8:1: sources.gen: `value_size` must be between 0 and 16777216 (`max_record_size`), not 18446744073709551615",
            "weir.toml:9:1: sources.gen: `rate` must be a positive number of records per second up to 1e9, not 1e300",
            "4 errors found",
        ],
    );
    // The run refuses the same file before it allocates anything.
    let out = run("run", &sandbox.path("weir.toml"));
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{}", stderr(&out));
    refused(
        &sandbox,
        "[sources.gen]\ntype = \"generator\"\nvalue_size = 100000000\n\
         [operators.o]\ntype = \"passthrough\"\ninputs = [\"gen\"]\ncall_timeout = \"10years\"\n\
         [sinks.out]\ntype = \"blackhole\"\ninputs = [\"o\"]\n",
        &[
            "weir.toml:3:1: sources.gen: `value_size` must be between 0 and 16777216 (`max_record_size`), not 100000000",
            "weir.toml:7:1: operators.o: `call_timeout` must be between 1ms and 1h",
        ],
    );
}

#[test]
fn a_missing_or_special_source_file_is_refused_by_validate() {
    let sandbox = Sandbox::new();
    let fifo = sandbox.path("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    refused(
        &sandbox,
        "[sources.gone]\ntype = \"file\"\npath = \"no-such.txt\"\n\
         [sources.pipe]\ntype = \"file\"\npath = \"fifo\"\n\
         [sources.zero]\ntype = \"file\"\npath = \"/dev/zero\"\n\
         [sinks.out]\ntype = \"blackhole\"\ninputs = [\"gone\", \"pipe\", \"zero\"]\n",
        &[
            "weir.toml:1:10: sources.gone: `path`",
            "no-such.txt does not exist",
            "sources.pipe: `path`",
            "is a FIFO, not a regular file",
            "sources.zero: `path`: /dev/zero is a character device",
        ],
    );
}

/// Runs weir with `args`, killing it (and failing) if it outlives `limit`:
/// what must be refused at once may not hang.
fn quickly(args: &[&std::ffi::OsStr], limit: Duration) -> std::process::Output {
    let child = weir()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_with_limit(child, limit)
}

#[test]
fn a_config_or_module_that_is_not_a_regular_file_is_refused_not_waited_on() {
    let sandbox = Sandbox::new();
    let fifo = sandbox.path("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let limit = Duration::from_secs(60);
    for config in [fifo.as_os_str(), "/dev/zero".as_ref()] {
        let out = quickly(&["validate".as_ref(), "--config".as_ref(), config], limit);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(EX_CONFIG), "{err}");
        assert!(err.contains("cannot read the config file"), "{err}");
        assert!(err.contains("not a regular file"), "{err}");
    }
    let big = sandbox.write("big.toml", vec![b'#'; 17 * 1024 * 1024]);
    let out = quickly(
        &["validate".as_ref(), "--config".as_ref(), big.as_os_str()],
        limit,
    );
    assert!(
        stderr(&out).contains("a config file may have at most"),
        "{}",
        stderr(&out)
    );

    let config = sandbox.write(
        "weir.toml",
        "[sources.gen]\ntype = \"generator\"\ncount = 1\n\
         [operators.o]\nmodule = \"fifo\"\ninputs = [\"gen\"]\n\
         [sinks.out]\ntype = \"blackhole\"\ninputs = [\"o\"]\n",
    );
    let out = quickly(
        &["run".as_ref(), "--config".as_ref(), config.as_os_str()],
        limit,
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{err}");
    assert!(err.contains("operators.o: cannot read the module"), "{err}");
    assert!(err.contains("is a FIFO"), "{err}");
}

#[test]
fn a_sink_that_would_overwrite_a_source_input_is_refused() {
    let sandbox = Sandbox::new();
    sandbox.write("in.txt", "precious\n");
    sandbox.write("data/log.txt", "also precious\n");
    refused(
        &sandbox,
        "[sources.lines]\ntype = \"file\"\npath = \"in.txt\"\n\
         [sources.logs]\ntype = \"file\"\npath = \"data/log.txt\"\n\
         [sinks.same]\ntype = \"file\"\ninputs = [\"lines\"]\npath = \"./sub/../in.txt\"\n\
         [sinks.around]\ntype = \"file\"\ninputs = [\"logs\"]\ndirectory = \"data\"\n\
         [sinks.twice]\ntype = \"file\"\ninputs = [\"logs\"]\ndirectory = \"data/\"\n",
        &[
            "sinks.same: writes to",
            "in.txt, which sources.lines reads: the sink would destroy its input",
            "sinks.around: writes to",
            "which sources.logs reads",
            "sinks.twice: writes to",
            "as sinks.around does",
        ],
    );
    let out = run("run", &sandbox.path("weir.toml"));
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{}", stderr(&out));
    assert_eq!(sandbox.read("in.txt"), "precious\n");
    assert_eq!(sandbox.read("data/log.txt"), "also precious\n");
}

#[test]
fn a_record_longer_than_max_record_size_names_the_source_and_offset() {
    let sandbox = Sandbox::new();
    let mut input = b"short\nalso short\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 5000));
    sandbox.write("in.txt", &input);
    let config = sandbox.write(
        "weir.toml",
        "[sources.lines]\ntype = \"file\"\npath = \"in.txt\"\nmax_record_size = \"4KiB\"\n\
         [sinks.out]\ntype = \"blackhole\"\ninputs = [\"lines\"]\n",
    );
    let out = run("run", &config);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("lines"), "the source is named:\n{err}");
    assert!(
        err.contains("the record at byte offset 17 is longer than `max_record_size` (4KiB)"),
        "{err}"
    );

    // The same on standard input.
    let config = sandbox.write(
        "stdin.toml",
        "[sources.lines]\ntype = \"stdin\"\nmax_record_size = \"4KiB\"\n\
         [sinks.out]\ntype = \"blackhole\"\ninputs = [\"lines\"]\n",
    );
    let mut child = weir()
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        // The daemon may stop reading (and close the pipe) once it has failed.
        let _ = stdin.write_all(&input);
    }
    let out = wait_with_limit(child, RUN_LIMIT);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the record at byte offset 17 is longer than `max_record_size`"),
        "{err}"
    );
}

#[test]
fn a_record_larger_than_wasmtimes_default_transfer_cap_passes_a_plugin() {
    // wasmtime lets a call pass the host 128 MiB by default, and a 200 MB
    // record failed with "fuel allocated for hostcalls has been exhausted"
    // even under a 1 GiB memory_limit. What a plugin may pass is its memory
    // limit now, the limit a user already sets.
    let sandbox = Sandbox::new();
    let big = 130 * 1024 * 1024;
    let mut input = b"before\n".to_vec();
    input.resize(input.len() + big, b'x');
    input.extend_from_slice(b"\nafter\n");
    sandbox.write("in.txt", &input);
    drop(input);
    let config = sandbox.write(
        "weir.toml",
        format!(
            "[sources.lines]\ntype = \"file\"\npath = \"in.txt\"\nmax_record_size = \"256MiB\"\n\
             [operators.copy]\nmodule = {}\ninputs = [\"lines\"]\nmemory_limit = \"1GiB\"\n\
             [sinks.out]\ntype = \"file\"\npath = \"out.txt\"\ninputs = [\"copy\"]\n",
            toml_path(plugins::PASSTHROUGH)
        ),
    );
    let out = run("run", &config);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let output = std::fs::read(sandbox.path("out.txt")).unwrap();
    assert_eq!(output.len(), 7 + big + 1 + 6, "every byte through");
    assert!(output.starts_with(b"before\nxxx") && output.ends_with(b"xxx\nafter\n"));
}

#[test]
fn logs_to_a_file_or_pipe_carry_no_colour_codes() {
    let sandbox = Sandbox::new();
    let config = sandbox.write(
        "weir.toml",
        "[sources.gen]\ntype = \"generator\"\ncount = 10\n\
         [sinks.out]\ntype = \"blackhole\"\ninputs = [\"gen\"]\n",
    );
    let out = weir()
        .env_remove("NO_COLOR")
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("pipeline finished"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "escape codes in a piped log:\n{err:?}"
    );
    assert!(err.contains("records=10"), "grep-able fields:\n{err}");
}

#[test]
fn checkpoints_from_a_relative_config_restore_from_any_directory() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "weir.toml",
        format!(
            "[daemon]\ndata_dir = \"var\"\n[checkpoint]\ninterval = \"100ms\"\n\
             [sources.gen]\ntype = \"generator\"\ncount = 40000\nrate = 40000.0\nbatch_size = 100\n\
             [operators.seq]\nmodule = {}\ninputs = [\"gen\"]\n\
             [sinks.out]\ntype = \"file\"\ndirectory = \"./out\"\ninputs = [\"seq\"]\n",
            toml_path(plugins::SEQUENCE)
        ),
    );
    // Crash after checkpoint 2's metadata is durable, before its parts are
    // committed: the restore must find them by what the metadata says.
    let out = weir()
        .current_dir(sandbox.path(""))
        .args(["run", "--config", "weir.toml"])
        .env("WEIR_FAILPOINT", "before-commit:2")
        .output()
        .unwrap();
    assert!(
        std::os::unix::process::ExitStatusExt::signal(&out.status) == Some(6),
        "{}",
        stderr(&out)
    );
    let metadata = std::fs::read_dir(sandbox.path("var/checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path().join("_metadata"))
        .find(|m| m.is_file())
        .unwrap();
    let text = std::fs::read_to_string(&metadata).unwrap();
    let root = sandbox.path("").canonicalize().unwrap();
    assert!(
        !text.contains("\"./"),
        "relative paths in {}:\n{text}",
        metadata.display()
    );
    assert!(
        text.contains(&format!("{}/", root.display()))
            || text.contains(&format!("{}/", sandbox.path("").display())),
        "{text}"
    );

    let out = weir()
        .current_dir("/")
        .args(["run", "--config"])
        .arg(sandbox.path("weir.toml"))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("restoring from checkpoint"), "{err}");
    let lines = committed(&sandbox.path("out"));
    crate::checkpoints::assert_contiguous(&lines, "after a restore from another directory");
    assert_eq!(lines.len(), 40_000);
}

#[test]
fn a_plugin_built_for_wasi_is_refused_with_how_to_build_it() {
    let sandbox = Sandbox::new();
    let err = refused(
        &sandbox,
        &format!(
            "[sources.gen]\ntype = \"generator\"\ncount = 1\n\
             [operators.wasi]\nmodule = {}\ninputs = [\"gen\"]\n\
             [sinks.out]\ntype = \"blackhole\"\ninputs = [\"wasi\"]\n",
            toml_path(plugins::PASSTHROUGH_WASIP2)
        ),
        &[
            "operators.wasi: this component imports WASI (wasi:",
            "built for wasm32-wasip2",
            "build it for wasm32-unknown-unknown",
            "linker = \"wasm-component-ld\"",
            "weir new plugin",
        ],
    );
    assert!(
        err.contains("passthrough.wasm"),
        "the module is named:\n{err}"
    );
}
