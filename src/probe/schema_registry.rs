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
use tokio::sync::watch;

use super::{Probe, Schedule};
use crate::config::{ConnectivityConfig, SchemaRegistryConfig};
use crate::error::{Classified, ErrorKind};
use crate::events::schema_registry::RegistryProbed;
use crate::kafka::metadata::Broker;
use crate::kafka::metadata::ClusterView;
use crate::kafka::reach::{self, Outcome, Stage, Stream};
use crate::kafka::tls::{self, TlsSetupError};
use crate::telemetry::instruments::ClusterLabels;
use crate::telemetry::instruments::{attr, name};
use crate::telemetry::{ClusterAttributes, Instruments};
use opentelemetry::KeyValue;

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
    target: Broker,
    tls: Option<Arc<rustls::ClientConfig>>,
    request: RegistryRequest,
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
            target: Broker::at(host, port),
            tls,
            request,
            up: None,
            parts,
        })
    }
}

/// The HTTP/1.1 request, written once: the path under the base URL, the Host header, and the
/// credentials.
/// The request every probe sends: `GET /schemas/types`, with the basic-auth credentials.
#[derive(Clone)]
struct RegistryRequest {
    path: String,
    host: String,
    authorization: Option<String>,
}

fn request(registry: &SchemaRegistryConfig, host: &str, port: u16) -> RegistryRequest {
    let base = registry.url.path().trim_end_matches('/');
    let default_port = if registry.https { 443 } else { 80 };
    let host = if port == default_port {
        host.to_owned()
    } else {
        format!("{host}:{port}")
    };
    let authorization = registry.basic_auth.as_ref().map(|auth| {
        let token = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            auth.username,
            auth.password.expose()
        ));
        format!("Basic {token}")
    });
    RegistryRequest {
        path: format!("{base}/{PATH}"),
        host,
        authorization,
    }
}

/// Sends the request with hyper's HTTP/1.1 client over the stream the earlier stages opened
/// (so the probe's bound covers it all), and judges the answer: the HTTP status, or why it is
/// not a registry's.
async fn exchange(stream: Box<dyn Stream>, request: RegistryRequest) -> Result<u16, Classified> {
    let transport = |e: hyper::Error| Classified::new(ErrorKind::Transport, e);
    let not_http = |e: hyper::Error| {
        if e.is_parse() || e.is_incomplete_message() {
            Classified::new(ErrorKind::Protocol, format!("not an HTTP answer: {e}"))
        } else {
            transport(e)
        }
    };
    // Header names as most servers write them: a picky front end may want that.
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(transport)?;
    // The connection is driven beside the request; it ends with the answer (or the bound).
    let connection = tokio::spawn(connection);
    let mut builder = hyper::Request::get(request.path.as_str())
        .header(hyper::header::HOST, request.host.as_str())
        .header(
            hyper::header::USER_AGENT,
            format!("cc-heartbeat/{}", crate::telemetry::SERVICE_VERSION),
        )
        .header(
            hyper::header::ACCEPT,
            "application/vnd.schemaregistry.v1+json, application/json",
        );
    if let Some(authorization) = &request.authorization {
        builder = builder.header(hyper::header::AUTHORIZATION, authorization.as_str());
    }
    let built = builder
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|e| Classified::new(ErrorKind::ClientError, e))?;
    let answer = sender.send_request(built).await.map_err(not_http);
    let result = match answer {
        Ok(answer) => {
            let status = answer.status().as_u16();
            let body = http_body_util::Limited::new(answer.into_body(), MAX_ANSWER);
            let body = http_body_util::BodyExt::collect(body).await;
            judge(status, body.map(|b| b.to_bytes()).ok().as_deref())
        }
        Err(e) => Err(e),
    };
    connection.abort();
    result
}

/// The status of a registry's answer to `GET /schemas/types` with its body (`None` when the
/// body could not be read whole, or was larger than a registry's answer), or why it is not
/// one.
fn judge(status: u16, body: Option<&[u8]>) -> Result<u16, Classified> {
    let protocol = |why: &str| Classified::new(ErrorKind::Protocol, why.to_owned());
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
    let formats: Vec<String> = body
        .and_then(|b| serde_json::from_slice(b).ok())
        .ok_or_else(|| {
            protocol(
                "HTTP 200, but not a Schema Registry answer (expected a list of schema formats)",
            )
        })?;
    if formats.iter().any(|f| f == EXPECTED_FORMAT) {
        Ok(status)
    } else {
        Err(protocol(
            "HTTP 200, but not a Schema Registry answer (AVRO is not among its schema formats)",
        ))
    }
}

impl Probe for RegistryProbe {
    const KIND: &'static str = "schema_registry";
    const ROUND_SPAN: bool = false;
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

    /// Cancel-safe: nothing is recorded until the request has an outcome.
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
        let traces = &self.parts.instruments.traces;
        let root = super::spans::kept_round(traces, &outcome);
        crate::telemetry::traces::in_span(root, || {
            RegistryProbed {
                cluster: &self.parts.cluster,
                cluster_id: &cluster_id,
                outcome: &outcome,
                was_up: self.up,
            }
            .emit(&self.parts.instruments);
        });
        if let Some(root) = root {
            let attributes = ClusterAttributes::new(&cluster_id, &self.parts.cluster).with([
                KeyValue::new(attr::SERVER_ADDRESS, self.target.host.clone()),
                KeyValue::new(attr::SERVER_PORT, i64::from(self.target.port)),
            ]);
            let stages = super::spans::StageSeries {
                metric: name::REGISTRY_CONNECTION_DURATION,
                series: vec![(attr::CLUSTER_NAME, self.parts.cluster.name().to_owned())],
                stage_key: attr::REGISTRY_STAGE,
            };
            super::spans::record_staged(
                traces,
                root,
                "probe schema_registry",
                attributes,
                &outcome,
                stages,
            );
        }
        self.up = Some(outcome.up());
        outcome.trace_id = root.map(|r| r.trace.to_string());
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_judged_by_status_and_shape() {
        let ok = br#"["JSON","PROTOBUF","AVRO"]"#;
        assert_eq!(judge(200, Some(ok)).unwrap(), 200);
        let kind = |status, body: &[u8]| judge(status, Some(body)).unwrap_err().kind;
        assert_eq!(kind(401, b""), ErrorKind::Auth);
        assert_eq!(kind(403, b""), ErrorKind::Auth);
        assert_eq!(kind(404, b""), ErrorKind::Protocol);
        assert_eq!(kind(503, b""), ErrorKind::BrokerError);
        assert_eq!(kind(200, b"<html>hello</html>"), ErrorKind::Protocol);
        assert_eq!(kind(200, br#"["XML"]"#), ErrorKind::Protocol);
        assert_eq!(
            judge(200, None).unwrap_err().kind,
            ErrorKind::Protocol,
            "a body too large or cut short"
        );
    }
}
