#!/usr/bin/env bash
# Sets up what a fresh machine needs (scripts/setup.sh), builds the daemon and the
# demo plugins, runs the demo pipeline in config/demo.toml and shows its output.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir-target}"

scripts/setup.sh
cargo build --release -p weir
cargo build --profile plugin --target wasm32-unknown-unknown -p split-words -p uppercase -p filter -p word-count
mkdir -p config/plugins
for plugin in split_words uppercase filter word_count; do
    cp "$CARGO_TARGET_DIR/wasm32-unknown-unknown/plugin/$plugin.wasm" config/plugins/
done

rm -rf config/out
"$CARGO_TARGET_DIR/release/weir" validate --config config/demo.toml
"$CARGO_TARGET_DIR/release/weir" run --config config/demo.toml
echo "--- config/out/words.txt"
cat config/out/words.txt
