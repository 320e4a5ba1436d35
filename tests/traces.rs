#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! What the agent binary sends as spans over OTLP, decoded by the test's receiver: a
//! heartbeat is a trace of a `send` (PRODUCER) and a `receive` (CONSUMER) span, the receive a
//! child of the send context; the resource and headers are the metrics'; healthy heartbeats
//! are kept at the sample ratio, and slow or failed ones always. The cluster is the mock (its
//! delays and outages are the faults); the Apache Kafka test of the `traceparent` header is
//! in kafka_heartbeat.rs.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{Exemplar, exemplar, metric};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use support::otlp::{OtlpReceiver, attr, counter_value, find};
use support::process::{AgentProcess, http_get};
use support::{MockKafka, eventually, free_port, unique_topic};

fn agent(mock: &MockKafka, receiver: &OtlpReceiver, protocol: &str, traces: &str) -> AgentProcess {
    agent_with(mock, receiver, protocol, traces, &[], free_port())
}

/// The agent, exporting to `receiver` and serving `/metrics` on `http_port`.
fn agent_with(
    mock: &MockKafka,
    receiver: &OtlpReceiver,
    protocol: &str,
    traces: &str,
    env: &[(&str, &str)],
    http_port: u16,
) -> AgentProcess {
    let topic = unique_topic("traces");
    mock.create_topic(&topic, 2);
    AgentProcess::start(
        &format!(
            "clusters:\n  - name: traced\n    bootstrap_servers: '{}'\n\
             heartbeat: {{topic: {topic}, interval: 200ms, loss_timeout: 3s, message_timeout: 1s}}\n\
             checks: {{metadata: {{interval: 1s}}, connectivity: {{interval: 1s, timeout: 800ms}}}}\n\
             export:\n  otlp: {{endpoint: '{}', protocol: {protocol}, interval: 1s, headers: {{x-team: heartbeat}}}}\n  traces: {traces}\n\
             http: {{listen: '127.0.0.1:{http_port}', prometheus: true}}\n",
            mock.bootstrap(),
            receiver.endpoint(),
        ),
        &[
            &[
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "service.instance.id=traced-agent",
                ),
                // The standard batch processors' settings: kept spans and records leave
                // within 200 ms.
                ("OTEL_BSP_SCHEDULE_DELAY", "200"),
                ("OTEL_BLRP_SCHEDULE_DELAY", "200"),
            ],
            env,
        ]
        .concat(),
    )
}

/// A one-broker mock, a receiver, and an agent keeping no healthy span, once heartbeats flow.
async fn flowing_unsampled() -> (MockKafka, OtlpReceiver, AgentProcess) {
    let mock = MockKafka::new(1);
    let receiver = OtlpReceiver::start(0).await;
    let agent = agent(&mock, &receiver, "grpc", "{sample_ratio: 0}");
    eventually(Duration::from_secs(30), "heartbeats flow", || {
        let last = receiver.requests().pop()?;
        (counter_value(&last, "kafka.heartbeat.messages.received", &[]) > 5).then_some(())
    })
    .await;
    (mock, receiver, agent)
}

fn outcome(span: &Span) -> String {
    attr(&span.attributes, "cc_heartbeat.heartbeat.outcome").unwrap_or_default()
}

fn duration(span: &Span) -> Duration {
    Duration::from_nanos(span.end_time_unix_nano - span.start_time_unix_nano)
}

fn int(attrs: &[KeyValue], key: &str) -> Option<i64> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::IntValue(v) => Some(*v),
            _ => None,
        }
    })
}

/// Spans by trace id.
fn traces(spans: &[(Vec<KeyValue>, Span)]) -> BTreeMap<Vec<u8>, Vec<Span>> {
    let mut traces: BTreeMap<Vec<u8>, Vec<Span>> = BTreeMap::new();
    for (_, span) in spans {
        traces
            .entry(span.trace_id.clone())
            .or_default()
            .push(span.clone());
    }
    traces
}

/// At `sample_ratio: 1` every heartbeat is a trace of two spans: `send` (PRODUCER, from the
/// send to the ack, naming the broker that acked) and `receive` (CONSUMER, the send's child
/// and linked to it, with the offset read), both with the messaging conventions' attributes,
/// under the metrics' resource. Their export is counted among the agent's own metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_is_a_trace_of_its_send_and_its_receive() {
    let mock = MockKafka::new(1);
    let receiver = OtlpReceiver::start(0).await;
    let agent = agent_with(
        &mock,
        &receiver,
        "grpc",
        "{sample_ratio: 1}",
        &[("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-spans-only=yes")],
        free_port(),
    );
    eventually(Duration::from_secs(30), "ten whole traces", || {
        let whole = traces(&receiver.spans())
            .values()
            .filter(|t| t.len() == 2)
            .count();
        (whole >= 10).then_some(())
    })
    .await;
    let (status, output) = agent.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{output}");

    let spans = receiver.spans();
    for (resource, _) in &spans {
        assert_eq!(
            attr(resource, "service.instance.id").as_deref(),
            Some("traced-agent")
        );
        assert_eq!(
            attr(resource, "service.name").as_deref(),
            Some("cc-heartbeat")
        );
    }
    let traces = traces(&spans);
    let mut whole = 0;
    for spans in traces.values() {
        let send = spans.iter().find(|s| s.kind == SpanKind::Producer as i32);
        let receive = spans.iter().find(|s| s.kind == SpanKind::Consumer as i32);
        let (Some(send), Some(receive)) = (send, receive) else {
            // The newest may be cut by the stop; a lone receive never exists.
            assert!(receive.is_none(), "a receive without its send: {spans:?}");
            continue;
        };
        whole += 1;
        assert!(send.name.starts_with("send traces-"), "{}", send.name);
        assert!(
            receive.name.starts_with("receive traces-"),
            "{}",
            receive.name
        );
        assert!(send.parent_span_id.is_empty(), "the send starts the trace");
        assert_eq!(
            receive.parent_span_id, send.span_id,
            "receive is the send's child"
        );
        assert_eq!(receive.links.len(), 1);
        assert_eq!(receive.links[0].span_id, send.span_id);
        assert_eq!(outcome(send), "acked");
        // Slow when more than `slow.end_to_end` (500 ms by default) from send to read.
        let end_to_end =
            Duration::from_nanos(receive.end_time_unix_nano - send.start_time_unix_nano);
        match outcome(receive).as_str() {
            "received" => assert!(end_to_end <= Duration::from_millis(501), "{end_to_end:?}"),
            "slow" => assert!(end_to_end > Duration::from_millis(499), "{end_to_end:?}"),
            other => panic!("a healthy heartbeat read back as {other}"),
        }
        for span in [send, receive] {
            assert_eq!(
                attr(&span.attributes, "messaging.system").as_deref(),
                Some("kafka")
            );
            assert_eq!(
                attr(&span.attributes, "kafka.cluster.name").as_deref(),
                Some("traced")
            );
            assert_eq!(
                int(&span.attributes, "cc_heartbeat.heartbeat.sequence"),
                int(&send.attributes, "cc_heartbeat.heartbeat.sequence")
            );
            assert_eq!(
                attr(&span.attributes, "messaging.destination.partition.id"),
                attr(&send.attributes, "messaging.destination.partition.id")
            );
            assert_ne!(
                span.status.clone().unwrap_or_default().code,
                StatusCode::Error as i32
            );
        }
        assert_eq!(
            attr(&send.attributes, "messaging.operation.type").as_deref(),
            Some("send")
        );
        assert_eq!(
            attr(&send.attributes, "kafka.broker.id").as_deref(),
            Some("1")
        );
        assert_eq!(
            attr(&send.attributes, "server.address").as_deref(),
            Some("127.0.0.1")
        );
        assert!(int(&receive.attributes, "messaging.kafka.offset").is_some());
        // Read back after its ack (or, rarely, just before the ack's report): each span's
        // wall-clock times are read when it is made, so allow a millisecond between them.
        assert!(
            receive.start_time_unix_nano + 1_000_000 >= send.end_time_unix_nano,
            "{send:?}\n{receive:?}"
        );
        assert!(duration(send) < Duration::from_secs(1));
    }
    println!("{whole} whole traces of {}", traces.len());
    assert!(whole >= 10);
    let last = receiver.requests().pop().unwrap();
    assert!(
        counter_value(
            &last,
            "cc_heartbeat.export.batches",
            &[("otel.signal", "traces")]
        ) > 0,
        "span exports are counted"
    );
    // The metrics' headers go with the spans, and the spans' own variable adds to them.
    assert!(!receiver.trace_headers().is_empty());
    for headers in receiver.trace_headers() {
        assert_eq!(headers.get("x-team").unwrap(), "heartbeat");
        assert_eq!(headers.get("x-spans-only").unwrap(), "yes");
    }
    assert!(
        receiver
            .headers()
            .iter()
            .all(|h| h.get("x-spans-only").is_none() && h.get("x-team").is_some()),
        "metrics keep their own"
    );
}

/// At `sample_ratio: 0` no healthy heartbeat is kept; with the path to the broker slowed past
/// `slow.produce`, the slow sends are (and only they: each one kept took longer than the
/// threshold), and they are the produce histogram's exemplars. Over OTLP/HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_slow_heartbeats_are_kept_when_healthy_ones_are_not_sampled() {
    let mock = MockKafka::new(1);
    let receiver = OtlpReceiver::start_http().await;
    let http_port = free_port();
    let agent = agent_with(
        &mock,
        &receiver,
        "http/protobuf",
        "{sample_ratio: 0, slow: {produce: 40ms, end_to_end: 10s}}",
        &[],
        http_port,
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while receiver.requests().len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "no exports:\n{}",
            agent.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        counter_value(
            &receiver.requests().pop().unwrap(),
            "kafka.heartbeat.messages.received",
            &[]
        ) > 5,
        "heartbeats flow"
    );
    assert!(receiver.spans().is_empty(), "healthy heartbeats left out");
    mock.round_trip_time(1, Duration::from_millis(60));
    eventually(Duration::from_secs(30), "slow sends kept", || {
        (receiver.spans().len() >= 5).then_some(())
    })
    .await;
    // Scraped as OpenMetrics (as Prometheus asks), the produce buckets carry exemplars too.
    let scraped =
        openmetrics_exemplars(http_port, "kafka_heartbeat_produce_duration_seconds_bucket").await;
    let (status, output) = agent.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{output}");
    let spans: Vec<Span> = receiver.spans().into_iter().map(|(_, s)| s).collect();
    for span in &spans {
        assert_eq!(span.kind, SpanKind::Producer as i32, "only sends: {span:?}");
        assert_eq!(outcome(span), "acked");
        assert!(
            duration(span) > Duration::from_millis(40),
            "{:?}: only slow ones",
            duration(span)
        );
    }
    // The slow sends are exemplars on the produce histogram, pointing at those spans.
    let exemplars: Vec<Exemplar> = receiver
        .requests()
        .iter()
        .filter_map(|r| find(r, "kafka.heartbeat.produce.duration"))
        .filter_map(|m| match &m.data {
            Some(metric::Data::Histogram(h)) => Some(h.data_points.clone()),
            _ => None,
        })
        .flatten()
        .flat_map(|p| p.exemplars)
        .collect();
    assert!(exemplars.len() >= 3, "{} exemplars", exemplars.len());
    for e in &exemplars {
        let span = spans
            .iter()
            .find(|s| s.span_id == e.span_id && s.trace_id == e.trace_id)
            .expect("an exemplar's span is in the trace export");
        let Some(exemplar::Value::AsDouble(value)) = e.value else {
            panic!("{e:?}")
        };
        assert!(value > 0.040, "{value}");
        assert!(
            (value - duration(span).as_secs_f64()).abs() < 0.002,
            "the exemplar's value is its span's duration: {value} vs {:?}",
            duration(span)
        );
    }
    assert!(!scraped.is_empty(), "exemplars on /metrics");
    for (trace_id, span_id, value, le) in &scraped {
        let span = spans
            .iter()
            .find(|s| hex(&s.trace_id) == *trace_id && hex(&s.span_id) == *span_id)
            .unwrap_or_else(|| {
                panic!("a scraped exemplar's span ({trace_id}/{span_id}) is in the trace export")
            });
        assert!(
            *value > 0.040 && value <= le,
            "{value} in the bucket up to {le}"
        );
        assert!((value - duration(span).as_secs_f64()).abs() < 0.002);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The exemplars on `/metrics` scraped as OpenMetrics, of the samples named `sample`: trace id,
/// span id, value and the bucket's upper bound. Checks the exposition's frame on the way.
async fn openmetrics_exemplars(http_port: u16, sample: &str) -> Vec<(String, String, f64, f64)> {
    // The text format, without them (and the TLS provider reqwest needs, installed).
    let plain = http_get(&format!("http://127.0.0.1:{http_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !plain.contains("# EOF") && !plain.contains("trace_id"),
        "the text format without them"
    );
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{http_port}/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .send()
        .await
        .expect("scrape");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{:?}",
        response.headers()
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    text.lines()
        .filter(|l| l.starts_with(sample))
        .filter_map(|l| l.split_once(" # "))
        .map(|(point, exemplar)| {
            let le: f64 = point
                .split("le=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .map(|le| {
                    if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap()
                    }
                })
                .expect("a bucket");
            let (labels, rest) = exemplar.trim_start_matches('{').split_once("} ").unwrap();
            let label = |key: &str| {
                labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{key}=\"")))
                    .map(|v| v.trim_end_matches('"').to_owned())
                    .unwrap()
            };
            let value: f64 = rest.split(' ').next().unwrap().parse().unwrap();
            (label("trace_id"), label("span_id"), value, le)
        })
        .collect()
}

/// A heartbeat whose send fails (its broker away past the message timeout) is kept at any
/// ratio: a `send` span with an error status and its `error.type`; the failure's log record
/// carries that span's ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sends_are_kept_with_their_error() {
    let (mock, receiver, agent) = flowing_unsampled().await;
    mock.broker_down(1);
    let failed = eventually(Duration::from_secs(30), "failed sends kept", || {
        let failed: Vec<Span> = receiver
            .spans()
            .into_iter()
            .map(|(_, s)| s)
            .filter(|s| outcome(s) == "failed")
            .collect();
        (failed.len() >= 2).then_some(failed)
    })
    .await;
    // The first failure is logged (WARN) inside its send span's trace.
    let record = eventually(Duration::from_secs(20), "the failure's log record", || {
        receiver
            .log_records()
            .into_iter()
            .map(|(_, r)| r)
            .find(|r| r.event_name == "heartbeat.heartbeat_send_failed")
    })
    .await;
    let failed_spans: Vec<Span> = receiver
        .spans()
        .into_iter()
        .map(|(_, s)| s)
        .filter(|s| outcome(s) == "failed")
        .collect();
    assert!(
        failed_spans
            .iter()
            .any(|s| s.trace_id == record.trace_id && s.span_id == record.span_id),
        "the record is in a failed send's span"
    );
    mock.broker_up(1);
    let (status, output) = agent.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{output}");
    for span in failed {
        assert_eq!(span.kind, SpanKind::Producer as i32);
        assert_eq!(
            span.status.clone().unwrap_or_default().code,
            StatusCode::Error as i32
        );
        assert!(attr(&span.attributes, "error.type").is_some(), "{span:?}");
    }
}

/// A heartbeat acked but not read back within the loss timeout (its broker's fetches held
/// past it) is kept at any ratio: its `receive` span ends when the loss is declared, says
/// `lost` with an error, and is the child of its acked `send`; when it shows up after all, a
/// second `receive` says `late`. As many lost traces arrive as the lost counter says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_heartbeat_is_a_trace_that_ends_at_the_loss() {
    let (mock, receiver, agent) = flowing_unsampled().await;
    // Longer than the 3 s loss timeout.
    mock.delay_fetches(1, 3, Duration::from_secs(5));
    let by_outcome = |wanted: &str| -> Vec<Span> {
        receiver
            .spans()
            .into_iter()
            .map(|(_, s)| s)
            .filter(|s| s.name.starts_with("receive ") && outcome(s) == wanted)
            .collect()
    };
    eventually(
        Duration::from_secs(40),
        "lost and late heartbeats kept",
        || (!by_outcome("lost").is_empty() && !by_outcome("late").is_empty()).then_some(()),
    )
    .await;
    let (status, output) = agent.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{output}");
    let lost_counted = counter_value(
        &receiver.requests().pop().expect("metrics"),
        "kafka.heartbeat.messages.lost",
        &[],
    );
    let spans = receiver.spans();
    let sends: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name.starts_with("send "))
        .collect();
    let lost = by_outcome("lost");
    assert_eq!(
        lost.len() as u64,
        lost_counted,
        "one lost trace per lost heartbeat"
    );
    for receive in &lost {
        assert_eq!(receive.kind, SpanKind::Consumer as i32);
        assert_eq!(
            receive.status.clone().unwrap_or_default().code,
            StatusCode::Error as i32
        );
        assert_eq!(
            attr(&receive.attributes, "error.type").as_deref(),
            Some("lost")
        );
        assert!(
            duration(receive) >= Duration::from_secs(3),
            "from the ack to the declared loss: {:?}",
            duration(receive)
        );
        let send = sends
            .iter()
            .find(|s| s.trace_id == receive.trace_id && s.span_id == receive.parent_span_id)
            .expect("the lost receive's parent is its send");
        assert_eq!(outcome(send), "acked");
        assert_eq!(
            attr(&send.attributes, "cc_heartbeat.heartbeat.sequence"),
            attr(&receive.attributes, "cc_heartbeat.heartbeat.sequence")
        );
    }
    // Those read back after all: each late receive is in the trace of a lost one.
    for late in by_outcome("late") {
        assert!(
            lost.iter().any(|l| l.trace_id == late.trace_id),
            "a late heartbeat was lost first: {late:?}"
        );
    }
}

/// A broker probe is a trace: a `probe broker` span naming the broker and the address it
/// resolved to, with a child per stage in the order they ran (`dns`, `tcp`, `kafka`). Healthy
/// ones at the ratio (1 here); once the broker is away, the failed stage's span carries the
/// error, and so does the round's. The other probes' rounds are spans as well (`probe
/// metadata`, failed with its error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_probe_is_a_trace_with_a_span_per_stage() {
    let mock = MockKafka::new(1);
    let receiver = OtlpReceiver::start(0).await;
    let agent = agent(&mock, &receiver, "grpc", "{sample_ratio: 1}");
    let rounds = |failed: bool| {
        receiver
            .spans()
            .into_iter()
            .map(|(_, s)| s)
            .filter(|s| s.name == "probe broker")
            // Not the bootstrap address the first round may stand in with.
            .filter(|s| attr(&s.attributes, "kafka.broker.id").as_deref() == Some("1"))
            .filter(|s| (outcome_of(s) == "down") == failed)
            .collect::<Vec<_>>()
    };
    eventually(Duration::from_secs(20), "healthy probe rounds", || {
        (rounds(false).len() >= 2).then_some(())
    })
    .await;
    mock.broker_down(1);
    eventually(Duration::from_secs(20), "a failed probe round", || {
        (!rounds(true).is_empty()).then_some(())
    })
    .await;
    // Other probes' rounds are spans too: the metadata round that failed, with its error,
    // and its failure's log record inside it.
    let metadata = eventually(Duration::from_secs(40), "a failed metadata round", || {
        receiver.spans().into_iter().map(|(_, s)| s).find(|s| {
            s.name == "probe metadata"
                && attr(&s.attributes, "cc_heartbeat.probe.outcome").as_deref() == Some("failed")
        })
    })
    .await;
    assert!(
        attr(&metadata.attributes, "error.type").is_some(),
        "{metadata:?}"
    );
    assert_eq!(
        attr(&metadata.attributes, "kafka.cluster.name").as_deref(),
        Some("traced")
    );
    mock.broker_up(1);
    let (status, output) = agent.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{output}");
    let spans: Vec<Span> = receiver.spans().into_iter().map(|(_, s)| s).collect();
    let children = |root: &Span| -> Vec<Span> {
        let mut children: Vec<Span> = spans
            .iter()
            .filter(|s| s.trace_id == root.trace_id && s.parent_span_id == root.span_id)
            .cloned()
            .collect();
        children.sort_by_key(|s| s.start_time_unix_nano);
        children
    };
    let healthy = &rounds(false)[0];
    assert_eq!(
        attr(&healthy.attributes, "network.peer.address").as_deref(),
        Some("127.0.0.1")
    );
    let stages = children(healthy);
    assert_eq!(
        stages.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["dns", "tcp", "kafka"]
    );
    for pair in stages.windows(2) {
        assert!(
            pair[0].end_time_unix_nano <= pair[1].start_time_unix_nano,
            "in order"
        );
    }
    assert!(healthy.start_time_unix_nano <= stages[0].start_time_unix_nano);
    assert!(healthy.end_time_unix_nano >= stages[2].end_time_unix_nano);
    let failed = &rounds(true)[0];
    assert_eq!(
        failed.status.clone().unwrap_or_default().code,
        StatusCode::Error as i32
    );
    assert!(
        attr(&failed.attributes, "error.type").is_some(),
        "{failed:?}"
    );
    let stage = attr(&failed.attributes, "kafka.connection.stage").unwrap();
    let last = children(failed).pop().expect("the failed stage's span");
    assert_eq!(last.name, stage);
    assert_eq!(
        last.status.clone().unwrap_or_default().code,
        StatusCode::Error as i32
    );
}

fn outcome_of(span: &Span) -> String {
    attr(&span.attributes, "cc_heartbeat.probe.outcome").unwrap_or_default()
}

/// Healthy heartbeats are kept at the configured ratio: at 0.5, the share of heartbeats sent
/// whose trace arrived is within four standard deviations of a half (nothing is slow here:
/// the thresholds are far above the mock's latencies).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_heartbeats_are_kept_at_the_sample_ratio() {
    let mock = MockKafka::new(1);
    let receiver = OtlpReceiver::start(0).await;
    let agent = agent(
        &mock,
        &receiver,
        "grpc",
        "{sample_ratio: 0.5, slow: {produce: 10s, end_to_end: 10s, connection: 10s}}",
    );
    let sent = eventually(Duration::from_secs(60), "200 heartbeats sent", || {
        let last = receiver.requests().pop()?;
        let sent = counter_value(
            &last,
            "kafka.heartbeat.messages.sent",
            &[("error.type", "!")],
        );
        (sent >= 200).then_some(sent)
    })
    .await;
    let (status, output) = agent.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{output}");
    let spans = receiver.spans();
    let kept = spans
        .iter()
        .filter(|(_, s)| s.kind == SpanKind::Producer as i32)
        .count() as f64;
    // The final export may count a few more sends than the last one read; the spans of all of
    // them may have arrived.
    let sent = sent as f64;
    let sigma = (sent * 0.25).sqrt();
    println!("{kept} of {sent} heartbeats kept at 0.5 (sigma {sigma:.1})");
    assert!(
        (kept - sent / 2.0).abs() <= 4.0 * sigma + 10.0,
        "{kept} of {sent} kept"
    );
    for (_, span) in &spans {
        assert_ne!(outcome(span), "slow");
    }
}

/// With spans and log records turned off (by the standard variables here), nothing but metrics
/// arrives, even with every heartbeat to be kept and a broker failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_but_metrics_is_exported_with_the_other_signals_off() {
    let mock = MockKafka::new(1);
    let receiver = OtlpReceiver::start(0).await;
    let topic = unique_topic("off");
    mock.create_topic(&topic, 1);
    let agent = AgentProcess::start(
        &format!(
            "clusters:\n  - name: off\n    bootstrap_servers: '{}'\n\
             heartbeat: {{topic: {topic}, interval: 200ms}}\n\
             checks: {{connectivity: {{interval: 1s, timeout: 800ms}}}}\n\
             export:\n  otlp: {{endpoint: '{}', interval: 1s}}\n  traces: {{sample_ratio: 1}}\n",
            mock.bootstrap(),
            receiver.endpoint(),
        ),
        &[
            ("OTEL_TRACES_EXPORTER", "none"),
            ("OTEL_LOGS_EXPORTER", "none"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OTEL_BLRP_SCHEDULE_DELAY", "200"),
        ],
    );
    eventually(Duration::from_secs(20), "heartbeats flow", || {
        let last = receiver.requests().pop()?;
        (counter_value(&last, "kafka.heartbeat.messages.received", &[]) > 5).then_some(())
    })
    .await;
    mock.broker_down(1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    mock.broker_up(1);
    let (status, output) = agent.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{output}");
    assert!(output.contains("OTLP trace export is off"), "{output}");
    assert!(receiver.spans().is_empty());
    assert!(receiver.log_records().is_empty());
    let last = receiver.requests().pop().unwrap();
    for signal in ["traces", "logs"] {
        assert_eq!(
            counter_value(
                &last,
                "cc_heartbeat.export.batches",
                &[("otel.signal", signal)]
            ),
            0
        );
    }
}
