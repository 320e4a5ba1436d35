//! A connection probe (a broker's, the Schema Registry's) as a trace: a root span for the
//! round against one target, with a child per stage in the order they ran (`dns`, `tcp`,
//! `tls`, then `kafka` or `http`), the failed stage carrying its error. Kept when it failed or
//! its stages took longer than `export.traces.slow.connection`, else at the sample ratio; the
//! events of a kept round are logged inside its root span.

use std::time::Instant;

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;

use crate::kafka::reach::Outcome;
use crate::telemetry::instruments::{attr, error_kv};
use crate::telemetry::traces::{FinishedSpan, TraceIds, Traces, WallClock};

/// The resolved address and port a probe connected to (the conventions' keys).
const NETWORK_PEER_ADDRESS: &str = "network.peer.address";
const NETWORK_PEER_PORT: &str = "network.peer.port";

/// The root span's ids of one probe of one target when its trace is kept (it failed, was
/// slow, or the ratio says so), so its events can be logged inside it before it is recorded.
pub(crate) fn kept_round(traces: &Traces, outcome: &Outcome) -> Option<TraceIds> {
    let slow = traces.slow()?;
    let root = traces.start()?;
    let took = outcome
        .stages
        .iter()
        .map(|(_, d)| *d)
        .sum::<std::time::Duration>()
        + outcome.failed_after.unwrap_or_default();
    (!outcome.up() || took > slow.connection || traces.keeps_healthy(root.trace)).then_some(root)
}

/// The connection-duration series a probe's stages are measured in, for their exemplars.
pub(crate) struct StageSeries {
    /// The histogram (`kafka.broker.connection.duration`, ...).
    pub metric: &'static str,
    /// The attributes that name the target's series (the cluster, the broker).
    pub series: Vec<(&'static str, String)>,
    /// The attribute that names the stage.
    pub stage_key: &'static str,
}

/// Records the spans of one probe of one target under `root` (from [`kept_round`]), and each
/// completed stage's time as an exemplar of its series; `name` is the root span's (`probe
/// broker`), `attributes` its own (the target's, the cluster's).
pub(crate) fn record_staged(
    traces: &Traces,
    root: TraceIds,
    name: &str,
    attributes: Vec<KeyValue>,
    outcome: &Outcome,
    stages: StageSeries,
) {
    let clock = WallClock::now();
    let mut at = outcome.started;
    let mut children: Vec<(
        String,
        Instant,
        Instant,
        Option<&crate::kafka::reach::Failure>,
    )> = outcome
        .stages
        .iter()
        .map(|(stage, d)| {
            let start = at;
            at += *d;
            (stage.as_str().to_owned(), start, at, None)
        })
        .collect();
    if let (Some(failure), Some(d)) = (&outcome.failure, outcome.failed_after) {
        children.push((failure.stage.as_str().to_owned(), at, at + d, Some(failure)));
        at += d;
    }
    let mut root_attributes = attributes;
    if let Some(peer) = outcome.peer {
        root_attributes.push(KeyValue::new(NETWORK_PEER_ADDRESS, peer.ip().to_string()));
        root_attributes.push(KeyValue::new(NETWORK_PEER_PORT, i64::from(peer.port())));
    }
    root_attributes.push(KeyValue::new(
        "cc_heartbeat.probe.outcome",
        if outcome.up() { "up" } else { "down" },
    ));
    if let Some(failure) = &outcome.failure {
        root_attributes.push(error_kv(failure.kind()));
        root_attributes.push(KeyValue::new(
            attr::CONNECTION_STAGE,
            failure.stage.as_str(),
        ));
    }
    for (stage, start, end, failure) in children {
        let Some(ids) = traces.child(root.trace) else {
            return;
        };
        let mut attributes = vec![KeyValue::new(attr::CONNECTION_STAGE, stage.clone())];
        if let Some(f) = failure {
            attributes.push(error_kv(f.kind()));
        } else {
            let mut series = stages.series.clone();
            series.push((stages.stage_key, stage.clone()));
            traces.exemplar(
                stages.metric,
                series,
                end.saturating_duration_since(start),
                ids,
            );
        }
        traces.record(FinishedSpan {
            name: stage,
            kind: SpanKind::Client,
            ids,
            parent: Some(root.span),
            start: clock.at(start),
            end: clock.at(end),
            attributes,
            error: failure.map(|f| f.detail()),
            links: Vec::new(),
        });
    }
    traces.record(FinishedSpan {
        name: name.to_owned(),
        kind: SpanKind::Internal,
        ids: root,
        parent: None,
        start: clock.at(outcome.started),
        end: clock.at(at),
        attributes: root_attributes,
        error: outcome.failure.as_ref().map(|f| f.detail()),
        links: Vec::new(),
    });
}
