//! Where a start of the pipeline restores from: the latest checkpoint, a
//! savepoint named once, or nothing; and what that means for output that
//! exactly-once sinks already committed, which is never removed or replaced
//! unless the user asks.
//!
//! - A savepoint (`--from-savepoint`, or `[checkpoint] start_from_savepoint`)
//!   is used once: `<checkpoints>/_started_from` records it, and from the
//!   first checkpoint after it on, every start (a restart, a `Restart=` of the
//!   unit) restores the latest checkpoint instead of rewinding again.
//! - Checkpoint ids go on past every id already used, by a checkpoint or by a
//!   committed part's name, so a part never collides with an older one.
//! - Restoring a checkpoint older than committed output (a savepoint, or the
//!   fallback past a damaged checkpoint) repeats the records after it, in new
//!   parts after the old ones, with a warning; `--remove-newer-output` removes
//!   the newer parts instead.
//! - Committed output with no checkpoint to restore would all be written
//!   again: the daemon refuses to start unless `--start-over` says so.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::checkpoint::CheckpointId;
use crate::checkpoint::restore::{self, Restored};
use crate::checkpoint::store::{self, Store, StoreError};
use crate::graph::{
    CheckpointSettings, ComponentKind, DEFAULT_CHECKPOINT_TIMEOUT, SinkSpec, Topology,
};
use crate::sinks::directory;
use crate::topology::Checkpointing;
use crate::validate::Validated;

use super::SuperviseError;

/// How `weir run` was asked to start.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// `--from-savepoint`: the savepoint to start from, once.
    pub savepoint: Option<Restored>,
    /// `--start-over`: start from empty state although sinks hold committed
    /// output and no checkpoint exists (new parts follow the old ones).
    pub start_over: bool,
    /// `--remove-newer-output`: when the checkpoint restored is older than
    /// committed output, remove that output instead of repeating it.
    pub remove_newer_output: bool,
}

/// Why a start is refused.
#[derive(Debug, Error)]
pub enum StartRefused {
    /// Committed output, and nothing to restore.
    #[error(
        "sink `{sink}`: {} holds output committed by an earlier run (up to checkpoint {newest}), \
         but there is no checkpoint to restore in {}: starting from scratch would write all of it \
         again. Move the output away, restore its checkpoints, or run with --start-over to start \
         from empty state anyway (new parts follow the old ones)",
        .dir.display(), .checkpoints.display()
    )]
    OutputWithoutCheckpoint {
        /// The sink.
        sink: String,
        /// Its directory.
        dir: PathBuf,
        /// The newest committed part's checkpoint.
        newest: CheckpointId,
        /// Where checkpoints were looked for.
        checkpoints: PathBuf,
    },
    /// No id is left.
    #[error("checkpoint ids are exhausted: {0} has been used (a checkpoint or part named with it)")]
    IdsExhausted(CheckpointId),
}

/// Where the next start restores from, across the restarts of one process.
#[derive(Debug)]
pub(super) struct StartingPoint {
    /// The savepoint to start from, until a checkpoint newer than it exists.
    pub(super) savepoint: Option<Restored>,
    /// Checkpoints from this id on were taken after the savepoint.
    pub(super) first_new: CheckpointId,
    /// Restore the hand-over checkpoint of a reload (without `[checkpoint]`).
    pub(super) handoff: bool,
    pub(super) start_over: bool,
    pub(super) remove_newer_output: bool,
}

impl StartingPoint {
    pub(super) fn new(options: StartOptions) -> Self {
        Self {
            savepoint: options.savepoint,
            first_new: 0,
            handoff: false,
            start_over: options.start_over,
            remove_newer_output: options.remove_newer_output,
        }
    }
}

/// The record of a savepoint a run started from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartedFrom {
    /// The savepoint's directory.
    savepoint: PathBuf,
    /// Its checkpoint id.
    id: CheckpointId,
    /// The first checkpoint id taken after it.
    first_new: CheckpointId,
}

const STARTED_FROM: &str = "_started_from";

/// Opens the checkpoint store, finds the checkpoint to start from and commits
/// its sink files. Without `[checkpoint]`, the store is `<data_dir>/handoff`,
/// used only to hand state over to a reloaded topology.
pub(super) fn prepare_checkpoints(
    validated: &Validated,
    start: &mut StartingPoint,
) -> Result<Checkpointing, SuperviseError> {
    let topology = &validated.topology;
    let (store, settings, latest) = match topology.checkpoint {
        Some(settings) => {
            let store = Store::open(&topology.data_dir.join("checkpoints"))?;
            let latest = restore::find_latest(&store)?;
            (store, settings, latest)
        }
        None => {
            let root = topology.data_dir.join("handoff");
            if !start.handoff && root.exists() {
                std::fs::remove_dir_all(&root).map_err(|source| StoreError::Io {
                    path: root.clone(),
                    source,
                })?;
            }
            let store = Store::open(&root)?;
            let latest = if start.handoff {
                restore::find_latest(&store)?
            } else {
                None
            };
            let settings = CheckpointSettings {
                interval: None,
                timeout: DEFAULT_CHECKPOINT_TIMEOUT,
                retain: 1,
                incremental: false,
            };
            (store, settings, latest)
        }
    };
    let committed = committed_output(topology)?;
    let newest_output = committed.iter().map(|(.., n)| *n).max().unwrap_or(0);
    let highest = store.highest_id()?.max(newest_output);
    let restored = match start.savepoint.clone() {
        Some(savepoint) => {
            if start.first_new == 0 {
                start.first_new = first_new_after(&store, &savepoint, latest.as_ref(), highest)?;
            }
            match latest {
                Some(l) if l.id() >= start.first_new => {
                    tracing::info!(
                        savepoint = %savepoint.dir.display(),
                        "started from this savepoint before; checkpoint {} is newer",
                        l.id()
                    );
                    start.savepoint = None;
                    Some(l)
                }
                _ => Some(savepoint),
            }
        }
        None => latest,
    };
    match &restored {
        Some(r) => {
            r.commit_sinks()?;
            tracing::info!(checkpoint = r.id(), dir = %r.dir.display(), "restoring from checkpoint");
            for (sink, dir, newest) in committed.iter().filter(|(.., n)| *n > r.id()) {
                if start.remove_newer_output {
                    let removed =
                        directory::remove_newer(dir, r.id()).map_err(|source| StoreError::Io {
                            path: dir.clone(),
                            source,
                        })?;
                    tracing::warn!(sink = %sink, dir = %dir.display(), removed, "--remove-newer-output: removed the parts committed after checkpoint {}", r.id());
                } else {
                    tracing::warn!(
                        sink = %sink,
                        dir = %dir.display(),
                        "checkpoint {} is older than output committed up to checkpoint {newest}: \
                         the records after it are written again, in new parts after the old ones \
                         (--remove-newer-output removes the old ones instead)",
                        r.id()
                    );
                }
            }
        }
        None if topology.checkpoint.is_some() && !start.start_over => {
            if let Some((sink, dir, newest)) = committed.into_iter().next() {
                return Err(StartRefused::OutputWithoutCheckpoint {
                    sink,
                    dir,
                    newest,
                    checkpoints: store.root().to_path_buf(),
                }
                .into());
            }
        }
        None => {}
    }
    let used = highest.max(restored.as_ref().map_or(0, Restored::id));
    let next_id = used
        .checked_add(1)
        .ok_or(StartRefused::IdsExhausted(used))?;
    Ok(Checkpointing {
        store,
        settings,
        restored,
        next_id,
    })
}

/// The first checkpoint id after `savepoint`, recorded in the store so a
/// later process knows the savepoint was already started from.
fn first_new_after(
    store: &Store,
    savepoint: &Restored,
    latest: Option<&Restored>,
    highest: CheckpointId,
) -> Result<CheckpointId, SuperviseError> {
    let record = store.root().join(STARTED_FROM);
    let dir = std::fs::canonicalize(&savepoint.dir).unwrap_or_else(|_| savepoint.dir.clone());
    if let Some(earlier) = std::fs::read(&record)
        .ok()
        .and_then(|b| serde_json::from_slice::<StartedFrom>(&b).ok())
        && earlier.savepoint == dir
        && earlier.id == savepoint.id()
        && latest.is_some_and(|l| l.id() >= earlier.first_new)
    {
        return Ok(earlier.first_new);
    }
    let used = highest.max(savepoint.id());
    let first_new = used
        .checked_add(1)
        .ok_or(StartRefused::IdsExhausted(used))?;
    let json = serde_json::to_vec_pretty(&StartedFrom {
        savepoint: dir,
        id: savepoint.id(),
        first_new,
    })
    .map_err(|e| StoreError::Corrupt {
        path: record.clone(),
        reason: e.to_string(),
    })?;
    store::write_atomic(store.root(), STARTED_FROM, &json)?;
    Ok(first_new)
}

/// Each directory sink with committed parts: its id, directory and the
/// newest part's checkpoint.
fn committed_output(
    topology: &Topology,
) -> Result<Vec<(String, PathBuf, CheckpointId)>, StoreError> {
    let mut out = Vec::new();
    for c in &topology.components {
        if let ComponentKind::Sink(SinkSpec::Directory { dir, .. }) = &c.kind {
            let newest = directory::newest_committed(dir).map_err(|source| StoreError::Io {
                path: dir.clone(),
                source,
            })?;
            if let Some(newest) = newest {
                out.push((c.id.to_string(), dir.clone(), newest));
            }
        }
    }
    Ok(out)
}
