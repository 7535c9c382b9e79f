//! Weir: a stream-processing daemon that runs operators compiled to WebAssembly
//! components, wired into a pipeline by a TOML topology.
//!
//! The data flow, and the module that owns each step:
//!
//! 1. [`config`]: the TOML file as written (serde types with spans).
//! 2. [`graph`]: the validated DAG, with every error collected at once;
//!    [`validate`] adds compiled, interface-checked modules.
//! 3. [`topology`]: the running tasks, one thread each, joined by bounded channels
//!    that carry [`batch::Message`]s.
//! 4. [`operator_host`]: each operator instance, sandboxed in wasmtime.
//! 5. [`state`]: keyed state, in the heap or RocksDB.
//! 6. [`checkpoint`]: barrier snapshots of all of it, and restoring them.
//! 7. [`sources`] and [`sinks`]: where records enter and leave.
//!
//! Around them, [`supervisor`] restarts, reloads and stops the pipeline and
//! talks to systemd, and [`admin`] serves the HTTP endpoint that reports on
//! and steers the running daemon.
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")
)]

pub mod admin;
pub mod batch;
pub mod bench;
pub mod brokers;
pub mod checkpoint;
pub mod config;
pub mod diagnostic;
pub mod files;
pub mod graph;
pub mod metrics;
pub mod operator_host;
pub mod partition;
pub mod scaffold;
pub mod sinks;
pub mod sources;
pub mod state;
pub mod supervisor;
pub mod topology;
pub mod validate;
pub mod watermark;
