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
    advertised: u16,
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
        let cluster_id = format!("tansu-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let advertised = advertised.unwrap_or(port);
        let child = spawn(port, advertised, &cluster_id);
        let broker = Self {
            child,
            port,
            cluster_id,
            advertised,
        };
        broker.wait_listening();
        broker
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on port {} within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the broker (SIGKILL: its in-memory data is gone) and starts a new one on the same
    /// port, with the same cluster id. The port can stay busy for a moment after the kill, so
    /// the start is retried until it listens.
    pub fn restart(&mut self, down_for: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down_for);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.child = spawn(self.port, self.advertised, &self.cluster_id);
            std::thread::sleep(Duration::from_millis(200));
            if self.child.try_wait().ok().flatten().is_none()
                && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return;
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
            assert!(
                Instant::now() < deadline,
                "tansu could not listen on port {} again within 30 s",
                self.port
            );
        }
    }

    /// Deletes `topic` through tansu's own command line, as an operator would.
    pub fn delete_topic(&self, topic: &str) {
        self.topic_command(&["delete", topic]);
    }

    /// Creates `topic` through tansu's own command line.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        self.topic_command(&["create", "--partitions", &partitions.to_string(), topic]);
    }

    fn topic_command(&self, args: &[&str]) {
        let broker = format!("tcp://127.0.0.1:{}", self.port);
        let status = Command::new(binary())
            .arg("topic")
            .args(&args[..1])
            .args(["--broker", &broker])
            .args(&args[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("tansu topic");
        assert!(status.success(), "tansu topic {args:?}: {status}");
    }

    /// Freezes the broker process (SIGSTOP): connections stay open, nothing is answered.
    pub fn freeze(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    /// Lets a frozen broker go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        nix::sys::signal::kill(pid, signal).expect("signal tansu");
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn spawn(port: u16, advertised: u16, cluster_id: &str) -> Child {
    let url = format!("tcp://127.0.0.1:{port}");
    let advertised_url = format!("tcp://127.0.0.1:{advertised}");
    Command::new(binary())
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
            cluster_id,
        ])
        // Keep the broker from exporting its own telemetry anywhere.
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tansu")
}

impl Drop for Tansu {
    fn drop(&mut self) {
        // A frozen broker must be let go before it can be killed and reaped.
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(0));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
