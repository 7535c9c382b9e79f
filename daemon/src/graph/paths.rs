//! What the files a topology names must be: a file source's input exists and
//! is a regular file (a FIFO or device would block or never end), and no sink
//! writes where a source reads or where another sink writes.

use std::path::PathBuf;

use super::builder::{Builder, Pending};
use super::{ComponentKind, SinkSpec, SourceInput};

impl Builder<'_> {
    /// Checks the files the components read and write.
    pub(super) fn check_paths(&mut self, pending: &[Pending<'_>]) {
        let mut inputs: Vec<(String, PathBuf)> = Vec::new();
        for p in pending {
            let Some(ComponentKind::Source(spec)) = &p.kind else {
                continue;
            };
            let SourceInput::File { path, .. } = &spec.input else {
                continue;
            };
            let problem = match crate::files::regular(path) {
                Ok(_) => None,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Some(format!("`path` {} does not exist", path.display()))
                }
                Err(e) => Some(format!("`path`: {e}; a file source reads regular files")),
            };
            if let Some(message) = problem {
                self.errors.push(self.at(p.key, &p.label(), message));
            }
            inputs.push((p.label(), crate::files::resolve(path)));
        }

        let mut outputs: Vec<(String, PathBuf)> = Vec::new();
        for p in pending {
            let Some(ComponentKind::Sink(spec)) = &p.kind else {
                continue;
            };
            let (target, is_dir) = match spec {
                SinkSpec::File { path, .. } => (crate::files::resolve(path), false),
                SinkSpec::Directory { dir, .. } => (crate::files::resolve(dir), true),
                SinkSpec::Stdout { .. }
                | SinkSpec::Blackhole
                | SinkSpec::Kafka(_)
                | SinkSpec::Nats(_) => continue,
            };
            for (source, input) in &inputs {
                let overwrites = if is_dir {
                    input.starts_with(&target)
                } else {
                    *input == target
                };
                if overwrites {
                    let message = format!(
                        "writes to {}, which {source} reads: the sink would destroy its input",
                        target.display()
                    );
                    self.errors.push(self.at(p.key, &p.label(), message));
                }
            }
            for (other, earlier) in &outputs {
                if *earlier == target {
                    let message = format!("writes to {}, as {other} does", target.display());
                    self.errors.push(self.at(p.key, &p.label(), message));
                }
            }
            outputs.push((p.label(), target));
        }
    }
}
