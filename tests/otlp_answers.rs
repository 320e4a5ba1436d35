#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! What the agent does with what an OTLP receiver answers, over gRPC and HTTP, as the OTLP
//! specification says: points refused in a partial success are counted and logged; a request
//! refused for good is dropped and counted rather than held and sent again; a `RetryInfo` or
//! `Retry-After` holds the next export back. Also `lowmemory` temporality. The receiver
//! decodes what the agent really sends (support/otlp.rs); the cluster is the mock.

mod support;

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, metric};
use prost::Message as _;
use support::otlp::{Answer, OtlpReceiver, counter_value, find, longest_gap};
use support::process::AgentProcess;
use support::{MockKafka, eventually, free_port, unique_topic};

fn agent(mock: &MockKafka, receiver: &OtlpReceiver, protocol: &str, extra: &str) -> AgentProcess {
    let topic = unique_topic("answers");
    mock.create_topic(&topic, 1);
    AgentProcess::start(
        &format!(
            "clusters:\n  - name: answers\n    bootstrap_servers: '{}'\n\
             heartbeat: {{topic: {}, interval: 250ms}}\n\
             checks: {{metadata: {{interval: 1s}}}}\n\
             export: {{otlp: {{endpoint: '{}', protocol: {protocol}, interval: 1s{extra}}}}}\n\
             http: {{listen: '127.0.0.1:{}'}}\n",
            mock.bootstrap(),
            topic,
            receiver.endpoint(),
            free_port()
        ),
        &[],
    )
}

/// The agent's own export counters as its latest request carries them.
fn own(receiver: &OtlpReceiver, name: &str, filter: &[(&str, &str)]) -> u64 {
    receiver
        .requests()
        .last()
        .map_or(0, |r| counter_value(r, name, filter))
}

async fn requests_after(receiver: &OtlpReceiver, n: usize, what: &str) {
    eventually(Duration::from_secs(20), what, || {
        (receiver.requests().len() >= n).then_some(())
    })
    .await;
}

/// Fails with the agent's output when `n` requests do not come.
async fn requests_from(agent: &AgentProcess, receiver: &OtlpReceiver, n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.requests().len() < n {
        assert!(Instant::now() < deadline, "{what}:\n{}", agent.output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn partial_success_is_counted_logged_and_the_rest_taken(protocol: &str) {
    let mock = MockKafka::new(1);
    let receiver = match protocol {
        "grpc" => OtlpReceiver::start(0).await,
        _ => OtlpReceiver::start_http().await,
    };
    let agent = agent(&mock, &receiver, protocol, "");
    requests_after(&receiver, 2, "exports").await;
    receiver.answer(Answer::PartlyRefuse {
        rejected: 7,
        message: "quota exceeded for this tenant".into(),
    });
    let refusing = receiver.requests().len();
    requests_after(&receiver, refusing + 3, "exports partly refused").await;
    receiver.answer(Answer::Accept);
    let accepting = receiver.requests().len();
    requests_after(&receiver, accepting + 2, "exports accepted again").await;
    let rejected = own(
        &receiver,
        "cc_heartbeat.export.points.rejected",
        &[("otel.signal", "metrics")],
    );
    let partly_refused = (accepting - refusing) as u64;
    assert!(
        rejected >= 7 * (partly_refused - 1) && rejected <= 7 * (partly_refused + 1),
        "{protocol}: {rejected} points rejected over {partly_refused} partly refused exports"
    );
    // They were taken, not failed: every export so far counted as delivered.
    let delivered = own(
        &receiver,
        "cc_heartbeat.export.batches",
        &[("otel.signal", "metrics"), ("error.type", "!")],
    );
    assert!(delivered as usize >= accepting, "{protocol}: {delivered}");
    let (_, log) = agent.terminate(Duration::from_secs(10)).await;
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("refused some points"))
        .collect();
    assert_eq!(warned.len(), 1, "{protocol}: warned once:\n{log}");
    assert!(
        warned[0].contains("quota exceeded for this tenant")
            && warned[0].contains("rejected_points=7"),
        "{}",
        warned[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_success_over_grpc_is_counted_and_logged() {
    partial_success_is_counted_logged_and_the_rest_taken("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_success_over_http_is_counted_and_logged() {
    partial_success_is_counted_logged_and_the_rest_taken("http/protobuf").await;
}

/// With delta temporality a failed export is held; one refused for good (a malformed request)
/// is not: it is dropped and counted, and once the receiver accepts again no backlog follows.
async fn a_permanent_refusal_is_dropped_not_held(protocol: &str) {
    let mock = MockKafka::new(1);
    let receiver = match protocol {
        "grpc" => OtlpReceiver::start(0).await,
        _ => OtlpReceiver::start_http().await,
    };
    let agent = agent(&mock, &receiver, protocol, ", temporality: delta");
    requests_from(&agent, &receiver, 2, "exports").await;
    receiver.answer(Answer::Refuse);
    let refusing = receiver.requests().len();
    requests_after(&receiver, refusing + 4, "exports refused").await;
    receiver.answer(Answer::Accept);
    let switched = Instant::now();
    let accepting = receiver.requests().len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let since: Vec<_> = receiver
        .timed_requests()
        .into_iter()
        .skip(accepting)
        .filter(|(t, _)| *t >= switched)
        .collect();
    assert!(
        (1..=4).contains(&since.len()),
        "{protocol}: one export per interval, no held backlog: {} in 2.5 s",
        since.len()
    );
    requests_after(&receiver, receiver.requests().len() + 1, "one more").await;
    // Delta: the counters of the requests since the switch add up.
    let requests = receiver.requests();
    let sum = |name: &str, filter: &[(&str, &str)]| -> u64 {
        requests[accepting..]
            .iter()
            .map(|r| counter_value(r, name, filter))
            .sum()
    };
    let failed = sum(
        "cc_heartbeat.export.batches",
        &[("otel.signal", "metrics"), ("error.type", "protocol")],
    );
    let rejected = sum(
        "cc_heartbeat.export.points.rejected",
        &[("otel.signal", "metrics")],
    );
    // In delta, the counts of the refusals travelled in the refused exports themselves and
    // were dropped with them, all but the last refusal's, which the first accepted export
    // carries.
    println!("{protocol}: refused {failed} exports, {rejected} points");
    assert!(failed >= 1, "{protocol}: {failed}");
    assert!(
        rejected >= 10,
        "{protocol}: every point of the refused export: {rejected}"
    );
    let (_, log) = agent.terminate(Duration::from_secs(10)).await;
    assert!(log.contains("refused an export for good"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_grpc_refusal_is_dropped_not_held() {
    a_permanent_refusal_is_dropped_not_held("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_http_refusal_is_dropped_not_held() {
    a_permanent_refusal_is_dropped_not_held("http/protobuf").await;
}

/// A receiver that asks for 3 s of quiet gets them: the next export comes no sooner, though
/// the interval is 1 s.
async fn a_requested_wait_is_honoured(protocol: &str) {
    let mock = MockKafka::new(1);
    let receiver = match protocol {
        "grpc" => OtlpReceiver::start(0).await,
        _ => OtlpReceiver::start_http().await,
    };
    let agent = agent(&mock, &receiver, protocol, "");
    requests_after(&receiver, 2, "exports").await;
    let before = receiver.requests().len();
    receiver.answer(Answer::Throttle { seconds: 3 });
    requests_after(&receiver, before + 1, "a throttled export").await;
    receiver.answer(Answer::Accept);
    let throttled_at = receiver.timed_requests()[before].0;
    requests_after(&receiver, before + 3, "exports after the wait").await;
    let requests = receiver.timed_requests();
    let gap = requests[before + 1].0 - throttled_at;
    println!("{protocol}: next export {gap:?} after the throttled one");
    assert!(
        gap >= Duration::from_millis(2900),
        "{protocol}: waited only {gap:?}"
    );
    // Before and after, the interval as configured.
    assert!(
        longest_gap(&requests[before + 1..], requests[before + 1].0) < Duration::from_millis(2500)
    );
    agent.terminate(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_retry_info_holds_the_next_export_back() {
    a_requested_wait_is_honoured("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_retry_after_holds_the_next_export_back() {
    a_requested_wait_is_honoured("http/protobuf").await;
}

fn temporality(request: &ExportMetricsServiceRequest, name: &str) -> i32 {
    match &find(request, name).unwrap().data {
        Some(metric::Data::Sum(sum)) => sum.aggregation_temporality,
        Some(metric::Data::Histogram(h)) => h.aggregation_temporality,
        other => panic!("{name}: {other:?}"),
    }
}

/// `lowmemory`, as the specification defines it: counters and histograms delta, observable
/// counters cumulative.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowmemory_temporality_is_delta_for_counters_and_cumulative_for_observed_ones() {
    let mock = MockKafka::new(1);
    let receiver = OtlpReceiver::start(0).await;
    let agent = agent(&mock, &receiver, "grpc", ", temporality: lowmemory");
    eventually(
        Duration::from_secs(20),
        "an export with the heartbeat's metrics",
        || {
            receiver.requests().into_iter().rev().find(|r| {
                find(r, "kafka.heartbeat.end_to_end.duration").is_some()
                    && find(r, "cc_heartbeat.export.batches").is_some()
            })
        },
    )
    .await;
    let last = receiver
        .requests()
        .into_iter()
        .rev()
        .find(|r| {
            find(r, "kafka.heartbeat.end_to_end.duration").is_some()
                && find(r, "cc_heartbeat.export.batches").is_some()
        })
        .unwrap();
    let delta = AggregationTemporality::Delta as i32;
    let cumulative = AggregationTemporality::Cumulative as i32;
    assert_eq!(temporality(&last, "kafka.heartbeat.messages.sent"), delta);
    assert_eq!(
        temporality(&last, "kafka.heartbeat.end_to_end.duration"),
        delta
    );
    assert_eq!(
        temporality(&last, "cc_heartbeat.export.batches"),
        cumulative
    );
    let (status, _) = agent.terminate(Duration::from_secs(10)).await;
    assert!(status.success());
}

/// An integer gauge's first point in a request.
fn int_gauge(request: &ExportMetricsServiceRequest, name: &str) -> Option<i64> {
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
    match &find(request, name)?.data {
        Some(metric::Data::Gauge(g)) => match g.data_points.first()?.value {
            Some(Value::AsInt(v)) => Some(v),
            _ => None,
        },
        _ => None,
    }
}

/// With delta temporality the exports held while the receiver fails are bounded in bytes
/// (`delta_buffer_size`): the held bytes never pass the bound, what the bound drops is
/// counted as rejected points, and once the receiver takes them again the buffer empties
/// (held requests and bytes back to 0), delivered oldest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delta_buffer_is_bounded_in_bytes_and_empties_after_the_outage() {
    const BOUND: u64 = 128 * 1024;
    let mock = MockKafka::new(1);
    let receiver = OtlpReceiver::start(0).await;
    let agent = agent(
        &mock,
        &receiver,
        "grpc",
        ", temporality: delta, delta_buffer: 1h, delta_buffer_size: 128KiB",
    );
    requests_from(&agent, &receiver, 2, "exports").await;
    let one = receiver.requests().last().unwrap().encoded_len() as u64;
    println!(
        "one request: {one} bytes encoded; the bound holds {} of them",
        BOUND / one
    );
    assert!(
        one * 4 < BOUND && BOUND < one * 60,
        "the bound is a few requests: {one}"
    );
    receiver.answer(Answer::Unavailable);
    let failing = receiver.requests().len();
    // Far more failed exports than the bound holds (each sends the oldest held request).
    let want = (BOUND / one) as usize + 4;
    eventually(
        Duration::from_secs(60),
        "exports fail past the bound",
        || (receiver.requests().len() >= failing + want).then_some(()),
    )
    .await;
    receiver.answer(Answer::Accept);
    let accepting = receiver.requests().len();
    requests_after(&receiver, accepting + 3, "exports accepted again").await;
    eventually(Duration::from_secs(20), "the buffer empties", || {
        let last = receiver.requests().last().cloned()?;
        (int_gauge(&last, "cc_heartbeat.export.batches.held") == Some(0)
            && int_gauge(&last, "cc_heartbeat.export.buffer.size") == Some(0))
        .then_some(())
    })
    .await;
    // The held bytes filled the bound and never passed it: every request made since the
    // outage began carries the gauge as it was then (the first one delivered after it, the
    // buffer at its fullest).
    let held_bytes: Vec<i64> = receiver.requests()[failing..]
        .iter()
        .filter_map(|r| int_gauge(r, "cc_heartbeat.export.buffer.size"))
        .collect();
    let most = held_bytes.iter().copied().max().unwrap_or_default();
    println!("held at most {most} bytes against a bound of {BOUND}");
    assert!(
        most as u64 > BOUND / 2 && most as u64 <= BOUND,
        "{held_bytes:?}"
    );
    let dropped = own(
        &receiver,
        "cc_heartbeat.export.points.rejected",
        &[("otel.signal", "metrics")],
    );
    assert!(dropped > 0, "what the bound dropped is counted");
    let (_, log) = agent.terminate(Duration::from_secs(10)).await;
    assert!(log.contains("The delta export buffer is full"), "{log}");
}

/// The memory the delta buffer took through an outage goes back to the system once it is
/// delivered: the agent's resident set (read from /proc, outside the agent) falls by at least
/// half of what the buffer held at its fullest. Ten clusters, as in bench/held-exports: their
/// clients' allocations interleave with the held requests (each some 90 KB, from the heap),
/// so without a release glibc keeps the freed pages and the resident set stays at its
/// high-water mark (the bench measured 35.4 MiB held, 36.7 MiB after the flush).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delta_buffers_memory_is_returned_after_the_flush() {
    const HOLD: u64 = 3 * 1024 * 1024;
    const CLUSTERS: usize = 10;
    let mock = MockKafka::new(1);
    let receiver = OtlpReceiver::start(0).await;
    // One topic, as the bench has: each cluster's clients send to and read it.
    let topic = unique_topic("held");
    mock.create_topic(&topic, 2);
    let mut config = String::from("clusters:\n");
    for i in 0..CLUSTERS {
        config.push_str(&format!(
            "  - {{name: c{i}, bootstrap_servers: '{}'}}\n",
            mock.bootstrap()
        ));
    }
    config.push_str(&format!(
        "heartbeat: {{topic: {topic}, interval: 500ms}}\n\
         export: {{otlp: {{endpoint: '{}', interval: 1s, temporality: delta, delta_buffer: 1h}}, traces: {{enabled: false}}}}\n",
        receiver.endpoint()
    ));
    let agent = AgentProcess::start(&config, &[]);
    requests_from(&agent, &receiver, 3, "exports").await;
    let one = receiver.requests().last().unwrap().encoded_len() as u64;
    receiver.answer(Answer::Unavailable);
    // One request held per export interval (1 s); each failed export sends the oldest again,
    // so what is held shows only once the receiver takes it.
    tokio::time::sleep(Duration::from_secs(HOLD / one + 2)).await;
    let holding = agent.rss_kib().unwrap();
    receiver.answer(Answer::Accept);
    let accepting = receiver.requests().len();
    // The held requests come in, the newest made while the buffer was at its fullest, then a
    // request made once it was empty.
    let held = eventually(Duration::from_secs(60), "the buffer empties", || {
        let since = receiver.requests().split_off(accepting);
        let sizes: Vec<i64> = since
            .iter()
            .filter_map(|r| int_gauge(r, "cc_heartbeat.export.buffer.size"))
            .collect();
        let most = sizes.iter().copied().max()?;
        (most > 0 && sizes.last() == Some(&0)).then_some(most)
    })
    .await;
    // The release follows the delivery of the last held request.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = agent.rss_kib().unwrap();
    assert!(
        held as u64 >= HOLD / 2,
        "held only {held} bytes, {one} a request"
    );
    println!(
        "held {} KiB; RSS {holding} KiB while holding, {after} KiB after the flush",
        held / 1024
    );
    assert!(
        holding.saturating_sub(after) * 1024 >= held as u64 / 2,
        "RSS {holding} KiB while holding {} KiB, {after} KiB after the flush",
        held / 1024
    );
    let (status, _) = agent.terminate(Duration::from_secs(10)).await;
    assert!(status.success());
}

/// A collector that takes connections and never answers (frozen, or behind a proxy that
/// black-holes): each signal's final export waits for it at shutdown, side by side, so the
/// exit is delayed by one export timeout (5 s), not one per signal (15 s when in turn).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_delays_the_exit_once_not_per_signal() {
    let address = support::local::silent_listener();
    let mock = MockKafka::new(1);
    let topic = unique_topic("silent");
    mock.create_topic(&topic, 1);
    let agent = AgentProcess::start(
        &format!(
            "clusters:\n  - name: silent\n    bootstrap_servers: '{}'\n\
             heartbeat: {{topic: {topic}, interval: 250ms}}\n\
             export:\n  otlp: {{endpoint: 'http://{address}', interval: 10s, timeout: 5s}}\n\
             \x20 traces: {{sample_ratio: 1.0}}\n\
             http: {{listen: '127.0.0.1:{}'}}\n",
            mock.bootstrap(),
            free_port()
        ),
        &[],
    );
    // Spans and log records are queued (their first export is due after 5 s), and the first
    // metric export is due after 10 s: each signal's flush at shutdown meets the silence.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let started = Instant::now();
    let (status, output) = agent.terminate(Duration::from_secs(30)).await;
    let took = started.elapsed();
    assert!(status.success(), "{status:?}:\n{output}");
    // Each flush failed, said by the exporter (its own timeout) or by the shutdown (its bound),
    // whichever came first.
    let after = &output[output.find("SIGTERM received.").unwrap()..];
    for signal in ["trace", "log", "metric"] {
        assert!(
            after.contains(&format!("{signal} export failed")),
            "{signal}:\n{output}"
        );
    }
    // One export timeout (5 s) plus the probes' stop; three in turn would be 15 s.
    assert!(
        took < Duration::from_secs(9),
        "exit took {took:?}:\n{output}"
    );
}
