//! Building, starting and waiting for the whole set of tasks.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};
use thiserror::Error;
use wasmtime::Engine;

use super::input::InputGate;
use super::liveness::{Beat, Liveness};
use super::output::{Edge, Output};
use super::rewire::Mailbox;
use super::snapshot_writer::{OperatorCheckpointing, Writers};
use super::stage::{Stage, drive};
use super::task::{OperatorTask, TaskStats, run_operator};
use super::{StopSignal, TaskError};
use crate::batch::Message;
use crate::checkpoint::coordinator::{self, Coordinator, Outcome};
use crate::checkpoint::restore::Restored;
use crate::checkpoint::stats::Summary;
use crate::checkpoint::store::Store;
use crate::checkpoint::{self, CheckpointId, Report, TaskCheckpointing, TaskKey, Trigger};
use crate::config::Partition;
use crate::graph::CheckpointSettings;
use crate::graph::{Component, ComponentId, ComponentKind, OperatorBody, OperatorSpec, Topology};
use crate::metrics::{Metrics, TaskKind, TaskMetrics};
use crate::operator_host::CallError;
use crate::operator_host::plugin_metrics::PluginMetrics;
use crate::operator_host::{EpochTicker, Processor, WasmOperator, native};
use crate::sinks::{Sink, SinkStage};
use crate::sources::{Source, SourceCheckpointing};
use crate::state::snapshot::SnapshotReader;
use crate::state::{OperatorStore, Registry, key_group_range};
use crate::validate::Validated;

/// Why a pipeline could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// A component could not be opened or initialised.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Spawn(#[from] std::io::Error),
}

/// Checkpoints for a run: where they go, how often, and what to start from.
#[derive(Debug)]
pub struct Checkpointing {
    /// The checkpoint directory.
    pub store: Store,
    /// `[checkpoint]`.
    pub settings: CheckpointSettings,
    /// The checkpoint to start from, its sink files already committed.
    pub restored: Option<Restored>,
    /// The id the next checkpoint takes.
    pub next_id: CheckpointId,
}

/// What a pipeline did, once every task has finished.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// Wall time from start to the last task ending.
    pub elapsed: Duration,
    /// Records each source produced.
    pub sources: Vec<(ComponentId, u64)>,
    /// Records each sink consumed.
    pub sinks: Vec<(ComponentId, u64)>,
    /// The final checkpoint, when checkpoints are on.
    pub final_checkpoint: Option<CheckpointId>,
    /// What checkpoints cost over the run.
    pub checkpoints: Summary,
}

type Done = (ComponentId, bool, Result<TaskStats, TaskError>);

/// Channels to consumers, by producer instance.
pub(super) type Outputs = HashMap<(ComponentId, u32), Vec<Edge>>;
/// Channels from producers, by consumer instance.
pub(super) type Inputs = HashMap<(ComponentId, u32), Vec<Receiver<Message>>>;

/// What every task of one pipeline shares, so tasks can be started when the
/// pipeline starts and later, when a reload replaces some of them.
pub(super) struct Context {
    pub(super) stop: StopSignal,
    done_tx: Sender<Done>,
    /// Tasks started (or about to be, during a reload): `wait` waits for as
    /// many to finish.
    pub(super) expected: AtomicUsize,
    pub(super) reports: Sender<Report>,
    /// Where checkpoints go, when they are on.
    pub(super) root: Option<PathBuf>,
    incremental: bool,
    writers: Writers,
    liveness: Liveness,
    metrics: Arc<Metrics>,
    pub(super) mailboxes: Mutex<HashMap<TaskKey, Mailbox>>,
    pub(super) threads: Mutex<HashMap<TaskKey, JoinHandle<()>>>,
    /// `[checkpoint] timeout`.
    pub(super) checkpoint_timeout: Duration,
    /// Complete checkpoints, for the tasks that act on them (broker sinks).
    pub(super) completions: Arc<checkpoint::Completions>,
}

/// A running pipeline: one thread per source, operator instance and sink.
pub struct Pipeline {
    ctx: Arc<Context>,
    done: Receiver<Done>,
    started: Instant,
    coordinator: Option<Coordinator>,
    control: Option<checkpoint::Control>,
    _ticker: EpochTicker,
}

/// A handle on a running pipeline for changing it (see [`super::reconfigure`]).
#[derive(Clone)]
pub struct PipelineHandle {
    pub(super) ctx: Arc<Context>,
}

/// A task built and ready to run on its thread, or to be chained after
/// another task.
pub(super) enum Ready {
    Source(Source, Output, Option<SourceCheckpointing>),
    Operator(OperatorTask),
    Sink(SinkStage, InputGate, Beat, TaskMetrics),
}

impl Ready {
    fn output_mut(&mut self) -> Option<&mut Output> {
        match self {
            Self::Source(_, output, _) => Some(output),
            Self::Operator(task) => Some(&mut task.output),
            Self::Sink(..) => None,
        }
    }

    /// Whether another task may call it (chained): a source cannot be.
    fn can_chain(&self) -> bool {
        !matches!(self, Self::Source(..))
    }

    /// The task as a stage another calls (chained), unless it is a source.
    fn into_stage(self) -> Option<Box<dyn Stage>> {
        match self {
            Self::Operator(task) => Some(Box::new(task.into_stage().0)),
            Self::Sink(stage, ..) => Some(Box::new(stage)),
            Self::Source(..) => None,
        }
    }
}

fn restore_error(what: String) -> impl FnOnce(String) -> TaskError {
    move |message| TaskError::Restore { what, message }
}

/// Creates the channels of every edge (producer, consumer) of `topology` for
/// which `include` holds: one per producer/consumer instance pair.
pub(super) fn wire(
    topology: &Topology,
    include: &dyn Fn(&ComponentId, &ComponentId) -> bool,
) -> (Outputs, Inputs) {
    let capacity = topology.channel_capacity;
    let mut outputs = Outputs::new();
    let mut inputs = Inputs::new();
    for consumer in &topology.components {
        for (index, input) in consumer.inputs.iter().enumerate() {
            if !include(input, &consumer.id) {
                continue;
            }
            let output = consumer.input_outputs.get(index).map_or(0, |(o, _)| *o);
            let producers = topology.get(input).map_or(1, |p| p.parallelism);
            for up in 0..producers {
                let mut senders: Vec<Sender<Message>> = Vec::new();
                let targets = match consumer.partition {
                    Partition::Forward => up..up + 1,
                    _ => 0..consumer.parallelism,
                };
                for down in targets {
                    let (tx, rx) = bounded(capacity);
                    senders.push(tx);
                    inputs
                        .entry((consumer.id.clone(), down))
                        .or_default()
                        .push(rx);
                }
                outputs
                    .entry((input.clone(), up))
                    .or_default()
                    .push(Edge::new(
                        (consumer.id.clone(), index as u32),
                        output,
                        consumer.partition,
                        senders,
                        topology.state.max_parallelism,
                    ));
            }
        }
    }
    (outputs, inputs)
}

/// Tasks built for some components, with the sources' trigger channels.
#[derive(Default)]
pub(super) struct Built {
    pub(super) ready: Vec<(TaskKey, Ready)>,
    pub(super) triggers: Vec<(TaskKey, Sender<Trigger>)>,
}

impl Context {
    fn task_checkpointing(
        &self,
        component: &ComponentId,
        instance: u32,
    ) -> Option<TaskCheckpointing> {
        self.root.as_ref().map(|root| TaskCheckpointing {
            task: TaskKey {
                component: component.clone(),
                instance,
            },
            root: root.clone(),
            reports: self.reports.clone(),
        })
    }

    fn mailbox(&self, key: &TaskKey) -> Mailbox {
        let mailbox = Mailbox::default();
        if let Ok(mut boxes) = self.mailboxes.lock() {
            boxes.insert(key.clone(), mailbox.clone());
        }
        mailbox
    }

    /// Opens, instantiates and restores every instance of component `c`,
    /// taking its channels out of `outputs` and `inputs`.
    pub(super) fn build(
        &self,
        validated: &Validated,
        restored: Option<&Restored>,
        c: &Component,
        outputs: &mut Outputs,
        inputs: &mut Inputs,
        built: &mut Built,
    ) -> Result<(), StartError> {
        let topology = &validated.topology;
        let metrics = &self.metrics;
        let store = match &c.kind {
            ComponentKind::Operator(OperatorSpec {
                body: OperatorBody::Wasm { .. },
                ..
            }) => Some(
                OperatorStore::open(&topology.state, &topology.data_dir, &c.id).map_err(|e| {
                    TaskError::Init {
                        operator: c.id.clone(),
                        instance: 0,
                        error: CallError::State(e.to_string()),
                    }
                })?,
            ),
            _ => None,
        };
        let registry = restored.and_then(|r| r.registry(&c.id)).unwrap_or_default();
        for instance in 0..c.parallelism {
            let key = (c.id.clone(), instance);
            let task_key = TaskKey {
                component: c.id.clone(),
                instance,
            };
            let mailbox = self.mailbox(&task_key);
            let mut output = Output::new(outputs.remove(&key).unwrap_or_default());
            let beat = self.liveness.register(&match &c.kind {
                ComponentKind::Source(_) => format!("source `{}`", c.id),
                ComponentKind::Operator(_) => {
                    format!("operator `{}` (instance {instance})", c.id)
                }
                ComponentKind::Sink(_) => format!("sink `{}`", c.id),
            });
            output.set_beat(beat.clone());
            let task_metrics = metrics.task(
                &c.id,
                instance,
                match &c.kind {
                    ComponentKind::Source(_) => TaskKind::Source,
                    ComponentKind::Operator(_) => TaskKind::Operator,
                    ComponentKind::Sink(_) => TaskKind::Sink,
                },
            );
            output.set_counter(task_metrics.records_out.clone());
            let mut gate = || InputGate::new(inputs.remove(&key).unwrap_or_default());
            let task = match &c.kind {
                ComponentKind::Source(spec) => {
                    let opening = crate::sources::Opening {
                        instance,
                        parallelism: c.parallelism,
                        restored,
                        completions: self.completions.clone(),
                        metrics: &self.metrics,
                    };
                    let mut source = Source::open(&c.id, spec, &opening)?;
                    if matches!(spec.input, crate::graph::SourceInput::File { .. }) {
                        source.set_lag_gauge(metrics.source_lag(&c.id));
                    }
                    // A partitioned source keeps a watermark per partition itself.
                    let partitioned = matches!(
                        spec.input,
                        crate::graph::SourceInput::Kafka(_) | crate::graph::SourceInput::Nats(_)
                    );
                    if let Some(w) = spec.watermark.filter(|_| !partitioned) {
                        let mut generator = crate::watermark::Generator::new(
                            w.max_out_of_orderness,
                            w.idle_timeout,
                        );
                        if let Some(largest) =
                            restored.and_then(|r| r.source_event_time(&c.id, instance))
                        {
                            generator.resume(largest);
                        }
                        output.set_watermarks(generator);
                    }
                    let checkpointing = self.task_checkpointing(&c.id, instance).map(|task| {
                        let (tx, rx) = unbounded();
                        built.triggers.push((task.task.clone(), tx));
                        SourceCheckpointing {
                            task,
                            triggers: rx,
                            mailbox: mailbox.clone(),
                        }
                    });
                    Ready::Source(source, output, checkpointing)
                }
                ComponentKind::Sink(spec) => {
                    let opening = crate::sinks::Opening {
                        instance,
                        parallelism: c.parallelism,
                        restored: restored.map(Restored::id),
                        completions: &self.completions,
                        metrics: &self.metrics,
                    };
                    let sink = Sink::open(&c.id, spec, &opening)?;
                    let stage = SinkStage::new(
                        c.id.clone(),
                        sink,
                        self.task_checkpointing(&c.id, instance),
                        task_metrics.clone(),
                        mailbox,
                    );
                    Ready::Sink(stage, gate(), beat, task_metrics)
                }
                ComponentKind::Operator(spec) => {
                    let processor: Box<dyn Processor> = match &spec.body {
                        OperatorBody::Native(kind) => native::instantiate(*kind),
                        OperatorBody::Wasm {
                            module,
                            config_json,
                        } => {
                            let loaded =
                                validated
                                    .modules
                                    .get(module)
                                    .ok_or_else(|| TaskError::Init {
                                        operator: c.id.clone(),
                                        instance,
                                        error: CallError::Trap {
                                            trap: format!(
                                                "module {} was not loaded",
                                                module.display()
                                            ),
                                            logged: None,
                                        },
                                    })?;
                            let keyed = store.as_ref().map(|s| {
                                s.instance(
                                    topology.state.max_parallelism,
                                    c.parallelism,
                                    instance,
                                    registry.clone(),
                                )
                            });
                            let mut keyed = keyed.ok_or_else(|| TaskError::Init {
                                operator: c.id.clone(),
                                instance,
                                error: CallError::State("no state store".into()),
                            })?;
                            let groups = key_group_range(
                                topology.state.max_parallelism,
                                c.parallelism,
                                instance,
                            );
                            let what = format!("operator `{}` (instance {instance})", c.id);
                            for (path, summary) in restored
                                .map(|r| r.keyed_files(&c.id, &groups))
                                .unwrap_or_default()
                            {
                                SnapshotReader::open(&path, &summary)
                                    .and_then(|snapshot| keyed.restore(&snapshot))
                                    .map_err(|e| restore_error(what.clone())(e.to_string()))?;
                            }
                            let mut op = WasmOperator::instantiate(
                                loaded,
                                c.id.clone(),
                                instance,
                                config_json,
                                &c.input_names(),
                                spec.limits,
                                keyed,
                                PluginMetrics::new(Some(self.metrics.clone())),
                            )
                            .map_err(|error| TaskError::Init {
                                operator: c.id.clone(),
                                instance,
                                error,
                            })?;
                            let saved = restored
                                .map(|r| r.operator_state(&c.id, instance, c.parallelism))
                                .transpose()
                                .map_err(|e| restore_error(what.clone())(e.to_string()))?
                                .flatten();
                            if let Some((version, parts)) = saved {
                                op.restore(version, &parts).map_err(|e| {
                                    restore_error(what.clone())(format!(
                                        "the plugin's restore failed: {e}"
                                    ))
                                })?;
                            }
                            Box::new(op)
                        }
                    };
                    let checkpointing = self.task_checkpointing(&c.id, instance).map(|task| {
                        OperatorCheckpointing {
                            task,
                            parallelism: c.parallelism,
                            key_groups: key_group_range(
                                topology.state.max_parallelism,
                                c.parallelism,
                                instance,
                            ),
                            incremental: self.incremental,
                            writers: self.writers.clone(),
                        }
                    });
                    Ready::Operator(OperatorTask {
                        operator: c.id.clone(),
                        instance,
                        processor,
                        inputs: gate(),
                        output,
                        checkpointing,
                        beat,
                        metrics: task_metrics,
                        mailbox,
                        records_in: restored
                            .and_then(|r| r.records_in(&c.id, instance, c.parallelism))
                            .unwrap_or(0),
                        on_error: spec.on_error,
                    })
                }
            };
            built.ready.push((task_key, task));
        }
        Ok(())
    }

    /// Instantiates instance 0 of operator `c` on empty heap state and runs
    /// its `init`, then drops it: what a reload checks before it touches the
    /// running pipeline, so a plugin that rejects its config fails the reload
    /// instead of stopping tasks it cannot replace.
    pub(super) fn try_init(&self, validated: &Validated, c: &Component) -> Result<(), TaskError> {
        let ComponentKind::Operator(OperatorSpec {
            body:
                OperatorBody::Wasm {
                    module,
                    config_json,
                },
            limits,
            ..
        }) = &c.kind
        else {
            return Ok(());
        };
        let init = |error| TaskError::Init {
            operator: c.id.clone(),
            instance: 0,
            error,
        };
        let loaded = validated.modules.get(module).ok_or_else(|| {
            init(CallError::Trap {
                trap: format!("module {} was not loaded", module.display()),
                logged: None,
            })
        })?;
        let max = validated.topology.state.max_parallelism;
        let keyed = OperatorStore::Heap.instance(max, c.parallelism, 0, Registry::default());
        // Metric names are checked, not exported: the trial is thrown away.
        let metrics = PluginMetrics::new(None);
        WasmOperator::instantiate(
            loaded,
            c.id.clone(),
            0,
            config_json,
            &c.input_names(),
            *limits,
            keyed,
            metrics,
        )
        .map(drop)
        .map_err(init)
    }

    /// Starts built tasks: those chained after another ([`super::chain`])
    /// go into its thread, every other one gets its own. Adds the tasks
    /// started (chained ones included) to `spawned`.
    pub(super) fn spawn_all(
        &self,
        topology: &Topology,
        ready: Vec<(TaskKey, Ready)>,
        spawned: &mut usize,
    ) -> std::io::Result<()> {
        let mut members: HashMap<TaskKey, Vec<ComponentId>> = ready
            .iter()
            .map(|(key, _)| (key.clone(), vec![key.component.clone()]))
            .collect();
        let order: Vec<TaskKey> = ready.iter().map(|(key, _)| key.clone()).collect();
        let mut ready: HashMap<TaskKey, Ready> = ready.into_iter().collect();
        let up: HashMap<ComponentId, ComponentId> = super::chain::links(topology)
            .into_iter()
            .map(|(u, d)| (d, u))
            .collect();
        // Last component first, so a stage carries its own chain with it.
        for c in topology.components.iter().rev() {
            let Some(u) = up.get(&c.id) else {
                continue;
            };
            for instance in 0..c.parallelism {
                let down = TaskKey {
                    component: c.id.clone(),
                    instance,
                };
                let head = TaskKey {
                    component: u.clone(),
                    instance,
                };
                // A reload starts both or neither (`chain::expand`).
                if !ready.contains_key(&head) {
                    continue;
                }
                if !ready.get(&down).is_some_and(Ready::can_chain) {
                    continue;
                }
                let Some(stage) = ready.remove(&down).and_then(Ready::into_stage) else {
                    continue;
                };
                if let Some(output) = ready.get_mut(&head).and_then(Ready::output_mut) {
                    output.chain(&c.id, stage);
                }
                let moved = members.remove(&down).unwrap_or_default();
                members.entry(head).or_default().extend(moved);
            }
        }
        for key in order {
            if let Some(task) = ready.remove(&key) {
                let members = members.remove(&key).unwrap_or_default();
                let n = members.len();
                self.spawn(key, task, members)?;
                *spawned += n;
            }
        }
        Ok(())
    }

    /// Starts a built task (with the stages chained into it, `members`) on
    /// its own thread.
    fn spawn(&self, key: TaskKey, task: Ready, members: Vec<ComponentId>) -> std::io::Result<()> {
        let id = key.component.clone();
        let name = match &task {
            Ready::Source(..) => format!("src-{id}"),
            Ready::Operator(t) => format!("op-{id}-{}", t.instance),
            Ready::Sink(..) => format!("sink-{id}"),
        };
        let stop = self.stop.clone();
        let done_tx = self.done_tx.clone();
        let label = name.clone();
        let handle = std::thread::Builder::new().name(name).spawn(move || {
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| match task {
                Ready::Source(source, output, checkpointing) => {
                    source.run(&id, &stop, output, checkpointing.as_ref())
                }
                Ready::Operator(task) => run_operator(task),
                Ready::Sink(mut stage, gate, beat, metrics) => {
                    drive(&mut stage, gate, &beat, &metrics)
                }
            }))
            .unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(TaskError::Panicked {
                    task: label,
                    message,
                })
            });
            // One report per member, as if each had its own thread: `wait`
            // counts members.
            match result {
                Ok(finished) => {
                    for member in &members {
                        let stats = finished
                            .iter()
                            .find(|f| f.id == *member)
                            .map(|f| (f.is_sink, f.stats.clone()));
                        let (is_sink, stats) = stats.unwrap_or_default();
                        let _ = done_tx.send((member.clone(), is_sink, Ok(stats)));
                    }
                }
                // Retired by a reload: its part is done, its replacement runs.
                Err(TaskError::Retired) => {
                    for member in &members {
                        let _ = done_tx.send((member.clone(), false, Ok(TaskStats::default())));
                    }
                }
                Err(e) => {
                    let _ = done_tx.send((id, false, Err(e)));
                    for member in members.iter().skip(1) {
                        let _ = done_tx.send((member.clone(), false, Ok(TaskStats::default())));
                    }
                }
            }
        })?;
        if let Ok(mut threads) = self.threads.lock() {
            threads.retain(|_, h| !h.is_finished());
            threads.insert(key, handle);
        }
        Ok(())
    }
}

impl Pipeline {
    /// Opens every source and sink, instantiates every operator instance (calling
    /// its `init`), wires the channels and starts all tasks. Nothing runs unless
    /// everything could be built.
    pub fn start(
        validated: &Validated,
        engine: &Engine,
        checkpointing: Option<Checkpointing>,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, StartError> {
        let topology = &validated.topology;
        let restored = checkpointing.as_ref().and_then(|c| c.restored.as_ref());
        if let Some(r) = restored {
            r.check_key_groups(topology.state.max_parallelism)
                .map_err(|e| restore_error("the checkpoint".into())(e.to_string()))?;
        }
        let (reports_tx, reports_rx) = unbounded::<Report>();
        let (done_tx, done) = unbounded::<Done>();
        let ctx = Context {
            stop: StopSignal::default(),
            done_tx,
            expected: AtomicUsize::new(0),
            reports: reports_tx.clone(),
            root: checkpointing.as_ref().map(|c| c.store.root().to_path_buf()),
            incremental: checkpointing
                .as_ref()
                .is_some_and(|c| c.settings.incremental),
            writers: Writers::default(),
            liveness: Liveness::default(),
            metrics: metrics.clone(),
            mailboxes: Mutex::default(),
            threads: Mutex::default(),
            checkpoint_timeout: checkpointing
                .as_ref()
                .map_or(Duration::ZERO, |c| c.settings.timeout),
            completions: Arc::new(checkpoint::Completions::new(
                restored.map_or(0, Restored::id),
            )),
        };
        // Deadlines hold from the first plugin call: `init` and `restore` run
        // while the tasks are built.
        let ticker = EpochTicker::start(engine)?;
        let (mut outputs, mut inputs) = wire(topology, &|_, _| true);
        let mut built = Built::default();
        for c in &topology.components {
            ctx.build(
                validated,
                restored,
                c,
                &mut outputs,
                &mut inputs,
                &mut built,
            )?;
        }

        let mut control = None;
        let coordinator = match checkpointing {
            Some(c) => {
                let savepoint_targets = checkpoint::savepoint::Targets::new(
                    topology.savepoint_dir.clone(),
                    topology.managed_paths(),
                );
                let setup = coordinator::Setup {
                    store: c.store,
                    settings: c.settings,
                    max_parallelism: topology.state.max_parallelism,
                    sources: std::mem::take(&mut built.triggers),
                    tasks: built.ready.iter().map(|(key, _)| key.clone()).collect(),
                    next_id: c.next_id,
                    savepoint_targets: savepoint_targets.clone(),
                    metrics: metrics.clone(),
                    completions: ctx.completions.clone(),
                };
                control = Some(checkpoint::Control::new(
                    reports_tx.clone(),
                    savepoint_targets,
                ));
                Some(Coordinator::start(setup, reports_tx, reports_rx)?)
            }
            None => None,
        };
        ctx.expected.store(built.ready.len(), Ordering::SeqCst);
        for chain in super::chain::chains(topology) {
            let members: Vec<&str> = chain.iter().map(|id| &**id).collect();
            tracing::info!(
                "chained into one thread per instance: {}",
                members.join(" -> ")
            );
        }
        ctx.spawn_all(topology, built.ready, &mut 0)?;
        Ok(Self {
            ctx: Arc::new(ctx),
            done,
            started: Instant::now(),
            coordinator,
            control,
            _ticker: ticker,
        })
    }

    /// A handle for changing the running pipeline (a reload).
    pub fn handle(&self) -> PipelineHandle {
        PipelineHandle {
            ctx: self.ctx.clone(),
        }
    }

    /// A handle that asks the sources to stop, so the pipeline drains and ends.
    pub fn stop_signal(&self) -> StopSignal {
        self.ctx.stop.clone()
    }

    /// Which of its tasks are busy, for the watchdog.
    pub fn liveness(&self) -> Liveness {
        self.ctx.liveness.clone()
    }

    /// A handle on its checkpoints (savepoints), when they are on.
    pub fn checkpoints(&self) -> Option<checkpoint::Control> {
        self.control.clone()
    }

    /// Waits for every task to end. The first task that failed on its own (not
    /// because a neighbour failed) is the error; any failure stops the sources.
    pub fn wait(self) -> Result<RunReport, TaskError> {
        let mut report = RunReport::default();
        let mut root_cause: Option<TaskError> = None;
        let mut consequence: Option<TaskError> = None;
        let mut finished = 0;
        while finished < self.ctx.expected.load(Ordering::SeqCst) {
            // A reload that could not start its tasks lowers `expected`.
            let (id, is_sink, result) = match self.done.recv_timeout(Duration::from_millis(200)) {
                Ok(done) => done,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            finished += 1;
            match result {
                Ok(stats) if is_sink => report.sinks.push((id, stats.records_in)),
                Ok(stats) => {
                    if stats.records_in == 0 && stats.records_out > 0 {
                        report.sources.push((id, stats.records_out));
                    }
                }
                Err(e) => {
                    self.ctx.stop.stop();
                    if let Some(c) = &self.coordinator {
                        c.stop();
                    }
                    if !e.is_consequence() && root_cause.is_none() {
                        tracing::error!("{e}");
                        root_cause = Some(e);
                    } else if consequence.is_none() {
                        consequence = Some(e);
                    }
                }
            }
        }
        report.elapsed = self.started.elapsed();
        let writers = self
            .ctx
            .writers
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default();
        for writer in writers {
            let _ = writer.join();
        }
        if let Some(e) = root_cause.or(consequence) {
            if let Some(c) = self.coordinator {
                c.stop();
                c.join();
            }
            return Err(e);
        }
        if let Some(c) = self.coordinator {
            let (outcome, summary) = c.join();
            report.checkpoints = summary;
            match outcome {
                Outcome::Finished(id) => report.final_checkpoint = Some(id),
                Outcome::Stopped => {}
                Outcome::FinalFailed(message) => {
                    return Err(TaskError::Checkpoint(format!(
                        "the final checkpoint failed, so the last output is not committed: {message}"
                    )));
                }
            }
        }
        Ok(report)
    }
}
