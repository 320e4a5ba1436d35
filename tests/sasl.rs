#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! SASL from outside: `cc-heartbeat check` through a SASL/PLAIN front (tests/support's
//! Kafka proxy answering SaslHandshake and SaslAuthenticate as a broker does) in front of
//! librdkafka's mock cluster, which has no SASL of its own. The right account gets a healthy
//! cluster through it; a wrong password and a mechanism the broker does not offer are each
//! reported as what they are, `error.type` `auth`, not as a timeout or a transport failure.

mod support;

use std::time::{Duration, Instant};

use support::kafka_proxy::{KafkaProxy, SaslAccount};
use support::process::{AgentProcess, config_file, http_get, run_to_end};
use support::{MockKafka, unique_topic};

const PASSWORD: &str = "sasl-password-4e1c";

/// A case: its name, the mechanism and password the agent uses, the exit status `check`
/// gives, and what its report says.
type Case = (
    &'static str,
    &'static str,
    &'static str,
    Option<i32>,
    &'static [&'static str],
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_failures_are_reported_as_authentication_failures() {
    let mock = MockKafka::new(1);
    let topic = unique_topic("sasl");
    mock.create_topic(&topic, 1);
    let proxy = KafkaProxy::with_sasl(
        &mock.bootstrap(),
        SaslAccount::Plain {
            username: "agent".to_owned(),
            password: PASSWORD.to_owned(),
        },
    )
    .await;
    let cases: [Case; 3] = [
        (
            "the right account",
            "PLAIN",
            PASSWORD,
            Some(0),
            &["verdict: HEALTHY"],
        ),
        (
            "a wrong password",
            "PLAIN",
            "wrong-password-0b7d",
            Some(1),
            &[
                "cannot fetch cluster metadata (auth): authentication failed: ",
                "Invalid username or password",
            ],
        ),
        (
            "a mechanism the broker does not offer",
            "SCRAM-SHA-256",
            PASSWORD,
            Some(1),
            &[
                "cannot fetch cluster metadata (auth): authentication failed: ",
                "broker's supported mechanisms: PLAIN",
            ],
        ),
    ];
    for (name, mechanism, password, exit, expected) in cases {
        let config = config_file(&format!(
            "clusters:\n  - name: sasl\n    bootstrap_servers: '{}'\n    security_protocol: SASL_PLAINTEXT\n\
             \x20   sasl: {{mechanism: {mechanism}, username: agent, password: '{password}'}}\n\
             \x20   librdkafka: {{fetch.wait.max.ms: '10'}}\n\
             heartbeat: {{topic: {topic}, create_topic: false, message_timeout: 1s, loss_timeout: 5s}}\n\
             checks: {{connectivity: {{interval: 5s, timeout: 1s}}, metadata: {{interval: 10s}}}}\n",
            proxy.bootstrap()
        ));
        let started = Instant::now();
        let out = tokio::task::spawn_blocking(move || {
            run_to_end(
                &["check", "--config", config.path().to_str().unwrap()],
                &[],
                Duration::from_secs(60),
            )
        })
        .await
        .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        println!("{name} ({:?}):\n{stdout}{stderr}", started.elapsed());
        assert_eq!(out.status.code(), exit, "{name}:\n{stdout}{stderr}");
        for text in expected {
            assert!(
                stdout.contains(text),
                "{name}: missing {text:?} in\n{stdout}"
            );
        }
        for secret in [PASSWORD, "wrong-password-0b7d"] {
            assert!(
                !stdout.contains(secret) && !stderr.contains(secret),
                "{name}: a password leaked"
            );
        }
    }
}

/// The sum of `kafka_heartbeat_messages_sent_total` points of the exposition whose labels
/// contain `label`.
fn sent_with(exposition: &str, label: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with("kafka_heartbeat_messages_sent_total{") && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// An API key deleted under a running agent, as a cluster does it: every connection dropped,
/// the key refused from then on. The heartbeats that fail from then on are counted and logged
/// as `auth` (librdkafka times them out), and the log says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_failing_on_a_revoked_key_are_counted_as_auth() {
    let mock = MockKafka::new(1);
    let topic = unique_topic("revoked");
    mock.create_topic(&topic, 1);
    let account = |password: &str| SaslAccount::Plain {
        username: "agent".to_owned(),
        password: password.to_owned(),
    };
    let proxy = KafkaProxy::with_sasl(&mock.bootstrap(), account(PASSWORD)).await;
    let http_port = support::free_port();
    let mut agent = AgentProcess::start(
        &format!(
            "clusters:\n  - name: sasl\n    bootstrap_servers: '{}'\n    security_protocol: SASL_PLAINTEXT\n\
             \x20   sasl: {{mechanism: PLAIN, username: agent, password: '{PASSWORD}'}}\n\
             \x20   librdkafka: {{fetch.wait.max.ms: '10'}}\n\
             heartbeat: {{topic: {topic}, create_topic: false, interval: 500ms, message_timeout: 1s, loss_timeout: 5s}}\n\
             checks: {{metadata: {{interval: 2s}}}}\n\
             export: {{otlp: {{enabled: false}}}}\nhttp: {{listen: '127.0.0.1:{http_port}', prometheus: true}}\n",
            proxy.bootstrap()
        ),
        &[],
    );
    agent.wait_ready(http_port, Duration::from_secs(30)).await;
    proxy.revoke(account("rotated-password-51aa"));
    let url = format!("http://127.0.0.1:{http_port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(30);
    let exposition = loop {
        let text = match http_get(&url).await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if sent_with(&text, "error_type=\"auth\"") >= 3.0 {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no sends failing as auth within 30 s:\n{text}\n{}",
            agent.output()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let auth = sent_with(&exposition, "error_type=\"auth\"");
    let timeout = sent_with(&exposition, "error_type=\"timeout\"");
    // Sends in flight when the connection dropped may fail before the refusal is known.
    assert!(
        auth > timeout,
        "auth {auth}, timeout {timeout}:\n{exposition}"
    );
    let (_, log) = agent.terminate(Duration::from_secs(10)).await;
    assert!(log.contains("authentication failed"), "{log}");
    assert!(log.contains("Invalid username or password"), "{log}");
    assert!(!log.contains(PASSWORD) && !log.contains("rotated-password-51aa"));
}
