#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! OAUTHBEARER with an OIDC token endpoint (Confluent Cloud's way): the agent fetches its
//! token from the endpoint with the client-credentials grant, its client id and secret, and
//! the scope, and authenticates to the brokers with it and Confluent Cloud's SASL extensions.
//! The token endpoint is a small HTTP server in the test. The broker half is a SASL front (the
//! test Kafka proxy, answering SaslHandshake and SaslAuthenticate as a broker does) before
//! librdkafka's mock cluster: tansu accepts SASL only with PostgreSQL storage, which its
//! prebuilt binary lacks (a build with it takes about 20 minutes on these machines).

mod support;

use std::time::Duration;

use base64::Engine as _;
use support::http::{self, Requests};
use support::kafka_proxy::{KafkaProxy, SaslAccount};
use support::process::AgentProcess;
use support::{MockKafka, eventually, free_port, unique_topic};

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
async fn the_agent_fetches_its_token_with_the_client_credentials_grant() {
    let (port, requests) = token_endpoint(token()).await;
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
    let (port, requests) = token_endpoint("not-a-jwt".to_owned()).await;
    let (_, log) = fetch_token(port, &requests).await;
    assert!(log.contains(TOKEN_FAILED), "{log}");
    assert!(!log.contains("agent-secret-7c1f"), "{log}");
}

/// The broker half: with the token the endpoint gave, the agent gets through a broker's
/// OAUTHBEARER authentication (carrying Confluent Cloud's extensions) and becomes ready; a
/// broker that expects another token refuses it, and the agent says authentication failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_accepts_the_token_the_endpoint_gave() {
    let mock = MockKafka::new(1);
    let topic = unique_topic("oidc");
    mock.create_topic(&topic, 1);
    let issued = token();
    let (port, _requests) = token_endpoint(issued.clone()).await;
    for (broker_expects, ready) in [(issued.clone(), true), (token() + "x", false)] {
        let extensions = std::sync::Arc::default();
        let proxy = KafkaProxy::with_sasl(
            &mock.bootstrap(),
            SaslAccount::OAuthBearer {
                token: broker_expects,
                extensions: std::sync::Arc::clone(&extensions),
            },
        )
        .await;
        let http_port = free_port();
        let mut agent = AgentProcess::start(
            &format!(
                "clusters:\n  - name: oidc\n    bootstrap_servers: '{}'\n    security_protocol: SASL_PLAINTEXT\n\
                 \x20   sasl:\n      mechanism: OAUTHBEARER\n\
                 \x20     oauthbearer: {{token_endpoint_url: 'http://127.0.0.1:{port}/oauth2/token', client_id: agent-id, client_secret: agent-secret-7c1f, extensions: {{logicalCluster: lkc-abc123, identityPoolId: pool-xyz}}}}\n\
                 \x20   librdkafka: {{fetch.wait.max.ms: '10'}}\n\
                 heartbeat: {{topic: {topic}, create_topic: false}}\n\
                 checks: {{metadata: {{interval: 2s}}}}\n\
                 export: {{otlp: {{enabled: false}}}}\nhttp: {{listen: '127.0.0.1:{http_port}'}}\n",
                proxy.bootstrap()
            ),
            &[],
        );
        if ready {
            agent.wait_ready(http_port, Duration::from_secs(30)).await;
            let seen = extensions.lock().unwrap().clone();
            assert!(!seen.is_empty(), "the broker saw an authentication");
            for each in &seen {
                for extension in ["logicalCluster=lkc-abc123", "identityPoolId=pool-xyz"] {
                    assert!(each.contains(extension), "{extension} in {each}");
                }
            }
        } else {
            let log = eventually(Duration::from_secs(30), "an authentication failure", || {
                let log = agent.output();
                log.contains("authentication failed").then_some(log)
            })
            .await;
            assert!(log.contains("invalid token"), "{log}");
            let readyz =
                support::process::http_get(&format!("http://127.0.0.1:{http_port}/readyz"))
                    .await
                    .unwrap();
            assert_eq!(readyz.status(), 503, "not ready without a cluster");
        }
        let (_, log) = agent.terminate(Duration::from_secs(10)).await;
        assert!(!log.contains("agent-secret-7c1f"), "{log}");
        assert!(!log.contains(&issued), "the token is a secret too");
    }
}
