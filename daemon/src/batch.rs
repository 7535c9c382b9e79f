//! What flows on the channels between tasks: batches of records, and the
//! control messages that travel in order with them.

use weir_codec::{BatchReader, BatchWriter, DecodeError, RecordRef};

pub use weir_codec::RecordRef as Record;

/// A batch of records in the encoding shared with plugins (see
/// `wit/BATCH_ENCODING.md`), checked once when it is made so readers need not
/// check again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    bytes: Vec<u8>,
    len: u32,
}

impl Batch {
    /// Checks bytes that came from outside the daemon (a plugin).
    pub fn from_untrusted(bytes: Vec<u8>) -> Result<Self, DecodeError> {
        let reader = BatchReader::new(&bytes)?;
        reader.validate()?;
        let len = reader.len();
        Ok(Self { bytes, len })
    }

    /// Finishes a batch the daemon built itself.
    pub fn from_writer(writer: BatchWriter) -> Self {
        let len = writer.len();
        Self {
            bytes: writer.finish(),
            len,
        }
    }

    /// Number of records.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether it holds no records.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The records, in order.
    pub fn records(&self) -> impl Iterator<Item = RecordRef<'_>> {
        // Checked at construction, so decoding cannot fail: stop rather than panic
        // if it somehow did.
        BatchReader::new(&self.bytes)
            .into_iter()
            .flat_map(|r| r.iter())
            .map_while(Result::ok)
    }
}

/// A message on a channel between two tasks. Control messages (checkpoint
/// barriers, end of stream) travel in order with batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Records, from the consumer's input `input` (an index into its
    /// `inputs`).
    Batch {
        /// The records.
        batch: Batch,
        /// Which of the consumer's inputs they came from.
        input: u32,
    },
    /// Checkpoint barrier: everything before it belongs to this checkpoint,
    /// everything after it to the next.
    Barrier(crate::checkpoint::CheckpointId),
    /// How far event time has got on this channel (see [`crate::watermark`]).
    Watermark(crate::watermark::Watermark),
    /// The producer will send nothing more on this channel.
    End,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_bytes_are_checked() {
        let mut w = BatchWriter::new();
        w.push(b"k", b"v", None);
        let mut bytes = w.finish();
        assert_eq!(Batch::from_untrusted(bytes.clone()).unwrap().len(), 1);
        bytes.pop();
        assert!(Batch::from_untrusted(bytes).is_err());
    }

    #[test]
    fn records_round_trip() {
        let mut w = BatchWriter::new();
        w.push(b"a", b"1", Some(3));
        w.push(b"b", b"2", None);
        let batch = Batch::from_writer(w);
        let got: Vec<_> = batch
            .records()
            .map(|r| (r.key, r.value, r.timestamp))
            .collect();
        assert_eq!(got, [(&b"a"[..], &b"1"[..], Some(3)), (b"b", b"2", None)]);
    }
}
