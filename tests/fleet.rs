#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! A fleet as the DaemonSet overlay ships it, on Apache Kafka (the shared cluster): 8
//! per-node agents that only produce, to a topic of their own, and the overlay's round-trip
//! agents that read their own heartbeats back. No agent fetches more records that are not
//! its own than a constant times what it sends: the cluster's read work grows with the
//! fleet, not with its square. Kafka's own end offsets witness what the per-node agents
//! wrote.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use support::free_port;
use support::kafka::Kafka;
use support::process::{AgentProcess, http_get, sum_matching, sum_with};

const NODES: usize = 8;

fn object<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    support::yaml::object(objects, kind, "cc-heartbeat")
}

/// A workload's literal environment values (those without `valueFrom`).
fn literal_env(workload: &Value) -> BTreeMap<String, String> {
    workload["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemonset_fleet_fetches_what_it_sends_not_the_square_of_it() {
    let kafka = tokio::task::spawn_blocking(Kafka::shared).await.unwrap();
    let objects = support::yaml::kustomize("deploy/kubernetes/overlays/daemonset");
    let shipped = object(&objects, "ConfigMap")["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .to_owned();
    let node_env = literal_env(object(&objects, "DaemonSet"));
    let round_trip = object(&objects, "Deployment");
    let round_trip_env = literal_env(round_trip);
    let replicas = round_trip["spec"]["replicas"].as_u64().unwrap() as usize;
    assert_eq!(
        node_env.get("CC_HEARTBEAT_READ_BACK").map(String::as_str),
        Some("false")
    );

    // The shipped config, with the test cluster in place of Confluent Cloud's, and each
    // agent's own listener with /metrics on.
    let mut config: Value = support::yaml::document(&shipped);
    config["clusters"] = serde_json::json!([{
        "name": "fleet",
        "bootstrap_servers": kafka.bootstrap(),
    }]);
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    // Each workload's topic, as the overlay sets it, made unique to this test run.
    let topic_of = |env: &BTreeMap<String, String>| {
        format!(
            "{}-{tag}",
            env.get("CC_HEARTBEAT_TOPIC")
                .map_or("cc-heartbeat", String::as_str)
        )
    };
    let (node_topic, round_trip_topic) = (topic_of(&node_env), topic_of(&round_trip_env));
    assert_ne!(
        node_topic, round_trip_topic,
        "the per-node agents write a topic of their own"
    );

    let mut agents = Vec::new();
    let roles = std::iter::repeat_n(("node", &node_env, &node_topic), NODES).chain(
        std::iter::repeat_n(("round-trip", &round_trip_env, &round_trip_topic), replicas),
    );
    for (role, env, topic) in roles {
        let http_port = free_port();
        let mut agent_config = config.clone();
        agent_config["http"] =
            serde_json::json!({"listen": format!("127.0.0.1:{http_port}"), "prometheus": true});
        let mut vars: Vec<(String, String)> = env
            .iter()
            .filter(|(k, _)| k.starts_with("CC_HEARTBEAT_") && *k != "CC_HEARTBEAT_CONFIG")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        vars.retain(|(k, _)| k != "CC_HEARTBEAT_TOPIC");
        vars.push(("CC_HEARTBEAT_TOPIC".into(), topic.clone()));
        vars.push(("OTEL_METRICS_EXPORTER".into(), "none".into()));
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let process = AgentProcess::start(&serde_json::to_string(&agent_config).unwrap(), &vars);
        agents.push((role, process, http_port));
    }
    for (_, agent, port) in &mut agents {
        agent.wait_ready(*port, Duration::from_secs(90)).await;
    }
    tokio::time::sleep(Duration::from_secs(15)).await;

    let mut node_acked = 0.0;
    for (role, agent, port) in &agents {
        let text = http_get(&format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let sent = sum_with(&text, "kafka_heartbeat_messages_sent_total", "");
        let received = sum_with(&text, "kafka_heartbeat_messages_received_total", "");
        let foreign = sum_matching(
            &text,
            "kafka_heartbeat_messages_skipped_total",
            &["cc_heartbeat_skip_reason=\"foreign\""],
        );
        let skipped = sum_with(&text, "kafka_heartbeat_messages_skipped_total", "");
        println!("{role}: sent {sent}, received {received}, skipped {skipped} (foreign {foreign})");
        assert!(sent >= 10.0, "{role} sends:\n{}", agent.output());
        match *role {
            "node" => {
                // No consumer at all: it fetches nothing, and exports no receive-side series.
                assert!(
                    !text.contains("kafka_heartbeat_messages_received_total"),
                    "{role}"
                );
                assert!(
                    !text.contains("kafka_heartbeat_messages_lost_total"),
                    "{role}"
                );
                assert!(
                    !text.contains("kafka_heartbeat_messages_skipped_total"),
                    "{role}"
                );
                node_acked += sent
                    - sum_matching(
                        &text,
                        "kafka_heartbeat_messages_sent_total",
                        &["error_type=\""],
                    );
            }
            _ => {
                assert!(received >= sent - 5.0, "{role}: its own come back");
                // What it reads that is not its own: the other round-trip agents', a constant
                // number of them whatever the fleet's size.
                let others = (replicas - 1) as f64;
                assert!(
                    foreign <= others * sent * 1.2 + 10.0,
                    "{role}: {foreign} foreign records for {sent} sent"
                );
                assert_eq!(skipped, foreign, "{role}: nothing else skipped");
            }
        }
    }
    for (_, agent, _) in agents {
        let (status, _) = agent.terminate(Duration::from_secs(15)).await;
        assert!(status.success());
    }
    // The per-node agents' heartbeats are on their topic, as Kafka's own client counts them:
    // at least every one acknowledged by the time of the scrape above.
    let ends = {
        let topic = node_topic.clone();
        tokio::task::spawn_blocking(move || kafka.admin(&format!("end-offsets {topic}")))
            .await
            .unwrap()
    };
    let on_topic: f64 = ends
        .split_whitespace()
        .filter_map(|w| w.split_once(':')?.1.parse::<f64>().ok())
        .sum();
    println!(
        "the per-node topic holds {on_topic} records; {node_acked} were acknowledged at the scrape"
    );
    assert!(on_topic >= node_acked, "{on_topic} < {node_acked}");
}
