//! A NATS JetStream sink: each record's value is published on `subject`
//! (its key, when it has one, in the `Weir-Key` header), into whatever
//! stream captures that subject.
//!
//! `exactly_once`: as the Kafka sink, each barrier seals the output since
//! the last one into a staged file; once that checkpoint is complete the
//! committer publishes it, each message with the `Nats-Msg-Id`
//! `<lineage>-<instance>-<checkpoint>-<index>`, the same every time that
//! output is sent. A restart sends staged output again, and the stream drops
//! the messages it has under those ids already: this holds within the
//! stream's `duplicate_window` (2 minutes unless the stream says otherwise),
//! so a redo more than that long after the first attempt (a daemon down for
//! longer with output half published) can repeat messages.
//!
//! `at_least_once`: messages are published as they come and every ack is
//! awaited at the barrier.

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};

use super::committer::{Context, Failure, Publisher, StagedSink};
use super::staging::{self, Staged};
use crate::batch::Batch;
use crate::checkpoint::CheckpointId;
use crate::config::Delivery;
use crate::graph::{ComponentId, NatsSinkSpec};

/// How many publish acks are awaited at once (the client stalls past ~5000).
const ACK_WINDOW: usize = 1000;
/// How long the connection and each ack may take.
const SERVER_TIMEOUT: Duration = Duration::from_secs(10);

/// A JetStream sink instance.
pub enum NatsSink {
    /// Staged, published with stable ids after checkpoints.
    ExactlyOnce(StagedSink),
    /// Published as it comes.
    AtLeastOnce(Box<Direct>),
}

/// An at-least-once publisher.
pub struct Direct {
    runtime: tokio::runtime::Runtime,
    spec: NatsSinkSpec,
    js: Option<jetstream::Context>,
    acks: Vec<PublishAckFuture>,
}

impl NatsSink {
    /// Opens instance `cx.instance` of sink `id`; an exactly-once one first
    /// takes up what an earlier run staged.
    pub fn open(id: &ComponentId, spec: &NatsSinkSpec, cx: Context) -> Result<Self, String> {
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the NATS client's runtime: {e}"))
        };
        match spec.delivery {
            Delivery::ExactlyOnce => {
                let runtime = runtime()?;
                Ok(Self::ExactlyOnce(StagedSink::open(
                    id,
                    &spec.staging,
                    cx,
                    |lineage| NatsPublisher {
                        runtime,
                        spec: spec.clone(),
                        lineage,
                        js: None,
                    },
                )?))
            }
            Delivery::AtLeastOnce => Ok(Self::AtLeastOnce(Box::new(Direct {
                runtime: runtime()?,
                spec: spec.clone(),
                js: None,
                acks: Vec::new(),
            }))),
        }
    }

    /// Takes a batch.
    pub fn write(&mut self, batch: &Batch) -> Result<(), String> {
        match self {
            Self::ExactlyOnce(staged) => staged.write(batch),
            Self::AtLeastOnce(d) => {
                let Direct {
                    runtime,
                    spec,
                    js,
                    acks,
                } = &mut **d;
                runtime.block_on(async {
                    let js = connected(js, spec).await?;
                    for r in batch.records() {
                        let ack = js
                            .send_publish(spec.subject.clone(), message(r.key, r.value))
                            .await
                            .map_err(|e| format!("cannot publish: {e}"))?;
                        acks.push(ack);
                        if acks.len() >= ACK_WINDOW {
                            await_acks(acks).await?;
                        }
                    }
                    Ok(())
                })
            }
        }
    }

    /// At barrier `checkpoint`.
    pub fn pre_commit(&mut self, checkpoint: CheckpointId) -> Result<(), String> {
        match self {
            Self::ExactlyOnce(staged) => staged.seal(checkpoint),
            Self::AtLeastOnce(d) => {
                let Direct { runtime, acks, .. } = &mut **d;
                runtime.block_on(await_acks(acks))
            }
        }
    }

    /// The input has ended: waits (a bounded time) for the last output.
    pub fn finish(&mut self) {
        if let Self::ExactlyOnce(staged) = self {
            staged.finish();
        }
    }

    /// The pipeline failed: nothing more is sent.
    pub fn abort(&mut self) {
        if let Self::ExactlyOnce(staged) = self {
            staged.abort();
        }
    }
}

fn message(key: &[u8], value: &[u8]) -> PublishMessage {
    let mut m = PublishMessage::build().payload(value.to_vec().into());
    if !key.is_empty() {
        m = m.header("Weir-Key", String::from_utf8_lossy(key).as_ref());
    }
    m
}

async fn connected<'a>(
    js: &'a mut Option<jetstream::Context>,
    spec: &NatsSinkSpec,
) -> Result<&'a jetstream::Context, String> {
    if js.is_none() {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(SERVER_TIMEOUT)
            .connect(spec.servers.join(","))
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", spec.servers.join(", ")))?;
        let mut context = jetstream::new(client);
        context.set_timeout(SERVER_TIMEOUT);
        *js = Some(context);
    }
    js.as_ref().ok_or_else(|| "no NATS connection".to_owned())
}

async fn await_acks(acks: &mut Vec<PublishAckFuture>) -> Result<(), String> {
    for ack in acks.drain(..) {
        ack.await
            .map_err(|e| format!("JetStream did not take a message: {e}"))?;
    }
    Ok(())
}

/// Publishes staged output under stable message ids.
struct NatsPublisher {
    runtime: tokio::runtime::Runtime,
    spec: NatsSinkSpec,
    lineage: String,
    js: Option<jetstream::Context>,
}

impl Publisher for NatsPublisher {
    fn send(&mut self, staged: &Staged) -> Result<(), Failure> {
        let batches = staging::read(&staged.path).map_err(Failure::Fatal)?;
        let NatsPublisher {
            runtime,
            spec,
            lineage,
            js,
        } = self;
        runtime.block_on(async {
            let js = connected(js, spec).await.map_err(Failure::Retry)?;
            let mut acks = Vec::with_capacity(ACK_WINDOW);
            let mut index = 0u64;
            for batch in &batches {
                for r in batch.records() {
                    let id = format!(
                        "{lineage}-{}-{}-{index}",
                        staged.instance, staged.checkpoint
                    );
                    index += 1;
                    let ack = js
                        .send_publish(spec.subject.clone(), message(r.key, r.value).message_id(id))
                        .await
                        .map_err(|e| Failure::Retry(format!("cannot publish: {e}")))?;
                    acks.push(ack);
                    if acks.len() >= ACK_WINDOW {
                        await_acks(&mut acks).await.map_err(Failure::Retry)?;
                    }
                }
            }
            await_acks(&mut acks).await.map_err(Failure::Retry)
        })
    }

    fn reset(&mut self, _instance: u32) {
        self.js = None;
    }
}
