//! Each source, operator and sink table checked against its kind.

use serde_spanned::Spanned;

use super::bounds::DEFAULT_MAX_RECORD;
use super::builder::Builder;
use super::{
    DEFAULT_BATCH_SIZE, DEFAULT_CALL_TIMEOUT, DEFAULT_MEMORY_LIMIT, Limits, NativeOperator,
    OperatorBody, OperatorSpec, SinkSpec, SourceInput, SourceSpec,
};
use crate::config::{
    OperatorConfig, SinkConfig, SinkKind, SourceConfig, SourceKind, TimestampSetting,
};
use crate::diagnostic::Diagnostic;

impl Builder<'_> {
    pub(super) fn source(&mut self, key: &Spanned<String>, s: &SourceConfig) -> Option<SourceSpec> {
        let label = format!("sources.{}", key.get_ref());
        let before = self.errors.len();
        self.check_id(key, &label);
        let not_for = |field: &str, present: bool, errors: &mut Vec<Diagnostic>| {
            if present {
                let kind = format!("{:?}", s.kind).to_lowercase();
                errors.push(self.at(
                    key,
                    &label,
                    format!("`{field}` does not apply to a {kind} source"),
                ));
            }
        };
        let mut errors = Vec::new();
        if s.kind != SourceKind::File {
            not_for("path", s.path.is_some(), &mut errors);
            not_for("follow", s.follow.is_some(), &mut errors);
        }
        if s.kind != SourceKind::Generator {
            not_for("count", s.count.is_some(), &mut errors);
            not_for("rate", s.rate.is_some(), &mut errors);
            not_for("value_size", s.value_size.is_some(), &mut errors);
            not_for("keys", s.keys.is_some(), &mut errors);
            not_for("event_time", s.event_time.is_some(), &mut errors);
        }
        if s.event_time.is_some_and(|t| t.per_ms == 0) {
            errors.push(self.at(key, &label, "`event_time.per_ms` must be at least 1"));
        }
        if s.kind == SourceKind::Generator {
            not_for("timestamp", s.timestamp.is_some(), &mut errors);
        }
        if matches!(s.kind, SourceKind::Kafka | SourceKind::Nats) {
            not_for("max_record_size", s.max_record_size.is_some(), &mut errors);
        }
        if s.watermark.is_some() && s.timestamp.is_none() && s.kind != SourceKind::Generator {
            errors.push(self.at(
                key,
                &label,
                "`watermark` follows the records' timestamps: give the source a `timestamp` too",
            ));
        }
        if s.kind == SourceKind::Generator && s.watermark.is_some() && s.event_time.is_none() {
            errors.push(self.at(
                key,
                &label,
                "`watermark` follows the records' timestamps: give the generator an `event_time` too",
            ));
        }
        let field = match &s.timestamp {
            Some(TimestampSetting::Field(f)) => Some(f.clone()),
            _ => None,
        };
        if field.as_ref().is_some_and(|t| t.json_field.is_empty()) {
            errors.push(self.at(key, &label, "`timestamp.json_field` must name a field"));
        }
        self.errors.append(&mut errors);
        self.broker_source_fields(key, s);
        let input = match s.kind {
            SourceKind::File => match &s.path {
                Some(path) => SourceInput::File {
                    path: self.resolve(path.get_ref()),
                    follow: s.follow.unwrap_or(false),
                },
                None => {
                    self.errors
                        .push(self.at(key, &label, "a file source needs `path`"));
                    return None;
                }
            },
            SourceKind::Stdin => SourceInput::Stdin,
            SourceKind::Generator => SourceInput::Generator {
                count: s.count,
                rate: s.rate,
                value_size: s.value_size,
                keys: s.keys,
                event_time: s.event_time,
            },
            SourceKind::Kafka => self.kafka_source(key, s)?,
            SourceKind::Nats => self.nats_source(key, s)?,
        };
        // Ranges are checked in `bounds`.
        (self.errors.len() == before).then_some(SourceSpec {
            input,
            batch_size: s.batch_size.unwrap_or(DEFAULT_BATCH_SIZE),
            max_record_bytes: s.max_record_size.map_or(DEFAULT_MAX_RECORD, |b| b.as_u64()),
            timestamp: field,
            watermark: s.watermark,
        })
    }

    pub(super) fn parallelism(&mut self, key: &Spanned<String>, op: &OperatorConfig) -> u32 {
        let max = self.max_parallelism();
        let parallelism = op.parallelism.unwrap_or(1);
        if parallelism == 0 || parallelism > max {
            let label = format!("operators.{}", key.get_ref());
            self.errors.push(self.at(
                key,
                &label,
                format!("`parallelism` must be between 1 and {max} (`[state] max_parallelism`), not {parallelism}"),
            ));
        }
        parallelism.clamp(1, max)
    }

    pub(super) fn operator(
        &mut self,
        key: &Spanned<String>,
        op: &OperatorConfig,
    ) -> Option<OperatorSpec> {
        let label = format!("operators.{}", key.get_ref());
        let before = self.errors.len();
        self.check_id(key, &label);
        let body = match (&op.module, &op.kind) {
            (Some(module), None) => {
                let config = op.config.clone().unwrap_or_default();
                match serde_json::to_string(&config) {
                    Ok(config_json) => Some(OperatorBody::Wasm {
                        module: self.resolve(module.get_ref()),
                        config_json,
                    }),
                    Err(e) => {
                        self.errors.push(self.at(
                            key,
                            &label,
                            format!("`config` cannot be passed to the plugin: {e}"),
                        ));
                        None
                    }
                }
            }
            (None, Some(kind)) => match kind.get_ref().as_str() {
                "passthrough" => Some(OperatorBody::Native(NativeOperator::Passthrough)),
                other => {
                    self.errors.push(self.at(
                        kind,
                        &label,
                        format!("unknown built-in operator type `{other}` (expected `passthrough`, or use `module`)"),
                    ));
                    None
                }
            },
            (Some(module), Some(_)) => {
                self.errors.push(self.at(
                    module,
                    &label,
                    "give either `module` or `type`, not both",
                ));
                None
            }
            (None, None) => {
                self.errors.push(self.at(
                    key,
                    &label,
                    "an operator needs `module` (a WebAssembly component) or `type`",
                ));
                None
            }
        };
        if op.config.is_some() && op.kind.is_some() {
            self.errors
                .push(self.at(key, &label, "`config` applies only to module operators"));
        }
        if op.inputs.is_empty() {
            self.errors
                .push(self.at(key, &label, "`inputs` must name at least one component"));
        }
        // Ranges are checked in `bounds`.
        let memory_bytes = op.memory_limit.map_or(DEFAULT_MEMORY_LIMIT, |m| m.as_u64());
        let call_timeout = op.call_timeout.unwrap_or(DEFAULT_CALL_TIMEOUT);
        let body = body?;
        let on_error = op.on_error.unwrap_or_default();
        if on_error == crate::config::OnError::DeadLetter && matches!(body, OperatorBody::Native(_))
        {
            self.errors.push(self.at(
                key,
                &label,
                "`on_error = \"dead_letter\"` applies only to module operators",
            ));
        }
        (self.errors.len() == before).then_some(OperatorSpec {
            body,
            limits: Limits {
                memory_bytes,
                call_timeout,
            },
            on_error,
        })
    }

    pub(super) fn sink(&mut self, key: &Spanned<String>, s: &SinkConfig) -> Option<SinkSpec> {
        let label = format!("sinks.{}", key.get_ref());
        let before = self.errors.len();
        self.check_id(key, &label);
        if s.inputs.is_empty() {
            self.errors
                .push(self.at(key, &label, "`inputs` must name at least one component"));
        }
        let encoding = s.encoding.unwrap_or_default();
        let spec = match s.kind {
            SinkKind::File => match (&s.path, &s.directory) {
                (Some(path), None) => {
                    if self.file.raw.checkpoint.is_some() {
                        self.warnings.push(self.at(
                            path,
                            &label,
                            "`path` is written as records arrive, so after a restore from a \
                             checkpoint it may hold records twice; use `directory` for \
                             exactly-once output",
                        ));
                    }
                    Some(SinkSpec::File {
                        path: self.resolve(path.get_ref()),
                        encoding,
                    })
                }
                (None, Some(dir)) => Some(SinkSpec::Directory {
                    dir: self.resolve(dir.get_ref()),
                    encoding,
                }),
                (Some(_), Some(dir)) => {
                    self.errors.push(self.at(
                        dir,
                        &label,
                        "a file sink takes `path` or `directory`, not both",
                    ));
                    None
                }
                (None, None) => {
                    self.errors.push(self.at(
                        key,
                        &label,
                        "a file sink needs `path` (one file) or `directory` (exactly-once part files)",
                    ));
                    None
                }
            },
            SinkKind::Stdout => Some(SinkSpec::Stdout { encoding }),
            SinkKind::Blackhole => Some(SinkSpec::Blackhole),
            SinkKind::Kafka => self.kafka_sink(key, s),
            SinkKind::Nats => self.nats_sink(key, s),
        };
        self.broker_sink_fields(key, s);
        if s.kind != SinkKind::File && s.path.is_some() {
            self.errors
                .push(self.at(key, &label, "`path` applies only to file sinks"));
        }
        if s.kind != SinkKind::File && s.directory.is_some() {
            self.errors
                .push(self.at(key, &label, "`directory` applies only to file sinks"));
        }
        if s.kind == SinkKind::Blackhole && s.encoding.is_some() {
            self.errors
                .push(self.at(key, &label, "`encoding` does not apply to a blackhole sink"));
        }
        let spec = spec?;
        (self.errors.len() == before).then_some(spec)
    }
}
