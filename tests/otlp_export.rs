#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! What the agent binary really sends over OTLP/gRPC, decoded by a receiver in the test:
//! the metric contract, the resource, and counts that match the topic, including across a
//! collector outage.

mod support;

use std::time::Duration;

use cc_heartbeat::config::DEFAULT_HISTOGRAM_BOUNDARIES;
use cc_heartbeat::telemetry::instruments::name;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, metric};
use support::otlp::{OtlpReceiver, attr, counter_value, find, matches_filter};
use support::process::{AgentProcess, own_messages_on_topic};
use support::tansu::Tansu;
use support::{eventually, free_port, unique_topic};

const PARTITIONS: i32 = 3;

fn agent_config(tansu: &Tansu, topic: &str, endpoint: &str, http_port: u16) -> String {
    format!(
        "clusters:\n  - name: contract\n    bootstrap_servers: '{}'\n\
         heartbeat: {{topic: {topic}, interval: 200ms, loss_timeout: 5s, message_timeout: 2s, partitions: {PARTITIONS}}}\n\
         checks: {{metadata: {{interval: 2s}}}}\n\
         export:\n  otlp: {{endpoint: '{endpoint}', interval: 1s, timeout: 800ms}}\n\
         http: {{listen: '127.0.0.1:{http_port}'}}\n",
        tansu.bootstrap()
    )
}

fn last(receiver: &OtlpReceiver) -> ExportMetricsServiceRequest {
    receiver.requests().pop().expect("at least one export")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exports_the_metric_contract_over_otlp_grpc() {
    let tansu = Tansu::start();
    let receiver = OtlpReceiver::start(0).await;
    let topic = unique_topic("contract");
    let http_port = free_port();
    let instance = "contract-test-instance";
    let mut agent = AgentProcess::start(
        &agent_config(&tansu, &topic, &receiver.endpoint(), http_port),
        &[
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                &format!("service.instance.id={instance},deployment.environment=test"),
            ),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-test-header=present"),
        ],
    );
    agent.wait_ready(http_port, Duration::from_secs(30)).await;
    eventually(Duration::from_secs(15), "three exports", || {
        (receiver.requests().len() >= 3).then_some(())
    })
    .await;
    let (status, output) = agent.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status:?}:\n{output}");
    assert!(output.contains("Final metric export done."), "{output}");

    let request = last(&receiver);
    // The resource.
    let resource = request.resource_metrics[0]
        .resource
        .as_ref()
        .expect("resource");
    assert_eq!(
        attr(&resource.attributes, "service.name").as_deref(),
        Some("cc-heartbeat")
    );
    assert_eq!(
        attr(&resource.attributes, "service.version").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        attr(&resource.attributes, "service.instance.id").as_deref(),
        Some(instance)
    );
    assert_eq!(
        attr(&resource.attributes, "deployment.environment").as_deref(),
        Some("test")
    );
    let headers = receiver.headers();
    assert!(
        headers
            .iter()
            .all(|h| h.get("x-test-header").is_some_and(|v| v == "present")),
        "OTEL_EXPORTER_OTLP_HEADERS sent with every export"
    );

    // Names, units, instrument kinds, attributes and boundaries, as the contract says.
    let cluster = [
        ("kafka.cluster.id", tansu.cluster_id.as_str()),
        ("messaging.kafka.cluster.id", tansu.cluster_id.as_str()),
        ("kafka.cluster.name", "contract"),
    ];
    let scope = request.resource_metrics[0].scope_metrics[0]
        .scope
        .as_ref()
        .expect("scope");
    assert_eq!(scope.name, "cc-heartbeat");
    assert_eq!(
        request.resource_metrics[0].scope_metrics[0].schema_url,
        cc_heartbeat::telemetry::instruments::SCHEMA_URL
    );
    for (metric_name, extra) in [
        (
            name::PRODUCE_DURATION,
            &[
                "messaging.destination.partition.id",
                "kafka.broker.id",
                "server.address",
                "server.port",
                "messaging.operation.name",
                "messaging.operation.type",
            ][..],
        ),
        (
            name::END_TO_END_DURATION,
            &["messaging.destination.partition.id"][..],
        ),
    ] {
        let m = find(&request, metric_name).unwrap_or_else(|| panic!("{metric_name} exported"));
        assert_eq!(m.unit, "s", "{metric_name} unit");
        let Some(metric::Data::Histogram(h)) = &m.data else {
            panic!("{metric_name} is a histogram")
        };
        assert_eq!(
            h.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        assert!(!h.data_points.is_empty());
        for p in &h.data_points {
            assert_eq!(
                p.explicit_bounds, DEFAULT_HISTOGRAM_BOUNDARIES,
                "{metric_name} boundaries"
            );
            assert!(
                matches_filter(&p.attributes, &cluster),
                "{metric_name}: {:?}",
                p.attributes
            );
            for key in extra {
                assert!(
                    attr(&p.attributes, key).is_some(),
                    "{metric_name} has {key}: {:?}",
                    p.attributes
                );
            }
        }
    }
    for metric_name in [
        name::MESSAGES_SENT,
        name::MESSAGES_RECEIVED,
        name::MESSAGES_LOST,
        name::MESSAGES_DUPLICATED,
        name::MESSAGES_OUT_OF_ORDER,
        name::MESSAGES_SKIPPED,
    ] {
        let m = find(&request, metric_name).unwrap_or_else(|| panic!("{metric_name} exported"));
        assert_eq!(m.unit, "{message}", "{metric_name} unit");
        let Some(metric::Data::Sum(sum)) = &m.data else {
            panic!("{metric_name} is a sum")
        };
        assert!(sum.is_monotonic, "{metric_name} is a counter");
        assert_eq!(
            sum.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        for p in &sum.data_points {
            assert!(
                matches_filter(&p.attributes, &cluster),
                "{metric_name}: {:?}",
                p.attributes
            );
            assert!(attr(&p.attributes, "messaging.destination.partition.id").is_some());
        }
    }
    for metric_name in [
        name::MESSAGES_LOST,
        name::MESSAGES_DUPLICATED,
        name::MESSAGES_OUT_OF_ORDER,
    ] {
        assert_eq!(
            counter_value(&request, metric_name, &[]),
            0,
            "{metric_name} is 0, and present"
        );
    }

    // Gauges counted in brokers: unit {broker} (a unit of 1 would make Prometheus names end
    // in _ratio); the controller is 1 on tansu's broker 111.
    for metric_name in [
        name::BROKER_UP,
        name::BROKER_CONTROLLER,
        name::CLUSTER_BROKERS,
        name::HEARTBEAT_LEADER_BROKERS,
    ] {
        let m = find(&request, metric_name).unwrap_or_else(|| panic!("{metric_name} exported"));
        assert_eq!(m.unit, "{broker}", "{metric_name} unit");
        let Some(metric::Data::Gauge(g)) = &m.data else {
            panic!("{metric_name} is a gauge")
        };
        assert!(!g.data_points.is_empty(), "{metric_name} has points");
    }
    let Some(metric::Data::Gauge(controller)) =
        &find(&request, name::BROKER_CONTROLLER).unwrap().data
    else {
        unreachable!()
    };
    let on_111: Vec<_> = controller
        .data_points
        .iter()
        .filter(|p| attr(&p.attributes, "kafka.broker.id").as_deref() == Some("111"))
        .map(|p| p.value)
        .collect();
    assert_eq!(
        on_111,
        [Some(
            opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(1)
        )],
        "controller on broker 111"
    );

    // Counts match what is on the topic: every heartbeat the agent counts as sent is there.
    let on_topic = own_messages_on_topic(&tansu.bootstrap(), &topic, PARTITIONS, instance).await;
    for p in 0..PARTITIONS {
        let part = p.to_string();
        let sent = counter_value(
            &request,
            name::MESSAGES_SENT,
            &[
                ("messaging.destination.partition.id", &part),
                ("error.type", "!"),
            ],
        );
        let received = counter_value(
            &request,
            name::MESSAGES_RECEIVED,
            &[("messaging.destination.partition.id", &part)],
        );
        let written = on_topic.get(&p).copied().unwrap_or(0);
        println!(
            "partition {p}: exported sent {sent}, received {received}; on the topic {written}"
        );
        assert!(sent >= 5, "partition {p} sent {sent}");
        assert_eq!(
            sent, written,
            "partition {p}: exported sent count equals heartbeats on the topic"
        );
        assert!(
            received <= sent && received + 2 >= sent,
            "partition {p}: received {received} of {sent}"
        );
        let Some(metric::Data::Histogram(h)) =
            &find(&request, name::PRODUCE_DURATION).unwrap().data
        else {
            unreachable!()
        };
        let timed: u64 = h
            .data_points
            .iter()
            .filter(|d| {
                matches_filter(
                    &d.attributes,
                    &[
                        ("messaging.destination.partition.id", &part),
                        ("error.type", "!"),
                    ],
                )
            })
            .map(|d| d.count)
            .sum();
        assert_eq!(
            timed, sent,
            "partition {p}: one produce latency per sent heartbeat"
        );
    }
}

/// The collector is down when the agent starts and comes up later: the agent keeps measuring,
/// logs the failure once, logs the recovery, and the cumulative counts it then exports cover
/// the whole run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_down_at_start_then_up_gets_the_whole_runs_counts() {
    let tansu = Tansu::start();
    let topic = unique_topic("outage");
    let collector_port = free_port();
    let http_port = free_port();
    let instance = "outage-test-instance";
    let mut agent = AgentProcess::start(
        &agent_config(
            &tansu,
            &topic,
            &format!("http://127.0.0.1:{collector_port}"),
            http_port,
        ),
        &[(
            "OTEL_RESOURCE_ATTRIBUTES",
            &format!("service.instance.id={instance}"),
        )],
    );
    agent.wait_ready(http_port, Duration::from_secs(30)).await;
    // Several export intervals with nothing listening.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        agent.is_running(),
        "the agent survives the outage:\n{}",
        agent.output()
    );

    let receiver = OtlpReceiver::start(collector_port).await;
    eventually(
        Duration::from_secs(20),
        "exports after the collector came up",
        || (receiver.requests().len() >= 2).then_some(()),
    )
    .await;
    let first = receiver.requests().remove(0);
    let (status, output) = agent.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status:?}:\n{output}");

    // The first export after the outage already holds the heartbeats sent during it
    // (3 partitions, 5 per second, for more than 4 s).
    let sent_at_first = counter_value(&first, name::MESSAGES_SENT, &[("error.type", "!")]);
    assert!(
        sent_at_first >= 45,
        "cumulative count at the first export: {sent_at_first}"
    );
    let request = last(&receiver);
    let sent = counter_value(&request, name::MESSAGES_SENT, &[("error.type", "!")]);
    let on_topic: u64 = own_messages_on_topic(&tansu.bootstrap(), &topic, PARTITIONS, instance)
        .await
        .values()
        .sum();
    println!(
        "sent at first export after the outage {sent_at_first}; final {sent}; on the topic {on_topic}"
    );
    assert_eq!(
        sent, on_topic,
        "the final cumulative count covers the whole run"
    );

    let failures = output.matches("OTLP export failed;").count();
    assert_eq!(
        failures, 1,
        "the failure is logged once, not per export:\n{output}"
    );
    assert!(output.contains("OTLP export recovered"), "{output}");
}

/// With delta temporality, a collector away for two minutes loses nothing: the exports that
/// failed are held and delivered in order when it is back, so the deltas received add up to
/// the heartbeats sent; and every export, during quiet times too, carries the counters that
/// stayed at 0 (a series at 0, not a gap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_exports_held_through_a_collector_outage_add_up_to_what_was_sent() {
    const OUTAGE: Duration = Duration::from_secs(120);
    let tansu = Tansu::start();
    let topic = unique_topic("delta");
    let collector_port = free_port();
    let http_port = free_port();
    let instance = "delta-test-instance";
    let config = agent_config(
        &tansu,
        &topic,
        &format!("http://127.0.0.1:{collector_port}"),
        http_port,
    )
    .replace("timeout: 800ms}", "timeout: 800ms, temporality: delta}");
    let mut received = Vec::new();
    let receiver = OtlpReceiver::start(collector_port).await;
    let mut agent = AgentProcess::start(
        &config,
        &[(
            "OTEL_RESOURCE_ATTRIBUTES",
            &format!("service.instance.id={instance}"),
        )],
    );
    agent.wait_ready(http_port, Duration::from_secs(30)).await;
    eventually(Duration::from_secs(10), "a few exports", || {
        (receiver.requests().len() >= 3).then_some(())
    })
    .await;
    received.extend(receiver.requests());
    drop(receiver);
    tokio::time::sleep(OUTAGE).await;
    assert!(agent.is_running(), "{}", agent.output());

    let receiver = OtlpReceiver::start(collector_port).await;
    // The held exports (about 120, sent in order, 60 per export) come through first.
    eventually(
        Duration::from_secs(30),
        "the held exports delivered",
        || (receiver.requests().len() >= 125).then_some(()),
    )
    .await;
    let (status, output) = agent.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status:?}:\n{output}");
    received.extend(receiver.requests());

    for request in &received {
        let sum = find(request, name::MESSAGES_SENT).map(|m| match &m.data {
            Some(metric::Data::Sum(s)) => s.aggregation_temporality,
            other => panic!("{other:?}"),
        });
        assert_eq!(sum, Some(AggregationTemporality::Delta as i32));
        // Nothing is lost in this run, and the lost counter is in every export, at 0.
        let lost = find(request, name::MESSAGES_LOST).expect("lost counter in every export");
        let Some(metric::Data::Sum(lost)) = &lost.data else {
            panic!("lost is a sum")
        };
        assert_eq!(
            lost.data_points.len(),
            PARTITIONS as usize,
            "one point per partition"
        );
        assert_eq!(counter_value(request, name::MESSAGES_LOST, &[]), 0);
    }
    let sent: u64 = received
        .iter()
        .map(|r| counter_value(r, name::MESSAGES_SENT, &[("error.type", "!")]))
        .sum();
    let on_topic: u64 = own_messages_on_topic(&tansu.bootstrap(), &topic, PARTITIONS, instance)
        .await
        .values()
        .sum();
    println!(
        "{} exports received; deltas of sent add up to {sent}; on the topic {on_topic}",
        received.len()
    );
    assert_eq!(sent, on_topic, "the deltas add up to every heartbeat sent");
    assert_eq!(
        output.matches("OTLP export failed;").count(),
        1,
        "the failure is logged once:\n{output}"
    );
    assert!(
        output.contains("exports held during the outage are delivered in order, none dropped"),
        "{output}"
    );
}

/// Every data point of an export, with its metric's name.
fn points(
    request: &ExportMetricsServiceRequest,
) -> Vec<(
    String,
    Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
)> {
    let mut out = Vec::new();
    for m in support::otlp::metrics(request) {
        let attrs: Vec<_> = match &m.data {
            Some(metric::Data::Sum(s)) => {
                s.data_points.iter().map(|p| p.attributes.clone()).collect()
            }
            Some(metric::Data::Gauge(g)) => {
                g.data_points.iter().map(|p| p.attributes.clone()).collect()
            }
            Some(metric::Data::Histogram(h)) => {
                h.data_points.iter().map(|p| p.attributes.clone()).collect()
            }
            Some(metric::Data::ExponentialHistogram(h)) => {
                h.data_points.iter().map(|p| p.attributes.clone()).collect()
            }
            other => panic!("{}: unexpected data {other:?}", m.name),
        };
        out.extend(attrs.into_iter().map(|a| (m.name.clone(), a)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_point_carries_its_own_clusters_labels_and_nothing_leaks_across() {
    let tansu = Tansu::start();
    let mock = support::MockKafka::new(3);
    let topic = unique_topic("labels");
    mock.create_topic(&topic, 3);
    let receiver = OtlpReceiver::start(0).await;
    let http_port = free_port();
    let config = format!(
        "clusters:\n\
         \x20 - name: east\n    bootstrap_servers: '{}'\n    labels: {{env: prod, team: payments}}\n\
         \x20 - name: west\n    bootstrap_servers: '{}'\n    librdkafka: {{fetch.wait.max.ms: '10'}}\n    labels: {{env: staging}}\n\
         heartbeat: {{topic: {topic}, interval: 250ms, partitions: 3}}\n\
         checks: {{connectivity: {{interval: 1s, timeout: 500ms}}, metadata: {{interval: 2s}}}}\n\
         export:\n  otlp: {{endpoint: '{}', interval: 1s, timeout: 800ms}}\n\
         http: {{listen: '127.0.0.1:{http_port}'}}\n",
        tansu.bootstrap(),
        mock.bootstrap(),
        receiver.endpoint()
    );
    let mut agent = AgentProcess::start(&config, &[]);
    agent.wait_ready(http_port, Duration::from_secs(30)).await;
    eventually(
        Duration::from_secs(15),
        "round trips on both clusters",
        || {
            let request = receiver.requests().pop()?;
            let received = |cluster| {
                counter_value(
                    &request,
                    name::MESSAGES_RECEIVED,
                    &[("kafka.cluster.name", cluster)],
                )
            };
            (received("east") > 0 && received("west") > 0).then_some(())
        },
    )
    .await;
    let (status, output) = agent.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status:?}:\n{output}");

    let request = last(&receiver);
    let mut seen = std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    for (metric_name, attrs) in points(&request) {
        // The agent's own metrics belong to no cluster, and carry none of a cluster's labels.
        if metric_name.starts_with("cc_heartbeat.") && metric_name != name::SERIES_DROPPED {
            for key in ["kafka.cluster.name", "kafka.cluster.id", "env", "team"] {
                assert_eq!(attr(&attrs, key), None, "{metric_name}: {attrs:?}");
            }
            continue;
        }
        let cluster = attr(&attrs, "kafka.cluster.name")
            .unwrap_or_else(|| panic!("{metric_name}: no cluster name: {attrs:?}"));
        let (env, team) = match cluster.as_str() {
            "east" => ("prod", Some("payments")),
            "west" => ("staging", None),
            other => panic!("{metric_name}: unknown cluster {other}"),
        };
        assert_eq!(
            attr(&attrs, "env").as_deref(),
            Some(env),
            "{metric_name} on {cluster}: {attrs:?}"
        );
        assert_eq!(
            attr(&attrs, "team").as_deref(),
            team,
            "{metric_name} on {cluster}: {attrs:?}"
        );
        if metric_name.starts_with("kafka.heartbeat.") {
            assert_eq!(
                attr(&attrs, "messaging.system").as_deref(),
                Some("kafka"),
                "{metric_name}"
            );
            assert_eq!(
                attr(&attrs, "messaging.destination.name").as_deref(),
                Some(topic.as_str()),
                "{metric_name}"
            );
        } else {
            assert_eq!(
                attr(&attrs, "messaging.system"),
                None,
                "{metric_name}: {attrs:?}"
            );
        }
        seen.entry(cluster).or_default().insert(metric_name);
    }
    // Both clusters report the heartbeat, broker and cluster metrics, labelled.
    for cluster in ["east", "west"] {
        let names = seen
            .get(cluster)
            .unwrap_or_else(|| panic!("no points of {cluster}"));
        for expected in [
            name::END_TO_END_DURATION,
            name::BROKER_CONNECTION_DURATION,
            name::BROKER_UP,
            name::CLUSTER_BROKERS,
        ] {
            assert!(
                names.contains(expected),
                "{cluster} reports {expected}: {names:?}"
            );
        }
    }
}

/// `OTEL_SEMCONV_STABILITY_OPT_IN=messaging` puts the heartbeat's sends and receives under
/// the messaging conventions' names only, `messaging/dup` under both, with the same counts;
/// the acking broker's address, and the operation, on the points.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_messaging_conventions_names_come_with_the_opt_in() {
    let mock = support::MockKafka::new(1);
    let topic = unique_topic("semconv");
    mock.create_topic(&topic, 1);
    let broker_port = mock.bootstrap().rsplit_once(':').unwrap().1.to_owned();
    let mut runs = Vec::new();
    for opt_in in ["messaging", "http,messaging/dup"] {
        let receiver = OtlpReceiver::start(0).await;
        let http_port = free_port();
        let mut agent = AgentProcess::start(
            &format!(
                "clusters:\n  - name: semconv\n    bootstrap_servers: '{}'\n\
                 heartbeat: {{topic: {topic}, interval: 200ms}}\n\
                 export:\n  otlp: {{endpoint: '{}', interval: 1s}}\n\
                 http: {{listen: '127.0.0.1:{http_port}'}}\n",
                mock.bootstrap(),
                receiver.endpoint()
            ),
            &[("OTEL_SEMCONV_STABILITY_OPT_IN", opt_in)],
        );
        agent.wait_ready(http_port, Duration::from_secs(30)).await;
        runs.push((opt_in, receiver, agent));
    }
    for (opt_in, receiver, agent) in runs {
        eventually(Duration::from_secs(15), "consumed messages", || {
            let r = receiver.requests().pop()?;
            (counter_value(&r, "messaging.client.consumed.messages", &[]) >= 3).then_some(())
        })
        .await;
        let (status, _) = agent.terminate(Duration::from_secs(10)).await;
        assert!(status.success());
        let r = last(&receiver);
        let send = [
            ("messaging.operation.name", "send"),
            ("messaging.operation.type", "send"),
            ("messaging.system", "kafka"),
            ("messaging.destination.name", topic.as_str()),
        ];
        let sent = counter_value(&r, "messaging.client.sent.messages", &send);
        let consumed = counter_value(
            &r,
            "messaging.client.consumed.messages",
            &[
                ("messaging.operation.name", "poll"),
                ("messaging.operation.type", "receive"),
            ],
        );
        assert!(
            sent >= consumed && consumed >= 3,
            "{opt_in}: {sent} {consumed}"
        );
        let duration = find(&r, "messaging.client.operation.duration").expect("the duration");
        let Some(metric::Data::Histogram(h)) = &duration.data else {
            panic!("a histogram")
        };
        let acked = h
            .data_points
            .iter()
            .find(|p| attr(&p.attributes, "error.type").is_none())
            .expect("acked sends");
        assert!(
            matches_filter(&acked.attributes, &send),
            "{:?}",
            acked.attributes
        );
        assert_eq!(
            attr(&acked.attributes, "server.address").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            attr(&acked.attributes, "server.port"),
            Some(broker_port.clone())
        );
        assert_eq!(
            acked.explicit_bounds.first(),
            Some(&0.005),
            "the conventions' buckets"
        );
        let agent_names = find(&r, name::MESSAGES_SENT).is_some();
        match opt_in {
            "messaging" => {
                assert!(!agent_names, "the conventions' names only");
                assert!(find(&r, name::PRODUCE_DURATION).is_none());
                assert!(find(&r, name::MESSAGES_RECEIVED).is_none());
            }
            _ => {
                assert_eq!(
                    counter_value(&r, name::MESSAGES_SENT, &[]),
                    sent,
                    "the same count"
                );
                assert_eq!(counter_value(&r, name::MESSAGES_RECEIVED, &[]), consumed);
            }
        }
        // What has no conventions' name keeps the agent's.
        assert!(find(&r, name::END_TO_END_DURATION).is_some());
        assert!(find(&r, name::MESSAGES_LOST).is_some());
    }
}
