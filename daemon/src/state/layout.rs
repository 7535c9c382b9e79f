//! How one stored item is encoded as a key and a value. RocksDB stores items
//! this way, and state snapshots (`super::snapshot`) hold the same pairs
//! whatever the backend, so any backend restores any snapshot:
//!
//! ```text
//! key   := key_group:u16 BE  state:u32 BE  key_len:u32 BE  key  [map_key]
//! value := written_at:u64 LE  payload        (list payload: count:u32, then len:u32 + bytes each)
//! ```
//!
//! Big-endian key groups first make one key group one contiguous key range.

use super::{Address, StateError};

/// Bytes before the record key: key group, state, key length.
const HEAD: usize = 10;

/// Whether two keys are equal. Keys are mostly a few dozen bytes at
/// most (a word, an id, a stored slot key), where a call to `memcmp` costs
/// more than the comparison: short ones are compared inline, eight bytes at
/// a time.
#[inline]
pub fn same_key(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    if a.len() > 32 {
        return a == b;
    }
    let (mut a, mut b) = (a, b);
    while let (Some((x, rest_a)), Some((y, rest_b))) =
        (a.split_first_chunk::<8>(), b.split_first_chunk::<8>())
    {
        if x != y {
            return false;
        }
        (a, b) = (rest_a, rest_b);
    }
    a.iter().zip(b).all(|(x, y)| x == y)
}

/// The first key of `group`'s range.
pub fn key_group_prefix(group: u32) -> Vec<u8> {
    // Key groups are below max_parallelism, at most 2^16.
    (group as u16).to_be_bytes().to_vec()
}

/// The stored key of a value or list, and the prefix of a map's entries.
pub fn slot_key(at: Address<'_>) -> Vec<u8> {
    let mut k = Vec::with_capacity(HEAD + at.key.len());
    extend_slot_key(&mut k, at);
    k
}

/// A stored slot key short enough to stay on the stack: the lookups of a
/// hot counter build one per record and keep none.
pub type ShortKey = smallvec::SmallVec<[u8; 48]>;

/// [`slot_key`], on the stack when it is short.
pub fn short_slot_key(at: Address<'_>) -> ShortKey {
    let mut k = ShortKey::new();
    extend_slot_key(&mut k, at);
    k
}

/// Somewhere a key is built: a `Vec` or a [`ShortKey`], appended to a slice
/// at a time (byte by byte, building a key cost more than looking it up).
trait KeyBuffer {
    fn append(&mut self, bytes: &[u8]);
}

impl KeyBuffer for Vec<u8> {
    fn append(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl KeyBuffer for ShortKey {
    fn append(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

fn extend_slot_key(k: &mut impl KeyBuffer, at: Address<'_>) {
    k.append(&at.key_group.to_be_bytes());
    k.append(&at.state.to_be_bytes());
    k.append(&(at.key.len() as u32).to_be_bytes());
    k.append(at.key);
}

/// The stored key of one map entry.
pub fn map_key(at: Address<'_>, map_key: &[u8]) -> Vec<u8> {
    let mut k = slot_key(at);
    k.extend_from_slice(map_key);
    k
}

/// A stored value: write time, then the payload.
pub fn stamp(written_at: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + payload.len());
    v.extend_from_slice(&written_at.to_le_bytes());
    v.extend_from_slice(payload);
    v
}

/// A stored value's write time and payload.
pub fn unstamp(stored: &[u8]) -> Result<(u64, &[u8]), StateError> {
    if stored.len() < 8 {
        return Err(StateError::Storage(
            "a stored state value is shorter than its timestamp".into(),
        ));
    }
    let (ts, payload) = stored.split_at(8);
    let mut b = [0u8; 8];
    b.copy_from_slice(ts);
    Ok((u64::from_le_bytes(b), payload))
}

/// A stored list's elements.
pub fn decode_list(payload: &[u8]) -> Result<Vec<Vec<u8>>, StateError> {
    let items = weir_codec::state::Cursor::new(payload)
        .list()
        .map_err(|e| StateError::Storage(format!("a stored list is corrupt: {e}")))?;
    Ok(items.into_iter().map(<[u8]>::to_vec).collect())
}

/// Appends a length-prefixed stored key for the slot at `at` (and `map_key`).
fn push_key(buf: &mut Vec<u8>, at: Address<'_>, map_key: Option<&[u8]>) {
    let key_len = HEAD + at.key.len() + map_key.map_or(0, <[u8]>::len);
    buf.extend_from_slice(&(key_len as u32).to_le_bytes());
    buf.extend_from_slice(&at.key_group.to_be_bytes());
    buf.extend_from_slice(&at.state.to_be_bytes());
    buf.extend_from_slice(&(at.key.len() as u32).to_be_bytes());
    buf.extend_from_slice(at.key);
    buf.extend_from_slice(map_key.unwrap_or_default());
}

/// Appends one snapshot item (length-prefixed key and value) for the slot at
/// `at` (and `map_key`), without building the key separately.
pub fn push_item(
    buf: &mut Vec<u8>,
    at: Address<'_>,
    map_key: Option<&[u8]>,
    written_at: u64,
    payload: &[u8],
) {
    push_key(buf, at, map_key);
    buf.extend_from_slice(&((8 + payload.len()) as u32).to_le_bytes());
    buf.extend_from_slice(&written_at.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Appends one tombstone (a length-prefixed key and an empty value): the slot
/// at `at`, or its map entry `map_key`, was removed.
pub fn push_tombstone(buf: &mut Vec<u8>, at: Address<'_>, map_key: Option<&[u8]>) {
    push_key(buf, at, map_key);
    buf.extend_from_slice(&0u32.to_le_bytes());
}

/// A stored key taken apart: its address and, for a map entry, the map key.
pub fn parse_key(stored: &[u8]) -> Result<(Address<'_>, Option<&[u8]>), StateError> {
    let bad = || StateError::Storage("a stored state key is malformed".into());
    let head = stored.get(..HEAD).ok_or_else(bad)?;
    let key_group = u16::from_be_bytes([head[0], head[1]]);
    let state = u32::from_be_bytes([head[2], head[3], head[4], head[5]]);
    let len = u32::from_be_bytes([head[6], head[7], head[8], head[9]]) as usize;
    let key = stored.get(HEAD..HEAD + len).ok_or_else(bad)?;
    let rest = &stored[HEAD + len..];
    let at = Address {
        key_group,
        state,
        key,
    };
    Ok((at, (!rest.is_empty()).then_some(rest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_garbage_is_an_error() {
        let at = Address {
            key_group: 7,
            state: 3,
            key: b"word",
        };
        assert_eq!(parse_key(&slot_key(at)).unwrap(), (at, None));
        assert_eq!(
            parse_key(&map_key(at, b"mk")).unwrap(),
            (at, Some(&b"mk"[..]))
        );
        assert!(parse_key(b"\0\x07\0\0\0\x03\0\0\0\x09word").is_err());
        assert!(parse_key(b"\0").is_err());
        assert_eq!(unstamp(&stamp(42, b"v")).unwrap(), (42, &b"v"[..]));
        assert!(unstamp(b"short").is_err());
    }

    #[test]
    fn inline_key_comparison_agrees_with_slices() {
        let keys: Vec<Vec<u8>> = (0..41u8)
            .flat_map(|n| {
                let key: Vec<u8> = (0..n).collect();
                let mut last = key.clone();
                if let Some(b) = last.last_mut() {
                    *b ^= 1;
                }
                let mut first = key.clone();
                if let Some(b) = first.first_mut() {
                    *b ^= 0x80;
                }
                [key, last, first]
            })
            .collect();
        for a in &keys {
            for b in &keys {
                assert_eq!(same_key(a, b), a == b, "{a:?} {b:?}");
            }
        }
    }
}
