//! `weir bench --suite reload`: how long records stop for a live reload, in
//! the README's two cases, a swap of an operator (a changed config: the
//! same work a new module does) and a rescale (1 to 2 instances and back),
//! at two sizes of the changed operator's keyed state.
//!
//! The pause runs from the request to the replacements running: a trial
//! `init`, the reload's checkpoint barrier reaching the operator, its
//! snapshot being written, and the new instances restoring it. So it grows
//! with the changed operator's state; the rest of the pipeline never stops.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::Engine;

use super::{BenchOptions, write_and_validate};
use crate::checkpoint::store::Store;
use crate::graph::ComponentId;
use crate::metrics::Metrics;
use crate::topology::reconfigure::Plan;
use crate::topology::{Checkpointing, Pipeline};

/// Records per second the generator makes while reloads happen.
const RATE: f64 = 50_000.0;

/// Runs the suite; returns its table.
pub(super) fn reload(
    options: &BenchOptions,
    engine: &Engine,
    word_count: &Path,
    dir: &Path,
) -> anyhow::Result<String> {
    let repeats = options.repeats.max(1) * 3;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "reload pause: generator ({RATE} rec/s over `keys` keys) -> word-count -> blackhole, \
         checkpoints only for the reloads; {repeats} swaps and {repeats} rescales each"
    );
    let _ = writeln!(
        out,
        "| backend | keys | swap median | swap max | rescale median | rescale max |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for backend in &options.backends {
        for keys in [10_000, options.reload_keys] {
            let (swaps, rescales) = pauses(engine, word_count, dir, backend, keys, repeats)?;
            let _ = writeln!(
                out,
                "| {backend} | {keys} | {} | {} | {} | {} |",
                ms(median(&swaps)),
                ms(max(&swaps)),
                ms(median(&rescales)),
                ms(max(&rescales)),
            );
        }
    }
    let _ = writeln!(
        out,
        "a pause: from the request to the replacements running (trial init, barrier, snapshot \
         of the changed operator, restore into the new instances)"
    );
    Ok(out)
}

/// Runs one pipeline and reloads it `repeats` times per case.
fn pauses(
    engine: &Engine,
    word_count: &Path,
    dir: &Path,
    backend: &str,
    keys: u64,
    repeats: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let data = dir.join(format!("reload-{backend}-{keys}"));
    if data.exists() {
        std::fs::remove_dir_all(&data)?;
    }
    let text = |parallelism: u32, generation: usize| {
        format!(
            "[daemon]\ndata_dir = {data:?}\n[state]\nbackend = \"{backend}\"\n\
             [checkpoint]\ninterval = \"1h\"\n\
             [sources.gen]\ntype = \"generator\"\nrate = {RATE:?}\nkeys = {keys}\nbatch_size = 256\n\
             [operators.count]\nmodule = {module:?}\ninputs = [\"gen\"]\nparallelism = {parallelism}\n\
             config = {{ generation = {generation} }}\n\
             [sinks.out]\ntype = \"blackhole\"\ninputs = [\"count\"]\n",
            data = data.display().to_string(),
            module = word_count.display().to_string(),
        )
    };
    let name = |i: usize| format!("reload-{backend}-{keys}-{i}");
    let mut current = write_and_validate(engine, dir, &name(0), &text(1, 0))?;
    let settings = current
        .topology
        .checkpoint
        .context("the benchmark topology has no [checkpoint]")?;
    let store = Store::open(&current.topology.data_dir.join("checkpoints"))?;
    let pipeline = Pipeline::start(
        &current,
        engine,
        Some(Checkpointing {
            next_id: 1,
            store,
            settings,
            restored: None,
        }),
        &Metrics::new()?,
    )?;
    // Every key written twice over before the first reload.
    std::thread::sleep(Duration::from_secs_f64(
        (2.0 * keys as f64 / RATE).clamp(1.0, 10.0),
    ));
    let handle = pipeline.handle();
    let count: BTreeSet<ComponentId> = std::iter::once(ComponentId::from("count")).collect();
    let plan = Plan {
        retire: count.clone(),
        start: count,
    };
    let (mut swaps, mut rescales) = (Vec::new(), Vec::new());
    let mut parallelism = 1;
    for i in 1..=2 * repeats {
        let rescale = i % 2 == 0;
        if rescale {
            parallelism = 3 - parallelism;
        }
        let next = write_and_validate(engine, dir, &name(i), &text(parallelism, i))?;
        let applied = handle
            .reconfigure(&current, &next, &plan)
            .map_err(|e| anyhow::anyhow!("reload {i}: {e}"))?;
        if rescale {
            rescales.push(applied.pause);
        } else {
            swaps.push(applied.pause);
        }
        current = next;
    }
    pipeline.stop_signal().stop();
    pipeline.wait()?;
    Ok((swaps, rescales))
}

fn median(pauses: &[Duration]) -> Duration {
    let mut sorted = pauses.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

fn max(pauses: &[Duration]) -> Duration {
    pauses.iter().max().copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
