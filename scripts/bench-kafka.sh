#!/usr/bin/env bash
# `weir bench --suite kafka` against a broker of its own: sets up (with the
# brokers the tests use), builds the daemon and the plugins, starts noida-db
# on a free loopback port, runs the suite, stops the broker. Extra arguments
# go to `weir bench` (e.g. --kafka-records 200000).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir-target}"
scripts/setup.sh --tests
cargo build --release -p weir
cargo build --profile plugin --target wasm32-unknown-unknown -p passthrough -p split-words -p word-count

data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Its own session: noida-db's wrapper starts the broker as a child, and the
# whole group stops at the end.
setsid "${WEIR_BROKERS:-$HOME/.cache/weir-brokers}/venv/bin/noida-db" start --data-dir "$data" \
    --only kafka --kafka-port "$port" >"$data/broker.log" 2>&1 &
broker=$!
trap 'kill -TERM -- -$broker 2>/dev/null; wait $broker 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
"$CARGO_TARGET_DIR/release/weir" bench --suite kafka --brokers "127.0.0.1:$port" \
    --plugins "$CARGO_TARGET_DIR/wasm32-unknown-unknown/plugin" "$@"
