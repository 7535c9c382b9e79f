//! One sandboxed WebAssembly operator instance: memory limit, call deadline,
//! host functions, and turning traps into errors a person can act on.

use std::time::Duration;

use bytesize::ByteSize;
use thiserror::Error;
use wasmtime::{ResourceLimiter, Store, Trap};

use super::bindings::Plugin;
use super::bindings::weir::operator::{host, keyed_state, metrics, types};
use super::engine::EPOCH_TICK;
use super::plugin_metrics::PluginMetrics;
use super::{Clock, Emitted, InstanceSnapshot, LoadedModule, Processor};
use crate::batch::Batch;
use crate::graph::{ComponentId, Limits};
use crate::state::CacheCounts;
use crate::state::ops::InstanceState;
use crate::state::ops::TimerCounts;
use crate::state::{CaptureScope, StateKind};
use weir_codec::BatchWriter;
use weir_codec::state::TimeDomain;

/// Most bytes one `process` call may emit; a guest stuck emitting in a loop is
/// stopped here rather than by the host running out of memory first.
const MAX_EMITTED_BYTES_PER_CALL: usize = 256 << 20;
/// About how many bytes of saved values one `migrate-state` call converts.
const MIGRATION_CHUNK_BYTES: usize = 1 << 20;
/// Most timers one `on-timer` call fires. Firing takes each timer's stored
/// entry, and the plugin then reads and clears that key's state: in calls of
/// a few hundred those entries are still in the CPU cache when they are
/// touched again. With 4,096 per call the windows benchmark at a million
/// keys ran 10% slower (9.6 s against 8.7 s; 128 was no faster than 256).
const TIMERS_PER_CALL: usize = 256;
/// Longest guest log message kept; the rest is cut.
const MAX_LOG_MESSAGE: usize = 4096;
/// Most table elements an instance may grow to.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Why a call into an operator failed.
#[derive(Debug, Error)]
pub enum CallError {
    /// The operator returned an error.
    #[error("{message}")]
    Plugin {
        /// Index within the batch of the record it failed on, if it said.
        record_index: Option<u32>,
        /// Its message.
        message: String,
    },
    /// The call ran past its deadline.
    #[error("exceeded its call deadline of {}", humantime::format_duration(*.timeout))]
    Deadline {
        /// The deadline.
        timeout: Duration,
    },
    /// The guest tried to grow its memory past the limit.
    #[error(
        "exceeded its memory limit of {limit} (it asked for {requested}): raise the operator's \
         memory_limit, or send it smaller batches or records (the source's max_record_size)"
    )]
    Memory {
        /// The limit.
        limit: ByteSize,
        /// What it asked for.
        requested: ByteSize,
    },
    /// The guest emitted something that is not a valid batch, or too much.
    #[error("emitted bad output: {0}")]
    BadOutput(String),
    /// The guest trapped (a panic in Rust, an out-of-bounds access, ...).
    #[error("trapped: {trap}{}", .logged.as_ref().map(|l| format!(" (the operator logged: {l})")).unwrap_or_default())]
    Trap {
        /// What wasmtime said.
        trap: String,
        /// The operator's last error-level log line, which for a Rust panic
        /// holds the panic message.
        logged: Option<String>,
    },
    /// A keyed-state operation failed (a bad request from the plugin, or the
    /// storage itself).
    #[error("keyed state failed: {0}")]
    State(String),
    /// An earlier trap left the instance unusable.
    #[error("cannot be called again after it trapped")]
    Poisoned,
}

impl From<crate::state::StateError> for CallError {
    fn from(error: crate::state::StateError) -> Self {
        Self::State(error.to_string())
    }
}

impl CallError {
    /// A short name for the kind of failure, as the metrics label it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Plugin { .. } => "error",
            Self::Deadline { .. } => "deadline",
            Self::Memory { .. } => "memory",
            Self::BadOutput(_) => "bad_output",
            Self::Trap { .. } | Self::Poisoned => "trap",
            Self::State(_) => "state",
        }
    }
}

/// The host side of one instance: what host functions see.
pub struct HostState {
    limiter: MemoryLimiter,
    emitted: Emitted,
    /// Side outputs the module declares: outputs 1 to this are valid.
    side_outputs: u32,
    emitted_bytes: usize,
    /// Why a host function trapped the guest, if one did.
    fault: Option<CallError>,
    state: InstanceState,
    /// Processing time of the current call, ms since the Unix epoch.
    now: u64,
    last_error_log: Option<String>,
    operator: ComponentId,
    instance: u32,
    metrics: PluginMetrics,
    log_budget: LogBudget,
}

/// Log lines an instance may write: [`LOG_BURST`] at once, then
/// [`LOG_RATE`] a second; the rest are dropped and counted, so a plugin
/// cannot flood the daemon's log (or the journal).
#[derive(Debug)]
struct LogBudget {
    tokens: f64,
    refilled: std::time::Instant,
    dropped: u64,
}

/// Lines a second an instance may log, on average.
const LOG_RATE: f64 = 100.0;
/// Lines it may log at once.
const LOG_BURST: f64 = 1000.0;

impl LogBudget {
    fn new() -> Self {
        Self {
            tokens: LOG_BURST,
            refilled: std::time::Instant::now(),
            dropped: 0,
        }
    }

    /// Whether one more line may go out now.
    fn take(&mut self) -> bool {
        let now = std::time::Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * LOG_RATE;
        self.tokens = (self.tokens + earned).min(LOG_BURST);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.dropped += 1;
            false
        }
    }
}

struct MemoryLimiter {
    limit: usize,
    denied: Option<usize>,
    /// Linear memory granted so far.
    granted: usize,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.denied = Some(desired);
            // An error (not `Ok(false)`) traps, instead of letting the guest's
            // allocator see a failed grow and abort with a less useful message.
            return Err(wasmtime::format_err!(
                "memory limit of {} bytes exceeded",
                self.limit
            ));
        }
        self.granted = self.granted.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn emit(&mut self, output: u32, batch: Vec<u8>) -> wasmtime::Result<()> {
        if output > self.side_outputs {
            let message = format!(
                "emitted to output {output}, and its module declares {} side output(s)",
                self.side_outputs
            );
            self.fault = Some(CallError::BadOutput(message.clone()));
            return Err(wasmtime::format_err!(message));
        }
        self.emitted_bytes += batch.len();
        // What one call emits is held until it returns: no more than the
        // plugin could hold itself.
        let limit = MAX_EMITTED_BYTES_PER_CALL.min(self.limiter.limit);
        if self.emitted_bytes > limit {
            let message = format!(
                "more than {} in one call (the operator's memory_limit): emit less per batch or \
                 raise memory_limit",
                crate::graph::bounds::show_bytes(limit as u64)
            );
            self.fault = Some(CallError::BadOutput(message.clone()));
            return Err(wasmtime::format_err!(message));
        }
        match Batch::from_untrusted(batch) {
            Ok(batch) if batch.is_empty() => Ok(()),
            Ok(batch) => {
                self.emitted.push((output, batch));
                Ok(())
            }
            Err(e) => {
                let message = format!("malformed batch: {e}");
                self.fault = Some(CallError::BadOutput(message.clone()));
                Err(wasmtime::format_err!(message))
            }
        }
    }

    fn log(&mut self, level: types::Level, mut message: String) -> wasmtime::Result<()> {
        if message.len() > MAX_LOG_MESSAGE {
            let mut cut = MAX_LOG_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("...");
        }
        if level == types::Level::Error {
            // The last error line goes into the trap's report, logged or not.
            self.last_error_log = Some(message.clone());
        }
        if !self.log_budget.take() {
            return Ok(());
        }
        self.report_dropped_logs();
        let (operator, instance) = (&*self.operator, self.instance);
        match level {
            types::Level::Trace => tracing::trace!(operator, instance, "{message}"),
            types::Level::Debug => tracing::debug!(operator, instance, "{message}"),
            types::Level::Info => tracing::info!(operator, instance, "{message}"),
            types::Level::Warn => tracing::warn!(operator, instance, "{message}"),
            types::Level::Error => tracing::error!(operator, instance, "{message}"),
        }
        Ok(())
    }
}

impl metrics::Host for HostState {
    fn register_metric(
        &mut self,
        name: String,
        kind: metrics::MetricKind,
        help: String,
    ) -> wasmtime::Result<Result<u32, String>> {
        let kind = match kind {
            metrics::MetricKind::Counter => crate::metrics::PluginMetricKind::Counter,
            metrics::MetricKind::Gauge => crate::metrics::PluginMetricKind::Gauge,
        };
        Ok(self
            .metrics
            .register(&self.operator, self.instance, &name, kind, &help))
    }

    fn update(&mut self, updates: Vec<(u32, i64)>) -> wasmtime::Result<()> {
        self.metrics.update(&updates).map_err(|message| {
            self.fault = Some(CallError::BadOutput(format!("metrics: {message}")));
            wasmtime::format_err!(message)
        })
    }
}

impl keyed_state::Host for HostState {
    fn register_state(
        &mut self,
        name: String,
        kind: keyed_state::StateKind,
        options: keyed_state::StateOptions,
    ) -> wasmtime::Result<Result<u32, String>> {
        let kind = match kind {
            keyed_state::StateKind::Value => StateKind::Value,
            keyed_state::StateKind::List => StateKind::List,
            keyed_state::StateKind::Map => StateKind::Map,
        };
        Ok(self
            .state
            .register(&name, kind, options.ttl_ms, options.version))
    }

    fn read(&mut self, ops: Vec<u8>) -> wasmtime::Result<Vec<u8>> {
        let now = self.now;
        let max = self.limiter.limit;
        self.state
            .read(&ops, now, max)
            .map_err(|e| self.state_fault(e))
    }

    fn write(&mut self, ops: Vec<u8>) -> wasmtime::Result<()> {
        let now = self.now;
        self.state.write(&ops, now).map_err(|e| self.state_fault(e))
    }
}

impl HostState {
    /// Says how many log lines were dropped since it last said so.
    fn report_dropped_logs(&mut self) {
        let dropped = std::mem::take(&mut self.log_budget.dropped);
        if dropped > 0 {
            tracing::warn!(
                operator = &*self.operator,
                instance = self.instance,
                dropped,
                "the plugin logged more than {LOG_RATE} lines a second; {dropped} lines were dropped"
            );
        }
    }

    fn state_fault(&mut self, error: crate::state::StateError) -> wasmtime::Error {
        let message = error.to_string();
        self.fault = Some(CallError::State(message.clone()));
        wasmtime::format_err!(message)
    }
}

fn now_ms() -> u64 {
    u64::try_from(super::now_ms()).unwrap_or(0)
}

impl HostState {
    /// The host side of an instance that runs nothing but `describe`.
    fn bare(operator: ComponentId, limit: usize, side_outputs: u32) -> Self {
        Self {
            limiter: MemoryLimiter {
                limit,
                denied: None,
                granted: 0,
            },
            emitted: Vec::new(),
            side_outputs,
            emitted_bytes: 0,
            fault: None,
            state: InstanceState::placeholder(),
            now: now_ms(),
            last_error_log: None,
            operator,
            instance: 0,
            metrics: PluginMetrics::new(None),
            log_budget: LogBudget::new(),
        }
    }
}

/// The side outputs a module declares (its `describe`), checked: a name is
/// 1 to 64 of `[a-z0-9_]`, not `errors` (the host's), and not repeated.
pub(super) fn describe(
    pre: &super::bindings::PluginPre<HostState>,
    limits: Limits,
) -> Result<Vec<String>, String> {
    let limit = usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX);
    let mut store = Store::new(pre.engine(), HostState::bare("describe".into(), limit, 0));
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(
        limits
            .call_timeout
            .as_nanos()
            .div_ceil(EPOCH_TICK.as_nanos()) as u64
            + 1,
    );
    let plugin = pre
        .instantiate(&mut store)
        .map_err(|e| format!("cannot be instantiated: {}", classify(&store, e, limits)))?;
    let descriptor = plugin
        .weir_operator_operator()
        .call_describe(&mut store)
        .map_err(|e| format!("`describe` failed: {}", classify(&store, e, limits)))?;
    let mut outputs: Vec<String> = Vec::new();
    for name in descriptor.outputs {
        let valid = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(format!(
                "`describe` declares side output `{name}`: a name is 1 to 64 of [a-z0-9_]"
            ));
        }
        if name == super::ERRORS_OUTPUT {
            return Err(format!(
                "`describe` declares side output `{name}`, which is the host's own (dead letters)"
            ));
        }
        if outputs.contains(&name) {
            return Err(format!("`describe` declares side output `{name}` twice"));
        }
        outputs.push(name);
    }
    Ok(outputs)
}

/// One sandboxed instance of a WebAssembly operator.
pub struct WasmOperator {
    store: Store<HostState>,
    plugin: Plugin,
    deadline_ticks: u64,
    limits: Limits,
    poisoned: bool,
}

impl WasmOperator {
    /// Instantiates `module` within `limits` and calls its `init` with its
    /// `inputs` (the topology's names for them); the metrics it declares go
    /// to `metrics`. `keyed_state` holds what a checkpoint restored.
    #[allow(clippy::too_many_arguments, reason = "one call site, every part named")]
    pub fn instantiate(
        module: &LoadedModule,
        operator: ComponentId,
        instance: u32,
        config_json: &str,
        inputs: &[String],
        limits: Limits,
        keyed_state: InstanceState,
        metrics: PluginMetrics,
    ) -> Result<Self, CallError> {
        let side_outputs = u32::try_from(module.outputs.len()).unwrap_or(u32::MAX);
        let mut state = HostState::bare(
            operator.clone(),
            usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
            side_outputs,
        );
        state.state = keyed_state;
        state.instance = instance;
        state.metrics = metrics;
        state
            .state
            .load_timers()
            .map_err(|e| CallError::State(e.to_string()))?;
        let mut store = Store::new(module.pre.engine(), state);
        store.limiter(|s| &mut s.limiter);
        // What one call may pass to the host (wasmtime's "hostcall fuel",
        // 128 MiB by default) is what the plugin could hold: its memory limit,
        // so a record that fits the plugin also fits the way out.
        store.set_hostcall_fuel(usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX));
        let deadline_ticks = limits
            .call_timeout
            .as_nanos()
            .div_ceil(EPOCH_TICK.as_nanos()) as u64
            + 1;
        store.set_epoch_deadline(deadline_ticks);
        let plugin = match module.pre.instantiate(&mut store) {
            Ok(plugin) => plugin,
            Err(e) => return Err(classify(&store, e, limits)),
        };
        let mut op = Self {
            store,
            plugin,
            deadline_ticks,
            limits,
            poisoned: false,
        };
        let result = op.plugin.weir_operator_operator().call_init(
            &mut op.store,
            &operator,
            instance,
            config_json,
            inputs,
        );
        let emitted = op.finish_call(result)?;
        if !emitted.is_empty() {
            // Nothing reads an operator's output before its first batch.
            return Err(CallError::BadOutput(
                "`init` emitted records; emit from `process` only".into(),
            ));
        }
        op.migrate_states()?;
        Ok(op)
    }

    /// Passes the saved values of every state `init` declared at a new
    /// version through the plugin's `migrate-state`, before any record.
    fn migrate_states(&mut self) -> Result<(), CallError> {
        let migrations = self.store.data_mut().state.take_migrations();
        for migration in migrations {
            let name = self
                .store
                .data()
                .state
                .registry()
                .specs()
                .into_iter()
                .find(|(_, spec)| spec.id == migration.spec.id)
                .map_or_else(|| format!("#{}", migration.spec.id), |(name, _)| name);
            let started = std::time::Instant::now();
            // A chunk is copied into the guest and its result out: a quarter
            // of the memory limit leaves room for both and the plugin's own.
            let chunk = MIGRATION_CHUNK_BYTES.min(self.store.data().limiter.limit / 4);
            // The host's state sits in the store the guest runs in: take it
            // out while converting, put it back whatever happens.
            let mut state = std::mem::replace(
                &mut self.store.data_mut().state,
                InstanceState::placeholder(),
            );
            let result = state.migrate(migration, chunk, |values| {
                self.call_migrate(migration.spec.id, migration.from, values)
            });
            self.store.data_mut().state = state;
            let converted = result.map_err(|error| match error {
                CallError::Plugin { message, .. } => CallError::Plugin {
                    record_index: None,
                    message: format!(
                        "cannot migrate state `{name}` from version {} to {}: {message}",
                        migration.from, migration.spec.version
                    ),
                },
                other => other,
            })?;
            tracing::info!(
                operator = &*self.store.data().operator,
                instance = self.store.data().instance,
                state = %name,
                from = migration.from,
                to = migration.spec.version,
                values = converted,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "migrated keyed state to the version the module declares"
            );
        }
        Ok(())
    }

    fn call_migrate(&mut self, state: u32, from: u32, values: &[u8]) -> Result<Vec<u8>, CallError> {
        self.enter()?;
        let result = self.plugin.weir_operator_operator().call_migrate_state(
            &mut self.store,
            state,
            from,
            values,
        );
        match result {
            Ok(Ok(converted)) => {
                if !self.finish_call(Ok(Ok(())))?.is_empty() {
                    return Err(CallError::BadOutput(
                        "`migrate-state` emitted records; emit from `process` only".into(),
                    ));
                }
                Ok(converted)
            }
            Ok(Err(e)) => Err(self
                .finish_call(Ok(Err(e)))
                .err()
                .unwrap_or(CallError::Poisoned)),
            Err(e) => Err(self
                .finish_call(Err(e))
                .err()
                .unwrap_or(CallError::Poisoned)),
        }
    }

    fn finish_call(
        &mut self,
        result: wasmtime::Result<Result<(), types::PluginError>>,
    ) -> Result<Emitted, CallError> {
        let state = self.store.data_mut();
        let emitted = std::mem::take(&mut state.emitted);
        state.emitted_bytes = 0;
        state.report_dropped_logs();
        match result {
            Ok(Ok(())) => Ok(emitted),
            Ok(Err(e)) => Err(CallError::Plugin {
                record_index: e.record_index,
                message: e.message,
            }),
            Err(e) => {
                self.poisoned = true;
                Err(classify(&self.store, e, self.limits))
            }
        }
    }
}

impl WasmOperator {
    /// Gives the plugin its saved operator state (after `init`, before the
    /// first batch): the parts of the checkpointed instances assigned to this one.
    pub fn restore(&mut self, version: u32, parts: &[Vec<u8>]) -> Result<(), CallError> {
        self.enter()?;
        let result =
            self.plugin
                .weir_operator_operator()
                .call_restore(&mut self.store, version, parts);
        self.finish_call(result).map(drop)
    }

    fn enter(&mut self) -> Result<(), CallError> {
        if self.poisoned {
            return Err(CallError::Poisoned);
        }
        self.store.set_epoch_deadline(self.deadline_ticks);
        Ok(())
    }
}

fn wit_clock(clock: Clock) -> types::Clock {
    types::Clock {
        watermark: clock.watermark,
        processing_time: clock.processing_time,
    }
}

impl Processor for WasmOperator {
    fn process(&mut self, input: u32, batch: &Batch, clock: Clock) -> Result<Emitted, CallError> {
        self.enter()?;
        // Processing time for TTL: read once per batch, as Flink's TTL reads
        // it per access but a batch is one access here.
        let now = u64::try_from(clock.processing_time).unwrap_or(0);
        self.store.data_mut().now = now;
        let result = self.plugin.weir_operator_operator().call_process(
            &mut self.store,
            input,
            batch.as_bytes(),
            wit_clock(clock),
        );
        let emitted = self.finish_call(result)?;
        // Now and then, expired entries are dropped, so state that is never
        // read again does not stay for ever.
        let state = &mut self.store.data_mut().state;
        state
            .after_batch(now)
            .map_err(|e| CallError::State(e.to_string()))?;
        Ok(emitted)
    }

    fn fire_timers(
        &mut self,
        domain: TimeDomain,
        time: i64,
        clock: Clock,
    ) -> Result<Emitted, CallError> {
        let mut emitted = Vec::new();
        // A timer may register another that is already due: it fires in
        // the same round, as in Flink.
        loop {
            let fired = self
                .store
                .data_mut()
                .state
                .fire_timers(domain, time, TIMERS_PER_CALL)?;
            if fired.is_empty() {
                return Ok(emitted);
            }
            let mut batch = BatchWriter::with_capacity(fired.len() * 32);
            for (at, key) in &fired {
                batch.push(key, &[domain.code()], Some(*at));
            }
            self.enter()?;
            let now = u64::try_from(clock.processing_time).unwrap_or(0);
            self.store.data_mut().now = now;
            let result = self.plugin.weir_operator_operator().call_on_timer(
                &mut self.store,
                &batch.finish(),
                wit_clock(clock),
            );
            emitted.extend(self.finish_call(result)?);
        }
    }

    fn next_timer(&self, domain: TimeDomain) -> Option<i64> {
        self.store.data().state.next_timer(domain)
    }

    fn timer_counts(&self) -> TimerCounts {
        self.store.data().state.timer_counts()
    }

    fn cache_counts(&self) -> CacheCounts {
        self.store.data().state.cache_counts()
    }

    fn memory_bytes(&self) -> u64 {
        self.store.data().limiter.granted as u64
    }

    fn snapshot(&mut self, scope: CaptureScope) -> Result<InstanceSnapshot, CallError> {
        self.enter()?;
        let result = self
            .plugin
            .weir_operator_operator()
            .call_snapshot(&mut self.store);
        let saved = match result {
            Ok(Ok(saved)) => saved,
            other => {
                // Same classification as any other call; a snapshot emits nothing.
                self.finish_call(other.map(|r| r.map(drop)))?;
                return Err(CallError::Plugin {
                    record_index: None,
                    message: "snapshot failed".into(),
                });
            }
        };
        let state = &mut self.store.data_mut().state;
        let states = state.registry().specs();
        let keyed = if states.is_empty() {
            None
        } else {
            Some(
                state
                    .capture(scope)
                    .map_err(|e| CallError::State(e.to_string()))?,
            )
        };
        let operator_state =
            (saved.version != 0 || !saved.bytes.is_empty()).then_some((saved.version, saved.bytes));
        Ok(InstanceSnapshot {
            keyed,
            states,
            operator_state,
            records_in: 0,
        })
    }
}

/// Turns a wasmtime error into what the user should hear.
fn classify(store: &Store<HostState>, error: wasmtime::Error, limits: Limits) -> CallError {
    let state = store.data();
    if let Some(requested) = state.limiter.denied {
        return CallError::Memory {
            limit: ByteSize(limits.memory_bytes),
            requested: ByteSize(requested as u64),
        };
    }
    match &state.fault {
        Some(CallError::State(m)) => return CallError::State(m.clone()),
        Some(CallError::BadOutput(m)) => return CallError::BadOutput(m.clone()),
        _ => {}
    }
    if format!("{error:#}").contains("fuel allocated for hostcalls") {
        return CallError::BadOutput(format!(
            "more than {} passed to the host in one call (the operator's memory_limit): emit \
             less per batch or raise memory_limit",
            crate::graph::bounds::show_bytes(limits.memory_bytes)
        ));
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallError::Deadline {
            timeout: limits.call_timeout,
        },
        Some(trap) => CallError::Trap {
            trap: trap.to_string(),
            logged: state.last_error_log.clone(),
        },
        None => CallError::Trap {
            trap: format!("{error:#}"),
            logged: state.last_error_log.clone(),
        },
    }
}
