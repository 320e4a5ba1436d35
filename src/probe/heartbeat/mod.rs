//! The heartbeat probe: one message per partition per interval, produced and consumed back.
//!
//! Timing is taken where events happen, not where they are handled: the send time just
//! before the produce call, the ack time inside librdkafka's delivery callback, the consume
//! time right after the consumer's poll returns. One task owns the [`Tracker`] and records
//! metrics; the producer's callback thread and the consumer thread only send it events.

pub mod payload;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer as _, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::{ClusterConfig, HeartbeatConfig};
use crate::error::{BuildError, ErrorKind};
use crate::health::Latch;
use crate::kafka::metadata::ClusterView;
use crate::kafka::{AgentContext, LibrdkafkaLog, Role, client_config};
use crate::telemetry::instruments::{attr, broker_kv, error_kv, partition_kv};
use crate::telemetry::{ClusterAttributes, Instruments, SkipReason};
use crate::tracker::{Receipt, Tracker};
use payload::{Decoded, Sender};

/// How long one watermark lookup may take before the partition is retried later.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait at shutdown for the acks of heartbeats in flight.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);
/// How long the consumer thread blocks in one poll; bounds how fast it notices shutdown.
const CONSUMER_POLL: Duration = Duration::from_millis(100);

/// What the probe saw, for local consumers (the demo's summary, `check`, tests).
#[derive(Clone, Debug, PartialEq)]
pub enum Observation {
    Acked {
        partition: i32,
        leader: Option<i32>,
        latency: Duration,
        error: Option<ErrorKind>,
    },
    RoundTrip {
        partition: i32,
        end_to_end: Duration,
        out_of_order: bool,
        late: bool,
    },
    Lost {
        partition: i32,
    },
    Duplicated {
        partition: i32,
    },
    Skipped {
        partition: i32,
        reason: SkipReason,
    },
}

/// Where observations go; a full channel drops them rather than slow the probe.
pub type Tap = mpsc::Sender<Observation>;

enum Event {
    Acked {
        partition: i32,
        seq: u64,
        sent_at: Instant,
        at: Instant,
        outcome: Result<(), (ErrorKind, String)>,
    },
    Consumed {
        partition: i32,
        offset: i64,
        at: Instant,
        decoded: Decoded,
    },
}

struct DeliveryTag {
    partition: i32,
    seq: u64,
    sent_at: Instant,
}

/// Producer context: stamps the ack time in librdkafka's callback and forwards it.
struct DeliveryContext {
    log: LibrdkafkaLog,
    events: mpsc::UnboundedSender<Event>,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.log.error(&error, reason);
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<DeliveryTag>;

    fn delivery(&self, result: &DeliveryResult<'_>, tag: Box<DeliveryTag>) {
        let at = Instant::now();
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((error, _)) => Err((ErrorKind::from_kafka_error(error), error.to_string())),
        };
        // The receiver is gone only during shutdown, when outcomes no longer matter.
        let _ = self.events.send(Event::Acked {
            partition: tag.partition,
            seq: tag.seq,
            sent_at: tag.sent_at,
            at,
            outcome,
        });
    }
}

/// Everything the probe needs from its cluster.
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

pub struct HeartbeatProbe {
    cluster_name: String,
    topic: String,
    interval: Duration,
    message_timeout: Duration,
    attrs: ClusterAttributes,
    instruments: Instruments,
    sender: Sender,
    producer: ThreadedProducer<DeliveryContext>,
    consumer: Arc<BaseConsumer<AgentContext>>,
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    tracker: Tracker,
    view: watch::Receiver<Arc<ClusterView>>,
    assigned: BTreeSet<i32>,
    tap: Option<Tap>,
    first_round_trip: Option<Latch>,
    /// Partitions whose produce is failing, with the failure count (logged on change only).
    failing: BTreeMap<i32, u64>,
    losing: bool,
    undecodable_logged: bool,
}

impl HeartbeatProbe {
    pub fn new(parts: HeartbeatParts) -> Result<Self, BuildError> {
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
        let sender = Sender::new(&instance_id);
        // librdkafka needs a group id to assign partitions at all. This one is unique to the
        // run and only ever used with assign(): the consumer never joins, rebalances or commits.
        let consumer: BaseConsumer<AgentContext> =
            client_config(&cluster, Role::Consumer, heartbeat.message_timeout)
                .set("group.id", format!("cc-heartbeat-{}", sender.run))
                .create_with_context(AgentContext::new(&cluster.name, Role::Consumer))
                .map_err(client_error(Role::Consumer))?;
        let attrs = ClusterAttributes::new(&view.borrow().cluster_id, &cluster.name);
        Ok(Self {
            cluster_name: cluster.name,
            topic: heartbeat.topic,
            interval: heartbeat.interval,
            message_timeout: heartbeat.message_timeout,
            attrs,
            instruments,
            sender,
            producer,
            consumer: Arc::new(consumer),
            events_tx,
            events,
            tracker: Tracker::new(heartbeat.interval, heartbeat.loss_timeout),
            view,
            assigned: BTreeSet::new(),
            tap,
            first_round_trip,
            failing: BTreeMap::new(),
            losing: false,
            undecodable_logged: false,
        })
    }

    /// Runs until `cancel`; the consumer thread is tracked by `tasks`.
    pub async fn run(mut self, cancel: CancellationToken, tasks: &TaskTracker) {
        self.sync_assignment().await;
        // The consumer thread stops on cancel, and also when this future is dropped uncancelled
        // (a runtime shutting down waits for blocking threads, so one must never outlive us).
        let consumer_stop = cancel.child_token();
        let _stop_consumer_on_drop = consumer_stop.clone().drop_guard();
        {
            let consumer = Arc::clone(&self.consumer);
            let sender = self.sender.clone();
            let events = self.events_tx.clone();
            tasks.spawn_blocking(move || consume_loop(&consumer, &sender, &events, &consumer_stop));
        }
        info!(
            cluster = %self.cluster_name,
            topic = %self.topic,
            partitions = self.assigned.len(),
            interval = %humantime::format_duration(self.interval),
            "Heartbeat probe started: a message to every partition each interval, consumed back by assignment.",
        );
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                Some(event) = self.events.recv() => self.handle(event),
                _ = ticker.tick() => self.tick().await,
                Ok(()) = self.view.changed() => self.on_view_change().await,
            }
        }
        let cluster = self.cluster_name.clone();
        self.drain().await;
        debug!(%cluster, "Heartbeat probe stopped.");
    }

    /// Resolves the heartbeats still in flight: waits (bounded) for their acks and records
    /// them, so the final export counts every heartbeat that reached the topic.
    async fn drain(mut self) {
        let producer = self.producer.clone();
        let timeout = self.message_timeout.min(SHUTDOWN_FLUSH);
        let _ = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
        while let Ok(event) = self.events.try_recv() {
            if matches!(event, Event::Acked { .. }) {
                self.handle(event);
            }
        }
        // Dropping the producer joins its polling thread and closes its connections.
        let producer = self.producer;
        let _ = tokio::task::spawn_blocking(move || drop(producer)).await;
    }

    async fn on_view_change(&mut self) {
        let cluster_id = self.view.borrow_and_update().cluster_id.clone();
        if self.attrs.cluster_id() != cluster_id {
            warn!(
                cluster = %self.cluster_name,
                cluster_id = %cluster_id,
                "The cluster id changed; the bootstrap address now reaches a different cluster.",
            );
            self.attrs = ClusterAttributes::new(&cluster_id, &self.cluster_name);
        }
        self.sync_assignment().await;
    }

    /// Assigns partitions not yet consumed, each at the high watermark it has now, so every
    /// heartbeat sent from here on is read back and nothing older triggers a reset.
    async fn sync_assignment(&mut self) {
        let wanted: Vec<i32> = self
            .view
            .borrow()
            .partitions()
            .iter()
            .map(|p| p.id)
            .filter(|id| !self.assigned.contains(id))
            .collect();
        if wanted.is_empty() {
            return;
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
                Err(error) => warn!(
                    cluster = %self.cluster_name,
                    partition,
                    %error,
                    "Could not look up where partition ends; heartbeats skip it until the next try.",
                ),
            }
        }
        if added.is_empty() {
            return;
        }
        match self.consumer.incremental_assign(&list) {
            Ok(()) => {
                for p in &added {
                    self.tracker.add_partition(*p);
                    self.assigned.insert(*p);
                    self.zero_counters(*p);
                }
                debug!(cluster = %self.cluster_name, partitions = ?added, "Consumer assigned at the current end.");
            }
            Err(error) => {
                warn!(cluster = %self.cluster_name, %error, "Consumer assignment failed; retried next tick.")
            }
        }
    }

    /// Starts a partition's counters at 0, so "nothing lost" is a series at 0 rather than no
    /// data, and rates and alerts work from the first export.
    fn zero_counters(&self, partition: i32) {
        let attrs = self.attrs.with([partition_kv(partition)]);
        let i = &self.instruments;
        for counter in [
            &i.messages_sent,
            &i.messages_received,
            &i.messages_lost,
            &i.messages_duplicated,
            &i.messages_out_of_order,
        ] {
            counter.add(0, &attrs);
        }
        for reason in [
            SkipReason::Foreign,
            SkipReason::Undecodable,
            SkipReason::Stale,
        ] {
            i.messages_skipped.add(
                0,
                &self.attrs.with([
                    partition_kv(partition),
                    KeyValue::new(attr::REASON, reason.as_str()),
                ]),
            );
        }
    }

    async fn tick(&mut self) {
        let now = Instant::now();
        let lost = self.tracker.sweep(now);
        if !lost.is_empty() {
            for l in &lost {
                self.instruments
                    .messages_lost
                    .add(1, &self.attrs.with([partition_kv(l.partition)]));
                self.observe(Observation::Lost {
                    partition: l.partition,
                });
            }
            let partitions: BTreeSet<i32> = lost.iter().map(|l| l.partition).collect();
            if !self.losing {
                warn!(
                    cluster = %self.cluster_name,
                    lost = lost.len(),
                    partitions = ?partitions,
                    "Heartbeats were acked but not consumed back within the loss timeout.",
                );
                self.losing = true;
            } else {
                debug!(cluster = %self.cluster_name, lost = lost.len(), partitions = ?partitions, "More heartbeats lost.");
            }
        }
        if self.assigned.len() < self.view.borrow().partitions().len() {
            self.sync_assignment().await;
        }
        let partitions: Vec<i32> = self.assigned.iter().copied().collect();
        for partition in partitions {
            self.send(partition);
        }
    }

    fn send(&mut self, partition: i32) {
        let seq = self.tracker.next_seq(partition);
        let payload = self.sender.encode(partition, seq);
        let sent_at = Instant::now();
        self.tracker.register(partition, sent_at);
        let tag = Box::new(DeliveryTag {
            partition,
            seq,
            sent_at,
        });
        let record = BaseRecord::with_opaque_to(&self.topic, tag)
            .partition(partition)
            .key(self.sender.instance.as_bytes())
            .payload(&payload);
        if let Err((error, _)) = self.producer.send(record) {
            // Refused locally (e.g. queue full): reported like a failed ack, without a latency.
            let kind = ErrorKind::from_kafka_error(&error);
            self.tracker.acked(partition, seq, sent_at, false);
            self.instruments.messages_sent.add(
                1,
                &self.attrs.with([partition_kv(partition), error_kv(kind)]),
            );
            self.note_produce_failure(partition, kind, &error.to_string());
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Acked {
                partition,
                seq,
                sent_at,
                at,
                outcome,
            } => self.on_ack(partition, seq, sent_at, at, outcome),
            Event::Consumed {
                partition,
                offset,
                at,
                decoded,
            } => self.on_consumed(partition, offset, at, decoded),
        }
    }

    fn on_ack(
        &mut self,
        partition: i32,
        seq: u64,
        sent_at: Instant,
        at: Instant,
        outcome: Result<(), (ErrorKind, String)>,
    ) {
        let latency = at.saturating_duration_since(sent_at);
        let leader = self.view.borrow().leader_of(partition);
        let mut attrs = self.attrs.with([partition_kv(partition)]);
        if let Err((kind, _)) = &outcome {
            attrs.push(error_kv(*kind));
        }
        self.instruments.messages_sent.add(1, &attrs);
        if let Some(leader) = leader {
            attrs.push(broker_kv(leader));
        }
        self.instruments
            .produce_duration
            .record(latency.as_secs_f64(), &attrs);
        self.tracker.acked(partition, seq, at, outcome.is_ok());
        let error = match outcome {
            Ok(()) => {
                if let Some(failures) = self.failing.remove(&partition) {
                    info!(
                        cluster = %self.cluster_name,
                        partition,
                        leader = %broker_name(leader),
                        failures,
                        "Heartbeats to the partition are acked again.",
                    );
                }
                None
            }
            Err((kind, detail)) => {
                self.note_produce_failure(partition, kind, &detail);
                Some(kind)
            }
        };
        self.observe(Observation::Acked {
            partition,
            leader,
            latency,
            error,
        });
    }

    fn note_produce_failure(&mut self, partition: i32, kind: ErrorKind, detail: &str) {
        let failures = self.failing.entry(partition).or_insert(0);
        *failures += 1;
        if *failures == 1 {
            let leader = self.view.borrow().leader_of(partition);
            warn!(
                cluster = %self.cluster_name,
                partition,
                leader = %broker_name(leader),
                error.type = kind.as_str(),
                error = %detail,
                "Heartbeat produce failed; failures on this partition are counted until it recovers.",
            );
        }
    }

    fn on_consumed(&mut self, partition: i32, offset: i64, at: Instant, decoded: Decoded) {
        let skip = |this: &mut Self, reason: SkipReason| {
            this.instruments.messages_skipped.add(
                1,
                &this.attrs.with([
                    partition_kv(partition),
                    KeyValue::new("reason", reason.as_str()),
                ]),
            );
            this.observe(Observation::Skipped { partition, reason });
        };
        let seq = match decoded {
            Decoded::Own { seq } => seq,
            Decoded::Foreign => return skip(self, SkipReason::Foreign),
            Decoded::Undecodable => {
                if !self.undecodable_logged {
                    info!(
                        cluster = %self.cluster_name,
                        topic = %self.topic,
                        partition,
                        offset,
                        "Skipping a message that is not a heartbeat; such messages are counted, not logged again.",
                    );
                    self.undecodable_logged = true;
                }
                return skip(self, SkipReason::Undecodable);
            }
        };
        let attrs = self.attrs.with([partition_kv(partition)]);
        match self.tracker.received(partition, seq, at) {
            Receipt::Received {
                end_to_end,
                out_of_order,
                late,
            } => {
                self.instruments.messages_received.add(1, &attrs);
                self.instruments
                    .end_to_end_duration
                    .record(end_to_end.as_secs_f64(), &attrs);
                if out_of_order {
                    self.instruments.messages_out_of_order.add(1, &attrs);
                }
                if self.losing && !late {
                    info!(cluster = %self.cluster_name, "Heartbeats are consumed back again.");
                    self.losing = false;
                }
                if let Some(latch) = self.first_round_trip.take() {
                    info!(
                        cluster = %self.cluster_name,
                        partition,
                        end_to_end = ?end_to_end,
                        "First heartbeat round trip done.",
                    );
                    latch.release();
                }
                self.observe(Observation::RoundTrip {
                    partition,
                    end_to_end,
                    out_of_order,
                    late,
                });
            }
            Receipt::Duplicate => {
                self.instruments.messages_duplicated.add(1, &attrs);
                debug!(cluster = %self.cluster_name, partition, seq, offset, "Duplicate heartbeat.");
                self.observe(Observation::Duplicated { partition });
            }
            Receipt::Stale => skip(self, SkipReason::Stale),
            // Claims to be ours with a sequence never sent: someone else's message.
            Receipt::Unexpected => skip(self, SkipReason::Foreign),
        }
    }

    fn observe(&self, observation: Observation) {
        if let Some(tap) = &self.tap {
            let _ = tap.try_send(observation);
        }
    }
}

fn broker_name(id: Option<i32>) -> String {
    id.map_or_else(|| "none".to_owned(), |id| id.to_string())
}

/// The consumer thread: polls, stamps the receive time, decodes, forwards.
fn consume_loop(
    consumer: &BaseConsumer<AgentContext>,
    sender: &Sender,
    events: &mpsc::UnboundedSender<Event>,
    cancel: &CancellationToken,
) {
    let mut last_error: Option<String> = None;
    while !cancel.is_cancelled() {
        match consumer.poll(CONSUMER_POLL) {
            None => {}
            Some(Ok(message)) => {
                let at = Instant::now();
                if events.send(consumed(&message, at, sender)).is_err() {
                    break;
                }
            }
            Some(Err(error)) => {
                // Fetch errors repeat while a broker is away; the heartbeat counters show it.
                let text = error.to_string();
                if last_error.as_deref() != Some(&text) {
                    debug!(%error, "Heartbeat consumer error.");
                    last_error = Some(text);
                }
            }
        }
    }
}

fn consumed(message: &BorrowedMessage<'_>, at: Instant, sender: &Sender) -> Event {
    Event::Consumed {
        partition: message.partition(),
        offset: message.offset(),
        at,
        decoded: sender.decode(message.payload()),
    }
}
