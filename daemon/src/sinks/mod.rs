//! Sinks: where records leave the pipeline. Each runs on its own thread and
//! reads its merged inputs until every producer has ended.

mod encode;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use crate::config::Encoding;
use crate::graph::{ComponentId, SinkSpec};
use crate::topology::TaskError;
use crate::topology::input::InputGate;
use crate::topology::task::TaskStats;

/// A sink, opened and ready to run.
pub enum Sink {
    /// Writes to a file.
    File {
        /// The file.
        path: PathBuf,
        /// Its writer.
        writer: BufWriter<File>,
        /// How records are written.
        encoding: Encoding,
    },
    /// Writes to standard output.
    Stdout {
        /// How records are written.
        encoding: Encoding,
    },
    /// Counts and drops.
    Blackhole,
}

impl Sink {
    /// Opens a sink; the output file (and its directory) is created now, so a
    /// path that cannot be written fails before any record flows.
    pub fn open(id: &ComponentId, spec: &SinkSpec) -> Result<Self, TaskError> {
        Ok(match spec {
            SinkSpec::File { path, encoding } => {
                let fail = |e: std::io::Error| TaskError::Sink {
                    id: id.clone(),
                    message: format!("cannot create {}: {e}", path.display()),
                };
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(fail)?;
                }
                let file = File::create(path).map_err(fail)?;
                Self::File {
                    path: path.clone(),
                    writer: BufWriter::with_capacity(256 * 1024, file),
                    encoding: *encoding,
                }
            }
            SinkSpec::Stdout { encoding } => Self::Stdout {
                encoding: *encoding,
            },
            SinkSpec::Blackhole => Self::Blackhole,
        })
    }

    /// Consumes every input until all have ended, then flushes (and for a file,
    /// syncs) what it wrote.
    pub fn run(self, id: &ComponentId, mut inputs: InputGate) -> Result<TaskStats, TaskError> {
        let io = |what: &str, e: std::io::Error| TaskError::Sink {
            id: id.clone(),
            message: format!("{what}: {e}"),
        };
        let mut records = 0u64;
        match self {
            Self::Blackhole => {
                while let Some((_, batch)) = inputs.next_batch()? {
                    records += u64::from(batch.len());
                }
            }
            Self::Stdout { encoding } => {
                let stdout = std::io::stdout();
                let mut out = BufWriter::new(stdout.lock());
                while let Some((_, batch)) = inputs.next_batch()? {
                    records += u64::from(batch.len());
                    encode::write_batch(&mut out, &batch, encoding)
                        .map_err(|e| io("cannot write to stdout", e))?;
                    out.flush().map_err(|e| io("cannot write to stdout", e))?;
                }
            }
            Self::File {
                path,
                mut writer,
                encoding,
            } => {
                let what = format!("cannot write {}", path.display());
                let result = (|| {
                    while let Some((_, batch)) = inputs.next_batch()? {
                        records += u64::from(batch.len());
                        encode::write_batch(&mut writer, &batch, encoding)
                            .map_err(|e| io(&what, e))?;
                        writer.flush().map_err(|e| io(&what, e))?;
                    }
                    Ok(())
                })();
                // Whatever arrived is kept, even when the pipeline failed upstream.
                writer.flush().map_err(|e| io(&what, e))?;
                writer.get_ref().sync_all().map_err(|e| io(&what, e))?;
                result?;
            }
        }
        Ok(TaskStats {
            records_in: records,
            records_out: 0,
        })
    }
}
