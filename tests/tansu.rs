#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! The agent against a real tansu broker process: topic creation, round trips, and messages
//! injected by a second client (a duplicate, another agent's heartbeat, garbage).

mod support;

use std::time::Duration;

use cc_heartbeat::probe::heartbeat::Observation;
use cc_heartbeat::telemetry::SkipReason;
use cc_heartbeat::telemetry::instruments::name;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use support::metrics::counter;
use support::tansu::Tansu;
use support::{TestAgent, config, eventually, round_trips, unique_topic};

fn tansu_config(tansu: &Tansu, topic: &str, heartbeat_extra: &str) -> cc_heartbeat::config::Config {
    config(&format!(
        "clusters:\n  - name: tansu\n    bootstrap_servers: '{}'\n\
         heartbeat: {{topic: {topic}, interval: 200ms, loss_timeout: 5s, message_timeout: 2s{heartbeat_extra}}}\n\
         checks: {{metadata: {{interval: 1s}}}}\n\
         export: {{otlp: {{enabled: false}}}}\n",
        tansu.bootstrap()
    ))
}

fn producer(tansu: &Tansu) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", tansu.bootstrap())
        .set("message.timeout.ms", "5000")
        // tansu miscounts offsets after multi-record batches.
        .set("batch.num.messages", "1")
        .create()
        .unwrap()
}

/// Messages another client writes to the topic are each counted under their own reason: a
/// copy of one of the agent's heartbeats in its partition (duplicate) and in another
/// (misplaced), another agent's heartbeat, a later payload version, and garbage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_injected_by_another_client_are_counted_under_their_own_reasons() {
    let tansu = Tansu::start();
    let topic = unique_topic("injected");
    let agent = TestAgent::start(tansu_config(&tansu, &topic, ", partitions: 2"));
    agent
        .wait_round_trips(&[0, 1], 3, Duration::from_secs(30))
        .await;

    // A second client reads one of the agent's own heartbeats from partition 0.
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", tansu.bootstrap())
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let topic_for_reader = topic.clone();
    let (key, payload) = tokio::task::spawn_blocking(move || {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&topic_for_reader, 0, Offset::Beginning)
            .unwrap();
        reader.assign(&list).unwrap();
        loop {
            if let Some(Ok(m)) = reader.poll(Duration::from_secs(10)) {
                return (m.key().unwrap().to_vec(), m.payload().unwrap().to_vec());
            }
        }
    })
    .await
    .unwrap();
    let text = String::from_utf8(payload.clone()).unwrap();
    assert!(
        text.contains(&agent.identity.instance_id),
        "read back one of the agent's heartbeats: {text}"
    );

    let other_agent = br#"{"cc_heartbeat":1,"instance":"another-agent","run":"0123456789abcdef","partition":0,"seq":3,"sent_at_ms":1}"#;
    let newer = br#"{"cc_heartbeat":2,"instance":"another-agent","run":"0123456789abcdef","partition":0,"seq":3,"sent_at_ms":1,"zone":"a"}"#;
    let injected: [(i32, &[u8], &str); 5] = [
        (0, &payload, "duplicated"),
        (1, &payload, "misplaced"),
        (0, other_agent, "foreign"),
        (0, newer, "newer_version"),
        (0, b"\x00\x01 not a heartbeat", "undecodable"),
    ];
    let producer = producer(&tansu);
    for (partition, value, _) in injected {
        producer
            .send(
                BaseRecord::<[u8], [u8]>::to(&topic)
                    .partition(partition)
                    .key(&key)
                    .payload(value),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(5)).unwrap();

    let skipped = |reason: SkipReason| move |o: &Observation| matches!(o, Observation::Skipped { reason: r, .. } if *r == reason);
    eventually(
        Duration::from_secs(20),
        "every injected message seen",
        || {
            let obs = agent.observations();
            let has = |f: &dyn Fn(&Observation) -> bool| obs.iter().any(f);
            (has(&|o| matches!(o, Observation::Duplicated { partition: 0 }))
                && [
                    SkipReason::Misplaced,
                    SkipReason::Foreign,
                    SkipReason::NewerVersion,
                    SkipReason::Undecodable,
                ]
                .into_iter()
                .all(|r| has(&skipped(r))))
            .then_some(())
        },
    )
    .await;
    // The agent keeps measuring its own heartbeats afterwards.
    let before = round_trips(&agent.observations(), 0).len();
    eventually(
        Duration::from_secs(10),
        "round trips after the injection",
        || (round_trips(&agent.observations(), 0).len() >= before + 3).then_some(()),
    )
    .await;
    let (metrics, _) = agent.stop().await;

    for (partition, _, reason) in injected {
        let p = ("messaging.destination.partition.id", partition.to_string());
        let p = (p.0, p.1.as_str());
        let count = match reason {
            "duplicated" => counter(&metrics, name::MESSAGES_DUPLICATED, &[p]),
            reason => counter(
                &metrics,
                name::MESSAGES_SKIPPED,
                &[p, ("cc_heartbeat.skip.reason", reason)],
            ),
        };
        assert_eq!(count, 1, "{reason} on partition {partition}");
    }
    assert_eq!(
        counter(&metrics, name::MESSAGES_SKIPPED, &[]),
        4,
        "nothing else skipped"
    );
    assert_eq!(counter(&metrics, name::MESSAGES_LOST, &[]), 0);
    assert_eq!(
        counter(&metrics, name::MESSAGES_OUT_OF_ORDER, &[]),
        0,
        "a duplicate is not also out of order"
    );
}

/// DescribeCluster, through the one module that calls librdkafka's raw API: tansu answers it
/// with its single node (always 111), which is also the controller, and no rack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_cluster_reports_the_controller_and_no_racks() {
    use cc_heartbeat::kafka::admin::Admin;
    use cc_heartbeat::kafka::metadata::Broker;
    use cc_heartbeat::kafka::{ClientTiming, producer};
    let tansu = Tansu::start();
    let config = tansu_config(&tansu, "unused", "");
    let timing = ClientTiming::of(&config);
    let admin =
        Admin::new(producer::producer(&config.clusters[0], timing, Box::new(|_| {})).unwrap());
    let description = admin.describe(Duration::from_secs(5)).await.unwrap();
    assert_eq!(description.controller, Some(111));
    assert_eq!(
        description.cluster_id.as_deref(),
        Some(tansu.cluster_id.as_str())
    );
    assert_eq!(
        description.nodes,
        [Broker {
            id: 111,
            host: "127.0.0.1".into(),
            port: tansu.port,
            rack: None,
        }]
    );
    assert!(description.racks().is_empty());
}
