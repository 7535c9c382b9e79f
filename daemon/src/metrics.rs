//! Prometheus metrics, all prefixed `weir_`, in base units, `_total` on
//! counters. Per-task series carry `operator` (the component id, sources and
//! sinks included) and `instance`; nothing is labelled per key.
//!
//! One [`Metrics`] lives as long as the daemon, so counters keep counting
//! across restarts and reloads; a pipeline takes [`TaskMetrics`] handles for
//! its tasks, and a removed component's series are dropped on reload.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus::core::{Collector as _, MetricVec, MetricVecBuilder};
use prometheus::{
    Encoder as _, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::checkpoint::stats::Stats;

/// Every metric the daemon exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    records_in: IntCounterVec,
    records_out: IntCounterVec,
    process_seconds: HistogramVec,
    plugin_errors: IntCounterVec,
    guest_memory: IntGaugeVec,
    channel_depth: IntGaugeVec,
    watermark: IntGaugeVec,
    watermark_lag: prometheus::GaugeVec,
    late_records: IntCounterVec,
    dead_letters: IntCounterVec,
    timers_registered: IntCounterVec,
    timers_fired: IntCounterVec,
    timers_pending: IntGaugeVec,
    state_cache_hits: IntCounterVec,
    state_cache_misses: IntCounterVec,
    source_lag: IntGaugeVec,
    broker_connected: IntGaugeVec,
    broker_trouble: Arc<std::sync::Mutex<std::collections::BTreeMap<String, String>>>,
    state_size: IntGaugeVec,
    checkpoints_completed: IntCounter,
    checkpoints_failed: IntCounter,
    checkpoint_duration: Histogram,
    checkpoint_alignment: Histogram,
    checkpoint_pause: Histogram,
    checkpoint_size: IntGauge,
    checkpoint_last_id: IntGauge,
    checkpoint_last_time: Gauge,
    reloads: IntCounterVec,
    reload_successful: IntGauge,
    reload_success_time: Gauge,
    reload_pause: Histogram,
    restarts: IntCounter,
    /// Checkpoints failed in a row, and why the last did.
    checkpoint_trouble: Arc<std::sync::Mutex<(u32, String)>>,
    /// Families plugins declared, by name.
    plugin_families: Arc<std::sync::Mutex<HashMap<String, PluginFamily>>>,
}

/// A metric family a plugin declared: `weir_plugin_<name>[_total]{operator,
/// instance}`, shared by every operator that declares the same name, kind
/// and help.
#[derive(Debug, Clone)]
enum PluginFamily {
    Counter(IntCounterVec, String),
    Gauge(IntGaugeVec, String),
}

/// The kind of a plugin's metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginMetricKind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// One series of a plugin's metric, for one operator instance.
#[derive(Debug, Clone)]
pub enum PluginSeries {
    /// A counter.
    Counter(IntCounter),
    /// A gauge.
    Gauge(IntGauge),
}

/// Checkpoints failed in a row after which the daemon reports that it cannot
/// checkpoint (in `/ready` and systemd's STATUS), rather than a passing
/// hiccup.
pub const FAILING_CHECKPOINTS: u32 = 3;

/// What kind of task metrics are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    /// A source instance.
    Source,
    /// An operator instance.
    Operator,
    /// A sink instance.
    Sink,
}

/// The metrics of one task instance, cheap to update per batch.
#[derive(Debug, Clone)]
pub struct TaskMetrics {
    /// Records received.
    pub records_in: IntCounter,
    /// Records sent on.
    pub records_out: IntCounter,
    /// Seconds per call into the plugin (one batch).
    pub process_seconds: Histogram,
    /// Batches waiting on its input channels.
    pub channel_depth: IntGauge,
    /// Linear memory of its plugin instance.
    pub guest_memory: IntGauge,
    errors: IntCounterVec,
    /// `weir_watermark_milliseconds`, exported from the first watermark on.
    watermark: IntGaugeVec,
    watermark_series: std::sync::OnceLock<IntGauge>,
    /// Late records and timers, exported once the task has any.
    late_records: Lazy<IntCounterVec, IntCounter>,
    dead_letters: Lazy<IntCounterVec, IntCounter>,
    timers_registered: Lazy<IntCounterVec, IntCounter>,
    timers_fired: Lazy<IntCounterVec, IntCounter>,
    timers_pending: Lazy<IntGaugeVec, IntGauge>,
    /// State cache reads, exported once the task's backend has a cache.
    state_cache_hits: Lazy<IntCounterVec, IntCounter>,
    state_cache_misses: Lazy<IntCounterVec, IntCounter>,
    labels: [String; 2],
}

/// A task's series of a family, created the first time it is used, so a
/// task that never has a late record or a timer exports none.
#[derive(Debug, Clone)]
struct Lazy<F, S> {
    family: F,
    series: std::sync::OnceLock<S>,
}

impl<F, S> Lazy<F, S> {
    fn new(family: &F) -> Self
    where
        F: Clone,
    {
        Self {
            family: family.clone(),
            series: std::sync::OnceLock::new(),
        }
    }
}

impl<B: MetricVecBuilder> Lazy<MetricVec<B>, B::M> {
    fn get(&self, labels: &[String; 2]) -> &B::M {
        self.series.get_or_init(|| {
            self.family
                .with_label_values(&[labels[0].as_str(), labels[1].as_str()])
        })
    }
}

impl TaskMetrics {
    /// Records the task's watermark. A task that has only ever seen the
    /// end-of-input one (its sources have no event time) exports none.
    pub fn watermark(&self, ms: i64) {
        if ms == crate::watermark::END_OF_TIME && self.watermark_series.get().is_none() {
            return;
        }
        self.watermark_series
            .get_or_init(|| {
                self.watermark
                    .with_label_values(&[self.labels[0].as_str(), self.labels[1].as_str()])
            })
            .set(ms);
    }

    /// Counts a record sent to the dead letters.
    pub fn dead_letter(&self) {
        self.dead_letters.get(&self.labels).inc();
    }

    /// Counts records that arrived at or behind the task's watermark.
    pub fn late_records(&self, count: u64) {
        if count > 0 {
            self.late_records.get(&self.labels).inc_by(count);
        }
    }

    /// Counts timers registered and fired since the last call, and sets
    /// how many are pending.
    pub fn timers(&self, registered: u64, fired: u64, pending: u64) {
        if registered == 0 && fired == 0 && self.timers_pending.series.get().is_none() {
            return;
        }
        self.timers_registered.get(&self.labels).inc_by(registered);
        self.timers_fired.get(&self.labels).inc_by(fired);
        self.timers_pending
            .get(&self.labels)
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// Counts keyed state reads the backend's cache answered (`hits`) and
    /// those that went to its storage (`misses`) since the last call.
    pub fn state_cache(&self, hits: u64, misses: u64) {
        if hits == 0 && misses == 0 {
            return;
        }
        self.state_cache_hits.get(&self.labels).inc_by(hits);
        self.state_cache_misses.get(&self.labels).inc_by(misses);
    }

    /// Counts a failed plugin call, by kind (`trap`, `deadline`, `memory`, `error`, …).
    pub fn plugin_error(&self, kind: &str) {
        self.errors
            .with_label_values(&[self.labels[0].as_str(), self.labels[1].as_str(), kind])
            .inc();
    }
}

fn counter(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    IntCounterVec::new(Opts::new(name, help), labels)
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntGaugeVec> {
    IntGaugeVec::new(Opts::new(name, help), labels)
}

/// Buckets from 100 µs to ~100 s.
fn seconds_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0001, 4.0, 11).unwrap_or_default()
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> prometheus::Result<Arc<Self>> {
        let task = ["operator", "instance"];
        let m = Self {
            registry: Registry::new(),
            records_in: counter("weir_records_in_total", "Records a task received.", &task)?,
            records_out: counter("weir_records_out_total", "Records a task sent on.", &task)?,
            process_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "weir_process_duration_seconds",
                    "Time of one call into a plugin (one batch).",
                )
                .buckets(seconds_buckets()),
                &task,
            )?,
            plugin_errors: counter(
                "weir_plugin_errors_total",
                "Failed plugin calls, by kind: trap, deadline, memory, error, bad_output, state.",
                &["operator", "instance", "kind"],
            )?,
            guest_memory: gauge(
                "weir_guest_memory_bytes",
                "Linear memory of a plugin instance.",
                &task,
            )?,
            channel_depth: gauge(
                "weir_input_channel_depth",
                "Batches waiting on a task's input channels (backpressure).",
                &task,
            )?,
            watermark: gauge(
                "weir_watermark_milliseconds",
                "A task's event-time watermark, ms since the Unix epoch (tasks fed by sources with event time).",
                &task,
            )?,
            watermark_lag: prometheus::GaugeVec::new(
                Opts::new(
                    "weir_watermark_lag_seconds",
                    "How far a task's watermark is behind the clock, at the scrape.",
                ),
                &task,
            )?,
            late_records: counter(
                "weir_late_records_total",
                "Records that reached an operator at or behind its watermark (what the operator \
                 did with them, a window's plugin metrics say).",
                &task,
            )?,
            dead_letters: counter(
                "weir_dead_letters_total",
                "Records an operator's plugin rejected, sent to its dead letters (on_error = \"dead_letter\").",
                &task,
            )?,
            timers_registered: counter(
                "weir_timers_registered_total",
                "Keyed timers an operator registered (new ones).",
                &task,
            )?,
            timers_fired: counter("weir_timers_fired_total", "Keyed timers that fired.", &task)?,
            timers_pending: gauge(
                "weir_timers_pending",
                "Keyed timers waiting to fire.",
                &task,
            )?,
            state_cache_hits: counter(
                "weir_state_cache_hits_total",
                "Keyed state reads the RocksDB backend's write-back cache answered.",
                &task,
            )?,
            state_cache_misses: counter(
                "weir_state_cache_misses_total",
                "Keyed state reads that went to RocksDB: many, against the hits, say `[state] \
                 cache` is smaller than the keys in use.",
                &task,
            )?,
            source_lag: gauge(
                "weir_source_lag_bytes",
                "Bytes of a file source not read yet.",
                &["operator"],
            )?,
            broker_connected: gauge(
                "weir_broker_connected",
                "Whether a broker source or sink reaches its brokers (1) or is retrying (0).",
                &["component"],
            )?,
            state_size: gauge(
                "weir_state_size_bytes",
                "Keyed state of an operator, as written in the last checkpoint.",
                &["operator"],
            )?,
            checkpoints_completed: IntCounter::new(
                "weir_checkpoints_completed_total",
                "Checkpoints completed.",
            )?,
            checkpoints_failed: IntCounter::new(
                "weir_checkpoints_failed_total",
                "Checkpoints abandoned or failed.",
            )?,
            checkpoint_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "weir_checkpoint_duration_seconds",
                    "Time from triggering a checkpoint to its metadata being durable.",
                )
                .buckets(seconds_buckets()),
            )?,
            checkpoint_alignment: Histogram::with_opts(
                HistogramOpts::new(
                    "weir_checkpoint_alignment_seconds",
                    "Longest barrier alignment of a checkpoint.",
                )
                .buckets(seconds_buckets()),
            )?,
            checkpoint_pause: Histogram::with_opts(
                HistogramOpts::new(
                    "weir_checkpoint_pause_seconds",
                    "Longest time a task stopped processing for a checkpoint.",
                )
                .buckets(seconds_buckets()),
            )?,
            checkpoint_size: IntGauge::new(
                "weir_checkpoint_size_bytes",
                "State bytes of the last completed checkpoint.",
            )?,
            checkpoint_last_id: IntGauge::new(
                "weir_checkpoint_last_completed_id",
                "Id of the last completed checkpoint.",
            )?,
            checkpoint_last_time: Gauge::new(
                "weir_checkpoint_last_completed_timestamp_seconds",
                "When the last checkpoint completed, Unix time.",
            )?,
            reloads: counter(
                "weir_reloads_total",
                "Reloads, by result: success or failure.",
                &["result"],
            )?,
            reload_successful: IntGauge::new(
                "weir_config_last_reload_successful",
                "Whether the last reload succeeded (1) or was refused (0).",
            )?,
            reload_success_time: Gauge::new(
                "weir_config_last_reload_success_timestamp_seconds",
                "When the running config was last loaded, Unix time.",
            )?,
            reload_pause: Histogram::with_opts(
                HistogramOpts::new(
                    "weir_reload_pause_seconds",
                    "How long records stopped flowing for an applied reload.",
                )
                .buckets(seconds_buckets()),
            )?,
            restarts: IntCounter::new(
                "weir_pipeline_restarts_total",
                "Restarts of the pipeline after a failure.",
            )?,
            checkpoint_trouble: Arc::default(),
            broker_trouble: Arc::default(),
            plugin_families: Arc::default(),
        };
        let r = &m.registry;
        r.register(Box::new(m.records_in.clone()))?;
        r.register(Box::new(m.broker_connected.clone()))?;
        r.register(Box::new(m.records_out.clone()))?;
        r.register(Box::new(m.process_seconds.clone()))?;
        r.register(Box::new(m.plugin_errors.clone()))?;
        r.register(Box::new(m.guest_memory.clone()))?;
        r.register(Box::new(m.channel_depth.clone()))?;
        r.register(Box::new(m.watermark.clone()))?;
        r.register(Box::new(m.watermark_lag.clone()))?;
        r.register(Box::new(m.late_records.clone()))?;
        r.register(Box::new(m.dead_letters.clone()))?;
        r.register(Box::new(m.timers_registered.clone()))?;
        r.register(Box::new(m.timers_fired.clone()))?;
        r.register(Box::new(m.timers_pending.clone()))?;
        r.register(Box::new(m.state_cache_hits.clone()))?;
        r.register(Box::new(m.state_cache_misses.clone()))?;
        r.register(Box::new(m.source_lag.clone()))?;
        r.register(Box::new(m.state_size.clone()))?;
        r.register(Box::new(m.checkpoints_completed.clone()))?;
        r.register(Box::new(m.checkpoints_failed.clone()))?;
        r.register(Box::new(m.checkpoint_duration.clone()))?;
        r.register(Box::new(m.checkpoint_alignment.clone()))?;
        r.register(Box::new(m.checkpoint_pause.clone()))?;
        r.register(Box::new(m.checkpoint_size.clone()))?;
        r.register(Box::new(m.checkpoint_last_id.clone()))?;
        r.register(Box::new(m.checkpoint_last_time.clone()))?;
        r.register(Box::new(m.reloads.clone()))?;
        r.register(Box::new(m.reload_successful.clone()))?;
        r.register(Box::new(m.reload_success_time.clone()))?;
        r.register(Box::new(m.reload_pause.clone()))?;
        r.register(Box::new(m.restarts.clone()))?;
        let build = gauge(
            "weir_build_info",
            "Always 1; the labels say which build runs.",
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        r.register(Box::new(build))?;
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        m.reload_successful.set(1);
        m.reload_success_time.set(unix_now());
        Ok(Arc::new(m))
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        self.refresh_watermark_lag();
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!("cannot encode the metrics: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// `weir_watermark_lag_seconds`: how far each task's watermark is behind
    /// the clock now, at the scrape, so a watermark that stopped (a source
    /// stalled, an input neither sending nor idle) shows a growing lag even
    /// when nothing arrives. A task whose inputs have all ended has none.
    fn refresh_watermark_lag(&self) {
        let now = unix_now();
        for family in self.watermark.collect() {
            for metric in family.get_metric() {
                let labels = labels_of(metric);
                let ms = metric.get_gauge().get_value();
                if ms >= crate::watermark::END_OF_TIME as f64 {
                    let _ = self.watermark_lag.remove(&labels);
                } else if let Ok(lag) = self.watermark_lag.get_metric_with(&labels) {
                    lag.set(now - ms / 1000.0);
                }
            }
        }
    }

    /// Handles for one task instance. Series that do not apply to its kind
    /// (records into a source, plugin calls of a sink) are left unexported.
    pub fn task(&self, operator: &str, instance: u32, kind: TaskKind) -> TaskMetrics {
        let instance = instance.to_string();
        let labels = [operator, instance.as_str()];
        let (receives, sends, calls) = match kind {
            TaskKind::Source => (false, true, false),
            TaskKind::Operator => (true, true, true),
            TaskKind::Sink => (true, false, false),
        };
        let counter = |family: &IntCounterVec, on: bool| {
            if on {
                family.with_label_values(&labels)
            } else {
                IntCounter::new("unexported", "-")
                    .unwrap_or_else(|_| family.with_label_values(&labels))
            }
        };
        let gauge = |family: &IntGaugeVec, on: bool| {
            if on {
                family.with_label_values(&labels)
            } else {
                IntGauge::new("unexported", "-")
                    .unwrap_or_else(|_| family.with_label_values(&labels))
            }
        };
        TaskMetrics {
            records_in: counter(&self.records_in, receives),
            records_out: counter(&self.records_out, sends),
            process_seconds: if calls {
                self.process_seconds.with_label_values(&labels)
            } else {
                Histogram::with_opts(HistogramOpts::new("unexported", "-"))
                    .unwrap_or_else(|_| self.process_seconds.with_label_values(&labels))
            },
            channel_depth: gauge(&self.channel_depth, receives),
            guest_memory: gauge(&self.guest_memory, calls),
            errors: self.plugin_errors.clone(),
            watermark: self.watermark.clone(),
            watermark_series: std::sync::OnceLock::new(),
            late_records: Lazy::new(&self.late_records),
            dead_letters: Lazy::new(&self.dead_letters),
            timers_registered: Lazy::new(&self.timers_registered),
            timers_fired: Lazy::new(&self.timers_fired),
            timers_pending: Lazy::new(&self.timers_pending),
            state_cache_hits: Lazy::new(&self.state_cache_hits),
            state_cache_misses: Lazy::new(&self.state_cache_misses),
            labels: [operator.to_owned(), instance],
        }
    }

    /// A file source's unread bytes.
    pub fn source_lag(&self, source: &str) -> IntGauge {
        self.source_lag.with_label_values(&[source])
    }

    /// How a broker source or sink reports whether it reaches its brokers.
    pub fn broker(&self, component: &str) -> BrokerHealth {
        BrokerHealth {
            component: component.to_owned(),
            connected: self.broker_connected.with_label_values(&[component]),
            trouble: self.broker_trouble.clone(),
        }
    }

    /// Which broker sources and sinks cannot reach their brokers, and why.
    pub fn broker_trouble(&self) -> Option<String> {
        let trouble = self
            .broker_trouble
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (!trouble.is_empty()).then(|| {
            trouble
                .iter()
                .map(|(c, why)| format!("`{c}` cannot reach its brokers ({why}), retrying"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    /// A checkpoint completed; `state` is each operator's keyed bytes in it.
    pub fn checkpoint_completed(&self, stats: &Stats, state: &[(String, u64)]) {
        self.checkpoints_completed.inc();
        self.checkpoint_trouble
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0 = 0;
        self.checkpoint_duration
            .observe(stats.duration.as_secs_f64());
        self.checkpoint_alignment
            .observe(stats.max_alignment.as_secs_f64());
        self.checkpoint_pause.observe(stats.max_pause.as_secs_f64());
        self.checkpoint_size
            .set(i64::try_from(stats.bytes).unwrap_or(i64::MAX));
        self.checkpoint_last_id
            .set(i64::try_from(stats.id).unwrap_or(i64::MAX));
        self.checkpoint_last_time.set(unix_now());
        for (operator, bytes) in state {
            self.state_size
                .with_label_values(&[operator.as_str()])
                .set(i64::try_from(*bytes).unwrap_or(i64::MAX));
        }
    }

    /// A checkpoint was abandoned or failed.
    pub fn checkpoint_failed(&self, why: &str) {
        self.checkpoints_failed.inc();
        let mut trouble = self
            .checkpoint_trouble
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        trouble.0 += 1;
        why.clone_into(&mut trouble.1);
    }

    /// Why checkpoints are failing, once [`FAILING_CHECKPOINTS`] in a row
    /// have: the daemon is then not ready, as its output is not being
    /// committed.
    pub fn checkpoints_failing(&self) -> Option<String> {
        let trouble = self
            .checkpoint_trouble
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (trouble.0 >= FAILING_CHECKPOINTS).then(|| {
            format!(
                "{} checkpoints failed in a row, output is not being committed: {}",
                trouble.0, trouble.1
            )
        })
    }

    /// The id of the last checkpoint completed (0 before the first).
    pub fn last_checkpoint_id(&self) -> u64 {
        u64::try_from(self.checkpoint_last_id.get()).unwrap_or(0)
    }

    /// A reload was applied (with how long records paused) or refused.
    pub fn reloaded(&self, ok: bool, pause: Option<std::time::Duration>) {
        self.reloads
            .with_label_values(&[if ok { "success" } else { "failure" }])
            .inc();
        self.reload_successful.set(i64::from(ok));
        if ok {
            self.reload_success_time.set(unix_now());
        }
        if let Some(pause) = pause {
            self.reload_pause.observe(pause.as_secs_f64());
        }
    }

    /// The pipeline is restarting after a failure.
    pub fn restarted(&self) {
        self.restarts.inc();
    }

    /// The series of metric `name` that operator `operator`'s instance
    /// `instance` declared, creating (and registering) its family on first
    /// use. `name` must already be checked; a family of that name declared
    /// with another kind or help text is an error.
    pub fn plugin_series(
        &self,
        name: &str,
        kind: PluginMetricKind,
        help: &str,
        operator: &str,
        instance: u32,
    ) -> Result<PluginSeries, String> {
        let mut families = self
            .plugin_families
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let family = match families.get(name) {
            Some(f) => f.clone(),
            None => {
                let labels = &["operator", "instance"];
                let help_text = if help.is_empty() { name } else { help };
                let family = match kind {
                    PluginMetricKind::Counter => PluginFamily::Counter(
                        IntCounterVec::new(
                            Opts::new(format!("weir_plugin_{name}_total"), help_text),
                            labels,
                        )
                        .map_err(|e| e.to_string())?,
                        help.to_owned(),
                    ),
                    PluginMetricKind::Gauge => PluginFamily::Gauge(
                        IntGaugeVec::new(
                            Opts::new(format!("weir_plugin_{name}"), help_text),
                            labels,
                        )
                        .map_err(|e| e.to_string())?,
                        help.to_owned(),
                    ),
                };
                let collector: Box<dyn prometheus::core::Collector> = match &family {
                    PluginFamily::Counter(v, _) => Box::new(v.clone()),
                    PluginFamily::Gauge(v, _) => Box::new(v.clone()),
                };
                self.registry.register(collector).map_err(|e| {
                    format!("cannot export it: {e} (a name of Weir's own metrics?)")
                })?;
                families.insert(name.to_owned(), family.clone());
                family
            }
        };
        let instance = instance.to_string();
        match (family, kind) {
            (PluginFamily::Counter(v, h), PluginMetricKind::Counter) if h == help => Ok(
                PluginSeries::Counter(v.with_label_values(&[operator, instance.as_str()])),
            ),
            (PluginFamily::Gauge(v, h), PluginMetricKind::Gauge) if h == help => Ok(
                PluginSeries::Gauge(v.with_label_values(&[operator, instance.as_str()])),
            ),
            _ => Err(format!(
                "`{name}` is declared already with another kind or help text (by this or another operator)"
            )),
        }
    }

    /// Drops the series of components that are gone (after a reload), so a
    /// scrape shows only what runs.
    pub fn retain_components(&self, keep: &dyn Fn(&str) -> bool) {
        remove_gone(&self.records_in, keep);
        remove_gone(&self.records_out, keep);
        remove_gone(&self.process_seconds, keep);
        remove_gone(&self.plugin_errors, keep);
        remove_gone(&self.guest_memory, keep);
        remove_gone(&self.channel_depth, keep);
        remove_gone(&self.watermark, keep);
        remove_gone(&self.watermark_lag, keep);
        remove_gone(&self.late_records, keep);
        remove_gone(&self.dead_letters, keep);
        remove_gone(&self.timers_registered, keep);
        remove_gone(&self.timers_fired, keep);
        remove_gone(&self.timers_pending, keep);
        remove_gone(&self.state_cache_hits, keep);
        remove_gone(&self.state_cache_misses, keep);
        remove_gone(&self.source_lag, keep);
        remove_gone(&self.state_size, keep);
        let families = self
            .plugin_families
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for family in families.values() {
            match family {
                PluginFamily::Counter(v, _) => remove_gone(v, keep),
                PluginFamily::Gauge(v, _) => remove_gone(v, keep),
            }
        }
    }
}

/// A series' labels, by name.
fn labels_of(metric: &prometheus::proto::Metric) -> HashMap<&str, &str> {
    metric
        .get_label()
        .iter()
        .map(|l| (l.name(), l.value()))
        .collect()
}

/// Removes every series of `family` whose `operator` label fails `keep`.
fn remove_gone<T: MetricVecBuilder>(family: &MetricVec<T>, keep: &dyn Fn(&str) -> bool) {
    for m in family.collect() {
        for metric in m.get_metric() {
            let labels = labels_of(metric);
            if labels.get("operator").is_some_and(|op| !keep(op)) {
                let _ = family.remove(&labels);
            }
        }
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_named_in_base_units_and_gone_components_drop_out() {
        let m = Metrics::new().unwrap();
        let t = m.task("count", 1, TaskKind::Operator);
        m.task("gen", 0, TaskKind::Source).records_in.inc();
        t.records_in.inc_by(5);
        t.plugin_error("trap");
        let text = m.render();
        assert!(
            text.contains("weir_records_in_total{instance=\"1\",operator=\"count\"} 5"),
            "{text}"
        );
        assert!(
            text.contains(
                "weir_plugin_errors_total{instance=\"1\",kind=\"trap\",operator=\"count\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("weir_build_info{version="), "{text}");
        assert!(
            !text.contains("weir_records_in_total{instance=\"0\",operator=\"gen\"}"),
            "a source receives nothing: {text}"
        );
        m.retain_components(&|id| id != "count");
        assert!(
            !m.render().contains("weir_records_in_total{"),
            "{}",
            m.render()
        );
    }
}

/// One broker source's or sink's connection, as `weir_broker_connected` and
/// the daemon's status show it.
#[derive(Clone)]
pub struct BrokerHealth {
    component: String,
    connected: IntGauge,
    trouble: Arc<std::sync::Mutex<std::collections::BTreeMap<String, String>>>,
}

impl BrokerHealth {
    /// It reaches its brokers.
    pub fn up(&self) {
        self.connected.set(1);
        self.trouble
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.component);
    }

    /// It does not, because of `why`; it retries.
    pub fn down(&self, why: &str) {
        self.connected.set(0);
        self.trouble
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(self.component.clone(), why.to_owned());
    }
}
