//! The heartbeat's bookkeeping: one task owns the [`Tracker`] and turns every [`Event`] (a
//! send, an ack, a consumed message, a sweep) into the heartbeat events that log and record.
//! It runs until every event source is gone: the probe, the producer and the consumer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use rdkafka::error::KafkaError;
use tokio::sync::{mpsc, watch};

use super::clients::Event;
use super::payload::Decoded;
use crate::events::Episode;
use crate::events::heartbeat::{
    FirstRoundTrip, HeartbeatAcked, HeartbeatDuplicated, HeartbeatReceived, HeartbeatSendFailed,
    HeartbeatSendsRecovered, HeartbeatsFlowAgain, HeartbeatsLost, MessageSkipped,
    PartitionsAssigned, Recorder, Tap,
};
use crate::health::Latch;
use crate::kafka::metadata::ClusterView;
use crate::telemetry::{ClusterAttributes, Instruments, SkipReason};
use crate::tracker::{Receipt, Tracker};

pub struct HeartbeatReceiver {
    pub(super) events: mpsc::UnboundedReceiver<Event>,
    pub(super) tracker: Tracker,
    pub(super) cluster: String,
    pub(super) topic: String,
    pub(super) view: watch::Receiver<Arc<ClusterView>>,
    pub(super) attrs: ClusterAttributes,
    pub(super) instruments: Instruments,
    pub(super) tap: Option<Tap>,
    /// Released on the first own heartbeat consumed back.
    pub(super) first_round_trip: Option<Latch>,
    /// Partitions whose sends are failing (logged when it starts and ends).
    pub(super) failing: BTreeMap<i32, Episode>,
    pub(super) losing: Episode,
    pub(super) undecodable_logged: bool,
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
                }
                .emit(&self.recorder());
            }
            Event::Sent {
                partition,
                seq,
                sent_at,
            } => self.tracker.register(partition, seq, sent_at),
            Event::Refused {
                partition,
                seq,
                at,
                error,
            } => {
                self.tracker.acked(partition, seq, at, false);
                self.send_failed(partition, None, &error);
            }
            Event::Acked {
                partition,
                seq,
                sent_at,
                at,
                outcome,
            } => self.on_ack(
                partition,
                seq,
                at.saturating_duration_since(sent_at),
                at,
                outcome,
            ),
            Event::Consumed {
                partition,
                offset,
                at,
                decoded,
            } => self.on_consumed(partition, offset, at, decoded),
            Event::Sweep { at } => self.sweep(at),
        }
    }

    /// Labels follow the cluster id the metadata reports (it can change when the bootstrap
    /// address reaches another cluster).
    fn follow_cluster_id(&mut self) {
        let view = self.view.borrow();
        if view.cluster_id != self.attrs.cluster_id() {
            self.attrs = ClusterAttributes::new(&view.cluster_id, &self.cluster);
        }
    }

    fn recorder(&self) -> Recorder<'_> {
        Recorder {
            instruments: &self.instruments,
            attrs: &self.attrs,
            tap: self.tap.as_ref(),
        }
    }

    fn leader_of(&self, partition: i32) -> Option<i32> {
        self.view.borrow().leader_of(partition)
    }

    fn on_ack(
        &mut self,
        partition: i32,
        seq: u64,
        latency: std::time::Duration,
        at: Instant,
        outcome: Result<(), KafkaError>,
    ) {
        self.tracker.acked(partition, seq, at, outcome.is_ok());
        let leader = self.leader_of(partition);
        match outcome {
            Ok(()) => {
                HeartbeatAcked {
                    partition,
                    leader,
                    latency,
                }
                .emit(&self.recorder());
                if let Some(failures) = self.failing.get_mut(&partition).and_then(Episode::recover)
                {
                    HeartbeatSendsRecovered {
                        partition,
                        leader,
                        failures,
                    }
                    .emit();
                }
            }
            Err(error) => self.send_failed(partition, Some(latency), &error),
        }
    }

    fn send_failed(
        &mut self,
        partition: i32,
        latency: Option<std::time::Duration>,
        error: &KafkaError,
    ) {
        let first = self.failing.entry(partition).or_default().fail();
        HeartbeatSendFailed {
            partition,
            leader: self.leader_of(partition),
            latency,
            error,
            first,
        }
        .emit(&self.recorder());
    }

    fn sweep(&mut self, now: Instant) {
        let lost = self.tracker.sweep(now);
        if lost.is_empty() {
            return;
        }
        let first = self.losing.fail();
        HeartbeatsLost { lost: &lost, first }.emit(&self.recorder());
    }

    fn on_consumed(&mut self, partition: i32, offset: i64, at: Instant, decoded: Decoded) {
        let seq = match decoded {
            Decoded::Own { seq } => seq,
            Decoded::Foreign => return self.skip(partition, offset, SkipReason::Foreign),
            Decoded::Undecodable => {
                return self.skip(partition, offset, SkipReason::Undecodable);
            }
        };
        match self.tracker.received(partition, seq, at) {
            Receipt::Received {
                end_to_end,
                out_of_order,
                late,
            } => {
                HeartbeatReceived {
                    partition,
                    end_to_end,
                    out_of_order,
                    late,
                }
                .emit(&self.recorder());
                if !late && self.losing.recover().is_some() {
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
            // Claims to be ours with a sequence never sent: someone else's message.
            Receipt::Unexpected => self.skip(partition, offset, SkipReason::Foreign),
        }
    }

    fn skip(&mut self, partition: i32, offset: i64, reason: SkipReason) {
        let log = reason == SkipReason::Undecodable && !self.undecodable_logged;
        self.undecodable_logged |= log;
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
