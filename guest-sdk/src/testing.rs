//! Run an operator natively, against an in-memory stand-in for the host.
//!
//! The harness goes through the same batch encoding and the same per-record loop
//! as the WebAssembly build, so a passing unit test exercises the real code path
//! short of the component boundary.

use weir_codec::{BatchReader, BatchWriter};

use crate::runtime::{Failure, Instance};
use crate::{Error, Level, Operator, SavedState, sys};

/// An owned record, for feeding a [`Harness`] and reading what it emitted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OwnedRecord {
    /// Key bytes.
    pub key: Vec<u8>,
    /// Value bytes.
    pub value: Vec<u8>,
    /// Event timestamp, in ms since the Unix epoch.
    pub timestamp: Option<i64>,
}

impl OwnedRecord {
    /// A record without a timestamp.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            timestamp: None,
        }
    }
}

/// One operator instance with an in-memory host.
pub struct Harness<T> {
    instance: Instance<T>,
}

impl<T: Operator> Harness<T> {
    /// Builds the operator as instance 0 of an operator with id `test`, from a
    /// config given as JSON text.
    pub fn new(config_json: &str) -> Result<Self, Error> {
        Self::with_id("test", 0, config_json)
    }

    /// Builds the operator with a chosen id and instance index.
    pub fn with_id(operator_id: &str, instance: u32, config_json: &str) -> Result<Self, Error> {
        sys::reset_state();
        let instance = Instance::init(operator_id.to_owned(), instance, config_json);
        crate::metrics::flush();
        Ok(Self {
            instance: instance.map_err(describe)?,
        })
    }

    /// Processes one batch and returns everything the operator emitted for it.
    pub fn process(&mut self, records: &[OwnedRecord]) -> Result<Vec<OwnedRecord>, Error> {
        let mut batch = BatchWriter::new();
        for r in records {
            batch.push(&r.key, &r.value, r.timestamp);
        }
        sys::take_emitted();
        let result = self.instance.process(&batch.finish());
        crate::metrics::flush();
        let emitted = sys::take_emitted();
        result.map_err(describe)?;
        let mut out = Vec::new();
        for bytes in &emitted {
            for record in BatchReader::new(bytes)?.iter() {
                let r = record?;
                out.push(OwnedRecord {
                    key: r.key.to_vec(),
                    value: r.value.to_vec(),
                    timestamp: r.timestamp,
                });
            }
        }
        Ok(out)
    }

    /// Processes one batch of values (with empty keys) and returns the emitted
    /// values as text.
    pub fn process_values(&mut self, values: &[&str]) -> Result<Vec<String>, Error> {
        let records: Vec<(&str, &str)> = values.iter().map(|v| ("", *v)).collect();
        self.process_keyed(&records)
    }

    /// Processes one batch of `(key, value)` text records and returns the emitted
    /// values as text.
    pub fn process_keyed(&mut self, records: &[(&str, &str)]) -> Result<Vec<String>, Error> {
        let input: Vec<OwnedRecord> = records
            .iter()
            .map(|(k, v)| OwnedRecord::new(*k, *v))
            .collect();
        Ok(self
            .process(&input)?
            .into_iter()
            .map(|r| String::from_utf8_lossy(&r.value).into_owned())
            .collect())
    }

    /// What the operator saves at a checkpoint.
    pub fn snapshot(&mut self) -> Result<Option<SavedState>, Error> {
        let saved = self.instance.snapshot();
        crate::metrics::flush();
        saved.map_err(describe)
    }

    /// Gives the operator saved state back, as the host does when an instance
    /// starts from a checkpoint; all parts must share a version.
    pub fn restore(&mut self, saved: Vec<SavedState>) -> Result<(), Error> {
        let version = saved.first().map_or(0, |s| s.version);
        if saved.iter().any(|s| s.version != version) {
            return Err(Error::new("restored parts have different versions"));
        }
        let parts = saved.into_iter().map(|s| s.bytes).collect();
        let restored = self.instance.restore(version, parts);
        crate::metrics::flush();
        restored.map_err(describe)
    }

    /// The value of a metric the operator declared (a counter's total, a
    /// gauge's last value), as the daemon would export it.
    pub fn metric(&self, name: &str) -> Option<i64> {
        sys::metric(name)
    }

    /// Moves the host's processing time on: keyed state written with a TTL
    /// expires once this clock has passed its write time plus the TTL, as it
    /// does in the daemon, where the clock is the wall clock. It starts at 0.
    pub fn advance_processing_time(&mut self, by: std::time::Duration) {
        sys::advance_processing_time(u64::try_from(by.as_millis()).unwrap_or(u64::MAX));
    }

    /// The host's processing time, in ms since the harness was made.
    pub fn processing_time(&self) -> u64 {
        sys::processing_time()
    }

    /// Log lines the operator wrote since the last call.
    pub fn take_logs(&mut self) -> Vec<(Level, String)> {
        sys::take_logs()
    }
}

fn describe(failure: Failure) -> Error {
    match failure.record_index {
        Some(index) => Error::new(format!("record {index}: {}", failure.message)),
        None => Error::new(failure.message),
    }
}
