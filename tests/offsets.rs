#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! The offsets probe on librdkafka's mock cluster: what it reports for each watched partition
//! equals what an independent client reads from the broker, internal and excluded topics stay
//! out, and the series cap drops whole topics. (Against Apache Kafka: tests/kafka_groups.rs.)

mod support;

use cc_heartbeat::telemetry::instruments::name;
use support::groups::{partition, produce, wait_current, watermarks};
use support::metrics::gauge_one;
use support::{MockKafka, TestAgent, config, unique_topic};

fn offsets_config(
    bootstrap: &str,
    heartbeat: &str,
    extra_cluster: &str,
    max_series: usize,
) -> cc_heartbeat::config::Config {
    config(&format!(
        "clusters:\n  - name: watched\n    bootstrap_servers: '{bootstrap}'\n    librdkafka: {{fetch.wait.max.ms: '10'}}\n{extra_cluster}\
         heartbeat: {{topic: {heartbeat}, interval: 500ms}}\n\
         checks: {{metadata: {{interval: 1s}}, offsets: {{interval: 1s, max_series: {max_series}}}}}\n\
         export: {{otlp: {{enabled: false}}}}\n"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_and_replication_match_the_brokers_on_the_mock_cluster() {
    let mock = MockKafka::new(3);
    let heartbeat = unique_topic("hb");
    let orders = unique_topic("orders");
    let internal = format!("_{}", unique_topic("internal"));
    mock.create_topic(&heartbeat, 3);
    mock.create_topic(&orders, 3);
    mock.create_topic(&internal, 1);
    produce(&mock.bootstrap(), &orders, 0, 7).await;
    produce(&mock.bootstrap(), &orders, 1, 3).await;
    produce(&mock.bootstrap(), &internal, 0, 2).await;

    let agent = TestAgent::start(offsets_config(&mock.bootstrap(), &heartbeat, "", 10_000));
    let m = wait_current(&agent, &orders, 7).await;
    for (p, expected) in [("0", 7), ("1", 3), ("2", 0)] {
        let key = partition(&orders, p);
        let (low, high) = watermarks(&mock.bootstrap(), &orders, p.parse().unwrap());
        assert_eq!(high, expected, "the witness agrees with what was written");
        assert_eq!(
            gauge_one(&m, name::PARTITION_CURRENT_OFFSET, &key),
            Some(high),
            "{p}"
        );
        assert_eq!(
            gauge_one(&m, name::PARTITION_OLDEST_OFFSET, &key),
            Some(low),
            "{p}"
        );
        assert_eq!(
            gauge_one(&m, name::PARTITION_REPLICAS, &key),
            Some(3),
            "{p}"
        );
        assert_eq!(
            gauge_one(&m, name::PARTITION_REPLICAS_IN_SYNC, &key),
            Some(3),
            "{p}"
        );
    }
    assert_eq!(
        gauge_one(&m, name::TOPIC_PARTITIONS, &[("topic", &orders)]),
        Some(3)
    );
    assert_eq!(
        gauge_one(&m, name::TOPIC_PARTITIONS, &[("topic", &heartbeat)]),
        Some(3)
    );
    // Topics starting with '_' are excluded by default.
    assert_eq!(
        gauge_one(&m, name::TOPIC_PARTITIONS, &[("topic", &internal)]),
        None
    );
    assert_eq!(
        gauge_one(
            &m,
            name::SERIES_DROPPED,
            &[("cc_heartbeat.check", "offsets")]
        ),
        Some(0)
    );
    // The kafkametricsreceiver's keys, and the cluster's attributes.
    assert_eq!(
        gauge_one(
            &m,
            name::PARTITION_REPLICAS,
            &[
                ("topic", &orders),
                ("partition", "1"),
                ("kafka.cluster.name", "watched"),
                ("messaging.destination.partition.id", "!")
            ]
        ),
        Some(3)
    );

    // The offsets move as records arrive.
    produce(&mock.bootstrap(), &orders, 0, 5).await;
    wait_current(&agent, &orders, 12).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_series_cap_drops_whole_topics_and_counts_them() {
    let mock = MockKafka::new(3);
    // Name order decides: the "a" topic fits under the cap, the "b" one does not.
    let kept = format!("a-{}", unique_topic("kept"));
    let dropped = format!("b-{}", unique_topic("dropped"));
    mock.create_topic(&kept, 3);
    mock.create_topic(&dropped, 3);
    produce(&mock.bootstrap(), &kept, 0, 1).await;
    // 2 + 4·3 = 14 series per topic; the heartbeat topic ("c-…") is dropped too.
    let heartbeat = format!("c-{}", unique_topic("hb"));
    mock.create_topic(&heartbeat, 3);
    let agent = TestAgent::start(offsets_config(&mock.bootstrap(), &heartbeat, "", 14));
    let m = wait_current(&agent, &kept, 1).await;
    assert_eq!(
        gauge_one(&m, name::TOPIC_PARTITIONS, &[("topic", &dropped)]),
        None
    );
    assert_eq!(
        gauge_one(&m, name::TOPIC_PARTITIONS, &[("topic", &heartbeat)]),
        None
    );
    assert_eq!(
        gauge_one(
            &m,
            name::SERIES_DROPPED,
            &[("cc_heartbeat.check", "offsets")]
        ),
        Some(28)
    );
    agent.stop().await;
}
