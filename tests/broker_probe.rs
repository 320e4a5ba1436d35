#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! The per-broker staged probe against real peers: tansu (plain and behind TLS), the mock
//! cluster, and servers that are not Kafka.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cc_heartbeat::config::TlsConfig;
use cc_heartbeat::error::ErrorKind;
use cc_heartbeat::kafka::metadata::Broker;
use cc_heartbeat::kafka::tls;
use cc_heartbeat::probe::broker::{Outcome, Stage, probe};
use cc_heartbeat::telemetry::instruments::name;
use support::metrics::{counter, gauge, histogram};
use support::tansu::Tansu;
use support::tls::{Certificates, TlsProxy};
use support::{
    MockKafka, TestAgent, config, eventually, free_port, mock_agent_config, unique_topic,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn target(host: &str, port: u16) -> Broker {
    Broker {
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
    assert_eq!((f.stage, f.kind()), (stage, kind), "{o:?}");
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
    // Bounded by the probe's timeout, not by the peer (which never answers): the margin is
    // scheduling slack on a loaded machine, far below any second timeout it could hide.
    const SLACK: Duration = Duration::from_secs(1);
    assert!(took >= timeout && took < timeout + SLACK, "took {took:?}");
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
        o.failure
            .as_ref()
            .unwrap()
            .detail()
            .contains("UnknownIssuer"),
        "{o:?}"
    );

    // Same address, but by a name the certificate does not carry.
    let o = probe(&target("localhost", proxy.port), Some(&right), timeout).await;
    assert_failed(&o, Stage::Tls, ErrorKind::Tls);
    assert!(
        o.failure
            .as_ref()
            .unwrap()
            .detail()
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
    // Within one probe interval (1 s) and the probe's own timeout (500 ms), with a second of
    // slack for a loaded machine: not a later round, which would come a whole interval after.
    assert!(
        seen_after <= Duration::from_millis(2500),
        "within one probe interval: {seen_after:?}"
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
