#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! The per-broker staged probe, the metadata gauges, topic coverage and `check`, against
//! real peers: tansu (plain and behind TLS), the mock cluster, and servers that are not Kafka.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cc_heartbeat::config::TlsConfig;
use cc_heartbeat::error::ErrorKind;
use cc_heartbeat::kafka::tls;
use cc_heartbeat::probe::broker::{Outcome, Stage, Target, probe};
use cc_heartbeat::telemetry::instruments::name;
use support::metrics::{counter, gauge, histogram};
use support::process::{AgentProcess, run_to_end};
use support::tansu::Tansu;
use support::tls::{Certificates, TlsProxy};
use support::{MockKafka, TestAgent, config, eventually, free_port, unique_topic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn target(host: &str, port: u16) -> Target {
    Target {
        id: 1,
        host: host.to_owned(),
        port,
        rack: None,
    }
}

#[track_caller]
fn assert_failed(o: &Outcome, stage: Stage, kind: ErrorKind) {
    let f = o
        .failure
        .as_ref()
        .unwrap_or_else(|| panic!("expected a failure at {stage:?}, got {o:?}"));
    assert_eq!((f.stage, f.kind), (stage, kind), "{o:?}");
}

fn stages(o: &Outcome) -> Vec<Stage> {
    o.stages.iter().map(|(s, _)| *s).collect()
}

// --- Peers that are not a healthy Kafka broker -------------------------------------------

#[tokio::test]
async fn a_closed_port_is_connection_refused_at_the_tcp_stage() {
    let o = probe(
        &target("127.0.0.1", free_port()),
        None,
        Duration::from_secs(2),
    )
    .await;
    assert_failed(&o, Stage::Tcp, ErrorKind::ConnectionRefused);
    assert_eq!(stages(&o), [Stage::Dns]);
}

#[tokio::test]
async fn a_listener_that_never_answers_times_out_at_the_kafka_stage_within_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket); // accepted, never answered
        }
    });
    let timeout = Duration::from_millis(700);
    let started = Instant::now();
    let o = probe(&target("127.0.0.1", port), None, timeout).await;
    let took = started.elapsed();
    assert_failed(&o, Stage::Kafka, ErrorKind::Timeout);
    assert_eq!(stages(&o), [Stage::Dns, Stage::Tcp]);
    assert!(
        took >= timeout && took < timeout + Duration::from_millis(300),
        "took {took:?}"
    );
}

#[tokio::test]
async fn an_http_server_on_the_port_is_a_protocol_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 512];
            let _ = socket.read(&mut buf).await;
            let _ = socket
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
        }
    });
    let o = probe(&target("127.0.0.1", port), None, Duration::from_secs(2)).await;
    assert_failed(&o, Stage::Kafka, ErrorKind::Protocol);
}

#[tokio::test]
async fn an_unknown_host_fails_at_dns() {
    let o = probe(
        &target("cc-heartbeat-test.invalid", 9092),
        None,
        Duration::from_secs(5),
    )
    .await;
    assert_failed(&o, Stage::Dns, ErrorKind::Dns);
    assert!(o.stages.is_empty());
}

// --- Real brokers -------------------------------------------------------------------------

#[tokio::test]
async fn a_real_broker_passes_every_plaintext_stage() {
    let tansu = Tansu::start();
    let o = probe(
        &target("127.0.0.1", tansu.port),
        None,
        Duration::from_secs(2),
    )
    .await;
    assert!(o.up(), "{o:?}");
    assert_eq!(stages(&o), [Stage::Dns, Stage::Tcp, Stage::Kafka]);
    assert_eq!(o.api_version, Some(3));
    println!("tansu plaintext stages: {:?}", o.stages);
}

fn tls_config(ca: PathBuf) -> TlsConfig {
    TlsConfig {
        ca_file: Some(ca),
        cert_file: None,
        key_file: None,
        key_password: None,
        verify: true,
    }
}

/// tansu behind a TLS proxy, which tansu advertises as its address.
async fn tls_broker(certs: &Certificates) -> (Tansu, TlsProxy) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_port = listener.local_addr().unwrap().port();
    let tansu = Tansu::start_advertising(Some(proxy_port));
    let proxy = TlsProxy::start(listener, tansu.port, certs).await;
    (tansu, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_stages_pass_with_the_right_ca_and_fail_at_tls_with_a_wrong_ca_or_name() {
    let certs = Certificates::generate(&["127.0.0.1"]);
    let other_ca = Certificates::generate(&["127.0.0.1"]);
    let (_tansu, proxy) = tls_broker(&certs).await;
    let timeout = Duration::from_secs(3);

    let right = tls::client_config(&tls_config(certs.ca_file())).unwrap();
    let o = probe(&target("127.0.0.1", proxy.port), Some(&right), timeout).await;
    assert!(o.up(), "{o:?}");
    assert_eq!(
        stages(&o),
        [Stage::Dns, Stage::Tcp, Stage::Tls, Stage::Kafka]
    );
    println!("tansu over TLS stages: {:?}", o.stages);

    let wrong_ca = tls::client_config(&tls_config(other_ca.ca_file())).unwrap();
    let o = probe(&target("127.0.0.1", proxy.port), Some(&wrong_ca), timeout).await;
    assert_failed(&o, Stage::Tls, ErrorKind::Tls);
    assert!(
        o.failure.as_ref().unwrap().detail.contains("UnknownIssuer"),
        "{o:?}"
    );

    // Same address, but by a name the certificate does not carry.
    let o = probe(&target("localhost", proxy.port), Some(&right), timeout).await;
    assert_failed(&o, Stage::Tls, ErrorKind::Tls);
    assert!(
        o.failure
            .as_ref()
            .unwrap()
            .detail
            .contains("not valid for name"),
        "{o:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_runs_over_tls_and_reports_each_stage() {
    let certs = Certificates::generate(&["127.0.0.1"]);
    let (_tansu, proxy) = tls_broker(&certs).await;
    let topic = unique_topic("tls");
    let agent = TestAgent::start(config(&format!(
        "clusters:\n  - name: tls\n    bootstrap_servers: '127.0.0.1:{}'\n    security_protocol: SSL\n    tls: {{ca_file: '{}'}}\n\
         heartbeat: {{topic: {topic}, interval: 200ms, loss_timeout: 5s, message_timeout: 2s}}\n\
         checks: {{connectivity: {{interval: 500ms, timeout: 400ms}}, metadata: {{interval: 1s}}}}\n\
         export: {{otlp: {{enabled: false}}}}\n",
        proxy.port,
        certs.ca_file().display()
    )));
    agent
        .wait_round_trips(&[0], 3, Duration::from_secs(30))
        .await;
    eventually(Duration::from_secs(10), "broker 111 up over TLS", || {
        (gauge(
            &agent.metrics(),
            name::BROKER_UP,
            &[("kafka.broker.id", "111")],
        ) == [1])
        .then_some(())
    })
    .await;
    let (metrics, _) = agent.stop().await;
    for stage in ["dns", "tcp", "tls", "kafka"] {
        let h = histogram(
            &metrics,
            name::BROKER_CONNECTION_DURATION,
            &[
                ("kafka.broker.id", "111"),
                ("kafka.connection.stage", stage),
                ("error.type", "!"),
            ],
        );
        assert!(h.count >= 1, "stage {stage} timed");
        println!(
            "TLS agent, stage {stage}: mean {:.2} ms over {}",
            h.sum / h.count as f64 * 1000.0,
            h.count
        );
    }
    assert_eq!(
        counter(
            &metrics,
            name::BROKER_CONNECTION_CHECKS,
            &[("error.type", "*")]
        ),
        0
    );
    assert!(
        counter(
            &metrics,
            name::BROKER_CONNECTION_CHECKS,
            &[("server.address", "127.0.0.1")]
        ) >= 1
    );
}

// --- The mock cluster: up per broker, latency per stage -----------------------------------

fn mock_agent_config(mock: &MockKafka, topic: &str) -> cc_heartbeat::config::Config {
    config(&format!(
        "clusters:\n  - name: mock\n    bootstrap_servers: '{}'\n    librdkafka: {{fetch.wait.max.ms: '10'}}\n\
         heartbeat: {{topic: {topic}, interval: 250ms, loss_timeout: 3s, message_timeout: 1s}}\n\
         checks: {{connectivity: {{interval: 1s, timeout: 500ms}}, metadata: {{interval: 1s}}}}\n\
         export: {{otlp: {{enabled: false}}}}\n",
        mock.bootstrap()
    ))
}

fn up_by_broker(agent: &TestAgent) -> Vec<(i32, i64)> {
    let Some(metrics) = agent.try_metrics() else {
        return Vec::new();
    };
    (1..=3)
        .filter_map(|b| {
            let v = gauge(
                &metrics,
                name::BROKER_UP,
                &[("kafka.broker.id", &b.to_string())],
            );
            v.first().map(|v| (b, *v))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_broker_reports_up_0_within_one_probe_interval_and_the_others_1() {
    let mock = MockKafka::new(3);
    let topic = unique_topic("up");
    mock.create_topic(&topic, 3);
    let agent = TestAgent::start(mock_agent_config(&mock, &topic));
    eventually(Duration::from_secs(20), "all brokers up", || {
        (up_by_broker(&agent) == [(1, 1), (2, 1), (3, 1)]).then_some(())
    })
    .await;

    mock.broker_down(2);
    let down_at = Instant::now();
    eventually(Duration::from_secs(5), "broker 2 down", || {
        (up_by_broker(&agent) == [(1, 1), (2, 0), (3, 1)]).then_some(())
    })
    .await;
    let seen_after = down_at.elapsed();
    println!("broker 2 reported down {seen_after:?} after it went down");
    assert!(
        seen_after <= Duration::from_millis(1500),
        "within one probe interval (1 s): {seen_after:?}"
    );

    let metrics = agent.metrics();
    let refused = counter(
        &metrics,
        name::BROKER_CONNECTION_CHECKS,
        &[
            ("kafka.broker.id", "2"),
            ("kafka.connection.stage", "tcp"),
            ("error.type", "connection_refused"),
        ],
    );
    assert!(refused >= 1, "the failed check says where and why");
    // The mock drops a down broker from its metadata; the broker gauge follows.
    eventually(
        Duration::from_secs(5),
        "two brokers in the metadata",
        || (gauge(&agent.metrics(), name::CLUSTER_BROKERS, &[]) == [2]).then_some(()),
    )
    .await;

    mock.broker_up(2);
    eventually(Duration::from_secs(5), "broker 2 up again", || {
        (up_by_broker(&agent) == [(1, 1), (2, 1), (3, 1)]).then_some(())
    })
    .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_round_trip_time_shows_in_the_kafka_stage_of_that_broker_only() {
    const R: f64 = 0.2; // seconds added to every answer of broker 3
    let mock = MockKafka::new(3);
    let topic = unique_topic("rtt");
    mock.create_topic(&topic, 3);
    let agent = TestAgent::start(mock_agent_config(&mock, &topic));
    agent
        .wait_round_trips(&[0, 1, 2], 1, Duration::from_secs(20))
        .await;
    // Probed once first: the probe has learned which ApiVersions version the broker speaks.
    eventually(Duration::from_secs(10), "a first probe of broker 3", || {
        let h = agent.try_metrics().map(|m| {
            let filter = [
                ("kafka.broker.id", "3"),
                ("kafka.connection.stage", "kafka"),
            ];
            histogram(&m, name::BROKER_CONNECTION_DURATION, &filter)
        });
        h.is_some_and(|h| h.count >= 1).then_some(())
    })
    .await;
    mock.round_trip_time(3, Duration::from_secs_f64(R));
    let kafka_stage = |b: &str| {
        histogram(
            &agent.metrics(),
            name::BROKER_CONNECTION_DURATION,
            &[
                ("kafka.broker.id", b),
                ("kafka.connection.stage", "kafka"),
                ("error.type", "!"),
            ],
        )
    };
    let before = kafka_stage("3").count;
    eventually(
        Duration::from_secs(10),
        "three slowed probes of broker 3",
        || (kafka_stage("3").count >= before + 3).then_some(()),
    )
    .await;
    let (metrics, _) = agent.stop().await;
    let stage = |b: &str, stage: &str| {
        histogram(
            &metrics,
            name::BROKER_CONNECTION_DURATION,
            &[
                ("kafka.broker.id", b),
                ("kafka.connection.stage", stage),
                ("error.type", "!"),
            ],
        )
    };
    // The probes after the change took at least R; the earlier ones were fast.
    let slow = stage("3", "kafka");
    assert!(
        slow.in_bucket(0.1, 0.25) >= 3,
        "broker 3 kafka stage in (100 ms, 250 ms]: {slow:?}"
    );
    println!(
        "broker 3: kafka stage mean {:.1} ms over {} probes",
        slow.sum / slow.count as f64 * 1000.0,
        slow.count
    );
    for b in ["1", "2"] {
        let h = stage(b, "kafka");
        assert_eq!(
            h.in_bucket(0.1, f64::INFINITY),
            0,
            "broker {b} kafka stage is not slowed: {h:?}"
        );
        println!(
            "broker {b}: kafka stage mean {:.2} ms",
            h.sum / h.count as f64 * 1000.0
        );
    }
    let tcp = stage("3", "tcp");
    assert_eq!(
        tcp.in_bucket(0.1, f64::INFINITY),
        0,
        "round-trip time is on answers, not on connect: {tcp:?}"
    );
}

// --- Topic: creation and coverage -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_is_created_with_the_configured_settings() {
    let tansu = Tansu::start();
    let topic = unique_topic("configured");
    let agent = TestAgent::start(config(&format!(
        "clusters:\n  - name: tansu\n    bootstrap_servers: '{}'\n\
         heartbeat: {{topic: {topic}, interval: 250ms, partitions: 4, replication_factor: 1, retention: 2h}}\n\
         export: {{otlp: {{enabled: false}}}}\n",
        tansu.bootstrap()
    )));
    agent
        .wait_round_trips(&[0, 1, 2, 3], 2, Duration::from_secs(30))
        .await;
    agent.stop().await;
    let (partitions, retention) = describe_topic(&tansu.bootstrap(), &topic).await;
    assert_eq!(partitions, 4);
    println!("created topic: {partitions} partitions, retention.ms={retention:?}");
    assert_eq!(
        retention.as_deref(),
        Some("7200000"),
        "retention.ms as configured (2h)"
    );
}

/// Partition count from metadata, and retention.ms if the broker answers DescribeConfigs.
async fn describe_topic(bootstrap: &str, topic: &str) -> (usize, Option<String>) {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .unwrap();
    let partitions = metadata.topics()[0].partitions().len();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(5)));
    let retention = match admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
        .await
    {
        Ok(results) => results
            .into_iter()
            .flatten()
            .flat_map(|r| r.entries)
            .find(|e| e.name == "retention.ms")
            .and_then(|e| e.value),
        Err(_) => None,
    };
    (partitions, retention)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_with_fewer_partitions_than_brokers_is_left_alone_and_warned_about() {
    let mock = MockKafka::new(3);
    let topic = unique_topic("narrow");
    mock.create_topic(&topic, 1); // one partition, led by broker 1
    let agent = TestAgent::start(mock_agent_config(&mock, &topic));
    let http_port = free_port();
    let process = AgentProcess::start(
        &format!(
            "clusters:\n  - name: narrow\n    bootstrap_servers: '{}'\n\
             heartbeat: {{topic: {topic}, interval: 250ms}}\n\
             export: {{otlp: {{enabled: false}}}}\nhttp: {{listen: '127.0.0.1:{http_port}'}}\n",
            mock.bootstrap()
        ),
        &[],
    );
    agent
        .wait_round_trips(&[0], 3, Duration::from_secs(20))
        .await;
    eventually(Duration::from_secs(10), "gauges", || {
        let m = agent.metrics();
        (gauge(&m, name::CLUSTER_BROKERS, &[]) == [3]
            && gauge(&m, name::HEARTBEAT_LEADER_BROKERS, &[]) == [1])
        .then_some(())
    })
    .await;
    eventually(Duration::from_secs(20), "the coverage warning", || {
        process
            .output()
            .contains("brokers [2, 3] lead none")
            .then_some(())
    })
    .await;
    let output = process.output();
    assert!(output.contains("Heartbeat topic found."), "{output}");
    assert!(
        !output.contains("Created heartbeat topic"),
        "the existing topic is not recreated:\n{output}"
    );
    let (_, observations) = agent.stop().await;
    assert!(
        observations.iter().all(|o| !matches!(o, cc_heartbeat::probe::heartbeat::Observation::Acked { partition, .. } if *partition != 0)),
        "only the one partition is used"
    );
    let (partitions, _) = describe_topic(&mock.bootstrap(), &topic).await;
    assert_eq!(partitions, 1, "still one partition");
}

// --- check ---------------------------------------------------------------------------------

fn check_config(bootstrap: &str, topic: &str) -> tempfile::NamedTempFile {
    support::process::config_file(&format!(
        "clusters:\n  - name: checked\n    bootstrap_servers: '{bootstrap}'\n    librdkafka: {{fetch.wait.max.ms: '10'}}\n\
         heartbeat: {{topic: {topic}, message_timeout: 1s, loss_timeout: 5s}}\n\
         checks: {{connectivity: {{interval: 5s, timeout: 1s}}}}\n"
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
    assert!(
        failed[0]["error"].as_str().unwrap().contains("timeout"),
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
