//! A real tansu broker process on a free loopback port, stopped when dropped.
//!
//! `scripts/test` installs the binary into `.tools/`; `CC_HEARTBEAT_TANSU` may point elsewhere.
//! A missing binary fails the test: it is never skipped.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Tansu {
    child: Child,
    pub port: u16,
    pub cluster_id: String,
}

fn binary() -> PathBuf {
    let path = std::env::var_os("CC_HEARTBEAT_TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/tansu/tansu"));
    assert!(
        path.is_file(),
        "tansu not found at {}: run ./scripts/test, which installs it (or set CC_HEARTBEAT_TANSU)",
        path.display()
    );
    path
}

impl Tansu {
    pub fn start() -> Self {
        Self::start_advertising(None)
    }

    /// Starts a broker that tells clients to connect to `advertised` (e.g. a TLS proxy in
    /// front of it) instead of its own port.
    pub fn start_advertising(advertised: Option<u16>) -> Self {
        let port = super::free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised_url = format!("tcp://127.0.0.1:{}", advertised.unwrap_or(port));
        let cluster_id = format!("tansu-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let child = Command::new(binary())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised_url,
            ])
            .args([
                "--storage-engine",
                "memory://tansu/",
                "--cluster-id",
                &cluster_id,
            ])
            // Keep the broker from exporting its own telemetry anywhere.
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let broker = Self {
            child,
            port,
            cluster_id,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on port {port} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        broker
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
