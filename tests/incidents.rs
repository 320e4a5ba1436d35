#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! Incidents on tansu that Apache Kafka does not stage, with an independent witness that reads
//! every record of the heartbeat topic as the truth: the broker restarted with its data gone
//! (topics gone, offsets back to 0), and the topic deleted under the agent. tansu answers a
//! fetch from a deleted topic in a way that crashed librdkafka 2.12 (see
//! docs/librdkafka-fetch-leader-crash.md): this is that crash's reproducer, and the agent runs
//! in this test process, so a crash fails the test. Kafka's own incidents (a broker killed,
//! stopped, frozen; the topic deleted) are in tests/kafka_incidents.rs and kafka_heartbeat.rs.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cc_heartbeat::probe::heartbeat::Observation;
use cc_heartbeat::telemetry::instruments::name;
use support::metrics::counter;
use support::tansu::Tansu;
use support::witness::{Heartbeat, heartbeats_on_topic};
use support::{TestAgent, config, eventually, unique_topic};

const PARTITIONS: i32 = 2;
/// The metadata interval of these tests: a missing topic must be back within about one.
const METADATA_INTERVAL: Duration = Duration::from_secs(1);
/// Heartbeats per partition that may still be on their way back when the agent stops: the
/// last one, and those a fetch waiting out its 500 ms had not returned yet.
const IN_FLIGHT_AT_STOP: u64 = 3;

fn agent_config(tansu: &Tansu, topic: &str, message_timeout: &str) -> cc_heartbeat::config::Config {
    config(&format!(
        "clusters:\n  - name: tansu\n    bootstrap_servers: '{}'\n\
         heartbeat: {{topic: {topic}, interval: 200ms, loss_timeout: 5s, message_timeout: {message_timeout}, partitions: {PARTITIONS}}}\n\
         checks: {{metadata: {{interval: 1s}}}}\n\
         export: {{otlp: {{enabled: false}}}}\n",
        tansu.bootstrap()
    ))
}

/// Every heartbeat the agent consumed back, by (partition, sequence number).
fn received(observations: &[Observation]) -> BTreeSet<Heartbeat> {
    observations
        .iter()
        .filter_map(|o| match o {
            Observation::RoundTrip { partition, seq, .. } => Some((*partition, *seq)),
            _ => None,
        })
        .collect()
}

fn round_trips(agent: &TestAgent) -> usize {
    received(&agent.observations()).len()
}

/// Waits until the topic exists again with every partition led; returns how long it took.
async fn wait_topic_back(tansu: &Tansu, topic: &str, since: Instant) -> Duration {
    let bootstrap = tansu.bootstrap();
    let topic = topic.to_owned();
    eventually(Duration::from_secs(20), "the topic back", || {
        let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .ok()?;
        let metadata = rdkafka::consumer::Consumer::fetch_metadata(
            &consumer,
            Some(&topic),
            Duration::from_secs(2),
        )
        .ok()?;
        let t = metadata.topics().first()?;
        (t.error().is_none()
            && t.partitions().len() == PARTITIONS as usize
            && t.partitions().iter().all(|p| p.leader() >= 0))
        .then(|| since.elapsed())
    })
    .await
}

/// What the witness saw on the topic just before an incident, and what the agent must have
/// consumed of it.
async fn witness_then(tansu: &Tansu, topic: &str, agent: &TestAgent) -> BTreeSet<Heartbeat> {
    let seen = heartbeats_on_topic(&tansu.bootstrap(), topic, &agent.identity.instance_id).await;
    // What was on the topic when the witness looked had been there a while (heartbeats come
    // back in milliseconds): the agent has it too before the incident strikes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    seen
}

/// Checks one of the two "the topic goes away" incidents, repeated five times.
async fn survive_five(incident: fn(&mut Tansu, &str)) {
    cc_heartbeat::telemetry::logging::init(
        "info,librdkafka=off,cc_heartbeat::probe::heartbeat=debug",
        cc_heartbeat::config::LogFormat::Text,
        None,
    );
    let mut tansu = Tansu::start();
    let topic = unique_topic("incident");
    let agent = TestAgent::start(agent_config(&tansu, &topic, "2s"));
    agent
        .wait_round_trips(&[0, 1], 3, Duration::from_secs(30))
        .await;
    let mut witnessed = BTreeSet::new();
    for round in 1..=5 {
        witnessed.extend(witness_then(&tansu, &topic, &agent).await);
        let before = round_trips(&agent);
        let struck = Instant::now();
        incident(&mut tansu, &topic);
        let back = wait_topic_back(&tansu, &topic, struck).await;
        println!("incident {round}: topic back after {back:?}");
        assert!(
            back <= METADATA_INTERVAL + Duration::from_secs(3),
            "incident {round}: the topic is back within about one metadata interval: {back:?}"
        );
        eventually(
            Duration::from_secs(20),
            "round trips on the new topic",
            || (round_trips(&agent) >= before + 2 * PARTITIONS as usize).then_some(()),
        )
        .await;
    }
    // Let the last incarnation run past the loss timeout, so a false loss would show.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let instance = agent.identity.instance_id.clone();
    let (metrics, observations) = agent.stop().await;
    let last = heartbeats_on_topic(&tansu.bootstrap(), &topic, &instance).await;
    let got = received(&observations);

    // Every heartbeat the witness saw on a topic before it went away was consumed back.
    let missed: Vec<&Heartbeat> = witnessed.difference(&got).collect();
    let about = |h: &Heartbeat| -> Vec<&Observation> {
        observations
            .iter()
            .filter(|o| match o {
                Observation::Acked { partition, seq, .. }
                | Observation::RoundTrip { partition, seq, .. }
                | Observation::Lost { partition, seq } => (*partition, *seq) == *h,
                _ => false,
            })
            .collect()
    };
    let explain = |hs: &[&Heartbeat]| -> String {
        hs.iter()
            .map(|h| format!("{h:?}: {:?}", about(h)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    assert!(
        missed.is_empty(),
        "on the topic but not consumed back: {}",
        explain(&missed)
    );
    // The last incarnation: the agent consumed exactly what is on it, but for the
    // heartbeats still in flight when it stopped: a fetch may wait out its full
    // `fetch.wait.max.ms` (500 ms) before it returns, so up to the last three per partition
    // at a 200 ms interval.
    let seqs = |p: i32| last.iter().filter(move |h| h.0 == p).map(|h| h.1);
    let unconsumed: Vec<&Heartbeat> = last
        .difference(&got)
        .filter(|(p, seq)| {
            seqs(*p)
                .max()
                .is_some_and(|max| *seq + IN_FLIGHT_AT_STOP <= max)
        })
        .collect();
    assert!(
        unconsumed.is_empty(),
        "on the last topic but not consumed back: {}",
        explain(&unconsumed)
    );
    let lowest = |p: i32| seqs(p).min();
    let phantom: Vec<&Heartbeat> = got
        .iter()
        .filter(|(p, seq)| lowest(*p).is_some_and(|low| *seq >= low))
        .filter(|h| !last.contains(h))
        .collect();
    assert!(
        phantom.is_empty(),
        "consumed back but not on the topic: {phantom:?}"
    );
    println!(
        "witness: {} heartbeats before the incidents, {} on the last topic; agent received {}",
        witnessed.len(),
        last.len(),
        got.len()
    );

    assert_eq!(
        counter(&metrics, name::MESSAGES_LOST, &[]),
        0,
        "no false loss"
    );
    assert_eq!(counter(&metrics, name::MESSAGES_DUPLICATED, &[]), 0);
    assert_eq!(
        counter(&metrics, name::MESSAGES_RECEIVED, &[]),
        got.len() as u64,
        "every receipt counted once"
    );
    assert_eq!(
        counter(&metrics, name::TOPIC_RECREATIONS, &[]),
        5,
        "each incident counted once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_topic_five_times_is_survived_and_counted_without_false_loss() {
    survive_five(|tansu, topic| tansu.delete_topic(topic)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_broker_empty_five_times_is_survived_without_false_loss() {
    survive_five(|tansu, _| tansu.restart(Duration::from_millis(500))).await;
}
