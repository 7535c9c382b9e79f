//! The loop of an operator instance.

use super::TaskError;
use super::input::InputGate;
use super::output::Output;
use crate::graph::ComponentId;
use crate::operator_host::Processor;

/// What a finished task did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskStats {
    /// Records received.
    pub records_in: u64,
    /// Records sent on.
    pub records_out: u64,
}

/// Runs one operator instance until all its inputs end.
pub fn run_operator(
    operator: ComponentId,
    instance: u32,
    mut processor: Box<dyn Processor>,
    mut inputs: InputGate,
    mut output: Output,
) -> Result<TaskStats, TaskError> {
    let mut position = 0u64;
    while let Some((_, batch)) = inputs.next_batch()? {
        let emitted = processor
            .process(&batch)
            .map_err(|error| TaskError::Operator {
                operator: operator.clone(),
                instance,
                first: position,
                len: batch.len(),
                error,
            })?;
        position += u64::from(batch.len());
        for out in emitted {
            output.send(out)?;
        }
    }
    output.end()?;
    Ok(TaskStats {
        records_in: position,
        records_out: output.records(),
    })
}
