//! The batch encoding that carries records between the Weir host and its
//! WebAssembly operators (see `wit/BATCH_ENCODING.md`).
//!
//! A batch is one flat buffer so that a component call copies it once instead of
//! lifting every record. Both sides use this crate: the daemon to build and check
//! batches, the guest SDK to read its input and write its output.
//!
//! ```
//! use weir_codec::{BatchReader, BatchWriter};
//!
//! let mut writer = BatchWriter::new();
//! writer.push(b"k", b"hello", Some(7));
//! writer.push(b"", b"world", None);
//! let bytes = writer.finish();
//!
//! let reader = BatchReader::new(&bytes)?;
//! assert_eq!(reader.len(), 2);
//! let values: Vec<&[u8]> = reader.iter().map(|r| r.map(|r| r.value)).collect::<Result<_, _>>()?;
//! assert_eq!(values, [&b"hello"[..], &b"world"[..]]);
//! # Ok::<(), weir_codec::DecodeError>(())
//! ```
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")
)]
#![no_std]

extern crate alloc;

pub mod metrics;
pub mod state;

use alloc::vec::Vec;
use core::fmt;

/// The two bytes every batch starts with ("WB").
pub const MAGIC: [u8; 2] = *b"WB";
/// The encoding version this crate reads and writes.
pub const VERSION: u8 = 1;
/// Size of the batch header: magic, version, reserved byte, record count.
pub const HEADER_LEN: usize = 8;

const FLAG_TIMESTAMP: u8 = 0x01;
const KNOWN_FLAGS: u8 = FLAG_TIMESTAMP;

/// One record borrowed from an encoded batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The record's key; empty when the source gives none.
    pub key: &'a [u8],
    /// The record's value.
    pub value: &'a [u8],
    /// Event time in milliseconds since the Unix epoch, when known.
    pub timestamp: Option<i64>,
}

/// Why a buffer is not a valid batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the 8-byte header.
    TooShort {
        /// Length of the buffer.
        len: usize,
    },
    /// The first two bytes are not "WB".
    BadMagic,
    /// A version this crate does not read.
    UnsupportedVersion {
        /// The version found in the header.
        version: u8,
    },
    /// The header's reserved byte is not 0.
    ReservedHeader {
        /// The byte found.
        byte: u8,
    },
    /// A record's flags byte has reserved bits set.
    ReservedFlags {
        /// Index of the record.
        record: u32,
        /// The flags byte.
        flags: u8,
    },
    /// A record runs past the end of the buffer.
    Truncated {
        /// Index of the record.
        record: u32,
    },
    /// Bytes remain after the last record.
    TrailingBytes {
        /// How many.
        count: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort { len } => write!(f, "batch is {len} bytes, shorter than its header"),
            Self::BadMagic => f.write_str("batch does not start with the magic bytes \"WB\""),
            Self::UnsupportedVersion { version } => {
                write!(
                    f,
                    "batch encoding version {version} is not supported (expected {VERSION})"
                )
            }
            Self::ReservedHeader { byte } => {
                write!(f, "the batch header's reserved byte is {byte:#04x}, not 0")
            }
            Self::ReservedFlags { record, flags } => {
                write!(
                    f,
                    "record {record} has reserved flag bits set ({flags:#04x})"
                )
            }
            Self::Truncated { record } => {
                write!(f, "record {record} runs past the end of the batch")
            }
            Self::TrailingBytes { count } => write!(f, "{count} bytes follow the last record"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Builds an encoded batch record by record.
#[derive(Debug, Clone)]
pub struct BatchWriter {
    buf: Vec<u8>,
    count: u32,
}

impl Default for BatchWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchWriter {
    /// An empty batch.
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty batch with room for `bytes` bytes of records.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER_LEN + bytes);
        buf.extend_from_slice(&MAGIC);
        buf.push(VERSION);
        buf.push(0);
        buf.extend_from_slice(&0u32.to_le_bytes());
        Self { buf, count: 0 }
    }

    /// Appends one record.
    ///
    /// # Panics
    /// If the batch already holds `u32::MAX` records, or a key or value is 4 GiB or
    /// longer: neither fits the encoding, and no caller in Weir comes near either.
    #[inline]
    pub fn push(&mut self, key: &[u8], value: &[u8], timestamp: Option<i64>) {
        let key_len = u32::try_from(key.len()).expect("key shorter than 4 GiB");
        let value_len = u32::try_from(value.len()).expect("value shorter than 4 GiB");
        self.count = self
            .count
            .checked_add(1)
            .expect("fewer than 2^32 records in a batch");
        self.buf.reserve(1 + 8 + 4 + key.len() + 4 + value.len());
        match timestamp {
            Some(ts) => {
                self.buf.push(FLAG_TIMESTAMP);
                self.buf.extend_from_slice(&ts.to_le_bytes());
            }
            None => self.buf.push(0),
        }
        self.buf.extend_from_slice(&key_len.to_le_bytes());
        self.buf.extend_from_slice(key);
        self.buf.extend_from_slice(&value_len.to_le_bytes());
        self.buf.extend_from_slice(value);
    }

    /// Appends a record read from another batch.
    #[inline]
    pub fn push_record(&mut self, record: &RecordRef<'_>) {
        self.push(record.key, record.value, record.timestamp);
    }

    /// Number of records pushed so far.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// Whether no record has been pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encoded size so far, header included.
    pub fn encoded_len(&self) -> usize {
        self.buf.len()
    }

    /// The encoded batch so far, readable without giving up the writer.
    pub fn as_bytes(&mut self) -> &[u8] {
        self.patch_count();
        &self.buf
    }

    /// Forgets every record, keeping the buffer's capacity.
    pub fn clear(&mut self) {
        self.buf.truncate(HEADER_LEN);
        self.count = 0;
    }

    /// The encoded batch.
    pub fn finish(mut self) -> Vec<u8> {
        self.patch_count();
        self.buf
    }

    /// The encoded batch; leaves this writer empty and ready for the next one,
    /// keeping a buffer of the same capacity.
    pub fn take(&mut self) -> Vec<u8> {
        let capacity = self.buf.capacity().saturating_sub(HEADER_LEN);
        core::mem::replace(self, Self::with_capacity(capacity)).finish()
    }

    fn patch_count(&mut self) {
        self.buf[4..8].copy_from_slice(&self.count.to_le_bytes());
    }
}

/// Reads an encoded batch. Construction checks the header; [`BatchReader::validate`]
/// checks every record, and iteration reports the first malformed record it meets.
#[derive(Debug, Clone, Copy)]
pub struct BatchReader<'a> {
    body: &'a [u8],
    count: u32,
}

impl<'a> BatchReader<'a> {
    /// Checks the header of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::TooShort { len: bytes.len() });
        }
        if bytes[0..2] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if bytes[2] != VERSION {
            return Err(DecodeError::UnsupportedVersion { version: bytes[2] });
        }
        if bytes[3] != 0 {
            return Err(DecodeError::ReservedHeader { byte: bytes[3] });
        }
        let count = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        Ok(Self {
            body: &bytes[HEADER_LEN..],
            count,
        })
    }

    /// Number of records the header announces.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// Whether the batch announces no records.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Walks every record and checks that the buffer holds exactly `len()` of them.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let mut iter = self.iter();
        for record in iter.by_ref() {
            record?;
        }
        match iter.rest.len() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { count }),
        }
    }

    /// The records, in order.
    pub fn iter(&self) -> Records<'a> {
        Records {
            rest: self.body,
            index: 0,
            count: self.count,
            failed: false,
        }
    }
}

/// Iterator over the records of a [`BatchReader`].
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
    index: u32,
    count: u32,
    failed: bool,
}

impl<'a> Records<'a> {
    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated { record: self.index });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    #[inline]
    fn take_u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    #[inline]
    fn next_record(&mut self) -> Result<RecordRef<'a>, DecodeError> {
        let flags = self.take(1)?[0];
        if flags & !KNOWN_FLAGS != 0 {
            return Err(DecodeError::ReservedFlags {
                record: self.index,
                flags,
            });
        }
        let timestamp = if flags & FLAG_TIMESTAMP != 0 {
            let b = self.take(8)?;
            Some(i64::from_le_bytes([
                b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
            ]))
        } else {
            None
        };
        let key_len = self.take_u32()? as usize;
        let key = self.take(key_len)?;
        let value_len = self.take_u32()? as usize;
        let value = self.take(value_len)?;
        Ok(RecordRef {
            key,
            value,
            timestamp,
        })
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<RecordRef<'a>, DecodeError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.index >= self.count {
            return None;
        }
        let record = self.next_record();
        self.failed = record.is_err();
        self.index += 1;
        Some(record)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = if self.failed {
            0
        } else {
            (self.count - self.index) as usize
        };
        (0, Some(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    type Owned = (Vec<u8>, Vec<u8>, Option<i64>);

    fn records(bytes: &[u8]) -> Result<Vec<Owned>, DecodeError> {
        let reader = BatchReader::new(bytes)?;
        reader.validate()?;
        reader
            .iter()
            .map(|r| r.map(|r| (r.key.to_vec(), r.value.to_vec(), r.timestamp)))
            .collect()
    }

    #[test]
    fn round_trips_records_with_and_without_timestamps() {
        let mut w = BatchWriter::new();
        w.push(b"key", b"value", Some(-5));
        w.push(b"", b"", None);
        w.push(&[0, 255], &[1; 300], Some(i64::MAX));
        assert_eq!(w.len(), 3);
        let got = records(&w.finish()).unwrap();
        assert_eq!(
            got,
            vec![
                (b"key".to_vec(), b"value".to_vec(), Some(-5)),
                (vec![], vec![], None),
                (vec![0, 255], vec![1; 300], Some(i64::MAX)),
            ]
        );
    }

    #[test]
    fn take_leaves_an_empty_reusable_writer() {
        let mut w = BatchWriter::new();
        w.push(b"a", b"1", None);
        let first = w.take();
        assert!(w.is_empty());
        w.push(b"b", b"2", None);
        let second = w.take();
        assert_eq!(
            records(&first).unwrap(),
            vec![(b"a".to_vec(), b"1".to_vec(), None)]
        );
        assert_eq!(
            records(&second).unwrap(),
            vec![(b"b".to_vec(), b"2".to_vec(), None)]
        );
        assert_eq!(records(&w.take()).unwrap(), vec![]);
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(
            BatchReader::new(b"WB").unwrap_err(),
            DecodeError::TooShort { len: 2 }
        );
        assert_eq!(
            BatchReader::new(b"XB\x01\0\0\0\0\0").unwrap_err(),
            DecodeError::BadMagic
        );
        assert_eq!(
            BatchReader::new(b"WB\x02\0\0\0\0\0").unwrap_err(),
            DecodeError::UnsupportedVersion { version: 2 }
        );
        assert_eq!(
            BatchReader::new(b"WB\x01\x07\0\0\0\0").unwrap_err(),
            DecodeError::ReservedHeader { byte: 7 }
        );
    }

    #[test]
    fn rejects_truncation_trailing_bytes_and_reserved_flags() {
        let mut w = BatchWriter::new();
        w.push(b"key", b"value", None);
        let good = w.finish();
        for cut in HEADER_LEN + 1..good.len() {
            assert_eq!(
                records(&good[..cut]).unwrap_err(),
                DecodeError::Truncated { record: 0 }
            );
        }
        let mut long = good.clone();
        long.push(9);
        assert_eq!(
            records(&long).unwrap_err(),
            DecodeError::TrailingBytes { count: 1 }
        );
        let mut flagged = good.clone();
        flagged[HEADER_LEN] = 0x80;
        assert_eq!(
            records(&flagged).unwrap_err(),
            DecodeError::ReservedFlags {
                record: 0,
                flags: 0x80
            }
        );
        let mut overcount = good;
        overcount[4] = 2;
        assert_eq!(
            records(&overcount).unwrap_err(),
            DecodeError::Truncated { record: 1 }
        );
    }

    #[test]
    fn a_huge_length_does_not_overflow() {
        let mut bytes = vec![b'W', b'B', 1, 0, 1, 0, 0, 0, 0];
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            records(&bytes).unwrap_err(),
            DecodeError::Truncated { record: 0 }
        );
    }
}
