//! The heartbeat probe: one message per partition per interval, produced and consumed back.
//!
//! Three parts. The probe ([`HeartbeatProbe`]) runs on the probe loop: each round it assigns
//! new partitions to the consumer, then hands one heartbeat per partition to the producer.
//! The clients ([`clients`]) stamp times where things happen: the send time just before the
//! produce call, the ack time inside librdkafka's delivery callback, the consume time right
//! after the consumer's poll returns (on its own thread). The receiver
//! ([`receiver::HeartbeatReceiver`]) owns the bookkeeping and turns all of it into events.

mod clients;
pub mod payload;
mod receiver;

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::producer::{BaseRecord, Producer as _, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use super::{Probe, Schedule};
use crate::config::{ClusterConfig, HeartbeatConfig};
use crate::error::{BuildError, ErrorKind};
use crate::events::heartbeat::{AssignmentFailed, PartitionEndUnknown};
use crate::health::Latch;
use crate::kafka::metadata::ClusterView;
use crate::kafka::{AgentContext, LibrdkafkaLog, Role, client_config};
use crate::telemetry::{ClusterAttributes, Instruments};
use crate::tracker::Tracker;
use clients::{DeliveryContext, DeliveryTag, Event, Events};
use payload::Origin;

pub use crate::events::heartbeat::{Observation, Tap};
pub use receiver::HeartbeatReceiver;

/// How long one watermark lookup may take before the partition is retried later.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait at shutdown for the acks of heartbeats in flight.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

/// Everything the heartbeat needs from its cluster.
pub struct HeartbeatParts {
    pub cluster: ClusterConfig,
    pub heartbeat: HeartbeatConfig,
    pub instance_id: String,
    pub instruments: Instruments,
    pub view: watch::Receiver<Arc<ClusterView>>,
    pub tap: Option<Tap>,
    /// Released on the first own heartbeat consumed back.
    pub first_round_trip: Option<Latch>,
}

/// One round: the heartbeats handed to the producer, as (partition, sequence number), and
/// the partitions left out because the consumer could not be placed at their end, with why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub sent: Vec<(i32, u64)>,
    pub unassigned: Vec<(i32, ErrorKind)>,
}

/// The sending half, run by the probe loop.
pub struct HeartbeatProbe {
    topic: String,
    interval: Duration,
    message_timeout: Duration,
    origin: Origin,
    producer: ThreadedProducer<DeliveryContext>,
    consumer: Arc<BaseConsumer<AgentContext>>,
    events: Events,
    view: watch::Receiver<Arc<ClusterView>>,
    assigned: BTreeSet<i32>,
    next_seq: BTreeMap<i32, u64>,
    /// Stops the consumer thread when the probe goes, cancelled or not (a runtime shutting
    /// down waits for blocking threads, so one must never outlive the probe).
    _consumer_stop: DropGuard,
}

/// Builds the heartbeat's clients and starts its consumer thread (tracked by `tasks`, stopped
/// by `cancel` or when the probe is dropped). Returns the probe, for the probe loop, and the
/// receiver, to be run as a task of its own.
pub fn start(
    parts: HeartbeatParts,
    cancel: &CancellationToken,
    tasks: &TaskTracker,
) -> Result<(HeartbeatProbe, HeartbeatReceiver), BuildError> {
    let HeartbeatParts {
        cluster,
        heartbeat,
        instance_id,
        instruments,
        view,
        tap,
        first_round_trip,
    } = parts;
    let (events_tx, events) = mpsc::unbounded_channel();
    let client_error = |role: Role| {
        let name = cluster.name.clone();
        move |source| BuildError::KafkaClient {
            cluster: name,
            role: role.as_str(),
            source,
        }
    };
    let producer: ThreadedProducer<DeliveryContext> =
        client_config(&cluster, Role::Producer, heartbeat.message_timeout)
            .create_with_context(DeliveryContext {
                log: LibrdkafkaLog::new(&cluster.name, Role::Producer),
                events: events_tx.clone(),
            })
            .map_err(client_error(Role::Producer))?;
    let origin = Origin::new(&instance_id);
    // librdkafka needs a group id to assign partitions at all. This one is unique to the
    // run and only ever used with assign(): the consumer never joins, rebalances or commits.
    let consumer: BaseConsumer<AgentContext> =
        client_config(&cluster, Role::Consumer, heartbeat.message_timeout)
            .set("group.id", format!("cc-heartbeat-{}", origin.run))
            .create_with_context(AgentContext::new(&cluster.name, Role::Consumer))
            .map_err(client_error(Role::Consumer))?;
    let consumer = Arc::new(consumer);

    let consumer_stop = cancel.child_token();
    {
        let (consumer, origin, events) = (Arc::clone(&consumer), origin.clone(), events_tx.clone());
        let stop = consumer_stop.clone();
        tasks.spawn_blocking(move || clients::consume_loop(&consumer, &origin, &events, &stop));
    }
    let attrs = ClusterAttributes::new(&view.borrow().cluster_id, &cluster.name);
    let receiver = HeartbeatReceiver {
        events,
        tracker: Tracker::new(heartbeat.interval, heartbeat.loss_timeout),
        cluster: cluster.name,
        topic: heartbeat.topic.clone(),
        view: view.clone(),
        attrs,
        instruments,
        tap,
        first_round_trip,
        failing: BTreeMap::new(),
        losing: Default::default(),
        undecodable_logged: false,
    };
    let probe = HeartbeatProbe {
        topic: heartbeat.topic,
        interval: heartbeat.interval,
        message_timeout: heartbeat.message_timeout,
        origin,
        producer,
        consumer,
        events: events_tx,
        view,
        assigned: BTreeSet::new(),
        next_seq: BTreeMap::new(),
        _consumer_stop: consumer_stop.drop_guard(),
    };
    Ok((probe, receiver))
}

impl HeartbeatProbe {
    /// Assigns partitions not yet consumed, each at the high watermark it has now, so every
    /// heartbeat sent from here on is read back and nothing older triggers a reset. Returns
    /// the partitions that could not be assigned, with why.
    async fn sync_assignment(&mut self) -> Vec<(i32, ErrorKind)> {
        let wanted: Vec<i32> = self
            .view
            .borrow()
            .partitions()
            .iter()
            .map(|p| p.id)
            .filter(|id| !self.assigned.contains(id))
            .collect();
        if wanted.is_empty() {
            return Vec::new();
        }
        let consumer = Arc::clone(&self.consumer);
        let topic = self.topic.clone();
        let looked_up = tokio::task::spawn_blocking(move || {
            wanted
                .into_iter()
                .map(|p| (p, consumer.fetch_watermarks(&topic, p, WATERMARK_TIMEOUT)))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let mut list = TopicPartitionList::new();
        let mut added = Vec::new();
        let mut unassigned = Vec::new();
        for (partition, result) in looked_up {
            match result {
                Ok((_, high)) => {
                    if list
                        .add_partition_offset(&self.topic, partition, Offset::Offset(high))
                        .is_ok()
                    {
                        added.push(partition);
                    }
                }
                Err(error) => {
                    PartitionEndUnknown {
                        partition,
                        error: &error,
                    }
                    .emit();
                    unassigned.push((partition, ErrorKind::of(&error)));
                }
            }
        }
        if added.is_empty() {
            return unassigned;
        }
        match self.consumer.incremental_assign(&list) {
            Ok(()) => {
                self.assigned.extend(&added);
                let _ = self.events.send(Event::Assigned { partitions: added });
            }
            Err(error) => {
                AssignmentFailed { error: &error }.emit();
                let kind = ErrorKind::of(&error);
                unassigned.extend(added.into_iter().map(|p| (p, kind)));
            }
        }
        unassigned
    }

    /// Hands one heartbeat for `partition` to the producer.
    fn send(&mut self, partition: i32) -> u64 {
        let seq = {
            let next = self.next_seq.entry(partition).or_insert(0);
            *next += 1;
            *next - 1
        };
        let payload = self.origin.encode(partition, seq);
        let sent_at = Instant::now();
        let _ = self.events.send(Event::Sent {
            partition,
            seq,
            sent_at,
        });
        let tag = Box::new(DeliveryTag {
            partition,
            seq,
            sent_at,
        });
        let record = BaseRecord::with_opaque_to(&self.topic, tag)
            .partition(partition)
            .key(self.origin.instance.as_bytes())
            .payload(&payload);
        if let Err((error, _)) = self.producer.send(record) {
            let _ = self.events.send(Event::Refused {
                partition,
                seq,
                at: Instant::now(),
                error,
            });
        }
        seq
    }
}

impl Probe for HeartbeatProbe {
    const KIND: &'static str = "heartbeat";
    type Output = Round;
    type Error = Infallible;

    fn schedule(&self) -> Schedule {
        // A round only hands messages to the producer; watermark lookups bound the rest.
        Schedule::every(self.interval, WATERMARK_TIMEOUT + Duration::from_secs(1))
    }

    fn describe(&self) -> String {
        format!(
            "Heartbeat probe started: a message to every partition of {} each interval, consumed back by assignment.",
            self.topic
        )
    }

    async fn probe_once(&mut self) -> Result<Round, Infallible> {
        let _ = self.events.send(Event::Sweep { at: Instant::now() });
        let unassigned = if self.assigned.len() < self.view.borrow().partitions().len() {
            self.sync_assignment().await
        } else {
            Vec::new()
        };
        let partitions: Vec<i32> = self.assigned.iter().copied().collect();
        let sent = partitions
            .into_iter()
            .map(|partition| (partition, self.send(partition)))
            .collect();
        Ok(Round { sent, unassigned })
    }

    /// Waits (bounded) for the acks of heartbeats in flight, so the final export counts every
    /// heartbeat that reached the topic, then closes the producer.
    async fn stop(self) {
        let producer = self.producer.clone();
        let timeout = self.message_timeout.min(SHUTDOWN_FLUSH);
        let _ = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
        // Dropping the producer joins its polling thread and closes its connections.
        let producer = self.producer;
        let _ = tokio::task::spawn_blocking(move || drop(producer)).await;
    }
}
