//! Kafka and NATS JetStream sources and sinks, checked against their kind.

use std::time::Duration;

use serde_spanned::Spanned;

use super::builder::Builder;
use super::{KafkaSinkSpec, KafkaSourceSpec, NatsSinkSpec, NatsSourceSpec, SinkSpec, SourceInput};
use crate::config::{
    DEFAULT_PARTITION_DISCOVERY, Delivery, Edge, RecordTime, SinkConfig, SinkKind, SourceConfig,
    SourceKind, StartAt, TimestampSetting,
};

/// Where a partitioned source starts when no checkpoint says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    /// Each partition's first record still kept.
    Earliest,
    /// After each partition's last record.
    Latest,
    /// The first record at or after this time, ms since the Unix epoch.
    Timestamp(i64),
}

impl Builder<'_> {
    /// The fields only broker sources take, when the kind is another.
    pub(super) fn broker_source_fields(&mut self, key: &Spanned<String>, s: &SourceConfig) {
        let label = format!("sources.{}", key.get_ref());
        let kind = format!("{:?}", s.kind).to_lowercase();
        let kafka = s.kind == SourceKind::Kafka;
        let broker = kafka || s.kind == SourceKind::Nats;
        let fields = [
            ("brokers", s.brokers.is_some(), broker),
            ("start", s.start.is_some(), broker),
            ("topic", s.topic.is_some(), kafka),
            ("topics", s.topics.is_some(), kafka),
            ("parallelism", s.parallelism.is_some(), kafka),
            ("group", s.group.is_some(), kafka),
            (
                "partition_discovery",
                s.partition_discovery.is_some(),
                kafka,
            ),
            ("options", s.options.is_some(), kafka),
            ("stream", s.stream.is_some(), s.kind == SourceKind::Nats),
            ("subject", s.subject.is_some(), s.kind == SourceKind::Nats),
        ];
        for (field, present, applies) in fields {
            if present && !applies {
                let error = self.at(
                    key,
                    &label,
                    format!("`{field}` does not apply to a {kind} source"),
                );
                self.errors.push(error);
            }
        }
        if !broker && matches!(s.timestamp, Some(TimestampSetting::Record(_))) {
            let error = self.at(
                key,
                &label,
                "`timestamp = \"record\"` takes the time a broker gives each record: it applies to kafka and nats sources; give a file or stdin source `{ json_field = \"...\" }`",
            );
            self.errors.push(error);
        }
    }

    /// The parallelism of source `key`: a Kafka source's own, else 1.
    pub(super) fn source_parallelism(&mut self, key: &Spanned<String>, s: &SourceConfig) -> u32 {
        let Some(parallelism) = s.parallelism else {
            return 1;
        };
        let max = self.max_parallelism();
        if parallelism == 0 || parallelism > max {
            let label = format!("sources.{}", key.get_ref());
            let error = self.at(
                key,
                &label,
                format!("`parallelism` must be between 1 and {max} (`[state] max_parallelism`), not {parallelism}"),
            );
            self.errors.push(error);
        }
        parallelism.clamp(1, max)
    }

    pub(super) fn kafka_source(
        &mut self,
        key: &Spanned<String>,
        s: &SourceConfig,
    ) -> Option<SourceInput> {
        let label = format!("sources.{}", key.get_ref());
        let brokers = self.brokers(key, &label, s.brokers.as_ref(), "kafka source");
        let topics = match (&s.topic, &s.topics) {
            (Some(t), None) => vec![t.clone()],
            (None, Some(ts)) if !ts.is_empty() => ts.clone(),
            (Some(_), Some(_)) => {
                let error = self.at(
                    key,
                    &label,
                    "a kafka source takes `topic` or `topics`, not both",
                );
                self.errors.push(error);
                return None;
            }
            _ => {
                let error = self.at(key, &label, "a kafka source needs `topic` (or `topics`)");
                self.errors.push(error);
                return None;
            }
        };
        if topics.iter().any(String::is_empty) {
            let error = self.at(key, &label, "a topic name cannot be empty");
            self.errors.push(error);
        }
        let start = self.start(key, &label, s.start.as_ref())?;
        let discovery = s.partition_discovery.unwrap_or(DEFAULT_PARTITION_DISCOVERY);
        if discovery < Duration::from_millis(100) {
            let error = self.at(key, &label, "`partition_discovery` must be at least 100ms");
            self.errors.push(error);
        }
        Some(SourceInput::Kafka(KafkaSourceSpec {
            brokers: brokers?,
            topics,
            start,
            group: s
                .group
                .clone()
                .unwrap_or_else(|| format!("weir-{}", key.get_ref())),
            partition_discovery: discovery,
            record_time: matches!(
                s.timestamp,
                Some(TimestampSetting::Record(RecordTime::Record))
            ),
            options: s.options.clone().unwrap_or_default(),
        }))
    }

    pub(super) fn nats_source(
        &mut self,
        key: &Spanned<String>,
        s: &SourceConfig,
    ) -> Option<SourceInput> {
        let label = format!("sources.{}", key.get_ref());
        let servers = self.brokers(key, &label, s.brokers.as_ref(), "nats source");
        let Some(stream) = s.stream.clone().filter(|s| !s.is_empty()) else {
            let error = self.at(
                key,
                &label,
                "a nats source needs `stream`, the JetStream stream to read",
            );
            self.errors.push(error);
            return None;
        };
        let start = self.start(key, &label, s.start.as_ref())?;
        Some(SourceInput::Nats(NatsSourceSpec {
            servers: servers?,
            stream,
            subject: s.subject.clone(),
            start,
            record_time: matches!(
                s.timestamp,
                Some(TimestampSetting::Record(RecordTime::Record))
            ),
        }))
    }

    /// A sink's `delivery`: exactly-once output is released by checkpoints,
    /// so it needs them.
    fn delivery(&mut self, key: &Spanned<String>, label: &str, s: &SinkConfig) -> Delivery {
        let delivery = s.delivery.unwrap_or_default();
        if delivery == Delivery::ExactlyOnce && self.file.raw.checkpoint.is_none() {
            let error = self.at(
                key,
                label,
                "`delivery = \"exactly_once\"` (the default) sends a checkpoint's output once the checkpoint completes: add a [checkpoint] table, or say `delivery = \"at_least_once\"`",
            );
            self.errors.push(error);
        }
        delivery
    }

    fn brokers(
        &mut self,
        key: &Spanned<String>,
        label: &str,
        brokers: Option<&Vec<String>>,
        what: &str,
    ) -> Option<Vec<String>> {
        match brokers {
            Some(b) if !b.is_empty() && b.iter().all(|b| !b.trim().is_empty()) => Some(b.clone()),
            _ => {
                let error = self.at(
                    key,
                    label,
                    format!("a {what} needs `brokers`, a list of at least one address"),
                );
                self.errors.push(error);
                None
            }
        }
    }

    fn start(
        &mut self,
        key: &Spanned<String>,
        label: &str,
        start: Option<&StartAt>,
    ) -> Option<StartPosition> {
        Some(match start.cloned().unwrap_or_default() {
            StartAt::Edge(Edge::Earliest) => StartPosition::Earliest,
            StartAt::Edge(Edge::Latest) => StartPosition::Latest,
            StartAt::Timestamp { timestamp } => {
                match crate::sources::timestamp::rfc3339_ms(&timestamp) {
                    Some(ms) => StartPosition::Timestamp(ms),
                    None => {
                        let error = self.at(
                            key,
                            label,
                            format!("`start.timestamp` is not an RFC 3339 time: {timestamp:?}"),
                        );
                        self.errors.push(error);
                        return None;
                    }
                }
            }
        })
    }

    /// The fields only broker sinks take, when the kind is another.
    pub(super) fn broker_sink_fields(&mut self, key: &Spanned<String>, s: &SinkConfig) {
        let label = format!("sinks.{}", key.get_ref());
        let kind = format!("{:?}", s.kind).to_lowercase();
        let kafka = s.kind == SinkKind::Kafka;
        let broker = kafka || s.kind == SinkKind::Nats;
        let fields = [
            ("brokers", s.brokers.is_some(), broker),
            ("delivery", s.delivery.is_some(), broker),
            ("topic", s.topic.is_some(), kafka),
            (
                "transactional_id_prefix",
                s.transactional_id_prefix.is_some(),
                kafka,
            ),
            ("options", s.options.is_some(), kafka),
            ("subject", s.subject.is_some(), s.kind == SinkKind::Nats),
        ];
        for (field, present, applies) in fields {
            if present && !applies {
                let error = self.at(
                    key,
                    &label,
                    format!("`{field}` does not apply to a {kind} sink"),
                );
                self.errors.push(error);
            }
        }
        if broker && s.encoding.is_some() {
            let error = self.at(
                key,
                &label,
                format!("`encoding` does not apply to a {kind} sink: records go out as they are"),
            );
            self.errors.push(error);
        }
    }

    pub(super) fn kafka_sink(&mut self, key: &Spanned<String>, s: &SinkConfig) -> Option<SinkSpec> {
        let label = format!("sinks.{}", key.get_ref());
        let brokers = self.brokers(key, &label, s.brokers.as_ref(), "kafka sink");
        // Checked before anything returns early: every problem is reported at once.
        let delivery = self.delivery(key, &label, s);
        let Some(topic) = s.topic.clone().filter(|t| !t.is_empty()) else {
            let error = self.at(key, &label, "a kafka sink needs `topic`");
            self.errors.push(error);
            return None;
        };
        let prefix = s
            .transactional_id_prefix
            .clone()
            .unwrap_or_else(|| format!("weir-{}", key.get_ref()));
        if prefix.is_empty() {
            let error = self.at(key, &label, "`transactional_id_prefix` cannot be empty");
            self.errors.push(error);
        }
        Some(SinkSpec::Kafka(KafkaSinkSpec {
            brokers: brokers?,
            topic,
            staging: self.file.data_dir().join("kafka-sinks").join(key.get_ref()),
            delivery,
            transactional_id_prefix: prefix,
            options: s.options.clone().unwrap_or_default(),
        }))
    }

    pub(super) fn nats_sink(&mut self, key: &Spanned<String>, s: &SinkConfig) -> Option<SinkSpec> {
        let label = format!("sinks.{}", key.get_ref());
        let servers = self.brokers(key, &label, s.brokers.as_ref(), "nats sink");
        let delivery = self.delivery(key, &label, s);
        let Some(subject) = s.subject.clone().filter(|t| !t.is_empty()) else {
            let error = self.at(
                key,
                &label,
                "a nats sink needs `subject`, the subject to publish on",
            );
            self.errors.push(error);
            return None;
        };
        Some(SinkSpec::Nats(NatsSinkSpec {
            servers: servers?,
            subject,
            staging: self.file.data_dir().join("nats-sinks").join(key.get_ref()),
            delivery,
        }))
    }
}
