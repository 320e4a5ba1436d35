//! TLS for the broker probe's own connections, built from the cluster's TLS settings.
//!
//! The probe checks what a client would: the server name is the broker's host (SNI and
//! certificate name), verification is on unless the config switches it off, and the CA is
//! the configured file or else the system store.

use std::sync::Arc;

use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read certificates from {path}: {reason}")]
    Certificates { path: String, reason: String },
    #[error("cannot read the private key from {path}: {reason}")]
    Key { path: String, reason: String },
    #[error(
        "the TLS probe cannot use an encrypted private key (tls.key_password); only the Kafka clients can"
    )]
    EncryptedKey,
    #[error("invalid client certificate or key: {0}")]
    ClientAuth(rustls::Error),
    #[error("no CA certificates: tls.ca_file is not set and the system store is empty")]
    NoRoots,
}

/// A rustls client config for probing the brokers of one cluster.
pub fn client_config(tls: &TlsConfig) -> Result<Arc<ClientConfig>, TlsSetupError> {
    crate::telemetry::install_crypto_provider();
    let builder = ClientConfig::builder();
    let builder = if tls.verify {
        let mut roots = RootCertStore::empty();
        match &tls.ca_file {
            Some(path) => {
                for cert in read_certs(path)? {
                    roots.add(cert).map_err(|e| TlsSetupError::Certificates {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
                if roots.is_empty() {
                    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                }
            }
        }
        if roots.is_empty() {
            return Err(TlsSetupError::NoRoots);
        }
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate))
    };
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            if tls.key_password.is_some() {
                return Err(TlsSetupError::EncryptedKey);
            }
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsSetupError::Key {
                path: key.display().to_string(),
                reason: e.to_string(),
            })?;
            builder
                .with_client_auth_cert(read_certs(cert)?, key)
                .map_err(TlsSetupError::ClientAuth)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let error = |reason: String| TlsSetupError::Certificates {
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))?;
    if certs.is_empty() {
        return Err(error("no PEM certificates in the file".into()));
    }
    Ok(certs)
}

/// The broker probe's TLS config for a cluster; `None` when the cluster does not use TLS.
pub fn for_cluster(
    cluster: &crate::config::ClusterConfig,
) -> Result<Option<Arc<ClientConfig>>, TlsSetupError> {
    if cluster.security_protocol.uses_tls() {
        client_config(&cluster.tls).map(Some)
    } else {
        Ok(None)
    }
}

/// The server name a broker's certificate must carry.
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    ServerName::try_from(host.to_owned()).ok()
}

/// `tls.verify: false`: the handshake still happens and is timed, but any certificate passes.
#[derive(Debug)]
struct AcceptAnyCertificate;

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
