#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! The wall clock stepped under the agent (libfaketime, with the monotonic clock left alone,
//! as an NTP step or a resumed VM leaves it): an hour back, then forward again. Every OTLP
//! point the agent exports, decoded as the receiver gets it, starts no later than its time;
//! each step is logged once; the consumer group's lag in seconds reads 0 while the agent's
//! clock is behind the records (never negative) and the true age again within one probe
//! interval of the clock coming back; heartbeats keep flowing, none lost.

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use support::groups::{commit, member, produce};
use support::kafka::Kafka;
use support::otlp::{OtlpReceiver, counter_value, find, matches_filter};
use support::process::AgentProcess;
use support::{free_port, unique_topic};

/// libfaketime, as Debian installs it (scripts/install-test-tools).
fn libfaketime() -> String {
    let found = glob_first("/usr/lib", "faketime/libfaketimeMT.so.1");
    found.expect("libfaketime is installed (Debian's libfaketime; scripts/install-test-tools)")
}

fn glob_first(root: &str, tail: &str) -> Option<String> {
    std::fs::read_dir(root).ok()?.flatten().find_map(|e| {
        let path = e.path().join(tail);
        path.exists().then(|| path.to_string_lossy().into_owned())
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The lag in seconds of `group` on `topic` partition 0, as `request` carries it.
fn lag_seconds(request: &ExportMetricsServiceRequest, group: &str, topic: &str) -> Option<f64> {
    let metric = find(request, "kafka.consumer_group.lag.duration")?;
    let Some(metric::Data::Gauge(g)) = &metric.data else {
        return None;
    };
    g.data_points
        .iter()
        .find(|p| {
            matches_filter(
                &p.attributes,
                &[("group", group), ("topic", topic), ("partition", "0")],
            )
        })
        .and_then(|p| match p.value {
            Some(number_data_point::Value::AsDouble(v)) => Some(v),
            Some(number_data_point::Value::AsInt(v)) => Some(v as f64),
            None => None,
        })
}

/// Every (start, time) of every point in `request`.
fn point_times(request: &ExportMetricsServiceRequest) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    for rm in &request.resource_metrics {
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                let mut push = |s, t| out.push((m.name.clone(), s, t));
                match &m.data {
                    Some(metric::Data::Gauge(g)) => g
                        .data_points
                        .iter()
                        .for_each(|p| push(p.start_time_unix_nano, p.time_unix_nano)),
                    Some(metric::Data::Sum(s)) => s
                        .data_points
                        .iter()
                        .for_each(|p| push(p.start_time_unix_nano, p.time_unix_nano)),
                    Some(metric::Data::Histogram(h)) => h
                        .data_points
                        .iter()
                        .for_each(|p| push(p.start_time_unix_nano, p.time_unix_nano)),
                    Some(metric::Data::ExponentialHistogram(h)) => h
                        .data_points
                        .iter()
                        .for_each(|p| push(p.start_time_unix_nano, p.time_unix_nano)),
                    _ => {}
                }
            }
        }
    }
    out
}

/// Waits until `done` holds for the requests received so far; fails with the agent's output.
async fn until(
    receiver: &OtlpReceiver,
    agent: &AgentProcess,
    what: &str,
    limit: Duration,
    done: impl Fn(&[ExportMetricsServiceRequest]) -> bool,
) {
    let started = Instant::now();
    loop {
        if done(&receiver.requests()) {
            return;
        }
        assert!(started.elapsed() < limit, "{what}:\n{}", agent.output());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn steps_of_the_wall_clock(temporality: &str) {
    let faketime = libfaketime();
    let kafka = tokio::task::spawn_blocking(Kafka::shared).await.unwrap();
    let bootstrap = kafka.bootstrap();
    let topic = unique_topic("clock-orders");
    let group = unique_topic("clock-app");
    kafka.create_topic(&topic, 1, 3);
    produce(&bootstrap, &topic, 0, 5).await;
    let written_ms = now_ms();
    let app = member(&bootstrap, &group, &topic, 1);
    commit(&app, &topic, &[2]);

    let receiver = OtlpReceiver::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let offset_file = dir.path().join("faketime");
    std::fs::write(&offset_file, "+0\n").unwrap();
    let agent = AgentProcess::start(
        &format!(
            "clusters:\n  - name: clock\n    bootstrap_servers: '{bootstrap}'\n    consumer_groups: {{include: ['^{group}$']}}\n\
             heartbeat: {{topic: {}, interval: 500ms}}\n\
             checks: {{metadata: {{interval: 2s}}, consumer_groups: {{interval: 2s}}, offsets: {{enabled: false}}}}\n\
             export: {{otlp: {{endpoint: '{}', interval: 1s, temporality: {temporality}}}}}\n\
             http: {{listen: '127.0.0.1:{}'}}\n",
            unique_topic("clock-hb"),
            receiver.endpoint(),
            free_port()
        ),
        &[
            ("LD_PRELOAD", faketime.as_str()),
            ("FAKETIME_TIMESTAMP_FILE", offset_file.to_str().unwrap()),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            // libfaketime otherwise rewrites the deadline of every pthread_cond_timedwait as
            // if on the wall clock, and librdkafka's condition variables run on the
            // monotonic clock (patches/rdkafka-sys/0003): its waits would end at once.
            ("FAKETIME_FORCE_MONOTONIC_FIX", "0"),
        ],
    );
    // The true lag, by the test's clock: the first unread record's age.
    let true_lag = move || (now_ms() - written_ms) as f64 / 1000.0;
    until(
        &receiver,
        &agent,
        "the lag in seconds, by the true clock",
        Duration::from_secs(60),
        |rs| {
            rs.last()
                .and_then(|r| lag_seconds(r, &group, &topic))
                .is_some_and(|lag| lag > 0.0)
        },
    )
    .await;

    // An hour back.
    std::fs::write(&offset_file, "-1h\n").unwrap();
    let stepped_back = receiver.requests().len();
    until(
        &receiver,
        &agent,
        "exports an hour back, lag at 0",
        Duration::from_secs(30),
        |rs| {
            rs.len() > stepped_back + 3
                && rs[stepped_back + 3..]
                    .iter()
                    .any(|r| lag_seconds(r, &group, &topic) == Some(0.0))
        },
    )
    .await;
    // And back to the true time: lag in seconds true again within one probe interval (2 s)
    // and one export (1 s), with a second for the round itself.
    std::fs::write(&offset_file, "+0\n").unwrap();
    let restored_at = Instant::now();
    let restored = receiver.requests().len();
    until(
        &receiver,
        &agent,
        "the lag in seconds true again",
        Duration::from_secs(30),
        |rs| {
            rs.len() > restored
                && rs[restored..].iter().any(|r| {
                    lag_seconds(r, &group, &topic).is_some_and(|lag| (lag - true_lag()).abs() < 3.0)
                })
        },
    )
    .await;
    let recovered_in = restored_at.elapsed();
    let (_, log) = agent.terminate(Duration::from_secs(10)).await;
    println!(
        "{temporality}: the lag in seconds was true again {recovered_in:?} after the clock came back"
    );
    assert!(
        recovered_in < Duration::from_secs(4),
        "recovered in {recovered_in:?}, past one probe interval (2 s), an export (1 s) and a second"
    );

    let requests = receiver.requests();
    let mut before_start = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        for (name, start, time) in point_times(r) {
            if start != 0 && start > time {
                before_start.push(format!("request {i}: {name} start {start} > time {time}"));
            }
        }
    }
    assert!(before_start.is_empty(), "{temporality}: {before_start:#?}");
    // The lag never read below 0, and read 0 while the clock was behind.
    let lags: Vec<f64> = requests
        .iter()
        .filter_map(|r| lag_seconds(r, &group, &topic))
        .collect();
    assert!(lags.iter().all(|l| *l >= 0.0), "{lags:?}");
    let steps = log.matches("The wall clock stepped").count();
    assert_eq!(steps, 2, "{temporality}: each step said once:\n{log}");
    assert!(
        log.contains("direction=\"backwards\"") || log.contains("direction=backwards"),
        "{log}"
    );
    // Cumulative: the last request holds the totals; delta: every request its share.
    let total = |name: &str| match temporality {
        "delta" => requests
            .iter()
            .map(|r| counter_value(r, name, &[]))
            .sum::<u64>(),
        _ => counter_value(requests.last().unwrap(), name, &[]),
    };
    let lost = total("kafka.heartbeat.messages.lost");
    let received = total("kafka.heartbeat.messages.received");
    assert!(received > 10, "heartbeats flowed: {received}");
    assert_eq!(lost, 0, "{temporality}: no heartbeat lost to a clock step");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cumulative_points_follow_a_stepped_clock_without_preceding_their_start() {
    steps_of_the_wall_clock("cumulative").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_points_follow_a_stepped_clock_without_preceding_their_start() {
    steps_of_the_wall_clock("delta").await;
}
