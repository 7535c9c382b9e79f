//! `weir bench`: the pipeline generator → pass-through operator → blackhole,
//! with a WebAssembly operator and with the native one, in the same process, at
//! several batch sizes; prints records/s and the ratio.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use wasmtime::Engine;

use crate::config;
use crate::graph;
use crate::topology::Pipeline;
use crate::validate::Validated;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The WebAssembly pass-through component.
    pub module: PathBuf,
    /// Records per run at 1024-record batches; smaller batches run
    /// proportionally fewer (at least 100,000), since they are slower.
    pub records: u64,
    /// Value size in bytes.
    pub value_size: usize,
    /// Batch sizes to try.
    pub batch_sizes: Vec<usize>,
}

/// One measured pipeline.
#[derive(Debug, Clone)]
pub struct BenchRow {
    /// Records per batch.
    pub batch_size: usize,
    /// Records moved.
    pub records: u64,
    /// Records/s with the native operator.
    pub native_rate: f64,
    /// Records/s with the WebAssembly operator.
    pub wasm_rate: f64,
}

/// Runs the benchmark and returns its rows.
pub fn run(options: &BenchOptions, engine: &Engine) -> anyhow::Result<Vec<BenchRow>> {
    let module = std::fs::canonicalize(&options.module).with_context(|| {
        format!(
            "cannot find the pass-through module {}",
            options.module.display()
        )
    })?;
    let mut rows = Vec::new();
    for &batch_size in &options.batch_sizes {
        let records = (options.records * batch_size as u64 / 1024)
            .max(100_000)
            .min(options.records);
        let operator = "type = \"passthrough\"".to_owned();
        let native_rate = run_once(engine, &operator, records, options.value_size, batch_size)?;
        let operator = format!("module = {:?}", module.display().to_string());
        let wasm_rate = run_once(engine, &operator, records, options.value_size, batch_size)?;
        rows.push(BenchRow {
            batch_size,
            records,
            native_rate,
            wasm_rate,
        });
    }
    Ok(rows)
}

/// The rows as a table.
pub fn format(rows: &[BenchRow], value_size: usize) -> String {
    let mut out = format!(
        "generator -> pass-through -> blackhole, {value_size}-byte values\n\
         {:>6} {:>11} {:>16} {:>16} {:>7}\n",
        "batch", "records", "native rec/s", "wasm rec/s", "ratio"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:>6} {:>11} {:>16.0} {:>16.0} {:>6.0}%",
            r.batch_size,
            r.records,
            r.native_rate,
            r.wasm_rate,
            100.0 * r.wasm_rate / r.native_rate
        );
    }
    out
}

fn run_once(
    engine: &Engine,
    operator: &str,
    records: u64,
    value_size: usize,
    batch_size: usize,
) -> anyhow::Result<f64> {
    let text = format!(
        "[sources.gen]\ntype = \"generator\"\ncount = {records}\nvalue_size = {value_size}\nbatch_size = {batch_size}\n\
         [operators.pass]\n{operator}\ninputs = [\"gen\"]\n\
         [sinks.out]\ntype = \"blackhole\"\ninputs = [\"pass\"]\n"
    );
    let path = Path::new("<bench>");
    let file = config::parse_str(path, text).map_err(diagnostics)?;
    let topology = graph::build(&file).map_err(diagnostics)?;
    let linker =
        crate::operator_host::module::new_linker(engine).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let mut modules = std::collections::HashMap::new();
    for c in &topology.components {
        if let graph::ComponentKind::Operator(graph::OperatorSpec {
            body: graph::OperatorBody::Wasm { module, .. },
            ..
        }) = &c.kind
        {
            let loaded = crate::operator_host::LoadedModule::load(engine, &linker, module)?;
            modules.insert(module.clone(), std::sync::Arc::new(loaded));
        }
    }
    let validated = Validated { topology, modules };
    let report = Pipeline::start(&validated, engine)?.wait()?;
    let moved: u64 = report.sinks.iter().map(|(_, n)| n).sum();
    if moved != records {
        bail!("the pipeline moved {moved} records, expected {records}");
    }
    Ok(records as f64 / report.elapsed.as_secs_f64())
}

fn diagnostics(errors: Vec<crate::diagnostic::Diagnostic>) -> anyhow::Error {
    anyhow::anyhow!(
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    )
}
