//! State names, per operator: each name gets a stable numeric id, a kind, a
//! TTL and a version. Ids, not names, go into storage keys.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Kinds of keyed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateKind {
    /// One value per key.
    Value,
    /// A list per key.
    List,
    /// A map per key.
    Map,
}

/// The longest state name.
pub const MAX_STATE_NAME: usize = 256;

/// One declared state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSpec {
    /// Its id in storage keys.
    pub id: u32,
    /// Its kind.
    pub kind: StateKind,
    /// Items older than this (ms) are gone.
    pub ttl_ms: Option<u64>,
    /// The format of its values, as the plugin declared it; a checkpoint
    /// records it so a later module version knows what to migrate.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub version: u32,
}

fn is_zero(version: &u32) -> bool {
    *version == 0
}

/// A state whose saved values are at another version than the one declared:
/// its values go through the plugin's migration before the first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// The state.
    pub spec: StateSpec,
    /// The version its values were saved at.
    pub from: u32,
}

/// The states of one operator, shared by its instances.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<BTreeMap<String, StateSpec>>>,
    /// Versions by state id as the checkpoint restored from saved them: every
    /// instance compares against these, whatever its siblings declared first.
    saved: Arc<BTreeMap<u32, u32>>,
}

impl Registry {
    /// Declares a state, or finds the one declared before under this name. The
    /// TTL and version are the latest ones declared.
    pub fn register(
        &self,
        name: &str,
        kind: StateKind,
        ttl_ms: Option<u64>,
        version: u32,
    ) -> Result<StateSpec, String> {
        // Every checkpoint's metadata names every state: a name is a label,
        // not a payload.
        if name.is_empty() || name.len() > MAX_STATE_NAME {
            return Err(format!(
                "a state name has 1 to {MAX_STATE_NAME} bytes, not {}",
                name.len()
            ));
        }
        let mut states = self
            .inner
            .lock()
            .map_err(|_| "the state registry is unusable".to_owned())?;
        let next = states.values().map(|s| s.id + 1).max().unwrap_or(0);
        let spec = states.entry(name.to_owned()).or_insert(StateSpec {
            id: next,
            kind,
            ttl_ms,
            version,
        });
        if spec.kind != kind {
            return Err(format!(
                "state `{name}` was declared before as {:?} state, not {kind:?} (a state keeps \
                 its kind: declare the new one under another name)",
                spec.kind
            ));
        }
        spec.ttl_ms = ttl_ms;
        spec.version = version;
        Ok(*spec)
    }

    /// What `spec`'s values must go through, if the checkpoint restored from
    /// saved them at another version.
    pub fn migration(&self, spec: StateSpec) -> Option<Migration> {
        let from = *self.saved.get(&spec.id)?;
        (from != spec.version).then_some(Migration { spec, from })
    }

    /// Every declared state, by name (what a checkpoint records).
    pub fn specs(&self) -> BTreeMap<String, StateSpec> {
        self.inner.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// A registry that starts with the states a checkpoint recorded, so every
    /// name keeps its id.
    pub fn from_specs(specs: BTreeMap<String, StateSpec>) -> Self {
        let saved = specs.values().map(|s| (s.id, s.version)).collect();
        Self {
            inner: Arc::new(Mutex::new(specs)),
            saved: Arc::new(saved),
        }
    }

    /// The kind of the state with this id.
    pub fn kind_of(&self, id: u32) -> Option<StateKind> {
        let states = self.inner.lock().ok()?;
        states.values().find(|s| s.id == id).map(|s| s.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_and_kinds_fixed() {
        let registry = Registry::default();
        let a = registry
            .register("count", StateKind::Value, None, 0)
            .unwrap();
        assert_eq!(
            registry
                .register("count", StateKind::Value, Some(5), 0)
                .unwrap()
                .id,
            a.id
        );
        assert!(
            registry
                .register("count", StateKind::List, None, 0)
                .is_err()
        );
        assert!(registry.register("", StateKind::Value, None, 0).is_err());
        let long = "x".repeat(MAX_STATE_NAME + 1);
        let e = registry
            .register(&long, StateKind::Value, None, 0)
            .unwrap_err();
        assert!(e.contains("1 to 256 bytes"), "{e}");
        assert!(
            registry
                .register(&long[1..], StateKind::Map, None, 0)
                .is_ok()
        );
    }

    #[test]
    fn a_changed_version_is_a_migration_for_every_instance() {
        let saved = Registry::default();
        saved.register("count", StateKind::Value, None, 1).unwrap();
        saved.register("seen", StateKind::List, None, 0).unwrap();
        let restored = Registry::from_specs(saved.specs());
        // Two instances share the registry: the second sees the first's
        // declaration, and must still migrate its own values.
        for _instance in 0..2 {
            let count = restored
                .register("count", StateKind::Value, None, 2)
                .unwrap();
            assert_eq!(
                restored.migration(count),
                Some(Migration {
                    spec: count,
                    from: 1
                })
            );
            let seen = restored.register("seen", StateKind::List, None, 0).unwrap();
            assert_eq!(restored.migration(seen), None);
        }
        let new = restored.register("new", StateKind::Map, None, 3).unwrap();
        assert_eq!(
            restored.migration(new),
            None,
            "nothing saved, nothing to migrate"
        );
        assert_eq!(restored.specs()["count"].version, 2);
    }
}
