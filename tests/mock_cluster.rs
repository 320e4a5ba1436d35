#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! The heartbeat probe against librdkafka's mock cluster (three brokers, in-process): flow on
//! every partition, latency under injected round-trip time, and broker faults.

mod support;

use std::time::Duration;

use cc_heartbeat::error::ErrorKind;
use cc_heartbeat::probe::heartbeat::Observation;
use cc_heartbeat::telemetry::instruments::name;
use support::metrics::{attribute_sets, counter, exponential_median, histogram};
use support::{MockKafka, TestAgent, acks, config, eventually, median, round_trips, unique_topic};

const PARTITIONS: i32 = 3;

fn mock_config(mock: &MockKafka, topic: &str, extra: &str) -> cc_heartbeat::config::Config {
    config(&format!(
        "clusters:\n  - name: mock\n    bootstrap_servers: '{}'\n    librdkafka: {{fetch.wait.max.ms: '10'}}\n\
         heartbeat: {{topic: {topic}, interval: 200ms, loss_timeout: 3s, message_timeout: 1s}}\n\
         checks: {{metadata: {{interval: 1s}}}}\n{extra}",
        mock.bootstrap()
    ))
}

fn with_mock(partitions: i32) -> (MockKafka, String) {
    let mock = MockKafka::new(3);
    let topic = unique_topic("hb");
    mock.create_topic(&topic, partitions);
    (mock, topic)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_flow_on_every_partition_and_every_point_is_labelled() {
    let (mock, topic) = with_mock(6);
    let agent = TestAgent::start(mock_config(
        &mock,
        &topic,
        "export: {otlp: {enabled: false}}",
    ));
    let all: Vec<i32> = (0..6).collect();
    agent
        .wait_round_trips(&all, 5, Duration::from_secs(20))
        .await;
    eventually(Duration::from_secs(5), "readiness", || {
        agent.readiness.is_ready().then_some(())
    })
    .await;
    let (metrics, observations) = agent.stop().await;

    let cluster_id = mock.cluster_id();
    for p in all {
        let part = p.to_string();
        let leader = mock.leader_of(p).to_string();
        let ok = [
            ("messaging.destination.partition.id", part.as_str()),
            ("error.type", "!"),
        ];
        let sent = counter(&metrics, name::MESSAGES_SENT, &ok);
        let received = counter(&metrics, name::MESSAGES_RECEIVED, &ok[..1]);
        assert!(received >= 5, "partition {p}: received {received}");
        // At most the heartbeats in flight when the agent stopped are not back yet.
        assert!(
            sent >= received && sent - received <= 2,
            "partition {p}: sent {sent}, received {received}"
        );
        assert_eq!(counter(&metrics, name::MESSAGES_LOST, &ok[..1]), 0);
        assert_eq!(counter(&metrics, name::MESSAGES_DUPLICATED, &ok[..1]), 0);
        assert_eq!(counter(&metrics, name::MESSAGES_OUT_OF_ORDER, &ok[..1]), 0);
        // Every ack is in the produce histogram under the partition's leader.
        let produce = histogram(
            &metrics,
            name::PRODUCE_DURATION,
            &[ok[0], ("kafka.broker.id", leader.as_str())],
        );
        assert_eq!(
            produce.count, sent,
            "partition {p}: produce histogram vs sent"
        );
        let e2e = histogram(&metrics, name::END_TO_END_DURATION, &ok[..1]);
        assert_eq!(
            e2e.count, received,
            "partition {p}: e2e histogram vs received"
        );
        assert_eq!(acks(&observations, p).len() as u64, sent);
        assert_eq!(round_trips(&observations, p).len() as u64, received);
    }
    assert_eq!(
        counter(&metrics, name::MESSAGES_SKIPPED, &[]),
        0,
        "nothing foreign on a fresh topic"
    );
    for metric in [
        name::PRODUCE_DURATION,
        name::END_TO_END_DURATION,
        name::MESSAGES_SENT,
        name::MESSAGES_RECEIVED,
    ] {
        let sets = attribute_sets(&metrics, metric);
        assert!(!sets.is_empty(), "{metric} has points");
        for set in sets {
            assert!(
                set.contains(&("kafka.cluster.id".into(), cluster_id.clone())),
                "{metric}: {set:?}"
            );
            assert!(
                set.contains(&("kafka.cluster.name".into(), "mock".into())),
                "{metric}: {set:?}"
            );
        }
    }
}

/// Round-trip time injected on one leader shows in the produce latency of its partitions
/// only, at the median within [R, R + R/3], both as observed and as exported; the others stay
/// under R/3. The margin (50 ms at R = 150 ms) is for a loaded machine: the median of twenty
/// acks moves far less, and a partition slowed by R, or not, stays on its side of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_round_trip_time_shows_in_its_partitions_produce_latency() {
    const R: Duration = Duration::from_millis(150);
    let (mock, topic) = with_mock(PARTITIONS);
    let slow_broker = 2;
    let slow_partition = (0..PARTITIONS)
        .find(|p| mock.leader_of(*p) == slow_broker)
        .unwrap();
    mock.round_trip_time(slow_broker, R);
    // Exponential histograms give the exported median a resolution well under a millisecond.
    let agent = TestAgent::start(mock_config(
        &mock,
        &topic,
        "export: {otlp: {enabled: false, histogram: exponential}}",
    ));
    agent
        .wait_round_trips(
            &(0..PARTITIONS).collect::<Vec<_>>(),
            20,
            Duration::from_secs(30),
        )
        .await;
    let (metrics, observations) = agent.stop().await;

    for p in 0..PARTITIONS {
        let observed = median(acks(&observations, p));
        let part = p.to_string();
        let (exported, points) = exponential_median(
            &metrics,
            name::PRODUCE_DURATION,
            &[
                ("messaging.destination.partition.id", &part),
                ("error.type", "!"),
            ],
        );
        println!(
            "partition {p}: observed median {observed:?}, exported median <= {exported:.4} s over {points} acks"
        );
        let margin = R / 3;
        if p == slow_partition {
            assert!(
                observed >= R && observed <= R + margin,
                "partition {p}: {observed:?}"
            );
            assert!(
                (R.as_secs_f64()..=(R + margin).as_secs_f64() + 0.001).contains(&exported),
                "partition {p}: exported median {exported}"
            );
        } else {
            assert!(
                observed < margin,
                "partition {p} is not slowed: {observed:?}"
            );
            assert!(
                exported < margin.as_secs_f64(),
                "partition {p}: exported median {exported}"
            );
        }
    }
}

/// A broker taken down fails the produce to the partitions it leads (error.type=timeout),
/// the other partitions stay healthy, and after it returns heartbeats resume without false
/// duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_broker_fails_its_partitions_only_and_recovers_without_duplicates() {
    let (mock, topic) = with_mock(PARTITIONS);
    let down = 2;
    let victim = (0..PARTITIONS)
        .find(|p| mock.leader_of(*p) == down)
        .unwrap();
    let healthy: Vec<i32> = (0..PARTITIONS).filter(|p| *p != victim).collect();
    let agent = TestAgent::start(mock_config(
        &mock,
        &topic,
        "export: {otlp: {enabled: false}}",
    ));
    agent
        .wait_round_trips(
            &(0..PARTITIONS).collect::<Vec<_>>(),
            3,
            Duration::from_secs(20),
        )
        .await;

    mock.broker_down(down);
    let before_down = agent.observations().len();
    let failed_on = |obs: &[Observation], p: i32| {
        obs.iter()
            .filter(|o| matches!(o, Observation::Acked { partition, error: Some(_), .. } if *partition == p))
            .count()
    };
    eventually(
        Duration::from_secs(15),
        "three produce failures on the down broker's partition",
        || (failed_on(&agent.observations(), victim) >= 3).then_some(()),
    )
    .await;
    // While it is down, the other partitions keep making the round trip.
    let during: Vec<Observation> = agent.observations()[before_down..].to_vec();
    for p in &healthy {
        assert!(
            round_trips(&during, *p).len() >= 3,
            "partition {p} kept working while broker {down} was down"
        );
        assert_eq!(
            failed_on(&during, *p),
            0,
            "partition {p} had no produce failures"
        );
    }

    mock.broker_up(down);
    let after_up = agent.observations().len();
    eventually(Duration::from_secs(20), "round trips on the recovered partition", || {
        let obs = agent.observations();
        let fresh = obs[after_up..]
            .iter()
            .filter(|o| matches!(o, Observation::RoundTrip { partition, late: false, .. } if *partition == victim))
            .count();
        (fresh >= 3).then_some(())
    })
    .await;
    let (metrics, _) = agent.stop().await;

    let victim_s = victim.to_string();
    let failures = counter(
        &metrics,
        name::MESSAGES_SENT,
        &[
            ("messaging.destination.partition.id", &victim_s),
            ("error.type", ErrorKind::Timeout.as_str()),
        ],
    );
    assert!(
        failures >= 3,
        "timeouts counted for partition {victim}: {failures}"
    );
    let failed_latency = histogram(
        &metrics,
        name::PRODUCE_DURATION,
        &[
            ("messaging.destination.partition.id", &victim_s),
            ("error.type", "timeout"),
        ],
    );
    assert_eq!(
        failed_latency.count, failures,
        "failed produces are timed too"
    );
    for p in &healthy {
        let p = p.to_string();
        assert_eq!(
            counter(
                &metrics,
                name::MESSAGES_SENT,
                &[
                    ("messaging.destination.partition.id", &p),
                    ("error.type", "*")
                ]
            ),
            0,
            "no failures on partition {p}"
        );
        assert_eq!(
            counter(
                &metrics,
                name::MESSAGES_LOST,
                &[("messaging.destination.partition.id", &p)]
            ),
            0
        );
    }
    assert_eq!(
        counter(&metrics, name::MESSAGES_DUPLICATED, &[]),
        0,
        "no false duplicates after recovery"
    );
}

/// When a broker acks heartbeats but its consume path stalls past the loss timeout, those
/// heartbeats are counted lost, on its partitions only, and their late arrival is not
/// mistaken for duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_consume_path_counts_lost_heartbeats_on_that_brokers_partitions() {
    let (mock, topic) = with_mock(PARTITIONS);
    let stalled = 3;
    let victim = (0..PARTITIONS)
        .find(|p| mock.leader_of(*p) == stalled)
        .unwrap();
    let agent = TestAgent::start(mock_config(
        &mock,
        &topic,
        "export: {otlp: {enabled: false}}",
    ));
    agent
        .wait_round_trips(
            &(0..PARTITIONS).collect::<Vec<_>>(),
            3,
            Duration::from_secs(20),
        )
        .await;

    // Each of the broker's next Fetch responses takes 4 s: longer than the 3 s loss timeout.
    mock.delay_fetches(stalled, 4, Duration::from_secs(4));
    eventually(
        Duration::from_secs(20),
        "lost heartbeats on the stalled partition",
        || {
            let lost = agent
                .observations()
                .iter()
                .filter(
                    |o| matches!(o, Observation::Lost { partition, .. } if *partition == victim),
                )
                .count();
            (lost >= 3).then_some(())
        },
    )
    .await;
    // Once the delayed fetches are through, the stalled heartbeats arrive late.
    eventually(Duration::from_secs(30), "late arrivals", || {
        agent
            .observations()
            .iter()
            .any(|o| matches!(o, Observation::RoundTrip { partition, late: true, .. } if *partition == victim))
            .then_some(())
    })
    .await;
    let (metrics, _) = agent.stop().await;

    let lost = |p: i32| {
        counter(
            &metrics,
            name::MESSAGES_LOST,
            &[("messaging.destination.partition.id", &p.to_string())],
        )
    };
    assert!(
        lost(victim) >= 3,
        "lost on partition {victim}: {}",
        lost(victim)
    );
    for p in (0..PARTITIONS).filter(|p| *p != victim) {
        assert_eq!(lost(p), 0, "partition {p} lost nothing");
    }
    assert_eq!(
        counter(&metrics, name::MESSAGES_DUPLICATED, &[]),
        0,
        "late is not duplicate"
    );
    assert_eq!(
        counter(&metrics, name::MESSAGES_SENT, &[("error.type", "*")]),
        0,
        "produce kept working: the loss is on the consume path"
    );
}
