//! The `/topology` document: what runs, as a person or a script reads it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::graph::{ComponentKind, OperatorBody, SinkSpec, SourceInput};
use crate::validate::Validated;

/// The running topology.
#[derive(Debug, Clone, Serialize)]
pub struct TopologyView {
    /// The config file.
    pub config: PathBuf,
    /// SHA-256 of the config file.
    pub config_sha256: String,
    /// Every component, each after its inputs.
    pub components: Vec<ComponentView>,
    /// Every edge, `from` → `to`.
    pub edges: Vec<EdgeView>,
}

/// One component.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentView {
    /// Its id.
    pub id: String,
    /// `source`, `operator` or `sink`.
    pub kind: &'static str,
    /// The source or sink type, or the built-in operator.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// The module file of a WebAssembly operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<PathBuf>,
    /// SHA-256 of the module file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_sha256: Option<String>,
    /// Its inputs.
    pub inputs: Vec<String>,
    /// Instances.
    pub parallelism: u32,
    /// How records reach its instances.
    pub partition: String,
    /// The component it is chained after: it runs in that one's thread,
    /// called with its output (operator chaining).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chained_after: Option<String>,
}

/// One edge.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeView {
    /// The producer.
    pub from: String,
    /// The consumer.
    pub to: String,
}

impl TopologyView {
    /// Describes `validated`; `config_sha256` is the hash of the file it was
    /// read from.
    pub fn new(validated: &Validated, config_sha256: String) -> Self {
        let topology = &validated.topology;
        let hashes: BTreeMap<&PathBuf, &str> = validated
            .modules
            .iter()
            .map(|(path, m)| (path, m.sha256.as_str()))
            .collect();
        let chained_after: BTreeMap<String, String> = crate::topology::chain::links(topology)
            .into_iter()
            .map(|(u, d)| (d.to_string(), u.to_string()))
            .collect();
        let components = topology
            .components
            .iter()
            .map(|c| {
                let (kind, type_, module) = match &c.kind {
                    ComponentKind::Source(s) => (
                        "source",
                        Some(
                            match s.input {
                                SourceInput::File { .. } => "file",
                                SourceInput::Stdin => "stdin",
                                SourceInput::Generator { .. } => "generator",
                                SourceInput::Kafka(_) => "kafka",
                                SourceInput::Nats(_) => "nats",
                            }
                            .to_owned(),
                        ),
                        None,
                    ),
                    ComponentKind::Operator(o) => match &o.body {
                        OperatorBody::Wasm { module, .. } => {
                            ("operator", None, Some(module.clone()))
                        }
                        OperatorBody::Native(n) => {
                            ("operator", Some(format!("{n:?}").to_lowercase()), None)
                        }
                    },
                    ComponentKind::Sink(s) => (
                        "sink",
                        Some(
                            match s {
                                SinkSpec::File { .. } | SinkSpec::Directory { .. } => "file",
                                SinkSpec::Stdout { .. } => "stdout",
                                SinkSpec::Blackhole => "blackhole",
                                SinkSpec::Kafka(_) => "kafka",
                                SinkSpec::Nats(_) => "nats",
                            }
                            .to_owned(),
                        ),
                        None,
                    ),
                };
                let module_sha256 = module
                    .as_ref()
                    .and_then(|m| hashes.get(m))
                    .map(|h| (*h).to_owned());
                ComponentView {
                    id: c.id.to_string(),
                    kind,
                    type_,
                    module,
                    module_sha256,
                    inputs: c.input_names(),
                    parallelism: c.parallelism,
                    partition: format!("{:?}", c.partition).to_lowercase(),
                    chained_after: chained_after.get(&*c.id).cloned(),
                }
            })
            .collect();
        let edges = topology
            .components
            .iter()
            .flat_map(|c| {
                c.inputs.iter().map(|i| EdgeView {
                    from: i.to_string(),
                    to: c.id.to_string(),
                })
            })
            .collect();
        Self {
            config: topology.config_path.clone(),
            config_sha256,
            components,
            edges,
        }
    }
}
