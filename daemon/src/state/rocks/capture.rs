//! What a RocksDB backend hands the snapshot writer at a barrier, and how the
//! writer thread turns it into a snapshot file.

use std::sync::Arc;

use rocksdb::{DB, Direction, IteratorMode, ReadOptions};

use super::cache::{Bytes, Table};
use super::storage;
use crate::state::snapshot::{SnapshotError, SnapshotWriter};
use crate::state::{StateCapture, StateError};

/// Read-ahead of a full snapshot's scan of the database.
const SCAN_READAHEAD: usize = 2 << 20;

type Snapshot<'a> = rocksdb::SnapshotWithThreadMode<'a, DB>;

self_cell::self_cell!(
    /// A RocksDB snapshot that owns a handle on its database, so it can move to
    /// the thread that writes it out.
    pub(super) struct DbSnapshot {
        owner: Arc<DB>,
        #[covariant]
        dependent: Snapshot,
    }
);

/// A stored item written in an interval: its key and value (`None`: removed).
pub(super) type Change = (Bytes, Option<Bytes>);

/// An instance's state at a barrier: the write-back cache's tables as they
/// were (shared, copy-on-write), the evicted writes not in RocksDB yet, what
/// reached RocksDB in the interval and, for a full file, a RocksDB snapshot.
pub(super) struct RocksCapture {
    /// `None` when captured for a change file only.
    pub snapshot: Option<DbSnapshot>,
    pub tables: Vec<Arc<Table>>,
    /// Evicted dirty entries waiting for RocksDB, with their intervals.
    pub pending: Vec<(Bytes, Option<Bytes>, u64)>,
    /// Every item of the interval that reached RocksDB, oldest first, if known.
    pub changes: Option<Vec<Change>>,
    /// The interval this capture closes.
    pub epoch: u64,
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
}

/// Sorts items by key, keeping of each key the one that came last.
fn newest_per_key<'a>(
    mut items: Vec<(&'a [u8], Option<&'a [u8]>)>,
) -> Vec<(&'a [u8], Option<&'a [u8]>)> {
    // Stable: of one key's items, the newest stays last.
    items.sort_by(|a, b| a.0.cmp(b.0));
    let mut out: Vec<(&[u8], Option<&[u8]>)> = Vec::with_capacity(items.len());
    for item in items {
        match out.last_mut() {
            Some(last) if last.0 == item.0 => *last = item,
            _ => out.push(item),
        }
    }
    out
}

impl StateCapture for RocksCapture {
    fn has_changes(&self) -> bool {
        self.changes.is_some()
    }

    fn can_write_full(&self) -> bool {
        self.snapshot.is_some()
    }

    fn write_changes(self: Box<Self>, out: &mut SnapshotWriter) -> Result<(), SnapshotError> {
        let Self {
            snapshot,
            changes,
            pending,
            tables,
            epoch,
            ..
        } = *self;
        // A change capture takes no database snapshot; were one held, it goes
        // first: while it lives, flushes and compactions keep every version
        // of a key it can see, which the operator's reads then wade through.
        drop(snapshot);
        let Some(changes) = changes else {
            return Err(SnapshotError::State(StateError::Invalid(
                "no record of the changes since the previous capture".into(),
            )));
        };
        // Oldest first: what reached RocksDB, then what waits for it, then
        // the cache (a cached key is never also pending).
        let items: Vec<_> = changes
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
            .chain(
                pending
                    .iter()
                    .filter(|(_, _, e)| *e == epoch)
                    .map(|(k, v, _)| (k.as_slice(), v.as_deref())),
            )
            .chain(tables.iter().flat_map(|t| {
                t.iter()
                    .filter(|(_, e)| e.dirty && e.epoch == epoch)
                    .map(|(k, e)| (k.as_slice(), e.value.as_deref()))
            }))
            .collect();
        for (key, value) in newest_per_key(items) {
            match value {
                Some(v) => out.item(key, v)?,
                None => out.tombstone(key)?,
            }
        }
        Ok(())
    }

    fn write(self: Box<Self>, out: &mut SnapshotWriter) -> Result<(), SnapshotError> {
        let Self {
            snapshot,
            tables,
            pending,
            start,
            end,
            ..
        } = *self;
        let Some(snapshot) = snapshot else {
            return Err(SnapshotError::State(StateError::Invalid(
                "a capture taken for a change file cannot be written whole".into(),
            )));
        };
        // Every write not in RocksDB yet, of any interval.
        let overlay: Vec<_> = pending
            .iter()
            .map(|(k, v, _)| (k.as_slice(), v.as_deref()))
            .chain(tables.iter().flat_map(|t| {
                t.iter()
                    .filter(|(_, e)| e.dirty)
                    .map(|(k, e)| (k.as_slice(), e.value.as_deref()))
            }))
            .collect();
        let mut overlay = newest_per_key(overlay).into_iter().peekable();
        // A scan of the whole state: it must not evict the blocks the
        // operator is reading from the block cache, and it reads ahead.
        let mut read = ReadOptions::default();
        read.fill_cache(false);
        read.set_readahead_size(SCAN_READAHEAD);
        snapshot.with_dependent(|_, snap| {
            for item in snap.iterator_opt(IteratorMode::From(&start, Direction::Forward), read) {
                let (k, v) = item.map_err(storage)?;
                if end.as_deref().is_some_and(|end| k.as_ref() >= end) {
                    break;
                }
                while let Some((ok, ov)) = overlay.next_if(|(ok, _)| *ok < k.as_ref()) {
                    if let Some(ov) = ov {
                        out.item(ok, ov)?;
                    }
                }
                match overlay.next_if(|(ok, _)| *ok == k.as_ref()) {
                    Some((_, Some(ov))) => out.item(&k, ov)?,
                    Some((_, None)) => {}
                    None => out.item(&k, &v)?,
                }
            }
            for (ok, ov) in overlay {
                if let Some(ov) = ov {
                    out.item(ok, ov)?;
                }
            }
            Ok(())
        })
    }
}
