//! Typed operator (non-keyed) state: what an operator saves at a checkpoint and
//! gets back on restore, encoded with postcard and tagged with a version.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// Operator state to save, made by [`SavedState::encode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedState {
    pub(crate) version: u32,
    pub(crate) bytes: Vec<u8>,
}

impl SavedState {
    /// Encodes `state`, tagged with `version`: bump the version when the type
    /// changes, and [`Operator::restore`](crate::Operator::restore) can tell an
    /// old format from the current one.
    pub fn encode<T: Serialize>(version: u32, state: &T) -> Result<Self, Error> {
        let bytes = postcard::to_allocvec(state)
            .map_err(|e| Error::new(format!("cannot encode operator state: {e}")))?;
        Ok(Self { version, bytes })
    }
}

/// Operator state saved by earlier instances, given to
/// [`Operator::restore`](crate::Operator::restore).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredState {
    pub(crate) version: u32,
    pub(crate) parts: Vec<Vec<u8>>,
}

impl RestoredState {
    /// The version the state was saved with.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Each saved part, decoded: one per checkpointed instance assigned to this
    /// one (several when the parallelism went down).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<Vec<T>, Error> {
        self.parts
            .iter()
            .map(|part| {
                postcard::from_bytes(part).map_err(|e| {
                    Error::new(format!(
                        "cannot decode operator state saved with version {}: {e}",
                        self.version
                    ))
                })
            })
            .collect()
    }
}
