#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! OAUTHBEARER's token endpoint alone, with no broker behind it: an endpoint that answers with
//! something that is not a JWT is reported, and the client secret never reaches the log. (The
//! whole path, a token Apache Kafka validates against the provider's JWKS, is in
//! tests/kafka_auth.rs.)

mod support;

use std::time::Duration;

use support::http::{self, Requests};
use support::process::AgentProcess;
use support::{eventually, free_port};

/// The token endpoint: records each request (head and body) and answers with `access_token`.
async fn token_endpoint(access_token: String) -> (u16, Requests) {
    http::serve(move |_| {
        Some(http::answer(
            "200 OK",
            "application/json",
            &format!(
                r#"{{"access_token":"{access_token}","token_type":"bearer","expires_in":3600}}"#
            ),
        ))
    })
    .await
}

/// Runs the agent against a cluster nobody serves, with its token from `port`, until the
/// endpoint saw a request; returns that request and the agent's log.
async fn fetch_token(port: u16, requests: &Requests) -> (String, String) {
    let nobody = free_port(); // no broker: the token is fetched before any connection
    let http_port = free_port();
    let agent = AgentProcess::start(
        &format!(
            "clusters:\n  - name: oidc\n    bootstrap_servers: '127.0.0.1:{nobody}'\n    security_protocol: SASL_PLAINTEXT\n\
             \x20   sasl:\n      mechanism: OAUTHBEARER\n\
             \x20     oauthbearer: {{token_endpoint_url: 'http://127.0.0.1:{port}/oauth2/token', client_id: agent-id, client_secret: agent-secret-7c1f, scope: kafka, extensions: {{logicalCluster: lkc-abc123, identityPoolId: pool-xyz}}}}\n\
             export: {{otlp: {{enabled: false}}}}\nhttp: {{listen: '127.0.0.1:{http_port}'}}\n"
        ),
        &[],
    );
    let request = eventually(Duration::from_secs(20), "a token request", || {
        requests.lock().unwrap().first().cloned()
    })
    .await;
    // Time to take the answer in.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, log) = agent.terminate(Duration::from_secs(10)).await;
    (request, log)
}

const TOKEN_FAILED: &str = "Failed to acquire SASL OAUTHBEARER token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_is_not_a_jwt_is_reported() {
    let (port, requests) = token_endpoint("not-a-jwt".to_owned()).await;
    let (_, log) = fetch_token(port, &requests).await;
    assert!(log.contains(TOKEN_FAILED), "{log}");
    assert!(!log.contains("agent-secret-7c1f"), "{log}");
}
