//! The bounded `error.type` values, the one classifier that maps any error to them, and the
//! errors of building the agent.
//!
//! Each operation has its own error type next to it (a metadata request, a topic creation, a
//! broker probe stage, …), every cause kept with `#[source]`. [`ErrorKind::of`] walks that
//! source chain, so the label comes from what really happened: a TLS handshake that timed out
//! is `timeout`, not `tls`.

use std::error::Error as StdError;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// The bounded set of `error.type` attribute values.
///
/// Every failure that reaches a metric is reduced to one of these, so a label
/// never carries free text and its cardinality stays fixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No answer within the deadline (message timeout, request timeout, probe timeout).
    Timeout,
    /// The peer refused the TCP connection.
    ConnectionRefused,
    /// A host name did not resolve.
    Dns,
    /// TLS handshake or certificate verification failed.
    Tls,
    /// SASL authentication (or the registry's basic auth) failed: the credentials.
    Auth,
    /// An ACL refused the request: the principal may not do this (create, write, read,
    /// describe a group).
    Authorization,
    /// The peer answered with something that is not the expected protocol.
    Protocol,
    /// The broker answered with a Kafka error code.
    BrokerError,
    /// An established connection broke (reset, closed).
    Transport,
    /// The local client refused the request (queue full, unknown partition, …).
    ClientError,
    /// Anything else; OpenTelemetry's reserved fallback value.
    Other,
}

impl ErrorKind {
    /// Every value, for documentation and tests.
    pub const ALL: [ErrorKind; 11] = [
        Self::Timeout,
        Self::ConnectionRefused,
        Self::Dns,
        Self::Tls,
        Self::Auth,
        Self::Authorization,
        Self::Protocol,
        Self::BrokerError,
        Self::Transport,
        Self::ClientError,
        Self::Other,
    ];

    /// The attribute value as exported.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::ConnectionRefused => "connection_refused",
            Self::Dns => "dns",
            Self::Tls => "tls",
            Self::Auth => "auth",
            Self::Authorization => "authorization",
            Self::Protocol => "protocol",
            Self::BrokerError => "broker_error",
            Self::Transport => "transport",
            Self::ClientError => "client_error",
            Self::Other => "_OTHER",
        }
    }

    /// Classifies an error by walking its source chain.
    ///
    /// Each link that says something is read: a timeout anywhere in the chain wins (a stage
    /// that ran out of time failed because of the time, whatever it was doing); otherwise the
    /// innermost link that can be classified decides, since it says what really happened. A
    /// chain that nothing classifies is `_OTHER`.
    pub fn of(error: &(dyn StdError + 'static)) -> Self {
        let mut found = Found::default();
        found.visit(error);
        if found.timeout {
            Self::Timeout
        } else {
            found.innermost.unwrap_or(Self::Other)
        }
    }

    /// Classifies a librdkafka error code.
    pub fn from_rdkafka_code(code: RDKafkaErrorCode) -> Self {
        use RDKafkaErrorCode as C;
        match code {
            C::MessageTimedOut | C::OperationTimedOut | C::RequestTimedOut | C::TimedOutQueue => {
                Self::Timeout
            }
            C::Resolve => Self::Dns,
            C::SSL => Self::Tls,
            C::Authentication
            | C::SaslAuthenticationFailed
            | C::IllegalSASLState
            | C::UnsupportedSASLMechanism => Self::Auth,
            C::TopicAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
            | C::DelegationTokenAuthorizationFailed => Self::Authorization,
            C::BrokerTransportFailure | C::AllBrokersDown => Self::Transport,
            C::BadMessage | C::BadCompression | C::InvalidMessage | C::UnsupportedVersion => {
                Self::Protocol
            }
            C::QueueFull
            | C::MessageSizeTooLarge
            | C::UnknownPartition
            | C::UnknownTopic
            | C::InvalidArgument
            | C::Fatal
            | C::State
            | C::Fail
            | C::BrokerDestroy => Self::ClientError,
            // Positive codes are errors the broker sent back; -1 is its UNKNOWN_SERVER_ERROR.
            other if (other as i32) > 0 || other == C::Unknown => Self::BrokerError,
            _ => Self::Other,
        }
    }
}

/// The Kafka protocol's name of the error a broker answered with, when the chain holds one
/// (`NOT_ENOUGH_REPLICAS`): the `kafka.error.code` beside `error.type`. The innermost code
/// wins; librdkafka's own (negative) codes are not the broker's and give `None`.
pub fn broker_error_code(error: &(dyn StdError + 'static)) -> Option<&'static str> {
    let mut found = None;
    let mut link = Some(error);
    while let Some(e) = link {
        let code = e
            .downcast_ref::<KafkaError>()
            .and_then(KafkaError::rdkafka_error_code)
            .or_else(|| e.downcast_ref::<RDKafkaErrorCode>().copied());
        if let Some(name) = code.and_then(|c| crate::kafka::error_codes::protocol_name(c as i32)) {
            found = Some(name);
        }
        link = e.source();
    }
    found
}

#[derive(Default)]
struct Found {
    timeout: bool,
    innermost: Option<ErrorKind>,
}

impl Found {
    fn visit(&mut self, error: &(dyn StdError + 'static)) {
        let mut link = Some(error);
        while let Some(e) = link {
            if let Some(kind) = classify_link(e) {
                self.timeout |= kind == ErrorKind::Timeout;
                self.innermost = Some(kind);
            }
            // An io::Error hides the error it wraps from `source()` (it yields that error's
            // own source): read the wrapped error too, e.g. rustls' reason for a handshake.
            if let Some(inner) = e
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
            {
                self.visit(inner);
                return;
            }
            link = e.source();
        }
    }
}

/// What one link of an error chain says on its own, if anything.
fn classify_link(e: &(dyn StdError + 'static)) -> Option<ErrorKind> {
    if let Some(kafka) = e.downcast_ref::<KafkaError>() {
        return kafka.rdkafka_error_code().map(ErrorKind::from_rdkafka_code);
    }
    if let Some(code) = e.downcast_ref::<RDKafkaErrorCode>() {
        return Some(ErrorKind::from_rdkafka_code(*code));
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        return io_kind(io.kind());
    }
    if e.is::<tokio::time::error::Elapsed>() || e.is::<TimedOut>() {
        return Some(ErrorKind::Timeout);
    }
    if e.is::<rustls::Error>() {
        return Some(ErrorKind::Tls);
    }
    if let Some(classified) = e.downcast_ref::<Classified>() {
        return Some(classified.kind);
    }
    None
}

fn io_kind(kind: std::io::ErrorKind) -> Option<ErrorKind> {
    use std::io::ErrorKind as K;
    match kind {
        K::TimedOut | K::WouldBlock => Some(ErrorKind::Timeout),
        K::ConnectionRefused => Some(ErrorKind::ConnectionRefused),
        K::ConnectionReset
        | K::ConnectionAborted
        | K::BrokenPipe
        | K::NotConnected
        | K::UnexpectedEof
        | K::HostUnreachable
        | K::NetworkUnreachable
        | K::AddrNotAvailable => Some(ErrorKind::Transport),
        _ => None,
    }
}

/// A link that states its own kind. An operation error puts one in its chain where the kind
/// is known from where the error happened: a name lookup that failed is `dns` whatever the
/// resolver's own error says, an answer that is not Kafka is `protocol`.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct Classified {
    pub kind: ErrorKind,
    #[source]
    source: Box<dyn StdError + Send + Sync>,
}

impl Classified {
    pub fn new(kind: ErrorKind, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self {
            kind,
            source: source.into(),
        }
    }
}

/// Something that did not finish within its deadline.
#[derive(Debug, thiserror::Error)]
#[error("{what} within {}", humantime::format_duration(*.after))]
pub struct TimedOut {
    /// What did not happen in time, e.g. "no answer".
    pub what: &'static str,
    pub after: std::time::Duration,
}

/// Displays an error with its causes, `outer: inner: innermost`, for log lines and reports.
/// A cause whose text the previous message already contains is not repeated.
pub struct Chain<'a>(pub &'a (dyn StdError + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut previous = self.0.to_string();
        f.write_str(&previous)?;
        let mut link = self.0.source();
        while let Some(e) = link {
            let text = e.to_string();
            if !text.is_empty() && !previous.contains(&text) {
                write!(f, ": {text}")?;
            }
            previous = text;
            link = e.source();
        }
        Ok(())
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Failure to set up a Kafka client or the agent's parts from a valid config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cluster {cluster}: could not create the {role} client")]
    KafkaClient {
        cluster: String,
        role: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error("could not build the OTLP exporter for {endpoint}")]
    OtlpExporter {
        endpoint: String,
        #[source]
        source: crate::telemetry::TransportError,
    },
    #[error("could not listen on {addr} for the health endpoints")]
    HealthListener {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("could not set up the Prometheus endpoint")]
    Prometheus(#[source] opentelemetry_sdk::error::OTelSdkError),
    #[error("could not start the mock cluster")]
    MockCluster(#[source] KafkaError),
    #[error("invalid demo settings")]
    DemoSettings(#[source] crate::config::ConfigErrors),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_type_values_are_unique_and_lowercase_except_other() {
        let mut seen = std::collections::HashSet::new();
        for kind in ErrorKind::ALL {
            assert!(seen.insert(kind.as_str()), "duplicate {kind}");
            if kind != ErrorKind::Other {
                assert_eq!(kind.as_str(), kind.as_str().to_lowercase());
            }
        }
    }

    #[test]
    fn librdkafka_codes_map_to_expected_kinds() {
        for (code, kind) in [
            (RDKafkaErrorCode::MessageTimedOut, ErrorKind::Timeout),
            (
                RDKafkaErrorCode::NotLeaderForPartition,
                ErrorKind::BrokerError,
            ),
            (RDKafkaErrorCode::SaslAuthenticationFailed, ErrorKind::Auth),
            (
                RDKafkaErrorCode::TopicAuthorizationFailed,
                ErrorKind::Authorization,
            ),
            (RDKafkaErrorCode::QueueFull, ErrorKind::ClientError),
            (RDKafkaErrorCode::Resolve, ErrorKind::Dns),
        ] {
            assert_eq!(ErrorKind::from_rdkafka_code(code), kind, "{code:?}");
        }
    }

    #[test]
    fn the_brokers_error_code_is_named_as_the_protocol_names_it() {
        let produce = Stage(Box::new(KafkaError::MessageProduction(
            RDKafkaErrorCode::NotEnoughReplicas,
        )));
        assert_eq!(broker_error_code(&produce), Some("NOT_ENOUGH_REPLICAS"));
        let leader = Stage(Box::new(RDKafkaErrorCode::NotLeaderForPartition));
        assert_eq!(broker_error_code(&leader), Some("NOT_LEADER_OR_FOLLOWER"));
        let local = Stage(Box::new(KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageTimedOut,
        )));
        assert_eq!(broker_error_code(&local), None, "librdkafka's own code");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("stage failed")]
    struct Stage(#[source] Box<dyn StdError + Send + Sync>);

    #[test]
    fn the_classifier_reads_the_whole_chain() {
        let io = |kind| std::io::Error::new(kind, "x");
        // The innermost link that says something decides.
        let tls = Stage(Box::new(Classified::new(ErrorKind::Tls, "handshake")));
        assert_eq!(ErrorKind::of(&tls), ErrorKind::Tls);
        let refused = Stage(Box::new(io(std::io::ErrorKind::ConnectionRefused)));
        assert_eq!(ErrorKind::of(&refused), ErrorKind::ConnectionRefused);
        let inner_rustls = Stage(Box::new(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        )));
        assert_eq!(ErrorKind::of(&inner_rustls), ErrorKind::Tls);
        // A timeout anywhere wins: a TLS stage that ran out of time is a timeout.
        let tls_timeout = Stage(Box::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            Classified::new(ErrorKind::Tls, "handshake"),
        )));
        assert_eq!(ErrorKind::of(&tls_timeout), ErrorKind::Timeout);
        let kafka = Stage(Box::new(KafkaError::MetadataFetch(
            RDKafkaErrorCode::OperationTimedOut,
        )));
        assert_eq!(ErrorKind::of(&kafka), ErrorKind::Timeout);
        // Nothing known: the reserved fallback.
        assert_eq!(
            ErrorKind::of(&Stage(Box::new(io(std::io::ErrorKind::Other)))),
            ErrorKind::Other
        );
    }
}
