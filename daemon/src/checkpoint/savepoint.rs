//! Savepoints: checkpoints a person asks for (`weir savepoint`,
//! `POST /savepoints`), copied out of the checkpoint directory into one of
//! their choosing, marked `kind = "savepoint"` and never removed by the daemon.
//!
//! A savepoint is taken as the next regular checkpoint: the coordinator
//! triggers one at once (or waits for the one in flight to end), and once it
//! is complete and its sinks committed, its files are hard-linked (copied
//! across file systems) into the target with their own metadata, so the
//! directory stands alone: `weir run --from-savepoint DIR` needs nothing else.

use std::fs;
use std::path::{Path, PathBuf};

use tokio::sync::oneshot;

use super::CheckpointId;
use super::metadata::{Kind, Metadata};
use super::store::{self, StoreError, sync_dir};

/// A request for a savepoint.
#[derive(Debug)]
pub struct Request {
    /// The directory to write; `None`: a new one under the savepoint directory.
    pub directory: Option<PathBuf>,
    /// Where the outcome goes.
    pub reply: oneshot::Sender<Result<Taken, String>>,
}

/// A savepoint written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Taken {
    /// The checkpoint it was taken as.
    pub id: CheckpointId,
    /// Where it is.
    pub directory: PathBuf,
}

/// Why a savepoint target cannot be used.
fn refuse(path: &Path, reason: &str) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    }
}

/// Where a savepoint may be written: under the savepoint directory, and in
/// nothing the daemon manages (checkpoints, state, a sink's output, a
/// source's input), whatever the request names.
#[derive(Debug, Clone)]
pub struct Targets {
    /// `[checkpoint] savepoint_dir`: the default, and the only root allowed.
    pub default_dir: PathBuf,
    managed: Vec<PathBuf>,
}

impl Targets {
    /// Savepoints under `default_dir`, never inside `managed`.
    pub fn new(default_dir: PathBuf, managed: Vec<PathBuf>) -> Self {
        Self {
            default_dir,
            managed,
        }
    }

    /// Checks a requested target before a checkpoint is spent on it:
    /// absolute, under the savepoint directory, outside everything the daemon
    /// manages, and absent or an empty directory.
    pub fn check(&self, target: &Path) -> Result<(), StoreError> {
        if !target.is_absolute() {
            return Err(refuse(
                target,
                "a savepoint directory must be an absolute path",
            ));
        }
        if target
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(refuse(target, "a savepoint directory may not contain `..`"));
        }
        let resolved = crate::files::resolve(target);
        let root = crate::files::resolve(&self.default_dir);
        if !resolved.starts_with(&root) || resolved == root {
            return Err(refuse(
                target,
                &format!(
                    "savepoints are written only under the savepoint directory {} \
                     ([checkpoint] savepoint_dir)",
                    self.default_dir.display()
                ),
            ));
        }
        if let Some(managed) = self
            .managed
            .iter()
            .find(|m| resolved.starts_with(crate::files::resolve(m)))
        {
            return Err(refuse(
                target,
                &format!(
                    "is inside {}, which the daemon manages; a savepoint there could be taken \
                     for its data",
                    managed.display()
                ),
            ));
        }
        check_empty(target)
    }
}

/// Absent, or an empty directory.
fn check_empty(target: &Path) -> Result<(), StoreError> {
    match fs::read_dir(target).map(|mut entries| entries.next().is_some()) {
        Ok(true) => Err(refuse(target, "exists and is not empty")),
        Ok(false) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::Io {
            path: target.to_path_buf(),
            source,
        }),
    }
}

/// Writes complete checkpoint `from` (with `metadata`) as a savepoint at
/// `to`: its data files first (hard links, or synced copies), then its
/// metadata, last and atomically, as for a checkpoint.
pub fn write(
    from: &Path,
    metadata: &Metadata,
    to: &Path,
    targets: &Targets,
) -> Result<(), StoreError> {
    targets.check(to)?;
    fs::create_dir_all(to).map_err(|source| StoreError::Io {
        path: to.to_path_buf(),
        source,
    })?;
    for file in metadata.files() {
        let (source, target) = (from.join(&file.file), to.join(&file.file));
        if fs::hard_link(&source, &target).is_err() {
            copy_synced(&source, &target)?;
        }
    }
    let mut savepoint = metadata.clone();
    savepoint.kind = Kind::Savepoint;
    let json = super::metadata::seal(&savepoint).map_err(|e| StoreError::Corrupt {
        path: to.join(store::METADATA),
        reason: format!("cannot encode: {e}"),
    })?;
    store::write_metadata(to, &json)?;
    if let Some(parent) = to.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

fn copy_synced(source: &Path, target: &Path) -> Result<(), StoreError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    fs::copy(source, target).map_err(io(target))?;
    fs::File::open(target)
        .and_then(|f| f.sync_all())
        .map_err(io(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_must_be_absolute_empty_under_the_savepoint_dir_and_unmanaged() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let targets = Targets::new(root.to_path_buf(), vec![root.join("var/checkpoints")]);
        let e = |p: &Path| targets.check(p).unwrap_err().to_string();
        assert!(e(Path::new("relative/sp")).contains("absolute"));
        assert!(targets.check(&root.join("new")).is_ok());
        assert!(e(root).contains("only under the savepoint directory"));
        assert!(e(Path::new("/elsewhere/sp")).contains("only under the savepoint directory"));
        assert!(e(&root.join("new/../../escape")).contains("`..`"));
        let inside = root.join("var/checkpoints/chk-18446744073709551615");
        assert!(
            e(&inside).contains("which the daemon manages"),
            "{}",
            e(&inside)
        );
        fs::create_dir(root.join("used")).unwrap();
        assert!(targets.check(&root.join("used")).is_ok());
        fs::write(root.join("used/x"), b"x").unwrap();
        assert!(e(&root.join("used")).contains("not empty"));
    }
}
