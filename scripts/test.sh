#!/usr/bin/env bash
# Sets up a fresh machine (scripts/setup.sh --tests) and runs every test: the
# libraries' unit tests and the end-to-end tests that drive the real `weir`
# binary with real plugins, RocksDB, signals and HTTP scrapes. Arguments go to
# `cargo test` (e.g. `scripts/test.sh --workspace --test e2e -- reload`).
#
# The slow soak variant is separate:
#   WEIR_SOAK_SECS=180 scripts/test.sh --workspace --test e2e -- --ignored soak
set -euo pipefail
cd "$(dirname "$0")/.."
# Builds live outside the clone, so they survive a fresh checkout.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir-target}"
scripts/setup.sh --tests
# One profile (release) for tests, lints and the binary, so nothing builds twice.
if [ $# -gt 0 ]; then
    exec cargo test --release "$@"
fi
cargo test --release --workspace
# The checkpoint, crash, reload, window and dead-letter tests once more with operator chaining off
# (every component on its own thread), so both layouts stay covered. `--workspace`, not
# `-p weir`: the plugins' crates unify dependency features, so `-p weir` would build
# the daemon a second time.
WEIR_CHAINING=false cargo test --release --workspace --test e2e -- checkpoints:: reload:: windows:: dead_letters::
