//! The HTTP listener (`http.listen`):
//!
//! - `GET /healthz`: 200 while the process serves requests.
//! - `GET /readyz`: with `http.readiness: agent` (the default), 200 while the agent runs,
//!   saying in the body what Kafka still waits for; with `kafka`, as `/readyz/kafka`.
//! - `GET /readyz/kafka`: 200 once every cluster's metadata was fetched and its first
//!   heartbeat made the round trip, while the clusters can be used and their topics exist;
//!   503 otherwise, with what is pending in the body.
//! - `GET /metrics`: the metrics in Prometheus text format, or OpenMetrics with exemplars when
//!   the scraper asks for it, when `http.prometheus` is on.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod connections;

use crate::events::http::{HttpAcceptFailed, HttpIdleShed, HttpListening, HttpOverLimit};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use connections::{Activity, Admission, Connections, SharedStream};
use tokio_util::sync::CancellationToken;

use crate::config::ReadinessMode;
use crate::error::BuildError;
use crate::telemetry::Scrape;

/// The set of conditions still pending before the agent is ready.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    pending: Arc<Mutex<BTreeSet<String>>>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new pending condition, named for the `/readyz` body.
    pub fn latch(&self, what: impl Into<String>) -> Latch {
        let what = what.into();
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(what.clone());
        }
        Latch {
            readiness: self.clone(),
            what,
        }
    }

    /// A condition that can become unmet (with a reason) and met again any number of times,
    /// e.g. "the heartbeat topic exists". It starts met.
    pub fn condition(&self) -> Condition {
        Condition {
            readiness: self.clone(),
            reason: None,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.pending.lock().map(|p| p.is_empty()).unwrap_or(false)
    }

    /// Conditions still pending.
    pub fn pending(&self) -> Vec<String> {
        self.pending
            .lock()
            .map(|p| p.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// One pending condition; [`Latch::release`] marks it met. Dropping it unreleased keeps the
/// agent unready: a probe that died before its first result must not look ready.
#[derive(Debug)]
pub struct Latch {
    readiness: Readiness,
    what: String,
}

impl Latch {
    pub fn release(self) {
        if let Ok(mut pending) = self.readiness.pending.lock() {
            pending.remove(&self.what);
        }
    }
}

/// A readiness condition that comes and goes; see [`Readiness::condition`].
#[derive(Debug)]
pub struct Condition {
    readiness: Readiness,
    /// Why the agent is not ready, while the condition is unmet.
    reason: Option<String>,
}

impl Condition {
    /// Marks the condition unmet, with the reason `/readyz` shows.
    pub fn unmet(&mut self, reason: impl Into<String>) {
        let reason = reason.into();
        if self.reason.as_ref() == Some(&reason) {
            return;
        }
        if let Ok(mut pending) = self.readiness.pending.lock() {
            if let Some(old) = self.reason.take() {
                pending.remove(&old);
            }
            pending.insert(reason.clone());
        }
        self.reason = Some(reason);
    }

    /// Marks the condition met.
    pub fn met(&mut self) {
        if let Some(old) = self.reason.take()
            && let Ok(mut pending) = self.readiness.pending.lock()
        {
            pending.remove(&old);
        }
    }
}

/// Binds the listener now (so a busy port fails start-up) and serves until `cancel`.
pub async fn serve(
    addr: SocketAddr,
    readiness: Readiness,
    mode: ReadinessMode,
    prometheus: Option<Scrape>,
    cancel: CancellationToken,
) -> Result<HealthServer, BuildError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| BuildError::HealthListener { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    let mut app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move |state: State<Readiness>| readyz(state, mode)),
        )
        .route(
            "/readyz/kafka",
            get(|state: State<Readiness>| readyz(state, ReadinessMode::Kafka)),
        )
        .with_state(readiness);
    let routes = if let Some(scrape) = prometheus {
        app = app.route(
            "/metrics",
            get(move |headers: axum::http::HeaderMap| metrics(scrape.clone(), headers)),
        );
        "/healthz, /readyz, /metrics"
    } else {
        "/healthz, /readyz"
    };
    HttpListening {
        listen: local,
        routes,
    }
    .emit();
    let task = tokio::spawn(accept(listener, app, cancel));
    Ok(HealthServer { local, task })
}

/// At most this many HTTP connections at once: more would take the file descriptors the
/// probes need. Over it, a newcomer takes the place of the connection idle the longest.
const MAX_CONNECTIONS: usize = 64;
/// A client must send its request head within this long.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection (kept alive or not) lasts at most this long.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Accepts connections until `cancel`, each served under the cap and the timeouts.
async fn accept(listener: tokio::net::TcpListener, app: Router, cancel: CancellationToken) {
    let connections = Connections::new(MAX_CONNECTIONS);
    let (mut refused, mut shed) = (0u64, 0u64);
    loop {
        let (stream, _) = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, most likely: wait instead of spinning.
                    HttpAcceptFailed { error: &error }.emit();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let stream = Arc::new(stream);
        let slot = match connections.admit(Arc::clone(&stream)) {
            Admission::Admitted { slot, made_room } => {
                if made_room {
                    shed += 1;
                    HttpIdleShed {
                        shed,
                        limit: connections.limit(),
                    }
                    .emit();
                }
                slot
            }
            Admission::Full => {
                refused += 1;
                HttpOverLimit {
                    refused,
                    limit: connections.limit(),
                }
                .emit();
                continue;
            }
        };
        let service = request_service(app.clone(), slot.activity());
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let io = hyper_util::rt::TokioIo::new(SharedStream(stream));
            let connection = http.serve_connection(io, service);
            tokio::select! {
                () = cancel.cancelled() => {}
                () = slot.closed() => {}
                _ = tokio::time::timeout(CONNECTION_LIFETIME, connection) => {}
            }
        });
        // Let the connection read its request head before the next newcomer may push it out.
        tokio::task::yield_now().await;
    }
}

/// The routes, marking the connection busy from a request's head to its response.
fn request_service(
    app: Router,
    activity: Activity,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone {
    use hyper::service::Service as _;
    let routes = hyper_util::service::TowerToHyperService::new(app);
    hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        activity.busy();
        let activity = activity.clone();
        let response = routes.call(request);
        async move {
            let response = response.await;
            activity.idle();
            response
        }
    })
}

/// A running health listener.
pub struct HealthServer {
    pub local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl HealthServer {
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

/// The metrics in the Prometheus text format, or OpenMetrics (with exemplars) when asked.
async fn metrics(
    scrape: Scrape,
    headers: axum::http::HeaderMap,
) -> impl axum::response::IntoResponse {
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    match scrape.render(crate::telemetry::openmetrics::wanted(accept)) {
        Ok((content_type, text)) => (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, content_type)],
            text,
        ),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(axum::http::header::CONTENT_TYPE, "text/plain")],
            format!("cannot encode metrics: {error}\n"),
        ),
    }
}

/// Ready: always while the agent runs (`agent`), saying what Kafka waits for; or only once
/// Kafka is (`kafka`, and `/readyz/kafka`).
async fn readyz(State(readiness): State<Readiness>, mode: ReadinessMode) -> (StatusCode, String) {
    let pending = readiness.pending();
    match (mode, pending.is_empty()) {
        (_, true) => (StatusCode::OK, "ready\n".to_owned()),
        (ReadinessMode::Agent, false) => (
            StatusCode::OK,
            format!(
                "ready (the agent runs; Kafka: waiting for: {})\n",
                pending.join(", ")
            ),
        ),
        (ReadinessMode::Kafka, false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("waiting for: {}\n", pending.join(", ")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_latch_is_released() {
        let r = Readiness::new();
        let a = r.latch("a metadata");
        let b = r.latch("a first heartbeat");
        assert!(!r.is_ready());
        a.release();
        assert_eq!(r.pending(), ["a first heartbeat"]);
        drop(b);
        assert!(!r.is_ready(), "a dropped latch does not count as released");
    }

    #[test]
    fn a_condition_comes_and_goes_with_its_reason() {
        let r = Readiness::new();
        let mut topic = r.condition();
        assert!(r.is_ready(), "a condition starts met");
        topic.unmet("a: heartbeat topic t is missing");
        topic.unmet("a: heartbeat topic t is missing");
        assert_eq!(r.pending(), ["a: heartbeat topic t is missing"]);
        topic.unmet("a: heartbeat topic t is not readable");
        assert_eq!(r.pending(), ["a: heartbeat topic t is not readable"]);
        topic.met();
        assert!(r.is_ready());
    }
}
