//! Counters and gauges an operator exports through the daemon's Prometheus
//! endpoint, labelled with its operator id and instance:
//!
//! ```
//! use weir_guest_sdk::{Context, Counter, Error, InitContext, Operator, Record};
//!
//! pub struct Strict { malformed: Counter }
//!
//! impl Operator for Strict {
//!     fn init(ctx: &InitContext) -> Result<Self, Error> {
//!         // Exported as weir_plugin_malformed_total{operator="..",instance=".."}.
//!         Ok(Self { malformed: ctx.counter("malformed", "Records that were not UTF-8.")? })
//!     }
//!
//!     fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
//!         match std::str::from_utf8(record.value) {
//!             Ok(_) => ctx.forward(&record),
//!             Err(_) => self.malformed.inc(),
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let mut op = weir_guest_sdk::testing::Harness::<Strict>::new("{}")?;
//! op.process(&[weir_guest_sdk::testing::OwnedRecord::new("", vec![0xff])])?;
//! assert_eq!(op.metric("malformed"), Some(1));
//! # Ok::<(), Error>(())
//! ```
//!
//! Updates are gathered here and reach the host once per call into the
//! plugin, so counting costs nothing per record.

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::{Error, sys};

/// Kinds of metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetricKind {
    Counter,
    Gauge,
}

thread_local! {
    /// Updates since the last flush: a counter's increment, a gauge's value.
    static PENDING: RefCell<BTreeMap<u32, (MetricKind, i64)>> = const { RefCell::new(BTreeMap::new()) };
}

/// A count that only goes up (`weir_plugin_<name>_total`).
#[derive(Debug, Clone, Copy)]
pub struct Counter {
    id: u32,
}

impl Counter {
    pub(crate) fn register(name: &str, help: &str) -> Result<Self, Error> {
        sys::register_metric(name, MetricKind::Counter, help)
            .map(|id| Self { id })
            .map_err(|e| Error::new(format!("metric `{name}`: {e}")))
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        PENDING.with_borrow_mut(|p| {
            let entry = p.entry(self.id).or_insert((MetricKind::Counter, 0));
            entry.1 = entry.1.saturating_add(n);
        });
    }
}

/// A value that goes up and down (`weir_plugin_<name>`).
#[derive(Debug, Clone, Copy)]
pub struct Gauge {
    id: u32,
}

impl Gauge {
    pub(crate) fn register(name: &str, help: &str) -> Result<Self, Error> {
        sys::register_metric(name, MetricKind::Gauge, help)
            .map(|id| Self { id })
            .map_err(|e| Error::new(format!("metric `{name}`: {e}")))
    }

    /// Sets it to `value`.
    pub fn set(&self, value: i64) {
        PENDING.with_borrow_mut(|p| {
            p.insert(self.id, (MetricKind::Gauge, value));
        });
    }
}

/// Sends what changed since the last call to the host.
pub(crate) fn flush() {
    let updates: Vec<(u32, i64)> = PENDING.with_borrow_mut(|p| {
        std::mem::take(p)
            .into_iter()
            .filter(|(_, (kind, v))| *kind == MetricKind::Gauge || *v != 0)
            .map(|(id, (_, v))| (id, v))
            .collect()
    });
    if !updates.is_empty() {
        sys::update_metrics(&updates);
    }
}
