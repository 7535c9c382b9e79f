//! The README's two commands, the set-up script and `.ci/run` stay one path:
//! what a newcomer runs is what CI checks.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The commands of the README's first code block, comments stripped, with the
/// comment that labels each.
fn readme_commands() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let block = readme
        .split("```")
        .nth(1)
        .expect("the README has a code block");
    block
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (command, label) = l.split_once('#').unwrap_or((l, ""));
            (command.trim().to_owned(), label.trim().to_owned())
        })
        .collect()
}

#[test]
fn the_readme_commands_and_ci_share_one_set_up_script() {
    let commands = readme_commands();
    assert_eq!(
        commands.len(),
        2,
        "the README starts with two commands: {commands:?}"
    );
    assert!(commands[0].1.contains("demo"), "{commands:?}");
    assert!(commands[1].1.contains("run all tests"), "{commands:?}");
    for (command, _) in &commands {
        let script = repo().join(command.split_whitespace().next().unwrap());
        let text = std::fs::read_to_string(&script)
            .unwrap_or_else(|e| panic!("{command}: {}: {e}", script.display()));
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with("scripts/setup.sh")),
            "{} does not run scripts/setup.sh",
            script.display()
        );
        let syntax = Command::new("bash")
            .arg("-n")
            .arg(&script)
            .status()
            .unwrap();
        assert!(syntax.success(), "{} does not parse", script.display());
    }
    let ci = std::fs::read_to_string(repo().join(".ci/run")).unwrap();
    assert!(
        ci.lines()
            .any(|l| l.trim_start().starts_with("scripts/setup.sh --tests")),
        ".ci/run does not set up as the tests do"
    );
    // What .ci/run will run is the README's command, as written there.
    let printed = Command::new("bash")
        .arg(repo().join(".ci/run"))
        .arg("--print-test-command")
        .output()
        .unwrap();
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout).trim(),
        commands[1].0,
        ".ci/run does not run the README's test command"
    );
    assert!(
        ci.contains("eval \"$test_command\""),
        ".ci/run does not run it"
    );
    let test_script = std::fs::read_to_string(repo().join("scripts/test.sh")).unwrap();
    assert!(
        test_script.contains("scripts/setup.sh --tests"),
        "the test command does not install what the tests need"
    );
}

#[test]
fn the_set_up_script_finds_this_machine_ready() {
    // The test command ran it first; a second run installs nothing and passes.
    let out = Command::new(repo().join("scripts/setup.sh"))
        .arg("--tests")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!said.contains("installing"), "{said}");
    assert!(said.contains("setup: ready"), "{said}");
    let bad = Command::new(repo().join("scripts/setup.sh"))
        .arg("--everything")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
