//! Where a source instance resumes after a restore, as `_metadata` records it.
//!
//! One type for every source, so the checkpoint format changes in one place.
//! A partitioned source (Kafka, a JetStream stream) keeps one position per
//! partition, so a restore at another parallelism can hand each partition,
//! with its offset and event time, to whichever instance owns it now.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A source instance's position: the next record it reads after a restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum SourcePosition {
    /// A generator's sequence number, or the bytes read from stdin.
    Offset(u64),
    /// A file: the byte offset in the file with this identity, so a restore
    /// knows whether the path still names that file or it was rotated away.
    File {
        /// Bytes of the file read.
        offset: u64,
        /// The file's device number (`st_dev`).
        device: u64,
        /// The file's inode number (`st_ino`).
        inode: u64,
    },
    /// A partitioned source: every partition the instance owned.
    Partitions(Vec<PartitionPosition>),
}

impl SourcePosition {
    /// The offset of a generator, stdin or file position (0 for partitions).
    pub fn offset(&self) -> u64 {
        match self {
            Self::Offset(offset) | Self::File { offset, .. } => *offset,
            Self::Partitions(_) => 0,
        }
    }
}

/// One partition of a partitioned source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionPosition {
    /// The Kafka topic or JetStream stream.
    pub topic: String,
    /// The partition (0 for a stream).
    pub partition: i32,
    /// The next offset (Kafka) or stream sequence (JetStream) to read.
    pub offset: i64,
    /// The largest event timestamp read from it, when the source assigns
    /// event time: its watermark resumes from there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<i64>,
}

/// Partitions by (topic, partition), gathered from every instance of a
/// source: what a restore hands out to the instances that own them now.
pub type PartitionMap = BTreeMap<(String, i32), PartitionPosition>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_as_itself() {
        let positions = vec![
            SourcePosition::Offset(7),
            SourcePosition::File {
                offset: 1,
                device: 2,
                inode: 3,
            },
            SourcePosition::Partitions(vec![
                PartitionPosition {
                    topic: "orders".into(),
                    partition: 3,
                    offset: 42,
                    event_time: Some(-1),
                },
                PartitionPosition {
                    topic: "orders".into(),
                    partition: 0,
                    offset: 0,
                    event_time: None,
                },
            ]),
        ];
        let json = serde_json::to_string(&positions).unwrap();
        let back: Vec<SourcePosition> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, positions, "{json}");
    }
}
