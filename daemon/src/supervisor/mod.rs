//! The long-running part of `weir run`: starts the pipeline, restarts it
//! after failures, reloads it when the config or a module changes, stops it
//! on SIGTERM, and keeps systemd and the admin endpoint told.
//!
//! A reload is a barrier, not a restart. When only components change, the
//! running pipeline is changed at its next checkpoint barrier
//! ([`crate::topology::reconfigure`]): unchanged components keep running,
//! changed and removed ones stop at the barrier, and their replacements start
//! from that checkpoint (operators whose id survives get their keyed state,
//! redistributed if the parallelism changed, and their plugin's operator
//! state, handed to the new module's `restore` with the version the old one
//! saved; a removed operator's state is dropped; sources go on where they
//! stopped). When a pipeline-wide setting changes, the whole pipeline stops at
//! a final checkpoint and the new topology starts from it; without
//! `[checkpoint]` that hand-over checkpoint goes to `<data_dir>/handoff` and is
//! never restored at start.
//!
//! - [`reload`]: comparing two topologies; reload requests and outcomes.
//! - [`watch`]: reloading when the config or a module changes on disk.
//! - [`notify`]: `sd_notify` messages and the watchdog interval.

pub mod notify;
pub mod reload;
pub mod start;
pub mod watch;
mod watchdog;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use wasmtime::Engine;

use crate::admin::Shared;
use crate::admin::view::TopologyView;
use crate::checkpoint::restore::RestoreError;
use crate::checkpoint::store::StoreError;
use crate::graph::ComponentId;
use crate::operator_host::module::hex_sha256;
use crate::topology::pipeline::{PipelineHandle, StartError};
use crate::topology::reconfigure::{Plan, ReconfigureError};
use crate::topology::{Pipeline, RunReport, TaskError};
use crate::validate::{Validated, validate};
use notify::Notifier;
use reload::{Outcome, Request, Trigger};
use start::{StartOptions, StartRefused, StartingPoint, prepare_checkpoints};

/// Why the daemon cannot go on.
#[derive(Debug, Error)]
pub enum SuperviseError {
    /// The checkpoint to start from cannot be found or used.
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// The checkpoint directory cannot be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The pipeline cannot be built.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A signal handler cannot be installed.
    #[error("cannot listen for {0}: {1}")]
    Signal(&'static str, std::io::Error),
    /// Starting would repeat or overwrite committed output.
    #[error(transparent)]
    Refused(#[from] StartRefused),
}

/// How a run ended.
#[derive(Debug)]
pub enum Exit {
    /// Every source ended, or a stop was asked for, and the output is committed.
    Finished,
    /// The pipeline failed for good; the message says why.
    Failed(String),
}

/// The supervisor of one daemon.
pub struct Supervisor {
    engine: Engine,
    current: Validated,
    shared: Arc<Shared>,
    notifier: Notifier,
    start: StartingPoint,
    reloads: mpsc::Receiver<Request>,
    reloads_tx: mpsc::Sender<Request>,
    watch: Option<watch::Watch>,
    /// A reload broke the running pipeline: restart it when it has ended.
    broken: bool,
    /// What the watchdog task watches.
    watched: watchdog::Watched,
    /// The supervisor's own heartbeat: busy while it starts or reloads.
    beat: crate::topology::liveness::Beat,
    /// A reload applied whose new components have not yet been through a
    /// checkpoint of their own.
    probation: Option<Probation>,
    /// The config and modules of the last reload rolled back.
    rolled_back: Option<String>,
}

/// What a reload replaced, kept until the first checkpoint after it: if a
/// component the reload started fails before then (it cannot read the state
/// it was given, say), the previous topology goes back in from the reload's
/// checkpoint and the reload is reported failed, instead of the new version
/// failing in a loop.
struct Probation {
    previous: Validated,
    started: std::collections::BTreeSet<ComponentId>,
    /// The reload's checkpoint.
    checkpoint: crate::checkpoint::CheckpointId,
}

/// The running pipeline, as a reload needs it.
struct Running {
    handle: PipelineHandle,
    control: Option<crate::checkpoint::Control>,
    stop: crate::topology::StopSignal,
}

/// A reload waiting for the running pipeline to stop at its final checkpoint.
struct PendingReload {
    next: Validated,
    outcome: Outcome,
    request: Request,
    started: Instant,
}

impl Supervisor {
    /// A supervisor for `validated`, publishing to `shared`, started as
    /// `options` say.
    pub fn new(
        engine: Engine,
        validated: Validated,
        shared: Arc<Shared>,
        options: StartOptions,
    ) -> Self {
        let (reloads_tx, reloads) = mpsc::channel(16);
        shared.set_reloads(reloads_tx.clone());
        let (watched, beat) = watchdog::Watched::new();
        Self {
            engine,
            current: validated,
            shared,
            notifier: Notifier::from_env(),
            start: StartingPoint::new(options),
            reloads,
            reloads_tx,
            watch: None,
            broken: false,
            watched,
            beat,
            probation: None,
            rolled_back: None,
        }
    }

    /// Watches the config file and every module for changes.
    fn watch_files(&mut self) {
        self.watch = None;
        match watch::start(&watched_files(&self.current), self.reloads_tx.clone()) {
            Ok(w) => self.watch = Some(w),
            Err(e) => tracing::warn!("cannot watch the config and modules for changes: {e}"),
        }
    }

    /// Runs until the pipeline finishes, is stopped, or fails for good.
    pub async fn run(mut self) -> Result<Exit, SuperviseError> {
        let mut term = listen(SignalKind::terminate(), "SIGTERM")?;
        let mut int = listen(SignalKind::interrupt(), "SIGINT")?;
        let mut hup = listen(SignalKind::hangup(), "SIGHUP")?;
        let mut failures: VecDeque<Instant> = VecDeque::new();
        let mut backoff = self.current.topology.restart.backoff;
        let mut pending: Option<PendingReload> = None;
        let mut first_start = true;
        self.watch_files();
        watchdog::spawn(self.notifier, self.watched.clone());
        loop {
            let pipeline = match self.start_pipeline() {
                Ok(p) => p,
                Err(e) => match pending.take() {
                    // The new topology cannot start from the hand-over
                    // checkpoint (a plugin's restore failed, say): the old one
                    // goes on from it, and the reload is reported failed.
                    Some(PendingReload {
                        next: previous,
                        request,
                        ..
                    }) => {
                        self.reload_failed(request, &format!("the new topology cannot start: {e}"));
                        self.current = previous;
                        self.start.handoff = true;
                        self.start_pipeline()?
                    }
                    None => return Err(e),
                },
            };
            let components = self.current.topology.components.len();
            tracing::info!(config = %self.current.topology.config_path.display(), components, "pipeline running");
            let status = format!(
                "running {components} components from {}",
                self.current.topology.config_path.display()
            );
            if let Some(reload) = pending.take() {
                let pause = reload.started.elapsed();
                self.rolled_back = None;
                self.probation = Some(Probation {
                    started: reload
                        .outcome
                        .changed
                        .iter()
                        .chain(&reload.outcome.added)
                        .map(|id| ComponentId::from(id.as_str()))
                        .collect(),
                    previous: reload.next.clone(),
                    checkpoint: self.shared.metrics().last_checkpoint_id(),
                });
                let mut outcome = reload.outcome;
                outcome.pause_ms = Some(u64::try_from(pause.as_millis()).unwrap_or(u64::MAX));
                tracing::info!(trigger = %reload.request.trigger, pause = ?pause, "reload applied: {outcome}");
                self.shared.metrics().reloaded(true, Some(pause));
                let current = &self.current.topology;
                self.shared
                    .metrics()
                    .retain_components(&|id| current.get(id).is_some());
                self.watch_files();
                if let Some(reply) = reload.request.reply {
                    let _ = reply.send(Ok(outcome));
                }
                self.notifier.ready(&format!("{status}; reloaded"));
            } else if first_start {
                self.notifier.ready(&status);
                first_start = false;
            } else {
                self.notifier
                    .status(&format!("{status}; restarted after a failure"));
            }
            self.start.handoff = false;
            let stop = pipeline.stop_signal();
            self.watched.pipeline(pipeline.liveness());
            let running = Running {
                handle: pipeline.handle(),
                control: pipeline.checkpoints(),
                stop: stop.clone(),
            };
            self.shared
                .running(Arc::new(view(&self.current)), pipeline.checkpoints());
            let waiter = tokio::task::spawn_blocking(move || pipeline.wait());
            tokio::pin!(waiter);
            let mut stopping = false;
            // Failing checkpoints (a full disk, say) go into STATUS as they
            // begin and end; `/ready` reads the same.
            let mut health = tokio::time::interval(Duration::from_secs(1));
            let mut trouble: Option<String> = None;
            let result: Result<RunReport, TaskError> = loop {
                tokio::select! {
                    result = &mut waiter => {
                        self.shared.not_running();
                        break result.unwrap_or_else(|e| {
                            Err(TaskError::Checkpoint(format!("the pipeline waiter failed: {e}")))
                        });
                    }
                    _ = term.recv() => self.stop(&stop, &mut stopping, "SIGTERM", &mut pending),
                    _ = int.recv() => self.stop(&stop, &mut stopping, "SIGINT", &mut pending),
                    _ = hup.recv() => {
                        let request = Request { trigger: Trigger::Signal, reply: None };
                        self.begin_reload(request, &running, stopping, &mut pending).await;
                    }
                    Some(request) = self.reloads.recv() => {
                        self.begin_reload(request, &running, stopping, &mut pending).await;
                    }
                    _ = health.tick() => {
                        if self
                            .probation
                            .as_ref()
                            .is_some_and(|p| self.shared.metrics().last_checkpoint_id() > p.checkpoint)
                        {
                            self.probation = None;
                        }
                        let metrics = self.shared.metrics();
                        let now = match (metrics.checkpoints_failing(), metrics.broker_trouble()) {
                            (Some(c), Some(b)) => Some(format!("{b}; {c}")),
                            (c, b) => c.or(b),
                        };
                        if now != trouble {
                            match &now {
                                Some(t) => {
                                    tracing::error!("{t}");
                                    self.notifier.status(&format!("{status}; {t}"));
                                }
                                None => self.notifier.status(&status),
                            }
                            trouble = now;
                        }
                    }
                }
            };
            if std::mem::take(&mut self.broken) {
                if stopping {
                    tracing::warn!(
                        "stopped after a failed reload: the output is committed up to the latest checkpoint"
                    );
                    return Ok(Exit::Finished);
                }
                // A reload stopped some tasks and could not start their
                // replacements: the previous topology restarts from the
                // latest complete checkpoint.
                tracing::warn!(
                    "restarting the previous topology from the latest checkpoint after a failed reload"
                );
                self.start.handoff = true;
                continue;
            }
            match result {
                Ok(report) => {
                    if let Some(reload) = pending.take_if(|_| !stopping) {
                        // Stopped at the hand-over checkpoint: start the new topology.
                        let previous = std::mem::replace(&mut self.current, reload.next);
                        pending = Some(PendingReload {
                            next: previous,
                            ..reload
                        });
                        self.start.handoff = true;
                        continue;
                    }
                    for (id, records) in &report.sinks {
                        tracing::info!(sink = %id, records, "sink finished");
                    }
                    tracing::info!(elapsed = ?report.elapsed, final_checkpoint = ?report.final_checkpoint, "pipeline finished");
                    return Ok(Exit::Finished);
                }
                Err(error) => {
                    if let Some(reload) = pending.take() {
                        self.reload_failed(
                            reload.request,
                            &format!("the pipeline failed while stopping for the reload: {error}"),
                        );
                    }
                    if let Some(previous) = self.roll_back(&error) {
                        if stopping {
                            tracing::warn!(
                                "stopped after a rolled-back reload: the output is committed up to the latest checkpoint"
                            );
                            return Ok(Exit::Finished);
                        }
                        self.current = previous;
                        self.start.handoff = true;
                        continue;
                    }
                    let restartable = self.current.topology.checkpoint.is_some();
                    if !restartable || stopping || !error.is_restartable() {
                        return Ok(Exit::Failed(error.to_string()));
                    }
                    let restart = self.current.topology.restart;
                    let now = Instant::now();
                    failures.push_back(now);
                    while failures
                        .front()
                        .is_some_and(|t| now.duration_since(*t) > restart.window)
                    {
                        failures.pop_front();
                    }
                    if failures.len() > restart.max_failures {
                        return Ok(Exit::Failed(format!(
                            "{error}\ngiving up: {} failures within {}",
                            failures.len(),
                            humantime::format_duration(restart.window)
                        )));
                    }
                    self.shared.metrics().restarted();
                    tracing::warn!(
                        failures = failures.len(),
                        backoff = %humantime::format_duration(backoff),
                        "pipeline failed: {error}; restarting from the latest checkpoint"
                    );
                    self.notifier
                        .status(&format!("restarting after a failure: {error}"));
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = term.recv() => return Ok(Exit::Finished),
                        _ = int.recv() => return Ok(Exit::Finished),
                    }
                    backoff = (backoff * 2).min(restart.max_backoff);
                }
            }
        }
    }

    fn stop(
        &self,
        stop: &crate::topology::StopSignal,
        stopping: &mut bool,
        name: &str,
        pending: &mut Option<PendingReload>,
    ) {
        if *stopping {
            tracing::warn!("{name} again: exiting without draining");
            std::process::exit(130);
        }
        tracing::info!("{name}: stopping sources, draining the pipeline into a final checkpoint");
        self.notifier
            .stopping("stopping: taking a final checkpoint and committing output");
        if let Some(reload) = pending.take() {
            self.reload_failed(reload.request, "the daemon is stopping");
        }
        *stopping = true;
        stop.stop();
    }

    /// Checks, compiles and compares the new config; if it differs, asks the
    /// pipeline to stop at a final checkpoint, after which the new topology
    /// starts from it.
    async fn begin_reload(
        &mut self,
        request: Request,
        running: &Running,
        stopping: bool,
        pending: &mut Option<PendingReload>,
    ) {
        self.beat.busy();
        self.reload(request, running, stopping, pending).await;
        self.beat.idle();
    }

    async fn reload(
        &mut self,
        request: Request,
        running: &Running,
        stopping: bool,
        pending: &mut Option<PendingReload>,
    ) {
        if stopping {
            self.reload_failed(request, "the daemon is stopping");
            return;
        }
        if pending.is_some() {
            // One is being applied; it reads the files as they are now anyway.
            if let Some(reply) = request.reply {
                let _ = reply.send(Err("a reload is already in progress".into()));
            }
            return;
        }
        self.notifier.reloading();
        tracing::info!(trigger = %request.trigger, "reloading {}", self.current.topology.config_path.display());
        let path = self.current.topology.config_path.clone();
        let engine = self.engine.clone();
        let checked = tokio::task::spawn_blocking(move || validate(&path, &engine)).await;
        let next = match checked {
            Ok(Ok(next)) => next,
            Ok(Err(errors)) => {
                let message = errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n");
                self.reload_failed(request, &message);
                return;
            }
            Err(e) => {
                self.reload_failed(request, &format!("the check failed: {e}"));
                return;
            }
        };
        for w in &next.topology.warnings {
            tracing::warn!("{w}");
        }
        // The watcher sees the files of a reload that was rolled back as a
        // change still: that version is tried again only when asked.
        let fingerprint = fingerprint(&next);
        if request.trigger == Trigger::FileChange
            && self.rolled_back.as_deref() == Some(fingerprint.as_str())
        {
            tracing::info!(
                "reload: the files are the version that was rolled back; not applying it again until they change or a reload is asked for"
            );
            return;
        }
        let outcome = match reload::diff(&self.current, &next) {
            Ok(o) => o,
            Err(message) => {
                self.reload_failed(request, &message);
                return;
            }
        };
        if outcome.is_unchanged() {
            tracing::info!(trigger = %request.trigger, "reload: nothing changed");
            self.shared.metrics().reloaded(true, None);
            if let Some(reply) = request.reply {
                let _ = reply.send(Ok(outcome));
            }
            self.notifier.ready("running; reloaded, nothing changed");
            return;
        }
        if outcome.settings.is_empty() {
            self.reload_live(request, running, next, outcome).await;
            return;
        }
        // The same trial a live reload makes, before anything stops.
        let ids: std::collections::BTreeSet<ComponentId> = outcome
            .changed
            .iter()
            .chain(&outcome.added)
            .map(|id| ComponentId::from(id.as_str()))
            .collect();
        let (handle, trial) = (running.handle.clone(), next.clone());
        match tokio::task::spawn_blocking(move || handle.try_init(&trial, &ids)).await {
            Ok(Ok(())) => {}
            Ok(Err(message)) => {
                self.reload_failed(request, &message);
                return;
            }
            Err(e) => {
                self.reload_failed(request, &format!("the trial start failed: {e}"));
                return;
            }
        }
        tracing::info!("reload: {outcome}; stopping at a checkpoint to hand over");
        *pending = Some(PendingReload {
            next,
            outcome,
            request,
            started: Instant::now(),
        });
        running.stop.stop();
    }

    /// Applies a reload that changes components only, at a checkpoint
    /// barrier of the running pipeline: unchanged components keep running.
    async fn reload_live(
        &mut self,
        request: Request,
        running: &Running,
        next: Validated,
        mut outcome: Outcome,
    ) {
        tracing::info!(
            "reload: {outcome}; applying it at the next checkpoint barrier, unchanged components keep running"
        );
        let ids = |lists: [&Vec<String>; 2]| {
            lists
                .into_iter()
                .flatten()
                .map(|id| ComponentId::from(id.as_str()))
                .collect()
        };
        let plan = Plan {
            retire: ids([&outcome.changed, &outcome.removed]),
            start: ids([&outcome.changed, &outcome.added]),
        };
        let (old, new, handle) = (self.current.clone(), next.clone(), running.handle.clone());
        let applied =
            tokio::task::spawn_blocking(move || handle.reconfigure(&old, &new, &plan)).await;
        let applied = match applied {
            Ok(Ok(applied)) => applied,
            Ok(Err(ReconfigureError::NotApplied(message))) => {
                self.reload_failed(request, &format!("cannot apply the reload: {message}"));
                return;
            }
            Ok(Err(ReconfigureError::Broken(message))) => {
                self.broken(request, running, &message);
                return;
            }
            Err(e) => {
                self.broken(request, running, &format!("the reload panicked: {e}"));
                return;
            }
        };
        let pause = applied.pause;
        outcome.pause_ms = Some(u64::try_from(pause.as_millis()).unwrap_or(u64::MAX));
        tracing::info!(
            trigger = %request.trigger,
            checkpoint = applied.checkpoint,
            pause = ?pause,
            "reload applied: {outcome}"
        );
        let previous = std::mem::replace(&mut self.current, next);
        self.rolled_back = None;
        self.probation = Some(Probation {
            previous,
            started: outcome
                .changed
                .iter()
                .chain(&outcome.added)
                .map(|id| ComponentId::from(id.as_str()))
                .collect(),
            checkpoint: applied.checkpoint,
        });
        self.shared.metrics().reloaded(true, Some(pause));
        let current = &self.current.topology;
        self.shared
            .metrics()
            .retain_components(&|id| current.get(id).is_some());
        self.shared
            .running(Arc::new(view(&self.current)), running.control.clone());
        self.watch_files();
        let components = self.current.topology.components.len();
        self.notifier.ready(&format!(
            "running {components} components from {}; reloaded",
            self.current.topology.config_path.display()
        ));
        if let Some(reply) = request.reply {
            let _ = reply.send(Ok(outcome));
        }
    }

    /// A reload stopped tasks it could not replace: the pipeline is stopped
    /// and the previous topology restarts from the latest checkpoint.
    /// After `error`: if it is a component a reload just started, failing
    /// before the first checkpoint after the reload, the topology to go back
    /// to (restored from the reload's checkpoint, the latest).
    fn roll_back(&mut self, error: &TaskError) -> Option<Validated> {
        let probation = self.probation.take()?;
        let failed = error.operator()?;
        if !probation.started.contains(failed) {
            return None;
        }
        self.rolled_back = Some(fingerprint(&self.current));
        let message = format!(
            "the reloaded `{failed}` failed before its first checkpoint, so the reload is rolled \
             back to the previous topology from checkpoint {}: {error}",
            probation.checkpoint
        );
        tracing::error!("{message}");
        self.shared.metrics().reloaded(false, None);
        self.notifier
            .status(&format!("reload rolled back: {error}"));
        Some(probation.previous)
    }

    fn broken(&mut self, request: Request, running: &Running, message: &str) {
        self.reload_failed(
            request,
            &format!("{message}; restarting the previous topology from the latest checkpoint"),
        );
        self.broken = true;
        running.handle.abort();
    }

    /// The old topology keeps running; everyone is told why.
    fn reload_failed(&self, request: Request, message: &str) {
        tracing::error!(trigger = %request.trigger, "reload failed, the running topology is unchanged:\n{message}");
        self.shared.metrics().reloaded(false, None);
        let first_line = message.lines().next().unwrap_or_default();
        self.notifier.ready(&format!(
            "running the previous topology; reload failed: {first_line}"
        ));
        if let Some(reply) = request.reply {
            let _ = reply.send(Err(message.to_owned()));
        }
    }

    /// Builds and starts the pipeline (plugins' `init` and `restore` run
    /// under their call deadline) off the runtime's other tasks, so the admin
    /// endpoint, signals and the watchdog go on meanwhile.
    fn start_pipeline(&mut self) -> Result<Pipeline, SuperviseError> {
        self.beat.busy();
        let started = tokio::task::block_in_place(|| {
            let checkpointing = prepare_checkpoints(&self.current, &mut self.start)?;
            Ok(Pipeline::start(
                &self.current,
                &self.engine,
                Some(checkpointing),
                self.shared.metrics(),
            )?)
        });
        self.beat.idle();
        started
    }
}

/// The config's and every module's SHA-256: what a version of the files is.
fn fingerprint(validated: &Validated) -> String {
    let view = view(validated);
    let mut modules: Vec<&str> = validated
        .modules
        .values()
        .map(|m| m.sha256.as_str())
        .collect();
    modules.sort_unstable();
    format!("{} {}", view.config_sha256, modules.join(" "))
}

/// The `/topology` document of `validated`.
fn view(validated: &Validated) -> TopologyView {
    let config_sha256 = std::fs::read(&validated.topology.config_path)
        .map(|bytes| hex_sha256(&bytes))
        .unwrap_or_default();
    TopologyView::new(validated, config_sha256)
}

fn listen(kind: SignalKind, name: &'static str) -> Result<Signal, SuperviseError> {
    signal(kind).map_err(|e| SuperviseError::Signal(name, e))
}

/// Paths to watch for a topology: the config and every module.
pub fn watched_files(validated: &Validated) -> Vec<PathBuf> {
    let mut files = vec![validated.topology.config_path.clone()];
    files.extend(validated.modules.keys().cloned());
    files
}
