#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! The consumer group and offsets probes against Apache Kafka (the shared 3-node cluster):
//! a real consumer group that commits, falls behind while records keep arriving, then catches
//! up (the agent's lag, lag_sum, offset, members and lag in seconds equal what the test
//! computes from the brokers), and partition offsets and replication against Kafka's own
//! answers.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cc_heartbeat::telemetry::instruments::name;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use support::groups::{commit, member, partition, produce, wait_current, watermarks};
use support::kafka::Kafka;
use support::metrics::{attribute_sets, gauge_f64, gauge_one};
use support::{TestAgent, config, eventually, unique_topic};

/// The time stamp (ms) of the record at `offset`, read by a client of the test's own.
fn record_time(bootstrap: &str, topic: &str, partition: i32, offset: i64) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique_topic("witness"))
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .unwrap();
    consumer.assign(&tpl).unwrap();
    loop {
        let message = consumer
            .poll(Duration::from_secs(10))
            .expect("a record")
            .unwrap();
        if message.offset() == offset {
            return message.timestamp().to_millis().unwrap();
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn lag_filter<'a>(group: &'a str, topic: &'a str, p: &'a str) -> [(&'a str, &'a str); 3] {
    [("group", group), ("topic", topic), ("partition", p)]
}

async fn wait_lag(agent: &TestAgent, group: &str, topic: &str, lags: [i64; 2]) -> ResourceMetrics {
    eventually(Duration::from_secs(30), "the lag reported", || {
        let m = agent.try_metrics()?;
        let got = [
            gauge_one(&m, name::GROUP_LAG, &lag_filter(group, topic, "0"))?,
            gauge_one(&m, name::GROUP_LAG, &lag_filter(group, topic, "1"))?,
        ];
        (got == lags).then_some(m)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_offsets_and_lag_in_seconds_match_the_broker_as_a_group_falls_behind_and_catches_up() {
    let kafka = tokio::task::spawn_blocking(Kafka::shared).await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = unique_topic("orders");
    let group = unique_topic("app");
    kafka.create_topic(&topic, 2, 3);
    produce(&bootstrap, &topic, 0, 10).await;
    // Partition 1: the record at offset 4 (the group's first unread) is written 2 s after
    // the one before it and 2 s before the one after it, so reading the wrong record shows.
    produce(&bootstrap, &topic, 1, 4).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    produce(&bootstrap, &topic, 1, 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    produce(&bootstrap, &topic, 1, 5).await;
    let app = member(&bootstrap, &group, &topic, 2);
    // Partition 0 read to the end, partition 1 up to offset 4: six records behind.
    commit(&app, &topic, &[10, 4]);

    let agent = TestAgent::start(config(&format!(
        "clusters:\n  - name: lag\n    bootstrap_servers: '{bootstrap}'\n    consumer_groups: {{include: ['^app-']}}\n\
         heartbeat: {{topic: {}, interval: 500ms}}\n\
         checks: {{metadata: {{interval: 1s}}, consumer_groups: {{interval: 1s}}, offsets: {{enabled: false}}}}\n\
         export: {{otlp: {{enabled: false}}}}\n",
        unique_topic("hb")
    )));
    let m = wait_lag(&agent, &group, &topic, [0, 6]).await;
    let seen_at = now_ms();
    assert_eq!(
        gauge_one(&m, name::GROUP_OFFSET, &lag_filter(&group, &topic, "0")),
        Some(10)
    );
    assert_eq!(
        gauge_one(&m, name::GROUP_OFFSET, &lag_filter(&group, &topic, "1")),
        Some(4)
    );
    assert_eq!(
        gauge_one(
            &m,
            name::GROUP_LAG_SUM,
            &[("group", group.as_str()), ("topic", topic.as_str())]
        ),
        Some(6)
    );
    assert_eq!(
        gauge_one(&m, name::GROUP_MEMBERS, &[("group", group.as_str())]),
        Some(1)
    );
    assert_eq!(
        gauge_one(
            &m,
            name::GROUP_OFFSET_SUM,
            &[("group", group.as_str()), ("topic", topic.as_str())]
        ),
        Some(14),
        "the committed offsets summed"
    );
    // The group's state as Kafka's own admin client describes it: 1 for it, 0 for the others.
    let described = kafka.admin(&format!("group {group}"));
    let state = described.split_whitespace().next().unwrap().to_owned();
    assert_eq!(state, "Stable", "{described}");
    for s in [
        "Stable",
        "Empty",
        "PreparingRebalance",
        "CompletingRebalance",
        "Dead",
    ] {
        assert_eq!(
            gauge_one(
                &m,
                name::GROUP_STATE,
                &[("group", group.as_str()), ("state", s)]
            ),
            Some(i64::from(s == state)),
            "state {s}"
        );
    }
    // Lag in seconds: the age of the record at offset 4 of partition 1, as measured at the
    // agent's last round (at most an interval before the test looked); 0 where the group is
    // caught up.
    let oldest_unread = record_time(&bootstrap, &topic, 1, 4);
    let truth = (seen_at - oldest_unread) as f64 / 1000.0;
    let reported = gauge_f64(
        &m,
        name::GROUP_LAG_DURATION,
        &lag_filter(&group, &topic, "1"),
    )
    .unwrap();
    println!("lag in seconds: reported {reported}, the record's age {truth}");
    assert!(
        reported <= truth + 0.1 && reported >= truth - 1.5,
        "lag in seconds {reported} against the record's age {truth}"
    );
    assert_eq!(
        gauge_f64(
            &m,
            name::GROUP_LAG_DURATION,
            &lag_filter(&group, &topic, "0")
        ),
        Some(0.0)
    );

    // Records keep arriving while the group does not consume: its lag grows.
    produce(&bootstrap, &topic, 0, 5).await;
    wait_lag(&agent, &group, &topic, [5, 6]).await;

    // It catches up.
    commit(&app, &topic, &[15, 10]);
    let m = wait_lag(&agent, &group, &topic, [0, 0]).await;
    assert_eq!(
        gauge_f64(
            &m,
            name::GROUP_LAG_DURATION,
            &lag_filter(&group, &topic, "1")
        ),
        Some(0.0)
    );
    assert_eq!(
        gauge_one(
            &m,
            name::GROUP_LAG_SUM,
            &[("group", group.as_str()), ("topic", topic.as_str())]
        ),
        Some(0)
    );
    assert_eq!(
        gauge_one(
            &m,
            name::GROUP_OFFSET_SUM,
            &[("group", group.as_str()), ("topic", topic.as_str())]
        ),
        Some(25)
    );

    // Only the groups `include` names: never the agent's own.
    let groups: Vec<String> = attribute_sets(&m, name::GROUP_MEMBERS)
        .into_iter()
        .flatten()
        .filter(|(k, _)| k == "group")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(groups, std::slice::from_ref(&group));
    agent.stop().await;

    // `check --json` reports the same group, behind again by three records on partition 0.
    produce(&bootstrap, &topic, 0, 3).await;
    let config = support::process::config_file(&format!(
        "clusters:\n  - name: lag\n    bootstrap_servers: '{bootstrap}'\n    consumer_groups: {{include: ['^{group}$']}}\n\
         heartbeat: {{topic: {}}}\n",
        unique_topic("hb")
    ));
    let out = support::process::run_to_end(
        &[
            "check",
            "--json",
            "--config",
            config.path().to_str().unwrap(),
        ],
        &[],
        Duration::from_secs(60),
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let reported = &json["clusters"][0]["consumer_groups"]["groups"][&group];
    assert_eq!(reported["members"], 1, "{json}");
    assert_eq!(
        reported["partitions"][format!("{topic}/0")]["lag"],
        3,
        "{json}"
    );
    assert_eq!(
        reported["partitions"][format!("{topic}/1")]["lag"],
        0,
        "{json}"
    );
    drop(app);
}

fn offsets_config(
    kafka: &Kafka,
    heartbeat: &str,
    extra_cluster: &str,
) -> cc_heartbeat::config::Config {
    config(&format!(
        "clusters:\n  - name: watched\n    bootstrap_servers: '{}'\n{extra_cluster}\
         heartbeat: {{topic: {heartbeat}, interval: 500ms}}\n\
         checks: {{metadata: {{interval: 1s}}, offsets: {{interval: 1s}}, consumer_groups: {{enabled: false}}}}\n\
         export: {{otlp: {{enabled: false}}}}\n",
        kafka.bootstrap()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_and_replication_match_kafkas_answers_and_include_selects_topics() {
    let kafka = tokio::task::spawn_blocking(Kafka::shared).await.unwrap();
    let heartbeat = unique_topic("hb");
    let orders = unique_topic("orders");
    let other = unique_topic("other");
    kafka.create_topic(&orders, 2, 3);
    kafka.create_topic(&other, 1, 3);
    produce(&kafka.bootstrap(), &orders, 0, 4).await;
    produce(&kafka.bootstrap(), &orders, 1, 9).await;
    // The log of partition 1 starts at 3 now: the oldest offset is not 0.
    kafka.admin(&format!("delete-records {orders} 1 3"));
    let include = format!("    topics: {{include: ['^{orders}$']}}\n");
    let agent = TestAgent::start(offsets_config(kafka, &heartbeat, &include));
    let m = wait_current(&agent, &orders, 4).await;
    for p in [0, 1] {
        let (low, high) = watermarks(&kafka.bootstrap(), &orders, p);
        assert_eq!(low, if p == 0 { 0 } else { 3 });
        let key = partition(&orders, if p == 0 { "0" } else { "1" });
        assert_eq!(
            gauge_one(&m, name::PARTITION_CURRENT_OFFSET, &key),
            Some(high)
        );
        assert_eq!(
            gauge_one(&m, name::PARTITION_OLDEST_OFFSET, &key),
            Some(low)
        );
        assert_eq!(gauge_one(&m, name::PARTITION_REPLICAS, &key), Some(3));
        assert_eq!(
            gauge_one(&m, name::PARTITION_REPLICAS_IN_SYNC, &key),
            Some(3)
        );
    }
    assert_eq!(
        gauge_one(&m, name::TOPIC_PARTITIONS, &[("topic", &orders)]),
        Some(2)
    );
    // Only what `include` names: not the other topic, not the heartbeat topic.
    assert_eq!(
        gauge_one(&m, name::TOPIC_PARTITIONS, &[("topic", &other)]),
        None
    );
    assert_eq!(
        gauge_one(&m, name::TOPIC_PARTITIONS, &[("topic", &heartbeat)]),
        None
    );
    agent.stop().await;
}

/// `granularity: topic`: per group and topic only (no per-partition series), with the lag in
/// seconds of the topic's oldest unread record; a group that only commits reads `Empty`, as
/// Kafka's own admin client describes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_granularity_reports_each_group_per_topic_only() {
    let kafka = tokio::task::spawn_blocking(Kafka::shared).await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = unique_topic("ledger");
    let group = unique_topic("batch");
    kafka.create_topic(&topic, 2, 3);
    produce(&bootstrap, &topic, 0, 10).await;
    produce(&bootstrap, &topic, 1, 10).await;
    kafka.admin(&format!("commit {group} {topic} 0 4"));
    kafka.admin(&format!("commit {group} {topic} 1 10"));
    let described = kafka.admin(&format!("group {group}"));
    let state = described.split_whitespace().next().unwrap().to_owned();
    assert_eq!(state, "Empty", "{described}");

    let agent = TestAgent::start(config(&format!(
        "clusters:\n  - name: lag\n    bootstrap_servers: '{bootstrap}'\n    consumer_groups: {{include: ['^{group}$'], granularity: topic}}\n\
         heartbeat: {{topic: {}, interval: 500ms}}\n\
         checks: {{metadata: {{interval: 1s}}, consumer_groups: {{interval: 1s}}, offsets: {{enabled: false}}}}\n\
         export: {{otlp: {{enabled: false}}}}\n",
        unique_topic("hb")
    )));
    let by_topic = [("group", group.as_str()), ("topic", topic.as_str())];
    let m = eventually(Duration::from_secs(30), "the group's lag", || {
        let m = agent.try_metrics()?;
        (gauge_one(&m, name::GROUP_LAG_SUM, &by_topic)? == 6).then_some(m)
    })
    .await;
    assert_eq!(gauge_one(&m, name::GROUP_OFFSET_SUM, &by_topic), Some(14));
    assert!(
        attribute_sets(&m, name::GROUP_LAG).is_empty()
            && attribute_sets(&m, name::GROUP_OFFSET).is_empty(),
        "no per-partition series"
    );
    let seconds = gauge_f64(
        &m,
        name::GROUP_LAG_DURATION,
        &[by_topic[0], by_topic[1], ("partition", "!")],
    )
    .expect("lag in seconds per topic");
    let oldest_unread = record_time(&bootstrap, &topic, 0, 4);
    let age = (now_ms() - oldest_unread) as f64 / 1000.0;
    assert!(
        seconds <= age + 0.1 && seconds >= age - 2.5,
        "{seconds} against {age}"
    );
    assert_eq!(
        gauge_one(
            &m,
            name::GROUP_STATE,
            &[("group", group.as_str()), ("state", "Empty")]
        ),
        Some(1)
    );
    assert_eq!(
        gauge_one(
            &m,
            name::GROUP_STATE,
            &[("group", group.as_str()), ("state", "Stable")]
        ),
        Some(0)
    );
    agent.stop().await;
}

/// The group's state as the agent last reported it: the state whose point is 1.
fn reported_state(agent: &TestAgent, group: &str) -> Option<String> {
    let m = agent.try_metrics()?;
    attribute_sets(&m, name::GROUP_STATE)
        .into_iter()
        .filter(|attrs| attrs.iter().any(|(k, v)| k == "group" && v == group))
        .filter_map(|attrs| {
            let state = attrs.iter().find(|(k, _)| k == "state")?.1.clone();
            let filter = [("group", group), ("state", state.as_str())];
            (gauge_one(&m, name::GROUP_STATE, &filter)? == 1).then_some(state)
        })
        .next()
}

/// A rebalance that cannot finish: a member that stopped polling (an application stuck in its
/// processing) holds the group in PreparingRebalance when another joins, until its rebalance
/// timeout. The agent reports that state every round for as long as it lasts, as Kafka's own
/// admin client describes it (what `KafkaConsumerGroupRebalanceStuck` alerts on), and Stable
/// again once the stuck member leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_that_cannot_finish_is_reported_until_the_group_is_stable_again() {
    let kafka = tokio::task::spawn_blocking(Kafka::shared).await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = unique_topic("jobs");
    // Not `app-`: the lag test, beside it on the shared cluster, watches every such group.
    let group = unique_topic("rebalancing");
    kafka.create_topic(&topic, 2, 3);
    // Joined, then never polled again: it cannot take part in the next rebalance. Its
    // rebalance timeout (max.poll.interval.ms) bounds how long the group waits for it.
    let stuck = support::groups::member_with(
        &bootstrap,
        &group,
        &topic,
        2,
        &[("max.poll.interval.ms", "120000")],
    );
    let agent = TestAgent::start(config(&format!(
        "clusters:\n  - name: stuck\n    bootstrap_servers: '{bootstrap}'\n    consumer_groups: {{include: ['^{group}$']}}\n\
         heartbeat: {{topic: {}, interval: 1s}}\n\
         checks: {{consumer_groups: {{interval: 1s}}, offsets: {{enabled: false}}}}\n\
         export: {{otlp: {{enabled: false}}}}\n",
        unique_topic("hb")
    )));
    eventually(Duration::from_secs(30), "the group reported Stable", || {
        (reported_state(&agent, &group).as_deref() == Some("Stable")).then_some(())
    })
    .await;

    // A second member joins: the coordinator waits for the first to rejoin, which it cannot.
    let newcomer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    newcomer.subscribe(&[&topic]).unwrap();
    let _ = newcomer.poll(Duration::from_millis(500));
    eventually(
        Duration::from_secs(30),
        "the group reported rebalancing",
        || (reported_state(&agent, &group).as_deref() == Some("PreparingRebalance")).then_some(()),
    )
    .await;
    // Reported so at every round for 15 s, while Kafka's admin client says the same.
    let since = std::time::Instant::now();
    while since.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            reported_state(&agent, &group).as_deref(),
            Some("PreparingRebalance"),
            "after {:?}",
            since.elapsed()
        );
    }
    let described = kafka.admin(&format!("group {group}"));
    assert!(described.starts_with("PreparingRebalance"), "{described}");

    // The stuck member goes (its process restarted): the rebalance completes without it.
    tokio::task::spawn_blocking(move || drop(stuck))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "the group reported Stable again",
        || {
            let _ = newcomer.poll(Duration::from_millis(100));
            (reported_state(&agent, &group).as_deref() == Some("Stable")).then_some(())
        },
    )
    .await;
    let m = agent.metrics();
    assert_eq!(
        gauge_one(&m, name::GROUP_MEMBERS, &[("group", group.as_str())]),
        Some(1)
    );
    agent.stop().await;
}
