#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! The agent's zone beside the brokers' racks: two agents given different zones (one by
//! `agent.zone`, one by `CC_HEARTBEAT_ZONE`) on the test's Apache Kafka, whose three brokers
//! sit in three racks. What they export over OTLP, decoded: each resource names its zone
//! (`cloud.availability_zone`), and the produce latency points carry `kafka.client.zone` and
//! the acking broker's `kafka.broker.rack`, so every zone x rack pair is there.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::metrics::v1::metric;
use support::kafka::Kafka;
use support::otlp::{OtlpReceiver, attr};
use support::process::AgentProcess;
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
