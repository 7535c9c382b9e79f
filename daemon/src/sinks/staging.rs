//! A broker sink's write-ahead staging: the batches a sink instance takes
//! between two barriers go to a file, made durable at the barrier, and sent
//! to the broker only once that checkpoint is complete (then deleted).
//!
//! Staging is what makes a crash between "checkpoint durable" and "sent"
//! harmless: librdkafka cannot resume another process's open transaction,
//! so a restarted sink sends the staged output again in a transaction of its
//! own, unless the broker's record of what it committed (a marker inside each
//! transaction) says that was done already.
//!
//! Layout in the sink's staging directory: `<instance>-<checkpoint>.staged`,
//! 20-digit checkpoint ids so names sort as numbers; `<instance>.open` is
//! the file being written. Each file: `WKS1`, then per batch its length
//! (u32, little-endian) and its bytes in the batch encoding.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::batch::Batch;
use crate::checkpoint::CheckpointId;

const MAGIC: &[u8; 4] = b"WKS1";

/// One checkpoint's staged output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    /// Its checkpoint.
    pub checkpoint: CheckpointId,
    /// The instance that wrote it (its transactional id's suffix).
    pub instance: u32,
    /// The file.
    pub path: PathBuf,
}

/// The file one sink instance is writing.
pub struct Stager {
    dir: PathBuf,
    instance: u32,
    open: Option<BufWriter<File>>,
}

impl Stager {
    /// Stages into `dir` for instance `instance`.
    pub fn new(dir: &Path, instance: u32) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            instance,
            open: None,
        })
    }

    fn open_path(&self) -> PathBuf {
        self.dir.join(format!("{}.open", self.instance))
    }

    /// Appends a batch.
    pub fn write(&mut self, batch: &Batch) -> std::io::Result<()> {
        if self.open.is_none() {
            let mut file = BufWriter::with_capacity(256 * 1024, File::create(self.open_path())?);
            file.write_all(MAGIC)?;
            self.open = Some(file);
        }
        if let Some(file) = self.open.as_mut() {
            let bytes = batch.as_bytes();
            let len = u32::try_from(bytes.len()).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "a batch over 4 GiB")
            })?;
            file.write_all(&len.to_le_bytes())?;
            file.write_all(bytes)?;
        }
        Ok(())
    }

    /// At barrier `checkpoint`: makes what was written since the last barrier
    /// durable under the checkpoint's name. `None` when nothing was.
    pub fn seal(&mut self, checkpoint: CheckpointId) -> std::io::Result<Option<Staged>> {
        let Some(file) = self.open.take() else {
            return Ok(None);
        };
        let file = file
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)?;
        file.sync_all()?;
        let path = staged_path(&self.dir, self.instance, checkpoint);
        std::fs::rename(self.open_path(), &path)?;
        crate::checkpoint::store::sync_dir(&self.dir)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Some(Staged {
            checkpoint,
            instance: self.instance,
            path,
        }))
    }
}

fn staged_path(dir: &Path, instance: u32, checkpoint: CheckpointId) -> PathBuf {
    dir.join(format!("{instance}-{checkpoint:020}.staged"))
}

/// After a start from checkpoint `restored` (0: none): the staged files of
/// the instances `owns` picks, oldest first, that the checkpoint covers; the
/// rest (written after it, or half written) are removed, since the replay
/// from the checkpoint writes their records again.
pub fn recover(
    dir: &Path,
    restored: CheckpointId,
    owns: impl Fn(u32) -> bool,
) -> std::io::Result<Vec<Staged>> {
    let mut kept = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(kept),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(instance) = name
            .strip_suffix(".open")
            .and_then(|i| i.parse::<u32>().ok())
        {
            if owns(instance) {
                std::fs::remove_file(&path)?;
            }
            continue;
        }
        let Some((instance, checkpoint)) = name
            .strip_suffix(".staged")
            .and_then(|n| n.split_once('-'))
            .and_then(|(i, c)| Some((i.parse::<u32>().ok()?, c.parse::<u64>().ok()?)))
        else {
            continue;
        };
        if !owns(instance) {
            continue;
        }
        if checkpoint > restored {
            std::fs::remove_file(&path)?;
        } else {
            kept.push(Staged {
                checkpoint,
                instance,
                path,
            });
        }
    }
    kept.sort_by_key(|s| (s.instance, s.checkpoint));
    Ok(kept)
}

/// Reads a staged file's batches, checking each.
pub fn read(path: &Path) -> Result<Vec<Batch>, String> {
    let fail = |e: &dyn std::fmt::Display| format!("staged output {}: {e}", path.display());
    let mut reader = BufReader::new(File::open(path).map_err(|e| fail(&e))?);
    let mut magic = [0u8; 4];
    reader.read_exact(&mut magic).map_err(|e| fail(&e))?;
    if &magic != MAGIC {
        return Err(fail(&"not a staged-output file (bad magic)"));
    }
    let mut batches = Vec::new();
    loop {
        let mut len = [0u8; 4];
        match reader.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(fail(&e)),
        }
        let mut bytes = vec![0u8; u32::from_le_bytes(len) as usize];
        reader.read_exact(&mut bytes).map_err(|e| fail(&e))?;
        batches.push(Batch::from_untrusted(bytes).map_err(|e| fail(&e))?);
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(values: &[&str]) -> Batch {
        let mut w = weir_codec::BatchWriter::new();
        for v in values {
            w.push(b"k", v.as_bytes(), Some(5));
        }
        Batch::from_writer(w)
    }

    #[test]
    fn sealed_files_read_back_and_recovery_keeps_what_the_checkpoint_covers() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Stager::new(dir.path(), 0).unwrap();
        assert_eq!(s.seal(1).unwrap(), None, "nothing written");
        s.write(&batch(&["a", "b"])).unwrap();
        s.write(&batch(&["c"])).unwrap();
        let two = s.seal(2).unwrap().unwrap();
        let read_back: Vec<Vec<u8>> = read(&two.path)
            .unwrap()
            .iter()
            .flat_map(|b| b.records().map(|r| r.value.to_vec()).collect::<Vec<_>>())
            .collect();
        assert_eq!(read_back, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        s.write(&batch(&["d"])).unwrap();
        s.seal(3).unwrap().unwrap();
        s.write(&batch(&["e"])).unwrap(); // still open
        let mut other = Stager::new(dir.path(), 1).unwrap();
        other.write(&batch(&["x"])).unwrap();
        other.seal(2).unwrap().unwrap();

        let kept = recover(dir.path(), 2, |i| i == 0).unwrap();
        assert_eq!(kept, vec![two]);
        assert!(!dir.path().join("0.open").exists());
        assert!(
            !staged_path(dir.path(), 0, 3).exists(),
            "after the checkpoint"
        );
        assert!(staged_path(dir.path(), 1, 2).exists(), "another instance's");
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0-1.staged");
        std::fs::write(&path, b"WKS1\x09\x00\x00\x00abc").unwrap();
        let e = read(&path).unwrap_err();
        assert!(e.contains("0-1.staged"), "{e}");
    }
}
