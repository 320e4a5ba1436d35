#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! Broker incidents on Apache Kafka, each test on a 3-node KRaft cluster of its own: a broker
//! killed (SIGKILL) and restarted, a broker stopped cleanly and started again, and a broker
//! frozen (SIGSTOP) past the send timeout. Kafka's own Java consumer reading every record is
//! the witness; the agent runs in this process, so a crash inside librdkafka fails the test.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cc_heartbeat::error::ErrorKind;
use cc_heartbeat::telemetry::instruments::name;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use support::kafka::{Kafka, Witnessed};
use support::ledger::Ledger;
use support::metrics::{counter, counter_if_any, gauge_one};
use support::otlp::{OtlpReceiver, attr};
use support::{TestAgent, config, eventually, unique_topic};

const IN_FLIGHT_AT_STOP: u64 = 2;

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// An agent with every probe on a short interval; the offsets check watches the heartbeat topic.
/// Nothing is exported unless `spans_to` is given: then spans go there over OTLP, only those
/// the agent keeps because something went wrong (healthy ones are not sampled).
fn agent_config(
    kafka: &Kafka,
    topic: &str,
    heartbeat: &str,
    spans_to: Option<&OtlpReceiver>,
) -> cc_heartbeat::config::Config {
    let export = spans_to.map_or("{otlp: {enabled: false}}".to_owned(), |receiver| {
        format!(
            "{{otlp: {{endpoint: '{}', interval: 1s}}, traces: {{sample_ratio: 0}}, logs: {{enabled: false}}}}",
            receiver.endpoint()
        )
    });
    config(&format!(
        "clusters:\n  - name: kafka\n    bootstrap_servers: '{}'\n    topics: {{include: ['^{topic}$']}}\n\
         heartbeat: {{topic: {topic}, interval: 200ms, loss_timeout: 6s{heartbeat}}}\n\
         checks: {{connectivity: {{interval: 1s, timeout: 500ms}}, metadata: {{interval: 1s}}, offsets: {{interval: 1s}}, consumer_groups: {{enabled: false}}}}\n\
         export: {export}\n",
        kafka.bootstrap()
    ))
}

/// The spans `receiver` got, by name.
fn spans_named(receiver: &OtlpReceiver, name: &str) -> Vec<Span> {
    receiver
        .spans()
        .into_iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == name)
        .collect()
}

fn is_error(span: &Span) -> bool {
    span.status.clone().unwrap_or_default().code == StatusCode::Error as i32
}

fn broker_up(agent: &TestAgent, id: i32) -> Option<i64> {
    let id = id.to_string();
    agent
        .try_metrics()
        .and_then(|m| gauge_one(&m, name::BROKER_UP, &[("kafka.broker.id", &id)]))
}

/// In-sync replicas of each partition of `topic`, as the agent's offsets check reports them.
fn in_sync(agent: &TestAgent, topic: &str) -> Vec<Option<i64>> {
    let Some(metrics) = agent.try_metrics() else {
        return vec![None; 3];
    };
    (0..3)
        .map(|p| {
            let p = p.to_string();
            gauge_one(
                &metrics,
                name::PARTITION_REPLICAS_IN_SYNC,
                &[("topic", topic), ("partition", &p)],
            )
        })
        .collect()
}

/// Waits for `what` of the agent's metrics, printing how long it took.
async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let since = Instant::now();
    eventually(timeout, what, || check().then_some(())).await;
    let took = since.elapsed();
    println!("{what}: after {took:?}");
    took
}

async fn witness_and_check(
    kafka: &'static Kafka,
    topic: &str,
    agent: TestAgent,
) -> (Ledger, BTreeSet<(i32, u64)>) {
    let instance = agent.identity.instance_id.clone();
    let (metrics, observations) = agent.stop().await;
    let topic = topic.to_owned();
    let Witnessed {
        heartbeats: on_topic,
        duplicates,
        ..
    } = blocking(move || kafka.witness(&topic, &instance)).await;
    let ledger = Ledger::of(&observations);
    println!(
        "sent {}: acked {}, failed {} ({} written after all); received {}",
        ledger.sent(),
        ledger.acked.len(),
        ledger.failed.len(),
        ledger.written_after_all(&on_topic).len(),
        ledger.received.len()
    );
    ledger.assert_matches(&on_topic, IN_FLIGHT_AT_STOP);
    assert_eq!(counter(&metrics, name::MESSAGES_LOST, &[]), 0);
    assert_eq!(
        counter(&metrics, name::MESSAGES_DUPLICATED, &[]),
        duplicates,
        "duplicated counts the copies on the topic"
    );
    // Every failed send that was written after all is counted ambiguous once the agent reads
    // it back; the newest of a partition may still be on its way back when the agent stops,
    // and one that becomes readable only after the outage (appended while the in-sync
    // replicas were too few) may be older than the agent's bookkeeping window by then: it is
    // skipped as stale instead (under CI's load the outage can outlast the window).
    let written = ledger.written_after_all(&on_topic);
    let newest: std::collections::BTreeMap<i32, u64> = ledger
        .acked
        .iter()
        .chain(ledger.failed.keys())
        .fold(Default::default(), |mut m, (p, seq)| {
            let e = m.entry(*p).or_insert(0);
            *e = (*e).max(*seq);
            m
        });
    let settled = written
        .iter()
        .filter(|(p, seq)| seq + IN_FLIGHT_AT_STOP <= newest[p])
        .count() as u64;
    let ambiguous = counter_if_any(&metrics, name::MESSAGES_AMBIGUOUS, &[]);
    let stale = counter_if_any(
        &metrics,
        name::MESSAGES_SKIPPED,
        &[("cc_heartbeat.skip.reason", "stale")],
    );
    assert!(
        ambiguous <= written.len() as u64 && ambiguous + stale >= settled,
        "every failed send that was written after all is counted ambiguous (or skipped as stale): {ambiguous} counted, {stale} stale, {} written ({settled} before the last in flight)",
        written.len()
    );
    (ledger, on_topic)
}

/// A broker killed at once: the broker probe reports it down within seconds, the controller
/// moves its leaderships and heartbeats go on on every partition, the offsets check shows the
/// heartbeat topic under-replicated; after the restart the broker is up and in sync again.
/// Every heartbeat is accounted against the witness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_is_reported_and_everything_recovers_after_its_restart() {
    let kafka: &'static Kafka = Box::leak(Box::new(blocking(|| Kafka::start(&[])).await));
    let topic = unique_topic("cc-heartbeat-killed");
    let receiver = OtlpReceiver::start(0).await;
    let agent = TestAgent::start(agent_config(
        kafka,
        &topic,
        ", message_timeout: 2s",
        Some(&receiver),
    ));
    agent
        .wait_round_trips(&[0, 1, 2], 3, Duration::from_secs(60))
        .await;
    wait_for("every replica in sync", Duration::from_secs(20), || {
        in_sync(&agent, &topic) == vec![Some(3); 3]
    })
    .await;
    assert_eq!(broker_up(&agent, 2), Some(1));

    blocking(|| kafka.kill_node(2)).await;
    let down = wait_for("broker 2 reported down", Duration::from_secs(10), || {
        broker_up(&agent, 2) == Some(0)
    })
    .await;
    assert!(
        down <= Duration::from_secs(3),
        "within a probe interval and its timeout"
    );
    // Each failed round of broker 2 is a trace naming its address, the stage that failed and
    // why, with the failed stage as the last child span; once it is dead, that is TCP refused.
    let port = kafka.ports(2).plaintext.to_string();
    let failed_rounds = || -> Vec<Span> {
        spans_named(&receiver, "probe broker")
            .into_iter()
            .filter(|s| attr(&s.attributes, "kafka.broker.id").as_deref() == Some("2"))
            .collect()
    };
    eventually(
        Duration::from_secs(30),
        "broker 2's refused probe round exported",
        || {
            failed_rounds()
                .iter()
                .any(|s| attr(&s.attributes, "kafka.connection.stage").as_deref() == Some("tcp"))
                .then_some(())
        },
    )
    .await;
    let spans = receiver.spans();
    for round in failed_rounds() {
        let a = |k: &str| attr(&round.attributes, k);
        assert!(is_error(&round), "{round:?}");
        assert_eq!(a("cc_heartbeat.probe.outcome").as_deref(), Some("down"));
        assert_eq!(a("server.port"), Some(port.clone()), "{round:?}");
        assert_eq!(a("network.peer.address").as_deref(), Some("127.0.0.1"));
        assert_eq!(a("network.peer.port"), Some(port.clone()));
        assert_eq!(a("kafka.broker.rack"), Some(Kafka::rack(2)));
        let stage = a("kafka.connection.stage").expect("the failed stage");
        if stage == "tcp" {
            assert_eq!(a("error.type").as_deref(), Some("connection_refused"));
        }
        let mut children: Vec<&Span> = spans
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.trace_id == round.trace_id && s.parent_span_id == round.span_id)
            .collect();
        children.sort_by_key(|s| s.start_time_unix_nano);
        let last = children.last().expect("stage spans");
        assert_eq!(last.name, stage, "the failed stage is the last child");
        assert!(is_error(last));
        assert_eq!(children[0].name, "dns");
    }
    // Broker 1 and 3 stay healthy: none of their rounds is kept at a ratio of 0.
    assert!(
        spans_named(&receiver, "probe broker").iter().all(|s| attr(
            &s.attributes,
            "kafka.broker.id"
        )
        .as_deref()
            == Some("2")),
        "only failed rounds are kept"
    );
    wait_for(
        "the topic under-replicated",
        Duration::from_secs(30),
        || in_sync(&agent, &topic) == vec![Some(2); 3],
    )
    .await;
    let before = agent.observations().len();
    wait_for(
        "heartbeats on every partition without broker 2",
        Duration::from_secs(30),
        || {
            let recent = &agent.observations()[before..];
            (0..3).all(|p| support::round_trips(recent, p).len() >= 3)
        },
    )
    .await;

    blocking(|| kafka.start_node(2)).await;
    wait_for(
        "broker 2 reported up again",
        Duration::from_secs(60),
        || broker_up(&agent, 2) == Some(1),
    )
    .await;
    wait_for(
        "every replica in sync again",
        Duration::from_secs(60),
        || in_sync(&agent, &topic) == vec![Some(3); 3],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Broker 2 kept its rack through the outage: none of its series, from before, during or
    // after it, lacks the rack (the broker was out of the metadata while fenced).
    let m = agent.metrics();
    for metric in [name::BROKER_CONNECTION_CHECKS, name::PRODUCE_DURATION] {
        let sets: Vec<_> = support::metrics::attribute_sets(&m, metric)
            .into_iter()
            .filter(|set| set.iter().any(|(k, v)| k == "kafka.broker.id" && v == "2"))
            .collect();
        assert!(!sets.is_empty(), "{metric}: no series of broker 2");
        for set in sets {
            assert!(
                set.iter()
                    .any(|(k, v)| k == "kafka.broker.rack" && v == "zone-b"),
                "{metric}: {set:?}"
            );
        }
    }
    let (ledger, _) = witness_and_check(kafka, &topic, agent).await;
    // Sends that failed while the leaders moved failed for a reason, said as one.
    for (h, kind) in &ledger.failed {
        assert!(
            matches!(
                kind,
                ErrorKind::Timeout
                    | ErrorKind::Transport
                    | ErrorKind::ConnectionRefused
                    | ErrorKind::BrokerError
            ),
            "{h:?} failed with {kind:?}"
        );
    }
}

/// A broker stopped cleanly (SIGTERM: a controlled shutdown moves its leaderships away first)
/// and started again: heartbeats go on throughout and every one is accounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleanly_stopped_broker_hands_over_and_the_heartbeats_stay_exact() {
    let kafka: &'static Kafka = Box::leak(Box::new(blocking(|| Kafka::start(&[])).await));
    let topic = unique_topic("cc-heartbeat-stopped");
    let agent = TestAgent::start(agent_config(kafka, &topic, ", message_timeout: 2s", None));
    agent
        .wait_round_trips(&[0, 1, 2], 3, Duration::from_secs(60))
        .await;
    blocking(|| kafka.stop_node(3)).await;
    let before = agent.observations().len();
    wait_for(
        "heartbeats on every partition without broker 3",
        Duration::from_secs(30),
        || {
            let recent = &agent.observations()[before..];
            (0..3).all(|p| support::round_trips(recent, p).len() >= 5)
        },
    )
    .await;
    blocking(|| kafka.start_node(3)).await;
    wait_for(
        "broker 3 reported up again",
        Duration::from_secs(60),
        || broker_up(&agent, 3) == Some(1),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    witness_and_check(kafka, &topic, agent).await;
}

/// A broker frozen longer than the send timeout, then let go: its partition's sends are
/// reported as timed out, but the broker takes them in when it thaws, so some are on the
/// topic after all (replication factor 1: nobody else could take its leadership). Every
/// heartbeat is accounted exactly once and those written after all are counted ambiguous.
/// (Frozen again, a few times at most, until some are: which ones reached the broker before
/// the freeze is the operating system's timing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_broker_accounts_every_heartbeat_once_and_names_the_ambiguous_ones() {
    let kafka: &'static Kafka = Box::leak(Box::new(blocking(|| Kafka::start(&[])).await));
    let topic = unique_topic("cc-heartbeat-frozen");
    let receiver = OtlpReceiver::start(0).await;
    let agent = TestAgent::start(agent_config(
        kafka,
        &topic,
        ", message_timeout: 1s, replication_factor: 1",
        Some(&receiver),
    ));
    agent
        .wait_round_trips(&[0, 1, 2], 3, Duration::from_secs(60))
        .await;
    let leaders = blocking({
        let topic = topic.clone();
        move || kafka.leaders(&topic)
    })
    .await;
    // Freeze a broker that is not the active controller, for less than its session timeout
    // (3 s), so the controller does not fence it meanwhile.
    let controller = blocking(|| kafka.try_cluster().unwrap().0).await;
    let frozen = *leaders.iter().find(|l| **l != controller).unwrap();
    let partition = leaders.iter().position(|l| *l == frozen).unwrap() as i32;
    // Whether a timed-out send is taken in when the broker thaws depends on whether it had
    // reached the broker before the freeze: freeze again (at most 4 times) until the witness
    // finds one on the topic, so the claim below is tested every run.
    let instance = agent.identity.instance_id.clone();
    for attempt in 1..=4 {
        blocking(move || kafka.freeze_node(frozen)).await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        blocking(move || kafka.thaw_node(frozen)).await;
        // Past the loss timeout, so whatever was going to be lost is.
        tokio::time::sleep(Duration::from_secs(8)).await;
        let on_topic = blocking({
            let (topic, instance) = (topic.clone(), instance.clone());
            move || kafka.witness(&topic, &instance).heartbeats
        })
        .await;
        let written = Ledger::of(&agent.observations())
            .written_after_all(&on_topic)
            .len();
        println!("freeze {attempt}: {written} timed-out sends written after all");
        if written > 0 {
            break;
        }
    }
    // Their traces say so: a `send` span that failed (timed out) and, in the same trace, a
    // `receive` span whose outcome is ambiguous. Only what went wrong is kept.
    let traces = eventually(
        Duration::from_secs(30),
        "an ambiguous heartbeat's trace exported",
        || {
            let ambiguous: Vec<Span> = spans_named(&receiver, &format!("receive {topic}"))
                .into_iter()
                .filter(|s| {
                    attr(&s.attributes, "cc_heartbeat.heartbeat.outcome").as_deref()
                        == Some("ambiguous")
                })
                .collect();
            (!ambiguous.is_empty()).then_some(ambiguous)
        },
    )
    .await;
    let (ledger, on_topic) = witness_and_check(kafka, &topic, agent).await;
    let written = ledger.written_after_all(&on_topic);
    assert!(
        !written.is_empty(),
        "some sends reported as timed out were written after all"
    );
    let sends = spans_named(&receiver, &format!("send {topic}"));
    for receive in &traces {
        let a = |k: &str| attr(&receive.attributes, k);
        let (p, seq) = (
            a("messaging.destination.partition.id"),
            a("cc_heartbeat.heartbeat.sequence"),
        );
        let heartbeat = (
            p.as_deref().unwrap().parse::<i32>().unwrap(),
            seq.as_deref().unwrap().parse::<u64>().unwrap(),
        );
        assert!(
            written.contains(&heartbeat),
            "{heartbeat:?} is on the topic after a failed send"
        );
        let send = sends
            .iter()
            .find(|s| s.trace_id == receive.trace_id && s.span_id == receive.parent_span_id)
            .expect("the receive's parent is its send");
        assert!(is_error(send), "{send:?}");
        assert_eq!(
            attr(&send.attributes, "cc_heartbeat.heartbeat.outcome").as_deref(),
            Some("failed")
        );
        assert_eq!(
            attr(&send.attributes, "error.type").as_deref(),
            Some("timeout")
        );
        assert_eq!(
            attr(&send.attributes, "cc_heartbeat.heartbeat.sequence"),
            seq
        );
    }
    // Every failed send is kept, each with its error; no healthy one is.
    let failed_sends = sends
        .iter()
        .filter(|s| {
            attr(&s.attributes, "cc_heartbeat.heartbeat.outcome").as_deref() == Some("failed")
        })
        .count();
    assert_eq!(
        failed_sends,
        ledger.failed.len(),
        "one failed send span per failed send"
    );
    let failed: BTreeSet<i32> = ledger.failed.keys().map(|(p, _)| *p).collect();
    assert_eq!(
        failed,
        BTreeSet::from([partition]),
        "only the frozen broker's partition failed"
    );
    assert!(
        ledger.failed.values().all(|k| *k == ErrorKind::Timeout),
        "{:?}",
        ledger.failed
    );
}

/// A broker stopped while the heartbeat topic asks for every replica in sync
/// (`min.insync.replicas=3`): the brokers refuse the heartbeats (acks=all), and each refused
/// send carries Kafka's own reason, `NOT_ENOUGH_REPLICAS`, beside `error.type=broker_error`.
/// A topic with one replica per partition loses the stopped broker's partitions: the offsets
/// check counts them offline, and back online after the restart. Every heartbeat is accounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_replicas_and_leaderless_partitions_are_metrics() {
    let kafka: &'static Kafka = Box::leak(Box::new(blocking(|| Kafka::start(&[])).await));
    let topic = unique_topic("cc-heartbeat-isr");
    let single = unique_topic("single-replica");
    blocking({
        let (topic, single) = (topic.clone(), single.clone());
        move || {
            kafka.admin(&format!("create-topic {topic} 3 3 min.insync.replicas=3"));
            kafka.create_topic(&single, 6, 1);
        }
    })
    .await;
    let agent = TestAgent::start(config(&format!(
        "clusters:\n  - name: kafka\n    bootstrap_servers: '{}'\n    topics: {{include: ['^{topic}$', '^{single}$']}}\n\
         heartbeat: {{topic: {topic}, interval: 200ms, loss_timeout: 6s, message_timeout: 2s}}\n\
         checks: {{connectivity: {{interval: 1s, timeout: 500ms}}, metadata: {{interval: 1s}}, offsets: {{interval: 1s}}, consumer_groups: {{enabled: false}}}}\n\
         export: {{otlp: {{enabled: false}}}}\n",
        kafka.bootstrap()
    )));
    agent
        .wait_round_trips(&[0, 1, 2], 3, Duration::from_secs(60))
        .await;
    let offline = |agent: &TestAgent| {
        agent.try_metrics().and_then(|m| {
            gauge_one(
                &m,
                name::TOPIC_PARTITIONS_OFFLINE,
                &[("topic", single.as_str())],
            )
        })
    };
    wait_for("every partition led", Duration::from_secs(20), || {
        offline(&agent) == Some(0)
    })
    .await;
    let leaders = blocking({
        let single = single.clone();
        move || kafka.leaders(&single)
    })
    .await;
    let controller = blocking(|| kafka.try_cluster().unwrap().0).await;
    let victim = *leaders.iter().find(|l| **l != controller).unwrap();
    let led = leaders.iter().filter(|l| **l == victim).count() as i64;

    blocking(move || kafka.stop_node(victim)).await;
    wait_for(
        "the stopped broker's partitions offline",
        Duration::from_secs(30),
        || offline(&agent) == Some(led),
    )
    .await;
    let refused = |agent: &TestAgent| {
        agent.try_metrics().map_or(0, |m| {
            ["NOT_ENOUGH_REPLICAS", "NOT_ENOUGH_REPLICAS_AFTER_APPEND"]
                .into_iter()
                .map(|code| {
                    counter_if_any(
                        &m,
                        name::MESSAGES_SENT,
                        &[("error.type", "broker_error"), ("kafka.error.code", code)],
                    )
                })
                .sum::<u64>()
        })
    };
    wait_for(
        "heartbeats refused as NOT_ENOUGH_REPLICAS",
        Duration::from_secs(30),
        || refused(&agent) >= 3,
    )
    .await;

    blocking(move || kafka.start_node(victim)).await;
    wait_for("every partition led again", Duration::from_secs(60), || {
        offline(&agent) == Some(0)
    })
    .await;
    let before = agent.observations().len();
    wait_for(
        "heartbeats on every partition again",
        Duration::from_secs(60),
        || {
            let recent = &agent.observations()[before..];
            (0..3).all(|p| support::round_trips(recent, p).len() >= 3)
        },
    )
    .await;
    let (ledger, _) = witness_and_check(kafka, &topic, agent).await;
    assert!(
        ledger.failed.values().any(|k| *k == ErrorKind::BrokerError),
        "{:?}",
        ledger.failed
    );
}
