#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! The heartbeat topic: created with the configured settings when missing, left alone (and
//! its coverage warned about) when it has fewer partitions than there are brokers.

mod support;

use std::time::Duration;

use cc_heartbeat::telemetry::instruments::name;
use support::metrics::{attribute_sets, counter, gauge};
use support::process::AgentProcess;
use support::tansu::Tansu;
use support::{
    MockKafka, TestAgent, config, eventually, free_port, mock_agent_config, unique_topic,
};

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
    let (metrics, _) = agent.stop().await;
    // Every ack went through the one partition's leader, broker 1: the agent sent nowhere else
    // and named the right broker.
    let produce = attribute_sets(&metrics, name::PRODUCE_DURATION);
    assert!(!produce.is_empty(), "heartbeats were acked");
    for set in &produce {
        let get = |key: &str| set.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        assert_eq!(
            get("messaging.destination.partition.id"),
            Some("0"),
            "{set:?}"
        );
        assert_eq!(get("kafka.broker.id"), Some("1"), "{set:?}");
    }
    let (partitions, _) = describe_topic(&mock.bootstrap(), &topic).await;
    assert_eq!(partitions, 1, "still one partition");
}

/// With `create_topic: false`, a topic that disappears is reported (readiness, the leader gauge
/// at 0) until an operator creates it again; then it counts as recreated and heartbeats flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_is_reported_until_it_is_back() {
    let tansu = Tansu::start();
    let topic = unique_topic("vanishing");
    tansu.create_topic(&topic, 1);
    let agent = TestAgent::start(config(&format!(
        "clusters:\n  - name: tansu\n    bootstrap_servers: '{}'\n\
         heartbeat: {{topic: {topic}, interval: 200ms, loss_timeout: 3s, message_timeout: 1s, create_topic: false}}\n\
         checks: {{metadata: {{interval: 1s}}}}\n\
         export: {{otlp: {{enabled: false}}}}\n",
        tansu.bootstrap()
    )));
    agent
        .wait_round_trips(&[0], 3, Duration::from_secs(30))
        .await;
    eventually(Duration::from_secs(5), "ready", || {
        agent.readiness.is_ready().then_some(())
    })
    .await;

    tansu.delete_topic(&topic);
    let why = format!("tansu: heartbeat topic {topic} missing");
    eventually(Duration::from_secs(5), "not ready, saying why", || {
        agent.readiness.pending().contains(&why).then_some(())
    })
    .await;
    eventually(Duration::from_secs(5), "no leader brokers", || {
        (gauge(&agent.metrics(), name::HEARTBEAT_LEADER_BROKERS, &[]) == [0]).then_some(())
    })
    .await;
    // It stays missing: the agent does not create it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(agent.readiness.pending().contains(&why));

    let before = agent.observations().len();
    tansu.create_topic(&topic, 1);
    eventually(Duration::from_secs(10), "ready again", || {
        agent.readiness.is_ready().then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "round trips on the new topic",
        || {
            agent.observations()[before..]
                .iter()
                .any(|o| {
                    matches!(
                        o,
                        cc_heartbeat::probe::heartbeat::Observation::RoundTrip { .. }
                    )
                })
                .then_some(())
        },
    )
    .await;
    let (metrics, _) = agent.stop().await;
    assert_eq!(counter(&metrics, name::TOPIC_RECREATIONS, &[]), 1);
    assert_eq!(counter(&metrics, name::MESSAGES_LOST, &[]), 0);
    assert_eq!(gauge(&metrics, name::HEARTBEAT_LEADER_BROKERS, &[]), [1]);
}
