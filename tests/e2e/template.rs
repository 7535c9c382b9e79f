//! `weir new plugin`: a crate made by the template outside this repository
//! passes its own unit test, builds to a component with one command, and
//! runs in a pipeline through the real binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{Sandbox, run, stderr, weir};

/// Where the generated crates build: one directory for all of them (and all
/// runs), so their dependencies compile once.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("template-plugins")
}

/// `cargo <args>` in `dir` as a plugin author runs it: none of the outer
/// build's settings.
fn cargo(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(dir).args(args);
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if (key.starts_with("CARGO_") && key != "CARGO_HOME") || key == "RUSTFLAGS" {
            cmd.env_remove(key);
        }
    }
    cmd.env("CARGO_TARGET_DIR", target_dir());
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "cargo {args:?} in {}:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn a_plugin_made_by_the_template_outside_the_repo_builds_tests_and_runs() {
    let sandbox = Sandbox::new();
    for (name, flag) in [("my-counter", Some("--state")), ("my-filter", None)] {
        let mut args = vec!["new", "plugin", name];
        args.extend(flag);
        let out = weir()
            .current_dir(sandbox.path(""))
            .args(&args)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{said}{}", stderr(&out));
        assert!(said.contains(&format!("created {name}")), "{said}");
        let out = cargo(&sandbox.path(name), &["test"]);
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("test result: ok. 1 passed"), "{said}");
    }
    // Made again: refused, the crate kept.
    let out = weir()
        .current_dir(sandbox.path(""))
        .args(["new", "plugin", "my-filter"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("exists already"), "{}", stderr(&out));

    let krate = sandbox.path("my-counter");
    cargo(
        &krate,
        &["build", "--release", "--target", "wasm32-unknown-unknown"],
    );
    let built = target_dir().join("wasm32-unknown-unknown/release/my_counter.wasm");
    // weir.toml names the module where a build without CARGO_TARGET_DIR puts it.
    let expected = krate.join("target/wasm32-unknown-unknown/release/my_counter.wasm");
    std::fs::create_dir_all(expected.parent().unwrap()).unwrap();
    std::fs::copy(&built, &expected).unwrap();
    let out = run("run", &krate.join("weir.toml"));
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut last = std::collections::BTreeMap::new();
    for line in stdout.lines() {
        let (key, count) = line.rsplit_once(',').unwrap();
        last.insert(key.to_owned(), count.parse::<u32>().unwrap());
    }
    // 20 records over 3 keys: 7, 7 and 6 of them.
    assert_eq!(
        last.values().copied().collect::<Vec<_>>(),
        [7, 7, 6],
        "{stdout}"
    );
}
