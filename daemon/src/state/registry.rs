//! State names, per operator: each name gets a stable numeric id, a kind and a
//! TTL. Ids, not names, go into storage keys.

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
}

/// The states of one operator, shared by its instances.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<BTreeMap<String, StateSpec>>>,
}

impl Registry {
    /// Declares a state, or finds the one declared before under this name. The
    /// TTL is the latest one declared.
    pub fn register(
        &self,
        name: &str,
        kind: StateKind,
        ttl_ms: Option<u64>,
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
        });
        if spec.kind != kind {
            return Err(format!(
                "state `{name}` was declared before as {:?} state, not {kind:?}",
                spec.kind
            ));
        }
        spec.ttl_ms = ttl_ms;
        Ok(*spec)
    }

    /// Every declared state, by name (what a checkpoint records).
    pub fn specs(&self) -> BTreeMap<String, StateSpec> {
        self.inner.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// A registry that starts with the states a checkpoint recorded, so every
    /// name keeps its id.
    pub fn from_specs(specs: BTreeMap<String, StateSpec>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(specs)),
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
        let a = registry.register("count", StateKind::Value, None).unwrap();
        assert_eq!(
            registry
                .register("count", StateKind::Value, Some(5))
                .unwrap()
                .id,
            a.id
        );
        assert!(registry.register("count", StateKind::List, None).is_err());
        assert!(registry.register("", StateKind::Value, None).is_err());
        let long = "x".repeat(MAX_STATE_NAME + 1);
        let e = registry
            .register(&long, StateKind::Value, None)
            .unwrap_err();
        assert!(e.contains("1 to 256 bytes"), "{e}");
        assert!(registry.register(&long[1..], StateKind::Map, None).is_ok());
    }
}
