//! What a reload changes: the old and new topology compared by component id.
//!
//! A component is changed when anything about it differs: its kind or
//! settings, its inputs, parallelism or partition, or its module's contents
//! (by SHA-256). Settings outside the components (`[state]`, `[checkpoint]`,
//! `[restart]`, `channel_capacity`) count as a change of the whole pipeline.
//! Some settings cannot change while the daemon runs: `data_dir` (where the
//! state is) and `max_parallelism` (the key groups).

use std::fmt;

use crate::graph::{ComponentKind, OperatorBody};
use crate::validate::Validated;

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP.
    Signal,
    /// The config file or a module changed on disk.
    FileChange,
    /// `POST /reload` (`weir reload`).
    Http,
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Signal => "SIGHUP",
            Self::FileChange => "a file change",
            Self::Http => "POST /reload",
        })
    }
}

/// A reload asked for; the outcome goes to `reply` if someone waits.
#[derive(Debug)]
pub struct Request {
    /// Why.
    pub trigger: Trigger,
    /// Who waits for the outcome.
    pub reply: Option<tokio::sync::oneshot::Sender<Result<Outcome, String>>>,
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    /// Components added.
    pub added: Vec<String>,
    /// Components removed (an operator's state with them).
    pub removed: Vec<String>,
    /// Components changed.
    pub changed: Vec<String>,
    /// Settings outside the components that changed.
    pub settings: Vec<String>,
    /// How long records stopped flowing, in milliseconds; absent when nothing
    /// changed and the pipeline ran on untouched.
    pub pause_ms: Option<u64>,
}

impl Outcome {
    /// Nothing to apply.
    pub fn is_unchanged(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.settings.is_empty()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_unchanged() {
            return f.write_str("nothing changed");
        }
        let mut parts = Vec::new();
        for (what, ids) in [
            ("added", &self.added),
            ("removed", &self.removed),
            ("changed", &self.changed),
            ("settings changed", &self.settings),
        ] {
            if !ids.is_empty() {
                parts.push(format!("{what}: {}", ids.join(", ")));
            }
        }
        f.write_str(&parts.join("; "))?;
        if let Some(ms) = self.pause_ms {
            write!(f, " (records paused {ms} ms)")?;
        }
        Ok(())
    }
}

/// Compares `old` and `new`; an error names a setting that cannot change
/// without a restart of the daemon.
pub fn diff(old: &Validated, new: &Validated) -> Result<Outcome, String> {
    let (o, n) = (&old.topology, &new.topology);
    if o.data_dir != n.data_dir {
        return Err(format!(
            "[daemon] data_dir cannot change while the daemon runs ({} -> {}): restart it",
            o.data_dir.display(),
            n.data_dir.display()
        ));
    }
    if o.state.max_parallelism != n.state.max_parallelism {
        return Err(format!(
            "[state] max_parallelism cannot change: it fixes the key groups of all state ({} -> {})",
            o.state.max_parallelism, n.state.max_parallelism
        ));
    }
    if o.admin_address != n.admin_address {
        tracing::warn!(
            "[daemon] admin_address changes at the next start of the daemon, not on reload"
        );
    }
    let module_hash = |v: &Validated, kind: &ComponentKind| match kind {
        ComponentKind::Operator(op) => match &op.body {
            OperatorBody::Wasm { module, .. } => v.modules.get(module).map(|m| m.sha256.clone()),
            OperatorBody::Native(_) => None,
        },
        _ => None,
    };
    let mut outcome = Outcome::default();
    for c in &n.components {
        match o.get(&c.id) {
            None => outcome.added.push(c.id.to_string()),
            Some(before) => {
                if before != c || module_hash(old, &before.kind) != module_hash(new, &c.kind) {
                    outcome.changed.push(c.id.to_string());
                }
            }
        }
    }
    for c in &o.components {
        if n.get(&c.id).is_none() {
            outcome.removed.push(c.id.to_string());
        }
    }
    for (name, same) in [
        ("[state]", o.state == n.state),
        ("[checkpoint]", o.checkpoint == n.checkpoint),
        ("[restart]", o.restart == n.restart),
        ("channel_capacity", o.channel_capacity == n.channel_capacity),
        ("chaining", o.chaining == n.chaining),
    ] {
        if !same {
            outcome.settings.push(name.to_owned());
        }
    }
    Ok(outcome)
}
