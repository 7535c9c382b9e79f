//! The metrics a plugin declares and updates through `weir:operator/metrics`:
//! checked names, a bounded number per instance, one series per operator
//! instance in the daemon's registry.

use std::sync::Arc;

use crate::metrics::{Metrics, PluginMetricKind, PluginSeries};

pub use weir_codec::metrics::MAX_METRICS;
use weir_codec::metrics::check_name;

/// Longest help text.
const MAX_HELP: usize = 1024;

/// One instance's declared metrics.
#[derive(Debug, Default)]
pub struct PluginMetrics {
    /// Where series go; none for a trial instance, which checks names only.
    sink: Option<Arc<Metrics>>,
    declared: Vec<(String, Declared)>,
}

#[derive(Debug)]
enum Declared {
    Series(PluginSeries),
    /// Checked, not exported (a trial instance).
    Unexported(PluginMetricKind),
}

impl PluginMetrics {
    /// Metrics exported to `sink` (or only checked, without one).
    pub fn new(sink: Option<Arc<Metrics>>) -> Self {
        Self {
            sink,
            declared: Vec::new(),
        }
    }

    /// Declares a metric for `operator`'s instance `instance`; its handle.
    pub fn register(
        &mut self,
        operator: &str,
        instance: u32,
        name: &str,
        kind: PluginMetricKind,
        help: &str,
    ) -> Result<u32, String> {
        check_name(name)?;
        if help.len() > MAX_HELP {
            return Err(format!(
                "the help text of `{name}` is longer than {MAX_HELP} bytes"
            ));
        }
        if let Some(i) = self.declared.iter().position(|(n, _)| n == name) {
            let same = match &self.declared[i].1 {
                Declared::Series(PluginSeries::Counter(_)) => kind == PluginMetricKind::Counter,
                Declared::Series(PluginSeries::Gauge(_)) => kind == PluginMetricKind::Gauge,
                Declared::Unexported(k) => *k == kind,
            };
            return if same {
                u32::try_from(i).map_err(|e| e.to_string())
            } else {
                Err(format!("`{name}` is declared already as another kind"))
            };
        }
        if self.declared.len() >= MAX_METRICS {
            return Err(format!(
                "a plugin may declare at most {MAX_METRICS} metrics"
            ));
        }
        let declared = match &self.sink {
            Some(metrics) => {
                Declared::Series(metrics.plugin_series(name, kind, help, operator, instance)?)
            }
            None => Declared::Unexported(kind),
        };
        self.declared.push((name.to_owned(), declared));
        u32::try_from(self.declared.len() - 1).map_err(|e| e.to_string())
    }

    /// Applies a batch of updates: counters add, gauges are set.
    pub fn update(&mut self, updates: &[(u32, i64)]) -> Result<(), String> {
        for &(handle, value) in updates {
            let Some((name, declared)) = usize::try_from(handle)
                .ok()
                .and_then(|i| self.declared.get(i))
            else {
                return Err(format!("metric handle {handle} was never declared"));
            };
            match declared {
                Declared::Series(PluginSeries::Counter(c)) => {
                    let by = u64::try_from(value)
                        .map_err(|_| format!("counter `{name}` cannot go down (by {value})"))?;
                    c.inc_by(by);
                }
                Declared::Series(PluginSeries::Gauge(g)) => g.set(value),
                Declared::Unexported(PluginMetricKind::Counter) if value < 0 => {
                    return Err(format!("counter `{name}` cannot go down (by {value})"));
                }
                Declared::Unexported(_) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_kinds_and_updates_are_checked_and_exported() {
        let metrics = Metrics::new().unwrap();
        let mut m = PluginMetrics::new(Some(metrics.clone()));
        let skipped = m
            .register(
                "op",
                0,
                "skipped",
                PluginMetricKind::Counter,
                "Skipped records.",
            )
            .unwrap();
        let depth = m
            .register("op", 0, "depth", PluginMetricKind::Gauge, "")
            .unwrap();
        assert_eq!(
            m.register(
                "op",
                0,
                "skipped",
                PluginMetricKind::Counter,
                "Skipped records."
            ),
            Ok(skipped)
        );
        assert!(
            m.register("op", 0, "skipped", PluginMetricKind::Gauge, "x")
                .is_err()
        );
        for bad in ["", "Upper", "1st", "a-b", "weir metric", &"x".repeat(65)] {
            assert!(
                m.register("op", 0, bad, PluginMetricKind::Gauge, "")
                    .is_err(),
                "{bad}"
            );
        }
        m.update(&[(skipped, 2), (skipped, 3), (depth, -4)])
            .unwrap();
        assert!(m.update(&[(skipped, -1)]).is_err());
        assert!(m.update(&[(99, 1)]).is_err());
        let text = metrics.render();
        assert!(
            text.contains("weir_plugin_skipped_total{instance=\"0\",operator=\"op\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("weir_plugin_depth{instance=\"0\",operator=\"op\"} -4"),
            "{text}"
        );
        // Another operator with the same name and kind shares the family.
        let mut other = PluginMetrics::new(Some(metrics.clone()));
        assert!(
            other
                .register(
                    "op2",
                    1,
                    "skipped",
                    PluginMetricKind::Counter,
                    "Skipped records."
                )
                .is_ok()
        );
        assert!(
            other
                .register("op2", 1, "depth", PluginMetricKind::Counter, "")
                .is_err()
        );
        let mut many = PluginMetrics::new(None);
        for i in 0..MAX_METRICS {
            many.register("op", 0, &format!("m{i}"), PluginMetricKind::Gauge, "")
                .unwrap();
        }
        assert!(
            many.register("op", 0, "one_more", PluginMetricKind::Gauge, "")
                .is_err()
        );
    }
}
