#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! The commit probe against Apache Kafka (a 3-node cluster of its own, one rack per node):
//! the coordinator it names and the offset it commits are what Kafka's own Admin client
//! says; stopping the coordinator's broker moves the group, which the probe sees once, with
//! the commit path's time during the move in its histogram; moving the group's partition of
//! `__consumer_offsets` while its old coordinator stays up is seen as well; the heartbeat's
//! counts stay exact.

mod support;

use std::time::Duration;

use cc_heartbeat::telemetry::instruments::name;
use support::kafka::Kafka;
use support::ledger::Ledger;
use support::metrics::{attribute_sets, counter, counter_if_any, histogram};
use support::{TestAgent, config, eventually, unique_topic};

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// The coordinator ids the agent's `find_coordinator` steps have named, without failures.
fn coordinators(agent: &TestAgent) -> Vec<(String, Option<String>)> {
    let Some(metrics) = agent.try_metrics() else {
        return Vec::new();
    };
    let mut found: Vec<(String, Option<String>)> = attribute_sets(&metrics, name::COMMIT_DURATION)
        .into_iter()
        .filter(|set| {
            set.iter()
                .any(|(k, v)| k == "kafka.commit.operation" && v == "find_coordinator")
                && !set.iter().any(|(k, _)| k == "error.type")
        })
        .filter_map(|set| {
            let get = |key: &str| set.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
            Some((get("kafka.coordinator.id")?, get("kafka.broker.rack")))
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

/// The partition of `__consumer_offsets` (of `partitions`) that holds `group`, as Kafka
/// places it: the group id's Java `hashCode`, made non-negative, modulo the partitions.
fn group_partition(group: &str, partitions: i32) -> i32 {
    let hash = group
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    let positive = if hash == i32::MIN { 0 } else { hash.abs() };
    positive % partitions
}

/// Steps that failed or took half a second or more: what a coordinator move costs.
fn slow_or_failed(agent: &TestAgent) -> u64 {
    let metrics = agent.metrics();
    let all = histogram(&metrics, name::COMMIT_DURATION, &[]);
    let failed: u64 = attribute_sets(&metrics, name::COMMIT_DURATION)
        .into_iter()
        .filter(|set| set.iter().any(|(k, _)| k == "error.type"))
        .map(|set| {
            let filter: Vec<(&str, &str)> =
                set.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            histogram(&metrics, name::COMMIT_DURATION, &filter).count
        })
        .sum();
    all.in_bucket(0.5, f64::INFINITY) + failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commit_path_names_its_coordinator_and_sees_it_move() {
    let kafka: &'static Kafka = Box::leak(Box::new(blocking(|| Kafka::start(&[])).await));
    let topic = unique_topic("cc-heartbeat-commit");
    let agent = TestAgent::start(config(&format!(
        "clusters:\n  - name: kafka\n    bootstrap_servers: '{}'\n    commit_probe: {{enabled: true}}\n\
         heartbeat: {{topic: {topic}, interval: 200ms, loss_timeout: 6s, message_timeout: 2s}}\n\
         checks: {{connectivity: {{interval: 1s, timeout: 500ms}}, metadata: {{interval: 1s}}, commit: {{interval: 3s, timeout: 2500ms}}, offsets: {{enabled: false}}, consumer_groups: {{enabled: false}}}}\n\
         export: {{otlp: {{enabled: false}}}}\n",
        kafka.bootstrap()
    )));
    agent
        .wait_round_trips(&[0, 1, 2], 3, Duration::from_secs(60))
        .await;
    let group = format!("cc-heartbeat-commit-{}", agent.identity.instance_id);

    // The coordinator, and its rack, as Kafka's Admin client describes the group.
    let (id, rack) = eventually(Duration::from_secs(30), "a coordinator named", || {
        coordinators(&agent).pop()
    })
    .await;
    let told = blocking({
        let group = group.clone();
        move || kafka.admin(&format!("coordinator {group}"))
    })
    .await;
    assert_eq!(id, told.trim(), "the coordinator Kafka names");
    let id: i32 = id.parse().unwrap();
    assert_eq!(rack, Some(Kafka::rack(id)), "its rack");

    // The offset committed is the heartbeat reader's position on partition 0: at most the
    // partition's end, and moving with it.
    let committed = |kafka: &'static Kafka, group: String, topic: String| {
        blocking(move || {
            let answer = kafka.admin(&format!("committed {group}"));
            let ends = kafka.admin(&format!("end-offsets {topic}"));
            let end: i64 = ends
                .split_whitespace()
                .find_map(|w| w.strip_prefix("0:"))
                .and_then(|e| e.parse().ok())
                .expect("partition 0's end");
            let offset: i64 = answer
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{topic}:0:")))
                .and_then(|o| o.parse().ok())
                .unwrap_or_else(|| panic!("a commit on {topic}/0: {answer}"));
            (offset, end)
        })
    };
    let (first, end) = committed(kafka, group.clone(), topic.clone()).await;
    assert!(first > 0 && first <= end, "committed {first}, end {end}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (later, _) = committed(kafka, group.clone(), topic.clone()).await;
    assert!(
        later > first,
        "the commits follow the reader: {first} then {later}"
    );
    let metrics = agent.metrics();
    for step in ["find_coordinator", "commit", "fetch"] {
        assert!(
            histogram(
                &metrics,
                name::COMMIT_DURATION,
                &[
                    ("kafka.commit.operation", step),
                    ("kafka.coordinator.id", &id.to_string())
                ]
            )
            .count
                >= 2,
            "{step} timed against coordinator {id}"
        );
    }
    assert_eq!(
        counter_if_any(&metrics, name::COMMIT_COORDINATOR_CHANGES, &[]),
        0
    );

    // `check` walks the same path once and names the coordinator and its rack, as Kafka does
    // for the check's own group.
    let checked = blocking({
        let bootstrap = kafka.bootstrap();
        let topic = topic.clone();
        move || {
            let config = support::process::config_file(&format!(
                "clusters: [{{name: kafka, bootstrap_servers: '{bootstrap}', commit_probe: {{enabled: true}}}}]\n\
                 heartbeat: {{topic: {topic}, message_timeout: 2s}}\nexport: {{otlp: {{enabled: false}}}}\n"
            ));
            let out = support::process::run_to_end(
                &["check", "--json", "--config", config.path().to_str().unwrap()],
                &[("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=commit-check")],
                Duration::from_secs(120),
            );
            let report: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
            let told = kafka.admin("coordinator cc-heartbeat-commit-commit-check");
            (report, told)
        }
    })
    .await;
    let (report, told) = checked;
    let commit = &report["clusters"][0]["commit"];
    assert_eq!(
        commit["group"], "cc-heartbeat-commit-commit-check",
        "{report}"
    );
    let coordinator = commit["coordinator"].as_i64().expect("a coordinator");
    assert_eq!(coordinator.to_string(), told.trim(), "{report}");
    assert_eq!(
        commit["rack"].as_str(),
        Some(Kafka::rack(i32::try_from(coordinator).unwrap()).as_str())
    );
    let steps: Vec<&str> = commit["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[0].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["find_coordinator", "commit", "fetch"], "{report}");
    assert_eq!(report["healthy"], true, "{report}");

    // The coordinator's broker stops (controlled shutdown): the group moves.
    let before = slow_or_failed(&agent);
    blocking(move || kafka.stop_node(id)).await;
    eventually(Duration::from_secs(60), "the coordinator move seen", || {
        let m = agent.try_metrics()?;
        (counter_if_any(&m, name::COMMIT_COORDINATOR_CHANGES, &[]) >= 1).then_some(())
    })
    .await;
    let moved_to = blocking({
        let group = group.clone();
        move || kafka.admin(&format!("coordinator {group}"))
    })
    .await;
    let moved_to: i32 = moved_to.trim().parse().unwrap();
    assert_ne!(moved_to, id);
    eventually(Duration::from_secs(20), "the new coordinator named", || {
        coordinators(&agent)
            .iter()
            .any(|(c, r)| *c == moved_to.to_string() && *r == Some(Kafka::rack(moved_to)))
            .then_some(())
    })
    .await;
    let after = slow_or_failed(&agent);
    assert!(
        after > before,
        "the move's cost is in the histogram: {before} slow or failed steps before, {after} after"
    );
    // Later rounds go to the new coordinator, and the move was counted once.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        counter(&agent.metrics(), name::COMMIT_COORDINATOR_CHANGES, &[]),
        1,
        "counted once"
    );

    // The stopped broker comes back, and the group's partition of __consumer_offsets is led
    // by it again while the coordinator of the moment stays up: that one answers
    // NOT_COORDINATOR, and the probe finds the group where it went.
    blocking(move || kafka.start_node(id)).await;
    let partition = group_partition(&group, 3);
    blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (_, _, replicas, isr) =
                kafka.describe_topic("__consumer_offsets")[partition as usize].clone();
            if isr.len() == replicas.len() {
                let mut order = vec![id];
                order.extend(replicas.iter().copied().filter(|r| *r != id));
                let order: Vec<String> = order.iter().map(ToString::to_string).collect();
                kafka.admin(&format!(
                    "reassign __consumer_offsets {partition} {}",
                    order.join(",")
                ));
                kafka.admin(&format!("elect-preferred __consumer_offsets {partition}"));
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "broker {id} back in sync"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await;
    let back = blocking({
        let group = group.clone();
        move || kafka.admin(&format!("coordinator {group}"))
    })
    .await;
    assert_eq!(back.trim(), id.to_string(), "Kafka moved the group back");
    eventually(Duration::from_secs(30), "the move back seen", || {
        let m = agent.try_metrics()?;
        (counter_if_any(&m, name::COMMIT_COORDINATOR_CHANGES, &[]) >= 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let instance = agent.identity.instance_id.clone();
    let (metrics, observations) = agent.stop().await;
    assert_eq!(
        counter(&metrics, name::COMMIT_COORDINATOR_CHANGES, &[]),
        2,
        "each move counted once"
    );
    // The heartbeat, against Kafka's own consumer reading every record.
    let witnessed = blocking(move || kafka.witness(&topic, &instance)).await;
    let ledger = Ledger::of(&observations);
    println!(
        "sent {}: acked {}, failed {}; received {}; lost {:?}; on the topic {}",
        ledger.sent(),
        ledger.acked.len(),
        ledger.failed.len(),
        ledger.received.len(),
        ledger.lost,
        witnessed.heartbeats.len()
    );
    ledger.assert_matches(&witnessed.heartbeats, 2);
    assert_eq!(counter_if_any(&metrics, name::MESSAGES_LOST, &[]), 0);
    assert_eq!(
        counter_if_any(&metrics, name::MESSAGES_DUPLICATED, &[]),
        witnessed.duplicates
    );
}
