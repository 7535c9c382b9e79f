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
const FLAG_HEADERS: u8 = 0x02;
const KNOWN_FLAGS: u8 = FLAG_TIMESTAMP | FLAG_HEADERS;

/// One record borrowed from an encoded batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The record's key; empty when the source gives none.
    pub key: &'a [u8],
    /// The record's value.
    pub value: &'a [u8],
    /// Event time in milliseconds since the Unix epoch, when known.
    pub timestamp: Option<i64>,
    /// Headers from the source (a Kafka record's); none for most records.
    pub headers: Headers<'a>,
}

/// A record's headers: `(name, value)` pairs, in order, names repeatable (as
/// Kafka's). Kept encoded and read only when asked for, so a record that has
/// none, or whose operator never looks, costs nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Headers<'a> {
    /// `count:u32` then per header `name_len:u32 name value_len:u32 value`;
    /// empty for none.
    encoded: &'a [u8],
}

impl<'a> Headers<'a> {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.encoded.len() <= 4
    }

    /// The encoded form (see [`HeadersWriter`]).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.encoded
    }

    /// Every header, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let mut rest = self.encoded.get(4..).unwrap_or_default();
        let take = move |rest: &mut &'a [u8]| -> Option<&'a [u8]> {
            let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            let bytes = rest.get(4..4 + len)?;
            *rest = &rest[4 + len..];
            Some(bytes)
        };
        core::iter::from_fn(move || Some((take(&mut rest)?, take(&mut rest)?)))
    }

    /// The first header named `name`.
    pub fn get(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Checks the encoding.
    fn parse(encoded: &'a [u8]) -> Option<Self> {
        let count = u32::from_le_bytes(encoded.get(..4)?.try_into().ok()?);
        let mut rest = &encoded[4..];
        for _ in 0..count * 2 {
            let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            rest = rest.get(4 + len..)?;
        }
        rest.is_empty().then_some(Self { encoded })
    }
}

/// Builds a record's encoded headers.
#[derive(Debug, Clone, Default)]
pub struct HeadersWriter {
    buf: Vec<u8>,
    count: u32,
}

impl HeadersWriter {
    /// Adds a header.
    ///
    /// # Panics
    /// If a name or value is 4 GiB or longer.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        if self.buf.is_empty() {
            self.buf.extend_from_slice(&0u32.to_le_bytes());
        }
        for part in [name, value] {
            let len = u32::try_from(part.len()).expect("a header shorter than 4 GiB");
            self.buf.extend_from_slice(&len.to_le_bytes());
            self.buf.extend_from_slice(part);
        }
        self.count += 1;
        self.buf[..4].copy_from_slice(&self.count.to_le_bytes());
    }

    /// The headers so far.
    pub fn headers(&self) -> Headers<'_> {
        Headers { encoded: &self.buf }
    }

    /// Forgets every header, keeping the buffer.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.count = 0;
    }
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
    /// A record's headers are not well formed.
    BadHeaders {
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
            Self::BadHeaders { record } => write!(f, "record {record} has malformed headers"),
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
        self.push_with_headers(key, value, timestamp, Headers::default());
    }

    /// Appends one record with headers.
    ///
    /// # Panics
    /// As [`BatchWriter::push`], and if the headers are 4 GiB or longer.
    #[inline]
    pub fn push_with_headers(
        &mut self,
        key: &[u8],
        value: &[u8],
        timestamp: Option<i64>,
        headers: Headers<'_>,
    ) {
        let key_len = u32::try_from(key.len()).expect("key shorter than 4 GiB");
        let value_len = u32::try_from(value.len()).expect("value shorter than 4 GiB");
        self.count = self
            .count
            .checked_add(1)
            .expect("fewer than 2^32 records in a batch");
        self.buf.reserve(1 + 8 + 4 + key.len() + 4 + value.len());
        let with_headers = !headers.is_empty();
        let flags = if with_headers { FLAG_HEADERS } else { 0 };
        match timestamp {
            Some(ts) => {
                self.buf.push(FLAG_TIMESTAMP | flags);
                self.buf.extend_from_slice(&ts.to_le_bytes());
            }
            None => self.buf.push(flags),
        }
        self.buf.extend_from_slice(&key_len.to_le_bytes());
        self.buf.extend_from_slice(key);
        self.buf.extend_from_slice(&value_len.to_le_bytes());
        self.buf.extend_from_slice(value);
        if with_headers {
            let len = u32::try_from(headers.encoded.len()).expect("headers shorter than 4 GiB");
            self.buf.extend_from_slice(&len.to_le_bytes());
            self.buf.extend_from_slice(headers.encoded);
        }
    }

    /// Appends a record read from another batch, headers and all.
    #[inline]
    pub fn push_record(&mut self, record: &RecordRef<'_>) {
        self.push_with_headers(record.key, record.value, record.timestamp, record.headers);
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
        let headers = if flags & FLAG_HEADERS != 0 {
            let len = self.take_u32()? as usize;
            let encoded = self.take(len)?;
            Headers::parse(encoded).ok_or(DecodeError::BadHeaders { record: self.index })?
        } else {
            Headers::default()
        };
        Ok(RecordRef {
            key,
            value,
            timestamp,
            headers,
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
    fn headers_round_trip_and_cost_nothing_when_absent() {
        let mut h = HeadersWriter::default();
        h.push(b"trace", b"abc");
        h.push(b"empty", b"");
        h.push(b"trace", b"second");
        let mut w = BatchWriter::new();
        w.push_with_headers(b"k", b"v", Some(1), h.headers());
        w.push(b"k2", b"v2", None);
        let plain_len = {
            let mut p = BatchWriter::new();
            p.push(b"k2", b"v2", None);
            p.encoded_len()
        };
        let bytes = w.finish();
        let reader = BatchReader::new(&bytes).unwrap();
        reader.validate().unwrap();
        let all: Vec<RecordRef<'_>> = reader.iter().map(Result::unwrap).collect();
        let got: Vec<(&[u8], &[u8])> = all[0].headers.iter().collect();
        assert_eq!(
            got,
            [
                (&b"trace"[..], &b"abc"[..]),
                (&b"empty"[..], &b""[..]),
                (&b"trace"[..], &b"second"[..])
            ]
        );
        assert_eq!(all[0].headers.get(b"trace"), Some(&b"abc"[..]));
        assert!(all[1].headers.is_empty());
        // A copy keeps them.
        let mut copy = BatchWriter::new();
        copy.push_record(&all[0]);
        let copied = copy.finish();
        let again = BatchReader::new(&copied)
            .unwrap()
            .iter()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(again.headers, all[0].headers);
        // A record without headers is encoded exactly as before they existed.
        assert_eq!(plain_len, HEADER_LEN + 1 + 4 + 2 + 4 + 2);
    }

    #[test]
    fn malformed_headers_are_an_error_naming_the_record() {
        let mut w = BatchWriter::new();
        w.push(b"k", b"v", None);
        let mut bytes = w.finish();
        bytes[HEADER_LEN] = FLAG_HEADERS;
        // A header block that claims one header and holds none.
        bytes.extend_from_slice(&4u32.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        assert_eq!(records(&bytes), Err(DecodeError::BadHeaders { record: 0 }));
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
