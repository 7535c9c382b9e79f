//! The committer thread of an exactly-once broker sink instance: it sends
//! each staged checkpoint's output ([`super::staging`]) once that checkpoint
//! is complete, in checkpoint order, retrying broker trouble with backoff
//! (the output waits on disk meanwhile), and removes what it has sent. How a
//! checkpoint's output is sent, so that sending it twice is harmless, is the
//! broker's [`Publisher`]: a Kafka transaction with a marker, or JetStream
//! messages with stable ids.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};

use super::staging::{self, Staged, Stager};
use crate::batch::Batch;
use crate::brokers::Backoff;
use crate::checkpoint::CheckpointId;
use crate::checkpoint::Completions;
use crate::graph::ComponentId;
use crate::metrics::BrokerHealth;

/// How long a stopping sink waits for its last checkpoint's output to go out
/// before leaving it staged for the next start.
const FINISH_LIMIT: Duration = Duration::from_secs(60);

/// Why sending a checkpoint's output failed.
pub enum Failure {
    /// Broker trouble: try again (after [`Publisher::reset`]).
    Retry(String),
    /// Nothing to retry: the sink fails (another process took its
    /// transactional id, or the staged file is damaged).
    Fatal(String),
}

/// Sends one checkpoint's staged output to a broker, idempotently.
pub trait Publisher: Send + 'static {
    /// Sends it, unless the broker has it already.
    fn send(&mut self, staged: &Staged) -> Result<(), Failure>;
    /// A send for `instance` failed: drop its connection, so the next try
    /// starts from what the broker says.
    fn reset(&mut self, instance: u32);
}

/// What a broker sink instance is opened with.
pub struct Context {
    /// This instance.
    pub instance: u32,
    /// The sink's parallelism.
    pub parallelism: u32,
    /// The checkpoint the pipeline started from (0: none).
    pub restored: CheckpointId,
    /// Complete checkpoints.
    pub completions: Arc<Completions>,
    /// Reachability, for metrics and status.
    pub health: BrokerHealth,
}

/// The exactly-once half of a broker sink: output staged per checkpoint,
/// sent by the committer once the checkpoint is complete.
pub struct StagedSink {
    stager: Stager,
    committer: Committer,
}

impl StagedSink {
    /// Stages into `staging` for instance `cx.instance`, first taking up what
    /// an earlier run staged (of this instance, and of old instances a
    /// restore at a lower parallelism leaves to it), sent by the publisher
    /// `publisher` makes from the staging directory's lineage token.
    pub fn open<P: Publisher>(
        id: &ComponentId,
        staging: &Path,
        cx: Context,
        publisher: impl FnOnce(String) -> P,
    ) -> Result<Self, String> {
        let stager = Stager::new(staging, cx.instance)
            .map_err(|e| format!("cannot prepare {}: {e}", staging.display()))?;
        let lineage =
            lineage(staging).map_err(|e| format!("cannot prepare {}: {e}", staging.display()))?;
        let (instance, parallelism) = (cx.instance, cx.parallelism.max(1));
        let backlog = staging::recover(staging, cx.restored, |i| i % parallelism == instance)
            .map_err(|e| format!("cannot read {}: {e}", staging.display()))?;
        if !backlog.is_empty() {
            tracing::info!(
                sink = %id,
                checkpoints = ?backlog.iter().map(|s| s.checkpoint).collect::<Vec<_>>(),
                "output staged by an earlier run: sending what the broker does not have yet"
            );
        }
        let committer =
            Committer::start(id, publisher(lineage), backlog, cx.completions, cx.health)?;
        Ok(Self { stager, committer })
    }

    /// Takes a batch.
    pub fn write(&mut self, batch: &Batch) -> Result<(), String> {
        self.committer.check()?;
        self.stager
            .write(batch)
            .map_err(|e| format!("cannot stage output: {e}"))
    }

    /// At barrier `checkpoint`: seals what came since the last one.
    pub fn seal(&mut self, checkpoint: CheckpointId) -> Result<(), String> {
        self.committer.check()?;
        if let Some(staged) = self
            .stager
            .seal(checkpoint)
            .map_err(|e| format!("cannot make staged output durable: {e}"))?
        {
            self.committer.stage(staged);
        }
        Ok(())
    }

    /// The input has ended: waits (a bounded time) for the last output.
    pub fn finish(&mut self) {
        self.committer.finish(false);
    }

    /// The pipeline failed: nothing more is sent; what is staged waits for
    /// the restart.
    pub fn abort(&mut self) {
        self.committer.finish(true);
    }
}

/// The committer thread of one sink instance.
pub struct Committer {
    staged: Sender<Staged>,
    finishing: Arc<AtomicBool>,
    aborting: Arc<AtomicBool>,
    failed: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    /// Starts sending `backlog` (staged by an earlier run, oldest first) and
    /// whatever is staged from now on, as `completions` allow.
    pub fn start(
        id: &ComponentId,
        publisher: impl Publisher,
        backlog: Vec<Staged>,
        completions: Arc<Completions>,
        health: BrokerHealth,
    ) -> Result<Self, String> {
        let (staged, incoming) = unbounded();
        let finishing = Arc::new(AtomicBool::new(false));
        let aborting = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(Mutex::new(None));
        let mut work = Work {
            id: id.clone(),
            publisher,
            queue: backlog.into(),
            incoming,
            completions,
            health,
            finishing: finishing.clone(),
            aborting: aborting.clone(),
        };
        let failed_slot = failed.clone();
        let thread = std::thread::Builder::new()
            .name(format!("weir-commit-{id}"))
            .spawn(move || {
                if let Err(e) = work.run() {
                    tracing::error!(sink = %work.id, "{e}");
                    *failed_slot
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
                }
            })
            .map_err(|e| format!("cannot start the committer thread: {e}"))?;
        Ok(Self {
            staged,
            finishing,
            aborting,
            failed,
            thread: Some(thread),
        })
    }

    /// The committer's fatal error, if it had one: the sink fails with it.
    pub fn check(&self) -> Result<(), String> {
        match &*self
            .failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// A checkpoint's output, sealed at its barrier.
    pub fn stage(&self, staged: Staged) {
        let _ = self.staged.send(staged);
    }

    /// Waits until the output of every checkpoint that completes is sent
    /// (bounded; what is left stays staged for the next start), or, with
    /// `abort`, only for the send in progress.
    pub fn finish(&mut self, abort: bool) {
        if abort {
            self.aborting.store(true, Ordering::SeqCst);
        }
        self.finishing.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.finish(true);
    }
}

struct Work<P> {
    id: ComponentId,
    publisher: P,
    queue: VecDeque<Staged>,
    incoming: Receiver<Staged>,
    completions: Arc<Completions>,
    health: BrokerHealth,
    finishing: Arc<AtomicBool>,
    aborting: Arc<AtomicBool>,
}

impl<P: Publisher> Work<P> {
    /// Sends staged output in checkpoint order as checkpoints complete,
    /// until finished.
    fn run(&mut self) -> Result<(), String> {
        let mut backoff = Backoff::default();
        let mut finish_by: Option<Instant> = None;
        loop {
            while let Ok(s) = self.incoming.try_recv() {
                self.queue.push_back(s);
            }
            if self.aborting.load(Ordering::SeqCst) {
                return Ok(());
            }
            let seen = self.completions.seen();
            let ready = self
                .queue
                .front()
                .is_some_and(|s| s.checkpoint <= seen.latest);
            if self.finishing.load(Ordering::SeqCst) {
                let by = *finish_by.get_or_insert_with(|| Instant::now() + FINISH_LIMIT);
                // Done when nothing completed is left: output staged for a
                // checkpoint that will not complete waits for the restart.
                let nothing_left = self.queue.is_empty() && self.incoming.is_empty();
                if (!ready && (seen.closed || nothing_left)) || Instant::now() > by {
                    if let Some(left) = self.queue.front().filter(|_| ready) {
                        tracing::warn!(
                            sink = %self.id,
                            checkpoint = left.checkpoint,
                            "stopping before the broker took checkpoint {}'s output: it stays staged and goes out on the next start",
                            left.checkpoint
                        );
                    }
                    return Ok(());
                }
            }
            if !ready {
                let after = self
                    .queue
                    .front()
                    .map_or(seen.latest, |s| s.checkpoint.saturating_sub(1));
                self.completions.wait(after, Duration::from_millis(50));
                continue;
            }
            if !backoff.due(Instant::now()) {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let Some(next) = self.queue.front().cloned() else {
                continue;
            };
            match self.publisher.send(&next) {
                Ok(()) => {
                    self.queue.pop_front();
                    backoff.succeeded(Instant::now());
                    self.health.up();
                    // Sent: the file has done its work (a leftover would
                    // only be sent again, harmlessly).
                    if let Err(e) = std::fs::remove_file(&next.path) {
                        tracing::warn!(file = %next.path.display(), "cannot remove sent output: {e}");
                    }
                }
                Err(Failure::Fatal(why)) => return Err(why),
                Err(Failure::Retry(why)) => {
                    let wait = backoff.failed(Instant::now());
                    tracing::warn!(sink = %self.id, checkpoint = next.checkpoint, retry_in = ?wait, "{why}; retrying");
                    self.health.down(&why);
                    self.publisher.reset(next.instance);
                }
            }
        }
    }
}

/// The staging directory's lineage token, made with it: what tells this
/// directory's output apart from that of an earlier one at the same path
/// (whose checkpoint ids started at 1 too).
fn lineage(dir: &Path) -> std::io::Result<String> {
    let path = dir.join("lineage");
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let token = format!("{nanos:x}{:x}", std::process::id());
    let temp = dir.join("lineage.tmp");
    std::fs::write(&temp, &token)?;
    std::fs::File::open(&temp)?.sync_all()?;
    std::fs::rename(&temp, &path)?;
    crate::checkpoint::store::sync_dir(dir).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(token)
}
