//! An OpenID Connect provider for the tests, as Confluent Cloud's identity pools use one: a
//! token endpoint (client-credentials grant, HTTP basic client authentication) issuing JWTs
//! signed with an ES256 key made at start, and the JWKS that publishes that key. Apache
//! Kafka's OAUTHBEARER validator checks the tokens against the JWKS; nothing is stood in for.
//!
//! It runs on a thread of its own, so a cluster shared by a test binary's tests outlives
//! each test's runtime.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use rcgen::{KeyPair, PublicKeyData as _, SigningKey as _};

use super::http::{self, Requests};

pub struct Oidc {
    pub port: u16,
    requests: Requests,
    refused: Arc<Mutex<bool>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

const KID: &str = "cc-heartbeat-test";
/// The audience of every token, as the brokers expect it.
pub const AUDIENCE: &str = "cc-heartbeat-test-cluster";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Oidc {
    /// Serves tokens to `client_id` with `client_secret`; any other client gets 401.
    pub fn start(client_id: &str, client_secret: &str) -> Self {
        let key = Arc::new(KeyPair::generate().expect("ES256 key"));
        let refused = Arc::new(Mutex::new(false));
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{client_id}:{client_secret}"));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let client_id = client_id.to_owned();
        let refused_now = Arc::clone(&refused);
        std::thread::Builder::new()
            .name("oidc".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("oidc runtime");
                runtime.block_on(async move {
                    let port_cell = Arc::new(Mutex::new(0u16));
                    let port_seen = Arc::clone(&port_cell);
                    let (port, requests) = http::serve(move |request: &str| {
                        let issuer = format!("http://127.0.0.1:{}", *port_seen.lock().unwrap());
                        Some(answer(
                            request,
                            &key,
                            &issuer,
                            &client_id,
                            &basic,
                            &refused_now,
                        ))
                    })
                    .await;
                    *port_cell.lock().unwrap() = port;
                    let _ = ready_tx.send((port, requests));
                    let _ = stop_rx.await;
                });
            })
            .expect("oidc thread");
        let (port, requests) = ready_rx.recv().expect("oidc server up");
        Self {
            port,
            requests,
            refused,
            stop: Some(stop_tx),
        }
    }

    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.issuer())
    }

    pub fn token_url(&self) -> String {
        format!("{}/oauth2/token", self.issuer())
    }

    /// The token requests received so far (head and body).
    pub fn token_requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.starts_with("POST /oauth2/token"))
            .cloned()
            .collect()
    }

    /// From now on, refuse every token request (as a revoked client is refused).
    pub fn refuse_all(&self, refuse: bool) {
        *self.refused.lock().unwrap() = refuse;
    }
}

impl Drop for Oidc {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn answer(
    request: &str,
    key: &KeyPair,
    issuer: &str,
    client_id: &str,
    basic: &str,
    refused: &Mutex<bool>,
) -> String {
    if request.starts_with("GET /jwks") {
        let point = key.der_bytes();
        // An uncompressed P-256 point: 0x04, then X and Y of 32 bytes each.
        let (x, y) = point[1..].split_at(32);
        let jwks = format!(
            r#"{{"keys":[{{"kty":"EC","crv":"P-256","use":"sig","alg":"ES256","kid":"{KID}","x":"{}","y":"{}"}}]}}"#,
            b64(x),
            b64(y)
        );
        return http::answer("200 OK", "application/json", &jwks);
    }
    if !request.starts_with("POST /oauth2/token") {
        return http::answer("404 Not Found", "text/plain", "not found");
    }
    let authorised = request
        .lines()
        .any(|l| l.eq_ignore_ascii_case(&format!("authorization: basic {basic}")))
        && request.contains("grant_type=client_credentials");
    if !authorised || *refused.lock().unwrap() {
        return http::answer(
            "401 Unauthorized",
            "application/json",
            r#"{"error":"invalid_client"}"#,
        );
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let scope = request
        .split(['&', '\n'])
        .find_map(|p| p.trim().strip_prefix("scope="))
        .unwrap_or("");
    let header = format!(r#"{{"alg":"ES256","typ":"JWT","kid":"{KID}"}}"#);
    let claims = format!(
        r#"{{"iss":"{issuer}","sub":"{client_id}","aud":"{AUDIENCE}","iat":{now},"nbf":{now},"exp":{},"scope":"{scope}"}}"#,
        now + 3600
    );
    let signing_input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let der = key.sign(signing_input.as_bytes()).expect("sign");
    let token = format!("{signing_input}.{}", b64(&raw_signature(&der)));
    http::answer(
        "200 OK",
        "application/json",
        &format!(r#"{{"access_token":"{token}","token_type":"bearer","expires_in":3600}}"#),
    )
}

/// An ECDSA signature as JWS wants it (R and S, 32 bytes each) from its ASN.1 DER form
/// (`SEQUENCE { INTEGER r, INTEGER s }`).
fn raw_signature(der: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    let mut i = 2; // SEQUENCE tag and length (always short for P-256)
    for _ in 0..2 {
        assert_eq!(der[i], 0x02, "INTEGER");
        let len = usize::from(der[i + 1]);
        let value = &der[i + 2..i + 2 + len];
        let value = &value[value.len().saturating_sub(32)..];
        out.extend(std::iter::repeat_n(0, 32 - value.len()));
        out.extend_from_slice(value);
        i += 2 + len;
    }
    out
}
