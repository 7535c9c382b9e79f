//! The metadata file of a checkpoint: written last, so its presence is what
//! makes a checkpoint complete. JSON, so a person can read it, sealed with a
//! checksum of its exact bytes and read with no unknown key allowed, so a
//! changed digit or a renamed key makes the checkpoint damaged (and the
//! restore falls back to an older one) instead of being restored wrong.
//!
//! ```text
//! {
//! "crc32": "1c291ca3",
//! "metadata": { "format": 2, "id": 7, ... }
//! }
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{CheckpointId, SourcePosition};
use crate::state::StateSpec;

/// Version of this format: 2 is sealed with a checksum; 1 (unsealed, from
/// earlier versions of Weir) is still read.
pub const FORMAT: u32 = 2;

/// Encodes `metadata` as the `_metadata` file: the pretty JSON and a CRC-32
/// of exactly those bytes.
pub fn seal(metadata: &Metadata) -> Result<Vec<u8>, serde_json::Error> {
    let inner = serde_json::to_string_pretty(metadata)?;
    let crc = crc32fast::hash(inner.as_bytes());
    Ok(format!("{{\n\"crc32\": \"{crc:08x}\",\n\"metadata\": {inner}\n}}\n").into_bytes())
}

/// Decodes a `_metadata` file, checking its checksum and refusing unknown
/// or missing keys. A file of format 1 (unsealed) is read as it is.
pub fn unseal(bytes: &[u8]) -> Result<Metadata, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sealed<'a> {
        crc32: String,
        #[serde(borrow)]
        metadata: &'a serde_json::value::RawValue,
    }
    if let Ok(sealed) = serde_json::from_slice::<Sealed<'_>>(bytes) {
        let raw = sealed.metadata.get();
        let crc = format!("{:08x}", crc32fast::hash(raw.as_bytes()));
        if crc != sealed.crc32 {
            return Err(format!(
                "its checksum is {crc}, the file says {}: the metadata was changed or damaged",
                sealed.crc32
            ));
        }
        let metadata: Metadata = serde_json::from_str(raw).map_err(|e| e.to_string())?;
        return match metadata.format {
            FORMAT => Ok(metadata),
            other => Err(format!(
                "format {other} in a sealed file; this weir writes {FORMAT}"
            )),
        };
    }
    let metadata: Metadata = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    match metadata.format {
        1 => Ok(metadata),
        other => Err(format!(
            "format {other} is not one this weir reads ({FORMAT}, or 1 unsealed)"
        )),
    }
}

/// A data file of the checkpoint, relative to its directory, with the length
/// and CRC-32 a restore checks before using it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
pub struct Committable {
    /// The pending file.
    pub pending: PathBuf,
    /// Its committed name.
    pub committed: PathBuf,
}

/// One operator instance's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// Input records it had taken, counted from its first start.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub records_in: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One operator's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
    /// The largest event timestamp each source instance had sent (sources
    /// with event time only), by source id and instance.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_event_times: BTreeMap<String, Vec<Option<i64>>>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Metadata {
        Metadata {
            format: FORMAT,
            id: 7,
            kind: Kind::Checkpoint,
            completed_at_ms: 1,
            max_parallelism: 128,
            sources: BTreeMap::from([("gen".to_owned(), vec![SourcePosition::Offset(12_345)])]),
            source_event_times: BTreeMap::from([("gen".to_owned(), vec![Some(-5)])]),
            operators: BTreeMap::new(),
            sinks: BTreeMap::new(),
        }
    }

    #[test]
    fn a_sealed_file_reads_back_and_any_change_is_refused() {
        let sealed = String::from_utf8(seal(&sample()).unwrap()).unwrap();
        assert_eq!(unseal(sealed.as_bytes()).unwrap(), sample());
        // One digit of a source position.
        let changed = sealed.replace("12345", "12346");
        let e = unseal(changed.as_bytes()).unwrap_err();
        assert!(e.contains("checksum"), "{e}");
        // A renamed key, with the checksum made to fit: still refused.
        let inner = serde_json::to_string_pretty(&sample())
            .unwrap()
            .replace("\"sinks\"", "\"sinkz\"");
        let crc = crc32fast::hash(inner.as_bytes());
        let forged = format!("{{\"crc32\": \"{crc:08x}\", \"metadata\": {inner}}}");
        let e = unseal(forged.as_bytes()).unwrap_err();
        assert!(e.contains("unknown field `sinkz`"), "{e}");
        // An unknown key next to the seal.
        let e = unseal(sealed.replacen('{', "{\"extra\": 1,", 1).as_bytes()).unwrap_err();
        assert!(!e.is_empty());
    }

    #[test]
    fn an_unsealed_file_of_format_1_is_still_read() {
        let mut old = sample();
        old.format = 1;
        let json = serde_json::to_vec(&old).unwrap();
        assert_eq!(unseal(&json).unwrap(), old);
        let mut future = sample();
        future.format = 9;
        assert!(unseal(&serde_json::to_vec(&future).unwrap()).is_err());
    }
}
