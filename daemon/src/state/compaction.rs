//! Folds a chain of snapshot files (a full file, then change files, oldest
//! first) into one full file holding what a restore of the chain would load.
//!
//! This is how an incremental chain is bounded without a full capture: the
//! writer thread compacts the files it wrote, off the operator's thread, so
//! a backend whose full capture costs a pause (RocksDB's copies its
//! write-back cache's dirty entries) only ever captures changes once a chain
//! exists. One key group is held in memory at a time.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::snapshot::{FileSummary, SnapshotError, SnapshotReader, SnapshotWriter};

/// Writes into `out` the items a restore of `chain` would leave: each key's
/// newest value, with removed keys (tombstones) left out.
pub fn compact(
    chain: &[(PathBuf, FileSummary)],
    out: &mut SnapshotWriter,
) -> Result<(), SnapshotError> {
    let readers = chain
        .iter()
        .map(|(path, summary)| SnapshotReader::open(path, summary))
        .collect::<Result<Vec<_>, _>>()?;
    let mut groups: Vec<u16> = readers.iter().flat_map(SnapshotReader::groups).collect();
    groups.sort_unstable();
    groups.dedup();
    let mut items: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for group in groups {
        let range = u32::from(group)..u32::from(group) + 1;
        for reader in &readers {
            reader.read_groups(&range, &mut |key, value| {
                // A real value holds at least its write time; an empty one
                // is a tombstone.
                if value.is_empty() {
                    items.remove(key);
                } else {
                    items.insert(key.to_vec(), value.to_vec());
                }
                Ok(())
            })?;
        }
        for (key, value) in std::mem::take(&mut items) {
            out.item(&key, &value)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `items` (an empty value is a tombstone) as a snapshot file.
    fn file(dir: &std::path::Path, name: &str, items: &[(&[u8], &[u8])]) -> (PathBuf, FileSummary) {
        let path = dir.join(name);
        let mut out = SnapshotWriter::create(&path).expect("create");
        for (k, v) in items {
            out.item(k, v).expect("item");
        }
        (path.clone(), out.finish().expect("finish"))
    }

    fn read_all(path: &std::path::Path, summary: &FileSummary) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut all = Vec::new();
        SnapshotReader::open(path, summary)
            .expect("open")
            .read_groups(&(0..u32::from(u16::MAX) + 1), &mut |k, v| {
                all.push((k.to_vec(), v.to_vec()));
                Ok(())
            })
            .expect("read");
        all
    }

    #[test]
    fn a_compacted_chain_holds_each_keys_newest_value_and_no_removed_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let base = file(
            dir.path(),
            "base",
            &[
                (b"\0\x01a", b"v1-a"),
                (b"\0\x01b", b"v1-b"),
                (b"\0\x03c", b"v1-c"),
            ],
        );
        // Group 2 appears first in a change file; b is removed, a rewritten.
        let first = file(
            dir.path(),
            "changes-1",
            &[
                (b"\0\x01a", b"v2-a"),
                (b"\0\x01b", b""),
                (b"\0\x02d", b"v2-d"),
            ],
        );
        // c removed, then b written again after its removal.
        let second = file(
            dir.path(),
            "changes-2",
            &[(b"\0\x01b", b"v3-b"), (b"\0\x03c", b"")],
        );
        let path = dir.path().join("compacted");
        let mut out = SnapshotWriter::create(&path).expect("create");
        compact(&[base, first, second], &mut out).expect("compact");
        let summary = out.finish().expect("finish");
        let items = read_all(&path, &summary);
        let expected: Vec<(Vec<u8>, Vec<u8>)> = [
            (&b"\0\x01a"[..], &b"v2-a"[..]),
            (b"\0\x01b", b"v3-b"),
            (b"\0\x02d", b"v2-d"),
        ]
        .iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
        assert_eq!(items, expected);
    }

    #[test]
    fn a_corrupt_file_in_the_chain_stops_the_compaction_and_names_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let base = file(dir.path(), "base", &[(b"\0\x01a", b"v1-a")]);
        let (path, summary) = file(dir.path(), "changes-1", &[(b"\0\x01a", b"v2-a")]);
        let bad = FileSummary {
            crc32: summary.crc32 ^ 1,
            ..summary
        };
        let out_path = dir.path().join("compacted");
        let mut out = SnapshotWriter::create(&out_path).expect("create");
        let err = compact(&[base, (path, bad)], &mut out)
            .expect_err("a corrupt file")
            .to_string();
        assert!(
            err.contains("changes-1") && err.contains("checksum"),
            "{err}"
        );
    }
}
