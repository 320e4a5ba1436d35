//! A heartbeat as a trace: a `send` span (PRODUCER) from the send call to the ack, and a
//! `receive` span (CONSUMER) from the ack to reading it back, its parent the send context the
//! record's `traceparent` header carried. A lost heartbeat's `receive` span ends when the
//! loss is declared.
//!
//! What is kept is decided when the outcome is known: a failed or slow send is kept at its
//! ack; a healthy one waits here (in flight only, bounded by the tracker's window) until its
//! heartbeat is read back or lost, and is kept with its `receive` span when that went wrong
//! (lost, late, out of order, written after a failed send, duplicated, slow end to end).
//! Healthy heartbeats are kept at the sample ratio, by trace id, both spans alike.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;

use crate::error::ErrorKind;
use crate::events::heartbeat::Recorder;
use crate::telemetry::instruments::{attr, error_kv, name};
use crate::telemetry::traces::{FinishedSpan, TraceIds, Traces, WallClock};
use crate::tracker::Lost;

/// What became of a heartbeat read back, for its `receive` span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReadBack {
    Received {
        end_to_end: Duration,
    },
    Late,
    OutOfOrder,
    /// Its send was reported failed, and it was written after all.
    Ambiguous,
    Duplicated,
}

/// A send waiting for its heartbeat's outcome.
#[derive(Clone, Copy, Debug)]
struct Pending {
    ids: TraceIds,
    sent_at: Instant,
    acked_at: Instant,
    broker: Option<i32>,
    /// Its span is already kept (at the ack).
    recorded: bool,
}

/// The heartbeat's spans of one cluster.
#[derive(Debug)]
pub(super) struct HeartbeatSpans {
    traces: Traces,
    /// The cluster's configured name, the series of its exemplars with the partition.
    cluster: String,
    topic: String,
    /// Acked sends not yet read back or lost, by partition and sequence number.
    pending: BTreeMap<i32, BTreeMap<u64, Pending>>,
    /// How far back a partition's pending sends are remembered (the tracker's window).
    window: u64,
}

impl HeartbeatSpans {
    pub(super) fn new(traces: Traces, cluster: &str, topic: &str, window: usize) -> Self {
        Self {
            traces,
            cluster: cluster.to_owned(),
            topic: topic.to_owned(),
            pending: BTreeMap::new(),
            window: window as u64,
        }
    }

    /// A send's outcome: `error` when it failed. Kept at once when it failed or was slow (or
    /// the ratio says so); remembered until read back when `read_back`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn acked(
        &mut self,
        r: &Recorder<'_>,
        partition: i32,
        seq: u64,
        ids: Option<TraceIds>,
        sent_at: Instant,
        acked_at: Instant,
        broker: Option<i32>,
        error: Option<(ErrorKind, Option<&'static str>)>,
        read_back: bool,
    ) {
        let (Some(ids), Some(slow)) = (ids, self.traces.slow()) else {
            return;
        };
        let latency = acked_at.saturating_duration_since(sent_at);
        let keep =
            error.is_some() || latency > slow.produce || self.traces.keeps_healthy(ids.trace);
        let pending = Pending {
            ids,
            sent_at,
            acked_at,
            broker,
            recorded: keep,
        };
        if keep {
            self.record_send(r, partition, seq, &pending, error);
        }
        if read_back {
            let sends = self.pending.entry(partition).or_default();
            sends.insert(seq, pending);
            // Heartbeats older than the window are resolved by now (the tracker's rule).
            if let Some(oldest) = seq.checked_sub(self.window) {
                *sends = sends.split_off(&oldest);
            }
        }
    }

    /// A heartbeat read back at `at` from `offset`, with the send context its header carried.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn read_back(
        &mut self,
        r: &Recorder<'_>,
        partition: i32,
        seq: u64,
        offset: i64,
        parent: Option<TraceIds>,
        at: Instant,
        what: ReadBack,
    ) {
        let Some(slow) = self.traces.slow() else {
            return;
        };
        let pending = match what {
            // The first read took it; a duplicate has only its header.
            ReadBack::Duplicated => None,
            _ => self
                .pending
                .get_mut(&partition)
                .and_then(|sends| sends.remove(&seq)),
        };
        let Some(send) = parent.or(pending.map(|p| p.ids)) else {
            return;
        };
        let (outcome, wrong) = match what {
            ReadBack::Received { end_to_end } if end_to_end > slow.end_to_end => ("slow", true),
            ReadBack::Received { .. } => ("received", false),
            ReadBack::Late => ("late", true),
            ReadBack::OutOfOrder => ("out_of_order", true),
            ReadBack::Ambiguous => ("ambiguous", true),
            ReadBack::Duplicated => ("duplicated", true),
        };
        if !wrong && !self.traces.keeps_healthy(send.trace) {
            return;
        }
        if let Some(p) = pending.filter(|p| !p.recorded) {
            self.record_send(r, partition, seq, &p, None);
        }
        let start = pending.map_or(at, |p| p.acked_at.min(at));
        let mut attributes = self.receive_attributes(r, partition, seq, outcome);
        attributes.push(KeyValue::new(attr::MESSAGING_OFFSET, offset));
        let receive = self.record_receive(send, start, at, attributes, None);
        let end_to_end = match what {
            ReadBack::Received { end_to_end } => Some(end_to_end),
            ReadBack::Duplicated => None,
            _ => pending.map(|p| at.saturating_duration_since(p.sent_at)),
        };
        if let (Some(ids), Some(e2e)) = (receive, end_to_end) {
            self.traces
                .exemplar(name::END_TO_END_DURATION, self.series(partition), e2e, ids);
        }
    }

    /// Heartbeats declared lost at `now`: their traces are kept, and end here. Returns the
    /// first one's `receive` span, for the loss to be logged in.
    pub(super) fn lost(
        &mut self,
        r: &Recorder<'_>,
        lost: &[Lost],
        now: Instant,
    ) -> Option<TraceIds> {
        let mut first = None;
        for l in lost {
            let Some(p) = self
                .pending
                .get_mut(&l.partition)
                .and_then(|sends| sends.remove(&l.seq))
            else {
                continue;
            };
            if !p.recorded {
                self.record_send(r, l.partition, l.seq, &p, None);
            }
            let mut attributes = self.receive_attributes(r, l.partition, l.seq, "lost");
            attributes.push(KeyValue::new(attr::ERROR_TYPE, "lost"));
            let receive = self.record_receive(
                p.ids,
                p.acked_at,
                now,
                attributes,
                Some("not read back within the loss timeout".to_owned()),
            );
            first = first.or(receive);
        }
        first
    }

    /// Forgets what was in flight on `partitions` (or every partition): their topic is gone,
    /// so nothing of it can be read back or lost.
    pub(super) fn void(&mut self, partitions: Option<&[i32]>) {
        match partitions {
            Some(partitions) => {
                for p in partitions {
                    self.pending.remove(p);
                }
            }
            None => self.pending.clear(),
        }
    }

    /// Sends waiting for their outcome (for tests and bounds).
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.pending.values().map(BTreeMap::len).sum()
    }

    fn record_send(
        &self,
        r: &Recorder<'_>,
        partition: i32,
        seq: u64,
        p: &Pending,
        error: Option<(ErrorKind, Option<&'static str>)>,
    ) {
        let mut attributes = r.partition(partition);
        attributes.extend([
            KeyValue::new(attr::MESSAGING_OPERATION_NAME, "send"),
            KeyValue::new(attr::MESSAGING_OPERATION_TYPE, "send"),
            KeyValue::new(attr::HEARTBEAT_SEQUENCE, seq as i64),
            KeyValue::new(
                attr::HEARTBEAT_OUTCOME,
                if error.is_some() { "failed" } else { "acked" },
            ),
        ]);
        if let Some(broker) = p.broker {
            attributes.extend(r.broker(broker));
        }
        if error.is_none() {
            let latency = p.acked_at.saturating_duration_since(p.sent_at);
            self.traces.exemplar(
                name::PRODUCE_DURATION,
                self.series(partition),
                latency,
                p.ids,
            );
        }
        let description = error.map(|(kind, code)| {
            attributes.push(error_kv(kind));
            if let Some(code) = code {
                attributes.push(KeyValue::new(attr::KAFKA_ERROR_CODE, code));
            }
            format!("the send failed: {kind}")
        });
        let clock = WallClock::now();
        self.traces.record(FinishedSpan {
            name: format!("send {}", self.topic),
            kind: SpanKind::Producer,
            ids: p.ids,
            parent: None,
            start: clock.at(p.sent_at),
            end: clock.at(p.acked_at),
            attributes,
            error: description,
            links: Vec::new(),
        });
    }

    /// The series of a partition's points, for exemplars.
    fn series(&self, partition: i32) -> Vec<(&'static str, String)> {
        vec![
            (attr::CLUSTER_NAME, self.cluster.clone()),
            (attr::PARTITION, partition.to_string()),
        ]
    }

    fn receive_attributes(
        &self,
        r: &Recorder<'_>,
        partition: i32,
        seq: u64,
        outcome: &'static str,
    ) -> Vec<KeyValue> {
        let mut attributes = r.partition(partition);
        attributes.extend([
            KeyValue::new(attr::MESSAGING_OPERATION_NAME, "receive"),
            KeyValue::new(attr::MESSAGING_OPERATION_TYPE, "receive"),
            KeyValue::new(attr::HEARTBEAT_SEQUENCE, seq as i64),
            KeyValue::new(attr::HEARTBEAT_OUTCOME, outcome),
        ]);
        attributes
    }

    /// Records a `receive` span, the child of `send`; returns its ids.
    fn record_receive(
        &self,
        send: TraceIds,
        start: Instant,
        end: Instant,
        attributes: Vec<KeyValue>,
        error: Option<String>,
    ) -> Option<TraceIds> {
        let ids = self.traces.child(send.trace)?;
        let clock = WallClock::now();
        self.traces.record(FinishedSpan {
            name: format!("receive {}", self.topic),
            kind: SpanKind::Consumer,
            ids,
            parent: Some(send.span),
            start: clock.at(start),
            end: clock.at(end),
            attributes,
            error,
            links: vec![send],
        });
        Some(ids)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use opentelemetry::trace::Status;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};

    use super::*;
    use crate::config::SlowConfig;
    use crate::kafka::metadata::ClusterView;
    use crate::telemetry::instruments::ClusterLabels;
    use crate::telemetry::{ClusterAttributes, Telemetry};

    const MS: Duration = Duration::from_millis(1);

    struct Setup {
        spans: HeartbeatSpans,
        traces: Traces,
        exporter: InMemorySpanExporter,
        telemetry: Telemetry,
        attrs: ClusterAttributes,
        t0: Instant,
    }

    /// Spans kept at `ratio`, slow over 100 ms to the ack and 200 ms end to end.
    fn setup(ratio: f64) -> Setup {
        let exporter = InMemorySpanExporter::default();
        let slow = SlowConfig {
            produce: 100 * MS,
            end_to_end: 200 * MS,
            connection: 300 * MS,
        };
        let traces = Traces::with_exporter(exporter.clone(), ratio, slow);
        let labels = ClusterLabels::new("c", std::iter::empty());
        Setup {
            spans: HeartbeatSpans::new(traces.clone(), "c", "hb", 64),
            traces,
            exporter,
            telemetry: Telemetry::from_provider(Default::default()),
            attrs: ClusterAttributes::new("id", &labels).for_heartbeat("hb"),
            t0: Instant::now(),
        }
    }

    impl Setup {
        /// Runs `f` on the spans with a recorder borrowed from the rest.
        fn with<R>(&mut self, f: impl FnOnce(&mut HeartbeatSpans, &Recorder<'_>) -> R) -> R {
            let recorder = Recorder {
                instruments: &self.telemetry.instruments,
                attrs: &self.attrs,
                view: Arc::new(ClusterView::unknown()),
                tap: None,
            };
            f(&mut self.spans, &recorder)
        }

        /// Sends heartbeat `seq` on partition 0 at t0, acked after `produce`.
        fn ack(&mut self, seq: u64, produce: Duration, error: Option<ErrorKind>) -> TraceIds {
            let ids = self.traces.start().unwrap();
            let (t0, failure) = (self.t0, error.map(|k| (k, None)));
            self.with(|spans, r| {
                spans.acked(
                    r,
                    0,
                    seq,
                    Some(ids),
                    t0,
                    t0 + produce,
                    Some(1),
                    failure,
                    true,
                );
            });
            ids
        }

        fn read(&mut self, seq: u64, header: Option<TraceIds>, what: ReadBack) {
            let at = self.t0 + 20 * MS;
            self.with(|spans, r| spans.read_back(r, 0, seq, seq as i64, header, at, what));
        }

        fn kept(&self) -> Vec<SpanData> {
            self.traces.flush();
            self.exporter.get_finished_spans().unwrap()
        }
    }

    fn outcome(span: &SpanData) -> String {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == attr::HEARTBEAT_OUTCOME)
            .map(|kv| kv.value.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn a_healthy_heartbeat_is_kept_whole_at_ratio_one_as_send_then_receive() {
        let mut s = setup(1.0);
        let ids = s.ack(0, 5 * MS, None);
        s.read(
            0,
            Some(ids),
            ReadBack::Received {
                end_to_end: 20 * MS,
            },
        );
        let kept = s.kept();
        assert_eq!(kept.len(), 2, "{kept:?}");
        let (send, receive) = (&kept[0], &kept[1]);
        assert_eq!(send.name, "send hb");
        assert_eq!(send.span_kind, SpanKind::Producer);
        assert_eq!(send.span_context.trace_id(), ids.trace);
        assert_eq!(send.span_context.span_id(), ids.span);
        assert_eq!(outcome(send), "acked");
        assert_eq!(
            send.end_time.duration_since(send.start_time).unwrap(),
            5 * MS
        );
        assert_eq!(receive.name, "receive hb");
        assert_eq!(receive.span_kind, SpanKind::Consumer);
        assert_eq!(receive.span_context.trace_id(), ids.trace);
        assert_eq!(receive.parent_span_id, ids.span);
        assert_eq!(receive.links.links[0].span_context.span_id(), ids.span);
        assert_eq!(outcome(receive), "received");
        assert_eq!(s.spans.waiting(), 0);
    }

    #[test]
    fn healthy_heartbeats_are_dropped_at_ratio_zero_and_what_went_wrong_is_kept() {
        let mut s = setup(0.0);
        let healthy = s.ack(0, 5 * MS, None);
        s.read(
            0,
            Some(healthy),
            ReadBack::Received {
                end_to_end: 20 * MS,
            },
        );
        assert!(s.kept().is_empty(), "a healthy heartbeat at ratio 0");

        let slow_send = s.ack(1, 150 * MS, None);
        let failed = s.ack(2, 5 * MS, Some(ErrorKind::Timeout));
        let kept = s.kept();
        assert_eq!(kept.len(), 2, "a slow send and a failed one, at their acks");
        assert_eq!(kept[0].span_context.trace_id(), slow_send.trace);
        assert_eq!(kept[1].span_context.trace_id(), failed.trace);
        assert_eq!(outcome(&kept[1]), "failed");
        assert!(matches!(kept[1].status, Status::Error { .. }));
        assert!(
            kept[1]
                .attributes
                .iter()
                .any(|kv| kv.key.as_str() == attr::ERROR_TYPE && kv.value.to_string() == "timeout")
        );

        // Healthy at the ack, wrong when read back: both spans kept then.
        let slow_e2e = s.ack(3, 5 * MS, None);
        s.read(
            3,
            Some(slow_e2e),
            ReadBack::Received {
                end_to_end: 250 * MS,
            },
        );
        let late = s.ack(4, 5 * MS, None);
        s.read(4, Some(late), ReadBack::Late);
        let kept = s.kept();
        let of = |ids: TraceIds| -> Vec<String> {
            kept.iter()
                .filter(|k| k.span_context.trace_id() == ids.trace)
                .map(|k| format!("{} {}", k.name, outcome(k)))
                .collect()
        };
        assert_eq!(of(slow_e2e), ["send hb acked", "receive hb slow"]);
        assert_eq!(of(late), ["send hb acked", "receive hb late"]);
        assert_eq!(
            s.spans.waiting(),
            2,
            "the slow and the failed sends, not read back"
        );
    }

    #[test]
    fn a_lost_heartbeats_trace_ends_when_the_loss_is_declared() {
        let mut s = setup(0.0);
        let ids = s.ack(7, 5 * MS, None);
        assert_eq!(s.spans.waiting(), 1, "a healthy send waits for its outcome");
        let declared = s.t0 + Duration::from_secs(30);
        let lost = [Lost {
            partition: 0,
            seq: 7,
        }];
        s.with(|spans, r| spans.lost(r, &lost, declared));
        let kept = s.kept();
        assert_eq!(kept.len(), 2);
        let receive = &kept[1];
        assert_eq!(receive.span_context.trace_id(), ids.trace);
        assert_eq!(outcome(receive), "lost");
        assert!(matches!(receive.status, Status::Error { .. }));
        assert_eq!(
            receive.end_time.duration_since(receive.start_time).unwrap(),
            Duration::from_secs(30) - 5 * MS,
            "from the ack to the declaration"
        );
    }

    #[test]
    fn waiting_sends_are_bounded_by_the_window_and_voided_with_their_topic() {
        let mut s = setup(0.0);
        for seq in 0..500 {
            s.ack(seq, 5 * MS, None);
        }
        assert!(s.spans.waiting() <= 65, "{}", s.spans.waiting());
        s.spans.void(Some(&[0]));
        assert_eq!(s.spans.waiting(), 0);
        assert!(s.kept().is_empty());
    }

    #[test]
    fn a_duplicate_is_kept_from_its_header_alone() {
        let mut s = setup(0.0);
        let ids = s.ack(0, 5 * MS, None);
        s.read(
            0,
            Some(ids),
            ReadBack::Received {
                end_to_end: 20 * MS,
            },
        );
        s.read(0, Some(ids), ReadBack::Duplicated);
        let kept = s.kept();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(outcome(&kept[0]), "duplicated");
        assert_eq!(kept[0].parent_span_id, ids.span);
    }
}
