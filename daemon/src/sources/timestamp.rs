//! Event time from a line's content: the `timestamp` of a file or stdin source
//! names a top-level field of each JSON line, read as milliseconds or seconds
//! since the Unix epoch, or as an RFC 3339 date, and the record carries it as
//! its timestamp (milliseconds since the epoch).
//!
//! Only that one field is decoded: the rest of the line is skipped without
//! building anything, so a source with a timestamp costs a scan of each line.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::config::{TimeFormat, TimestampConfig};

/// Reads a record's timestamp from its line.
#[derive(Debug, Clone)]
pub(crate) struct Stamper {
    field: String,
    format: TimeFormat,
}

impl Stamper {
    pub(crate) fn new(config: &TimestampConfig) -> Self {
        Self {
            field: config.json_field.clone(),
            format: config.format,
        }
    }

    /// The timestamp of `line` (without its newline), or why it has none.
    pub(crate) fn stamp(&self, line: &[u8]) -> Result<i64, String> {
        let mut de = serde_json::Deserializer::from_slice(line);
        let found = de
            .deserialize_map(FindField { field: &self.field })
            .map_err(|e| format!("it is not a JSON object ({e})"))?;
        let value = found.ok_or_else(|| format!("it has no field `{}`", self.field))?;
        self.convert(value)
            .map_err(|why| format!("its field `{}` {why}", self.field))
    }

    fn convert(&self, value: Time) -> Result<i64, String> {
        match (self.format, value) {
            (TimeFormat::UnixMs, Time::Int(ms)) => Ok(ms),
            (TimeFormat::UnixMs, Time::Float(ms)) if ms.is_finite() => Ok(ms.floor() as i64),
            (TimeFormat::UnixS, Time::Int(s)) => s
                .checked_mul(1000)
                .ok_or_else(|| format!("is {s} seconds, too far from the epoch")),
            (TimeFormat::UnixS, Time::Float(s)) if s.is_finite() => {
                let ms = (s * 1000.0).floor();
                if ms.abs() < 9.0e18 {
                    Ok(ms as i64)
                } else {
                    Err(format!("is {s} seconds, too far from the epoch"))
                }
            }
            (TimeFormat::Rfc3339, Time::Text(text)) => rfc3339_ms(&text).ok_or_else(|| {
                format!("is not an RFC 3339 date (like 2026-12-01T10:00:00Z): {text:?}")
            }),
            (TimeFormat::UnixMs, other) => Err(format!(
                "is not a number of milliseconds since the epoch: {other}"
            )),
            (TimeFormat::UnixS, other) => Err(format!(
                "is not a number of seconds since the epoch: {other}"
            )),
            (TimeFormat::Rfc3339, other) => Err(format!(
                "is not an RFC 3339 date string: {other} (set `format = \"unix_ms\"` for numbers)"
            )),
        }
    }
}

/// The event time of the line that starts at byte `at` of `input`, by
/// `stamper` if the source has one. A line without a readable time is an
/// error naming it, never a record with no time.
pub(crate) fn stamp(
    stamper: Option<&Stamper>,
    line: &[u8],
    at: u64,
    input: &dyn fmt::Display,
) -> std::io::Result<Option<i64>> {
    let Some(stamper) = stamper else {
        return Ok(None);
    };
    stamper.stamp(line).map(Some).map_err(|why| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("no timestamp in the line at byte {at} of {input}: {why}"),
        )
    })
}

/// Milliseconds since the epoch of an RFC 3339 date (`Z` or a numeric
/// offset), or `None`.
pub(crate) fn rfc3339_ms(text: &str) -> Option<i64> {
    let time = match split_offset(text) {
        // humantime reads dates in UTC only (and misreads some with an
        // offset after fractional seconds): the offset is taken off here.
        Some((local, east, shift)) => {
            let utc_local = humantime::parse_rfc3339_weak(local).ok()?;
            if east {
                utc_local.checked_sub(shift)?
            } else {
                utc_local.checked_add(shift)?
            }
        }
        None => humantime::parse_rfc3339_weak(text).ok()?,
    };
    match time.duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).ok(),
        Err(before) => i64::try_from(before.duration().as_millis())
            .ok()
            .map(|ms| -ms),
    }
}

/// A date's local part, whether its offset is east of UTC, and the offset,
/// if it ends in `+HH:MM` or `-HH:MM`.
fn split_offset(text: &str) -> Option<(&str, bool, std::time::Duration)> {
    let at = text.len().checked_sub(6)?;
    let (local, offset) = (text.get(..at)?, text.get(at..)?.as_bytes());
    let east = match offset {
        [b'+', ..] => true,
        [b'-', ..] => false,
        _ => return None,
    };
    let digits = |a: u8, b: u8| {
        (a.is_ascii_digit() && b.is_ascii_digit())
            .then(|| u64::from(a - b'0') * 10 + u64::from(b - b'0'))
    };
    let (hours, minutes) = match offset {
        [_, h1, h2, b':', m1, m2] => (digits(*h1, *h2)?, digits(*m1, *m2)?),
        _ => return None,
    };
    (hours < 24 && minutes < 60).then(|| {
        (
            local,
            east,
            std::time::Duration::from_secs(hours * 3600 + minutes * 60),
        )
    })
}

/// A time field's value, as the line had it.
enum Time {
    Int(i64),
    Float(f64),
    Text(String),
    Other(&'static str),
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(n) => write!(f, "{n}"),
            Self::Float(n) => write!(f, "{n}"),
            Self::Text(s) => write!(f, "{s:?}"),
            Self::Other(what) => f.write_str(what),
        }
    }
}

/// Walks a JSON object for one top-level field, skipping every other value.
struct FindField<'a> {
    field: &'a str,
}

impl<'de> Visitor<'de> for FindField<'_> {
    type Value = Option<Time>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(is_field) = map.next_key_seed(KeyIs(self.field))? {
            if is_field && found.is_none() {
                found = Some(map.next_value_seed(TimeSeed)?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Whether a key is the one looked for, without allocating it.
struct KeyIs<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

struct TimeSeed;

impl<'de> DeserializeSeed<'de> for TimeSeed {
    type Value = Time;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Time, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TimeSeed {
    type Value = Time;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a time")
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Time, E> {
        Ok(Time::Int(n))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Time, E> {
        Ok(i64::try_from(n).map_or(Time::Other("a number too large"), Time::Int))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Time, E> {
        Ok(Time::Float(n))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Time, E> {
        Ok(Time::Text(s.to_owned()))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Time, E> {
        Ok(Time::Other("a boolean"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Time, E> {
        Ok(Time::Other("null"))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Time, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Time::Other("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Time, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Time::Other("an object"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamper(field: &str, format: TimeFormat) -> Stamper {
        Stamper::new(&TimestampConfig {
            json_field: field.into(),
            format,
        })
    }

    #[test]
    fn reads_each_format() {
        let ms = stamper("ms", TimeFormat::UnixMs);
        assert_eq!(
            ms.stamp(br#"{"user":"a","ms":1764583200123,"x":[1,{"ms":2}]}"#),
            Ok(1_764_583_200_123)
        );
        assert_eq!(ms.stamp(br#"{"ms": 12.9}"#), Ok(12));
        assert_eq!(ms.stamp(br#"{"ms": -5}"#), Ok(-5));
        let s = stamper("t", TimeFormat::UnixS);
        assert_eq!(s.stamp(br#"{"t": 1764583200}"#), Ok(1_764_583_200_000));
        assert_eq!(s.stamp(br#"{"t": 1764583200.5}"#), Ok(1_764_583_200_500));
        let date = stamper("ts", TimeFormat::Rfc3339);
        assert_eq!(
            date.stamp(br#"{"ts":"2025-12-01T10:00:00Z"}"#),
            Ok(1_764_583_200_000)
        );
        assert_eq!(
            date.stamp(br#"{"ts":"2025-12-01T10:00:00.250Z"}"#),
            Ok(1_764_583_200_250)
        );
        assert_eq!(
            date.stamp(br#"{"ts":"2025-12-01T12:00:00+02:00"}"#),
            Ok(1_764_583_200_000)
        );
        assert_eq!(
            date.stamp(br#"{"ts":"2025-12-01T05:30:00-04:30"}"#),
            Ok(1_764_583_200_000)
        );
        assert_eq!(
            date.stamp(br#"{"ts":"2025-12-01T12:00:00.5+02:00"}"#),
            Ok(1_764_583_200_500)
        );
        // Dates are read from 1970 on (as numbers, any time is).
        assert!(date.stamp(br#"{"ts":"1969-12-31T23:59:59Z"}"#).is_err());
        // An escaped key is the same key.
        assert_eq!(ms.stamp(br#"{"m\u0073":7}"#), Ok(7));
    }

    #[test]
    fn says_why_a_line_has_no_timestamp() {
        let ms = stamper("ms", TimeFormat::UnixMs);
        let err = |line: &[u8]| ms.stamp(line).unwrap_err();
        assert_eq!(err(br#"{"user":"a"}"#), "it has no field `ms`");
        assert!(err(b"plain text").starts_with("it is not a JSON object"));
        assert!(err(br#"[1,2]"#).starts_with("it is not a JSON object"));
        assert_eq!(
            err(br#"{"ms":"soon"}"#),
            "its field `ms` is not a number of milliseconds since the epoch: \"soon\""
        );
        assert_eq!(
            err(br#"{"ms":null}"#),
            "its field `ms` is not a number of milliseconds since the epoch: null"
        );
        let date = stamper("ts", TimeFormat::Rfc3339);
        assert!(
            date.stamp(br#"{"ts":"yesterday"}"#)
                .unwrap_err()
                .contains("is not an RFC 3339 date")
        );
        assert!(
            date.stamp(br#"{"ts":17}"#)
                .unwrap_err()
                .contains("set `format = \"unix_ms\"` for numbers")
        );
        let s = stamper("t", TimeFormat::UnixS);
        assert!(
            s.stamp(br#"{"t":9223372036854775807}"#)
                .unwrap_err()
                .contains("too far from the epoch")
        );
    }
}
