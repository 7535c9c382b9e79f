#!/usr/bin/env bash
# Installs what building and testing Weir needs on a fresh Debian machine, and
# nothing that is already there. The README's commands and CI call this one
# script, so what a newcomer gets is what CI checks.
#
#   scripts/setup.sh          the toolchain, the wasm targets, libclang (RocksDB's bindings)
#   scripts/setup.sh --tests  also what the end-to-end tests drive: systemd-analyze, promtool,
#                             and the brokers the connector tests run against: NATS
#                             (Debian's nats-server) and a Kafka-protocol broker (PyPI's
#                             noida-db, in a virtualenv under $WEIR_BROKERS, by default
#                             ~/.cache/weir-brokers; tests/e2e/brokers.rs says why these)
#
# Needs root or sudo only when a Debian package is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

tests=false
case "${1:-}" in
    --tests) tests=true ;;
    "") ;;
    *) echo "usage: scripts/setup.sh [--tests]" >&2; exit 2 ;;
esac

# Debian packages, by the command or file that shows each is there.
missing=()
need() { # need PACKAGE TEST...
    local package=$1; shift
    "$@" >/dev/null 2>&1 || missing+=("$package")
}
# libclang itself (libclang.so*, libclang-14.so*), not libclang-cpp, which some
# Debian images carry without it and which bindgen cannot use.
libclang_present() { compgen -G '/usr/lib/llvm-*/lib/libclang.so*' || compgen -G '/usr/lib/*/libclang-[0-9]*.so*'; }
need libclang-dev libclang_present
need gcc command -v cc
need make command -v make
# rdkafka builds its bundled librdkafka with configure and make: C++ and zlib.
need g++ command -v g++
need zlib1g-dev test -e /usr/include/zlib.h
if $tests; then
    need systemd command -v systemd-analyze
    need prometheus command -v promtool
    need nats-server command -v nats-server
    need python3-venv python3 -m venv --help
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install ${missing[*]}" >&2; exit 1; }
        sudo=(sudo)
    fi
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The toolchain pinned in rust-toolchain.toml, and the targets plugins build for:
# wasm32-unknown-unknown (Weir's plugins: no WASI) and wasm32-wasip2 (what most
# component toolchains produce; the tests check Weir explains why it refuses one).
command -v rustup >/dev/null || { echo "setup: rustup is needed (https://rustup.rs)" >&2; exit 1; }
rustup -q toolchain install --no-self-update
rustup -q target add wasm32-unknown-unknown wasm32-wasip2
# The Kafka-protocol broker: no Apache Kafka is reachable from the package
# registries here; noida-db implements the transactions exactly-once needs.
if $tests; then
    brokers=${WEIR_BROKERS:-$HOME/.cache/weir-brokers}
    if ! "$brokers/venv/bin/noida-db" --help >/dev/null 2>&1; then
        echo "setup: installing noida-db 0.2.3 into $brokers/venv"
        python3 -m venv "$brokers/venv"
        "$brokers/venv/bin/pip" install -q noida-db==0.2.3
    fi
fi

echo "setup: ready (toolchain $(rustc --version | cut -d' ' -f2), builds in ${CARGO_TARGET_DIR:-target/})"
