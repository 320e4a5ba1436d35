//! Events of the heartbeat: acks and failed sends, round trips, losses, duplicates, messages
//! skipped, and partitions assigned. Each also goes to the local [`Tap`] as an
//! [`Observation`] (the demo's summary, `check`, tests).

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::error::{Chain, ErrorKind};
use crate::health::Latch;
use opentelemetry::KeyValue;

use crate::kafka::metadata::ClusterView;
use crate::telemetry::instruments::{
    attr, broker_kv, error_kv, failure_kvs, partition_kv, reason_kv,
};
use crate::telemetry::{ClusterAttributes, Instruments, SkipReason};
use crate::tracker::Lost;

/// What the heartbeat saw, for local consumers.
#[derive(Clone, Debug, PartialEq)]
pub enum Observation {
    Acked {
        partition: i32,
        seq: u64,
        leader: Option<i32>,
        /// The leader's rack, where the metadata knows it.
        rack: Option<String>,
        latency: Duration,
        error: Option<ErrorKind>,
        /// The trace a failed send is kept in, when spans are on.
        trace: Option<opentelemetry::trace::TraceId>,
    },
    RoundTrip {
        partition: i32,
        seq: u64,
        end_to_end: Duration,
        out_of_order: bool,
        late: bool,
        /// Its send had been reported failed with this error: it was written after all.
        failed: Option<ErrorKind>,
    },
    Lost {
        partition: i32,
        seq: u64,
    },
    Duplicated {
        partition: i32,
    },
    Skipped {
        partition: i32,
        reason: SkipReason,
    },
}

/// Where observations go; a full channel drops them rather than slow the heartbeat.
pub type Tap = mpsc::Sender<Observation>;

/// Where heartbeat events record: the instruments, under the cluster's attributes, and the tap.
pub struct Recorder<'a> {
    pub instruments: &'a Instruments,
    pub attrs: &'a ClusterAttributes,
    /// The latest cluster view: where the brokers are.
    pub view: std::sync::Arc<ClusterView>,
    pub tap: Option<&'a Tap>,
}

impl Recorder<'_> {
    /// Hands an observation to the tap (tests, the demo, `check`); built only when there is one.
    fn observe(&self, observation: impl FnOnce() -> Observation) {
        if let Some(tap) = self.tap {
            let _ = tap.try_send(observation());
        }
    }

    pub(crate) fn partition(&self, partition: i32) -> Vec<opentelemetry::KeyValue> {
        self.attrs.with([partition_kv(partition)])
    }

    /// The broker a heartbeat went to: its id, and its rack and address where the metadata
    /// knows them (`server.address` and `server.port`, as the messaging conventions name the
    /// broker a client talked to).
    pub(crate) fn broker(&self, id: i32) -> Vec<KeyValue> {
        let mut attrs = vec![broker_kv(id)];
        if let Some(b) = self.view.broker(id) {
            if let Some(rack) = &b.rack {
                attrs.push(KeyValue::new(attr::BROKER_RACK, rack.clone()));
            }
            attrs.push(KeyValue::new(attr::SERVER_ADDRESS, b.host.clone()));
            attrs.push(KeyValue::new(attr::SERVER_PORT, i64::from(b.port)));
        }
        attrs
    }

    /// The broker's rack, where the metadata knows it.
    fn rack(&self, id: i32) -> Option<String> {
        self.view.broker(id)?.rack.clone()
    }
}

fn leader_name(leader: Option<i32>) -> String {
    leader.map_or_else(|| "none".to_owned(), |id| id.to_string())
}

/// The consumer now reads these partitions. Their counters start at 0 (and, the first
/// time, the cluster's).
pub struct PartitionsAssigned<'a> {
    pub partitions: &'a [i32],
    pub cluster_counters: bool,
    /// The heartbeats are read back: their receive-side counters start too.
    pub read_back: bool,
}

impl PartitionsAssigned<'_> {
    pub fn emit(self, r: &Recorder<'_>) {
        for p in self.partitions {
            r.instruments
                .zero_partition(&r.partition(*p), self.read_back);
        }
        if self.cluster_counters && self.read_back {
            r.instruments.count_recreation(r.attrs.base(), false);
        }
        debug!(name: "heartbeat.partitions_assigned", partitions = ?self.partitions, "Partitions in use.");
    }
}

/// Where a partition ends could not be looked up; it is not used until a later try works.
pub struct PartitionEndUnknown<'a> {
    pub partition: i32,
    pub error: &'a (dyn std::error::Error + 'static),
}

impl PartitionEndUnknown<'_> {
    pub fn emit(self) {
        warn!(
            name: "heartbeat.partition_end_unknown",
            partition = self.partition,
            error = %Chain(self.error),
            "Could not look up where the partition ends; heartbeats skip it until the next try.",
        );
    }
}

/// Assigning partitions to the consumer failed; retried next round.
pub struct AssignmentFailed<'a> {
    pub error: &'a (dyn std::error::Error + 'static),
}

impl AssignmentFailed<'_> {
    pub fn emit(self) {
        warn!(name: "heartbeat.assignment_failed", error = %Chain(self.error), "Consumer assignment failed; retried next round.");
    }
}

/// The broker acknowledged a heartbeat.
pub struct HeartbeatAcked {
    pub partition: i32,
    pub seq: u64,
    pub leader: Option<i32>,
    pub latency: Duration,
}

impl HeartbeatAcked {
    pub fn emit(self, r: &Recorder<'_>) {
        let mut attrs = r.partition(self.partition);
        r.instruments.count_sent(&attrs);
        if let Some(leader) = self.leader {
            attrs.extend(r.broker(leader));
        }
        r.instruments.record_produce(self.latency, &attrs);
        r.observe(|| Observation::Acked {
            partition: self.partition,
            seq: self.seq,
            leader: self.leader,
            rack: self.leader.and_then(|id| r.rack(id)),
            latency: self.latency,
            error: None,
            trace: None,
        });
    }
}

/// A heartbeat send failed: refused by the client, or not acknowledged. Logged when a
/// partition starts failing; counted every time.
pub struct HeartbeatSendFailed<'a> {
    pub partition: i32,
    pub seq: u64,
    pub leader: Option<i32>,
    /// Send until the failure, when the send got that far.
    pub latency: Option<Duration>,
    pub error: &'a (dyn std::error::Error + 'static),
    /// The first failure of an episode on this partition.
    pub first: bool,
    /// The trace its send span is kept in, when spans are on.
    pub trace: Option<opentelemetry::trace::TraceId>,
}

impl HeartbeatSendFailed<'_> {
    pub fn emit(self, r: &Recorder<'_>) {
        let kind = ErrorKind::of(self.error);
        let mut attrs = r.partition(self.partition);
        attrs.extend(failure_kvs(self.error));
        r.instruments.count_sent(&attrs);
        if let Some(latency) = self.latency {
            if let Some(leader) = self.leader {
                attrs.extend(r.broker(leader));
            }
            r.instruments.record_produce(latency, &attrs);
        }
        // A refusal by ACL is said once for the topic (HeartbeatWriteRefused).
        warn_or_debug!(
            self.first && kind != ErrorKind::Authorization,
            name: "heartbeat.heartbeat_send_failed",
            partition = self.partition,
            leader = %leader_name(self.leader),
            error.type = kind.as_str(),
            error = %Chain(self.error),
            "Heartbeat produce failed; failures on this partition are counted until it recovers.",
        );
        r.observe(|| Observation::Acked {
            partition: self.partition,
            seq: self.seq,
            leader: self.leader,
            rack: self.leader.and_then(|id| r.rack(id)),
            latency: self.latency.unwrap_or_default(),
            error: Some(kind),
            trace: self.trace,
        });
    }
}

/// A heartbeat partition's acks come from another broker now: its leader moved. Seen by the
/// producer on every ack, so a move between two metadata refreshes is seen too.
pub struct LeaderMoved {
    pub partition: i32,
    pub from: i32,
    pub to: i32,
}

impl LeaderMoved {
    pub fn emit(self) {
        info!(
            name: "heartbeat.leader_moved",
            partition = self.partition,
            from = self.from,
            to = self.to,
            "Heartbeat partition {} is led by broker {} now (was {}).",
            self.partition,
            self.to,
            self.from,
        );
    }
}

/// Heartbeats to a partition that was failing are acknowledged again.
pub struct HeartbeatSendsRecovered {
    pub partition: i32,
    pub leader: Option<i32>,
    pub failures: u64,
}

impl HeartbeatSendsRecovered {
    pub fn emit(self) {
        info!(
            name: "heartbeat.heartbeat_sends_recovered",
            partition = self.partition,
            leader = %leader_name(self.leader),
            failures = self.failures,
            "Heartbeats to the partition are acked again.",
        );
    }
}

/// One of this run's heartbeats was consumed back.
pub struct HeartbeatReceived {
    pub partition: i32,
    pub seq: u64,
    pub end_to_end: Duration,
    pub out_of_order: bool,
    /// It had already been counted lost.
    pub late: bool,
    /// Its send had been reported failed with this error: it is also counted ambiguous.
    pub failed: Option<ErrorKind>,
}

impl HeartbeatReceived {
    pub fn emit(self, r: &Recorder<'_>) {
        let attrs = r.partition(self.partition);
        r.instruments.count_received(self.end_to_end, &attrs);
        if self.out_of_order {
            r.instruments.count_out_of_order(&attrs);
        }
        if let Some(kind) = self.failed {
            let mut attrs = attrs;
            attrs.push(error_kv(kind));
            r.instruments.count_ambiguous(&attrs);
        }
        r.observe(|| Observation::RoundTrip {
            partition: self.partition,
            seq: self.seq,
            end_to_end: self.end_to_end,
            out_of_order: self.out_of_order,
            late: self.late,
            failed: self.failed,
        });
    }
}

/// A heartbeat's send was reported failed after the agent had read it back: it was
/// written after all, and counts ambiguous like one read back after its failure.
pub struct HeartbeatFailedAfterReadBack {
    pub partition: i32,
    pub seq: u64,
    pub kind: ErrorKind,
}

impl HeartbeatFailedAfterReadBack {
    pub fn emit(self, r: &Recorder<'_>) {
        let mut attrs = r.partition(self.partition);
        attrs.push(error_kv(self.kind));
        r.instruments.count_ambiguous(&attrs);
        debug!(
            name: "heartbeat.failed_after_read_back",
            partition = self.partition,
            seq = self.seq,
            error.type = self.kind.as_str(),
            "A heartbeat already read back was then reported failed: counted ambiguous.",
        );
    }
}

/// Sends reported failed on a partition turned out to be written after all. Logged once
/// per partition and episode, when no more of them can arrive.
pub struct WrittenAfterAll {
    pub partition: i32,
    pub count: u64,
    pub kind: ErrorKind,
}

impl WrittenAfterAll {
    pub fn emit(self) {
        warn!(
            name: "heartbeat.written_after_all",
            partition = self.partition,
            ambiguous = self.count,
            error.type = self.kind.as_str(),
            "{} heartbeats reported as failed ({}) were written after all: the client gave up on them, the broker did not.",
            self.count,
            self.kind,
        );
    }
}

/// Heartbeats arrived out of order on a partition (logged at most every few minutes).
pub struct HeartbeatOutOfOrder {
    pub partition: i32,
    /// Out-of-order arrivals since the last time this was logged, this one included.
    pub count: u64,
}

impl HeartbeatOutOfOrder {
    pub fn emit(self) {
        warn!(
            name: "heartbeat.heartbeat_out_of_order",
            partition = self.partition,
            out_of_order = self.count,
            "Heartbeats arrived out of order: one with a lower sequence number than one already consumed.",
        );
    }
}

/// The heartbeat topic is gone: what was in flight can no longer be read back, and is not
/// counted lost.
pub struct PendingVoided {
    pub voided: usize,
}

impl PendingVoided {
    pub fn emit(self) {
        info!(
            name: "heartbeat.pending_voided",
            in_flight = self.voided,
            "The heartbeat topic is gone: heartbeats in flight are not counted lost."
        );
    }
}

/// The heartbeat topic was recreated: counted, and what was in flight is not counted lost.
pub struct TopicRecreated<'a> {
    /// It was seen missing, then present again (else: its offsets went back).
    pub came_back: bool,
    pub partitions: &'a [i32],
    pub voided: usize,
}

impl TopicRecreated<'_> {
    pub fn emit(self, r: &Recorder<'_>) {
        r.instruments.count_recreation(r.attrs.base(), true);
        warn!(
            name: "heartbeat.topic_recreated",
            partitions = ?self.partitions,
            in_flight = self.voided,
            "The heartbeat topic was recreated ({}); heartbeats in flight are not counted lost, and the consumer reads the new topic from its start.",
            if self.came_back {
                "the metadata shows a new topic under the same name"
            } else {
                "its offsets went back"
            },
        );
    }
}

/// The first heartbeat of the run made the round trip: the cluster works end to end.
pub struct FirstRoundTrip {
    pub partition: i32,
    pub end_to_end: Duration,
    pub ready: Option<Latch>,
}

/// The first heartbeat was acknowledged, for an agent that does not read its heartbeats back
/// (`heartbeat.read_back: false`): what makes it ready.
pub struct FirstAck {
    pub partition: i32,
    pub latency: Duration,
    pub ready: Option<Latch>,
}

impl FirstAck {
    pub fn emit(self) {
        info!(
            name: "heartbeat.first_ack",
            partition = self.partition,
            produce = ?self.latency,
            "First heartbeat acknowledged (heartbeat.read_back: false, so no round trip is measured).",
        );
        if let Some(latch) = self.ready {
            latch.release();
        }
    }
}

impl FirstRoundTrip {
    pub fn emit(self) {
        info!(
            name: "heartbeat.first_round_trip",
            partition = self.partition,
            end_to_end = ?self.end_to_end,
            "First heartbeat round trip done.",
        );
        if let Some(latch) = self.ready {
            latch.release();
        }
    }
}

/// Acknowledged heartbeats were not consumed back within the loss timeout.
pub struct HeartbeatsLost<'a> {
    pub lost: &'a [Lost],
    /// The first losses of an episode (logged at WARN; later ones at DEBUG).
    pub first: bool,
}

impl HeartbeatsLost<'_> {
    pub fn emit(self, r: &Recorder<'_>) {
        for l in self.lost {
            r.instruments.count_lost(&r.partition(l.partition));
            r.observe(|| Observation::Lost {
                partition: l.partition,
                seq: l.seq,
            });
        }
        let partitions: BTreeSet<i32> = self.lost.iter().map(|l| l.partition).collect();
        warn_or_debug!(
            self.first,
            name: "heartbeat.heartbeats_lost",
            lost = self.lost.len(),
            partitions = ?partitions,
            "Heartbeats were acked but not consumed back within the loss timeout.",
        );
    }
}

/// The brokers refuse the heartbeat consumer's fetches (an ACL: the principal may not read the
/// topic). Heartbeats cannot be read back, so those overdue meanwhile are not counted lost:
/// nothing says they are. Logged once an episode.
pub struct HeartbeatReadRefused<'a> {
    pub topic: &'a str,
    /// librdkafka's reason.
    pub reason: &'a str,
    /// Overdue heartbeats not counted lost this time.
    pub uncounted: usize,
    pub first: bool,
}

impl HeartbeatReadRefused<'_> {
    pub fn emit(self) {
        warn_or_debug!(
            self.first,
            name: "heartbeat.heartbeat_read_refused",
            topic = %self.topic,
            error.type = ErrorKind::Authorization.as_str(),
            reason = %self.reason,
            uncounted = self.uncounted,
            "This agent may not read heartbeat topic {}: grant READ on it. Until then end-to-end latency and loss are not measured, and heartbeats not read back are not counted lost.",
            self.topic,
        );
    }
}

/// The brokers refuse the heartbeat producer's writes (an ACL: the principal may not write to
/// the topic). Logged once an episode for the whole topic; the failed sends are counted as
/// failed with `error.type=authorization`.
pub struct HeartbeatWriteRefused<'a> {
    pub topic: &'a str,
    pub error: &'a (dyn std::error::Error + 'static),
}

impl HeartbeatWriteRefused<'_> {
    pub fn emit(self) {
        warn!(
            name: "heartbeat.heartbeat_write_refused",
            topic = %self.topic,
            error.type = ErrorKind::Authorization.as_str(),
            error = %Chain(self.error),
            "This agent may not write to heartbeat topic {}: grant WRITE on it. Heartbeats fail until then.",
            self.topic,
        );
    }
}

/// Heartbeats are consumed back again after losses.
pub struct HeartbeatsFlowAgain;

impl HeartbeatsFlowAgain {
    pub fn emit(self) {
        info!(name: "heartbeat.heartbeats_flow_again", "Heartbeats are consumed back again.");
    }
}

/// One of this run's heartbeats was consumed a second time.
pub struct HeartbeatDuplicated {
    pub partition: i32,
    pub seq: u64,
    pub offset: i64,
}

impl HeartbeatDuplicated {
    pub fn emit(self, r: &Recorder<'_>) {
        r.instruments.count_duplicated(&r.partition(self.partition));
        debug!(
            name: "heartbeat.heartbeat_duplicated",
            partition = self.partition,
            seq = self.seq,
            offset = self.offset,
            "Duplicate heartbeat."
        );
        r.observe(|| Observation::Duplicated {
            partition: self.partition,
        });
    }
}

/// A message on the heartbeat topic that is not one of this run's heartbeats was skipped.
pub struct MessageSkipped<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub reason: SkipReason,
    /// Log it: the first message of its kind in this run that is not a heartbeat at all.
    pub log: bool,
}

impl MessageSkipped<'_> {
    pub fn emit(self, r: &Recorder<'_>) {
        let mut attrs = r.partition(self.partition);
        attrs.push(reason_kv(self.reason));
        r.instruments.count_skipped(&attrs);
        if self.log {
            info!(
                name: "heartbeat.message_skipped",
                topic = %self.topic,
                partition = self.partition,
                offset = self.offset,
                "Skipping a message that is not a heartbeat; such messages are counted, not logged again.",
            );
        } else if self.reason == SkipReason::NewerVersion {
            debug!(
                name: "heartbeat.message_skipped",
                partition = self.partition,
                offset = self.offset,
                "Skipping a heartbeat of a later version (an agent being upgraded shares the topic).",
            );
        }
        r.observe(|| Observation::Skipped {
            partition: self.partition,
            reason: self.reason,
        });
    }
}

/// The consumer reported an error (a fetch that failed while a broker is away): said at
/// DEBUG once per kind in a row; the heartbeat counters show its effect.
pub struct ConsumerError<'a> {
    pub error: &'a rdkafka::error::KafkaError,
}

impl ConsumerError<'_> {
    pub fn emit(self) {
        debug!(name: "heartbeat.consumer_error", error = %self.error, "Heartbeat consumer error.");
    }
}

/// Partitions of the topic the producer does not know yet: they wait a round.
pub struct PartitionsUnknownToProducer<'a> {
    pub partitions: &'a [i32],
}

impl PartitionsUnknownToProducer<'_> {
    pub fn emit(self) {
        if !self.partitions.is_empty() {
            debug!(name: "heartbeat.partitions_unknown_to_producer", partitions = ?self.partitions, "The producer does not know these partitions yet; they wait a round.");
        }
    }
}

/// A partition is assigned to the consumer at `start` (its log spans `low` to `high`).
pub struct PartitionAssigning {
    pub partition: i32,
    pub low: i64,
    pub high: i64,
    pub start: i64,
}

impl PartitionAssigning {
    pub fn emit(self) {
        debug!(
            name: "heartbeat.partition_assigning",
            partition = self.partition,
            low = self.low,
            high = self.high,
            start = self.start,
            "Assigning the partition."
        );
    }
}
