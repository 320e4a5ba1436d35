#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! The Schema Registry probe against small HTTP servers in the test: one that answers as a
//! Confluent Schema Registry does (and checks the credentials), one that refuses them (401),
//! one that is a plain web server without the registry's API, one that never answers. No
//! real Schema Registry can run on this machine (it needs a JVM and Kafka), so these servers
//! answer in the registry's REST shape for the one request the probe makes.

mod support;

use std::time::Duration;

use cc_heartbeat::telemetry::instruments::name;
use support::metrics::{counter, counter_if_any, gauge_one};
use support::process::{config_file, run_to_end};
use support::registry::{Behaviour, serve};
use support::{MockKafka, TestAgent, config, eventually, unique_topic};

fn cluster(name: &str, mock: &MockKafka, registry: &str) -> String {
    format!(
        "  - name: {name}\n    bootstrap_servers: '{}'\n    librdkafka: {{fetch.wait.max.ms: '10'}}\n\
         \x20   schema_registry: {{url: '{registry}', basic_auth: {{username: user, password: secret}}}}\n",
        mock.bootstrap()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_is_up_and_refused_credentials_are_auth() {
    let (good, requests) = serve(Behaviour::Registry).await;
    let (refusing, _) = serve(Behaviour::Refuses).await;
    let topic = unique_topic("sr");
    let (a, b) = (MockKafka::new(1), MockKafka::new(1));
    a.create_topic(&topic, 1);
    b.create_topic(&topic, 1);
    let agent = TestAgent::start(config(&format!(
        "clusters:\n{}{}\
         heartbeat: {{topic: {topic}, interval: 500ms}}\n\
         checks: {{schema_registry: {{interval: 1s, timeout: 500ms}}, consumer_groups: {{enabled: false}}, offsets: {{enabled: false}}}}\n\
         export: {{otlp: {{enabled: false}}}}\n",
        cluster("good", &a, &good),
        cluster("refused", &b, &refusing)
    )));
    let m = eventually(
        Duration::from_secs(20),
        "both registries probed twice",
        || {
            let m = agent.try_metrics()?;
            let checks = |name: &str| {
                counter_if_any(
                    &m,
                    "schema_registry.checks",
                    &[("schema_registry.name", name)],
                )
            };
            (checks("good") >= 2 && checks("refused") >= 2).then_some(m)
        },
    )
    .await;
    let good_attrs = [
        ("schema_registry.name", "good"),
        ("kafka.cluster.name", "good"),
        ("server.address", "127.0.0.1"),
    ];
    assert_eq!(gauge_one(&m, name::REGISTRY_UP, &good_attrs), Some(1));
    assert_eq!(
        gauge_one(
            &m,
            name::REGISTRY_UP,
            &[("schema_registry.name", "refused")]
        ),
        Some(0)
    );
    assert_eq!(
        counter(
            &m,
            name::REGISTRY_CHECKS,
            &[("schema_registry.name", "good"), ("error.type", "*")]
        ),
        0
    );
    let refused = counter(
        &m,
        name::REGISTRY_CHECKS,
        &[("schema_registry.name", "refused")],
    );
    assert_eq!(
        counter(
            &m,
            name::REGISTRY_CHECKS,
            &[
                ("schema_registry.name", "refused"),
                ("error.type", "auth"),
                ("schema_registry.stage", "http")
            ]
        ),
        refused,
        "every probe of the refusing registry fails at http with auth"
    );
    // Each stage is timed: dns, tcp and http (no TLS on an http URL).
    let stages: Vec<String> =
        support::metrics::attribute_sets(&m, name::REGISTRY_CONNECTION_DURATION)
            .into_iter()
            .filter(|set| set.contains(&("schema_registry.name".to_owned(), "good".to_owned())))
            .filter_map(|set| {
                set.into_iter()
                    .find(|(k, _)| k == "schema_registry.stage")
                    .map(|(_, v)| v)
            })
            .collect();
    for stage in ["dns", "tcp", "http"] {
        assert!(
            stages.contains(&stage.to_owned()),
            "{stage} timed: {stages:?}"
        );
    }
    // What the registry was asked: one cheap request, with the credentials.
    let first = requests.lock().unwrap()[0].clone();
    assert!(
        first.starts_with("GET /schemas/types HTTP/1.1\r\n"),
        "{first}"
    );
    assert!(
        first.contains("\r\nAuthorization: Basic dXNlcjpzZWNyZXQ=\r\n"),
        "{first}"
    );
    agent.stop().await;
}

/// `check --json` against a mock cluster whose registry is at `url`; the report's registry part.
fn check_registry(url: &str) -> (serde_json::Value, Duration) {
    let mock = MockKafka::new(1);
    let topic = unique_topic("sr-check");
    mock.create_topic(&topic, 1);
    let file = config_file(&format!(
        "clusters:\n{}heartbeat: {{topic: {topic}, message_timeout: 1s, loss_timeout: 5s}}\n\
         checks: {{schema_registry: {{timeout: 700ms}}}}\n",
        cluster("checked", &mock, url)
    ));
    let started = std::time::Instant::now();
    let out = run_to_end(
        &["check", "--json", "--config", file.path().to_str().unwrap()],
        &[],
        Duration::from_secs(60),
    );
    let took = started.elapsed();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    println!("{json}");
    (json["clusters"][0].clone(), took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_a_web_page_as_protocol_and_silence_as_timeout() {
    let (registry, _) = serve(Behaviour::Registry).await;
    let (web, _) = serve(Behaviour::WebPage).await;
    let (silent, _) = serve(Behaviour::Silent).await;

    let (c, _) = tokio::task::spawn_blocking(move || check_registry(&registry))
        .await
        .unwrap();
    assert_eq!(
        c["schema_registry"]["failure"],
        serde_json::Value::Null,
        "{c}"
    );
    assert_eq!(c["schema_registry"]["http_status"], 200, "{c}");

    let (c, _) = tokio::task::spawn_blocking(move || check_registry(&web))
        .await
        .unwrap();
    assert_eq!(c["schema_registry"]["failure"]["stage"], "http", "{c}");
    assert_eq!(c["schema_registry"]["failure"]["kind"], "protocol", "{c}");
    assert!(
        c["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().contains("Schema Registry")),
        "{c}"
    );

    let (c, _) = tokio::task::spawn_blocking(move || check_registry(&silent))
        .await
        .unwrap();
    assert_eq!(c["schema_registry"]["failure"]["stage"], "http", "{c}");
    assert_eq!(c["schema_registry"]["failure"]["kind"], "timeout", "{c}");
}
