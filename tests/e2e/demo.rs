//! The demo pipeline shipped in `config/`, run as the README runs it.

use std::path::Path;

use weir_test_artifacts as plugins;

use crate::support::{Sandbox, run, stderr};

#[test]
fn the_demo_pipeline_writes_the_upper_cased_words_that_contain_e() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sandbox = Sandbox::new();
    let config = std::fs::read_to_string(repo.join("config/demo.toml")).unwrap();
    sandbox.write("demo.toml", config);
    sandbox.write(
        "data/input.txt",
        std::fs::read(repo.join("config/data/input.txt")).unwrap(),
    );
    for (name, path) in [
        ("split_words", plugins::SPLIT_WORDS),
        ("uppercase", plugins::UPPERCASE),
        ("filter", plugins::FILTER),
    ] {
        sandbox.write(
            &format!("plugins/{name}.wasm"),
            std::fs::read(path).unwrap(),
        );
    }

    let out = run("run", &sandbox.path("demo.toml"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        sandbox.read("out/words.txt"),
        "THE\nOVER\nTHE\nWEIR\nWEBASSEMBLY\nOPERATORS\n"
    );
    assert!(stderr(&out).contains("records=6"), "{}", stderr(&out));
}
