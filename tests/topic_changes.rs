#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! Partitions appearing in the metadata under a running agent, on librdkafka's mock cluster
//! behind a proxy that hides them until told (the clients learn of them only through the
//! metadata, as they would of partitions another agent's metadata already shows), checked
//! against an independent witness that reads every record. Partitions really added with
//! CreatePartitions, and leaders moved, are tested on Apache Kafka (tests/kafka_heartbeat.rs).

mod support;

use std::time::{Duration, Instant};

use cc_heartbeat::telemetry::instruments::name;
use support::kafka_proxy::KafkaProxy;
use support::metrics::counter;
use support::witness::heartbeats_on_topic;
use support::{MockKafka, TestAgent, config, round_trips, unique_topic};

fn mock_config(
    bootstrap: &str,
    topic: &str,
    metadata_interval: &str,
) -> cc_heartbeat::config::Config {
    config(&format!(
        "clusters:\n  - name: mock\n    bootstrap_servers: '{bootstrap}'\n    librdkafka: {{fetch.wait.max.ms: '10'}}\n\
         heartbeat: {{topic: {topic}, interval: 200ms, loss_timeout: 5s, message_timeout: 2s}}\n\
         checks: {{metadata: {{interval: {metadata_interval}}}}}\n\
         export: {{otlp: {{enabled: false}}}}\n"
    ))
}

/// Partitions added to the topic carry heartbeats within one metadata interval, and no send
/// fails for want of the clients' metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_partitions_carry_heartbeats_within_a_metadata_interval_without_failures() {
    let mock = MockKafka::new(3);
    let topic = unique_topic("growing");
    mock.create_topic(&topic, 6);
    let proxy = KafkaProxy::start(&mock.bootstrap(), &topic, 2).await;
    let agent = TestAgent::start(mock_config(&proxy.bootstrap(), &topic, "2s"));
    agent
        .wait_round_trips(&[0, 1], 3, Duration::from_secs(30))
        .await;
    // Hidden partitions are not used.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!((2..6).all(|p| round_trips(&agent.observations(), p).is_empty()));

    proxy.reveal(6);
    let revealed = Instant::now();
    agent
        .wait_round_trips(&[2, 3, 4, 5], 1, Duration::from_secs(20))
        .await;
    let took = revealed.elapsed();
    println!("added partitions carried heartbeats {took:?} after they appeared");
    assert!(
        took <= Duration::from_secs(2) + Duration::from_secs(2),
        "within one metadata interval (2 s), with a round to spare: {took:?}"
    );
    agent
        .wait_round_trips(&[0, 1, 2, 3, 4, 5], 5, Duration::from_secs(20))
        .await;
    let instance = agent.identity.instance_id.clone();
    let (metrics, _) = agent.stop().await;
    assert_eq!(
        counter(&metrics, name::MESSAGES_SENT, &[("error.type", "*")]),
        0,
        "no send failed"
    );
    assert_eq!(counter(&metrics, name::MESSAGES_LOST, &[]), 0);
    let on_topic = heartbeats_on_topic(&mock.bootstrap(), &topic, &instance).await;
    for p in 2..6 {
        let p_s = p.to_string();
        let received = counter(
            &metrics,
            name::MESSAGES_RECEIVED,
            &[("messaging.destination.partition.id", &p_s)],
        );
        let written = on_topic.iter().filter(|h| h.0 == p).count() as u64;
        assert!(
            received >= 5 && written >= received && written - received <= 1,
            "partition {p}: {written} on the topic, {received} consumed back"
        );
    }
}
