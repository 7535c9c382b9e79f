//! Everything `weir validate` checks, and `weir run` checks first: the config
//! parses, the graph is sound, and every module compiles and fits the interface.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime::Engine;

use crate::config;
use crate::diagnostic::Diagnostic;
use crate::graph::{self, Topology};
use crate::operator_host::LoadedModule;
use crate::operator_host::module::new_linker;

/// A topology whose modules are compiled and checked.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The graph.
    pub topology: Topology,
    /// Every module it uses, by resolved path.
    pub modules: HashMap<PathBuf, Arc<LoadedModule>>,
}

/// Loads and checks a topology file, returning every problem found.
pub fn validate(path: &Path, engine: &Engine) -> Result<Validated, Vec<Diagnostic>> {
    let file = config::load_file(path)?;
    let mut errors = Vec::new();

    let linker = new_linker(engine)
        .map_err(|e| vec![Diagnostic::file(path, format!("internal error: {e:#}"))])?;
    let mut modules: HashMap<PathBuf, Arc<LoadedModule>> = HashMap::new();
    let mut failed: Vec<PathBuf> = Vec::new();
    let mut module_of: HashMap<&str, PathBuf> = HashMap::new();
    for (key, op) in &file.raw.operators {
        let Some(module) = &op.module else { continue };
        let resolved = if module.get_ref().is_absolute() {
            module.get_ref().clone()
        } else {
            file.dir.join(module.get_ref())
        };
        module_of.insert(key.get_ref(), resolved.clone());
        if modules.contains_key(&resolved) || failed.contains(&resolved) {
            continue;
        }
        match LoadedModule::load(engine, &linker, &resolved) {
            Ok(loaded) => {
                modules.insert(resolved, Arc::new(loaded));
            }
            Err(e) => {
                errors.push(
                    Diagnostic::file(&resolved, e.to_string())
                        .in_component(format!("operators.{}", key.get_ref())),
                );
                failed.push(resolved);
            }
        }
    }
    // The graph is checked knowing each module's side outputs, so an input
    // that names one it does not declare is an error here.
    let outputs = |id: &str| {
        module_of
            .get(id)
            .and_then(|path| modules.get(path))
            .map(|m| m.outputs.clone())
    };
    let topology = graph::build_with_outputs(&file, &outputs);
    if let Err(graph_errors) = &topology {
        // Graph errors first, as they point into the config file.
        errors.splice(0..0, graph_errors.iter().cloned());
    }
    match topology {
        Ok(topology) if errors.is_empty() => Ok(Validated { topology, modules }),
        _ => Err(errors),
    }
}
