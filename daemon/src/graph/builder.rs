//! Walks a config file once, collecting every error, and assembles the
//! [`Topology`] from the checked pieces.

use std::path::{Path, PathBuf};

use serde_spanned::Spanned;

use super::{Component, ComponentId, ComponentKind, DEFAULT_CHANNEL_CAPACITY, Topology};
use crate::config::{ConfigFile, Partition};
use crate::diagnostic::Diagnostic;

/// The state of one check of a config file.
pub(super) struct Builder<'a> {
    pub(super) file: &'a ConfigFile,
    /// The side outputs an operator's module declares, when it is known.
    pub(super) outputs: &'a dyn Fn(&str) -> Option<Vec<String>>,
    pub(super) errors: Vec<Diagnostic>,
    pub(super) warnings: Vec<Diagnostic>,
}

/// A component before its inputs are resolved.
pub(super) struct Pending<'a> {
    pub(super) section: &'static str,
    pub(super) key: &'a Spanned<String>,
    pub(super) kind: Option<ComponentKind>,
    pub(super) inputs: &'a [Spanned<String>],
    pub(super) parallelism: u32,
    pub(super) partition: Partition,
    pub(super) chain: bool,
}

impl Pending<'_> {
    pub(super) fn label(&self) -> String {
        format!("{}.{}", self.section, self.key.get_ref())
    }
}

impl<'a> Builder<'a> {
    pub(super) fn new(
        file: &'a ConfigFile,
        outputs: &'a dyn Fn(&str) -> Option<Vec<String>>,
    ) -> Self {
        Self {
            file,
            outputs,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub(super) fn build(mut self) -> Result<Topology, Vec<Diagnostic>> {
        let raw = &self.file.raw;
        let mut pending: Vec<Pending<'a>> = Vec::new();
        for (key, source) in &raw.sources {
            let kind = self.source(key, source).map(ComponentKind::Source);
            let parallelism = self.source_parallelism(key, source);
            pending.push(Pending {
                section: "sources",
                key,
                kind,
                inputs: &[],
                parallelism,
                partition: Partition::Hash,
                chain: source.chain.unwrap_or(true),
            });
        }
        for (key, op) in &raw.operators {
            let kind = self.operator(key, op).map(ComponentKind::Operator);
            let parallelism = self.parallelism(key, op);
            let partition = op.partition.unwrap_or_default();
            pending.push(Pending {
                section: "operators",
                key,
                kind,
                inputs: &op.inputs,
                parallelism,
                partition,
                chain: op.chain.unwrap_or(true),
            });
        }
        for (key, sink) in &raw.sinks {
            let kind = self.sink(key, sink).map(ComponentKind::Sink);
            pending.push(Pending {
                section: "sinks",
                key,
                kind,
                inputs: &sink.inputs,
                parallelism: 1,
                partition: Partition::Hash,
                chain: sink.chain.unwrap_or(true),
            });
        }
        if raw.sources.is_empty() {
            self.errors.push(Diagnostic::file(
                &self.file.path,
                "the topology has no sources: add a [sources.ID] table",
            ));
        }

        let state = self.state();
        let checkpoint = self.checkpoint();
        let restart = self.restart();
        let admin_address = self.admin_address();
        self.check_admin_token();
        self.check_bounds();
        self.check_paths(&pending);
        let by_id = self.index_ids(&pending);
        let input_outputs = self.check_inputs(&pending, &by_id);
        let order = self.order(&pending, &by_id);
        self.check_forward(&pending, &by_id);
        self.warn_unconsumed(&pending);

        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        let mut components: Vec<Component> = order
            .into_iter()
            .filter_map(|i| {
                let p = &pending[i];
                Some(Component {
                    id: p.key.get_ref().as_str().into(),
                    kind: p.kind.clone()?,
                    inputs: p
                        .inputs
                        .iter()
                        .map(|i| super::split_input(i.get_ref()).0.into())
                        .collect(),
                    input_outputs: input_outputs[i].clone(),
                    parallelism: p.parallelism,
                    partition: p.partition,
                    chain: p.chain,
                })
            })
            .collect();
        let data_dir = self.file.data_dir();
        self.add_dead_letter_sinks(&mut components, &data_dir);
        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        let daemon = &raw.daemon;
        Ok(Topology {
            config_path: self.file.path.clone(),
            channel_capacity: daemon.channel_capacity.unwrap_or(DEFAULT_CHANNEL_CAPACITY),
            chaining: daemon.chaining.unwrap_or_else(|| self.chaining_from_env()),
            admin_address,
            admin_socket: self.file.admin_socket(),
            admin_token_file: daemon
                .admin_token_file
                .as_ref()
                .map(|p| self.resolve(p.get_ref())),
            savepoint_dir: absolute(
                self.resolve(
                    raw.checkpoint
                        .as_ref()
                        .and_then(|c| c.savepoint_dir.as_deref())
                        .unwrap_or(&data_dir.join("savepoints")),
                ),
            ),
            start_from_savepoint: raw
                .checkpoint
                .as_ref()
                .and_then(|c| c.start_from_savepoint.as_ref())
                .map(|p| self.resolve(p.get_ref())),
            data_dir,
            components,
            state,
            checkpoint,
            restart,
            warnings: self.warnings,
        })
    }

    /// Dead letters of an operator with `on_error = "dead_letter"` that no
    /// component reads (`<id>.errors`) go to an exactly-once directory sink
    /// of their own, `<data_dir>/dead_letter/<id>`, one JSON line each.
    fn add_dead_letter_sinks(&mut self, components: &mut Vec<Component>, data_dir: &Path) {
        let read: Vec<(ComponentId, u32)> = components
            .iter()
            .flat_map(|c| {
                c.inputs
                    .iter()
                    .cloned()
                    .zip(c.input_outputs.iter().map(|(o, _)| *o))
            })
            .collect();
        let mut added = Vec::new();
        for c in components.iter() {
            let ComponentKind::Operator(spec) = &c.kind else {
                continue;
            };
            if spec.on_error != crate::config::OnError::DeadLetter
                || read.contains(&(c.id.clone(), super::ERRORS_OUTPUT_INDEX))
            {
                continue;
            }
            let id: ComponentId = format!("{}-dead-letters", c.id).into();
            if components.iter().any(|other| other.id == id) {
                self.errors.push(Diagnostic::file(
                    &self.file.path,
                    format!(
                        "operators.{}: its dead letters go to a sink named `{id}`, and a \
                         component has that id: read `{}.errors` from a sink of your own",
                        c.id, c.id
                    ),
                ));
                continue;
            }
            added.push(Component {
                id,
                kind: ComponentKind::Sink(super::SinkSpec::Directory {
                    dir: data_dir.join("dead_letter").join(&*c.id),
                    encoding: crate::config::Encoding::Text,
                }),
                inputs: vec![c.id.clone()],
                input_outputs: vec![(
                    super::ERRORS_OUTPUT_INDEX,
                    format!("{}.{}", c.id, crate::operator_host::ERRORS_OUTPUT).into(),
                )],
                parallelism: 1,
                partition: Partition::RoundRobin,
                chain: false,
            });
        }
        components.extend(added);
    }

    /// `path` resolved against the config file's directory.
    pub(super) fn resolve(&self, path: &Path) -> PathBuf {
        self.file.resolve(path)
    }

    /// An error at `spanned`'s position, in component (or table) `label`.
    pub(super) fn at<T>(
        &self,
        spanned: &Spanned<T>,
        label: &str,
        message: impl Into<String>,
    ) -> Diagnostic {
        self.file
            .text
            .at(spanned.span().start, message)
            .in_component(label)
    }

    /// Component ids: what a person can type and a metric label can carry.
    pub(super) fn check_id(&mut self, key: &Spanned<String>, label: &str) {
        let id = key.get_ref();
        let valid = !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            self.errors.push(self.at(
                key,
                label,
                "component ids may use only ASCII letters, digits, `_` and `-`",
            ));
        }
    }
}

/// `path` made absolute against the working directory: savepoint requests
/// come from other processes, so the daemon answers with absolute paths.
pub(super) fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

impl Builder<'_> {
    /// The default of `[daemon] chaining`: `WEIR_CHAINING=false` turns it
    /// off for every topology that does not say (to compare, or to run a
    /// test suite both ways); `true` or unset leaves it on, and anything else
    /// is warned about and leaves it on.
    fn chaining_from_env(&mut self) -> bool {
        match std::env::var("WEIR_CHAINING") {
            Err(_) => true,
            Ok(v) if v.trim() == "false" => false,
            Ok(v) if v.trim() == "true" => true,
            Ok(v) => {
                self.warnings.push(Diagnostic::file(
                    &self.file.path,
                    format!(
                        "the environment variable WEIR_CHAINING is {v:?}, neither true nor \
                         false: chaining stays on"
                    ),
                ));
                true
            }
        }
    }
}
