//! Every number a config may give, within a range the daemon can honour:
//! nothing a config says may panic, abort or exhaust memory. Each error names
//! the field, its line and the range allowed.

use std::time::Duration;

use super::builder::Builder;
use crate::diagnostic::Diagnostic;

/// Most batches buffered per channel.
pub(super) const MAX_CHANNEL_CAPACITY: usize = 1024;
/// Most records per source batch.
pub(super) const MAX_BATCH_SIZE: usize = 1 << 20;
/// Default and bounds of a source's `max_record_size`.
pub(super) const DEFAULT_MAX_RECORD: u64 = 16 * 1024 * 1024;
const MIN_MAX_RECORD: u64 = 1024;
const MAX_MAX_RECORD: u64 = 1024 * 1024 * 1024;
/// A generator's most records per second.
const MAX_RATE: f64 = 1e9;
/// Linear memory of an instance: a Rust plugin's stack alone is 1 MiB (the
/// smallest one asks for 1.1 MiB at start), and wasm32 addresses 4 GiB.
const MEMORY_LIMIT: (u64, u64) = (2 * 1024 * 1024, 4 * 1024 * 1024 * 1024);
const CALL_TIMEOUT: (Duration, Duration) = (Duration::from_millis(1), Duration::from_secs(3600));
const DAY: Duration = Duration::from_secs(86_400);
const GIB: u64 = 1024 * 1024 * 1024;

/// A byte count as a config would say it: `64KiB`, `1GiB`, or bytes.
pub(crate) fn show_bytes(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    UNITS
        .iter()
        .find(|(unit, _)| bytes >= *unit && bytes.is_multiple_of(*unit))
        .map_or_else(
            || format!("{bytes}B"),
            |(unit, name)| format!("{}{name}", bytes / unit),
        )
}

/// A table of the config, for errors about its fields.
#[derive(Clone, Copy)]
struct Table<'a> {
    /// `daemon`, or `sources.gen`.
    name: &'a str,
    /// Where the table starts in the text, when it has a header.
    at: Option<usize>,
}

impl Builder<'_> {
    /// Checks every number in the file against its range.
    pub(super) fn check_bounds(&mut self) {
        let raw = &self.file.raw;
        let daemon = self.table("daemon");
        if let Some(n) = raw.daemon.channel_capacity {
            self.range(
                daemon,
                "channel_capacity",
                n,
                1,
                MAX_CHANNEL_CAPACITY,
                |n| n.to_string(),
            );
        }
        let state = self.table("state");
        let size = |b: &u64| show_bytes(*b);
        for (field, value, min, max) in [
            ("block_cache", raw.state.block_cache, 1024 * 1024, 64 * GIB),
            ("write_buffer", raw.state.write_buffer, 64 * 1024, 4 * GIB),
            ("cache", raw.state.cache, 64 * 1024, 64 * GIB),
        ] {
            if let Some(v) = value {
                self.range(state, field, v.as_u64(), min, max, size);
            }
        }
        if let Some(c) = &raw.checkpoint {
            let table = self.table("checkpoint");
            if let Some(i) = c.interval {
                self.duration(table, "interval", i, Duration::ZERO, 30 * DAY);
            }
            if let Some(i) = c.timeout {
                self.duration(table, "timeout", i, Duration::from_millis(1), 7 * DAY);
            }
            if let Some(n) = c.retain {
                self.range(table, "retain", n, 0, 10_000, |n| n.to_string());
            }
        }
        let r = &raw.restart;
        let table = self.table("restart");
        if let Some(n) = r.max_failures {
            self.range(table, "max_failures", n, 0, 1_000_000, |n| n.to_string());
        }
        for (field, value) in [
            ("window", r.window),
            ("backoff", r.backoff),
            ("max_backoff", r.max_backoff),
        ] {
            if let Some(d) = value {
                let max = if field == "window" { 365 * DAY } else { DAY };
                self.duration(table, field, d, Duration::ZERO, max);
            }
        }

        for (key, s) in &raw.sources {
            let label = format!("sources.{}", key.get_ref());
            let table = Table {
                name: &label,
                at: Some(key.span().start),
            };
            if let Some(n) = s.batch_size {
                self.range(table, "batch_size", n, 1, MAX_BATCH_SIZE, |n| n.to_string());
            }
            let max_record = s.max_record_size.map_or(DEFAULT_MAX_RECORD, |b| b.as_u64());
            if let Some(b) = s.max_record_size {
                self.range(
                    table,
                    "max_record_size",
                    b.as_u64(),
                    MIN_MAX_RECORD,
                    MAX_MAX_RECORD,
                    size,
                );
            }
            if let Some(n) = s.value_size {
                let n = u64::try_from(n).unwrap_or(u64::MAX);
                let max = max_record.clamp(MIN_MAX_RECORD, MAX_MAX_RECORD);
                if n > max {
                    let message =
                        format!("must be between 0 and {max} (`max_record_size`), not {n}");
                    let e = self.field_error(table, "value_size", message);
                    self.errors.push(e);
                }
            }
            if let Some(n) = s.keys {
                self.range(table, "keys", n, 1, u64::MAX, |n| n.to_string());
            }
            if let Some(rate) = s.rate
                && !(rate.is_finite() && rate > 0.0 && rate <= MAX_RATE)
            {
                let e = self.field_error(
                    table,
                    "rate",
                    format!(
                        "must be a positive number of records per second up to {MAX_RATE:e}, not {rate:e}"
                    ),
                );
                self.errors.push(e);
            }
        }
        for (key, op) in &raw.operators {
            let label = format!("operators.{}", key.get_ref());
            let table = Table {
                name: &label,
                at: Some(key.span().start),
            };
            if let Some(m) = op.memory_limit {
                let (min, max) = MEMORY_LIMIT;
                self.range(table, "memory_limit", m.as_u64(), min, max, size);
            }
            if let Some(d) = op.call_timeout {
                let (min, max) = CALL_TIMEOUT;
                self.duration(table, "call_timeout", d, min, max);
            }
        }
    }

    /// The header of `[name]`, if the file has one.
    fn table<'n>(&self, name: &'n str) -> Table<'n> {
        let header = format!("[{name}]");
        let text = self.file.text.as_str();
        let table_at = text
            .match_indices(&header)
            .find(|(i, _)| text[..*i].ends_with('\n') || *i == 0)
            .map(|(i, _)| i);
        Table { name, at: table_at }
    }

    fn range<T: PartialOrd>(
        &mut self,
        table: Table<'_>,
        field: &str,
        value: T,
        min: T,
        max: T,
        show: impl Fn(&T) -> String,
    ) {
        if value < min || value > max {
            let message = format!(
                "must be between {} and {}, not {}",
                show(&min),
                show(&max),
                show(&value)
            );
            let e = self.field_error(table, field, message);
            self.errors.push(e);
        }
    }

    fn duration(
        &mut self,
        table: Table<'_>,
        field: &str,
        value: Duration,
        min: Duration,
        max: Duration,
    ) {
        let show = |d: &Duration| humantime::format_duration(*d).to_string();
        self.range(table, field, value, min, max, show);
    }

    /// An error about `field` of a table, at the field's line when it can be
    /// found (the first line of the table that sets it), else at the table's.
    fn field_error(&self, table: Table<'_>, field: &str, message: String) -> Diagnostic {
        let message = format!("`{field}` {message}");
        let label = if table.name.contains('.') {
            table.name.to_owned()
        } else {
            format!("[{}]", table.name)
        };
        let Some(start) = table.at else {
            return Diagnostic::file(&self.file.path, message).in_component(label);
        };
        let text = self.file.text.as_str();
        let mut offset = text[start..]
            .find('\n')
            .map_or(text.len(), |n| start + n + 1);
        let mut at = start;
        for line in text[offset..].split_inclusive('\n') {
            let trimmed = line.trim_start();
            if trimmed.starts_with('[') {
                break;
            }
            if let Some(rest) = trimmed.strip_prefix(field)
                && rest.trim_start().starts_with('=')
            {
                at = offset + (line.len() - trimmed.len());
                break;
            }
            offset += line.len();
        }
        self.file.text.at(at, message).in_component(label)
    }
}
