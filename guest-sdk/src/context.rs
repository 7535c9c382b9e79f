use weir_codec::BatchWriter;

use crate::{Config, Counter, Error, Gauge, Record, StateBuilder};

/// What an operator sees when it is built.
#[derive(Debug)]
pub struct InitContext {
    pub(crate) operator_id: String,
    pub(crate) instance: u32,
    pub(crate) config: Config,
}

impl InitContext {
    /// The operator's id in the topology file.
    pub fn operator_id(&self) -> &str {
        &self.operator_id
    }

    /// This parallel instance's index, from 0.
    pub fn instance(&self) -> u32 {
        self.instance
    }

    /// The operator's `config` table.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Declares a keyed state named `name`; finish with `.value()`, `.list()`,
    /// `.map()`, `.reducing(..)` or `.aggregating(..)`. Names are stable ids:
    /// the same name finds the same state after a restart or a new module version.
    pub fn state(&self, name: &str) -> StateBuilder {
        StateBuilder::new(name)
    }

    /// Declares a counter, exported as `weir_plugin_<name>_total` with this
    /// operator's id and instance as labels; `name` is 1 to 64 of `a-z`,
    /// `0-9` and `_`, starting with a letter (see [`crate::metrics`]).
    pub fn counter(&self, name: &str, help: &str) -> Result<Counter, Error> {
        Counter::register(name, help)
    }

    /// Declares a gauge, exported as `weir_plugin_<name>`.
    pub fn gauge(&self, name: &str, help: &str) -> Result<Gauge, Error> {
        Gauge::register(name, help)
    }
}

/// Where an operator emits its output while it processes a record.
#[derive(Debug)]
pub struct Context {
    pub(crate) out: BatchWriter,
}

impl Context {
    /// Emits a record without an event timestamp.
    #[inline]
    pub fn emit(&mut self, key: &[u8], value: &[u8]) {
        self.out.push(key, value, None);
    }

    /// Emits a record with an event timestamp in milliseconds since the Unix epoch.
    #[inline]
    pub fn emit_at(&mut self, key: &[u8], value: &[u8], timestamp: i64) {
        self.out.push(key, value, Some(timestamp));
    }

    /// Emits a record unchanged.
    #[inline]
    pub fn forward(&mut self, record: &Record<'_>) {
        self.out.push_record(record);
    }
}
