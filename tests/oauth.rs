#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! OAUTHBEARER with an OIDC token endpoint (Confluent Cloud's way): the agent fetches its
//! token from the endpoint with the client-credentials grant, its client id and secret, and
//! the scope. The token endpoint is a small HTTP server in the test. The broker half (a broker
//! accepting the token) is not covered here: tansu accepts OAUTHBEARER only with PostgreSQL
//! storage, which the test machines do not run.

mod support;

use std::time::Duration;

use base64::Engine as _;
use support::http::{self, Requests};
use support::process::AgentProcess;
use support::{eventually, free_port};

/// A JWT librdkafka accepts: it reads `sub` and `exp` from the payload.
fn token() -> String {
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    format!(
        "{}.{}.{}",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&format!(
            r#"{{"sub":"cc-heartbeat-test","exp":{exp},"iat":{}}}"#,
            exp - 3600
        )),
        b64("signature")
    )
}

/// The token endpoint: records each request (head and body) and answers with a token (a JWT,
/// or with `valid` false, something that is not one).
async fn token_endpoint(valid: bool) -> (u16, Requests) {
    http::serve(move |_| {
        let access_token = if valid {
            token()
        } else {
            "not-a-jwt".to_owned()
        };
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
async fn the_agent_fetches_its_token_with_the_client_credentials_grant() {
    let (port, requests) = token_endpoint(true).await;
    let (request, log) = fetch_token(port, &requests).await;
    println!("{request}");
    assert!(
        request.starts_with("POST /oauth2/token HTTP/1.1\r\n"),
        "{request}"
    );
    let basic = base64::engine::general_purpose::STANDARD.encode("agent-id:agent-secret-7c1f");
    assert!(
        request.contains(&format!("Authorization: Basic {basic}")),
        "{request}"
    );
    assert!(
        request.contains("grant_type=client_credentials"),
        "{request}"
    );
    assert!(request.contains("scope=kafka"), "{request}");
    // The token was taken: no token failure in the log, and the secret nowhere in it.
    assert!(!log.contains(TOKEN_FAILED), "{log}");
    assert!(!log.contains("agent-secret-7c1f"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_is_not_a_jwt_is_reported() {
    let (port, requests) = token_endpoint(false).await;
    let (_, log) = fetch_token(port, &requests).await;
    assert!(log.contains(TOKEN_FAILED), "{log}");
    assert!(!log.contains("agent-secret-7c1f"), "{log}");
}
