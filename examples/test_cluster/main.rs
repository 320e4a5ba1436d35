#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a developer tool: it fails loudly and reports on stdout

//! The test suite's Apache Kafka cluster and OpenTelemetry Collector, started by hand to
//! explore: the same harness the tests use (tests/support), so what you see is what they see.
//!
//!   ./scripts/install-test-tools        # once: Kafka, the admin helper, the collector
//!   cargo run --example test_cluster
//!
//! Prints how to reach every listener, the accounts, the CA, the OIDC token endpoint and an
//! agent config for each, then waits until stdin closes (Ctrl-D) or Ctrl-C; everything it
//! started stops with it.

// The parts of the test harness this needs (the rest of it is for test binaries only). They
// name each other as `super::…`, so they sit at this crate's root.
#[path = "../../tests/support/collector.rs"]
#[allow(dead_code, unreachable_pub)]
mod collector;
#[path = "../../tests/support/http.rs"]
#[allow(dead_code, unreachable_pub)]
mod http;
#[path = "../../tests/support/kafka.rs"]
#[allow(dead_code, unreachable_pub, clippy::print_stderr)]
mod kafka;
#[path = "../../tests/support/local.rs"]
#[allow(dead_code, unreachable_pub)]
mod local;
#[path = "../../tests/support/oidc.rs"]
#[allow(dead_code, unreachable_pub)]
mod oidc;
#[path = "../../tests/support/tls.rs"]
#[allow(dead_code, unreachable_pub)]
mod tls;

use std::io::Read as _;

use collector::{Collector, shipped};
use kafka::{AGENT, AGENT_PASSWORD, Kafka, Listener, OIDC_CLIENT, OIDC_SECRET};

fn main() {
    let kafka = Kafka::start(&[]);
    let collector = Collector::start(&[shipped()], "");
    let ca = kafka.ca_file();
    println!("Apache Kafka, cluster id {}", kafka.cluster_id);
    for id in kafka.node_ids() {
        let p = kafka.ports(id);
        println!(
            "  node {id} (rack {}): PLAINTEXT {} SASL_PLAINTEXT {} SASL_SSL {} OAUTHBEARER {} controller {}",
            Kafka::rack(id),
            p.plaintext,
            p.sasl,
            p.sasl_ssl,
            p.oauth,
            p.controller
        );
    }
    println!(
        "  PLAINTEXT is unrestricted (ANONYMOUS is a super user); `{AGENT}` / `{AGENT_PASSWORD}` \
         (PLAIN, SCRAM-SHA-256/512) has the agent's ACLs on topics cc-heartbeat*"
    );
    println!("  CA of the SASL_SSL listeners: {}", ca.display());
    println!(
        "  OIDC token endpoint: {} (client {OIDC_CLIENT} / {OIDC_SECRET})",
        kafka.oidc().token_url()
    );
    println!(
        "OpenTelemetry Collector (the shipped config): OTLP gRPC 127.0.0.1:{}, HTTP 127.0.0.1:{}, \
         Prometheus http://127.0.0.1:{}/metrics",
        collector.otlp_grpc, collector.otlp_http, collector.prometheus
    );
    println!("\nAn agent config (cc-heartbeat run --config FILE):\n");
    println!(
        "clusters:\n  - name: test-plaintext\n    bootstrap_servers: '{}'\n  \
         - name: test-scram-tls\n    bootstrap_servers: '{}'\n    security_protocol: SASL_SSL\n    \
         sasl: {{mechanism: SCRAM-SHA-512, username: {AGENT}, password: {AGENT_PASSWORD}}}\n    \
         tls: {{ca_file: '{}'}}\n  - name: test-oidc\n    bootstrap_servers: '{}'\n    \
         security_protocol: SASL_PLAINTEXT\n    sasl:\n      mechanism: OAUTHBEARER\n      \
         oauthbearer: {{token_endpoint_url: '{}', client_id: {OIDC_CLIENT}, client_secret: {OIDC_SECRET}}}\n\
         export:\n  otlp: {{endpoint: 'http://127.0.0.1:{}'}}\n",
        kafka.bootstrap(),
        kafka.bootstrap_on(Listener::SaslSsl),
        ca.display(),
        kafka.bootstrap_on(Listener::Oauth),
        kafka.oidc().token_url(),
        collector.otlp_grpc
    );
    println!("Running; close stdin (Ctrl-D) or press Ctrl-C to stop.");
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(collector);
    drop(kafka);
}
