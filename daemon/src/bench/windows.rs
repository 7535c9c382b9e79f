//! `weir bench --suite windows`: a per-key tumbling-window count over event
//! time (the window-count plugin) on out-of-order input, on each backend,
//! beside a native loop doing the same in the same process; then the same
//! run with checkpoints, whose pauses hold every pending timer.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use wasmtime::Engine;

use super::{BenchOptions, checkpointed_run, key_of, measure, state_table};
use crate::config::GeneratorTime;
use crate::sources::generator::event_time;

/// Records per millisecond of event time: a million keys each appear about
/// once per second.
const PER_MS: u64 = 1_000;
/// How far out of order the input is, and so the watermark's delay.
const MAX_DELAY_MS: u64 = 2_000;

pub(super) fn windows(
    options: &BenchOptions,
    engine: &Engine,
    module: &Path,
    dir: &Path,
) -> anyhow::Result<String> {
    let (records, keys) = (options.window_records, options.keys);
    let size_ms = u64::try_from(options.window_size.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let time = GeneratorTime {
        start_ms: 0,
        per_ms: PER_MS,
        max_delay: Some(std::time::Duration::from_millis(MAX_DELAY_MS)),
    };
    let (native_rate, fired, native_timer_rate) = native(records, keys, &time, size_ms);
    let size = humantime::format_duration(options.window_size);
    let mut out = format!(
        "windows: generator -> window-count (tumbling {size}, per key) -> blackhole, {records} \
         records over {keys} keys, {PER_MS} records per ms of event time, up to {MAX_DELAY_MS} ms \
         out of order; {fired} windows fire{}\n",
        options
            .rocksdb_cache
            .map(|c| format!("; rocksdb write-back cache {c}"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "{:>8} {:>12} {:>12} {:>12} {:>12} {:>7} {:>12} {:>10} {:>10}",
        "backend",
        "weir rec/s",
        "native rec/s",
        "weir fire/s",
        "native fire/s",
        "ratio",
        "rec/s ckpt",
        "max pause",
        "ckpts"
    );
    let topology = |backend: &str, checkpoints: bool| {
        format!(
            "{}{}[sources.gen]\ntype = \"generator\"\ncount = {records}\nkeys = {keys}\n\
             event_time = {{ per_ms = {PER_MS}, max_delay = \"{MAX_DELAY_MS}ms\" }}\n\
             watermark = {{ max_out_of_orderness = \"{MAX_DELAY_MS}ms\" }}\n\
             [operators.count]\nmodule = {:?}\ninputs = [\"gen\"]\nconfig = {{ size = \"{size}\" }}\n\
             [sinks.out]\ntype = \"blackhole\"\ninputs = [\"count\"]\n",
            state_table(backend, dir, options),
            if checkpoints {
                format!(
                    "[checkpoint]\ninterval = \"{}\"\nretain = 1\n",
                    humantime::format_duration(options.checkpoint_interval)
                )
            } else {
                String::new()
            },
            module.display().to_string()
        )
    };
    for backend in &options.backends {
        // The sinks see one record per window: records/s is the input over
        // the same time.
        let windows_rate = measure(
            engine,
            dir,
            &format!("windows-{backend}"),
            &topology(backend, false),
            fired,
        )?;
        let rate = windows_rate * records as f64 / fired as f64;
        let with = checkpointed_run(
            engine,
            dir,
            &format!("windows-ckpt-{backend}"),
            &topology(backend, true),
            fired,
        )?;
        let _ = writeln!(
            out,
            "{backend:>8} {rate:>12.0} {native_rate:>12.0} {windows_rate:>12.0} {native_timer_rate:>12.0} {:>6.0}% {:>12.0} {:>10.1?} {:>10}",
            100.0 * rate / native_rate,
            with.rate * records as f64 / fired as f64,
            with.summary.max_pause,
            with.summary.completed,
        );
    }
    let _ = writeln!(
        out,
        "fire/s: windows fired (timers) per second; native: the same counts and timer queue in \
         a plain loop; max pause: longest a task stopped for a checkpoint, with about one pending \
         timer per key"
    );
    Ok(out)
}

/// The window count natively: a map from (key, window) to count, a timer
/// queue by window end, the watermark after every 1,024 records as the
/// source announces it. Returns records/s, windows fired, and windows/s.
fn native(records: u64, keys: u64, time: &GeneratorTime, size: u64) -> (f64, u64, f64) {
    let size = i64::try_from(size).unwrap_or(i64::MAX);
    let delay = i64::try_from(MAX_DELAY_MS).unwrap_or(0);
    let mut counts: HashMap<([u8; 16], i64), u64> = HashMap::new();
    let mut timers: BTreeMap<i64, Vec<[u8; 16]>> = BTreeMap::new();
    let mut fired = 0u64;
    let mut largest = i64::MIN;
    let started = Instant::now();
    let mut fire = |upto: i64,
                    counts: &mut HashMap<([u8; 16], i64), u64>,
                    timers: &mut BTreeMap<i64, Vec<[u8; 16]>>| {
        while let Some(entry) = timers.first_entry() {
            if *entry.key() > upto {
                break;
            }
            let (end, due) = entry.remove_entry();
            for key in due {
                std::hint::black_box(counts.remove(&(key, end + 1 - size)));
                fired += 1;
            }
        }
    };
    for n in 0..records {
        let key = key_of(n, keys);
        let t = event_time(time, n);
        let start = t - t.rem_euclid(size);
        let count = counts.entry((key, start)).or_insert(0);
        if *count == 0 {
            timers.entry(start + size - 1).or_default().push(key);
        }
        *count += 1;
        largest = largest.max(t);
        if n % 1024 == 1023 {
            fire(largest - delay - 1, &mut counts, &mut timers);
        }
    }
    fire(i64::MAX, &mut counts, &mut timers);
    let elapsed = started.elapsed().as_secs_f64();
    (records as f64 / elapsed, fired, fired as f64 / elapsed)
}
