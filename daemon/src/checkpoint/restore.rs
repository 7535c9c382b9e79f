//! Starting from a checkpoint: choose the latest one whose files check out,
//! and hand each instance of the new topology its share, whatever the new
//! parallelism.
//!
//! - Keyed state: instance `i` loads the key groups it now owns from every old
//!   snapshot file whose key groups overlap them.
//! - Operator state: old instance `j` goes to new instance `j mod parallelism`
//!   (the plugin's `restore` gets every part assigned to it).
//! - Sources resume at their recorded position.
//! - Sinks: the restored checkpoint's part files are committed (it may have
//!   completed just before a crash), and everything newer is removed.

use std::ops::Range;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::coordinator::commit;
use super::metadata::{Kind, Metadata};
use super::position::PartitionMap;
use super::store::{self, Store, StoreError};
use super::{CheckpointId, SourcePosition};
use crate::state::Registry;
use crate::state::snapshot::FileSummary;

/// Why a run cannot start from its checkpoints.
#[derive(Debug, Error)]
pub enum RestoreError {
    /// Checkpoints exist but none can be used.
    #[error("no usable checkpoint in {}; refusing to start from empty state:\n  {}", .root.display(), .problems.join("\n  "))]
    NoUsable {
        /// The checkpoint directory.
        root: PathBuf,
        /// What is wrong with each.
        problems: Vec<String>,
    },
    /// The checkpoint was taken with another number of key groups.
    #[error("{}: taken with max_parallelism = {was}, the config says {now}; key groups cannot change", .dir.display())]
    MaxParallelism {
        /// The checkpoint.
        dir: PathBuf,
        /// Its key groups.
        was: u32,
        /// The config's.
        now: u32,
    },
    /// The file system failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Operator state for one instance: the version and the saved parts.
pub type SavedParts = (u32, Vec<Vec<u8>>);

/// A checkpoint chosen to start from.
#[derive(Debug, Clone)]
pub struct Restored {
    /// Its directory.
    pub dir: PathBuf,
    /// Its metadata.
    pub metadata: Metadata,
}

/// The newest complete checkpoint whose files are all intact. Newer ones that
/// are damaged are set aside (renamed `corrupt-…`) with a warning, so their ids
/// are not reused; if checkpoints exist and none is usable, that is an error.
pub fn find_latest(store: &Store) -> Result<Option<Restored>, RestoreError> {
    let removed = store.remove_partial()?;
    if removed > 0 {
        tracing::info!(removed, "removed checkpoints that never completed");
    }
    // (id, directory, what is wrong, the prefix it is set aside under)
    let mut damaged: Vec<(CheckpointId, PathBuf, String, &str)> = Vec::new();
    for (id, dir) in store.complete_checkpoints()? {
        let checked = store::load(&dir)
            .map_err(|e| (e, store::CORRUPT_PREFIX))
            .and_then(|m| own_checkpoint(&dir, id, m).map_err(|e| (e, store::FOREIGN_PREFIX)));
        match checked {
            Ok(metadata) => {
                for (bad_id, bad_dir, problem, prefix) in damaged {
                    set_aside(&bad_dir, bad_id, &problem, prefix);
                }
                return Ok(Some(Restored { dir, metadata }));
            }
            Err((e, prefix)) => damaged.push((id, dir, e.to_string(), prefix)),
        }
    }
    if damaged.is_empty() {
        return Ok(None);
    }
    Err(RestoreError::NoUsable {
        root: store.root().to_path_buf(),
        problems: damaged.into_iter().map(|(_, _, p, _)| p).collect(),
    })
}

/// Only a checkpoint this daemon completed under this name is restored from:
/// a savepoint (or anything else) copied into the checkpoint directory is not.
fn own_checkpoint(
    dir: &Path,
    id: CheckpointId,
    metadata: Metadata,
) -> Result<Metadata, StoreError> {
    let problem = if metadata.kind != Kind::Checkpoint {
        Some(format!("is a {:?}, not a checkpoint the daemon took", metadata.kind).to_lowercase())
    } else if metadata.id != id {
        Some(format!("names checkpoint {}, not {id}", metadata.id))
    } else {
        None
    };
    match problem {
        None => Ok(metadata),
        Some(reason) => Err(StoreError::Corrupt {
            path: dir.join(store::METADATA),
            reason,
        }),
    }
}

/// Renames a checkpoint directory that cannot be restored: `corrupt-<id>`
/// for the daemon's own (its id is never used again), `foreign-<id>` for
/// one it did not take (whose id means nothing).
fn set_aside(dir: &Path, id: CheckpointId, problem: &str, prefix: &str) {
    let aside = dir.with_file_name(format!("{prefix}{id:010}"));
    tracing::warn!(
        checkpoint = id,
        moved_to = %aside.display(),
        "skipping a damaged checkpoint for an older one: {problem}"
    );
    if let Err(e) = std::fs::rename(dir, &aside) {
        tracing::warn!(dir = %dir.display(), "cannot set the damaged checkpoint aside: {e}");
    }
}

/// Reads a savepoint (or any checkpoint directory) named by a person.
pub fn open(dir: &Path) -> Result<Restored, RestoreError> {
    Ok(Restored {
        dir: dir.to_path_buf(),
        metadata: store::load(dir)?,
    })
}

impl Restored {
    /// The checkpoint's id.
    pub fn id(&self) -> CheckpointId {
        self.metadata.id
    }

    /// Fails unless the checkpoint has `max_parallelism` key groups.
    pub fn check_key_groups(&self, max_parallelism: u32) -> Result<(), RestoreError> {
        if self.metadata.max_parallelism == max_parallelism {
            return Ok(());
        }
        Err(RestoreError::MaxParallelism {
            dir: self.dir.clone(),
            was: self.metadata.max_parallelism,
            now: max_parallelism,
        })
    }

    /// Where source `id` (instance `instance`) resumes.
    pub fn source_position(&self, id: &str, instance: u32) -> Option<SourcePosition> {
        self.metadata
            .sources
            .get(id)
            .and_then(|p| p.get(instance as usize))
            .cloned()
    }

    /// Whether the checkpoint has a position for source `id`.
    pub fn has_source(&self, id: &str) -> bool {
        self.metadata.sources.contains_key(id)
    }

    /// Every partition any instance of partitioned source `id` owned, with
    /// its offset: a restore at another parallelism hands them out anew.
    pub fn source_partitions(&self, id: &str) -> PartitionMap {
        let mut map = PartitionMap::new();
        for position in self.metadata.sources.get(id).into_iter().flatten() {
            if let SourcePosition::Partitions(parts) = position {
                for p in parts {
                    map.insert((p.topic.clone(), p.partition), p.clone());
                }
            }
        }
        map
    }

    /// The largest event timestamp source `id` (instance `instance`) had sent.
    pub fn source_event_time(&self, id: &str, instance: u32) -> Option<i64> {
        self.metadata
            .source_event_times
            .get(id)
            .and_then(|t| t.get(instance as usize))
            .copied()
            .flatten()
    }

    /// The state registry operator `id` had, so every name keeps its id.
    pub fn registry(&self, id: &str) -> Option<Registry> {
        let op = self.metadata.operators.get(id)?;
        Some(Registry::from_specs(op.states.clone()))
    }

    /// The keyed-state snapshot files of operator `id` that hold any of
    /// `key_groups`, in the order they are applied: per old instance, its full
    /// file, then its change files.
    pub fn keyed_files(&self, id: &str, key_groups: &Range<u32>) -> Vec<(PathBuf, FileSummary)> {
        let Some(op) = self.metadata.operators.get(id) else {
            return Vec::new();
        };
        op.instances
            .iter()
            .filter(|i| i.key_groups.0 < key_groups.end && key_groups.start < i.key_groups.1)
            .flat_map(|i| i.keyed.iter().chain(&i.keyed_changes))
            .map(|f| {
                (
                    self.dir.join(&f.file),
                    FileSummary {
                        bytes: f.bytes,
                        crc32: f.crc32,
                    },
                )
            })
            .collect()
    }

    /// Operator state for instance `instance` of `parallelism` of operator `id`:
    /// its version and the parts of the old instances assigned to it.
    pub fn operator_state(
        &self,
        id: &str,
        instance: u32,
        parallelism: u32,
    ) -> Result<Option<SavedParts>, StoreError> {
        let Some(op) = self.metadata.operators.get(id) else {
            return Ok(None);
        };
        let mut parts = Vec::new();
        for (j, old) in op.instances.iter().enumerate() {
            if j as u32 % parallelism != instance {
                continue;
            }
            if let Some(file) = &old.operator_state {
                parts.push(store::read_file(&self.dir, file)?);
            }
        }
        Ok((!parts.is_empty()).then_some((op.operator_state_version, parts)))
    }

    /// How many input records instance `instance` of operator `id` had taken
    /// when the checkpoint was taken, so the positions its errors name go on
    /// across restarts; `None` when the parallelism changed (the instances
    /// then see other records).
    pub fn records_in(&self, id: &str, instance: u32, parallelism: u32) -> Option<u64> {
        let op = self.metadata.operators.get(id)?;
        (op.parallelism == parallelism)
            .then(|| op.instances.get(instance as usize).map(|i| i.records_in))
            .flatten()
    }

    /// Commits the checkpoint's sink part files (it may have completed just
    /// before a crash, with the commit not done yet).
    pub fn commit_sinks(&self) -> Result<(), StoreError> {
        commit(self.metadata.sinks.values().flatten())
    }
}
