use weir_codec::BatchWriter;

use crate::time::Timers;
use crate::{Config, Counter, Error, Gauge, Record, StateBuilder};

/// What an operator sees when it is built.
#[derive(Debug)]
pub struct InitContext {
    pub(crate) operator_id: String,
    pub(crate) instance: u32,
    pub(crate) config: Config,
    pub(crate) inputs: Vec<String>,
    pub(crate) outputs: &'static [&'static str],
}

/// A side output the operator declares ([`crate::Operator::OUTPUTS`]),
/// obtained from [`InitContext::side_output`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SideOutput(pub(crate) u32);

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

    /// The operator's inputs as the topology names them (`clicks`,
    /// `sessions.late`), in order: [`Context::input`] is an index into it.
    pub fn inputs(&self) -> &[String] {
        &self.inputs
    }

    /// The index of input `name` (as [`InitContext::inputs`] has it), or an
    /// error naming the inputs there are: how a join tells its sides apart.
    pub fn input(&self, name: &str) -> Result<u32, Error> {
        self.inputs
            .iter()
            .position(|i| i == name)
            .map(|i| i as u32)
            .ok_or_else(|| {
                Error::new(format!(
                    "the operator has no input `{name}` (its inputs: {})",
                    self.inputs.join(", ")
                ))
            })
    }

    /// The side output named `name`, which [`crate::Operator::OUTPUTS`]
    /// must list; the topology reads it as `<operator-id>.<name>`.
    pub fn side_output(&self, name: &str) -> Result<SideOutput, Error> {
        self.outputs
            .iter()
            .position(|o| *o == name)
            .map(|i| SideOutput(i as u32 + 1))
            .ok_or_else(|| {
                Error::new(format!(
                    "side output `{name}` is not in the operator's OUTPUTS ({:?})",
                    self.outputs
                ))
            })
    }

    /// The timer service (Flink's): event-time and processing-time timers
    /// for the current key, which fire through [`crate::Operator::on_timer`].
    /// Timers are keyed state: the operator's input must be partitioned by key.
    pub fn timers(&self) -> Timers {
        Timers::declare()
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

/// Where an operator emits its output while it processes a record or a
/// timer, and what time it is.
#[derive(Debug)]
pub struct Context {
    pub(crate) out: BatchWriter,
    /// One per side output, in declaration order.
    pub(crate) side: Vec<BatchWriter>,
    pub(crate) watermark: Option<i64>,
    pub(crate) processing_time: i64,
    pub(crate) input: u32,
    pub(crate) timestamp: Option<i64>,
}

impl Context {
    pub(crate) fn new(side_outputs: usize) -> Self {
        Self {
            out: BatchWriter::with_capacity(64 * 1024),
            side: (0..side_outputs).map(|_| BatchWriter::new()).collect(),
            watermark: None,
            processing_time: 0,
            input: 0,
            timestamp: None,
        }
    }

    /// The current record's event timestamp (ms since the Unix epoch); in
    /// [`crate::Operator::on_timer`], the timer's time.
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    /// The operator instance's watermark: event time has reached it on
    /// every input. `None` before the first watermark, and when no source
    /// assigns event time. A record at or behind it is late.
    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// Processing time: the host's clock when this batch began (ms since
    /// the Unix epoch).
    pub fn processing_time(&self) -> i64 {
        self.processing_time
    }

    /// Which input the current record came from: an index into
    /// [`InitContext::inputs`] (0 in `on_timer`).
    pub fn input(&self) -> u32 {
        self.input
    }

    /// Emits a record to a side output, with an event timestamp if given.
    #[inline]
    pub fn emit_to(
        &mut self,
        output: SideOutput,
        key: &[u8],
        value: &[u8],
        timestamp: Option<i64>,
    ) {
        if let Some(out) = self.side.get_mut(output.0 as usize - 1) {
            out.push(key, value, timestamp);
        }
    }

    /// Emits a record unchanged to a side output.
    #[inline]
    pub fn forward_to(&mut self, output: SideOutput, record: &Record<'_>) {
        if let Some(out) = self.side.get_mut(output.0 as usize - 1) {
            out.push_record(record);
        }
    }

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
