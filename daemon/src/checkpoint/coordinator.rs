//! The checkpoint coordinator: one thread that triggers checkpoints, collects
//! every task's part, completes a checkpoint when all are durable, then commits
//! the sinks' part files and removes old checkpoints.
//!
//! One checkpoint is in flight at a time (Flink's default). When every source
//! is exhausted (or stopped), a final checkpoint is triggered whose barrier is
//! followed by the end of the stream, so a run that ends leaves all of its
//! output committed.
//!
//! A savepoint request is served by the next checkpoint to start (or by the
//! final one, if that is in flight), written out once it is complete.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::metadata::{FORMAT, InstanceMeta, Kind, Metadata, OperatorMeta};
use super::savepoint::{self, Taken};
use super::stats::{Stats, Summary};
use super::store::{Store, StoreError, sync_dir};
use super::{
    Ack, CheckpointId, Committable, Part, Reconfiguration, Report, SourcePosition, TaskKey, Trigger,
};
use crate::graph::CheckpointSettings;

/// How soon a final checkpoint that could not start is tried again.
const RETRY_FINAL: std::time::Duration = std::time::Duration::from_secs(1);

/// How the coordinator ended.
#[derive(Debug)]
pub enum Outcome {
    /// The final checkpoint completed: all output is committed.
    Finished(CheckpointId),
    /// The pipeline stopped (failed) before a final checkpoint.
    Stopped,
    /// The final checkpoint could not be completed.
    FinalFailed(String),
}

/// The running coordinator.
pub struct Coordinator {
    thread: JoinHandle<(Outcome, Summary)>,
    reports: Sender<Report>,
}

/// What the coordinator is started with.
pub struct Setup {
    /// Where checkpoints go.
    pub store: Store,
    /// `[checkpoint]`.
    pub settings: CheckpointSettings,
    /// Key groups, recorded in every checkpoint.
    pub max_parallelism: u32,
    /// Each source instance and its trigger channel.
    pub sources: Vec<(TaskKey, Sender<Trigger>)>,
    /// Every task that reports a part.
    pub tasks: BTreeSet<TaskKey>,
    /// The id the next checkpoint takes.
    pub next_id: CheckpointId,
    /// Where savepoints go when a request names no directory, and where a
    /// request may write.
    pub savepoint_targets: savepoint::Targets,
    /// Where checkpoint figures are exported.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// Told of every complete checkpoint, and closed when the coordinator ends.
    pub completions: std::sync::Arc<super::Completions>,
}

impl Coordinator {
    /// Starts the coordinator thread, reading `reports`.
    pub fn start(
        setup: Setup,
        reports: Sender<Report>,
        receiver: Receiver<Report>,
    ) -> std::io::Result<Self> {
        let state = State {
            next_id: setup.next_id,
            setup,
            pending: None,
            exhausted: BTreeSet::new(),
            final_started: false,
            carried: BTreeMap::new(),
            waiting: Vec::new(),
            reconfiguration: None,
            paused: false,
            summary: Summary::default(),
        };
        let thread = std::thread::Builder::new()
            .name("weir-checkpoints".into())
            .spawn(move || {
                // Closed however the coordinator ends, so nothing waits on it forever.
                struct Close(std::sync::Arc<super::Completions>);
                impl Drop for Close {
                    fn drop(&mut self) {
                        self.0.close();
                    }
                }
                let _close = Close(state.setup.completions.clone());
                state.run(&receiver)
            })?;
        Ok(Self { thread, reports })
    }

    /// Stops the coordinator (the pipeline failed); an unfinished checkpoint
    /// is abandoned.
    pub fn stop(&self) {
        let _ = self.reports.send(Report::Stop);
    }

    /// Waits for the coordinator to end; returns how, and what checkpoints
    /// cost over the run.
    pub fn join(self) -> (Outcome, Summary) {
        self.thread.join().unwrap_or_else(|_| {
            (
                Outcome::FinalFailed("the checkpoint coordinator panicked".into()),
                Summary::default(),
            )
        })
    }
}

struct Pending {
    id: CheckpointId,
    dir: PathBuf,
    started: Instant,
    last: bool,
    parts: BTreeMap<TaskKey, Part>,
    /// The longest pause and alignment reported so far.
    max_pause: std::time::Duration,
    max_alignment: std::time::Duration,
    /// Savepoint requests this checkpoint answers.
    savepoints: Vec<savepoint::Request>,
    /// The reload this checkpoint applies.
    reconfiguration: Option<Reconfiguration>,
}

struct State {
    setup: Setup,
    next_id: CheckpointId,
    pending: Option<Pending>,
    exhausted: BTreeSet<TaskKey>,
    final_started: bool,
    /// Sink part files of abandoned checkpoints, committed with the next
    /// complete one.
    carried: BTreeMap<String, Vec<Committable>>,
    /// Savepoint requests for the next checkpoint.
    waiting: Vec<savepoint::Request>,
    /// A reload for the next checkpoint.
    reconfiguration: Option<Reconfiguration>,
    /// A reload's checkpoint is done and its new tasks are not running yet.
    paused: bool,
    summary: Summary,
}

impl State {
    fn run(mut self, reports: &Receiver<Report>) -> (Outcome, Summary) {
        let outcome = self.coordinate(reports);
        (outcome, self.summary)
    }

    fn coordinate(&mut self, reports: &Receiver<Report>) -> Outcome {
        let interval = self.setup.settings.interval;
        let mut next_at = interval.map(|i| Instant::now() + i);
        loop {
            let timeout_at = self
                .pending
                .as_ref()
                .map(|p| p.started + self.setup.settings.timeout);
            let wake = match (next_at.filter(|_| self.pending.is_none()), timeout_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let message = match wake {
                Some(at) => reports.recv_deadline(at),
                None => reports.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match message {
                Ok(Report::Ack(ack)) => {
                    if let Some(outcome) = self.on_ack(ack) {
                        return outcome;
                    }
                }
                Ok(Report::Exhausted(task)) => {
                    self.exhausted.insert(task);
                }
                Ok(Report::Savepoint(request)) => self.on_savepoint(request),
                Ok(Report::Reconfigure(r)) => {
                    if self.final_started || self.paused || self.reconfiguration.is_some() {
                        let _ = r
                            .reply
                            .send(Err("the pipeline is ending or already changing".into()));
                    } else {
                        self.reconfiguration = Some(r);
                    }
                }
                Ok(Report::Resume { sources, tasks }) => {
                    self.setup.sources.extend(sources);
                    self.setup.tasks.extend(tasks);
                    self.paused = false;
                }
                Ok(Report::Stop) | Err(RecvTimeoutError::Disconnected) => {
                    if let Some(p) = self.pending.take() {
                        self.abandon(p, "the pipeline stopped");
                    }
                    for request in self.waiting.drain(..) {
                        let _ = request
                            .reply
                            .send(Err("the pipeline stopped before the savepoint".into()));
                    }
                    if let Some(r) = self.reconfiguration.take() {
                        let _ = r.reply.send(Err("the pipeline stopped".into()));
                    }
                    return Outcome::Stopped;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            if let Some(p) = self
                .pending
                .take_if(|p| now >= p.started + self.setup.settings.timeout)
            {
                let last = p.last;
                let timeout = self.setup.settings.timeout;
                self.abandon(
                    p,
                    &format!("not complete after {}", humantime::format_duration(timeout)),
                );
                if last {
                    return Outcome::FinalFailed("the final checkpoint timed out".into());
                }
            }
            if self.pending.is_some() || self.final_started || self.paused {
                continue;
            }
            if self.reconfiguration.is_some() {
                self.trigger(false);
                continue;
            }
            let all_exhausted = self
                .setup
                .sources
                .iter()
                .all(|(key, _)| self.exhausted.contains(key));
            if all_exhausted {
                if self.trigger(true) {
                    self.final_started = true;
                } else {
                    // The checkpoint directory cannot be made (a full disk):
                    // try again, rather than end without committing.
                    next_at = Some(now + RETRY_FINAL);
                }
            } else if !self.waiting.is_empty() || next_at.is_some_and(|at| now >= at) {
                next_at = interval.map(|i| now + i);
                self.trigger(false);
            }
        }
    }

    /// A savepoint request: checked now, served by the final checkpoint if
    /// that is in flight, else by the next one to start.
    fn on_savepoint(&mut self, request: savepoint::Request) {
        if let Some(dir) = &request.directory
            && let Err(e) = self.setup.savepoint_targets.check(dir)
        {
            let _ = request.reply.send(Err(e.to_string()));
            return;
        }
        match self.pending.as_mut().filter(|p| p.last) {
            Some(last) => last.savepoints.push(request),
            None if self.final_started => {
                let _ = request.reply.send(Err(
                    "the pipeline has ended; no savepoint is possible".into()
                ));
            }
            None => self.waiting.push(request),
        }
    }

    /// Starts a checkpoint; false if its directory cannot be made.
    fn trigger(&mut self, last: bool) -> bool {
        let id = self.next_id;
        // Ids never wrap: the start refuses an exhausted range, and this
        // would take 2^64 checkpoints to reach.
        self.next_id = id.saturating_add(1);
        let dir = match self.setup.store.begin(id) {
            Ok(dir) => dir,
            Err(e) => {
                tracing::error!(checkpoint = id, "cannot start a checkpoint: {e}");
                self.summary.failed += 1;
                self.setup
                    .metrics
                    .checkpoint_failed(&format!("cannot start a checkpoint: {e}"));
                for request in self.waiting.drain(..) {
                    let _ = request
                        .reply
                        .send(Err(format!("cannot start a checkpoint: {e}")));
                }
                // Nothing was posted: the pipeline runs on as it was.
                if let Some(r) = self.reconfiguration.take() {
                    let _ = r.reply.send(Err(format!("cannot start a checkpoint: {e}")));
                }
                return false;
            }
        };
        tracing::debug!(checkpoint = id, last, "checkpoint triggered");
        let reconfiguration = self.reconfiguration.take().map(|mut r| {
            let prepare = std::mem::replace(&mut r.prepare, Box::new(|_| {}));
            prepare(id);
            r
        });
        for (_, tx) in &self.setup.sources {
            // A source that is gone has failed; the pipeline is ending anyway.
            let _ = tx.send(Trigger {
                checkpoint: id,
                last,
            });
        }
        self.pending = Some(Pending {
            id,
            dir,
            started: Instant::now(),
            last,
            parts: BTreeMap::new(),
            max_pause: std::time::Duration::ZERO,
            max_alignment: std::time::Duration::ZERO,
            savepoints: std::mem::take(&mut self.waiting),
            reconfiguration,
        });
        true
    }

    /// Takes one task's part; completes the checkpoint when it was the last.
    fn on_ack(&mut self, ack: Ack) -> Option<Outcome> {
        let Some(pending) = self.pending.as_mut().filter(|p| p.id == ack.checkpoint) else {
            // Late, for an abandoned checkpoint: keep sink files for the next one.
            if let Ok(Part::Sink { committables }) = ack.part {
                self.carried
                    .entry(ack.task.component.to_string())
                    .or_default()
                    .extend(committables);
            }
            return None;
        };
        match ack.part {
            Ok(part) => {
                pending.parts.insert(ack.task, part);
                pending.max_pause = pending.max_pause.max(ack.timing.pause);
                pending.max_alignment = pending.max_alignment.max(ack.timing.alignment);
            }
            Err(message) => {
                let p = self.pending.take()?;
                let last = p.last;
                self.abandon(
                    p,
                    &format!("{} {}: {message}", ack.task.component, ack.task.instance),
                );
                return last.then_some(Outcome::FinalFailed(message));
            }
        }
        if pending.parts.len() < self.setup.tasks.len() {
            return None;
        }
        let mut p = self.pending.take()?;
        let (id, last) = (p.id, p.last);
        let requests = std::mem::take(&mut p.savepoints);
        let reconfiguration = p.reconfiguration.take();
        let completed = self.complete(p, requests);
        if let Some(r) = reconfiguration {
            // Whatever the outcome, the retired tasks are gone: nothing more
            // starts until the supervisor has the new tasks running (or has
            // stopped the pipeline).
            self.paused = true;
            self.setup
                .sources
                .retain(|(key, _)| !r.retire.contains(key));
            self.setup.tasks.retain(|key| !r.retire.contains(key));
            self.exhausted.retain(|key| !r.retire.contains(key));
            let answer = match &completed {
                Ok(()) => Ok(id),
                Err(e) => Err(e.to_string()),
            };
            let _ = r.reply.send(answer);
        }
        match completed {
            Ok(()) if last => Some(Outcome::Finished(id)),
            Ok(()) => None,
            Err(e) => {
                tracing::error!(checkpoint = id, "checkpoint failed: {e}");
                self.summary.failed += 1;
                self.setup.metrics.checkpoint_failed(&e.to_string());
                self.setup.store.discard(id);
                last.then(|| Outcome::FinalFailed(e.to_string()))
            }
        }
    }

    fn complete(
        &mut self,
        p: Pending,
        savepoints: Vec<savepoint::Request>,
    ) -> Result<(), StoreError> {
        let mut metadata = Metadata {
            format: FORMAT,
            id: p.id,
            kind: Kind::Checkpoint,
            completed_at_ms: now_ms(),
            max_parallelism: self.setup.max_parallelism,
            sources: BTreeMap::new(),
            source_event_times: BTreeMap::new(),
            operators: BTreeMap::new(),
            sinks: std::mem::take(&mut self.carried),
        };
        let mut bytes = 0u64;
        for (task, part) in p.parts {
            let id = task.component.to_string();
            match part {
                Part::Source {
                    position,
                    event_time,
                } => {
                    if event_time.is_some() {
                        let times = metadata.source_event_times.entry(id.clone()).or_default();
                        set_at(times, task.instance, event_time, None);
                    }
                    let positions = metadata.sources.entry(id).or_default();
                    set_at(
                        positions,
                        task.instance,
                        position,
                        SourcePosition::Offset(0),
                    );
                }
                Part::Operator {
                    parallelism,
                    key_groups,
                    states,
                    keyed,
                    keyed_changes,
                    written,
                    operator_state,
                    records_in,
                } => {
                    let op = metadata
                        .operators
                        .entry(id)
                        .or_insert_with(|| OperatorMeta {
                            parallelism,
                            states: states.clone(),
                            operator_state_version: 0,
                            instances: Vec::new(),
                        });
                    if let Some((_, version)) = &operator_state {
                        op.operator_state_version = *version;
                    }
                    bytes += written;
                    let instance = InstanceMeta {
                        key_groups,
                        keyed,
                        keyed_changes,
                        operator_state: operator_state.map(|(f, _)| f),
                        records_in,
                    };
                    let empty = InstanceMeta {
                        key_groups: (0, 0),
                        keyed: None,
                        keyed_changes: Vec::new(),
                        operator_state: None,
                        records_in: 0,
                    };
                    set_at(&mut op.instances, task.instance, instance, empty);
                }
                Part::Sink { committables } => {
                    metadata.sinks.entry(id).or_default().extend(committables);
                }
                Part::Nothing => {}
            }
        }
        if let Err(e) = self.setup.store.complete(&p.dir, &metadata) {
            // Not durable: the output goes with the next checkpoint, as for
            // an abandoned one, so a failed write (a full disk) loses nothing.
            self.carry(metadata.sinks);
            for request in savepoints {
                let _ = request
                    .reply
                    .send(Err(format!("the checkpoint failed: {e}")));
            }
            return Err(e);
        }
        super::failpoint::check(super::failpoint::Point::BeforeCommit);
        self.setup.completions.completed(p.id);
        if let Err(e) = commit(metadata.sinks.values().flatten()) {
            // The checkpoint is complete (a restore commits its parts); the
            // next checkpoint tries the commit again.
            tracing::error!(
                checkpoint = p.id,
                "cannot commit the checkpoint's output: {e}; trying again with the next checkpoint"
            );
            self.carry(metadata.sinks.clone());
        }
        let stats = Stats {
            id: p.id,
            duration: p.started.elapsed(),
            bytes,
            max_pause: p.max_pause,
            max_alignment: p.max_alignment,
        };
        self.summary.record(&stats);
        let state: Vec<(String, u64)> = metadata
            .operators
            .iter()
            .map(|(id, op)| {
                let bytes = op
                    .instances
                    .iter()
                    .flat_map(|i| i.keyed.iter().chain(&i.keyed_changes))
                    .map(|f| f.bytes)
                    .sum();
                (id.clone(), bytes)
            })
            .collect();
        self.setup.metrics.checkpoint_completed(&stats, &state);
        tracing::info!(
            checkpoint = p.id,
            duration = ?stats.duration,
            bytes,
            pause = ?stats.max_pause,
            alignment = ?stats.max_alignment,
            last = p.last,
            "checkpoint complete"
        );
        for request in savepoints {
            let answer = self.write_savepoint(&p.dir, &metadata, request.directory);
            let _ = request.reply.send(answer);
        }
        // The checkpoint stands even if older ones cannot be removed now.
        if let Err(e) = self.setup.store.retain(self.setup.settings.retain) {
            tracing::warn!(checkpoint = p.id, "cannot remove older checkpoints: {e}");
        }
        Ok(())
    }

    fn write_savepoint(
        &self,
        from: &std::path::Path,
        metadata: &Metadata,
        directory: Option<PathBuf>,
    ) -> Result<Taken, String> {
        let directory = directory.unwrap_or_else(|| {
            self.setup.savepoint_targets.default_dir.join(format!(
                "savepoint-{:010}-{}",
                metadata.id, metadata.completed_at_ms
            ))
        });
        match savepoint::write(from, metadata, &directory, &self.setup.savepoint_targets) {
            Ok(()) => {
                tracing::info!(checkpoint = metadata.id, dir = %directory.display(), "savepoint written");
                Ok(Taken {
                    id: metadata.id,
                    directory,
                })
            }
            Err(e) => {
                tracing::error!(checkpoint = metadata.id, "cannot write the savepoint: {e}");
                Err(format!("cannot write the savepoint: {e}"))
            }
        }
    }

    fn abandon(&mut self, mut p: Pending, why: &str) {
        tracing::warn!(checkpoint = p.id, "checkpoint abandoned: {why}");
        if let Some(r) = p.reconfiguration.take() {
            self.paused = true;
            let _ = r
                .reply
                .send(Err(format!("checkpoint {} was abandoned: {why}", p.id)));
        }
        self.summary.failed += 1;
        self.setup.metrics.checkpoint_failed(why);
        for request in p.savepoints {
            let _ = request
                .reply
                .send(Err(format!("checkpoint {} was abandoned: {why}", p.id)));
        }
        for (task, part) in p.parts {
            if let Part::Sink { committables } = part {
                self.carried
                    .entry(task.component.to_string())
                    .or_default()
                    .extend(committables);
            }
        }
        self.setup.store.discard(p.id);
    }

    /// Keeps part files for the next checkpoint to commit.
    fn carry(&mut self, sinks: BTreeMap<String, Vec<Committable>>) {
        for (sink, committables) in sinks {
            self.carried.entry(sink).or_default().extend(committables);
        }
    }
}

fn set_at<T: Clone>(items: &mut Vec<T>, index: u32, item: T, filler: T) {
    let index = index as usize;
    if items.len() <= index {
        items.resize(index + 1, filler);
    }
    items[index] = item;
}

/// Makes sink part files visible: moves each pending file to its committed
/// name. Idempotent (a file already committed before a crash is left alone),
/// and it never replaces a committed part: readers may already have it.
pub fn commit<'a>(committables: impl Iterator<Item = &'a Committable>) -> Result<(), StoreError> {
    let mut dirs = BTreeSet::new();
    for c in committables {
        if !c.pending.exists() {
            if !c.committed.exists() {
                tracing::warn!(
                    file = %c.pending.display(),
                    "a part file to commit is missing; its records are lost"
                );
            }
            continue;
        }
        commit_one(c)?;
        if let Some(dir) = c.committed.parent() {
            dirs.insert(dir.to_path_buf());
        }
    }
    dirs.iter().try_for_each(|d| sync_dir(d))
}

/// Links the pending file in under its committed name (which fails if that
/// name is taken), then removes the pending name.
fn commit_one(c: &Committable) -> Result<(), StoreError> {
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    match std::fs::hard_link(&c.pending, &c.committed) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // A crash between the link and the unlink leaves both names on
            // one file; anything else under that name is someone's output.
            if !same_file(&c.pending, &c.committed) {
                return Err(StoreError::Corrupt {
                    path: c.committed.clone(),
                    reason: format!(
                        "a different committed part has this name already; it is never \
                         replaced (the pending part stays at {})",
                        c.pending.display()
                    ),
                });
            }
        }
        // A file system without hard links: rename, having checked the name
        // is free (nothing else writes a sink's directory).
        Err(_) if !c.committed.exists() => {
            return std::fs::rename(&c.pending, &c.committed).map_err(io(&c.committed));
        }
        Err(e) => return Err(io(&c.committed)(e)),
    }
    std::fs::remove_file(&c.pending).map_err(io(&c.pending))
}

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Now, in ms since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_never_replaces_a_committed_part_and_can_be_repeated() {
        let dir = tempfile::tempdir().unwrap();
        let part = |name: &str, pending: &str| Committable {
            pending: dir.path().join(pending),
            committed: dir.path().join(name),
        };
        let a = part("part-1-0", ".a");
        std::fs::write(&a.pending, b"a").unwrap();
        commit(std::iter::once(&a)).unwrap();
        assert_eq!(std::fs::read(&a.committed).unwrap(), b"a");
        assert!(!a.pending.exists());
        // Again after a crash: nothing to do.
        commit(std::iter::once(&a)).unwrap();

        // A crash between link and unlink left both names on one file.
        let b = part("part-2-0", ".b");
        std::fs::write(&b.pending, b"b").unwrap();
        std::fs::hard_link(&b.pending, &b.committed).unwrap();
        commit(std::iter::once(&b)).unwrap();
        assert!(!b.pending.exists());
        assert_eq!(std::fs::read(&b.committed).unwrap(), b"b");

        // Someone else's file under the name: refused, both kept.
        let c = part("part-1-0", ".c");
        std::fs::write(&c.pending, b"c").unwrap();
        let e = commit(std::iter::once(&c)).unwrap_err().to_string();
        assert!(e.contains("never replaced"), "{e}");
        assert_eq!(std::fs::read(&a.committed).unwrap(), b"a");
        assert_eq!(std::fs::read(&c.pending).unwrap(), b"c");
    }
}
