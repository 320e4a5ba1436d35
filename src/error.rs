//! Error types of the library and the bounded `error.type` values they map to.

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
    /// SASL authentication or an ACL denied the request.
    Auth,
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
    pub const ALL: [ErrorKind; 10] = [
        Self::Timeout,
        Self::ConnectionRefused,
        Self::Dns,
        Self::Tls,
        Self::Auth,
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
            Self::Protocol => "protocol",
            Self::BrokerError => "broker_error",
            Self::Transport => "transport",
            Self::ClientError => "client_error",
            Self::Other => "_OTHER",
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
            | C::TopicAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::IllegalSASLState
            | C::UnsupportedSASLMechanism => Self::Auth,
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
            // Positive codes are errors the broker sent back.
            other if (other as i32) > 0 => Self::BrokerError,
            _ => Self::Other,
        }
    }

    /// Classifies an error returned by the rdkafka crate.
    pub fn from_kafka_error(error: &KafkaError) -> Self {
        match error.rdkafka_error_code() {
            Some(code) => Self::from_rdkafka_code(code),
            None => Self::Other,
        }
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
        source: opentelemetry_otlp::ExporterBuildError,
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

/// A Kafka request made by a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    // The cause is part of the message: these errors end up in logs and reports, and the
    // cause (timed out, refused, not authorized) is what the reader needs.
    #[error("{operation} failed: {source}")]
    Kafka {
        operation: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error("{operation} did not finish within {timeout:?}")]
    Timeout {
        operation: &'static str,
        timeout: std::time::Duration,
    },
    #[error("topic {topic}: {message}")]
    Topic {
        topic: String,
        message: String,
        kind: ErrorKind,
    },
    #[error("the blocking task of {operation} was cancelled")]
    Cancelled { operation: &'static str },
}

impl ProbeError {
    /// The `error.type` this failure is reported under.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Kafka { source, .. } => ErrorKind::from_kafka_error(source),
            Self::Timeout { .. } => ErrorKind::Timeout,
            Self::Topic { kind, .. } => *kind,
            Self::Cancelled { .. } => ErrorKind::Other,
        }
    }
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
        assert_eq!(
            ErrorKind::from_rdkafka_code(RDKafkaErrorCode::MessageTimedOut),
            ErrorKind::Timeout
        );
        assert_eq!(
            ErrorKind::from_rdkafka_code(RDKafkaErrorCode::NotLeaderForPartition),
            ErrorKind::BrokerError
        );
        assert_eq!(
            ErrorKind::from_rdkafka_code(RDKafkaErrorCode::SaslAuthenticationFailed),
            ErrorKind::Auth
        );
        assert_eq!(
            ErrorKind::from_rdkafka_code(RDKafkaErrorCode::QueueFull),
            ErrorKind::ClientError
        );
        assert_eq!(
            ErrorKind::from_rdkafka_code(RDKafkaErrorCode::Resolve),
            ErrorKind::Dns
        );
    }
}
