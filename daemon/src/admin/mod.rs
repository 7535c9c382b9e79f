//! The admin HTTP endpoint, on a Unix socket ([`socket`], always) and on TCP
//! (`[daemon] admin_address`, where changes may need a [`token`]), and its
//! client.
//!
//! | route | what |
//! |---|---|
//! | `GET /metrics` | Prometheus text exposition ([`crate::metrics`]) |
//! | `GET /health` | 200 while the process serves requests |
//! | `GET /ready` | 200 while a topology is running, else 503 |
//! | `GET /topology` | the running topology as JSON ([`view`]) |
//! | `POST /savepoints` | takes a savepoint; body `{"directory": "/abs/dir"}` or empty |
//! | `POST /reload` | re-reads the config and modules; answers once applied or refused |
//!
//! - [`server`]: the routes, served on the daemon's tokio runtime.
//! - [`client`]: what `weir reload` and `weir savepoint` use to reach a
//!   running daemon (the socket, or `--admin ADDR`).
//! - [`view`]: the `/topology` document.
//!
//! The supervisor publishes what the routes read in a [`Shared`]: whether a
//! topology runs, its checkpoint handle, and its description.

pub mod client;
pub mod listen;
pub mod server;
pub mod socket;
pub mod token;
pub mod view;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::checkpoint;
use crate::metrics::Metrics;
use crate::supervisor::reload;

/// What the admin routes read, kept current by the supervisor.
#[derive(Debug)]
pub struct Shared {
    metrics: Arc<Metrics>,
    ready: AtomicBool,
    checkpoints: Mutex<Option<checkpoint::Control>>,
    topology: Mutex<Option<Arc<view::TopologyView>>>,
    reloads: Mutex<Option<tokio::sync::mpsc::Sender<reload::Request>>>,
}

impl Shared {
    /// Nothing running yet; metrics exported from `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            ready: AtomicBool::new(false),
            checkpoints: Mutex::default(),
            topology: Mutex::default(),
            reloads: Mutex::default(),
        }
    }

    /// The daemon's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A topology is running: `/ready` answers 200, savepoints reach
    /// `checkpoints`.
    pub fn running(
        &self,
        topology: Arc<view::TopologyView>,
        checkpoints: Option<checkpoint::Control>,
    ) {
        *self.topology.lock().unwrap_or_else(PoisonError::into_inner) = Some(topology);
        *self
            .checkpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = checkpoints;
        self.ready.store(true, Ordering::Release);
    }

    /// Where reload requests go.
    pub fn set_reloads(&self, reloads: tokio::sync::mpsc::Sender<reload::Request>) {
        *self.reloads.lock().unwrap_or_else(PoisonError::into_inner) = Some(reloads);
    }

    /// Where reload requests go, once the supervisor runs.
    pub fn reloads(&self) -> Option<tokio::sync::mpsc::Sender<reload::Request>> {
        self.reloads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// No topology is running (starting, restarting, stopping).
    pub fn not_running(&self) {
        self.ready.store(false, Ordering::Release);
        *self
            .checkpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Whether a topology is running.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The running pipeline's checkpoint handle, if it runs with checkpoints.
    pub fn checkpoints(&self) -> Option<checkpoint::Control> {
        self.checkpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The topology last started.
    pub fn topology(&self) -> Option<Arc<view::TopologyView>> {
        self.topology
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
