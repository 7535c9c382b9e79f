//! End-to-end tests: real config files, real plugins built for wasm, and the
//! real `weir` binary, checked by its output files and exit codes.
#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod admin;
mod bench;
mod brokers;
mod chaining;
mod checkpoints;
mod dead_letters;
mod demo;
mod event_time;
mod follow;
mod hostile;
mod inputs;
mod join;
mod kafka;
mod keyed_state;
mod nats;
mod output;
mod pipelines;
mod reload;
mod setup;
mod support;
mod systemd;
mod template;
mod validate;
mod windows;
