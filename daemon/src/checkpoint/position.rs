//! Where a source instance resumes after a restore, as `_metadata` records it.
//!
//! One type for every source, so the checkpoint format changes in one place
//! when sources gain kinds of position (partitioned sources will keep one
//! offset per partition here).

use serde::{Deserialize, Serialize};

/// A source instance's position: the next record it reads after a restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
}

impl SourcePosition {
    /// The offset, whatever the kind.
    pub fn offset(self) -> u64 {
        match self {
            Self::Offset(offset) | Self::File { offset, .. } => offset,
        }
    }
}
