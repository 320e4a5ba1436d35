//! The Schema Registry probe: every interval, on a fresh connection, DNS, TCP, TLS (for an
//! https URL) and one authenticated `GET /schemas/types`, each stage timed.
//!
//! `/schemas/types` is the cheapest request every Confluent-compatible registry answers (it
//! lists the schema formats it supports, `["JSON","PROTOBUF","AVRO"]`): its answer does not
//! grow with the number of subjects, reads no schema, and on Confluent Cloud it needs the
//! API key like every other endpoint, so a bad key shows as `auth`.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::watch;

use super::{Probe, Schedule};
use crate::config::{ConnectivityConfig, SchemaRegistryConfig};
use crate::error::{Classified, ErrorKind};
use crate::events::schema_registry::RegistryProbed;
use crate::kafka::metadata::ClusterView;
use crate::kafka::reach::{self, Outcome, Stage, Stream, Target};
use crate::kafka::tls::{self, TlsSetupError};
use crate::telemetry::Instruments;
use crate::telemetry::instruments::ClusterLabels;

/// The request path, under the registry's base URL.
const PATH: &str = "schemas/types";
/// At most this much of an answer is read.
const MAX_ANSWER: usize = 64 * 1024;
/// A schema format every registry supports, expected in the answer.
const EXPECTED_FORMAT: &str = "AVRO";

/// What the Schema Registry probe needs.
pub struct RegistryParts {
    pub cluster: ClusterLabels,
    pub registry: SchemaRegistryConfig,
    pub view: watch::Receiver<Arc<ClusterView>>,
    pub check: ConnectivityConfig,
    pub instruments: Instruments,
}

pub struct RegistryProbe {
    parts: RegistryParts,
    target: Target,
    tls: Option<Arc<rustls::ClientConfig>>,
    request: Vec<u8>,
    up: Option<bool>,
}

impl RegistryProbe {
    /// Fails when the registry's TLS settings do not load.
    pub fn new(parts: RegistryParts) -> Result<Self, TlsSetupError> {
        let url = &parts.registry.url;
        let host = url.host_str().unwrap_or_default().to_owned();
        let port = url.port_or_known_default().unwrap_or(443);
        let tls = if parts.registry.https {
            Some(tls::client_config(&parts.registry.tls)?)
        } else {
            None
        };
        let request = request(&parts.registry, &host, port);
        Ok(Self {
            target: Target {
                id: reach::BOOTSTRAP_ID,
                host,
                port,
                rack: None,
            },
            tls,
            request,
            up: None,
            parts,
        })
    }
}

/// The HTTP/1.1 request, written once: the path under the base URL, the Host header, and the
/// credentials.
fn request(registry: &SchemaRegistryConfig, host: &str, port: u16) -> Vec<u8> {
    let base = registry.url.path().trim_end_matches('/');
    let default_port = if registry.https { 443 } else { 80 };
    let host = if port == default_port {
        host.to_owned()
    } else {
        format!("{host}:{port}")
    };
    let mut text = format!(
        "GET {base}/{PATH} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: cc-heartbeat/{}\r\nAccept: application/vnd.schemaregistry.v1+json, application/json\r\nConnection: close\r\n",
        crate::telemetry::SERVICE_VERSION
    );
    if let Some(auth) = &registry.basic_auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            auth.username,
            auth.password.expose()
        ));
        text.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    text.push_str("\r\n");
    text.into_bytes()
}

/// Sends the request and judges the answer: the HTTP status, or why it is not a registry's.
async fn exchange(mut stream: Box<dyn Stream>, request: Vec<u8>) -> Result<u16, Classified> {
    let transport = |e: std::io::Error| Classified::new(ErrorKind::Transport, e);
    stream.write_all(&request).await.map_err(transport)?;
    stream.flush().await.map_err(transport)?;
    let mut answer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.map_err(transport)?;
        if n == 0 || answer.len() >= MAX_ANSWER {
            break;
        }
        answer.extend_from_slice(&chunk[..n.min(MAX_ANSWER - answer.len())]);
    }
    judge(&answer)
}

/// The status of a registry's answer to `GET /schemas/types`, or why it is not one.
fn judge(answer: &[u8]) -> Result<u16, Classified> {
    let protocol = |why: &str| Classified::new(ErrorKind::Protocol, why.to_owned());
    let head_end = find(answer, b"\r\n\r\n").ok_or_else(|| protocol("not an HTTP answer"))?;
    let head = String::from_utf8_lossy(&answer[..head_end]);
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1."))
        .and_then(|l| l.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| protocol("not an HTTP answer"))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    match status {
        200 => {}
        401 | 403 => {
            return Err(Classified::new(
                ErrorKind::Auth,
                format!("HTTP {status}: the registry refused the credentials (basic_auth)"),
            ));
        }
        500..=599 | 429 => {
            return Err(Classified::new(
                ErrorKind::BrokerError,
                format!("HTTP {status} from the registry"),
            ));
        }
        other => {
            return Err(protocol(&format!(
                "HTTP {other}: not a Schema Registry at this URL"
            )));
        }
    }
    let body = &answer[head_end + 4..];
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    let formats: Vec<String> = serde_json::from_slice(&body).map_err(|_| {
        protocol("HTTP 200, but not a Schema Registry answer (expected a list of schema formats)")
    })?;
    if formats.iter().any(|f| f == EXPECTED_FORMAT) {
        Ok(status)
    } else {
        Err(protocol(
            "HTTP 200, but not a Schema Registry answer (AVRO is not among its schema formats)",
        ))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The body of a chunked answer (as much as arrived).
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = find(body, b"\r\n") {
        let size = std::str::from_utf8(&body[..line_end])
            .ok()
            .and_then(|l| usize::from_str_radix(l.split(';').next()?.trim(), 16).ok());
        let Some(size) = size.filter(|s| *s > 0) else {
            break;
        };
        let start = line_end + 2;
        let end = (start + size).min(body.len());
        out.extend_from_slice(&body[start..end]);
        body = body.get(end + 2..).unwrap_or_default();
    }
    out
}

impl Probe for RegistryProbe {
    const KIND: &'static str = "schema_registry";
    type Output = Outcome;
    type Error = std::convert::Infallible;

    fn schedule(&self) -> Schedule {
        Schedule::every(
            self.parts.check.interval,
            self.parts.check.timeout + Duration::from_secs(1),
        )
    }

    fn describe(&self) -> String {
        format!(
            "Schema Registry probe started: DNS, TCP, {}GET /{PATH} on a fresh connection to {}.",
            if self.tls.is_some() { "TLS, " } else { "" },
            self.target.address()
        )
    }

    async fn probe_once(&mut self) -> Result<Outcome, std::convert::Infallible> {
        let request = self.request.clone();
        let (mut outcome, status) = reach::probe_with(
            &self.target,
            self.tls.as_ref(),
            self.parts.check.timeout,
            Stage::Http,
            move |stream| exchange(stream, request),
        )
        .await;
        outcome.http_status = status;
        let cluster_id = self.parts.view.borrow().cluster_id.clone();
        RegistryProbed {
            cluster: &self.parts.cluster,
            cluster_id: &cluster_id,
            outcome: &outcome,
            was_up: self.up,
        }
        .emit(&self.parts.instruments);
        self.up = Some(outcome.up());
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(head: &str, body: &str) -> Vec<u8> {
        format!("{head}\r\n\r\n{body}").into_bytes()
    }

    #[test]
    fn answers_are_judged_by_status_and_shape() {
        let ok = answer(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json",
            r#"["JSON","PROTOBUF","AVRO"]"#,
        );
        assert_eq!(judge(&ok).unwrap(), 200);
        let chunked = answer(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked",
            "8\r\n[\"AVRO\",\r\n8\r\n\"JSON\"]\r\n0\r\n\r\n",
        );
        assert_eq!(judge(&chunked).unwrap(), 200);
        let kind = |a: &[u8]| judge(a).unwrap_err().kind;
        assert_eq!(
            kind(&answer("HTTP/1.1 401 Unauthorized", "")),
            ErrorKind::Auth
        );
        assert_eq!(kind(&answer("HTTP/1.1 403 Forbidden", "")), ErrorKind::Auth);
        assert_eq!(
            kind(&answer("HTTP/1.1 404 Not Found", "")),
            ErrorKind::Protocol
        );
        assert_eq!(
            kind(&answer("HTTP/1.1 503 Unavailable", "")),
            ErrorKind::BrokerError
        );
        assert_eq!(
            kind(&answer("HTTP/1.1 200 OK", "<html>hello</html>")),
            ErrorKind::Protocol
        );
        assert_eq!(
            kind(&answer("HTTP/1.1 200 OK", r#"["XML"]"#)),
            ErrorKind::Protocol
        );
        assert_eq!(kind(b"\x00\x00\x00\x10garbage"), ErrorKind::Protocol);
    }
}
