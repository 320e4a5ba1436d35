//! Reaching one broker stage by stage on a fresh connection: DNS, TCP connect, TLS
//! handshake (when the cluster uses TLS) and a Kafka ApiVersions round trip, each stage
//! timed on its own.
//!
//! A plain TCP connect to Confluent Cloud often reaches only a shared front end, so the
//! probe goes as far as a Kafka answer, which is allowed before authentication. The whole
//! probe is bounded by one timeout; the stage in progress when it runs out fails with
//! `timeout`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::TcpStream;

use super::metadata::Broker;
use super::tls;
use super::wire::{self, WireError};
use crate::error::{Chain, Classified, ErrorKind, TimedOut};

pub use super::metadata::BOOTSTRAP_ID;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Dns,
    Tcp,
    Tls,
    Kafka,
    /// An HTTP request, for HTTP services (the Schema Registry).
    Http,
}

impl Stage {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Dns => "dns",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Kafka => "kafka",
            Self::Http => "http",
        }
    }
}

/// Why a stage failed.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("name lookup failed")]
    Dns(#[source] Classified),
    #[error("connect failed")]
    Connect(#[source] Classified),
    #[error("TLS handshake failed")]
    Tls(#[source] Classified),
    #[error("ApiVersions failed")]
    Kafka(#[source] Classified),
    #[error("the HTTP request failed")]
    Http(#[source] Classified),
    #[error("the stage ran out of time")]
    Deadline(#[source] TimedOut),
}

/// A failed stage.
#[derive(Clone, Debug)]
pub struct Failure {
    pub stage: Stage,
    pub error: Arc<StageError>,
}

impl Failure {
    /// The `error.type` it is reported under.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::of(&*self.error)
    }

    /// What went wrong, with its causes.
    pub fn detail(&self) -> String {
        Chain(&*self.error).to_string()
    }
}

impl Serialize for Failure {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut f = s.serialize_struct("Failure", 3)?;
        f.serialize_field("stage", &self.stage)?;
        f.serialize_field("kind", self.kind().as_str())?;
        f.serialize_field("detail", &self.detail())?;
        f.end()
    }
}

/// The outcome of one probe of one broker.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub target: Broker,
    /// Stages that completed, in order, with their durations.
    #[serde(serialize_with = "serialize_stages")]
    pub stages: Vec<(Stage, Duration)>,
    /// The stage that failed and why.
    pub failure: Option<Failure>,
    /// How long the failed stage ran before failing.
    #[serde(skip)]
    pub failed_after: Option<Duration>,
    /// The address connected to.
    pub peer: Option<SocketAddr>,
    /// ApiVersions version the broker answered.
    pub api_version: Option<i16>,
    /// HTTP status the service answered (HTTP probes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// When the first stage began (the stages ran one after the other from here).
    #[serde(skip)]
    pub started: Instant,
    /// The trace this probe is kept in (it failed or was slow), when spans are on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

fn serialize_stages<S: serde::Serializer>(
    stages: &[(Stage, Duration)],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap as _;
    let mut map = s.serialize_map(Some(stages.len()))?;
    for (stage, d) in stages {
        map.serialize_entry(stage.as_str(), &(d.as_secs_f64() * 1000.0))?;
    }
    map.end()
}

impl Outcome {
    pub fn up(&self) -> bool {
        self.failure.is_none()
    }

    pub fn stage(&self, stage: Stage) -> Option<Duration> {
        self.stages
            .iter()
            .find(|(s, _)| *s == stage)
            .map(|(_, d)| *d)
    }
}

/// Probes one broker. `tls` is the cluster's TLS client config when it uses TLS.
pub async fn probe(
    target: &Broker,
    tls: Option<&Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> Outcome {
    probe_with_version(target, tls, timeout, wire::LATEST).await
}

/// Like [`probe`], starting ApiVersions at `version`: the version the broker answered last
/// time, so a broker without the latest version costs one round trip, not two.
pub async fn probe_with_version(
    target: &Broker,
    tls: Option<&Arc<rustls::ClientConfig>>,
    timeout: Duration,
    version: i16,
) -> Outcome {
    let (mut outcome, answer) = probe_with(
        target,
        tls,
        timeout,
        Stage::Kafka,
        |mut stream| async move { api_versions(&mut stream, version).await },
    )
    .await;
    outcome.api_version = answer.map(|a| a.version);
    outcome
}

/// A connected stream, plain or TLS.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// Reaches `target` stage by stage (DNS, TCP, and TLS when `tls` is given), then runs `app`
/// on the connected stream as stage `last`, all under one `timeout`. Returns what each stage
/// took (or where it failed) and what `app` answered.
pub async fn probe_with<T, Fut>(
    target: &Broker,
    tls: Option<&Arc<rustls::ClientConfig>>,
    timeout: Duration,
    last: Stage,
    app: impl FnOnce(Box<dyn Stream>) -> Fut,
) -> (Outcome, Option<T>)
where
    Fut: Future<Output = Result<T, Classified>>,
{
    let mut outcome = Outcome {
        target: target.clone(),
        stages: Vec::with_capacity(4),
        failure: None,
        failed_after: None,
        peer: None,
        api_version: None,
        http_status: None,
        started: Instant::now(),
        trace_id: None,
    };
    let mut stages = Stages {
        outcome: &mut outcome,
        deadline: tokio::time::Instant::now() + timeout,
        timeout,
    };
    let answer = match stages.connect(target, tls).await {
        Some(stream) => {
            let wrap = if last == Stage::Http {
                StageError::Http
            } else {
                StageError::Kafka
            };
            stages.stage(last, app(stream), wrap).await
        }
        None => None,
    };
    (outcome, answer)
}

/// Runs the stages of one probe under a shared deadline, recording each one's time.
struct Stages<'a> {
    outcome: &'a mut Outcome,
    deadline: tokio::time::Instant,
    timeout: Duration,
}

impl Stages<'_> {
    /// DNS, TCP and, with `tls`, the TLS handshake: the connected stream, or `None` after a
    /// failure.
    async fn connect(
        &mut self,
        target: &Broker,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Option<Box<dyn Stream>> {
        let addr = self
            .stage(
                Stage::Dns,
                resolve(&target.host, target.port),
                StageError::Dns,
            )
            .await?;
        self.outcome.peer = Some(addr);
        let connect = async {
            TcpStream::connect(addr)
                .await
                .map_err(|e| Classified::new(ErrorKind::Transport, e))
        };
        let tcp = self.stage(Stage::Tcp, connect, StageError::Connect).await?;
        let _ = tcp.set_nodelay(true);
        let Some(config) = tls else {
            return Some(Box::new(tcp));
        };
        let handshake = async {
            let name = tls::server_name(&target.host).ok_or_else(|| {
                Classified::new(
                    ErrorKind::Tls,
                    format!("{:?} is not a valid TLS server name", target.host),
                )
            })?;
            tokio_rustls::TlsConnector::from(Arc::clone(config))
                .connect(name, tcp)
                .await
                .map_err(|e| Classified::new(ErrorKind::Tls, e))
        };
        let stream = self.stage(Stage::Tls, handshake, StageError::Tls).await?;
        Some(Box::new(stream))
    }

    /// Runs one stage under the deadline; records its time, or its failure and `None`.
    async fn stage<T>(
        &mut self,
        stage: Stage,
        work: impl Future<Output = Result<T, Classified>>,
        wrap: fn(Classified) -> StageError,
    ) -> Option<T> {
        let started = Instant::now();
        let result = tokio::time::timeout_at(self.deadline, work).await;
        let took = started.elapsed();
        let error = match result {
            Ok(Ok(value)) => {
                self.outcome.stages.push((stage, took));
                return Some(value);
            }
            Ok(Err(error)) => wrap(error),
            Err(_) => StageError::Deadline(TimedOut {
                what: "no answer",
                after: self.timeout,
            }),
        };
        self.outcome.failure = Some(Failure {
            stage,
            error: Arc::new(error),
        });
        self.outcome.failed_after = Some(took);
        None
    }
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, Classified> {
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| Classified::new(ErrorKind::Dns, e))?
        .next()
        .ok_or_else(|| Classified::new(ErrorKind::Dns, "the name has no addresses"))
}

async fn api_versions<S>(stream: &mut S, version: i16) -> Result<wire::ApiVersions, Classified>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    wire::api_versions(stream, version).await.map_err(|e| {
        let kind = match &e {
            WireError::Io(_) => ErrorKind::Transport,
            WireError::Closed | WireError::Protocol(_) => ErrorKind::Protocol,
            WireError::Broker(_) => ErrorKind::BrokerError,
        };
        Classified::new(kind, e)
    })
}
