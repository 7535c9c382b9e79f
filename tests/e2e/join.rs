//! An operator with two inputs learns which one each record came from: a
//! stream-table join (the `enrich` plugin) through the real binary.

use weir_test_artifacts as plugins;

use crate::support::{Sandbox, run, stderr, toml_path};

#[test]
fn a_two_input_operator_joins_by_knowing_each_record_s_input() {
    let sandbox = Sandbox::new();
    let users: String = (0..50).map(|u| format!("u{u} name{u}\n")).collect();
    let clicks: String = (0..2_000)
        .map(|i| format!("u{} click{i}\n", i % 50))
        .collect();
    sandbox.write("users.txt", users);
    sandbox.write("clicks.txt", clicks);
    let config = sandbox.write(
        "weir.toml",
        format!(
            "[daemon]\ndata_dir = \"var\"\n\
             [sources.users_in]\ntype = \"file\"\npath = \"users.txt\"\nbatch_size = 7\n\
             [sources.clicks_in]\ntype = \"file\"\npath = \"clicks.txt\"\nbatch_size = 13\n\
             [operators.users]\nmodule = {key_by}\ninputs = [\"users_in\"]\n\
             [operators.clicks]\nmodule = {key_by}\ninputs = [\"clicks_in\"]\n\
             [operators.enriched]\nmodule = {enrich}\ninputs = [\"clicks\", \"users\"]\nparallelism = 2\n\
             config = {{ reference = \"users\" }}\n\
             [sinks.out]\ntype = \"file\"\ninputs = [\"enriched\"]\npath = \"out.txt\"\n",
            key_by = toml_path(plugins::KEY_BY),
            enrich = toml_path(plugins::ENRICH),
        ),
    );
    let out = run("run", &config);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut got: Vec<String> = sandbox.read("out.txt").lines().map(str::to_owned).collect();
    got.sort();
    let mut want: Vec<String> = (0..2_000)
        .map(|i| format!("click{i}|name{}", i % 50))
        .collect();
    want.sort();
    assert_eq!(got, want, "every click once, with its own user's name");

    // A reference input the topology does not have: init says which there are.
    let bad = sandbox.write(
        "bad.toml",
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("reference = \"users\"", "reference = \"user\""),
    );
    let out = run("run", &bad);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("no input `user`") && err.contains("clicks, users"),
        "{err}"
    );
}
