//! Applying a reload to the running pipeline at a checkpoint barrier, so
//! unchanged components keep running (see [`super::rewire`]).
//!
//! 1. Channels are made for every edge of the new topology that touches a
//!    started (changed or added) component.
//! 2. The coordinator triggers the next checkpoint, `n`, after leaving every
//!    retired task (changed or removed components) and every unchanged task
//!    next to one its instruction for `n`.
//! 3. Once `n` is complete, the retired tasks have stopped and their state is
//!    durable; the started components are built from checkpoint `n` (keyed
//!    state by key group, operator state through the plugin's `restore`,
//!    source positions) and start, and checkpoints go on with them.
//!
//! Unchanged operators keep their plugin instance and their state in memory;
//! only the state of replaced operators goes through checkpoint `n`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use thiserror::Error;

use super::pipeline::{Built, Inputs, Outputs, PipelineHandle, wire};
use super::rewire::{Instruction, Rewiring};
use crate::checkpoint::restore;
use crate::checkpoint::store::checkpoint_dir;
use crate::checkpoint::{CheckpointId, Reconfiguration, Report, TaskKey};
use crate::graph::ComponentId;
use crate::validate::Validated;

/// Why a reload could not be applied to the running pipeline.
#[derive(Debug, Error)]
pub enum ReconfigureError {
    /// Nothing was changed: the pipeline runs on as before.
    #[error("{0}")]
    NotApplied(String),
    /// The retired tasks stopped but their replacements could not start: the
    /// pipeline must be restarted from its latest checkpoint.
    #[error("{0}")]
    Broken(String),
}

/// A reload applied in place.
#[derive(Debug, Clone, Copy)]
pub struct Applied {
    /// The checkpoint at whose barrier it happened.
    pub checkpoint: CheckpointId,
    /// From the request to the new tasks running.
    pub pause: Duration,
}

/// Which components go and which come.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    /// Changed and removed components (ids of the old topology).
    pub retire: BTreeSet<ComponentId>,
    /// Changed and added components (ids of the new topology).
    pub start: BTreeSet<ComponentId>,
}

impl PipelineHandle {
    /// Runs the `init` of each of `ids`' new versions once, under its call
    /// deadline, on empty state: what any reload checks before it stops
    /// anything, so a plugin that rejects its config (or never returns from
    /// `init`) fails the reload, not the running pipeline.
    pub fn try_init(&self, new: &Validated, ids: &BTreeSet<ComponentId>) -> Result<(), String> {
        for c in new
            .topology
            .components
            .iter()
            .filter(|c| ids.contains(&c.id))
        {
            self.ctx
                .try_init(new, c)
                .map_err(|e| format!("the new topology cannot start: {e}"))?;
        }
        Ok(())
    }

    /// Replaces the components of `plan` at the next checkpoint barrier;
    /// everything else keeps running. Blocks until the new tasks run.
    pub fn reconfigure(
        &self,
        old: &Validated,
        new: &Validated,
        plan: &Plan,
    ) -> Result<Applied, ReconfigureError> {
        let started = Instant::now();
        let ctx = &self.ctx;
        // A chain is replaced whole.
        let plan = &super::chain::expand(plan, &old.topology, &new.topology);
        let not_applied = |m: &str| ReconfigureError::NotApplied(m.to_owned());
        let Some(root) = ctx.root.clone() else {
            return Err(not_applied("the pipeline runs without checkpoints"));
        };
        let topology = &new.topology;
        for c in topology
            .components
            .iter()
            .filter(|c| plan.start.contains(&c.id))
        {
            ctx.try_init(new, c).map_err(|e| {
                ReconfigureError::NotApplied(format!("the new topology cannot start: {e}"))
            })?;
        }
        let starting = |id: &ComponentId| plan.start.contains(id);
        let (mut outputs, mut inputs) = wire(topology, &|p, q| starting(p) || starting(q));

        let mut rewiring: HashMap<TaskKey, Rewiring> = HashMap::new();
        let key = |(component, instance): (ComponentId, u32)| TaskKey {
            component,
            instance,
        };
        for (at, edges) in outputs.extract_if(|(id, _), _| !starting(id)) {
            rewiring.entry(key(at)).or_default().add_edges = edges;
        }
        for (at, channels) in inputs.extract_if(|(id, _), _| !starting(id)) {
            rewiring.entry(key(at)).or_default().add_inputs = channels;
        }
        for retired in &plan.retire {
            let Some(c) = old.topology.get(retired) else {
                continue;
            };
            for producer in c.inputs.iter().filter(|p| !plan.retire.contains(*p)) {
                let parallelism = old.topology.get(producer).map_or(1, |p| p.parallelism);
                for instance in 0..parallelism {
                    rewiring
                        .entry(key((producer.clone(), instance)))
                        .or_default()
                        .retire_edges
                        .push(retired.clone());
                }
            }
        }
        let retire: BTreeSet<TaskKey> = plan
            .retire
            .iter()
            .filter_map(|id| old.topology.get(id))
            .flat_map(|c| (0..c.parallelism).map(|i| key((c.id.clone(), i))))
            .collect();

        let mailboxes = ctx
            .mailboxes
            .lock()
            .map_err(|_| not_applied("the pipeline's mailboxes are poisoned"))?
            .clone();
        let mut posts = Vec::new();
        for task in &retire {
            let mailbox = mailboxes.get(task).cloned().ok_or_else(|| {
                not_applied(&format!(
                    "no running task {} {}",
                    task.component, task.instance
                ))
            })?;
            posts.push((mailbox, None));
        }
        for (task, r) in rewiring {
            let mailbox = mailboxes.get(&task).cloned().ok_or_else(|| {
                not_applied(&format!(
                    "no running task {} {}",
                    task.component, task.instance
                ))
            })?;
            posts.push((mailbox, Some(r)));
        }

        let new_tasks: usize = plan
            .start
            .iter()
            .filter_map(|id| topology.get(id))
            .map(|c| c.parallelism as usize)
            .sum();
        ctx.expected.fetch_add(new_tasks, Ordering::SeqCst);
        let posted = Arc::new(AtomicBool::new(false));
        let posted_by_prepare = posted.clone();
        let (reply, answer) = bounded(1);
        let sent = ctx.reports.send(Report::Reconfigure(Reconfiguration {
            prepare: Box::new(move |id| {
                for (mailbox, rewiring) in posts {
                    mailbox.post(
                        id,
                        rewiring.map_or(Instruction::Retire, Instruction::Rewire),
                    );
                }
                posted_by_prepare.store(true, Ordering::SeqCst);
            }),
            retire: retire.clone(),
            reply,
        }));
        let outcome = match sent {
            Ok(()) => answer
                .recv_timeout(ctx.checkpoint_timeout + Duration::from_secs(5))
                .map_err(|_| "no answer from the checkpoint coordinator".to_owned())
                .and_then(|a| a),
            Err(_) => Err("the checkpoint coordinator has stopped".to_owned()),
        };
        let checkpoint = match outcome {
            Ok(id) => id,
            Err(message) if !posted.load(Ordering::SeqCst) => {
                ctx.expected.fetch_sub(new_tasks, Ordering::SeqCst);
                return Err(ReconfigureError::NotApplied(message));
            }
            Err(message) => {
                ctx.expected.fetch_sub(new_tasks, Ordering::SeqCst);
                return Err(ReconfigureError::Broken(format!(
                    "the checkpoint of the reload failed: {message}"
                )));
            }
        };
        let mut spawned = 0;
        let result = self.start_new(
            new,
            plan,
            &checkpoint_dir(&root, checkpoint),
            &retire,
            (outputs, inputs),
            &mut spawned,
        );
        if result.is_err() {
            // `wait` must not wait for tasks that never started.
            ctx.expected
                .fetch_sub(new_tasks - spawned, Ordering::SeqCst);
        }
        result?;
        Ok(Applied {
            checkpoint,
            pause: started.elapsed(),
        })
    }

    /// After the reload's checkpoint: builds and starts the new tasks.
    fn start_new(
        &self,
        new: &Validated,
        plan: &Plan,
        checkpoint: &std::path::Path,
        retire: &BTreeSet<TaskKey>,
        (mut outputs, mut inputs): (Outputs, Inputs),
        spawned: &mut usize,
    ) -> Result<(), ReconfigureError> {
        let ctx = &self.ctx;
        let topology = &new.topology;

        // The retired tasks end right after the barrier; their RocksDB handles
        // must be closed before the replacements open the same directories.
        for task in retire {
            let handle = ctx.threads.lock().ok().and_then(|mut t| t.remove(task));
            if let Some(handle) = handle {
                let _ = handle.join();
            }
            if let Ok(mut boxes) = ctx.mailboxes.lock() {
                boxes.remove(task);
            }
        }
        let broken = |m: String| ReconfigureError::Broken(m);
        let restored = restore::open(checkpoint).map_err(|e| {
            broken(format!(
                "cannot read the reload's checkpoint {}: {e}",
                checkpoint.display()
            ))
        })?;
        let mut built = Built::default();
        for c in topology
            .components
            .iter()
            .filter(|c| plan.start.contains(&c.id))
        {
            ctx.build(
                new,
                Some(&restored),
                c,
                &mut outputs,
                &mut inputs,
                &mut built,
            )
            .map_err(|e| broken(format!("the new topology cannot start: {e}")))?;
        }
        let tasks: Vec<TaskKey> = built.ready.iter().map(|(k, _)| k.clone()).collect();
        ctx.spawn_all(topology, built.ready, spawned)
            .map_err(|e| broken(format!("cannot start a thread: {e}")))?;
        let _ = ctx.reports.send(Report::Resume {
            sources: built.triggers,
            tasks,
        });
        Ok(())
    }

    /// Stops the pipeline without a final checkpoint (after a reload broke
    /// it): the supervisor restarts from the latest complete checkpoint.
    pub fn abort(&self) {
        let _ = self.ctx.reports.send(Report::Stop);
        self.ctx.stop.stop();
    }
}
