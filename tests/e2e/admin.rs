//! The admin endpoint of a running daemon: probes, `/topology`, and savepoints
//! taken through `weir savepoint` and `POST /savepoints`, then started from.

use weir::operator_host::module::hex_sha256;
use weir_test_artifacts as plugins;

use crate::checkpoints::{assert_contiguous, committed};
use crate::support::{
    Daemon, Sandbox, WAIT_LIMIT, free_port, http, http_with, metric, newest_completed_checkpoint,
    run, signal, spawn_run, stderr, toml_path, wait_ready, wait_until, weir,
};

/// An endless, rate-limited generator numbered by `sequence` (operator state)
/// into an exactly-once directory sink, with checkpoints every 100 ms of
/// which only one is kept.
fn generator_config(sandbox: &Sandbox, port: u16) -> std::path::PathBuf {
    sandbox.write(
        "gen.toml",
        format!(
            "[daemon]\ndata_dir = \"var\"\nadmin_address = \"127.0.0.1:{port}\"\n\
             [checkpoint]\ninterval = \"100ms\"\nretain = 1\n\
             [sources.nums]\ntype = \"generator\"\nrate = 20000.0\nbatch_size = 100\n\
             [operators.seq]\nmodule = {seq}\ninputs = [\"nums\"]\n\
             [sinks.out]\ntype = \"file\"\ndirectory = \"out\"\ninputs = [\"seq\"]\n",
            seq = toml_path(plugins::SEQUENCE),
        ),
    )
}

/// Waits until the generator's records reach `seq`.
fn wait_for_records(port: u16) {
    wait_until(WAIT_LIMIT, "records reaching `seq`", || {
        let body = http("GET", port, "/metrics", "").1;
        metric(
            &body,
            r#"weir_records_in_total{instance="0",operator="seq"}"#,
        )
        .is_some_and(|n| n > 0.0)
    });
}

/// `promtool check metrics` finds nothing wrong with a scrape.
fn promtool_check(scrape: &str) {
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is installed; scripts/setup.sh --tests installs it");
    use std::io::Write as _;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        checked.status.success() && said.trim().is_empty(),
        "promtool: {said}"
    );
}

fn savepoint_cli(sandbox: &Sandbox, config: &std::path::Path, dir: &str) -> std::process::Output {
    weir()
        .current_dir(sandbox.path(""))
        .args(["savepoint", "--config"])
        .arg(config)
        .arg(dir)
        .output()
        .expect("run weir savepoint")
}

#[test]
fn probes_and_topology_describe_the_running_daemon() {
    let sandbox = Sandbox::new();
    let port = free_port();
    let config = generator_config(&sandbox, port);
    let child = spawn_run(&config);
    wait_ready(port);
    assert_eq!(http("GET", port, "/health", ""), (200, "ok\n".into()));

    let (status, body) = http("GET", port, "/topology", "");
    assert_eq!(status, 200, "{body}");
    let topology: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<&str> = topology["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["nums", "seq", "out"]);
    let seq = &topology["components"][1];
    let module = std::fs::read(plugins::SEQUENCE).unwrap();
    assert_eq!(seq["module_sha256"], hex_sha256(&module).as_str());
    assert_eq!(seq["parallelism"], 1);
    assert_eq!(topology["edges"][0]["from"], "nums");
    assert_eq!(topology["edges"][0]["to"], "seq");

    assert_eq!(http("GET", port, "/nope", "").0, 404);
    signal(&child, "TERM");
    let out = child.wait_output();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn metrics_move_as_records_flow_and_pass_promtool() {
    let sandbox = Sandbox::new();
    let port = free_port();
    let config = generator_config(&sandbox, port);
    let child = spawn_run(&config);
    wait_ready(port);
    let scrape = || {
        let (status, body) = http("GET", port, "/metrics", "");
        assert_eq!(status, 200, "{body}");
        body
    };
    let records = r#"weir_records_in_total{instance="0",operator="seq"}"#;
    let first = scrape();
    let a = metric(&first, records).unwrap_or(0.0);
    let mut second = String::new();
    wait_until(WAIT_LIMIT, "records in to move and a checkpoint", || {
        second = scrape();
        metric(&second, records).is_some_and(|b| b > a)
            && metric(&second, "weir_checkpoints_completed_total").is_some_and(|n| n >= 1.0)
    });
    // Each series is read at its own moment, so only "it moves" is exact.
    let sent = metric(
        &second,
        r#"weir_records_out_total{instance="0",operator="nums"}"#,
    );
    assert!(sent.is_some_and(|n| n > 0.0), "{second}");
    assert!(
        metric(
            &second,
            r#"weir_records_in_total{instance="0",operator="out"}"#
        )
        .is_some()
    );
    assert!(metric(&second, "weir_checkpoints_completed_total").unwrap() >= 1.0);
    assert!(metric(&second, "weir_checkpoint_last_completed_id").unwrap() >= 1.0);
    assert!(
        metric(
            &second,
            r#"weir_guest_memory_bytes{instance="0",operator="seq"}"#
        )
        .unwrap()
            > 0.0
    );
    assert!(
        metric(
            &second,
            r#"weir_process_duration_seconds_count{instance="0",operator="seq"}"#
        )
        .unwrap()
            > 0.0
    );
    assert_eq!(
        metric(&second, "weir_config_last_reload_successful"),
        Some(1.0)
    );
    assert!(second.contains("weir_build_info{version=\""), "{second}");
    assert!(
        metric(
            &second,
            r#"weir_records_in_total{instance="0",operator="nums"}"#
        )
        .is_none(),
        "a source has no records in: {second}"
    );

    promtool_check(&second);

    signal(&child, "TERM");
    let out = child.wait_output();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_savepoint_taken_from_the_running_daemon_survives_retention_and_restores() {
    let sandbox = Sandbox::new();
    let port = free_port();
    let config = generator_config(&sandbox, port);
    let child = spawn_run(&config);
    wait_ready(port);
    wait_for_records(port);

    // Through the command line, to a relative directory (resolved by the CLI)
    // under the savepoint directory.
    let out = savepoint_cli(&sandbox, &config, "var/savepoints/sp1");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}", stderr(&out));
    assert!(said.contains("written to"), "{said}");
    let metadata = sandbox.read("var/savepoints/sp1/_metadata");
    assert!(metadata.contains("\"kind\": \"savepoint\""), "{metadata}");
    assert!(sandbox.path("var/savepoints/sp1/seq-0.opstate").is_file());

    // Through the endpoint, to the default directory.
    let (status, body) = http("POST", port, "/savepoints", "");
    assert_eq!(status, 200, "{body}");
    let taken: serde_json::Value = serde_json::from_str(&body).unwrap();
    let dir = std::path::PathBuf::from(taken["directory"].as_str().unwrap());
    assert!(dir.starts_with(sandbox.path("var/savepoints")), "{body}");
    assert!(dir.join("_metadata").is_file());

    // A used directory, a relative one, one outside the savepoint directory
    // and one the daemon manages are refused, naming the problem.
    let refused = |dir: std::path::PathBuf, why: &str| {
        let body = serde_json::json!({ "directory": dir }).to_string();
        let (status, body) = http("POST", port, "/savepoints", &body);
        assert_eq!(status, 400, "{body}");
        assert!(body.contains(why), "{why}: {body}");
    };
    refused(sandbox.path("var/savepoints/sp1"), "not empty");
    refused("rel".into(), "absolute");
    refused(
        sandbox.path("elsewhere"),
        "only under the savepoint directory",
    );
    let checkpoints = sandbox.path("var/checkpoints/chk-18446744073709551615");
    refused(checkpoints.clone(), "only under the savepoint directory");
    refused(
        sandbox.path("out/part-9999999999-0"),
        "only under the savepoint directory",
    );
    assert!(!checkpoints.exists());

    // Retention (keep 1) goes on removing checkpoints, never savepoints.
    let after = taken["id"].as_u64().unwrap() + 3;
    wait_until(WAIT_LIMIT, "three more checkpoints", || {
        newest_completed_checkpoint(&sandbox.path("var")) >= after
    });
    let checkpoints = std::fs::read_dir(sandbox.path("var/checkpoints"))
        .unwrap()
        .count();
    assert!(
        checkpoints <= 2,
        "{checkpoints} checkpoint directories kept"
    );
    assert!(sandbox.path("var/savepoints/sp1/_metadata").is_file());
    assert!(dir.join("_metadata").is_file());

    signal(&child, "TERM");
    let out = child.wait_output();
    assert!(out.status.success(), "{}", stderr(&out));
    let first_run = committed(&sandbox.path("out")).len();
    assert_contiguous(&committed(&sandbox.path("out")), "first run");

    // No daemon: the command line says so.
    let out = savepoint_cli(&sandbox, &config, "sp2");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot reach the daemon"),
        "{}",
        stderr(&out)
    );

    // Starting from sp1 with --remove-newer-output drops the output committed
    // after it and goes on from its generator position and numbering: still
    // one unbroken sequence.
    let savepoint = sandbox.path("var/savepoints/sp1");
    let child = Daemon::spawn(
        &config,
        &[
            "--from-savepoint".as_ref(),
            savepoint.as_os_str(),
            "--remove-newer-output".as_ref(),
        ],
    );
    wait_ready(port);
    wait_for_records(port);
    signal(&child, "TERM");
    let out = child.wait_output();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("restoring from checkpoint"), "{err}");
    let lines = committed(&sandbox.path("out"));
    assert_contiguous(&lines, "after starting from the savepoint");
    assert!(!lines.is_empty() && first_run > 0);
}

#[test]
fn a_followed_file_source_reports_its_lag() {
    let sandbox = Sandbox::new();
    let port = free_port();
    sandbox.write("in.txt", "a\nb\nc\n");
    let config = sandbox.write(
        "follow.toml",
        format!(
            "[daemon]\nadmin_address = \"127.0.0.1:{port}\"\n\
             [sources.lines]\ntype = \"file\"\npath = \"in.txt\"\nfollow = true\n\
             [operators.up]\nmodule = {}\ninputs = [\"lines\"]\n\
             [sinks.out]\ntype = \"blackhole\"\ninputs = [\"up\"]\n",
            toml_path(plugins::UPPERCASE)
        ),
    );
    let child = spawn_run(&config);
    wait_ready(port);
    let records = r#"weir_records_in_total{instance="0",operator="out"}"#;
    let lag = r#"weir_source_lag_bytes{operator="lines"}"#;
    let settled = |n: f64| {
        wait_until(WAIT_LIMIT, "the file read", || {
            let scrape = http("GET", port, "/metrics", "").1;
            metric(&scrape, records) == Some(n) && metric(&scrape, lag) == Some(0.0)
        });
    };
    settled(3.0);
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .append(true)
        .open(sandbox.path("in.txt"))
        .unwrap()
        .write_all(b"d\ne\n")
        .unwrap();
    settled(5.0);
    signal(&child, "TERM");
    let out = child.wait_output();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_plugin_exports_its_own_metrics_labelled_by_operator_and_instance() {
    let sandbox = Sandbox::new();
    let port = free_port();
    let lines: String = (0..1000).map(|i| format!("{i}\n")).collect();
    let kept = (0..1000).filter(|i| i.to_string().contains('7')).count();
    sandbox.write("in.txt", lines);
    let config = sandbox.write(
        "f.toml",
        format!(
            "[daemon]\nadmin_address = \"127.0.0.1:{port}\"\n\
             [sources.lines]\ntype = \"file\"\npath = \"in.txt\"\nfollow = true\nbatch_size = 64\n\
             [operators.sevens]\nmodule = {}\ninputs = [\"lines\"]\nconfig = {{ contains = \"7\" }}\n\
             [sinks.out]\ntype = \"blackhole\"\ninputs = [\"sevens\"]\n",
            toml_path(plugins::FILTER)
        ),
    );
    let child = spawn_run(&config);
    wait_ready(port);
    let series = r#"weir_plugin_filtered_out_total{instance="0",operator="sevens"}"#;
    let mut scrape = String::new();
    wait_until(WAIT_LIMIT, "every line filtered", || {
        scrape = http("GET", port, "/metrics", "").1;
        metric(&scrape, series) == Some((1000 - kept) as f64)
    });
    assert!(
        scrape.contains(
            "# HELP weir_plugin_filtered_out_total Records dropped for not containing the text."
        ),
        "{scrape}"
    );
    assert_eq!(
        metric(
            &scrape,
            r#"weir_records_out_total{instance="0",operator="sevens"}"#
        ),
        Some(kept as f64)
    );
    promtool_check(&scrape);
    signal(&child, "TERM");
    let out = child.wait_output();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn the_admin_socket_serves_the_cli_with_no_port_and_a_token_guards_tcp() {
    use std::os::unix::fs::PermissionsExt as _;
    let sandbox = Sandbox::new();
    let config = sandbox.write(
        "gen.toml",
        format!(
            "[daemon]\ndata_dir = \"var\"\n[checkpoint]\ninterval = \"100ms\"\n\
             [sources.nums]\ntype = \"generator\"\nrate = 5000.0\nbatch_size = 100\n\
             [operators.seq]\nmodule = {seq}\ninputs = [\"nums\"]\n\
             [sinks.out]\ntype = \"file\"\ndirectory = \"out\"\ninputs = [\"seq\"]\n",
            seq = toml_path(plugins::SEQUENCE),
        ),
    );
    let socket = sandbox.path("var/admin.sock");
    let mut daemon = Daemon::start(&sandbox, "first", &config, &[]);
    let listening = daemon.wait_for("the admin socket", |log| log.contains("pipeline running"));
    assert!(listening, "{}", daemon.log());
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "only the daemon's user may use the socket");

    // `weir reload` and `weir savepoint` reach it with no admin_address.
    let out = weir()
        .args(["reload", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}", stderr(&out));
    assert!(said.contains("reloaded: nothing changed"), "{said}");
    let out = savepoint_cli(&sandbox, &config, "var/savepoints/sp");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(sandbox.path("var/savepoints/sp/_metadata").is_file());

    // A second daemon on the same data_dir finds the first and refuses.
    let second = run("run", &config);
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("another weir answers on"),
        "{}",
        stderr(&second)
    );

    signal(&daemon, "TERM");
    let (status, log) = daemon.wait();
    assert!(status.success(), "{log}");
    assert!(!socket.exists(), "the socket is removed at exit");

    // On TCP with a token: changes need it, probes and metrics do not.
    let port = free_port();
    sandbox.write("token", "s3cret\n");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[daemon]\n",
        &format!("[daemon]\nadmin_address = \"127.0.0.1:{port}\"\nadmin_token_file = \"token\"\n"),
    );
    std::fs::write(&config, text).unwrap();
    let daemon = Daemon::start(&sandbox, "second", &config, &[]);
    wait_ready(port);
    let (status, body) = http("POST", port, "/reload", "");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Authorization: Bearer"), "{body}");
    let (status, body) = http_with(
        "POST",
        port,
        "/reload",
        "",
        &[("Authorization", "Bearer wrong")],
    );
    assert_eq!(status, 401, "{body}");
    let (status, body) = http_with(
        "POST",
        port,
        "/reload",
        "",
        &[("Authorization", "Bearer s3cret")],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(http("GET", port, "/metrics", "").0, 200);
    let out = weir()
        .args([
            "reload",
            "--admin",
            &format!("127.0.0.1:{port}"),
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the CLI sends the token: {}",
        stderr(&out)
    );
    signal(&daemon, "TERM");
    let (status, log) = daemon.wait();
    assert!(status.success(), "{log}");
}

#[test]
fn a_request_that_never_finishes_its_header_is_dropped() {
    use std::io::{Read as _, Write as _};
    let sandbox = Sandbox::new();
    let port = free_port();
    let config = generator_config(&sandbox, port);
    let child = spawn_run(&config);
    wait_ready(port);
    // Many half-sent requests, held open.
    let mut held: Vec<std::net::TcpStream> = (0..50)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\nHost: weir\r\n")
                .unwrap();
            s
        })
        .collect();
    // The daemon answers others meanwhile.
    assert_eq!(http("GET", port, "/health", "").0, 200);
    // And closes the half-sent ones once the header is overdue (10 s).
    let first = &mut held[0];
    first
        .set_read_timeout(Some(std::time::Duration::from_secs(120)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = first.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(
        waited < std::time::Duration::from_secs(100),
        "a half-sent request was held for {waited:?}"
    );
    let answer = String::from_utf8_lossy(&rest);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    drop(held);
    signal(&child, "TERM");
    let out = child.wait_output();
    assert!(out.status.success(), "{}", stderr(&out));
}
