//! The keyed-state operation encoding, version 1 (see `wit/STATE_ENCODING.md`).
//!
//! A plugin reads and writes keyed state in two calls per batch: one `read` with
//! every lookup it needs (for example the value states of all the batch's keys),
//! and one `write` with every change, applied in order. Both carry a list of
//! operations encoded here; `read` returns one result per operation.

use alloc::vec::Vec;

use crate::DecodeError;

/// A map entry borrowed from a buffer: map key and value.
pub type Entry<'a> = (&'a [u8], &'a [u8]);

/// A handle the host gave a registered state.
pub type StateId = u32;

/// A read operation on the state of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOp<'a> {
    /// The value of a value state.
    ValueGet {
        /// The state.
        state: StateId,
        /// The record key.
        key: &'a [u8],
    },
    /// Every element of a list state.
    ListGet {
        /// The state.
        state: StateId,
        /// The record key.
        key: &'a [u8],
    },
    /// One entry of a map state.
    MapGet {
        /// The state.
        state: StateId,
        /// The record key.
        key: &'a [u8],
        /// The map key.
        map_key: &'a [u8],
    },
    /// Every entry of a map state.
    MapEntries {
        /// The state.
        state: StateId,
        /// The record key.
        key: &'a [u8],
    },
}

/// A write operation on the state of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp<'a> {
    /// Sets a value state.
    ValueSet {
        /// The state.
        state: StateId,
        /// The record key.
        key: &'a [u8],
        /// The new value.
        value: &'a [u8],
    },
    /// Appends to a list state.
    ListAppend {
        /// The state.
        state: StateId,
        /// The record key.
        key: &'a [u8],
        /// Elements to append, in order.
        items: Vec<&'a [u8]>,
    },
    /// Replaces a list state's elements.
    ListReplace {
        /// The state.
        state: StateId,
        /// The record key.
        key: &'a [u8],
        /// The new elements.
        items: Vec<&'a [u8]>,
    },
    /// Puts one entry of a map state.
    MapPut {
        /// The state.
        state: StateId,
        /// The record key.
        key: &'a [u8],
        /// The map key.
        map_key: &'a [u8],
        /// The value.
        value: &'a [u8],
    },
    /// Removes one entry of a map state.
    MapRemove {
        /// The state.
        state: StateId,
        /// The record key.
        key: &'a [u8],
        /// The map key.
        map_key: &'a [u8],
    },
    /// Clears the state of a key, whatever its kind.
    Clear {
        /// The state.
        state: StateId,
        /// The record key.
        key: &'a [u8],
    },
    /// Registers a timer for a key (nothing if it exists).
    TimerRegister {
        /// Its domain.
        domain: TimeDomain,
        /// The record key.
        key: &'a [u8],
        /// When it fires, ms since the Unix epoch.
        time: i64,
    },
    /// Deletes a timer of a key (nothing if there is none).
    TimerDelete {
        /// Its domain.
        domain: TimeDomain,
        /// The record key.
        key: &'a [u8],
        /// Its time.
        time: i64,
    },
}

/// Which clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimeDomain {
    /// Fires when the watermark reaches its time.
    EventTime,
    /// Fires when the wall clock does.
    ProcessingTime,
}

impl TimeDomain {
    /// Its code in the encodings (the `state` field of a timer operation,
    /// the value byte of a fired timer).
    pub fn code(self) -> u8 {
        match self {
            Self::EventTime => 0,
            Self::ProcessingTime => 1,
        }
    }

    /// The domain with this code.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(Self::EventTime),
            1 => Some(Self::ProcessingTime),
            _ => None,
        }
    }
}

const VALUE_GET: u8 = 1;
const LIST_GET: u8 = 2;
const MAP_GET: u8 = 3;
const MAP_ENTRIES: u8 = 4;

const VALUE_SET: u8 = 1;
const LIST_APPEND: u8 = 2;
const LIST_REPLACE: u8 = 3;
const MAP_PUT: u8 = 4;
const MAP_REMOVE: u8 = 5;
const CLEAR: u8 = 6;
const TIMER_REGISTER: u8 = 7;
const TIMER_DELETE: u8 = 8;

/// Builds a buffer of operations (read or write).
#[derive(Debug, Clone, Default)]
pub struct OpWriter {
    buf: Vec<u8>,
    count: u32,
}

impl OpWriter {
    /// An empty list of operations.
    pub fn new() -> Self {
        Self::with_capacity(256)
    }

    /// An empty list of operations with room for `bytes` of encoding, so a
    /// batch's worth of operations is written without regrowing.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes.max(4));
        buf.extend_from_slice(&0u32.to_le_bytes());
        Self { buf, count: 0 }
    }

    /// Number of operations so far.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn head(&mut self, code: u8, state: StateId, key: &[u8]) {
        self.count += 1;
        self.buf.push(code);
        self.buf.extend_from_slice(&state.to_le_bytes());
        put_bytes(&mut self.buf, key);
    }

    /// Adds a read operation.
    pub fn read(&mut self, op: &ReadOp<'_>) {
        match *op {
            ReadOp::ValueGet { state, key } => self.head(VALUE_GET, state, key),
            ReadOp::ListGet { state, key } => self.head(LIST_GET, state, key),
            ReadOp::MapGet {
                state,
                key,
                map_key,
            } => {
                self.head(MAP_GET, state, key);
                put_bytes(&mut self.buf, map_key);
            }
            ReadOp::MapEntries { state, key } => self.head(MAP_ENTRIES, state, key),
        }
    }

    /// Adds a write operation.
    pub fn write(&mut self, op: &WriteOp<'_>) {
        match op {
            WriteOp::ValueSet { state, key, value } => {
                self.head(VALUE_SET, *state, key);
                put_bytes(&mut self.buf, value);
            }
            WriteOp::ListAppend { state, key, items }
            | WriteOp::ListReplace { state, key, items } => {
                let code = if matches!(op, WriteOp::ListAppend { .. }) {
                    LIST_APPEND
                } else {
                    LIST_REPLACE
                };
                self.head(code, *state, key);
                put_list(&mut self.buf, items.iter().copied());
            }
            WriteOp::MapPut {
                state,
                key,
                map_key,
                value,
            } => {
                self.head(MAP_PUT, *state, key);
                put_bytes(&mut self.buf, map_key);
                put_bytes(&mut self.buf, value);
            }
            WriteOp::MapRemove {
                state,
                key,
                map_key,
            } => {
                self.head(MAP_REMOVE, *state, key);
                put_bytes(&mut self.buf, map_key);
            }
            WriteOp::Clear { state, key } => self.head(CLEAR, *state, key),
            WriteOp::TimerRegister { domain, key, time }
            | WriteOp::TimerDelete { domain, key, time } => {
                let code = if matches!(op, WriteOp::TimerRegister { .. }) {
                    TIMER_REGISTER
                } else {
                    TIMER_DELETE
                };
                self.head(code, u32::from(domain.code()), key);
                self.buf.extend_from_slice(&time.to_le_bytes());
            }
        }
    }

    /// The encoded operations.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[0..4].copy_from_slice(&self.count.to_le_bytes());
        self.buf
    }
}

/// Appends a length-prefixed byte string.
pub fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("state bytes shorter than 4 GiB");
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(bytes);
}

/// Appends a count, then each byte string length-prefixed.
pub fn put_list<'a>(buf: &mut Vec<u8>, items: impl ExactSizeIterator<Item = &'a [u8]>) {
    let count = u32::try_from(items.len()).expect("fewer than 2^32 items");
    buf.extend_from_slice(&count.to_le_bytes());
    for item in items {
        put_bytes(buf, item);
    }
}

/// Appends a count, then each map key and value length-prefixed (the result
/// of a map-entries read).
pub fn put_entries<'a>(
    buf: &mut Vec<u8>,
    entries: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])>,
) {
    let count = u32::try_from(entries.len()).expect("fewer than 2^32 entries");
    buf.extend_from_slice(&count.to_le_bytes());
    for (key, value) in entries {
        put_bytes(buf, key);
        put_bytes(buf, value);
    }
}

/// Appends an optional byte string: 0, or 1 then the bytes.
pub fn put_option(buf: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => buf.push(0),
        Some(b) => {
            buf.push(1);
            put_bytes(buf, b);
        }
    }
}

/// A cursor over an encoded buffer.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// Reads from the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Whether everything has been read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated { record: 0 });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// A byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A little-endian i64.
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        let b = self.take(8)?;
        let mut le = [0; 8];
        le.copy_from_slice(b);
        Ok(i64::from_le_bytes(le))
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    /// An optional byte string written by [`put_option`].
    pub fn option(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.bytes().map(Some),
            flag => Err(DecodeError::ReservedFlags {
                record: 0,
                flags: flag,
            }),
        }
    }

    /// A list written by [`put_list`].
    pub fn list(&mut self) -> Result<Vec<&'a [u8]>, DecodeError> {
        let count = self.u32()? as usize;
        // Each element needs at least its 4-byte length: bound the allocation by
        // what the buffer can hold, not by what it claims.
        let mut items = Vec::with_capacity(count.min(self.rest.len() / 4));
        for _ in 0..count {
            items.push(self.bytes()?);
        }
        Ok(items)
    }

    /// Map entries written by [`put_entries`].
    pub fn entries(&mut self) -> Result<Vec<Entry<'a>>, DecodeError> {
        let count = self.u32()? as usize;
        // Each entry needs at least its two 4-byte lengths.
        let mut entries = Vec::with_capacity(count.min(self.rest.len() / 8));
        for _ in 0..count {
            entries.push((self.bytes()?, self.bytes()?));
        }
        Ok(entries)
    }

    /// The count that starts a list of operations.
    pub fn op_count(&mut self) -> Result<u32, DecodeError> {
        self.u32()
    }

    /// The next read operation.
    pub fn read_op(&mut self) -> Result<ReadOp<'a>, DecodeError> {
        let code = self.u8()?;
        let state = self.u32()?;
        let key = self.bytes()?;
        Ok(match code {
            VALUE_GET => ReadOp::ValueGet { state, key },
            LIST_GET => ReadOp::ListGet { state, key },
            MAP_GET => ReadOp::MapGet {
                state,
                key,
                map_key: self.bytes()?,
            },
            MAP_ENTRIES => ReadOp::MapEntries { state, key },
            other => {
                return Err(DecodeError::ReservedFlags {
                    record: 0,
                    flags: other,
                });
            }
        })
    }

    /// The next write operation.
    pub fn write_op(&mut self) -> Result<WriteOp<'a>, DecodeError> {
        let code = self.u8()?;
        let state = self.u32()?;
        let key = self.bytes()?;
        Ok(match code {
            VALUE_SET => WriteOp::ValueSet {
                state,
                key,
                value: self.bytes()?,
            },
            LIST_APPEND => WriteOp::ListAppend {
                state,
                key,
                items: self.list()?,
            },
            LIST_REPLACE => WriteOp::ListReplace {
                state,
                key,
                items: self.list()?,
            },
            MAP_PUT => WriteOp::MapPut {
                state,
                key,
                map_key: self.bytes()?,
                value: self.bytes()?,
            },
            MAP_REMOVE => WriteOp::MapRemove {
                state,
                key,
                map_key: self.bytes()?,
            },
            CLEAR => WriteOp::Clear { state, key },
            TIMER_REGISTER | TIMER_DELETE => {
                let domain = TimeDomain::from_code(state).ok_or(DecodeError::ReservedFlags {
                    record: 0,
                    flags: u8::try_from(state).unwrap_or(u8::MAX),
                })?;
                let time = self.i64()?;
                if code == TIMER_REGISTER {
                    WriteOp::TimerRegister { domain, key, time }
                } else {
                    WriteOp::TimerDelete { domain, key, time }
                }
            }
            other => {
                return Err(DecodeError::ReservedFlags {
                    record: 0,
                    flags: other,
                });
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_ops_round_trip() {
        let ops = [
            WriteOp::ValueSet {
                state: 1,
                key: b"k",
                value: b"v",
            },
            WriteOp::ListAppend {
                state: 2,
                key: b"k",
                items: alloc::vec![&b"a"[..], b"bc"],
            },
            WriteOp::ListReplace {
                state: 2,
                key: b"",
                items: alloc::vec![],
            },
            WriteOp::MapPut {
                state: 3,
                key: b"k",
                map_key: b"m",
                value: b"x",
            },
            WriteOp::MapRemove {
                state: 3,
                key: b"k",
                map_key: b"m",
            },
            WriteOp::Clear {
                state: 4,
                key: b"z",
            },
            WriteOp::TimerRegister {
                domain: TimeDomain::EventTime,
                key: b"k",
                time: -5,
            },
            WriteOp::TimerDelete {
                domain: TimeDomain::ProcessingTime,
                key: b"k",
                time: i64::MAX,
            },
        ];
        let mut w = OpWriter::new();
        ops.iter().for_each(|op| w.write(op));
        let bytes = w.finish();
        let mut c = Cursor::new(&bytes);
        assert_eq!(c.op_count().unwrap(), 8);
        for op in &ops {
            assert_eq!(&c.write_op().unwrap(), op);
        }
        assert!(c.is_empty());
    }

    #[test]
    fn read_ops_round_trip_and_garbage_is_an_error() {
        let ops = [
            ReadOp::ValueGet {
                state: 1,
                key: b"k",
            },
            ReadOp::ListGet {
                state: 2,
                key: b"k",
            },
            ReadOp::MapGet {
                state: 3,
                key: b"k",
                map_key: b"m",
            },
            ReadOp::MapEntries {
                state: 3,
                key: b"k",
            },
        ];
        let mut w = OpWriter::new();
        ops.iter().for_each(|op| w.read(op));
        let bytes = w.finish();
        let mut c = Cursor::new(&bytes);
        assert_eq!(c.op_count().unwrap(), 4);
        for op in &ops {
            assert_eq!(&c.read_op().unwrap(), op);
        }
        let mut bad = Cursor::new(&[9, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(bad.read_op().is_err());
        let mut huge = Cursor::new(&[0xff, 0xff, 0xff, 0xff]);
        assert!(huge.list().is_err());
    }
}
