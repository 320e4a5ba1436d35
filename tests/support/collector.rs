//! A real OpenTelemetry Collector, built by `scripts/install-test-tools` with the
//! OpenTelemetry Collector Builder from tests/otelcol/builder.yaml (the components the shipped
//! collector configs use), loading the shipped configs themselves. A test's own overlay (a
//! further `--config`, merged over them as the collector merges its configs) moves the ports
//! to free ones and adds what the test needs. `CC_HEARTBEAT_OTELCOL` may point at another
//! binary; a missing one fails the test: it is never skipped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::local::{free_port, spawn};

pub fn binary() -> PathBuf {
    let path = std::env::var_os("CC_HEARTBEAT_OTELCOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/otelcol"));
    assert!(
        path.is_file(),
        "the test collector not found at {}: run ./scripts/test, which builds it (or set CC_HEARTBEAT_OTELCOL)",
        path.display()
    );
    path
}

/// A file of the repository.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The shipped collector config.
pub fn shipped() -> PathBuf {
    repo("deploy/kubernetes/collector/config/otel-collector.yaml")
}

/// `otelcol validate` on `configs`, merged in order: whether it passed, and what it said.
pub fn validate(configs: &[&Path], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(binary());
    cmd.arg("validate");
    for config in configs {
        cmd.arg("--config").arg(config);
    }
    let out = cmd
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run the collector");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A collector process on free loopback ports.
pub struct Collector {
    child: Option<Child>,
    configs: Vec<PathBuf>,
    dir: tempfile::TempDir,
    pub otlp_grpc: u16,
    pub otlp_http: u16,
    pub prometheus: u16,
    pub health: u16,
}

impl Collector {
    /// Runs the collector on `configs` (the shipped ones, in order), then an overlay that
    /// moves its listeners to free loopback ports (and turns off its own metrics endpoint,
    /// whose port every collector would share), then `overlay` (YAML, may be empty).
    pub fn start(configs: &[PathBuf], overlay: &str) -> Self {
        let dir = tempfile::tempdir().expect("collector dir");
        let (otlp_grpc, otlp_http, prometheus, health) =
            (free_port(), free_port(), free_port(), free_port());
        let ports = dir.path().join("ports.yaml");
        std::fs::write(
            &ports,
            format!(
                "receivers:\n  otlp:\n    protocols:\n      grpc: {{endpoint: '127.0.0.1:{otlp_grpc}'}}\n      http: {{endpoint: '127.0.0.1:{otlp_http}'}}\n\
                 exporters:\n  prometheus: {{endpoint: '127.0.0.1:{prometheus}'}}\n\
                 extensions:\n  health_check: {{endpoint: '127.0.0.1:{health}'}}\n\
                 service:\n  telemetry:\n    metrics: {{level: none}}\n"
            ),
        )
        .expect("ports overlay");
        let mut all = configs.to_vec();
        all.push(ports);
        if !overlay.is_empty() {
            let path = dir.path().join("test.yaml");
            std::fs::write(&path, overlay).expect("test overlay");
            all.push(path);
        }
        let mut collector = Self {
            child: None,
            configs: all,
            dir,
            otlp_grpc,
            otlp_http,
            prometheus,
            health,
        };
        collector.launch();
        collector
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("collector.log"))
            .expect("collector log");
        let mut cmd = Command::new(binary());
        for config in &self.configs {
            cmd.arg("--config").arg(config);
        }
        cmd.env_clear()
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        self.child = Some(spawn(cmd));
        self.wait_healthy(Duration::from_secs(30));
    }

    /// Waits until the health check extension says the collector is up.
    pub fn wait_healthy(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.health)) {
                use std::io::{Read as _, Write as _};
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = stream.write_all(b"GET / HTTP/1.0\r\n\r\n");
                let mut answer = String::new();
                let _ = stream.read_to_string(&mut answer);
                if answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("the collector exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the collector was not healthy within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the collector as a rollout does (SIGTERM: it drains its queues first).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the stopped collector again on the same ports and configs.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// What the collector logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("collector.log")).unwrap_or_default()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
