//! Changing a running pipeline at a checkpoint barrier (a hot reload that
//! keeps unchanged components running).
//!
//! The change happens at one barrier, `n`. Before `n` is triggered, every task
//! the change touches gets an [`Instruction`] for `n` in its [`Mailbox`]:
//!
//! - a changed or removed component's tasks are *retired*: at barrier `n` they
//!   snapshot as at any barrier, forward it, end their outputs and stop. Their
//!   replacements start from checkpoint `n`.
//! - an unchanged task next to a changed one is *rewired*: at barrier `n`,
//!   after forwarding it, its edges to retired consumers are ended and new
//!   edges to the replacements take their place, and channels from new
//!   producers join its inputs.
//!
//! Everything sent after barrier `n` waits in the new channels until the new
//! instances run, so no record is lost or seen twice, and unchanged tasks keep
//! their threads, plugin instances and in-memory state.

use std::sync::{Arc, Mutex};

use crossbeam_channel::Receiver;

use super::input::InputGate;
use super::output::{Edge, Output};
use crate::batch::Message;
use crate::checkpoint::CheckpointId;
use crate::graph::ComponentId;

/// What a task does at the reload's barrier.
#[derive(Debug)]
pub enum Instruction {
    /// Stop after the barrier: the component is changed or removed.
    Retire,
    /// Swap edges and add inputs after the barrier.
    Rewire(Rewiring),
}

/// New connections for an unchanged task.
#[derive(Debug, Default)]
pub struct Rewiring {
    /// Consumers whose edges end (retired components).
    pub retire_edges: Vec<ComponentId>,
    /// Edges to started components.
    pub add_edges: Vec<Edge>,
    /// Channels from started components.
    pub add_inputs: Vec<Receiver<Message>>,
}

impl Rewiring {
    /// Applies it: retired edges ended first, so a replaced consumer's old
    /// instances see the end of this producer right after the barrier.
    pub fn apply(self, output: Option<&mut Output>, inputs: Option<&mut InputGate>) {
        let added = match output {
            Some(output) => self.apply_to_output(output),
            None => self.add_inputs,
        };
        if let Some(inputs) = inputs {
            inputs.add(added);
        }
    }

    /// Applies the output side; the channels to add to the inputs are left
    /// to whoever reads them.
    pub fn apply_to_output(self, output: &mut Output) -> Vec<Receiver<Message>> {
        output.retire_edges(&self.retire_edges);
        output.add_edges(self.add_edges);
        self.add_inputs
    }
}

/// One task's instruction for a coming barrier.
#[derive(Debug, Clone, Default)]
pub struct Mailbox(Arc<Mutex<Option<(CheckpointId, Instruction)>>>);

impl Mailbox {
    /// Leaves `instruction` for barrier `at`.
    pub fn post(&self, at: CheckpointId, instruction: Instruction) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some((at, instruction));
        }
    }

    /// The instruction for barrier `at`, if there is one.
    pub fn take(&self, at: CheckpointId) -> Option<Instruction> {
        let mut slot = self.0.lock().ok()?;
        match slot.take() {
            Some((id, instruction)) if id == at => Some(instruction),
            other => {
                *slot = other;
                None
            }
        }
    }
}
