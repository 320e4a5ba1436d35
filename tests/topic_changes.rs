#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! The heartbeat topic changing under a running agent, on librdkafka's mock cluster: leaders
//! moved on a schedule (produce samples name the broker that really led), and partitions
//! added (behind a proxy that hides them until told: neither the mock nor tansu can add
//! partitions), each checked against an independent witness that reads every record.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cc_heartbeat::probe::heartbeat::Observation;
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

/// Leaders move every 10 s for a minute while the metadata is read only every minute: the
/// broker on each produce sample is the one the producer sent to, so ≥ 95 % of samples name
/// the broker that led the partition then, every move is seen, and nothing is falsely lost,
/// duplicated or out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_samples_name_the_broker_that_led_when_leaders_move() {
    const PARTITIONS: i32 = 3;
    const MOVES: usize = 6;
    let mock = MockKafka::new(3);
    let topic = unique_topic("moving");
    mock.create_topic(&topic, PARTITIONS);
    let agent = TestAgent::start(mock_config(&mock.bootstrap(), &topic, "60s"));
    agent
        .wait_round_trips(&[0, 1, 2], 3, Duration::from_secs(30))
        .await;

    // (when, leader of each partition from then on)
    let mut leaders = vec![(
        Instant::now(),
        (0..PARTITIONS)
            .map(|p| mock.leader_of(p))
            .collect::<Vec<_>>(),
    )];
    for _ in 0..MOVES {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let next: Vec<i32> = leaders
            .last()
            .unwrap()
            .1
            .iter()
            .map(|l| l % 3 + 1)
            .collect();
        for (p, leader) in next.iter().enumerate() {
            mock.move_leader(&topic, p as i32, *leader);
        }
        leaders.push((Instant::now(), next));
    }
    tokio::time::sleep(Duration::from_secs(7)).await;
    let timed = agent.observations_at();
    let instance = agent.identity.instance_id.clone();
    let (metrics, observations) = agent.stop().await;

    let leader_at = |t: Instant, p: i32| {
        leaders
            .iter()
            .rev()
            .find(|(since, _)| *since <= t)
            .map(|(_, l)| l[p as usize])
    };
    let (mut right, mut samples) = (0, 0);
    let mut seen: Vec<Vec<i32>> = vec![Vec::new(); PARTITIONS as usize];
    for (at, o) in &timed {
        if let Observation::Acked {
            partition,
            leader: Some(leader),
            error: None,
            ..
        } = o
            && *at >= leaders[0].0
        {
            samples += 1;
            right += usize::from(leader_at(*at, *partition) == Some(*leader));
            let moves = &mut seen[*partition as usize];
            if moves.last() != Some(leader) {
                moves.push(*leader);
            }
        }
    }
    let share = right as f64 / samples as f64;
    println!(
        "{right} of {samples} produce samples named the leader of the moment ({:.1} %)",
        share * 100.0
    );
    assert!(share >= 0.95, "{right} of {samples}");
    for (p, moves) in seen.iter().enumerate() {
        assert_eq!(
            moves.len(),
            MOVES + 1,
            "partition {p}: every move seen: {moves:?}"
        );
    }

    let on_topic = heartbeats_on_topic(&mock.bootstrap(), &topic, &instance).await;
    let got: BTreeSet<(i32, u64)> = observations
        .iter()
        .filter_map(|o| match o {
            Observation::RoundTrip { partition, seq, .. } => Some((*partition, *seq)),
            _ => None,
        })
        .collect();
    let newest = |p: i32| on_topic.iter().filter(|h| h.0 == p).map(|h| h.1).max();
    let missed: Vec<_> = on_topic
        .difference(&got)
        .filter(|(p, seq)| Some(*seq) != newest(*p))
        .collect();
    assert!(
        missed.is_empty(),
        "on the topic but not consumed back: {missed:?}"
    );
    assert!(
        got.is_subset(&on_topic),
        "nothing consumed that is not on the topic"
    );
    for metric in [
        name::MESSAGES_LOST,
        name::MESSAGES_DUPLICATED,
        name::MESSAGES_OUT_OF_ORDER,
    ] {
        assert_eq!(counter(&metrics, metric, &[]), 0, "{metric}");
    }
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
