//! The metadata file of a checkpoint: written last, so its presence is what
//! makes a checkpoint complete. JSON, so a person can read it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{CheckpointId, SourcePosition};
use crate::state::StateSpec;

/// Version of this format.
pub const FORMAT: u32 = 1;

/// A data file of the checkpoint, relative to its directory, with the length
/// and CRC-32 a restore checks before using it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// File name inside the checkpoint directory.
    pub file: String,
    /// Length in bytes.
    pub bytes: u64,
    /// CRC-32 (IEEE) of the whole file.
    pub crc32: u32,
}

/// A sink's part file: where it waits, and where committing renames it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committable {
    /// The pending file.
    pub pending: PathBuf,
    /// Its committed name.
    pub committed: PathBuf,
}

/// One operator instance's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceMeta {
    /// Key groups it owned: `[start, end)`.
    pub key_groups: (u32, u32),
    /// Its keyed state: a full snapshot file.
    pub keyed: Option<FileRef>,
    /// Change files to apply on top of `keyed`, oldest first (incremental
    /// checkpoints; the files may have been written by earlier checkpoints
    /// and are hard-linked into this one's directory).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keyed_changes: Vec<FileRef>,
    /// Its plugin's operator state.
    pub operator_state: Option<FileRef>,
}

/// One operator's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorMeta {
    /// Its parallelism.
    pub parallelism: u32,
    /// Its declared keyed states, by name.
    pub states: BTreeMap<String, StateSpec>,
    /// Version of its operator state.
    pub operator_state_version: u32,
    /// Each instance, by index.
    pub instances: Vec<InstanceMeta>,
}

/// Whether this is a periodic checkpoint or a savepoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Taken by the coordinator; removed by retention.
    Checkpoint,
    /// Asked for by a person; never removed by the daemon.
    Savepoint,
}

/// Everything a restore needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// [`FORMAT`].
    pub format: u32,
    /// The checkpoint.
    pub id: CheckpointId,
    /// Checkpoint or savepoint.
    pub kind: Kind,
    /// When it completed, ms since the Unix epoch.
    pub completed_at_ms: u64,
    /// Key groups: a restore needs the same number.
    pub max_parallelism: u32,
    /// Source positions, by source id and instance.
    pub sources: BTreeMap<String, Vec<SourcePosition>>,
    /// Operator snapshots, by operator id.
    pub operators: BTreeMap<String, OperatorMeta>,
    /// Part files to commit, by sink id: this checkpoint's, and those of
    /// abandoned checkpoints since the last complete one.
    pub sinks: BTreeMap<String, Vec<Committable>>,
}

impl Metadata {
    /// Every data file it names.
    pub fn files(&self) -> impl Iterator<Item = &FileRef> {
        self.operators
            .values()
            .flat_map(|o| &o.instances)
            .flat_map(|i| {
                i.keyed
                    .iter()
                    .chain(&i.keyed_changes)
                    .chain(&i.operator_state)
            })
    }
}
