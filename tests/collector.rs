#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! The shipped collector configs in a real OpenTelemetry Collector (built from the builder
//! manifest in tests/otelcol): its own `validate` on each file, on every backend block enabled,
//! on the Kubernetes merge, and with the backends' Kubernetes components; and the agent's counts through it across a collector restart,
//! with cumulative and with delta temporality, against a witness reading the topic.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use cc_heartbeat::telemetry::instruments::name;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric;
use support::collector::{Collector, repo, shipped, validate};
use support::otlp::{OtlpReceiver, counter_value, find};
use support::process::{AgentProcess, http_get, own_messages_on_topic};
use support::yaml::{document, uncommented};
use support::{MockKafka, eventually, free_port, unique_topic};

/// Values for the `${env:…}` references of the backend blocks, as a user would set them.
const BACKEND_ENV: [(&str, &str); 5] = [
    ("HONEYCOMB_API_KEY", "hc-key"),
    (
        "GRAFANA_CLOUD_OTLP_ENDPOINT",
        "https://otlp-gateway.example.net/otlp",
    ),
    ("GRAFANA_CLOUD_OTLP_AUTHORIZATION", "Basic Zm9vOmJhcg=="),
    ("DD_API_KEY", "dd-key"),
    ("DD_SITE", "datadoghq.eu"),
];

/// The shipped config with every backend block enabled but Datadog's, whose exporter the test
/// collector cannot include (tests/otelcol/builder.yaml says why; tests/deploy.rs checks its
/// block against the exporter's keys instead). JSON is YAML, so the edited document is
/// written as JSON.
fn every_backend_but_datadog(dir: &std::path::Path) -> PathBuf {
    let text = std::fs::read_to_string(shipped()).unwrap();
    let mut config = document(&uncommented(&text));
    let exporters = config["exporters"].as_object_mut().unwrap();
    assert!(exporters.remove("datadog").is_some(), "a Datadog block");
    assert!(exporters.len() >= 3, "other backends: {exporters:?}");
    let pipelines = config["service"]["pipelines"].as_object_mut().unwrap();
    pipelines.retain(|name, _| !name.ends_with("/datadog"));
    assert!(
        pipelines.len() >= 3,
        "a pipeline per backend: {pipelines:?}"
    );
    let path = dir.join("every-backend.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    path
}

#[test]
fn the_collector_validates_the_shipped_configs() {
    let dir = tempfile::tempdir().unwrap();
    let k8s = repo("deploy/kubernetes/collector/config/k8s.yaml");
    let every = every_backend_but_datadog(dir.path());
    // The Kubernetes components' fragments, a third --config after both files (Datadog's is
    // checked against the exporter's keys in tests/deploy.rs).
    let component = |name: &str| repo(&format!("deploy/kubernetes/components/{name}/{name}.yaml"));
    for (what, configs) in [
        ("otel-collector.yaml", vec![shipped()]),
        ("every backend block enabled", vec![every.clone()]),
        ("merged with k8s.yaml", vec![shipped(), k8s.clone()]),
        (
            "every backend, merged with k8s.yaml",
            vec![every, k8s.clone()],
        ),
        (
            "the Honeycomb component",
            vec![shipped(), k8s.clone(), component("honeycomb")],
        ),
        (
            "the Grafana Cloud component",
            vec![shipped(), k8s.clone(), component("grafana-cloud")],
        ),
        (
            "both components",
            vec![
                shipped(),
                k8s,
                component("honeycomb"),
                component("grafana-cloud"),
            ],
        ),
    ] {
        let paths: Vec<&std::path::Path> = configs.iter().map(PathBuf::as_path).collect();
        let (ok, out) = validate(&paths, &BACKEND_ENV);
        println!("{what}: {}", if ok { "valid" } else { &out });
        assert!(ok, "{what}: the collector refuses it:\n{out}");
    }

    // The check can fail: a misspelled key, an undefined processor, a component the build
    // does not have.
    for (overlay, expected) in [
        (
            "exporters:\n  prometheus:\n    add_metric_sufixes: false\n",
            "add_metric_sufixes",
        ),
        (
            "service:\n  pipelines:\n    metrics:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [prometheus]\n",
            "batch",
        ),
        (
            "exporters:\n  kafka: {}\nservice:\n  pipelines:\n    metrics/kafka:\n      receivers: [otlp]\n      exporters: [kafka]\n",
            "kafka",
        ),
    ] {
        let path = dir.path().join("broken.yaml");
        std::fs::write(&path, overlay).unwrap();
        let (ok, out) = validate(&[&shipped(), &path], &BACKEND_ENV);
        assert!(!ok, "{overlay} passed validate");
        assert!(out.contains(expected), "{expected:?} not named:\n{out}");
    }
}

/// The latest cumulative value of `kafka.heartbeat.messages.sent` (successful sends) in what
/// the receiver got: each series' last point, summed.
fn last_cumulative_sent(requests: &[ExportMetricsServiceRequest]) -> u64 {
    let mut latest = std::collections::BTreeMap::new();
    for request in requests {
        let Some(metric) = find(request, name::MESSAGES_SENT) else {
            continue;
        };
        let Some(metric::Data::Sum(sum)) = &metric.data else {
            panic!("sent is a sum");
        };
        for p in &sum.data_points {
            if p.attributes.iter().any(|kv| kv.key == "error.type") {
                continue;
            }
            let key = format!("{:?}", p.attributes);
            let value = match p.value {
                Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(
                    i,
                )) => i as u64,
                Some(
                    opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(d),
                ) => d as u64,
                None => 0,
            };
            latest.insert(key, value);
        }
    }
    latest.values().sum()
}

/// The collector's Prometheus exposition's `kafka_heartbeat_messages_sent_total` without
/// an error, summed.
async fn scraped_sent(collector: &Collector) -> f64 {
    let url = format!("http://127.0.0.1:{}/metrics", collector.prometheus);
    let text = http_get(&url).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("kafka_heartbeat_messages_sent_total{") && !l.contains("error_type")
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The agent exports through the collector (the shipped config, plus an OTLP exporter to the
/// test's receiver); the collector is restarted as a rollout does (SIGTERM, then started
/// again) while the agent runs. Afterwards the counts are exact against the witness: with
/// cumulative temporality the latest totals (at the receiver and on the collector's Prometheus
/// endpoint), with delta temporality the sum of every delta the collector forwarded, those
/// the agent held while the collector was away included. Over gRPC (the collector answers a
/// gzip request with a gzip response) and over HTTP.
async fn counts_survive_a_collector_restart(temporality: &str, protocol: &str) {
    const PARTITIONS: i32 = 2;
    let mock = MockKafka::new(1);
    let topic = unique_topic("through");
    mock.create_topic(&topic, PARTITIONS);
    let receiver = OtlpReceiver::start(0).await;
    let mut collector = Collector::start(
        &[shipped()],
        &format!(
            "exporters:\n  otlp_grpc/test:\n    endpoint: '{}'\n    tls: {{insecure: true}}\n\
             service:\n  pipelines:\n    metrics:\n      exporters: [prometheus, otlp_grpc/test]\n",
            receiver.addr
        ),
    );
    let http_port = free_port();
    let instance = format!("through-{temporality}");
    let endpoint = match protocol {
        "grpc" => format!("http://127.0.0.1:{}", collector.otlp_grpc),
        _ => format!("http://127.0.0.1:{}", collector.otlp_http),
    };
    let mut agent = AgentProcess::start(
        &format!(
            "clusters:\n  - name: through\n    bootstrap_servers: '{}'\n    librdkafka: {{fetch.wait.max.ms: '10'}}\n\
             heartbeat: {{topic: {topic}, interval: 200ms, loss_timeout: 5s, message_timeout: 2s}}\n\
             export:\n  otlp: {{endpoint: '{endpoint}', protocol: {protocol}, interval: 1s, timeout: 800ms, temporality: {temporality}}}\n\
             http: {{listen: '127.0.0.1:{http_port}'}}\n",
            mock.bootstrap(),
        ),
        &[(
            "OTEL_RESOURCE_ATTRIBUTES",
            &format!("service.instance.id={instance}"),
        )],
    );
    agent.wait_ready(http_port, Duration::from_secs(30)).await;
    eventually(
        Duration::from_secs(20),
        "exports through the collector",
        || (receiver.requests().len() >= 3).then_some(()),
    )
    .await;
    let before = receiver.requests().len();
    collector.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    collector.restart();
    eventually(Duration::from_secs(20), "exports after the restart", || {
        (receiver.requests().len() >= before + 3).then_some(())
    })
    .await;
    let (status, output) = agent.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "{output}");
    // The agent's final export, forwarded by the collector.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let on_topic: u64 = own_messages_on_topic(&mock.bootstrap(), &topic, PARTITIONS, &instance)
        .await
        .values()
        .sum();
    let requests = receiver.requests();
    let forwarded = match temporality {
        "cumulative" => last_cumulative_sent(&requests),
        _ => requests
            .iter()
            .map(|r| counter_value(r, name::MESSAGES_SENT, &[("error.type", "!")]))
            .sum(),
    };
    println!(
        "{temporality} over {protocol}: {} exports forwarded, sent {forwarded}, on the topic {on_topic}",
        requests.len()
    );
    assert_eq!(
        forwarded, on_topic,
        "{temporality}: exact through the restart"
    );
    if temporality == "cumulative" {
        // The restarted collector's Prometheus endpoint has the whole run's total too.
        assert_eq!(scraped_sent(&collector).await, on_topic as f64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cumulative_counts_over_grpc_are_exact_through_a_collector_restart() {
    counts_survive_a_collector_restart("cumulative", "grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_counts_over_http_are_exact_through_a_collector_restart() {
    counts_survive_a_collector_restart("delta", "http/protobuf").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_counts_over_grpc_are_exact_through_a_collector_restart() {
    counts_survive_a_collector_restart("delta", "grpc").await;
}

/// The agent's spans and log records pass through the shipped collector config: its traces
/// and logs pipelines take them (no export refused, counted by the agent as delivered), and a
/// backend's exporter added to them (the test's receiver here) gets every span and record with
/// the agent's resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_log_records_pass_through_the_shipped_collector() {
    let mock = MockKafka::new(1);
    let topic = unique_topic("spans");
    mock.create_topic(&topic, 1);
    let receiver = OtlpReceiver::start(0).await;
    let collector = Collector::start(
        &[shipped()],
        &format!(
            "exporters:\n  otlp_grpc/test:\n    endpoint: '{}'\n    tls: {{insecure: true}}\n\
             service:\n  pipelines:\n    metrics:\n      exporters: [prometheus, otlp_grpc/test]\n\
             \x20   traces:\n      exporters: [nop, otlp_grpc/test]\n\
             \x20   logs:\n      exporters: [nop, otlp_grpc/test]\n",
            receiver.addr
        ),
    );
    let agent = AgentProcess::start(
        &format!(
            "clusters:\n  - name: spans\n    bootstrap_servers: '{}'\n\
             heartbeat: {{topic: {topic}, interval: 200ms}}\n\
             export:\n  otlp: {{endpoint: 'http://127.0.0.1:{}', protocol: http/protobuf, interval: 1s}}\n  traces: {{sample_ratio: 1}}\n",
            mock.bootstrap(),
            collector.otlp_http,
        ),
        &[
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.instance.id=spans-agent",
            ),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OTEL_BLRP_SCHEDULE_DELAY", "200"),
        ],
    );
    eventually(
        Duration::from_secs(30),
        "log records through the collector",
        || {
            receiver
                .log_records()
                .into_iter()
                .find(|(_, r)| r.event_name == "agent.started")
        },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "spans through the collector",
        || (receiver.spans().len() >= 20).then_some(()),
    )
    .await;
    eventually(Duration::from_secs(20), "span exports counted", || {
        let last = receiver.requests().pop()?;
        (counter_value(
            &last,
            "cc_heartbeat.export.batches",
            &[("otel.signal", "traces")],
        ) > 0)
            .then_some(last)
    })
    .await;
    let (status, output) = agent.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{output}");
    let last = receiver.requests().pop().unwrap();
    for signal in ["traces", "logs"] {
        assert_eq!(
            counter_value(
                &last,
                "cc_heartbeat.export.batches",
                &[("otel.signal", signal), ("error.type", "*")]
            ),
            0,
            "no {signal} export refused"
        );
    }
    for (resource, _) in receiver.log_records() {
        assert_eq!(
            support::otlp::attr(&resource, "service.instance.id").as_deref(),
            Some("spans-agent")
        );
    }
    for (resource, span) in receiver.spans() {
        assert_eq!(
            support::otlp::attr(&resource, "service.instance.id").as_deref(),
            Some("spans-agent")
        );
        // The heartbeat's spans, the probes' rounds and the broker probe's stages.
        assert!(
            [
                format!("send {topic}"),
                format!("receive {topic}"),
                "dns".to_owned(),
                "tcp".to_owned(),
                "kafka".to_owned(),
            ]
            .contains(&span.name)
                || span.name.starts_with("probe "),
            "{}",
            span.name
        );
    }
}

/// A collector that takes OTLP only over TLS, from clients with a certificate of its private
/// CA (mTLS on both its gRPC and HTTP receivers): one agent exports to it over gRPC with
/// `export.otlp.tls`, another over HTTP with the standard `OTEL_EXPORTER_OTLP_CERTIFICATE`,
/// `_CLIENT_CERTIFICATE` and `_CLIENT_KEY` variables, and both agents' heartbeats arrive. A
/// third, with the CA but no client certificate, is refused, and counts its failed exports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_export_to_a_collector_behind_mtls() {
    let certs = support::tls::Certificates::generate(&["localhost"]);
    let mock = MockKafka::new(1);
    let topic = unique_topic("mtls");
    mock.create_topic(&topic, 1);
    let tls = format!(
        "{{cert_file: '{}', key_file: '{}', client_ca_file: '{}'}}",
        certs.file("server.pem").display(),
        certs.file("server-key.pem").display(),
        certs.ca_file().display()
    );
    let collector = Collector::start(
        &[shipped()],
        &format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc:\n        tls: {tls}\n      http:\n        tls: {tls}\n"
        ),
    );
    let agent = |name: &str, protocol: &str, port: u16, tls: &str, env: &[(&str, &str)]| {
        let http_port = free_port();
        let process = AgentProcess::start(
            &format!(
                "clusters:\n  - name: {name}\n    bootstrap_servers: '{}'\n\
                 heartbeat: {{topic: {topic}, interval: 250ms}}\n\
                 export:\n  otlp: {{endpoint: 'https://localhost:{port}', protocol: {protocol}, interval: 1s{tls}}}\n\
                 http: {{listen: '127.0.0.1:{http_port}', prometheus: true}}\n",
                mock.bootstrap(),
            ),
            env,
        );
        (process, http_port)
    };
    let (ca, cert, key) = (
        certs.ca_file().display().to_string(),
        certs.file("client.pem").display().to_string(),
        certs.file("client-key.pem").display().to_string(),
    );
    let (grpc, _) = agent(
        "mtls-grpc",
        "grpc",
        collector.otlp_grpc,
        &format!(", tls: {{ca_file: '{ca}', cert_file: '{cert}', key_file: '{key}'}}"),
        &[],
    );
    let (http, _) = agent(
        "mtls-http",
        "http/protobuf",
        collector.otlp_http,
        "",
        &[
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &cert),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &key),
        ],
    );
    let (anonymous, anonymous_port) = agent(
        "mtls-anonymous",
        "grpc",
        collector.otlp_grpc,
        &format!(", tls: {{ca_file: '{ca}'}}"),
        &[],
    );
    let url = format!("http://127.0.0.1:{}/metrics", collector.prometheus);
    let received = |text: &str, cluster: &str| -> f64 {
        text.lines()
            .filter(|l| {
                l.starts_with("kafka_heartbeat_messages_received_total{")
                    && l.contains(&format!("kafka_cluster_name=\"{cluster}\""))
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = http_get(&url).await.unwrap().text().await.unwrap();
        if received(&text, "mtls-grpc") >= 3.0 && received(&text, "mtls-http") >= 3.0 {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "both agents' heartbeats through mTLS:\n{text}\n--- grpc agent:\n{}\n--- http agent:\n{}\n--- collector:\n{}",
            grpc.output(),
            http.output(),
            collector.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        received(&text, "mtls-anonymous"),
        0.0,
        "no client certificate, no entry"
    );
    let failed = anonymous
        .scrape_until(
            anonymous_port,
            Duration::from_secs(20),
            "the refused agent counts failed exports",
            |t| {
                support::process::sum_matching(
                    t,
                    "cc_heartbeat_export_batches_total",
                    &["error_type=\""],
                ) >= 2.0
            },
        )
        .await;
    assert_eq!(
        support::process::sum_with(
            &failed,
            "cc_heartbeat_export_batches_total",
            "otel_signal=\"metrics\""
        ) - support::process::sum_matching(
            &failed,
            "cc_heartbeat_export_batches_total",
            &["otel_signal=\"metrics\"", "error_type=\""]
        ),
        0.0,
        "none delivered:\n{failed}"
    );
    println!(
        "refused exports: {}",
        failed
            .lines()
            .filter(|l| l.starts_with("cc_heartbeat_export_batches_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    for agent in [grpc, http, anonymous] {
        let (status, _) = agent.terminate(Duration::from_secs(10)).await;
        assert!(status.success());
    }
}
