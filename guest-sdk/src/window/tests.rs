//! Windows against models of what they should compute, with time driven by
//! the harness.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::testing::{Harness, OwnedRecord};
use crate::{Aggregator, Operator};

/// Per key and tumbling window of 10 s, the count, 2 s of allowed lateness.
struct Counts {
    windows: Windows<Reduce<u64>>,
}

fn emit<T: std::fmt::Display>(fired: Vec<Fired<T>>, key: &[u8], ctx: &mut Context) {
    for Fired { window, result } in fired {
        let line = format!(
            "{} {} {} {result}",
            String::from_utf8_lossy(key),
            window.start,
            window.end
        );
        ctx.emit_at(key, line.as_bytes(), window.max_timestamp());
    }
}

impl Operator for Counts {
    const OUTPUTS: &'static [&'static str] = &["late"];

    fn init(ctx: &InitContext) -> Result<Self, Error> {
        let windows = ctx
            .windows("counts", Assigner::tumbling(Duration::from_secs(10)))
            .allowed_lateness(Duration::from_secs(2))
            .late_output(ctx.side_output("late")?)
            .reduce(|a, b| a + b)?;
        Ok(Self { windows })
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let fired = self.windows.add(&record, 1, ctx)?;
        emit(fired, record.key, ctx);
        Ok(())
    }

    fn on_timer(&mut self, timer: Timer<'_>, ctx: &mut Context) -> Result<(), Error> {
        let fired = self.windows.on_timer(&timer)?;
        emit(fired, timer.key, ctx);
        Ok(())
    }
}

/// A small deterministic generator (no dependency for one test).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

/// Out-of-order events: up to 5 s behind the latest, a few up to 12 s.
fn events(n: usize, seed: u64) -> Vec<(String, i64)> {
    let mut rng = Lcg(seed);
    let mut now = 1_000_000;
    (0..n)
        .map(|_| {
            now += rng.next(400) as i64;
            let back = if rng.next(20) == 0 {
                rng.next(12_000)
            } else {
                rng.next(5_000)
            };
            (format!("u{}", rng.next(7)), now - back as i64)
        })
        .collect()
}

/// What Flink's event-time tumbling window with allowed lateness emits, by
/// simulation: main output lines and the late records' timestamps.
fn model(
    batches: &[(Vec<(String, i64)>, i64)],
    size: i64,
    lateness: i64,
) -> (Vec<String>, Vec<i64>) {
    let mut open: BTreeMap<(i64, String), u64> = BTreeMap::new();
    let (mut out, mut late) = (Vec::new(), Vec::new());
    let mut watermark = i64::MIN;
    let line = |k: &str, start: i64, n: u64| format!("{k} {start} {} {n}", start + size);
    for (batch, next_watermark) in batches {
        for (key, t) in batch {
            let start = t - t.rem_euclid(size);
            let max = start + size - 1;
            if max + lateness <= watermark {
                late.push(*t);
                continue;
            }
            let n = open.entry((start, key.clone())).or_default();
            *n += 1;
            if max <= watermark {
                out.push(line(key, start, *n));
            }
        }
        let next = (*next_watermark).max(watermark);
        for ((start, key), n) in &open {
            let max = start + size - 1;
            if max > watermark && max <= next {
                out.push(line(key, *start, *n));
            }
        }
        open.retain(|(start, _), _| start + size - 1 + lateness > next);
        watermark = next;
    }
    (out, late)
}

#[test]
fn tumbling_counts_match_the_model_with_late_records() {
    let events = events(3_000, 7);
    let mut batches = Vec::new();
    let mut max = i64::MIN;
    for chunk in events.chunks(13) {
        max = chunk.iter().map(|(_, t)| *t).fold(max, i64::max);
        batches.push((chunk.to_vec(), max - 5_000));
    }
    batches.last_mut().unwrap().1 = i64::MAX;
    let (mut expected, mut expected_late) = model(&batches, 10_000, 2_000);

    let mut op = Harness::<Counts>::new("{}").unwrap();
    let (mut got, mut late) = (Vec::new(), Vec::new());
    for (batch, watermark) in &batches {
        let records: Vec<OwnedRecord> = batch
            .iter()
            .map(|(k, t)| OwnedRecord {
                timestamp: Some(*t),
                ..OwnedRecord::new(k.as_str(), "")
            })
            .collect();
        got.extend(
            op.process(&records)
                .unwrap()
                .into_iter()
                .map(|r| String::from_utf8(r.value).unwrap()),
        );
        got.extend(op.advance_watermark(*watermark).unwrap());
        late.extend(
            op.take_side_output("late")
                .into_iter()
                .map(|r| r.timestamp.unwrap()),
        );
    }
    assert!(
        !expected_late.is_empty() && expected.len() > 100,
        "the input exercises lateness"
    );
    assert_eq!(
        op.pending_timers(),
        0,
        "every window fired and was cleaned up"
    );
    // Output order within one watermark step is key order on both sides,
    // but late firings interleave: compare as multisets.
    for v in [&mut expected, &mut got] {
        v.sort();
    }
    expected_late.sort_unstable();
    late.sort_unstable();
    assert_eq!(got, expected);
    assert_eq!(late, expected_late);
    let accepted = op.metric("window_late_records_accepted").unwrap();
    assert_eq!(
        op.metric("window_late_records_side_output"),
        Some(late.len() as i64)
    );
    assert!(
        accepted > 0,
        "some late records were within the allowed lateness"
    );
}

/// Sessions of 1 s of silence, each giving its records' values in order.
struct Sessions {
    windows: Windows<Collect<String>>,
}

impl Operator for Sessions {
    fn init(ctx: &InitContext) -> Result<Self, Error> {
        let windows = ctx
            .windows("sessions", Assigner::session(Duration::from_secs(1)))
            .process()?;
        Ok(Self { windows })
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let value = String::from_utf8_lossy(record.value).into_owned();
        let fired = self.windows.add(&record, value, ctx)?;
        assert!(fired.is_empty(), "no lateness, no late firing");
        Ok(())
    }

    fn on_timer(&mut self, timer: Timer<'_>, ctx: &mut Context) -> Result<(), Error> {
        for Fired { window, result } in self.windows.on_timer(&timer)? {
            let line = format!("{}-{} {}", window.start, window.end, result.join(","));
            ctx.emit_at(timer.key, line.as_bytes(), window.max_timestamp());
        }
        Ok(())
    }
}

#[test]
fn sessions_merge_when_a_record_bridges_them() {
    let mut op = Harness::<Sessions>::new("{}").unwrap();
    op.process_timed(&[("k", "a", 0), ("k", "c", 1_500), ("j", "x", 100)])
        .unwrap();
    // "b" at 900 touches both sessions of k: [0,1000) and [1500,2500).
    op.process_timed(&[("k", "b", 900)]).unwrap();
    assert_eq!(op.advance_watermark(1_098).unwrap(), Vec::<String>::new());
    assert_eq!(op.advance_watermark(1_099).unwrap(), ["100-1100 x"]);
    assert_eq!(op.advance_watermark(2_499).unwrap(), ["0-2500 a,c,b"]);
    assert_eq!(
        op.pending_timers(),
        0,
        "merged sessions leave no timers behind"
    );
}

/// The average of each key's values over 10 s windows sliding by 5 s.
struct Averages {
    windows: Windows<Aggregate<Average>>,
}

struct Average;

impl Aggregator for Average {
    type In = f64;
    type Acc = (f64, u64);
    type Out = f64;
    fn create(&self) -> (f64, u64) {
        (0.0, 0)
    }
    fn add(&self, (sum, n): (f64, u64), x: f64) -> (f64, u64) {
        (sum + x, n + 1)
    }
    fn result(&self, &(sum, n): &(f64, u64)) -> f64 {
        sum / n as f64
    }
}

impl Operator for Averages {
    fn init(ctx: &InitContext) -> Result<Self, Error> {
        let assigner = Assigner::sliding(Duration::from_secs(10), Duration::from_secs(5));
        Ok(Self {
            windows: ctx.windows("averages", assigner).aggregate(Average)?,
        })
    }

    fn process(&mut self, record: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let x: f64 = std::str::from_utf8(record.value)?
            .parse()
            .map_err(|e: std::num::ParseFloatError| Error::new(e.to_string()))?;
        self.windows.add(&record, x, ctx)?;
        Ok(())
    }

    fn on_timer(&mut self, timer: Timer<'_>, ctx: &mut Context) -> Result<(), Error> {
        emit(self.windows.on_timer(&timer)?, timer.key, ctx);
        Ok(())
    }
}

#[test]
fn sliding_windows_aggregate_every_window_a_record_is_in() {
    let mut op = Harness::<Averages>::new("{}").unwrap();
    op.process_timed(&[("k", "1", 1_000), ("k", "3", 6_000), ("k", "8", 12_000)])
        .unwrap();
    assert_eq!(
        op.advance_watermark(i64::MAX).unwrap(),
        [
            "k -5000 5000 1",
            "k 0 10000 2",
            "k 5000 15000 5.5",
            "k 10000 20000 8"
        ]
    );
}

#[test]
fn a_record_without_a_timestamp_is_an_error_naming_the_fix() {
    let mut op = Harness::<Counts>::new("{}").unwrap();
    let e = op.process_keyed(&[("k", "")]).unwrap_err().to_string();
    assert!(
        e.contains("windows need event time") && e.contains("`timestamp`"),
        "{e}"
    );
}

#[test]
fn processing_time_timers_fire_as_the_clock_passes_them() {
    struct Remind {
        timers: Timers,
    }
    impl Operator for Remind {
        fn init(ctx: &InitContext) -> Result<Self, Error> {
            Ok(Self {
                timers: ctx.timers(),
            })
        }
        fn process(&mut self, _: Record<'_>, ctx: &mut Context) -> Result<(), Error> {
            self.timers
                .register_processing_time(ctx.processing_time() + 1_000)
        }
        fn on_timer(&mut self, timer: Timer<'_>, ctx: &mut Context) -> Result<(), Error> {
            assert_eq!(timer.domain, TimeDomain::ProcessingTime);
            ctx.emit(
                timer.key,
                format!("{} at {}", String::from_utf8_lossy(timer.key), timer.time).as_bytes(),
            );
            Ok(())
        }
    }
    let mut op = Harness::<Remind>::new("{}").unwrap();
    op.process_keyed(&[("a", ""), ("b", ""), ("a", "")])
        .unwrap();
    assert_eq!(op.pending_timers(), 2, "one timer per key and time");
    assert!(
        op.advance_watermark(i64::MAX).unwrap().is_empty(),
        "event time does not fire them"
    );
    assert!(
        op.advance_processing_time(Duration::from_millis(999))
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        op.advance_processing_time(Duration::from_millis(1))
            .unwrap(),
        ["a at 1000", "b at 1000"]
    );
    assert_eq!(op.pending_timers(), 0);
}

/// Panes are kept as a small vector; state saved when they were a `Vec`
/// (and state saved now, read by a `Vec`) decodes the same.
#[test]
fn panes_are_encoded_as_a_vec_is() {
    let pane = |start| Pane {
        window: Window {
            start,
            end: start + 10,
        },
        acc: start as u64,
    };
    let as_vec = vec![pane(0), pane(10), pane(20)];
    let bytes = postcard::to_allocvec(&as_vec).unwrap();
    let panes: Panes<u64> = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(postcard::to_allocvec(&panes).unwrap(), bytes);
    let back: Vec<Pane<u64>> = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back.len(), 3);
}
