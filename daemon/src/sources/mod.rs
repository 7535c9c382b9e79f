//! Sources: where records enter the pipeline. Each runs on its own thread, sends
//! batches through its [`Output`] and checks the [`StopSignal`] between batches.

mod file;
mod generator;
mod stdin;

use crate::graph::{ComponentId, SourceInput, SourceSpec};
use crate::topology::output::Output;
use crate::topology::task::TaskStats;
use crate::topology::{StopSignal, TaskError};

/// A source, opened and ready to run.
pub enum Source {
    /// Lines of a file.
    File(file::FileSource),
    /// Lines of standard input.
    Stdin(stdin::StdinSource),
    /// A deterministic sequence.
    Generator(generator::Generator),
}

impl Source {
    /// Opens a source; a file that cannot be opened is an error now, not later.
    pub fn open(id: &ComponentId, spec: &SourceSpec) -> Result<Self, TaskError> {
        let batch_size = spec.batch_size;
        Ok(match &spec.input {
            SourceInput::File { path, follow } => Self::File(
                file::FileSource::open(path, *follow, batch_size).map_err(|e| {
                    TaskError::Source {
                        id: id.clone(),
                        message: format!("cannot open {}: {e}", path.display()),
                    }
                })?,
            ),
            SourceInput::Stdin => Self::Stdin(stdin::StdinSource::new(batch_size)),
            SourceInput::Generator {
                count,
                rate,
                value_size,
                keys,
            } => {
                let sequence = generator::Sequence {
                    count: *count,
                    rate: *rate,
                    value_size: *value_size,
                    keys: *keys,
                };
                Self::Generator(generator::Generator::new(sequence, batch_size))
            }
        })
    }

    /// Produces records until the input ends or a stop is asked for, then ends
    /// the output.
    pub fn run(
        self,
        id: &ComponentId,
        stop: &StopSignal,
        mut output: Output,
    ) -> Result<TaskStats, TaskError> {
        let io = |e: std::io::Error| TaskError::Source {
            id: id.clone(),
            message: e.to_string(),
        };
        match self {
            Self::File(s) => s
                .run(stop, &mut output)
                .map_err(|e| e.into_task_error(io))?,
            Self::Stdin(s) => s
                .run(stop, &mut output)
                .map_err(|e| e.into_task_error(io))?,
            Self::Generator(s) => s.run(stop, &mut output)?,
        }
        output.end()?;
        Ok(TaskStats {
            records_in: 0,
            records_out: output.records(),
        })
    }
}

/// A source's failure: its own I/O, or its consumers going away.
enum SourceError {
    Io(std::io::Error),
    Task(TaskError),
}

impl SourceError {
    fn into_task_error(self, io: impl FnOnce(std::io::Error) -> TaskError) -> TaskError {
        match self {
            Self::Io(e) => io(e),
            Self::Task(e) => e,
        }
    }
}

impl From<std::io::Error> for SourceError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<TaskError> for SourceError {
    fn from(e: TaskError) -> Self {
        Self::Task(e)
    }
}

/// Strips a line's `\n` or `\r\n`.
fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}
