//! The heartbeat's bookkeeping: one task owns the [`Tracker`] and turns every [`Event`] (a
//! send, an ack, a consumed message, a sweep, the topic going or coming back) into the
//! heartbeat events that log and record. It runs until every event source is gone: the
//! probe, the producer and the consumer.
//!
//! A heartbeat not consumed back within the loss timeout is only suspected at first: the
//! metadata is read again, and it counts as lost only if its topic is still there. A topic
//! that vanished (or was recreated) voids what was in flight instead, so deleting the topic
//! never reads as heartbeats lost.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use tokio::sync::{mpsc, watch};

use super::clients::{Event, Positions, Recreation};
use super::payload::Decoded;
use super::spans::{HeartbeatSpans, ReadBack};
use crate::error::ErrorKind;
use crate::events::Episode;
use crate::events::cluster::ClusterRequests;
use crate::events::heartbeat::{
    FirstAck, FirstRoundTrip, HeartbeatAcked, HeartbeatDuplicated, HeartbeatFailedAfterReadBack,
    HeartbeatOutOfOrder, HeartbeatReadRefused, HeartbeatReceived, HeartbeatSendFailed,
    HeartbeatSendsRecovered, HeartbeatWriteRefused, HeartbeatsFlowAgain, HeartbeatsLost,
    LeaderMoved, MessageSkipped, PartitionsAssigned, PendingVoided, Recorder, Tap, TopicRecreated,
    WrittenAfterAll,
};
use crate::health::Latch;
use crate::kafka::admin::Request;
use crate::kafka::metadata::ClusterView;
use crate::kafka::{LibrdkafkaLog, Refused};
use crate::probe::Wake;
use crate::telemetry::instruments::ClusterLabels;
use crate::telemetry::traces::{TraceIds, in_span};
use crate::telemetry::{ClusterAttributes, Instruments, SkipReason};
use crate::tracker::{Lost, Receipt, Tracker};

/// Whether a send was given up by the agent itself (its producer closing at shutdown with
/// the heartbeat still queued or in flight), rather than failed.
fn abandoned(error: &KafkaError) -> bool {
    use rdkafka::error::RDKafkaErrorCode as C;
    matches!(
        error.rdkafka_error_code(),
        Some(C::PurgeQueue | C::PurgeInflight | C::BrokerDestroy | C::DestroyBroker)
    )
}

/// How long suspected losses wait for fresh metadata before they count anyway (the cluster
/// does not answer metadata requests either, so the losses are real).
const CONFIRM_WAIT: Duration = Duration::from_secs(15);
/// Out-of-order arrivals on a partition are logged at most this often.
const OUT_OF_ORDER_LOG_EVERY: Duration = Duration::from_secs(300);

pub struct HeartbeatReceiver {
    pub(super) events: mpsc::UnboundedReceiver<Event>,
    /// Where the consumer is; asked to be checked before losses count.
    pub(super) positions: Arc<Positions>,
    pub(super) tracker: Tracker,
    pub(super) loss_timeout: Duration,
    pub(super) cluster: ClusterLabels,
    pub(super) topic: String,
    pub(super) view: watch::Receiver<Arc<ClusterView>>,
    /// Asks the metadata watch for a fresh view (to confirm losses).
    pub(super) refresh: Wake,
    pub(super) attrs: ClusterAttributes,
    pub(super) instruments: Instruments,
    /// The producer's connection state: a send that times out while the producer's
    /// connections fail their TLS handshake or authentication failed on that.
    pub(super) producer_log: LibrdkafkaLog,
    /// The consumer's: while the brokers refuse its fetches, nothing can be read back.
    pub(super) consumer_log: LibrdkafkaLog,
    pub(super) tap: Option<Tap>,
    /// Released on the first own heartbeat consumed back.
    pub(super) first_round_trip: Option<Latch>,
    /// Counts the consumer's failed fetches among the cluster's requests.
    pub(super) requests: ClusterRequests,
    /// The heartbeats are consumed back; otherwise only their acks are measured.
    pub(super) read_back: bool,
    pub(super) spans: HeartbeatSpans,
    pub(super) state: ReceiverState,
}

/// What the receiver remembers between events, besides the tracker.
#[derive(Debug, Default)]
pub(super) struct ReceiverState {
    /// Partitions whose sends are failing (logged when it starts and ends).
    failing: BTreeMap<i32, Episode>,
    losing: Episode,
    /// The brokers refuse the producer's writes, or the consumer's reads (ACLs).
    write_refused: Episode,
    read_refused: Episode,
    undecodable_logged: bool,
    /// Overdue heartbeats waiting for fresh metadata and a position check, with when they
    /// became suspect, and the metadata refresh and position check counts then.
    suspects: Vec<Lost>,
    suspected: Option<Suspicion>,
    /// Per partition: failed sends that were written after all (not yet logged), of what
    /// kind, and the last failure.
    written_after_all: BTreeMap<i32, (u64, ErrorKind)>,
    last_failure: BTreeMap<i32, Instant>,
    /// Per partition: out-of-order arrivals not yet logged, and when that was last logged.
    out_of_order: BTreeMap<i32, (u64, Option<Instant>)>,
    counters_started: bool,
    /// The broker that acked each partition's last heartbeat: its leader, as seen by the
    /// producer.
    acked_by: BTreeMap<i32, i32>,
}

#[derive(Clone, Copy, Debug)]
struct Suspicion {
    since: Instant,
    refresh: u64,
    checked: u64,
}

/// The error a failed send is reported with: the TLS or authentication failure it was blamed
/// on, if any, else librdkafka's own.
fn reported<'a>(
    session: &'a Option<Refused>,
    error: &'a KafkaError,
) -> &'a (dyn std::error::Error + 'static) {
    match session {
        Some(session) => session,
        None => error,
    }
}

impl HeartbeatReceiver {
    /// Handles events until every sender is gone.
    pub async fn run(mut self) {
        while let Some(event) = self.events.recv().await {
            self.handle(event);
        }
    }

    fn handle(&mut self, event: Event) {
        self.follow_cluster_id();
        match event {
            Event::Assigned { partitions } => {
                for p in &partitions {
                    self.tracker.add_partition(*p);
                }
                PartitionsAssigned {
                    partitions: &partitions,
                    cluster_counters: !std::mem::replace(&mut self.state.counters_started, true),
                    read_back: self.read_back,
                }
                .emit(&self.recorder());
            }
            // Only what is read back can be lost, and is tracked.
            Event::Sent {
                partition,
                seq,
                sent_at,
                ..
            } if self.read_back => self.tracker.register(partition, seq, sent_at),
            Event::Sent { .. } => {}
            Event::Refused {
                partition,
                seq,
                at,
                error,
                trace,
            } => {
                let session = self.blame_refusal(&error);
                let error = reported(&session, &error);
                if let Some(kind) =
                    self.tracker
                        .acked(partition, seq, at, Err(ErrorKind::of(error)))
                {
                    self.failed_after_read_back(partition, seq, kind);
                }
                let leader = self.leader_of(partition);
                let failure = (ErrorKind::of(error), crate::error::broker_error_code(error));
                let read_back = self.read_back;
                let (spans, recorder) = self.spans_and_recorder();
                spans.acked(
                    &recorder,
                    partition,
                    seq,
                    trace,
                    at,
                    at,
                    leader,
                    Some(failure),
                    read_back,
                );
                in_span(trace, || {
                    self.send_failed(partition, seq, None, leader, error, at, trace)
                });
            }
            Event::Acked {
                partition,
                seq,
                sent_at,
                at,
                broker,
                outcome,
                trace,
            } => self.on_ack(partition, seq, sent_at, at, broker, outcome, trace),
            Event::Consumed {
                partition,
                offset,
                at,
                decoded,
                parent,
            } => self.on_consumed(partition, offset, at, decoded, parent),
            Event::FetchFailed { error } => {
                // A fetch that broke off while the brokers refuse the consumer's connections
                // (TLS, authentication) failed on that.
                let refused = matches!(
                    ErrorKind::of(&error),
                    ErrorKind::Timeout | ErrorKind::Transport
                )
                .then(|| self.consumer_log.refused())
                .flatten();
                self.requests
                    .done(Request::Fetch, Some(reported(&refused, &error)));
            }
            Event::Sweep { at, checked } => self.sweep(at, checked),
            Event::TopicGone => {
                let voided = self.tracker.void_pending(None);
                self.spans.void(None);
                self.state.suspects.clear();
                self.state.suspected = None;
                PendingVoided { voided }.emit();
            }
            Event::Recreated { partitions, how } => {
                let voided = self.tracker.void_pending(Some(&partitions));
                self.spans.void(Some(&partitions));
                self.state
                    .suspects
                    .retain(|l| !partitions.contains(&l.partition));
                TopicRecreated {
                    came_back: how == Recreation::CameBack,
                    partitions: &partitions,
                    voided,
                }
                .emit(&self.recorder());
            }
        }
    }

    /// Labels follow the cluster id the metadata reports (it can change when the bootstrap
    /// address reaches another cluster).
    fn follow_cluster_id(&mut self) {
        let view = self.view.borrow();
        if view.cluster_id != self.attrs.cluster_id() {
            self.attrs =
                ClusterAttributes::new(&view.cluster_id, &self.cluster).for_heartbeat(&self.topic);
        }
    }

    fn recorder(&self) -> Recorder<'_> {
        Recorder {
            instruments: &self.instruments,
            attrs: &self.attrs,
            view: Arc::clone(&self.view.borrow()),
            tap: self.tap.as_ref(),
        }
    }

    /// The spans, beside a recorder (for their attributes) borrowed from the other fields.
    fn spans_and_recorder(&mut self) -> (&mut HeartbeatSpans, Recorder<'_>) {
        let recorder = Recorder {
            instruments: &self.instruments,
            attrs: &self.attrs,
            view: Arc::clone(&self.view.borrow()),
            tap: self.tap.as_ref(),
        };
        (&mut self.spans, recorder)
    }

    fn leader_of(&self, partition: i32) -> Option<i32> {
        self.view.borrow().leader_of(partition)
    }

    #[allow(clippy::too_many_arguments)]
    fn on_ack(
        &mut self,
        partition: i32,
        seq: u64,
        sent_at: Instant,
        at: Instant,
        broker: Option<i32>,
        outcome: Result<(), KafkaError>,
        trace: Option<TraceIds>,
    ) {
        if outcome.as_ref().is_err_and(abandoned) {
            // Dropped by the agent itself while shutting down: not a measurement.
            self.tracker.void(partition, seq);
            return;
        }
        let latency = at.saturating_duration_since(sent_at);
        let session = outcome.as_ref().err().and_then(|e| self.blame_refusal(e));
        let result = outcome
            .as_ref()
            .map_err(|e| ErrorKind::of(reported(&session, e)))
            .copied();
        if let Some(kind) = self.tracker.acked(partition, seq, at, result) {
            self.failed_after_read_back(partition, seq, kind);
        }
        // The broker the producer sent it to; the metadata's leader only when unknown.
        let leader = broker.or_else(|| self.leader_of(partition));
        let failure = outcome.as_ref().err().map(|e| {
            let error = reported(&session, e);
            (ErrorKind::of(error), crate::error::broker_error_code(error))
        });
        let read_back = self.read_back;
        let (spans, recorder) = self.spans_and_recorder();
        spans.acked(
            &recorder, partition, seq, trace, sent_at, at, leader, failure, read_back,
        );
        match outcome {
            Ok(()) => {
                // Delivered: the brokers take the producer's writes.
                self.producer_log.accepted();
                self.state.write_refused.recover();
                if let Some(to) = broker {
                    let from = self.state.acked_by.insert(partition, to);
                    if let Some(from) = from.filter(|from| *from != to) {
                        LeaderMoved {
                            partition,
                            from,
                            to,
                        }
                        .emit();
                    }
                }
                HeartbeatAcked {
                    partition,
                    seq,
                    leader,
                    latency,
                }
                .emit(&self.recorder());
                if !self.read_back && self.first_round_trip.is_some() {
                    FirstAck {
                        partition,
                        latency,
                        ready: self.first_round_trip.take(),
                    }
                    .emit();
                }
                let recovered = self
                    .state
                    .failing
                    .get_mut(&partition)
                    .and_then(Episode::recover);
                if let Some(failures) = recovered {
                    HeartbeatSendsRecovered {
                        partition,
                        leader,
                        failures,
                    }
                    .emit();
                }
            }
            Err(error) => {
                let error = reported(&session, &error);
                in_span(trace, || {
                    self.send_failed(partition, seq, Some(latency), leader, error, at, trace);
                });
            }
        }
    }

    /// The TLS or authentication failure a send really failed on, when librdkafka reports it
    /// as a timeout or a broken connection while the producer's connections fail those.
    fn blame_refusal(&self, error: &KafkaError) -> Option<Refused> {
        matches!(
            ErrorKind::of(error),
            ErrorKind::Timeout | ErrorKind::Transport
        )
        .then(|| self.producer_log.refused())
        .flatten()
    }

    /// A send reported failed whose heartbeat had already been read back: ambiguous, like
    /// one that shows up after its failure.
    fn failed_after_read_back(&mut self, partition: i32, seq: u64, kind: ErrorKind) {
        HeartbeatFailedAfterReadBack {
            partition,
            seq,
            kind,
        }
        .emit(&self.recorder());
        self.tally_written_after_all(partition, kind);
    }

    fn tally_written_after_all(&mut self, partition: i32, kind: ErrorKind) {
        let tally = self
            .state
            .written_after_all
            .entry(partition)
            .or_insert((0, kind));
        tally.0 += 1;
    }

    #[allow(clippy::too_many_arguments)]
    fn send_failed(
        &mut self,
        partition: i32,
        seq: u64,
        latency: Option<Duration>,
        leader: Option<i32>,
        error: &(dyn std::error::Error + 'static),
        at: Instant,
        trace: Option<TraceIds>,
    ) {
        let first = self.state.failing.entry(partition).or_default().fail();
        self.state.last_failure.insert(partition, at);
        if ErrorKind::of(error) == ErrorKind::Authorization && self.state.write_refused.fail() {
            HeartbeatWriteRefused {
                topic: &self.topic,
                error,
            }
            .emit();
        }
        HeartbeatSendFailed {
            partition,
            seq,
            leader,
            latency,
            error,
            first,
            trace: trace.map(|t| t.trace),
        }
        .emit(&self.recorder());
    }

    /// Suspects what is overdue and has the topic checked: fresh metadata (is it still
    /// there?) and the consumer's positions (did a log go back?). What was suspected counts as
    /// lost once both say the topic is the same (or after a while without answers). Also
    /// closes the tally of sends reported failed but written after all, once no more of them
    /// can arrive.
    fn sweep(&mut self, now: Instant, checked: u64) {
        let refresh = self.view.borrow().refresh;
        let overdue = self.tracker.overdue(now);
        if !overdue.is_empty() {
            if self.state.suspected.is_none() {
                self.state.suspected = Some(Suspicion {
                    since: now,
                    refresh,
                    checked,
                });
                self.refresh.now();
                self.positions.request_check();
            }
            self.state.suspects.extend(overdue);
        }
        if let Some(s) = self.state.suspected {
            let topic_there = self.view.borrow().topic_present();
            let checked_since = refresh > s.refresh && checked > s.checked;
            if (checked_since && topic_there) || now - s.since >= CONFIRM_WAIT {
                let suspects = std::mem::take(&mut self.state.suspects);
                self.state.suspected = None;
                if let Some((ErrorKind::Authorization, reason)) = self.consumer_log.refusal() {
                    for l in &suspects {
                        self.tracker.void(l.partition, l.seq);
                    }
                    HeartbeatReadRefused {
                        topic: &self.topic,
                        reason: &reason,
                        uncounted: suspects.len(),
                        first: self.state.read_refused.fail(),
                    }
                    .emit();
                    return;
                }
                let lost = self.tracker.confirm_lost(&suspects);
                let (spans, recorder) = self.spans_and_recorder();
                // Logged inside the first lost heartbeat's trace.
                let traced = spans.lost(&recorder, &lost, now);
                if !lost.is_empty() {
                    let first = self.state.losing.fail();
                    in_span(traced, || {
                        HeartbeatsLost { lost: &lost, first }.emit(&self.recorder());
                    });
                }
            }
        }
        let loss_timeout = self.loss_timeout;
        let last_failure = &self.state.last_failure;
        let settled: Vec<i32> = self
            .state
            .written_after_all
            .keys()
            .copied()
            .filter(|p| {
                last_failure
                    .get(p)
                    .is_none_or(|at| now - *at >= loss_timeout)
            })
            .collect();
        for partition in settled {
            if let Some((count, kind)) = self.state.written_after_all.remove(&partition) {
                WrittenAfterAll {
                    partition,
                    count,
                    kind,
                }
                .emit();
            }
        }
    }

    fn on_consumed(
        &mut self,
        partition: i32,
        offset: i64,
        at: Instant,
        decoded: Decoded,
        parent: Option<TraceIds>,
    ) {
        let seq = match decoded {
            Decoded::Own { seq } => seq,
            Decoded::Foreign => return self.skip(partition, offset, SkipReason::Foreign),
            Decoded::Misplaced => return self.skip(partition, offset, SkipReason::Misplaced),
            Decoded::NewerVersion => {
                return self.skip(partition, offset, SkipReason::NewerVersion);
            }
            Decoded::Undecodable => {
                return self.skip(partition, offset, SkipReason::Undecodable);
            }
        };
        let receipt = self.tracker.received(partition, seq, offset, at);
        let read_back = match receipt {
            Receipt::Received { late: true, .. } => Some(ReadBack::Late),
            Receipt::Received {
                failed: Some(_), ..
            } => Some(ReadBack::Ambiguous),
            Receipt::Received {
                out_of_order: true, ..
            } => Some(ReadBack::OutOfOrder),
            Receipt::Received { end_to_end, .. } => Some(ReadBack::Received { end_to_end }),
            Receipt::Duplicate => Some(ReadBack::Duplicated),
            Receipt::Stale | Receipt::Reread | Receipt::Unexpected => None,
        };
        if let Some(what) = read_back {
            let (spans, recorder) = self.spans_and_recorder();
            spans.read_back(&recorder, partition, seq, offset, parent, at, what);
        }
        match receipt {
            Receipt::Received {
                end_to_end,
                out_of_order,
                late,
                failed,
            } => {
                HeartbeatReceived {
                    partition,
                    seq,
                    end_to_end,
                    out_of_order,
                    late,
                    failed,
                }
                .emit(&self.recorder());
                if let Some(kind) = failed {
                    self.tally_written_after_all(partition, kind);
                }
                if out_of_order {
                    self.note_out_of_order(partition, at);
                }
                if !late && self.state.losing.recover().is_some() {
                    HeartbeatsFlowAgain.emit();
                }
                if self.state.read_refused.recover().is_some() {
                    HeartbeatsFlowAgain.emit();
                }
                if self.first_round_trip.is_some() {
                    FirstRoundTrip {
                        partition,
                        end_to_end,
                        ready: self.first_round_trip.take(),
                    }
                    .emit();
                }
            }
            Receipt::Duplicate => HeartbeatDuplicated {
                partition,
                seq,
                offset,
            }
            .emit(&self.recorder()),
            Receipt::Stale => self.skip(partition, offset, SkipReason::Stale),
            Receipt::Reread => self.skip(partition, offset, SkipReason::Reread),
            // Claims to be ours with a sequence never sent: someone else's message.
            Receipt::Unexpected => self.skip(partition, offset, SkipReason::Foreign),
        }
    }

    /// Logs out-of-order arrivals on a partition at most every few minutes, with how many.
    fn note_out_of_order(&mut self, partition: i32, now: Instant) {
        let (count, logged) = self.state.out_of_order.entry(partition).or_default();
        *count += 1;
        if logged.is_none_or(|at| now - at >= OUT_OF_ORDER_LOG_EVERY) {
            HeartbeatOutOfOrder {
                partition,
                count: *count,
            }
            .emit();
            *count = 0;
            *logged = Some(now);
        }
    }

    fn skip(&mut self, partition: i32, offset: i64, reason: SkipReason) {
        let log = reason == SkipReason::Undecodable && !self.state.undecodable_logged;
        self.state.undecodable_logged |= log;
        MessageSkipped {
            topic: &self.topic,
            partition,
            offset,
            reason,
            log,
        }
        .emit(&self.recorder());
    }
}
