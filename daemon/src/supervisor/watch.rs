//! Reloading when the config file or a module it names changes on disk.
//!
//! Editors save by writing a temporary file and renaming it over the old
//! one, which replaces the inode a watch on the file would follow; so the
//! parent directories are watched and events filtered by path. Events are
//! debounced: a burst of writes becomes one reload, once the files are quiet.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use super::reload::{Request, Trigger};

/// How long the files must stay quiet before a reload.
pub const DEBOUNCE: Duration = Duration::from_millis(500);

/// A running watch; dropping it stops watching.
pub struct Watch {
    _watcher: notify::RecommendedWatcher,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

/// Watches `files` (the config and every module) and sends a reload request
/// on `reloads` after each debounced burst of changes to them.
pub fn start(files: &[PathBuf], reloads: mpsc::Sender<Request>) -> notify::Result<Watch> {
    let files: BTreeSet<PathBuf> = files.iter().map(|f| absolute(f)).collect();
    let dirs: BTreeSet<PathBuf> = files
        .iter()
        .filter_map(|f| f.parent().map(Path::to_path_buf))
        .collect();
    let (events_tx, mut events) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        if event.paths.iter().any(|p| files.contains(&absolute(p))) {
            let _ = events_tx.send(());
        }
    })?;
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        while events.recv().await.is_some() {
            // Wait until no event has come for DEBOUNCE.
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, events.recv()).await {}
            let request = Request {
                trigger: Trigger::FileChange,
                reply: None,
            };
            if reloads.send(request).await.is_err() {
                return;
            }
        }
    });
    Ok(Watch { _watcher: watcher })
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
