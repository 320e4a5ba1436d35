#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! Whether the agent can use the cluster, as metrics, on Apache Kafka (the shared cluster): a
//! wrong password reads as the cluster down with `error.type="auth"` on `/metrics`, in the
//! OTLP export and on `/readyz`, while the agent's own `cc_heartbeat.build.info` says it runs;
//! and the `kafka.error.code` names are Kafka's own.

mod support;

use std::time::{Duration, Instant};

use cc_heartbeat::kafka::error_codes;
use support::kafka::{AGENT, Kafka, Listener};
use support::otlp::{OtlpReceiver, counter_value, gauge_points};
use support::process::{AgentProcess, http_get, point_with, sum_matching};
use support::{eventually, free_port, unique_topic};

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// The agent names a broker's error as Kafka's own client library does, for every code the
/// protocol has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_error_code_names_are_kafkas_own() {
    let kafka = blocking(Kafka::shared).await;
    let answer = blocking(|| kafka.admin("errors")).await;
    let mut codes = 0;
    for pair in answer.split_whitespace() {
        let (code, name) = pair.split_once(':').unwrap();
        let code: i32 = code.parse().unwrap();
        codes += 1;
        if code == 0 {
            assert_eq!(error_codes::protocol_name(code), None, "NONE is no error");
        } else {
            assert_eq!(error_codes::protocol_name(code), Some(name), "code {code}");
        }
    }
    assert_eq!(
        codes,
        error_codes::HIGHEST + 2,
        "-1 and 0 besides 1..=HIGHEST"
    );
}

const WRONG_PASSWORD: &str = "wrong-password-e1f0";

/// The most common first-day failure, a wrong API secret: ApiVersions answers before
/// authentication (so every broker probe passes), metadata never comes, and no heartbeat is
/// sent. Within one metadata interval (the default, 60 s) the cluster reads down with
/// `error.type="auth"` on `/metrics`, in the OTLP export and on `/readyz`, while
/// `cc_heartbeat_build_info` says the agent runs (the absence alert keys on it, not on
/// `kafka_cluster_brokers`, which never appears).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_reads_as_the_cluster_down_with_auth_everywhere() {
    let kafka = blocking(Kafka::shared).await;
    let receiver = OtlpReceiver::start(0).await;
    let http_port = free_port();
    let started = Instant::now();
    let agent = AgentProcess::start(
        &format!(
            "clusters:\n  - name: secured\n    bootstrap_servers: '{}'\n    security_protocol: SASL_PLAINTEXT\n\
             \x20   sasl: {{mechanism: SCRAM-SHA-512, username: {AGENT}, password: '{WRONG_PASSWORD}'}}\n\
             heartbeat: {{topic: {}}}\n\
             export: {{otlp: {{endpoint: '{}', interval: 1s}}}}\n\
             http: {{listen: '127.0.0.1:{http_port}', prometheus: true, readiness: kafka}}\n",
            kafka.bootstrap_on(Listener::Sasl),
            unique_topic("cc-heartbeat-wrong-key"),
            receiver.endpoint()
        ),
        &[],
    );
    let down = |t: &str| {
        point_with(t, "kafka_cluster_up", &["kafka_cluster_name=\"secured\""]) == Some(0.0)
            && sum_matching(
                t,
                "kafka_cluster_requests_total",
                &["kafka_request=\"metadata\"", "error_type=\"auth\""],
            ) >= 1.0
    };
    let exposition = agent
        .scrape_until(
            http_port,
            Duration::from_secs(60),
            "the cluster down with auth within the metadata interval",
            down,
        )
        .await;
    println!("down with auth after {:?}", started.elapsed());
    assert_eq!(
        point_with(
            &exposition,
            "cc_heartbeat_build_info",
            &[
                &format!("service_version=\"{}\"", env!("CARGO_PKG_VERSION")),
                "vcs_revision=\""
            ]
        ),
        Some(1.0),
        "{exposition}"
    );
    assert_eq!(
        point_with(&exposition, "kafka_cluster_brokers", &[]),
        None,
        "no metadata, no broker count"
    );
    assert!(
        point_with(&exposition, "kafka_broker_up", &[]).is_some(),
        "the broker probe runs: {exposition}"
    );

    // `http.readiness: kafka`: /readyz follows the cluster.
    let ready = http_get(&format!("http://127.0.0.1:{http_port}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body = ready.text().await.unwrap();
    assert!(
        body.contains("secured: the cluster cannot be used, its metadata requests fail (auth"),
        "{body}"
    );

    // The OTLP export says the same, without a cluster id (the cluster never answered).
    eventually(
        Duration::from_secs(20),
        "the export shows the cluster down",
        || {
            let requests = receiver.requests();
            let last = requests.last()?;
            let up = gauge_points(
                last,
                "kafka.cluster.up",
                &[("kafka.cluster.name", "secured")],
            );
            let failed = counter_value(
                last,
                "kafka.cluster.requests",
                &[
                    ("kafka.request", "metadata"),
                    ("error.type", "auth"),
                    ("kafka.cluster.id", "!"),
                ],
            );
            (up.len() == 1 && up[0].0 == 0 && failed >= 1).then_some(())
        },
    )
    .await;

    let (_, log) = agent.terminate(Duration::from_secs(10)).await;
    assert!(!log.contains(WRONG_PASSWORD), "the password leaked:\n{log}");
    assert!(!body.contains(WRONG_PASSWORD) && !exposition.contains(WRONG_PASSWORD));
}
