//! Builds every example and hostile plugin for wasm32-unknown-unknown (linked
//! into components by wasm-component-ld, see `.cargo/config.toml`) and writes
//! their paths as constants, so tests never depend on hand-built wasm.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (constant name, package, file stem)
const PLUGINS: &[(&str, &str, &str)] = &[
    ("PASSTHROUGH", "passthrough", "passthrough"),
    ("SPLIT_WORDS", "split-words", "split_words"),
    ("UPPERCASE", "uppercase", "uppercase"),
    ("FILTER", "filter", "filter"),
    ("WORD_COUNT", "word-count", "word_count"),
    ("STATE_KINDS", "state-kinds", "state_kinds"),
    ("KEY_BY", "key-by", "key_by"),
    ("SEQUENCE", "sequence", "sequence"),
    ("DEDUPE", "dedupe", "dedupe"),
    ("DEDUPE_TTL", "dedupe-ttl", "dedupe_ttl"),
    ("WINDOW_COUNT", "window-count", "window_count"),
    ("SESSIONS", "sessions", "sessions"),
    ("TIMEOUT", "timeout", "timeout"),
    ("ENRICH", "enrich", "enrich"),
    ("WORD_COUNT_V2", "word-count-v2", "word_count_v2"),
    (
        "WORD_COUNT_RETYPED",
        "word-count-retyped",
        "word_count_retyped",
    ),
    (
        "WORD_COUNT_MIGRATED",
        "word-count-migrated",
        "word_count_migrated",
    ),
    ("PICKY", "picky", "picky"),
    ("TRAP", "hostile-trap", "hostile_trap"),
    ("SPIN", "hostile-spin", "hostile_spin"),
    ("MEMORY_HOG", "hostile-memory-hog", "hostile_memory_hog"),
    (
        "EXTRA_IMPORT",
        "hostile-extra-import",
        "hostile_extra_import",
    ),
    ("NO_EXPORT", "hostile-no-export", "hostile_no_export"),
    (
        "EMIT_IN_INIT",
        "hostile-emit-in-init",
        "hostile_emit_in_init",
    ),
    (
        "OLD_CONTRACT",
        "hostile-old-contract",
        "hostile_old_contract",
    ),
];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .ancestors()
        .nth(2)
        .expect("tests/artifacts is two levels below the workspace");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // OUT_DIR is <target>/<profile>/build/<package>-<hash>/out: keep the wasm
    // build beside it, outside the hashed directory, so it stays incremental.
    let target_root = out_dir
        .ancestors()
        .nth(4)
        .expect("OUT_DIR is inside the target directory");
    let wasm_target = target_root.join("wasm-plugins");

    let packages: Vec<&str> = PLUGINS.iter().map(|(_, package, _)| *package).collect();
    build(workspace, &wasm_target, "wasm32-unknown-unknown", &packages);
    // One plugin built for wasm32-wasip2 as well, the way most component
    // toolchains build: the tests check that Weir refuses it and says why.
    build(workspace, &wasm_target, "wasm32-wasip2", &["passthrough"]);

    let dir = wasm_target.join("wasm32-unknown-unknown").join("plugin");
    let mut consts = String::new();
    for (name, package, stem) in PLUGINS {
        let path = dir.join(format!("{stem}.wasm"));
        assert!(path.exists(), "{} was not built", path.display());
        let _ = writeln!(
            consts,
            "/// The `{package}` plugin, built for wasm.\npub const {name}: &str = {:?};",
            path.display().to_string()
        );
    }
    let wasip2 = wasm_target
        .join("wasm32-wasip2")
        .join("plugin")
        .join("passthrough.wasm");
    assert!(wasip2.exists(), "{} was not built", wasip2.display());
    let _ = writeln!(
        consts,
        "/// The `passthrough` plugin built for wasm32-wasip2 (a component importing WASI).\npub const PASSTHROUGH_WASIP2: &str = {:?};",
        wasip2.display().to_string()
    );
    std::fs::write(out_dir.join("plugins.rs"), consts).expect("cannot write plugins.rs");

    // Relative to this package, not absolute: cargo keys a build script's
    // state by package, not by checkout, so two clones sharing one target
    // directory would otherwise each watch the other's files.
    for watched in [
        "guest-sdk",
        "plugins",
        "tests/plugins",
        "wit",
        "Cargo.lock",
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed=../../{watched}");
    }
}

/// `cargo build --profile plugin --target <target> -p <packages>` into
/// `target_dir`, without the outer build's settings (they are for the host).
fn build(workspace: &Path, target_dir: &Path, target: &str, packages: &[&str]) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args([
            "build",
            "--profile",
            "plugin",
            "--target",
            target,
            "--target-dir",
        ])
        .arg(target_dir);
    for package in packages {
        cmd.args(["-p", package]);
    }
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || matches!(
                key,
                "RUSTFLAGS" | "RUSTC_WRAPPER" | "RUSTC_WORKSPACE_WRAPPER" | "TARGET" | "HOST"
            )
        {
            cmd.env_remove(key);
        }
    }
    let status = cmd.status().expect("cannot run cargo to build the plugins");
    assert!(
        status.success(),
        "building the plugins for {target} failed ({status}); is the target installed? \
         `rustup target add {target}` (scripts/setup.sh does it)"
    );
}
