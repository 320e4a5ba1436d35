//! TLS in front of a broker: certificates generated at test time (nothing secret is
//! committed) and a TLS-terminating proxy that forwards to a plaintext listener.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A CA, and a server and a client certificate it signed, written to a temporary directory.
pub struct Certificates {
    dir: tempfile::TempDir,
    server_cert_pem: String,
    server_key_pem: String,
}

impl Certificates {
    /// A fresh CA, and a server certificate for the given names (DNS names or IPs).
    pub fn generate(server_names: &[&str]) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("cc-heartbeat test CA {}", uuid::Uuid::new_v4().simple()),
        );
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().unwrap();
        let names: Vec<String> = server_names.iter().map(|s| (*s).to_owned()).collect();
        let server_cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&server_key, &issuer)
            .unwrap();

        let client_key = KeyPair::generate().unwrap();
        let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        client_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "cc-heartbeat-agent");
        let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: &str| std::fs::write(dir.path().join(name), pem).unwrap();
        write("ca.pem", &ca_cert.pem());
        write("server.pem", &server_cert.pem());
        write("server-key.pem", &server_key.serialize_pem());
        write("client.pem", &client_cert.pem());
        write("client-key.pem", &client_key.serialize_pem());
        Self {
            dir,
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
        }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A PEM file of the directory: `server.pem`, `server-key.pem`, `client.pem` (a client
    /// certificate the CA signed, for mTLS) or `client-key.pem`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The server's private key (PKCS#8) and certificate in one PEM file, as Kafka's
    /// `ssl.keystore.type=PEM` reads them.
    pub fn server_keystore_pem(&self) -> String {
        format!("{}{}", self.server_key_pem, self.server_cert_pem)
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let certs = CertificateDer::pem_slice_iter(self.server_cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes()).unwrap();
        Arc::new(
            rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap(),
        )
    }
}

/// Terminates TLS on `listener` and forwards each connection to `127.0.0.1:upstream`.
pub struct TlsProxy {
    pub port: u16,
    stop: CancellationToken,
}

impl TlsProxy {
    pub async fn start(listener: TcpListener, upstream: u16, certs: &Certificates) -> Self {
        let port = listener.local_addr().unwrap().port();
        let acceptor = tokio_rustls::TlsAcceptor::from(certs.server_config());
        let stop = CancellationToken::new();
        let cancel = stop.clone();
        tokio::spawn(async move {
            loop {
                let (socket, _) = tokio::select! {
                    () = cancel.cancelled() => return,
                    accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that fails the handshake (wrong CA, wrong name) just ends here.
                    let Ok(mut tls) = acceptor.accept(socket).await else {
                        return;
                    };
                    let Ok(mut plain) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        Self { port, stop }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
