//! Windows over event time (Flink's window operator), built on keyed state
//! and timers: tumbling, sliding and session windows, with a reduce, an
//! aggregate ([`crate::Aggregator`], Flink's `AggregateFunction` shape) or
//! the whole window's records, allowed lateness, and late records to a side
//! output.
//!
//! A window `[start, end)` fires once the watermark reaches its last
//! millisecond (`end - 1`, [`Window::max_timestamp`]). A record is late for
//! a window once the watermark has passed that by the allowed lateness; a
//! record late for every window it falls in goes to the late output (or is
//! dropped), and the plugin metrics `window_late_records_side_output`,
//! `window_late_records_dropped` and `window_late_records_accepted` (late,
//! but within the allowed lateness: the window fires again) count what
//! happened to every record at or behind the watermark.
//!
//! ```
//! use std::time::Duration;
//! use weir_guest_sdk::window::{Assigner, Fired, Windows, Reduce};
//! use weir_guest_sdk::{Context, Error, InitContext, Operator, Record, SideOutput, Timer};
//!
//! /// Counts each key's records per minute of event time.
//! pub struct PerMinute {
//!     windows: Windows<Reduce<u64>>,
//! }
//!
//! fn emit(fired: Vec<Fired<u64>>, key: &[u8], ctx: &mut Context) {
//!     for Fired { window, result } in fired {
//!         let line = format!("{} {} {result}", window.start, window.end);
//!         ctx.emit_at(key, line.as_bytes(), window.max_timestamp());
//!     }
//! }
//!
//! impl Operator for PerMinute {
//!     const OUTPUTS: &'static [&'static str] = &["late"];
//!
//!     fn init(ctx: &InitContext) -> Result<Self, Error> {
//!         let windows = ctx
//!             .windows("per-minute", Assigner::tumbling(Duration::from_secs(60)))
//!             .allowed_lateness(Duration::from_secs(5))
//!             .late_output(ctx.side_output("late")?)
//!             .reduce(|a, b| a + b)?;
//!         Ok(Self { windows })
//!     }
//!
//!     fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
//!         let fired = self.windows.add(&record, 1, ctx)?;
//!         emit(fired, record.key, ctx);
//!         Ok(())
//!     }
//!
//!     fn on_timer(&mut self, timer: Timer<'_>, ctx: &mut Context) -> Result<(), Error> {
//!         let fired = self.windows.on_timer(&timer)?;
//!         emit(fired, timer.key, ctx);
//!         Ok(())
//!     }
//! }
//!
//! let mut op = weir_guest_sdk::testing::Harness::<PerMinute>::new("{}")?;
//! op.process_timed(&[("u", "", 1_000), ("u", "", 59_999), ("u", "", 60_000)])?;
//! assert_eq!(op.advance_watermark(60_000)?, ["0 60000 2"]);
//! // Late, within the allowed lateness: the window fires again.
//! assert_eq!(op.process_timed(&[("u", "", 30_000)])?, ["0 60000 3"]);
//! assert_eq!(op.advance_watermark(65_000)?, Vec::<String>::new());
//! // Past it: to the late output.
//! assert!(op.process_timed(&[("u", "", 30_001)])?.is_empty());
//! assert_eq!(op.take_side_output("late").len(), 1);
//! assert_eq!(op.advance_watermark(i64::MAX)?, ["60000 120000 1"]);
//! # Ok::<(), Error>(())
//! ```

mod assigner;
mod function;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use assigner::Assigner;
pub use function::{Aggregate, Collect, Reduce, WindowFunction};

use crate::time::{TimeDomain, Timer, Timers};
use crate::{Context, Counter, Error, InitContext, Record, SideOutput, ValueState};

/// A window of event time: `[start, end)`, ms since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Window {
    /// Its first millisecond.
    pub start: i64,
    /// The millisecond after its last.
    pub end: i64,
}

impl Window {
    /// Its last millisecond: it fires when the watermark reaches this, and
    /// its result carries it as timestamp by convention (Flink's).
    pub fn max_timestamp(&self) -> i64 {
        self.end.saturating_sub(1)
    }

    /// Whether it and `other` overlap or touch (session windows merge then).
    fn touches(&self, other: &Window) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

/// A window's result, when it fires.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired<T> {
    /// The window.
    pub window: Window,
    /// What the window function made of its records.
    pub result: T,
}

/// One open window of a key and what it has accumulated.
#[derive(Debug, Serialize, Deserialize)]
struct Pane<A> {
    window: Window,
    acc: A,
}

/// A key's open windows, by window. Most keys have one or two (a tumbling
/// window, and the next while the first waits for the watermark): those
/// are decoded without an allocation, once per record. Encoded as a `Vec`
/// would be, so saved state reads either way.
type Panes<A> = smallvec::SmallVec<[Pane<A>; 2]>;

/// Declares windows; from [`InitContext::windows`].
#[derive(Debug)]
pub struct WindowBuilder {
    name: String,
    assigner: Assigner,
    lateness: i64,
    late: Option<SideOutput>,
}

impl InitContext {
    /// Declares windows named `name` (the name of their keyed state: stable
    /// across restarts and module versions) assigned by `assigner`; finish
    /// with `.reduce(..)`, `.aggregate(..)` or `.process()`.
    pub fn windows(&self, name: &str, assigner: Assigner) -> WindowBuilder {
        WindowBuilder {
            name: name.to_owned(),
            assigner,
            lateness: 0,
            late: None,
        }
    }
}

impl WindowBuilder {
    /// How long after a window fired it still takes late records (each one
    /// fires it again with the updated result); 0 by default.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.lateness = i64::try_from(lateness.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// Where records too late for every window they fall in go, unchanged,
    /// instead of being dropped.
    pub fn late_output(mut self, output: SideOutput) -> Self {
        self.late = Some(output);
        self
    }

    /// Windows that fold their records with `reduce`.
    pub fn reduce<T>(self, reduce: fn(T, T) -> T) -> Result<Windows<Reduce<T>>, Error>
    where
        T: Serialize + serde::de::DeserializeOwned + Clone + 'static,
    {
        self.with(Reduce::new(reduce))
    }

    /// Windows that feed their records to an aggregator (session windows
    /// need its [`crate::Aggregator::merge`]).
    pub fn aggregate<A: crate::Aggregator>(
        self,
        aggregator: A,
    ) -> Result<Windows<Aggregate<A>>, Error>
    where
        A::In: Clone,
    {
        self.with(Aggregate::new(aggregator))
    }

    /// Windows that keep every record and hand the whole window over when
    /// it fires (Flink's `ProcessWindowFunction`).
    pub fn process<T>(self) -> Result<Windows<Collect<T>>, Error>
    where
        T: Serialize + serde::de::DeserializeOwned + Clone + 'static,
    {
        self.with(Collect::new())
    }

    /// Windows computed by any [`WindowFunction`].
    pub fn with<F: WindowFunction>(self, function: F) -> Result<Windows<F>, Error> {
        let counter = |outcome: &str, help: &str| {
            Counter::register(&format!("window_late_records_{outcome}"), help)
        };
        Ok(Windows {
            panes: crate::StateBuilder::new(&self.name).value()?,
            timers: Timers::declare(),
            assigner: self.assigner,
            lateness: self.lateness,
            late: self.late,
            function,
            late_side_output: counter(
                "side_output",
                "Records too late for every window they fall in, sent to the late output.",
            )?,
            late_dropped: counter(
                "dropped",
                "Records too late for every window they fall in, dropped (no late output).",
            )?,
            late_accepted: counter(
                "accepted",
                "Records at or behind the watermark that a window still took (allowed lateness).",
            )?,
        })
    }
}

/// Windows of every key: call [`Windows::add`] from `process` and
/// [`Windows::on_timer`] from `on_timer`, and emit what they return.
pub struct Windows<F: WindowFunction> {
    panes: ValueState<Panes<F::Acc>>,
    timers: Timers,
    assigner: Assigner,
    lateness: i64,
    late: Option<SideOutput>,
    function: F,
    late_side_output: Counter,
    late_dropped: Counter,
    late_accepted: Counter,
}

impl<F: WindowFunction> std::fmt::Debug for Windows<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Windows")
            .field("assigner", &self.assigner)
            .field("lateness", &self.lateness)
            .finish_non_exhaustive()
    }
}

impl<F: WindowFunction> Windows<F> {
    /// Puts `input` (what the window function takes, made from `record`)
    /// into the current key's windows for the record's timestamp. Returns
    /// what fires at once: windows that fired before and take it within the
    /// allowed lateness. A record late for all its windows goes to the late
    /// output, if there is one. A record without a timestamp is an error.
    pub fn add(
        &self,
        record: &Record<'_>,
        input: F::In,
        ctx: &mut Context,
    ) -> Result<Vec<Fired<F::Out>>, Error> {
        let time = record.timestamp.ok_or_else(|| {
            Error::new(
                "windows need event time, and this record has none: give its source a \
                 `timestamp` (or emit it with `emit_at`)",
            )
        })?;
        let watermark = ctx.watermark().unwrap_or(i64::MIN);
        let mut panes = self.panes.get()?.unwrap_or_default();
        let fired = if self.assigner.is_merging() {
            self.add_merging(&mut panes, time, input, watermark)?
        } else {
            self.add_aligned(&mut panes, time, input, watermark)?
        };
        let Some(fired) = fired else {
            // Too late for every window: nothing of it is kept.
            match self.late {
                Some(output) => {
                    ctx.forward_to(output, record);
                    self.late_side_output.inc();
                }
                None => self.late_dropped.inc(),
            }
            return Ok(Vec::new());
        };
        if time <= watermark {
            self.late_accepted.inc();
        }
        self.panes.set(&panes)?;
        Ok(fired)
    }

    /// Tumbling and sliding windows: fixed, so a pane per window.
    fn add_aligned(
        &self,
        panes: &mut Panes<F::Acc>,
        time: i64,
        input: F::In,
        watermark: i64,
    ) -> Result<Option<Vec<Fired<F::Out>>>, Error> {
        let mut fired = Vec::new();
        let mut taken = false;
        for window in self.assigner.windows_of(time) {
            if self.cleanup_time(&window) <= watermark {
                continue;
            }
            taken = true;
            let at = match panes.binary_search_by(|p| p.window.cmp(&window)) {
                Ok(i) => i,
                Err(i) => {
                    self.register(&window, watermark)?;
                    let acc = self.function.first(input.clone())?;
                    panes.insert(i, Pane { window, acc });
                    if window.max_timestamp() <= watermark {
                        fired.push(self.result(&panes[i]));
                    }
                    continue;
                }
            };
            self.function.add(&mut panes[at].acc, input.clone())?;
            if window.max_timestamp() <= watermark {
                fired.push(self.result(&panes[at]));
            }
        }
        Ok(taken.then_some(fired))
    }

    /// Session windows: a record's window merges every session it touches.
    fn add_merging(
        &self,
        panes: &mut Panes<F::Acc>,
        time: i64,
        input: F::In,
        watermark: i64,
    ) -> Result<Option<Vec<Fired<F::Out>>>, Error> {
        let Some(mut window) = self.assigner.windows_of(time).into_iter().next() else {
            return Ok(None);
        };
        let (touching, rest): (Panes<F::Acc>, Panes<F::Acc>) = std::mem::take(panes)
            .into_iter()
            .partition(|p| p.window.touches(&window));
        *panes = rest;
        let mut acc = None;
        let mut merged = Vec::new();
        for pane in touching {
            window = Window {
                start: window.start.min(pane.window.start),
                end: window.end.max(pane.window.end),
            };
            merged.push(pane.window);
            acc = Some(match acc {
                None => pane.acc,
                Some(a) => self.function.merge(a, pane.acc)?,
            });
        }
        if acc.is_none() && self.cleanup_time(&window) <= watermark {
            return Ok(None);
        }
        // The merged sessions' timers go, but for a time another session
        // (or the new one) still needs: one timer serves a key and a time.
        let needed: Vec<i64> = panes
            .iter()
            .map(|p| p.window)
            .chain([window])
            .flat_map(|w| [w.max_timestamp(), self.cleanup_time(&w)])
            .collect();
        for old in &merged {
            for time in [old.max_timestamp(), self.cleanup_time(old)] {
                if !needed.contains(&time) {
                    self.timers.delete_event_time(time)?;
                }
            }
        }
        let acc = match acc {
            Some(mut acc) => {
                self.function.add(&mut acc, input)?;
                acc
            }
            None => self.function.first(input)?,
        };
        let pane = Pane { window, acc };
        self.register(&window, watermark)?;
        let mut fired = Vec::new();
        if window.max_timestamp() <= watermark {
            fired.push(self.result(&pane));
        }
        let at = panes
            .binary_search_by(|p| p.window.cmp(&window))
            .unwrap_or_else(|i| i);
        panes.insert(at, pane);
        Ok(Some(fired))
    }

    /// Fires the current key's windows that end at `timer` and drops those
    /// whose allowed lateness it ends; returns what fired. A timer this
    /// window set did not register (another domain) returns nothing.
    pub fn on_timer(&self, timer: &Timer<'_>) -> Result<Vec<Fired<F::Out>>, Error> {
        if timer.domain != TimeDomain::EventTime {
            return Ok(Vec::new());
        }
        let Some(mut panes) = self.panes.get()? else {
            return Ok(Vec::new());
        };
        let before = panes.len();
        let mut fired = Vec::new();
        for pane in &panes {
            if pane.window.max_timestamp() == timer.time {
                fired.push(self.result(pane));
            }
        }
        panes.retain(|p| self.cleanup_time(&p.window) > timer.time);
        if panes.is_empty() {
            self.panes.clear()?;
        } else if panes.len() != before {
            self.panes.set(&panes)?;
        }
        Ok(fired)
    }

    fn result(&self, pane: &Pane<F::Acc>) -> Fired<F::Out> {
        Fired {
            window: pane.window,
            result: self.function.result(&pane.acc),
        }
    }

    /// When a window's state goes: its end, plus the allowed lateness.
    fn cleanup_time(&self, window: &Window) -> i64 {
        window.max_timestamp().saturating_add(self.lateness)
    }

    fn register(&self, window: &Window, watermark: i64) -> Result<(), Error> {
        if window.max_timestamp() > watermark {
            self.timers.register_event_time(window.max_timestamp())?;
        }
        if self.lateness > 0 {
            self.timers.register_event_time(self.cleanup_time(window))?;
        }
        Ok(())
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;
