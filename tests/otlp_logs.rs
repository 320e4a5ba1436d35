#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! The agent's log events as OTLP log records, decoded by the test's receiver: the same events
//! as on stderr at `export.logs.level`, with their severity, an `event.name`, the structured
//! fields as attributes and the metrics' resource, and the ids of the probe round's trace they
//! belong to; none of a configured header's value; and with the collector refusing them, the
//! agent counts and logs the failure on stderr only.

mod support;

use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use support::otlp::{Answer, OtlpReceiver, attr, counter_value};
use support::process::AgentProcess;
use support::{MockKafka, eventually, free_port, unique_topic};

fn agent(mock: &MockKafka, receiver: &OtlpReceiver, protocol: &str, logs: &str) -> AgentProcess {
    let topic = unique_topic("logs");
    mock.create_topic(&topic, 1);
    AgentProcess::start(
        &format!(
            "clusters:\n  - name: logged\n    bootstrap_servers: '{}'\n\
             heartbeat: {{topic: {topic}, interval: 200ms}}\n\
             checks: {{metadata: {{interval: 1s}}, connectivity: {{interval: 1s, timeout: 800ms}}}}\n\
             export:\n  otlp: {{endpoint: '{}', protocol: {protocol}, interval: 1s, headers: {{x-secret-key: hush-hush-value}}}}\n  logs: {logs}\n\
             http: {{listen: '127.0.0.1:{}'}}\n",
            mock.bootstrap(),
            receiver.endpoint(),
            free_port()
        ),
        &[
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.instance.id=logged-agent",
            ),
            ("OTEL_BLRP_SCHEDULE_DELAY", "200"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    )
}

fn body(record: &LogRecord) -> String {
    match record.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// Start-up events and a broker going away arrive as records: INFO and WARN with their
/// severity numbers, named, their fields as attributes, under the agent's resource.
async fn events_arrive_as_log_records(protocol: &str) {
    let mock = MockKafka::new(1);
    let receiver = if protocol == "grpc" {
        OtlpReceiver::start(0).await
    } else {
        OtlpReceiver::start_http().await
    };
    let agent = agent(&mock, &receiver, protocol, "{level: info}");
    let find = |name: &str| {
        receiver
            .log_records()
            .into_iter()
            .find(|(_, r)| r.event_name == name)
    };
    let (resource, started) = eventually(Duration::from_secs(20), "the start record", || {
        find("agent.started")
    })
    .await;
    mock.broker_down(1);
    let (_, unreachable) = eventually(Duration::from_secs(20), "a broker unreachable", || {
        find("broker.broker_probed")
    })
    .await;
    // The failed round's trace is kept, and its record is logged inside its root span.
    let round = eventually(Duration::from_secs(20), "the failed round's span", || {
        receiver
            .spans()
            .into_iter()
            .map(|(_, s)| s)
            .find(|s| s.name == "probe broker" && s.span_id == unreachable.span_id)
    })
    .await;
    assert_eq!(round.trace_id, unreachable.trace_id);
    assert_eq!(round.span_id.len(), 8);
    assert!(
        started.trace_id.is_empty(),
        "an event outside any round has no trace"
    );
    mock.broker_up(1);
    let (status, output) = agent.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{output}");

    assert_eq!(
        attr(&resource, "service.instance.id").as_deref(),
        Some("logged-agent")
    );
    assert_eq!(body(&started), "cc-heartbeat started.");
    assert_eq!(started.severity_number, 9, "INFO");
    assert_eq!(started.severity_text, "INFO");
    assert_eq!(
        attr(&started.attributes, "instance").as_deref(),
        Some("logged-agent")
    );
    assert_eq!(body(&unreachable), "Broker unreachable.");
    assert_eq!(unreachable.severity_number, 13, "WARN");
    assert!(attr(&unreachable.attributes, "error.type").is_some());
    assert!(
        output.contains("cc-heartbeat started."),
        "stderr keeps its lines"
    );
    // Nothing below the level, and never a header's value.
    for (_, record) in receiver.log_records() {
        assert!(record.severity_number >= 9, "{record:?}");
        assert!(!format!("{record:?}").contains("hush-hush-value"));
    }
    let last = receiver.requests().pop().unwrap();
    assert!(
        counter_value(
            &last,
            "cc_heartbeat.export.batches",
            &[("otel.signal", "logs"), ("error.type", "!")]
        ) > 0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_as_log_records_over_grpc() {
    events_arrive_as_log_records("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_as_log_records_over_http() {
    events_arrive_as_log_records("http/protobuf").await;
}

/// While the collector refuses exports, log records are dropped and counted, and the failure
/// is said on stderr (not as a record, which would fail alike); records flow again after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_log_export_is_counted_and_said_on_stderr() {
    let mock = MockKafka::new(1);
    let receiver = OtlpReceiver::start(0).await;
    receiver.answer(Answer::Unavailable);
    let agent = agent(&mock, &receiver, "grpc", "{}");
    let failed = eventually(
        Duration::from_secs(30),
        "failed log exports counted",
        || {
            let last = receiver.requests().pop()?;
            let n = counter_value(
                &last,
                "cc_heartbeat.export.batches",
                &[("otel.signal", "logs"), ("error.type", "*")],
            );
            (n > 0).then_some(n)
        },
    )
    .await;
    assert!(failed > 0);
    receiver.answer(Answer::Accept);
    mock.broker_down(1);
    eventually(Duration::from_secs(30), "records again", || {
        (!receiver.log_records().is_empty()).then_some(())
    })
    .await;
    mock.broker_up(1);
    let (status, output) = agent.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{output}");
    assert!(output.contains("OTLP log export failed"), "{output}");
    assert!(
        receiver
            .log_records()
            .iter()
            .all(|(_, r)| !body(r).contains("OTLP log export failed")),
        "the failure is not exported as a record"
    );
}

/// Records past the batch queue's bound (OTEL_BLRP_MAX_QUEUE_SIZE, 2 here, while the queue
/// is sent every 5 s) are dropped and counted; what the queue held arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_past_the_queue_bound_are_dropped_and_counted() {
    let mock = MockKafka::new(1);
    let receiver = OtlpReceiver::start(0).await;
    let topic = unique_topic("logs");
    mock.create_topic(&topic, 1);
    let agent = AgentProcess::start(
        &format!(
            "clusters:\n  - name: logged\n    bootstrap_servers: '{}'\n\
             heartbeat: {{topic: {topic}, interval: 200ms}}\n\
             export:\n  otlp: {{endpoint: '{}', interval: 1s}}\n",
            mock.bootstrap(),
            receiver.endpoint(),
        ),
        &[
            ("OTEL_BLRP_MAX_QUEUE_SIZE", "2"),
            ("OTEL_BLRP_SCHEDULE_DELAY", "5000"),
        ],
    );
    // The start-up alone logs a dozen records at info within the first 5 s.
    let dropped = eventually(Duration::from_secs(20), "dropped records counted", || {
        let last = receiver.requests().pop()?;
        let n = counter_value(
            &last,
            "cc_heartbeat.export.points.rejected",
            &[("otel.signal", "logs")],
        );
        (n > 0).then_some(n)
    })
    .await;
    let (status, output) = agent.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{output}");
    let started = output.lines().filter(|l| l.contains(" INFO ")).count() as u64;
    let arrived = receiver.log_records().len() as u64;
    println!("{started} INFO lines on stderr, {arrived} records arrived, {dropped}+ dropped");
    assert!(arrived >= 2, "what the queue held arrives: {arrived}");
    assert!(dropped >= 5, "{dropped}");
}
