//! The thread that writes an operator instance's snapshots, one checkpoint
//! after another, and the chain of files its incremental checkpoints build on.
//!
//! A checkpoint's keyed state is either a full snapshot file or, when the
//! backend knows what changed since its previous capture, a change file on top
//! of the previous checkpoint's files. Those files are hard-linked into the new
//! checkpoint's directory, so every checkpoint directory stays self-contained:
//! retention and savepoints handle directories, and the file system counts the
//! references. Once the change files add up to [`FULL_AFTER`] times the full
//! file's size, the chain is folded into one full file again, which bounds
//! what a restore reads: a capture that can be written whole (the heap's,
//! copy-on-write) is; one of changes only (RocksDB's: a full capture would
//! pause the operator to copy its cache's dirty entries) is written as a
//! change file, and this thread then compacts the chain into a full file
//! ([`crate::state::compaction`]), off the operator's thread.
//!
//! One thread per instance, fed in checkpoint order: a change file is only
//! correct on top of the files of the capture just before it.
//!
//! The thread also tells the operator, before its next capture, whether that
//! checkpoint will be a change file ([`SnapshotWriterThread::next_scope`]), so
//! a backend can leave out what only a full snapshot needs. Its answer may be
//! a checkpoint late (the previous one may still be being written): a
//! capture taken for a change file is then written as one even past
//! [`FULL_AFTER`], and compacted. A chain whose last checkpoint was
//! abandoned (its directory removed) asks for a full capture; only when that
//! happens between the capture and its write does the capture fail, and the
//! checkpoint after it is full.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, unbounded};

use crate::checkpoint::store::write_file;
use crate::checkpoint::{CheckpointId, FileRef, Part, TaskCheckpointing, Timing};
use crate::operator_host::InstanceSnapshot;
use crate::state::CaptureScope;
use crate::state::compaction;
use crate::state::snapshot::{FileSummary, SnapshotError, SnapshotWriter};

/// Change files a chain may hold before the next checkpoint is full again,
/// whatever their size (each one costs a restore a file open).
const MAX_CHANGE_FILES: usize = 64;
/// Once the change files add up to this many times the full file, the next
/// checkpoint is full again. The trade: a restore reads at most about
/// `1 + FULL_AFTER` times the state (about 5 s for 1 GiB on the development
/// VM), while a full rewrite, which costs the pipeline most, comes once per
/// `FULL_AFTER` state sizes of changes.
const FULL_AFTER: u64 = 3;

/// One checkpoint's snapshot, waiting to be written.
struct Job {
    checkpoint: CheckpointId,
    snapshot: InstanceSnapshot,
    timing: Timing,
}

/// The files the last written checkpoint's keyed state is made of.
#[derive(Debug, Default)]
struct Chain {
    /// Directory of the checkpoint that wrote them last (holding all of them).
    dir: Option<PathBuf>,
    base: Option<FileRef>,
    changes: Vec<FileRef>,
}

impl Chain {
    /// Whether the next checkpoint can write a change file on top.
    fn extendable(&self) -> bool {
        self.base.is_some() && self.dir.is_some()
    }

    /// Whether the next checkpoint should be full again, to bound what a
    /// restore reads.
    fn due_for_full(&self) -> bool {
        let Some(base) = &self.base else {
            return true;
        };
        let changed: u64 = self.changes.iter().map(|f| f.bytes).sum();
        self.changes.len() >= MAX_CHANGE_FILES || changed >= base.bytes.saturating_mul(FULL_AFTER)
    }

    /// Links every file of the chain into `dir`.
    fn link_into(&self, dir: &Path) -> std::io::Result<()> {
        let Some(from) = &self.dir else {
            return Err(std::io::Error::other("no previous checkpoint"));
        };
        for file in self.base.iter().chain(&self.changes) {
            std::fs::hard_link(from.join(&file.file), dir.join(&file.file))?;
        }
        Ok(())
    }
}

/// What an operator instance needs to take part in checkpoints.
#[derive(Debug, Clone)]
pub struct OperatorCheckpointing {
    /// Where it reports.
    pub task: TaskCheckpointing,
    /// The operator's parallelism.
    pub parallelism: u32,
    /// The key groups this instance owns.
    pub key_groups: Range<u32>,
    /// Write keyed state as changes on top of the previous checkpoint's files.
    pub incremental: bool,
    /// Background snapshot writers, joined when the pipeline ends.
    pub writers: Writers,
}

/// Threads writing snapshots out, so the pipeline can wait for them before it
/// reopens state (RocksDB holds a lock on its directory).
pub type Writers = Arc<Mutex<Vec<JoinHandle<()>>>>;

/// Hands snapshots to the instance's writer thread.
pub struct SnapshotWriterThread {
    jobs: Sender<Job>,
    /// Whether the next checkpoint should be a full snapshot.
    wants_full: Arc<AtomicBool>,
    /// The directory holding the chain's files, once there is a chain.
    chain_dir: Arc<Mutex<Option<PathBuf>>>,
}

impl SnapshotWriterThread {
    /// Starts the thread; it ends once this handle is dropped and its queue
    /// is written. Its handle goes into `c.writers`, for the pipeline to join.
    pub fn start(c: &OperatorCheckpointing) -> std::io::Result<Self> {
        let (jobs, queue) = unbounded::<Job>();
        let c = c.clone();
        let writers = c.writers.clone();
        let wants_full = Arc::new(AtomicBool::new(true));
        let next = wants_full.clone();
        let chain_dir = Arc::new(Mutex::new(None));
        let published_dir = chain_dir.clone();
        let handle = std::thread::Builder::new()
            .name(format!(
                "snap-{}-{}",
                c.task.task.component, c.task.task.instance
            ))
            .spawn(move || {
                let mut chain = Chain::default();
                for job in queue {
                    let part = write_snapshot(&c, &mut chain, job.checkpoint, job.snapshot);
                    if part.is_err() {
                        chain = Chain::default();
                    }
                    if let Ok(mut dir) = published_dir.lock() {
                        dir.clone_from(&chain.dir);
                    }
                    next.store(
                        !c.incremental || !chain.extendable() || chain.due_for_full(),
                        Ordering::Release,
                    );
                    c.task.ack_timed(job.checkpoint, part, job.timing);
                }
            })?;
        if let Ok(mut writers) = writers.lock() {
            writers.retain(|h| !h.is_finished());
            writers.push(handle);
        }
        Ok(Self {
            jobs,
            wants_full,
            chain_dir,
        })
    }

    /// What the next checkpoint will write of the keyed state, as far as the
    /// checkpoints written so far tell.
    pub fn next_scope(&self) -> CaptureScope {
        // The last checkpoint may have been abandoned since it was written
        // (another task failed, or it timed out), and its directory removed:
        // then nothing can be added on top of it.
        let chain_intact = || {
            self.chain_dir
                .lock()
                .ok()
                .and_then(|dir| dir.as_ref().map(|d| d.exists()))
                .unwrap_or(false)
        };
        if self.wants_full.load(Ordering::Acquire) || !chain_intact() {
            CaptureScope::Full
        } else {
            CaptureScope::Changes
        }
    }

    /// Queues a checkpoint's snapshot.
    pub fn write(&self, checkpoint: CheckpointId, snapshot: InstanceSnapshot, timing: Timing) {
        let _ = self.jobs.send(Job {
            checkpoint,
            snapshot,
            timing,
        });
    }
}

/// Writes one instance's snapshot into the checkpoint's directory.
fn write_snapshot(
    c: &OperatorCheckpointing,
    chain: &mut Chain,
    checkpoint: CheckpointId,
    snapshot: InstanceSnapshot,
) -> Result<Part, String> {
    let dir = c.task.dir(checkpoint);
    let name = format!("{}-{}", c.task.task.component, c.task.task.instance);
    let mut written = 0u64;
    if let Some(capture) = snapshot.keyed {
        // A capture that cannot be written whole goes on the chain even when
        // a full snapshot is due; see the module comment.
        let incremental = c.incremental
            && capture.has_changes()
            && chain.extendable()
            && (!chain.due_for_full() || !capture.can_write_full())
            && match chain.link_into(&dir) {
                Ok(()) => true,
                Err(e) => {
                    // The previous checkpoint was abandoned and removed, say.
                    tracing::debug!(task = %name, checkpoint, "writing a full snapshot: {e}");
                    false
                }
            };
        let whole = capture.can_write_full();
        let suffix = if incremental { "changes" } else { "keyed" };
        let file = format!("{name}.{checkpoint:010}.{suffix}");
        let mut out = SnapshotWriter::create(&dir.join(&file)).map_err(|e| e.to_string())?;
        if incremental {
            capture.write_changes(&mut out)
        } else {
            capture.write(&mut out)
        }
        .map_err(|e| e.to_string())?;
        let summary = out.finish().map_err(|e| e.to_string())?;
        written += summary.bytes;
        let file = FileRef {
            file,
            bytes: summary.bytes,
            crc32: summary.crc32,
        };
        if incremental {
            chain.changes.push(file);
        } else {
            chain.base = Some(file);
            chain.changes.clear();
        }
        chain.dir = Some(dir.clone());
        if incremental && !whole && chain.due_for_full() {
            // The backend captured changes only (a full capture would
            // have paused it): the chain is folded into a full file here.
            // One that can write itself whole does so at the next checkpoint.
            let folded = 1 + chain.changes.len();
            match compact_chain(chain, &dir, &format!("{name}.{checkpoint:010}.keyed")) {
                Ok(bytes) => {
                    tracing::debug!(
                        task = %name,
                        checkpoint,
                        folded,
                        bytes,
                        "compacted the incremental chain into a full file"
                    );
                    written += bytes;
                }
                Err(e) => tracing::warn!(
                    task = %name,
                    checkpoint,
                    "could not compact the incremental chain, keeping it: {e}"
                ),
            }
        }
    } else {
        *chain = Chain::default();
    }
    let operator_state = match snapshot.operator_state {
        Some((version, bytes)) => {
            let file =
                write_file(&dir, &format!("{name}.opstate"), &bytes).map_err(|e| e.to_string())?;
            written += file.bytes;
            Some((file, version))
        }
        None => None,
    };
    Ok(Part::Operator {
        parallelism: c.parallelism,
        key_groups: (c.key_groups.start, c.key_groups.end),
        states: snapshot.states,
        keyed: chain.base.clone(),
        keyed_changes: chain.changes.clone(),
        written,
        operator_state,
        records_in: snapshot.records_in,
    })
}

/// Folds `chain` (its files all in `dir`) into the full file `file` in
/// `dir`, makes that the chain, and removes the folded files from `dir`
/// (earlier checkpoints keep their own links). Returns the bytes written.
fn compact_chain(chain: &mut Chain, dir: &Path, file: &str) -> Result<u64, SnapshotError> {
    let files: Vec<_> = chain
        .base
        .iter()
        .chain(&chain.changes)
        .map(|f| {
            let summary = FileSummary {
                bytes: f.bytes,
                crc32: f.crc32,
            };
            (dir.join(&f.file), summary)
        })
        .collect();
    let path = dir.join(file);
    let mut out = SnapshotWriter::create(&path)?;
    compaction::compact(&files, &mut out)?;
    let summary = out.finish()?;
    for (folded, _) in &files {
        if let Err(e) = std::fs::remove_file(folded) {
            tracing::debug!(file = %folded.display(), "could not remove a compacted file: {e}");
        }
    }
    chain.base = Some(FileRef {
        file: file.to_owned(),
        bytes: summary.bytes,
        crc32: summary.crc32,
    });
    chain.changes.clear();
    Ok(summary.bytes)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::checkpoint::store::Store;
    use crate::checkpoint::{Report, TaskCheckpointing, TaskKey};
    use crate::graph::ComponentId;
    use crate::state::heap::HeapBackend;
    use crate::state::{Address, KeyedBackend};

    /// Incremental checkpointing of instance 0 of `op` (key groups 0..4)
    /// into `root`, and where its reports arrive.
    fn checkpointing(root: &Path) -> (OperatorCheckpointing, crossbeam_channel::Receiver<Report>) {
        let (reports, received) = crossbeam_channel::unbounded();
        let c = OperatorCheckpointing {
            task: TaskCheckpointing {
                task: TaskKey {
                    component: ComponentId::from("op"),
                    instance: 0,
                },
                root: root.to_path_buf(),
                reports,
            },
            parallelism: 1,
            key_groups: 0..4,
            incremental: true,
            writers: Arc::new(Mutex::new(Vec::new())),
        };
        (c, received)
    }

    /// Queues a capture of `backend` as `checkpoint` and waits for its part.
    fn checkpoint(
        writer: &SnapshotWriterThread,
        reports: &crossbeam_channel::Receiver<Report>,
        backend: &mut dyn KeyedBackend,
        checkpoint: CheckpointId,
    ) -> Result<Part, String> {
        let capture = backend.capture(writer.next_scope()).expect("capture");
        let snapshot = InstanceSnapshot {
            keyed: Some(capture),
            ..InstanceSnapshot::default()
        };
        writer.write(checkpoint, snapshot, Timing::default());
        match reports.recv_timeout(Duration::from_secs(10)) {
            Ok(Report::Ack(ack)) => ack.part,
            _ => panic!("no part for checkpoint {checkpoint}"),
        }
    }

    /// The writer asks for a change file once a chain exists, and for a full
    /// snapshot again when the checkpoint it would build on was abandoned.
    #[test]
    fn an_abandoned_checkpoint_makes_the_next_capture_full() {
        let root = tempfile::tempdir().expect("temp dir");
        let store = Store::open(root.path()).expect("store");
        let (c, received) = checkpointing(root.path());
        let writer = SnapshotWriterThread::start(&c).expect("start");
        let mut backend = HeapBackend::new(0..4);
        let put = |backend: &mut HeapBackend, v: &[u8]| {
            let at = Address {
                key_group: 1,
                state: 0,
                key: b"k",
            };
            backend.set_value(at, v, 1).expect("write");
        };
        assert_eq!(writer.next_scope(), CaptureScope::Full);
        put(&mut backend, b"1");
        store.begin(1).expect("begin");
        let first = checkpoint(&writer, &received, &mut backend, 1).expect("first");
        assert!(matches!(first, Part::Operator { keyed: Some(_), .. }));

        assert_eq!(writer.next_scope(), CaptureScope::Changes);
        put(&mut backend, b"2");
        store.begin(2).expect("begin");
        let second = checkpoint(&writer, &received, &mut backend, 2).expect("second");
        assert!(
            matches!(&second, Part::Operator { keyed_changes, .. } if keyed_changes.len() == 1)
        );

        // Checkpoint 2 is abandoned: its directory goes.
        store.discard(2);
        assert_eq!(writer.next_scope(), CaptureScope::Full);
        put(&mut backend, b"3");
        store.begin(3).expect("begin");
        let third = checkpoint(&writer, &received, &mut backend, 3).expect("third");
        assert!(matches!(&third, Part::Operator { keyed_changes, .. } if keyed_changes.is_empty()));
    }

    /// RocksDB captures changes only once a chain exists; when they add up
    /// to a full rewrite's worth, the writer folds the chain into one full
    /// file, which restores to the same state.
    #[cfg(feature = "rocksdb")]
    #[test]
    fn a_chain_of_changes_is_compacted_into_a_full_file() {
        use crate::state::rocks::{RocksOptions, RocksStore};
        use crate::state::snapshot::SnapshotReader;

        let root = tempfile::tempdir().expect("temp dir");
        let db = tempfile::tempdir().expect("temp dir");
        let store = Store::open(root.path()).expect("store");
        let (c, received) = checkpointing(root.path());
        let options = RocksOptions {
            block_cache: 1 << 20,
            write_buffer: 1 << 20,
            cache: 64 << 20,
        };
        let rocks = RocksStore::open(db.path(), options).expect("open");
        let mut backend = rocks.backend(0..4);
        let writer = SnapshotWriterThread::start(&c).expect("start");
        let key = |i: u32| format!("key-{i}").into_bytes();
        let put = |backend: &mut crate::state::rocks::RocksBackend, i: u32, round: u32| {
            let k = key(i);
            let at = Address {
                key_group: (i % 4) as u16,
                state: 0,
                key: &k,
            };
            backend
                .set_value(at, format!("{i}@{round}").as_bytes(), 1)
                .expect("write");
        };
        let mut compacted = None;
        for n in 1..=8u64 {
            // Every key rewritten, and one more added, each checkpoint.
            for i in 0..=(n as u32 + 10) {
                put(&mut backend, i, n as u32);
            }
            let dir = store.begin(n).expect("begin");
            // Changes only, once the first checkpoint made a chain.
            assert_eq!(
                writer.next_scope() == CaptureScope::Full,
                n == 1,
                "checkpoint {n}"
            );
            let part = checkpoint(&writer, &received, &mut backend, n).expect("part");
            let Part::Operator {
                keyed: Some(base),
                keyed_changes,
                ..
            } = part
            else {
                panic!("no keyed state in checkpoint {n}");
            };
            if n > 1 && base.file.ends_with(&format!("{n:010}.keyed")) {
                assert!(keyed_changes.is_empty());
                let files: Vec<_> = std::fs::read_dir(&dir)
                    .expect("read dir")
                    .map(|e| e.expect("entry").file_name())
                    .collect();
                assert!(
                    !files
                        .iter()
                        .any(|f| f.to_string_lossy().ends_with(".changes")),
                    "the folded files are gone from the checkpoint: {files:?}"
                );
                compacted = Some((n, dir.join(&base.file), base));
                break;
            }
        }
        let (n, path, base) = compacted.expect("a compaction within 8 checkpoints");
        let summary = FileSummary {
            bytes: base.bytes,
            crc32: base.crc32,
        };
        let mut restored = Vec::new();
        SnapshotReader::open(&path, &summary)
            .expect("open")
            .read_groups(&(0..4), &mut |k, v| {
                restored.push((k.to_vec(), v[8..].to_vec()));
                Ok(())
            })
            .expect("read");
        restored.sort();
        let mut expected: Vec<_> = (0..=(n as u32 + 10))
            .map(|i| {
                let k = key(i);
                let at = Address {
                    key_group: (i % 4) as u16,
                    state: 0,
                    key: &k,
                };
                (
                    crate::state::layout::slot_key(at),
                    format!("{i}@{n}").into_bytes(),
                )
            })
            .collect();
        expected.sort();
        assert_eq!(restored, expected);
    }
}
