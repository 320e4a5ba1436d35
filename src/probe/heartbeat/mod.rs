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
mod spans;

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer as _;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use super::{Probe, Schedule, Wake};
use crate::config::{ClusterConfig, HeartbeatConfig};
use crate::error::ErrorKind;
use crate::events::cluster::ClusterRequests;
use crate::events::heartbeat::{
    AssignmentFailed, PartitionAssigning, PartitionEndUnknown, PartitionsUnknownToProducer,
};
use crate::health::Latch;
use crate::kafka::admin::Admin;
use crate::kafka::metadata::{ClusterView, TopicState};
use crate::kafka::native::AdminError;
use crate::kafka::producer::{Producer, Tag};
use crate::telemetry::instruments::ClusterLabels;
use crate::telemetry::traces::{TRACEPARENT, Traces};
use crate::telemetry::{ClusterAttributes, Instruments};
use crate::tracker::Tracker;
use clients::{Consumer, Event, Events, Positions, Recreation};
use payload::Origin;

pub use crate::events::heartbeat::{Observation, Tap};
pub use clients::{HeartbeatClients, ReadPositions};
pub use receiver::HeartbeatReceiver;

/// How long one watermark lookup may take before the partition is retried later.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the first send to a newly assigned partition waits for the consumer to fetch it:
/// its first (long-polled) fetch answered, with time to connect to the leader.
const FIRST_FETCH_WAIT: Duration = crate::kafka::FETCH_WAIT.saturating_mul(4);
/// Longest wait at shutdown for the acks of heartbeats in flight.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

/// Everything the heartbeat needs from its cluster.
pub struct HeartbeatParts {
    pub cluster: ClusterConfig,
    pub heartbeat: HeartbeatConfig,
    pub instruments: Instruments,
    pub view: watch::Receiver<Arc<ClusterView>>,
    /// Asks the metadata watch for a fresh view (before counting heartbeats lost).
    pub refresh: Wake,
    pub tap: Option<Tap>,
    /// Released on the first own heartbeat consumed back.
    pub first_round_trip: Option<Latch>,
    /// Counts the requests to the cluster (watermarks, refused fetches).
    pub requests: ClusterRequests,
}

/// One round: the heartbeats handed to the producer, as (partition, sequence number), and
/// the partitions left out, with why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub sent: Vec<(i32, u64)>,
    pub unassigned: Vec<(i32, NotSent)>,
}

/// Why a partition of the topic got no heartbeat this round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotSent {
    /// The producer's metadata does not have the partition yet.
    UnknownToProducer,
    /// Where the partition ends could not be looked up, so the consumer could not be placed.
    EndUnknown(ErrorKind),
    /// The consumer refused the assignment.
    AssignmentFailed(ErrorKind),
}

impl std::fmt::Display for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownToProducer => f.write_str("the producer does not know the partition yet"),
            Self::EndUnknown(kind) => {
                write!(f, "where the partition ends could not be read ({kind})")
            }
            Self::AssignmentFailed(kind) => {
                write!(f, "the consumer could not be assigned to it ({kind})")
            }
        }
    }
}

/// The sending half, run by the probe loop.
pub struct HeartbeatProbe {
    topic: String,
    interval: Duration,
    message_timeout: Duration,
    origin: Origin,
    producer: Producer,
    /// `None` when the heartbeat is not read back.
    consumer: Option<Consumer>,
    /// Where the partitions' ends are looked up (on the producer's handle).
    admin: Admin,
    events: Events,
    view: watch::Receiver<Arc<ClusterView>>,
    assigned: BTreeSet<i32>,
    next_seq: BTreeMap<i32, u64>,
    positions: Arc<Positions>,
    presence: TopicPresence,
    /// Partitions are assigned at their start (a new topic), not at their end.
    from_start: bool,
    /// Where each heartbeat's trace starts (ids made only when spans are on).
    traces: Traces,
}

/// What the probe knows of the heartbeat topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TopicPresence {
    /// Not seen yet (it may still be created).
    Unknown,
    /// There, in this incarnation.
    Present { incarnation: u64 },
    /// Gone from the metadata after it was there.
    Gone,
}

/// Puts the heartbeat together from its clients (which [`HeartbeatClients::serve`] serves):
/// the probe, for the probe loop, and the receiver, to be run as a task of its own.
pub fn start(
    parts: HeartbeatParts,
    clients: HeartbeatClients,
) -> (HeartbeatProbe, HeartbeatReceiver) {
    let HeartbeatParts {
        cluster,
        heartbeat,
        instruments,
        view,
        refresh,
        tap,
        first_round_trip,
        requests,
    } = parts;
    let HeartbeatClients {
        producer,
        consumer,
        origin,
        positions,
        events_tx,
        events,
        ..
    } = clients;
    let labels = ClusterLabels::of(&cluster);
    let admin = Admin::new(producer.clone()).observed(Arc::new(requests.clone()));
    let attrs =
        ClusterAttributes::new(&view.borrow().cluster_id, &labels).for_heartbeat(&heartbeat.topic);
    let tracker = Tracker::new(heartbeat.interval, heartbeat.loss_timeout);
    let traces = instruments.traces.clone();
    let receiver = HeartbeatReceiver {
        producer_log: producer.log().clone(),
        // Without a consumer nothing refuses reads: a log that never reports a refusal.
        consumer_log: consumer.as_ref().map_or_else(
            || crate::kafka::LibrdkafkaLog::new(&cluster.name, crate::kafka::Role::Consumer),
            |c| c.context().log().clone(),
        ),
        read_back: heartbeat.read_back,
        spans: spans::HeartbeatSpans::new(
            traces.clone(),
            labels.name(),
            &heartbeat.topic,
            tracker.window(),
        ),
        events,
        positions: Arc::clone(&positions),
        tracker,
        loss_timeout: heartbeat.loss_timeout,
        cluster: labels,
        topic: heartbeat.topic.clone(),
        view: view.clone(),
        refresh,
        attrs,
        instruments,
        tap,
        first_round_trip,
        requests,
        state: Default::default(),
    };
    let probe = HeartbeatProbe {
        topic: heartbeat.topic,
        interval: heartbeat.interval,
        message_timeout: heartbeat.message_timeout,
        origin,
        producer,
        consumer,
        admin,
        events: events_tx,
        view,
        assigned: BTreeSet::new(),
        next_seq: BTreeMap::new(),
        positions,
        presence: TopicPresence::Unknown,
        from_start: false,
        traces,
    };
    (probe, receiver)
}

impl HeartbeatProbe {
    /// Assigns partitions not yet consumed, each at the high watermark it has now, so every
    /// heartbeat sent from here on is read back and nothing older triggers a reset. Returns
    /// the partitions that could not be assigned, with why, and those the consumer was just
    /// assigned.
    async fn sync_assignment(&mut self) -> (Vec<(i32, NotSent)>, Vec<i32>) {
        let wanted: Vec<i32> = self
            .view
            .borrow()
            .partitions()
            .iter()
            .map(|p| p.id)
            .filter(|id| !self.assigned.contains(id))
            .collect();
        if wanted.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let Some(consumer) = self.consumer.clone() else {
            // Not read back: a partition is in use once the producer knows it.
            let known = self.refresh_client_metadata(&wanted).await;
            let (added, unknown): (Vec<i32>, Vec<i32>) =
                wanted.into_iter().partition(|p| known.contains(p));
            PartitionsUnknownToProducer {
                partitions: &unknown,
            }
            .emit();
            if !added.is_empty() {
                self.assigned.extend(&added);
                let _ = self.events.send(Event::Assigned { partitions: added });
            }
            let unknown = unknown
                .into_iter()
                .map(|p| (p, NotSent::UnknownToProducer))
                .collect();
            return (unknown, Vec::new());
        };
        // New partitions (at start, or added to the topic): the clients read the metadata now
        // rather than at their own next refresh, and only partitions the producer knows are
        // used, so no send fails for want of the client's metadata.
        let known = self.refresh_client_metadata(&wanted).await;
        let (wanted, unknown): (Vec<i32>, Vec<i32>) =
            wanted.into_iter().partition(|p| known.contains(p));
        PartitionsUnknownToProducer {
            partitions: &unknown,
        }
        .emit();
        let mut unassigned: Vec<(i32, NotSent)> = unknown
            .into_iter()
            .map(|p| (p, NotSent::UnknownToProducer))
            .collect();
        let looked_up = self.watermarks(wanted).await;
        let mut list = TopicPartitionList::new();
        let mut added = Vec::new();
        for (partition, result) in looked_up {
            match result {
                Ok((low, high)) => {
                    // A new topic is read from its start: heartbeats sent since it appeared
                    // are there. Otherwise from the end, so nothing older is read.
                    let start = if self.from_start { low } else { high };
                    PartitionAssigning {
                        partition,
                        low,
                        high,
                        start,
                    }
                    .emit();
                    if list
                        .add_partition_offset(&self.topic, partition, Offset::Offset(start))
                        .is_ok()
                    {
                        self.positions.assigned_at(partition, start);
                        added.push(partition);
                    }
                }
                Err(error) => {
                    PartitionEndUnknown {
                        partition,
                        error: &error,
                    }
                    .emit();
                    unassigned.push((partition, NotSent::EndUnknown(ErrorKind::of(&error))));
                }
            }
        }
        if added.is_empty() {
            return (unassigned, Vec::new());
        }
        match consumer.incremental_assign(&list) {
            Ok(()) => {
                self.assigned.extend(&added);
                let _ = self.events.send(Event::Assigned {
                    partitions: added.clone(),
                });
                if self.assigned.len() >= self.view.borrow().partitions().len() {
                    self.from_start = false;
                }
            }
            Err(error) => {
                AssignmentFailed { error: &error }.emit();
                let kind = ErrorKind::of(&error);
                unassigned.extend(
                    added
                        .drain(..)
                        .map(|p| (p, NotSent::AssignmentFailed(kind))),
                );
            }
        }
        (unassigned, added)
    }

    /// Each partition's (low, high) watermarks: one ListOffsets request per end and leader.
    async fn watermarks(&self, partitions: Vec<i32>) -> Vec<(i32, Result<(i64, i64), EndsError>)> {
        let asked: Vec<(String, i32)> = partitions
            .iter()
            .map(|p| (self.topic.clone(), *p))
            .collect();
        let ends = self
            .admin
            .log_ends(asked, WATERMARK_TIMEOUT)
            .await
            .map_err(Arc::new);
        partitions
            .into_iter()
            .map(|p| {
                let key = (self.topic.clone(), p);
                let result = match &ends {
                    Ok(ends) => match (ends.oldest.get(&key), ends.current.get(&key)) {
                        (Some(low), Some(high)) => Ok((*low, *high)),
                        _ => Err(EndsError::NoAnswer),
                    },
                    Err(error) => Err(EndsError::Request(Arc::clone(error))),
                };
                (p, result)
            })
            .collect()
    }

    /// Has both clients read the topic's metadata now, so they send to and read from the
    /// topic the metadata watch just saw instead of what they cached. A broker may not know a
    /// new topic's partitions for a moment after another answered with them: the producer
    /// asks again (a few times, briefly) while some of `wanted` is missing.
    /// Returns the partitions of the topic the producer knows now.
    async fn refresh_client_metadata(&self, wanted: &[i32]) -> BTreeSet<i32> {
        const TRIES: usize = 5;
        const BETWEEN: Duration = Duration::from_millis(100);
        let (producer, consumer) = (self.producer.clone(), self.consumer.clone());
        let topic = self.topic.clone();
        let wanted: BTreeSet<i32> = wanted.iter().copied().collect();
        tokio::task::spawn_blocking(move || {
            let mut known = BTreeSet::new();
            for attempt in 0..TRIES {
                if attempt > 0 {
                    std::thread::sleep(BETWEEN);
                }
                known = producer
                    .client()
                    .fetch_metadata(Some(&topic), WATERMARK_TIMEOUT)
                    .map(|m| {
                        m.topics()
                            .iter()
                            .filter(|t| t.name() == topic && t.error().is_none())
                            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                            .collect()
                    })
                    .unwrap_or_default();
                if wanted.is_subset(&known) {
                    break;
                }
            }
            if let Some(consumer) = consumer {
                let _ = consumer
                    .client()
                    .fetch_metadata(Some(&topic), WATERMARK_TIMEOUT);
            }
            known
        })
        .await
        .unwrap_or_default()
    }

    /// Stops reading `partitions` (they are assigned again later, or their topic is gone).
    fn unassign(&mut self, partitions: &[i32]) {
        let mut list = TopicPartitionList::new();
        for p in partitions {
            let _ = list.add_partition(&self.topic, *p);
            self.assigned.remove(p);
            self.positions.forget(*p);
        }
        if let Some(consumer) = &self.consumer
            && let Err(error) = consumer.incremental_unassign(&list)
        {
            AssignmentFailed { error: &error }.emit();
        }
    }

    /// Follows the heartbeat topic through the metadata: when it disappears, what is in flight
    /// is voided and the consumer lets go of it; when it comes back (a new incarnation), it is
    /// counted as recreated and read from its start. A consumer that found itself outside a
    /// partition's log is checked against the brokers: a log that went back is a recreation
    /// too.
    async fn follow_topic(&mut self) {
        let (present, missing, incarnation) = {
            let view = self.view.borrow();
            let missing = view.fetched && view.topic == TopicState::Missing;
            (view.topic_present(), missing, view.topic_incarnation)
        };
        let current = TopicPresence::Present { incarnation };
        match self.presence {
            TopicPresence::Present { .. } if missing => {
                let all: Vec<i32> = self.assigned.iter().copied().collect();
                self.unassign(&all);
                self.presence = TopicPresence::Gone;
                let _ = self.events.send(Event::TopicGone);
            }
            TopicPresence::Unknown if present => self.presence = current,
            TopicPresence::Present { .. } | TopicPresence::Gone
                if present && self.presence != current =>
            {
                let partitions: Vec<i32> = self
                    .view
                    .borrow()
                    .partitions()
                    .iter()
                    .map(|p| p.id)
                    .collect();
                let all: Vec<i32> = self.assigned.iter().copied().collect();
                self.unassign(&all);
                self.from_start = true;
                self.presence = current;
                let _ = self.events.send(Event::Recreated {
                    partitions,
                    how: Recreation::CameBack,
                });
            }
            _ => {}
        }
        if matches!(self.presence, TopicPresence::Present { .. }) && self.positions.take_check() {
            self.check_positions().await;
        }
    }

    /// The consumer stopped outside some partition's log: compares where it was with where
    /// each log now ends. A log that ends before the consumer's position started over (the
    /// topic was recreated); either way the partition is read again from its start.
    async fn check_positions(&mut self) {
        // The check was taken off the positions; a round cut while it runs (its bound, or
        // shutdown) asks for it again, so the next round does it.
        let pending = CheckPending(Some(Arc::clone(&self.positions)));
        let assigned: Vec<i32> = self.assigned.iter().copied().collect();
        let mut went_back = Vec::new();
        let mut restart = Vec::new();
        for (partition, result) in self.watermarks(assigned).await {
            let Ok((low, high)) = result else { continue };
            match self.positions.next(partition) {
                Some(next) if next > high => {
                    went_back.push(partition);
                    restart.push(partition);
                }
                Some(next) if next >= low => {}
                _ => restart.push(partition),
            }
        }
        if !went_back.is_empty() {
            let _ = self.events.send(Event::Recreated {
                partitions: went_back,
                how: Recreation::OffsetsWentBack,
            });
        }
        if !restart.is_empty() {
            self.unassign(&restart);
            self.from_start = true;
        }
        pending.done();
        self.positions.checked();
    }

    /// Hands one heartbeat for `partition` to the producer.
    fn send(&mut self, partition: i32) -> u64 {
        let seq = {
            let next = self.next_seq.entry(partition).or_insert(0);
            *next += 1;
            *next - 1
        };
        let payload = self.origin.encode(partition, seq);
        let trace = self.traces.start();
        let headers = trace.map(|ids| {
            OwnedHeaders::new().insert(Header {
                key: TRACEPARENT,
                value: Some(&ids.traceparent()),
            })
        });
        let sent_at = Instant::now();
        let _ = self.events.send(Event::Sent {
            partition,
            seq,
            sent_at,
        });
        let tag = Box::new(Tag {
            partition,
            seq,
            sent_at,
            trace,
        });
        let mut record = BaseRecord::with_opaque_to(&self.topic, tag)
            .partition(partition)
            .key(self.origin.instance.as_bytes())
            .payload(&payload);
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        if let Err(error) = self.producer.send(record) {
            let _ = self.events.send(Event::Refused {
                partition,
                seq,
                at: Instant::now(),
                error,
                trace,
            });
        }
        seq
    }
}

/// Why a partition's ends are not known.
#[derive(Debug, thiserror::Error)]
pub enum EndsError {
    #[error("the ListOffsets request failed")]
    Request(#[source] Arc<AdminError>),
    #[error("no offsets came back for the partition")]
    NoAnswer,
}

/// A position check under way: asked for again if it is dropped before [`CheckPending::done`].
struct CheckPending(Option<Arc<Positions>>);

impl CheckPending {
    fn done(mut self) {
        self.0 = None;
    }
}

impl Drop for CheckPending {
    fn drop(&mut self) {
        if let Some(positions) = self.0.take() {
            positions.request_check();
        }
    }
}

impl Probe for HeartbeatProbe {
    const KIND: &'static str = "heartbeat";
    const ROUND_SPAN: bool = false;
    type Output = Round;
    type Error = Infallible;

    fn schedule(&self) -> Schedule {
        // A round only hands messages to the producer; watermark lookups bound the rest.
        Schedule::every(self.interval, WATERMARK_TIMEOUT + Duration::from_secs(1))
    }

    fn describe(&self) -> String {
        match self.consumer {
            Some(_) => format!(
                "Heartbeat probe started: a message to every partition of {} each interval, consumed back by assignment.",
                self.topic
            ),
            None => format!(
                "Heartbeat probe started: a message to every partition of {} each interval, produced only (heartbeat.read_back: false): ack latency and failures, no end-to-end latency or loss.",
                self.topic
            ),
        }
    }

    /// Cancel-safe: state changes follow the awaits (assignments are made and recorded
    /// together, after the lookups), and a position check cut short is asked for again.
    async fn probe_once(&mut self) -> Result<Round, Infallible> {
        let started = tokio::time::Instant::now();
        self.follow_topic().await;
        let _ = self.events.send(Event::Sweep {
            at: Instant::now(),
            checked: self.positions.checks(),
        });
        let unassigned = if self.assigned.len() < self.view.borrow().partitions().len() {
            let (unassigned, just_assigned) = self.sync_assignment().await;
            if !just_assigned.is_empty() {
                // Sent before the consumer fetches them, the first heartbeats would measure
                // its connecting to the leaders, not the path: wait (bounded) until it does.
                let deadline = (tokio::time::Instant::now() + FIRST_FETCH_WAIT)
                    .min(started + WATERMARK_TIMEOUT);
                self.positions
                    .until_fetching(&just_assigned, deadline)
                    .await;
            }
            unassigned
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
    /// heartbeat that reached the topic.
    async fn stop(self) {
        let producer = self.producer.clone();
        let timeout = self.message_timeout.min(SHUTDOWN_FLUSH);
        let _ = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
    }
}
