//! The settings the broker connectors (Kafka, NATS JetStream) share.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// Where a partitioned source starts reading when no checkpoint says where
/// (a first start, or a partition the checkpoint does not know).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    untagged,
    expecting = "`\"earliest\"`, `\"latest\"` or `{ timestamp = \"RFC 3339 time\" }`"
)]
pub enum StartAt {
    /// `earliest` or `latest`.
    Edge(Edge),
    /// The first record at or after a time.
    Timestamp {
        /// An RFC 3339 time, such as `2026-12-01T10:00:00Z`.
        timestamp: String,
    },
}

impl Default for StartAt {
    fn default() -> Self {
        Self::Edge(Edge::Earliest)
    }
}

/// An end of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Edge {
    /// Its first record still kept.
    Earliest,
    /// After its last record.
    Latest,
}

/// What a broker sink promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Every record once: a checkpoint's output goes out in one transaction
    /// (Kafka) or under stable message ids (JetStream) after it completes.
    #[default]
    ExactlyOnce,
    /// Every record at least once: sent as it comes, flushed at each barrier.
    AtLeastOnce,
}

/// A `timestamp` setting: the broker record's own time, or a JSON field of
/// each line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimestampSetting {
    /// `"record"`: the Kafka record's timestamp (or the JetStream message's).
    Record(RecordTime),
    /// A field of each line.
    Field(super::TimestampConfig),
}

/// The one word `record`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordTime {
    /// The broker record's timestamp.
    Record,
}

// By hand rather than `untagged`, so a table's own errors (an unknown
// `format`, say) reach the user instead of "no variant matched".
impl<'de> Deserialize<'de> for TimestampSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = TimestampSetting;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`\"record\"` or `{ json_field = \"...\", format = \"...\" }`")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v {
                    "record" => Ok(TimestampSetting::Record(RecordTime::Record)),
                    other => Err(E::invalid_value(serde::de::Unexpected::Str(other), &self)),
                }
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                super::TimestampConfig::deserialize(serde::de::value::MapAccessDeserializer::new(
                    map,
                ))
                .map(TimestampSetting::Field)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// librdkafka properties passed through as given (`security.protocol`,
/// `sasl.*`, ...), after Weir's own.
pub type ClientOptions = BTreeMap<String, String>;

/// How often a Kafka source looks for new partitions (default 10 s).
pub const DEFAULT_PARTITION_DISCOVERY: Duration = Duration::from_secs(10);
