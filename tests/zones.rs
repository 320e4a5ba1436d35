#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! The agent's zone beside the brokers' racks: two agents given different zones (one by
//! `agent.zone`, one by `CC_HEARTBEAT_ZONE`) on the test's Apache Kafka, whose three brokers
//! sit in three racks. What they export over OTLP, decoded: each resource names its zone
//! (`cloud.availability_zone`), and the produce latency points carry `kafka.client.zone` and
//! the acking broker's `kafka.broker.rack`, so every zone x rack pair is there. And through a
//! real Prometheus: the dashboard's zone x rack panel, and the zone-pair alert firing for the
//! paths to the one rack whose broker answers late.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::metrics::v1::metric;
use support::kafka::Kafka;
use support::kafka_proxy::KafkaProxy;
use support::otlp::{OtlpReceiver, attr};
use support::process::AgentProcess;
use support::prometheus::{Prometheus, dashboard_queries, rules_without_delays};
use support::{free_port, unique_topic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_latency_can_be_grouped_by_client_zone_and_broker_rack() {
    let kafka = tokio::task::spawn_blocking(Kafka::shared).await.unwrap();
    let receiver = OtlpReceiver::start(0).await;
    let topic = unique_topic("zones");
    let config = |zone: &str| {
        format!(
            "{zone}clusters: [{{name: zones, bootstrap_servers: '{}'}}]\n\
             heartbeat: {{topic: {topic}, interval: 250ms}}\n\
             checks: {{offsets: {{enabled: false}}, consumer_groups: {{enabled: false}}}}\n\
             export: {{otlp: {{endpoint: '{}', interval: 1s}}}}\n\
             http: {{listen: '127.0.0.1:{}'}}\n",
            kafka.bootstrap(),
            receiver.endpoint(),
            free_port()
        )
    };
    let by_config = AgentProcess::start(&config("agent: {zone: zone-x}\n"), &[]);
    let by_env = AgentProcess::start(&config(""), &[("CC_HEARTBEAT_ZONE", "zone-y")]);

    let racks: BTreeSet<String> = ["zone-a", "zone-b", "zone-c"].map(String::from).into();
    let started = Instant::now();
    let pairs = loop {
        let mut pairs = BTreeSet::new();
        let mut resource_zones = BTreeSet::new();
        for request in receiver.requests() {
            for rm in &request.resource_metrics {
                let resource_zone = rm
                    .resource
                    .as_ref()
                    .and_then(|r| attr(&r.attributes, "cloud.availability_zone"));
                resource_zones.insert(resource_zone.clone());
                let Some(m) = rm
                    .scope_metrics
                    .iter()
                    .flat_map(|s| &s.metrics)
                    .find(|m| m.name == "kafka.heartbeat.produce.duration")
                else {
                    continue;
                };
                let Some(metric::Data::Histogram(h)) = &m.data else {
                    panic!("a histogram")
                };
                for p in &h.data_points {
                    let zone = attr(&p.attributes, "kafka.client.zone");
                    assert_eq!(zone, resource_zone, "the point's zone is its resource's");
                    pairs.insert((zone, attr(&p.attributes, "kafka.broker.rack")));
                }
            }
        }
        let complete = ["zone-x", "zone-y"].iter().all(|z| {
            racks
                .iter()
                .all(|r| pairs.contains(&(Some((*z).into()), Some(r.clone()))))
        });
        if complete {
            assert_eq!(
                resource_zones,
                [Some("zone-x".to_owned()), Some("zone-y".to_owned())].into(),
                "every resource names its agent's zone"
            );
            break pairs;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "zone x rack pairs so far: {pairs:?}\n{}\n{}",
            by_config.output(),
            by_env.output()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!("zone x rack: {pairs:?}");
}

/// The same two zones, through a real Prometheus scraping both agents' `/metrics` with the
/// shipped alert rules (their `for:` set to zero): the dashboard's zone x rack panel returns
/// every pair; then answers from one broker are held 200 ms on their way back (the test's proxy
/// in front of the brokers): exactly that broker's rack's paths slow down, from both zones, and
/// `KafkaZonePathSlow` fires for them and for no other path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_path_to_one_rack_shows_in_the_dashboard_and_fires_the_zone_pair_alert() {
    let kafka = tokio::task::spawn_blocking(Kafka::shared).await.unwrap();
    let topic = unique_topic("zone-pairs");
    let proxy = KafkaProxy::start(&kafka.bootstrap(), &topic, i32::MAX).await;
    let ports = [free_port(), free_port()];
    let config = |zone: &str, port: u16| {
        format!(
            "{zone}clusters: [{{name: zones, bootstrap_servers: '{}'}}]\n\
             heartbeat: {{topic: {topic}, interval: 200ms}}\n\
             checks: {{connectivity: {{interval: 1s, timeout: 900ms}}, offsets: {{enabled: false}}, consumer_groups: {{enabled: false}}, commit: {{interval: 30s}}}}\n\
             export: {{otlp: {{enabled: false}}}}\n\
             http: {{listen: '127.0.0.1:{port}', prometheus: true}}\n",
            proxy.bootstrap(),
        )
    };
    let mut by_config = AgentProcess::start(&config("agent: {zone: zone-x}\n", ports[0]), &[]);
    let mut by_env = AgentProcess::start(&config("", ports[1]), &[("CC_HEARTBEAT_ZONE", "zone-y")]);
    by_config
        .wait_ready(ports[0], Duration::from_secs(60))
        .await;
    by_env.wait_ready(ports[1], Duration::from_secs(60)).await;

    let dir = tempfile::tempdir().unwrap();
    let mut prometheus = Prometheus::start(
        &format!("127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1]),
        &rules_without_delays(dir.path()),
        false,
    );
    prometheus.ready().await;
    let (panel, query) = dashboard_queries()
        .into_iter()
        .find(|(_, q)| q.contains("kafka_client_zone") && q.contains("kafka_broker_rack"))
        .expect("the dashboard's zone x rack panel");
    let pairs = |result: &[serde_json::Value]| -> BTreeSet<(String, String)> {
        result
            .iter()
            .filter_map(|s| {
                Some((
                    s["metric"]["kafka_client_zone"].as_str()?.to_owned(),
                    s["metric"]["kafka_broker_rack"].as_str()?.to_owned(),
                ))
            })
            .collect()
    };
    let every: BTreeSet<(String, String)> = ["zone-x", "zone-y"]
        .iter()
        .flat_map(|z| ["zone-a", "zone-b", "zone-c"].map(|r| ((*z).to_owned(), r.to_owned())))
        .collect();
    let started = Instant::now();
    loop {
        let found = pairs(&prometheus.query(&query).await);
        if found == every {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{panel}: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        prometheus
            .firing()
            .await
            .iter()
            .all(|a| a != "KafkaZonePathSlow"),
        "no slow path while every path is fast"
    );

    // Broker 2's answers are held: produce to the partition it leads takes 200 ms more, from
    // both zones. (The broker probe connects to the addresses DescribeCluster gives, which the
    // proxy does not rewrite: its stages go round the proxy.)
    let slow_rack = Kafka::rack(2);
    proxy.delay_answers(kafka.ports(2).plaintext, Duration::from_millis(200));
    let started = Instant::now();
    let firing = loop {
        let alerts = prometheus
            .query(r#"ALERTS{alertname="KafkaZonePathSlow",alertstate="firing"}"#)
            .await;
        let firing = pairs(&alerts);
        if firing.len() >= 2 {
            break firing;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "KafkaZonePathSlow firing for {firing:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        firing,
        [("zone-x", &slow_rack), ("zone-y", &slow_rack)]
            .map(|(z, r)| (z.to_owned(), r.clone()))
            .into(),
        "the slow rack's paths, from both zones, and no other"
    );
    // In the panel, exactly that rack's paths are slow.
    let p99 = prometheus
        .query(&format!(
            "histogram_quantile(0.99, sum by (kafka_client_zone, kafka_broker_rack, le) (rate(kafka_heartbeat_produce_duration_seconds_bucket{{messaging_destination_name=\"{topic}\"}}[30s])))"
        ))
        .await;
    for series in &p99 {
        let rack = series["metric"]["kafka_broker_rack"].as_str().unwrap();
        let value: f64 = series["value"][1].as_str().unwrap().parse().unwrap();
        if rack == slow_rack {
            assert!(value >= 0.2, "{rack}: p99 {value}");
        } else {
            assert!(value < 0.1, "{rack}: p99 {value}");
        }
    }
    for agent in [by_config, by_env] {
        let (status, output) = agent.terminate(Duration::from_secs(15)).await;
        assert!(status.success(), "{output}");
    }
}
