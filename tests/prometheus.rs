#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! The alert rules and the dashboard with Debian's Prometheus (promtool, and a real server),
//! on both routes the metrics take to it: scraping the agent binary's own /metrics endpoint,
//! and scraping a real OpenTelemetry Collector (the shipped config) the agent pushes OTLP to.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::collector::{Collector, shipped};
use support::groups::{commit, member, produce};
use support::process::{AgentProcess, http_get};
use support::prometheus::{Prometheus, dashboard_queries, promtool, repo, rules_without_delays};
use support::registry::{Behaviour, serve};
use support::tansu::Tansu;
use support::{MockKafka, free_port, unique_topic};

#[test]
fn alert_rules_are_valid_and_their_unit_tests_pass() {
    let rules = repo("deploy/prometheus/alerts.yaml");
    let (ok, out) = promtool(&["check", "rules", rules.to_str().unwrap()], None);
    assert!(ok, "{out}");
    let tests = repo("deploy/prometheus/alerts.test.yaml");
    let (ok, out) = promtool(&["test", "rules", tests.to_str().unwrap()], None);
    assert!(ok, "{out}");
    // Every alert has a unit test that expects it to fire.
    let rules_text = std::fs::read_to_string(&rules).unwrap();
    let tests_text = std::fs::read_to_string(&tests).unwrap();
    for line in rules_text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests_text.contains(&format!(
                "alertname: {line}\n        exp_alerts:\n          - exp_labels:"
            )),
            "alert {line} has no firing unit test"
        );
    }
}

/// How the agent's metrics reach Prometheus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// Prometheus scrapes the agent (`http.prometheus: true`).
    Direct,
    /// The agent pushes OTLP to a collector running the shipped config; Prometheus scrapes the
    /// collector's Prometheus exporter, honouring the labels the agents sent.
    Collector,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_agent_and_every_dashboard_query_and_alert_works() {
    dashboard_and_alerts(Route::Direct).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_collector_every_dashboard_query_and_alert_works() {
    dashboard_and_alerts(Route::Collector).await;
}

async fn exposition_text(url: &str) -> String {
    http_get(url).await.unwrap().text().await.unwrap()
}

async fn dashboard_and_alerts(route: Route) {
    // The collector's exporter forgets an agent's series a while after its last export
    // (`metric_expiration`): shortened here so that the absence alerts fire within the test.
    let collector = (route == Route::Collector).then(|| {
        Collector::start(
            &[shipped()],
            "exporters:\n  prometheus:\n    metric_expiration: 5s\n",
        )
    });
    let topic = unique_topic("prom");
    let prod = MockKafka::new(3);
    prod.create_topic(&topic, 3);
    let narrow = MockKafka::new(3);
    narrow.create_topic(&topic, 1); // brokers 2 and 3 lead no heartbeat partition
    // A tansu cluster with a consumer group two records behind, for the lag panels (the
    // mock cluster does not list groups). The member joins while the agent starts.
    let apps = Tansu::start();
    let orders = unique_topic("orders");
    let group = unique_topic("app");
    apps.create_topic(&orders, 1);
    produce(&apps.bootstrap(), &orders, 0, 5).await;
    let app = {
        let (bootstrap, group, orders) = (apps.bootstrap(), group.clone(), orders.clone());
        tokio::task::spawn_blocking(move || {
            let app = member(&bootstrap, &group, &orders, 1);
            commit(&app, &orders, &[3]);
            app
        })
    };
    // and a Schema Registry (a server in the registry's REST shape), for the registry panels.
    let (registry, _) = serve(Behaviour::Registry).await;
    let http_port = free_port();
    let export = match &collector {
        Some(c) => format!(
            "export: {{otlp: {{endpoint: 'http://127.0.0.1:{}', interval: 1s}}}}\n",
            c.otlp_grpc
        ),
        // Scraped directly, with a collector that is away: the agent's own export metrics
        // count the failures.
        None => format!(
            "export: {{otlp: {{endpoint: 'http://127.0.0.1:{}', interval: 1s}}}}\n",
            free_port()
        ),
    };
    let mut agent = AgentProcess::start(
        &format!(
            "clusters:\n\
             \x20 - {{name: prod, bootstrap_servers: '{}', librdkafka: {{fetch.wait.max.ms: '10'}}}}\n\
             \x20 - {{name: narrow, bootstrap_servers: '{}', librdkafka: {{fetch.wait.max.ms: '10'}}}}\n\
             \x20 - {{name: apps, bootstrap_servers: '{}', consumer_groups: {{include: ['^{group}$']}}, schema_registry: {{url: '{registry}', basic_auth: {{username: user, password: secret}}}}}}\n\
             heartbeat: {{topic: {topic}, interval: 250ms, loss_timeout: 2s, message_timeout: 1s}}\n\
             checks: {{connectivity: {{interval: 1s, timeout: 500ms}}, metadata: {{interval: 1s}}, offsets: {{interval: 1s}}, consumer_groups: {{interval: 1s}}, schema_registry: {{interval: 1s, timeout: 500ms}}}}\n\
             {export}\
             http: {{listen: '127.0.0.1:{http_port}', prometheus: true}}\n",
            prod.bootstrap(),
            narrow.bootstrap(),
            apps.bootstrap()
        ),
        // Its node and zone, as the Kubernetes manifests give them: the "by agent" panels
        // show them beside the agent (from target_info).
        &[
            ("OTEL_RESOURCE_ATTRIBUTES", "k8s.node.name=node-a"),
            ("CC_HEARTBEAT_ZONE", "zone-q"),
        ],
    );
    agent.wait_ready(http_port, Duration::from_secs(30)).await;
    // Through the collector, a per-node agent as the DaemonSet overlay runs it beside the
    // round-trip agent: it only produces, to a topic of its own. Every query and alert must
    // work with its series among the others.
    let node_agent = match &collector {
        Some(c) => {
            let node_topic = unique_topic("prom-nodes");
            prod.create_topic(&node_topic, 3);
            let node_port = free_port();
            let mut node = AgentProcess::start(
                &format!(
                    "clusters:\n  - {{name: prod, bootstrap_servers: '{}'}}\n\
                     heartbeat: {{topic: {node_topic}, interval: 250ms, message_timeout: 1s, read_back: false}}\n\
                     checks: {{connectivity: {{interval: 1s, timeout: 500ms}}, metadata: {{interval: 1s}}, offsets: {{enabled: false}}, consumer_groups: {{enabled: false}}}}\n\
                     export: {{otlp: {{endpoint: 'http://127.0.0.1:{}', interval: 1s}}}}\n\
                     http: {{listen: '127.0.0.1:{node_port}'}}\n",
                    prod.bootstrap(),
                    c.otlp_grpc
                ),
                &[("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=node-agent")],
            );
            node.wait_ready(node_port, Duration::from_secs(30)).await;
            Some(node)
        }
        None => None,
    };
    let scraped = match &collector {
        Some(c) => format!("127.0.0.1:{}", c.prometheus),
        None => format!("127.0.0.1:{http_port}"),
    };
    let metrics_url = format!("http://{scraped}/metrics");

    // The exposition itself is valid, and has the names (once the first exports are in).
    let mut exposition = String::new();
    for _ in 0..50 {
        exposition = exposition_text(&metrics_url).await;
        if exposition.contains("\nkafka_partition_current_offset{") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ok, out) = promtool(&["check", "metrics"], Some(&exposition));
    assert!(ok, "promtool check metrics: {out}");
    for name in [
        "kafka_heartbeat_produce_duration_seconds_bucket",
        "kafka_heartbeat_end_to_end_duration_seconds_bucket",
        "kafka_heartbeat_messages_sent_total",
        "kafka_heartbeat_messages_lost_total",
        "kafka_broker_connection_duration_seconds_bucket",
        "kafka_broker_connection_checks_total",
        "kafka_broker_up",
        "kafka_broker_controller",
        "kafka_cluster_brokers",
        "kafka_heartbeat_leader_brokers",
        "kafka_partition_current_offset",
        "kafka_partition_replicas_in_sync",
        "kafka_topic_partitions",
        "kafka_topic_partitions_offline",
        "kafka_cluster_up",
        "kafka_cluster_requests_total",
        "kafka_brokers",
        "cc_heartbeat_build_info",
    ] {
        assert!(
            exposition.contains(&format!("\n{name}{{")),
            "{name} exposed"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let mut prometheus = Prometheus::start(
        &scraped,
        &rules_without_delays(dir.path()),
        route == Route::Collector,
    );
    prometheus.ready().await;
    // Healthy: data arrives, and the only alert is the narrow cluster's coverage.
    let mut healthy = BTreeSet::new();
    for _ in 0..100 {
        healthy = prometheus.firing().await;
        let has_data = !prometheus
            .query("rate(kafka_heartbeat_messages_received_total[1m]) > 0")
            .await
            .is_empty();
        if has_data && healthy.contains("KafkaHeartbeatCoverageMissing") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        healthy,
        BTreeSet::from(["KafkaHeartbeatCoverageMissing".to_owned()]),
        "while healthy"
    );

    // Faults on prod: broker 1's consume path stalls past the loss timeout (lost heartbeats),
    // broker 2 goes down (unreachable, produce failures), broker 3 answers 300 ms late
    // (end-to-end latency over the 250 ms SLO).
    prod.delay_fetches(1, 20, Duration::from_secs(3));
    prod.broker_down(2);
    prod.round_trip_time(3, Duration::from_millis(300));
    prometheus
        .wait_firing(
            &[
                "KafkaHeartbeatsLost",
                "KafkaHeartbeatProduceFailing",
                "KafkaEndToEndLatencySLOBurnFast",
                "KafkaEndToEndLatencySLOBurnSlow",
                "KafkaBrokerUnreachable",
                "KafkaHeartbeatCoverageMissing",
            ],
            Duration::from_secs(45),
        )
        .await;
    let unreachable = prometheus
        .query(r#"ALERTS{alertname="KafkaBrokerUnreachable",alertstate="firing"}"#)
        .await;
    assert!(
        unreachable
            .iter()
            .all(|a| a["metric"]["kafka_broker_id"] == "2"
                && a["metric"]["kafka_cluster_name"] == "prod"),
        "only broker 2 of prod: {unreachable:?}"
    );
    // Partition 0 (broker 1's stalled consume path); and, when one was acked just before
    // broker 2 went down, a partition broker 2 leads: that heartbeat is on the topic but
    // cannot be read back while the broker is down, so it is lost as well.
    let lost = prometheus
        .query(r#"ALERTS{alertname="KafkaHeartbeatsLost",alertstate="firing"}"#)
        .await;
    let may_lose: Vec<String> = (0..3)
        .filter(|p| *p == 0 || prod.leader_of(*p) == 2)
        .map(|p| p.to_string())
        .collect();
    assert!(
        lost.iter()
            .any(|a| a["metric"]["messaging_destination_partition_id"] == "0")
            && lost.iter().all(|a| may_lose
                .iter()
                .any(|p| a["metric"]["messaging_destination_partition_id"] == p.as_str())),
        "{lost:?}, may lose {may_lose:?}"
    );

    // Every dashboard query returns data now (the group has joined and committed).
    let app = app.await.unwrap();
    let mut empty = Vec::new();
    // The group's first lag round and its scrape follow the commit within a few seconds.
    for _ in 0..40 {
        empty.clear();
        for (panel, expr) in dashboard_queries() {
            let result = prometheus.query(&expr).await;
            println!("{panel}: {} series", result.len());
            if result.is_empty() {
                empty.push(format!("{panel}: {expr}"));
            }
        }
        if empty.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        empty.is_empty(),
        "queries without data:\n{}",
        empty.join("\n")
    );
    if route == Route::Direct {
        // Scraped as OpenMetrics, the produce histogram's buckets carry exemplars: the sends
        // to broker 3 (300 ms) are over the 250 ms `slow.produce`, so their spans are kept.
        let exemplars = prometheus
            .exemplars(
                r#"kafka_heartbeat_produce_duration_seconds_bucket{kafka_cluster_name="prod"}"#,
            )
            .await;
        println!("{} produce exemplars stored", exemplars.len());
        assert!(
            exemplars.iter().any(|(trace, value)| trace.len() == 32
                && trace.chars().all(|c| c.is_ascii_hexdigit())
                && *value >= 0.25),
            "a slow send's exemplar with its trace id: {exemplars:?}"
        );
    }

    // The "by agent" panels name each agent's node and zone.
    for (panel, expr) in dashboard_queries()
        .into_iter()
        .filter(|(panel, _)| panel.ends_with("by agent"))
    {
        let result = prometheus.query(&expr).await;
        assert!(
            result
                .iter()
                .any(|s| s["metric"]["k8s_node_name"] == "node-a"
                    && s["metric"]["cloud_availability_zone"] == "zone-q"),
            "{panel}: {result:?}"
        );
    }
    // Names: none has the `_ratio` suffix a unit of `1` would bring, and every metric the
    // dashboard and the alert rules use is one the agent exports.
    let exposition = exposition_text(&metrics_url).await;
    let exported = exported_names(&exposition);
    let ratios: Vec<&String> = exported.iter().filter(|n| n.ends_with("_ratio")).collect();
    assert!(ratios.is_empty(), "names ending in _ratio: {ratios:?}");
    let dashboard = std::fs::read_to_string(repo("deploy/grafana/cc-heartbeat.json")).unwrap();
    let alerts = std::fs::read_to_string(repo("deploy/prometheus/alerts.yaml")).unwrap();
    let used = names_used(&dashboard)
        .into_iter()
        .chain(names_used(&alerts))
        .collect::<BTreeSet<String>>();
    assert!(
        used.len() > 10,
        "names found in the dashboard and alerts: {used:?}"
    );
    let unknown: Vec<&String> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "used by the dashboard or alerts but not exported: {unknown:?}"
    );
    drop(app);

    // The agents go away: both absence alerts fire once their series go stale.
    if let Some(node) = node_agent {
        let (status, _) = node.terminate(Duration::from_secs(15)).await;
        assert!(status.success());
    }
    let stopping = std::time::Instant::now();
    let (status, output) = agent.terminate(Duration::from_secs(15)).await;
    let took = stopping.elapsed();
    println!("with brokers faulted, the agent exited {took:?} after SIGTERM");
    assert!(status.success(), "{output}");
    assert!(
        took < Duration::from_secs(10),
        "exit within a few seconds, faults or not: {took:?}\n{output}"
    );
    prometheus
        .wait_firing(
            &["CcHeartbeatAgentAbsent", "CcHeartbeatAgentStopped"],
            Duration::from_secs(30),
        )
        .await;
}

/// The metric names of an exposition (every sample line's name).
fn exported_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The agent's metric names (`kafka_…`, `schema_registry_…`, `cc_heartbeat_…`) a text uses.
fn names_used(text: &str) -> BTreeSet<String> {
    let pattern =
        regex::Regex::new(r"\b(?:kafka|schema_registry|cc_heartbeat)_[a-z0-9_]+").unwrap();
    pattern
        .find_iter(text)
        .map(|m| m.as_str().to_owned())
        // Label names share the prefixes (kafka_cluster_name, kafka_broker_id, …).
        .filter(|n| !LABELS.contains(&n.as_str()))
        .collect()
}

/// Label names that look like metric names.
const LABELS: [&str; 12] = [
    "kafka_request",
    "kafka_commit_operation",
    "kafka_coordinator_id",
    "kafka_client_zone",
    "kafka_error_code",
    "kafka_cluster_name",
    "kafka_cluster_id",
    "kafka_broker_id",
    "kafka_broker_rack",
    "kafka_connection_stage",
    "schema_registry_name",
    "schema_registry_stage",
];
