#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! `cc-heartbeat check` from outside: a healthy cluster, a down broker, a black hole, and
//! the traces of what failed, sent where the config sends traces.

mod support;

use std::time::{Duration, Instant};

use support::otlp::{OtlpReceiver, attr};
use support::process::run_to_end;
use support::{MockKafka, unique_topic};

fn check_config(bootstrap: &str, topic: &str) -> tempfile::NamedTempFile {
    check_config_exporting(bootstrap, topic, "export: {otlp: {enabled: false}}")
}

fn check_config_exporting(bootstrap: &str, topic: &str, export: &str) -> tempfile::NamedTempFile {
    support::process::config_file(&format!(
        "clusters:\n  - name: checked\n    bootstrap_servers: '{bootstrap}'\n    librdkafka: {{fetch.wait.max.ms: '10'}}\n\
         heartbeat: {{topic: {topic}, message_timeout: 1s, loss_timeout: 5s}}\n\
         checks: {{connectivity: {{interval: 5s, timeout: 1s}}}}\n{export}\n"
    ))
}

fn run_check(config: &tempfile::NamedTempFile, json: bool) -> (Option<i32>, String, Duration) {
    let mut args = vec!["check", "--config", config.path().to_str().unwrap()];
    if json {
        args.push("--json");
    }
    let started = Instant::now();
    let out = run_to_end(&args, &[], Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code(), stdout, started.elapsed())
}

#[test]
fn check_reports_a_healthy_cluster_and_exits_0() {
    let mock = MockKafka::new(3);
    let topic = unique_topic("check");
    mock.create_topic(&topic, 3);
    let (code, report, _) = run_check(&check_config(&mock.bootstrap(), &topic), false);
    assert_eq!(code, Some(0), "{report}");
    assert!(report.contains("verdict: HEALTHY"), "{report}");
    let broker_rows = report
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()) && l.ends_with("ok"))
        .count();
    assert_eq!(
        broker_rows, 6,
        "three brokers and three partitions, each ok:\n{report}"
    );
    assert!(
        report.contains(&format!("heartbeat topic {topic}: 3 partitions")),
        "{report}"
    );
    // librdkafka's mock does not describe groups: the commit probe (`auto`) says it is not
    // measured, and that is no problem.
    assert!(
        report.contains("commit path (group cc-heartbeat-commit-")
            && report.contains(
                "not measured (the group may not be used, or the cluster does not describe groups)"
            ),
        "{report}"
    );
    // The offsets check: the heartbeat topic's three partitions, fully replicated.
    assert!(
        report.contains("offsets: 1 topics, 3 partitions, 0 under-replicated, 0 without a leader"),
        "{report}"
    );
    let (code, json, _) = run_check(&check_config(&mock.bootstrap(), &topic), true);
    assert_eq!(code, Some(0), "{json}");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let offsets = &json["clusters"][0]["offsets"];
    assert_eq!(offsets["topics"], 1, "{json}");
    assert_eq!(offsets["partitions"], 3, "{json}");
    assert_eq!(offsets["under_replicated"], serde_json::json!([]), "{json}");
}

#[test]
fn check_reports_a_down_broker_and_exits_1() {
    let mock = MockKafka::new(3);
    let topic = unique_topic("check");
    mock.create_topic(&topic, 3);
    mock.broker_down(2);
    let (code, report, took) = run_check(&check_config(&mock.bootstrap(), &topic), true);
    assert_eq!(code, Some(1), "{report}");
    let json: serde_json::Value = serde_json::from_str(&report).expect("JSON report");
    assert_eq!(json["healthy"], false);
    let cluster = &json["clusters"][0];
    let failed: Vec<&serde_json::Value> = cluster["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| !p["error"].is_null())
        .collect();
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["leader"], 2);
    // The mock drops a down broker from its metadata, so the client sees no leader for its
    // partition: the heartbeat cannot even be placed there. The report says which broker.
    assert!(
        failed[0]["error"].as_str().unwrap().starts_with("not sent"),
        "{report}"
    );
    let problems = cluster["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p
                == "broker 2 leads heartbeat partitions [1] but is not in the metadata (down?)"),
        "{report}"
    );
    assert!(took < Duration::from_secs(40), "took {took:?}");
}

#[test]
fn check_against_a_black_hole_finishes_in_bounded_time_with_exit_1() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut held = Vec::new();
        for socket in listener.incoming().take(20) {
            held.push(socket);
        }
    });
    let (code, report, took) = run_check(
        &check_config(&format!("127.0.0.1:{port}"), "cc-heartbeat"),
        false,
    );
    drop(held);
    assert_eq!(code, Some(1), "{report}");
    assert!(report.contains("FAILED at kafka: timeout"), "{report}");
    assert!(report.contains("cannot fetch cluster metadata"), "{report}");
    assert!(took < Duration::from_secs(30), "bounded: took {took:?}");
}

#[test]
fn check_against_a_refused_bootstrap_answers_within_the_connect_timeout() {
    // A port nobody listens on: bound, then closed.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (code, report, took) = run_check(
        &check_config(&format!("127.0.0.1:{port}"), "cc-heartbeat"),
        false,
    );
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report.contains("no bootstrap address accepts a connection"),
        "{report}"
    );
    assert!(report.contains("FAILED at tcp"), "{report}");
    // The metadata request would wait out its timeout (10 s); the refused connection is
    // known at once (the exit then waits up to 2 s for that request's blocking call).
    assert!(
        took < Duration::from_secs(6),
        "answered at once: took {took:?}"
    );
}

/// With traces exported (the config's `export`), what fails is kept as spans and sent there,
/// and the report names each failure's trace: a broker answering slower than the probe and
/// message timeouts fails its `kafka` stage and its heartbeat's send. Healthy rounds are not
/// kept. Without export, no trace ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_trace_of_each_failure_and_sends_it() {
    let mock = MockKafka::new(1);
    let topic = unique_topic("check-traced");
    mock.create_topic(&topic, 1);
    let receiver = OtlpReceiver::start(0).await;
    // Metadata first (the check waits for it), then the broker slows past both timeouts.
    let slow = std::sync::Arc::new(mock);
    let config = check_config_exporting(
        &slow.bootstrap(),
        &topic,
        &format!("export: {{otlp: {{endpoint: '{}'}}}}", receiver.endpoint()),
    );
    let checked = tokio::task::spawn_blocking({
        let slow = std::sync::Arc::clone(&slow);
        move || {
            slow.round_trip_time(1, Duration::from_millis(1500));
            run_check(&config, true)
        }
    })
    .await
    .unwrap();
    let (code, report, _) = checked;
    assert_eq!(code, Some(1), "{report}");
    let json: serde_json::Value = serde_json::from_str(&report).expect("JSON report");
    let cluster = &json["clusters"][0];
    let traces = &json["traces"];
    assert!(traces["delivered"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(traces["failed"], serde_json::json!([]), "{report}");
    let spans = receiver.spans();
    let trace_of = |id: &str| -> Vec<String> {
        spans
            .iter()
            .filter(|(_, s)| {
                s.trace_id
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
                    == id
            })
            .map(|(_, s)| s.name.clone())
            .collect()
    };
    let (mut named_brokers, mut named_partitions) = (0, 0);
    for broker in cluster["brokers"].as_array().unwrap() {
        if broker["failure"].is_null() {
            assert!(
                broker["trace_id"].is_null(),
                "a healthy round is not kept: {broker}"
            );
            continue;
        }
        let id = broker["trace_id"]
            .as_str()
            .expect("a failed broker names its trace");
        let names = trace_of(id);
        assert!(names.contains(&"probe broker".to_owned()), "{names:?}");
        named_brokers += 1;
    }
    for partition in cluster["partitions"].as_array().unwrap() {
        if let Some(id) = partition["trace_id"].as_str() {
            let names = trace_of(id);
            assert!(names.contains(&format!("send {topic}")), "{names:?}");
            named_partitions += 1;
        }
    }
    // The slow broker fails both its probe and its partition's send: each names its trace.
    assert!(
        named_brokers >= 1 && named_partitions >= 1,
        "a failed broker and a failed partition name their traces: {report}"
    );
    for problem in cluster["problems"].as_array().unwrap() {
        let problem = problem.as_str().unwrap();
        if let Some((_, id)) = problem.split_once("(trace ") {
            assert!(!trace_of(id.trim_end_matches(')')).is_empty(), "{problem}");
        }
    }
    assert!(
        spans
            .iter()
            .all(|(resource, _)| attr(resource, "service.name").as_deref() == Some("cc-heartbeat")),
        "under the agent's resource"
    );

    // Not exported: no trace ids, nothing sent.
    let quiet = OtlpReceiver::start(0).await;
    let config = check_config(&slow.bootstrap(), &topic);
    let (_, report, _) = tokio::task::spawn_blocking(move || run_check(&config, true))
        .await
        .unwrap();
    assert!(
        !report.contains("trace_id") && !report.contains("\"traces\""),
        "{report}"
    );
    assert!(quiet.spans().is_empty());
}
