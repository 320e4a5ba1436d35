//! The `cc-heartbeat` binary run as a child process, the way users and Kubernetes run it.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

pub const BINARY: &str = env!("CARGO_BIN_EXE_cc-heartbeat");

/// A command for the binary with a clean environment: nothing from the test's environment
/// (OTEL_* variables above all) leaks in unless given.
pub fn command(env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BINARY);
    cmd.env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs the binary to completion with `args` and returns its output.
pub fn run_to_end(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Output {
    let mut child = command(env)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cc-heartbeat");
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("cc-heartbeat {args:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Writes `text` to a temporary config file.
pub fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("temp file");
    file.write_all(text.as_bytes()).expect("write config");
    file
}

/// GET with the same TLS provider the agent uses (reqwest is built without a default one).
pub async fn http_get(url: &str) -> reqwest::Result<reqwest::Response> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::get(url).await
}

/// `cc-heartbeat run` in the background, its stdout and stderr captured to files.
pub struct AgentProcess {
    child: Child,
    _config: tempfile::NamedTempFile,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl AgentProcess {
    pub fn start(config: &str, env: &[(&str, &str)]) -> Self {
        let config_file = config_file(config);
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("agent.log");
        let out = std::fs::File::create(&log).expect("log file");
        let child = command(env)
            .args(["run", "--config"])
            .arg(config_file.path())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("spawn cc-heartbeat run");
        Self {
            child,
            _config: config_file,
            log,
            _dir: dir,
        }
    }

    /// Everything the process wrote so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process's resident set, from /proc.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Polls `/readyz/kafka` until it answers 200: the clusters answered and the first
    /// heartbeats made it.
    pub async fn wait_ready(&mut self, http_port: u16, timeout: Duration) {
        let url = format!("http://127.0.0.1:{http_port}/readyz/kafka");
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(response) = http_get(&url).await
                && response.status() == 200
            {
                return;
            }
            assert!(
                self.is_running(),
                "agent exited before ready:\n{}",
                self.output()
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "agent not ready within {timeout:?}:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls the agent's `/metrics` until `done` says yes; fails after `timeout`, showing the
    /// last exposition and the agent's output.
    pub async fn scrape_until(
        &self,
        http_port: u16,
        timeout: Duration,
        what: &str,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let url = format!("http://127.0.0.1:{http_port}/metrics");
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let text = match http_get(&url).await {
                Ok(response) => response.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if done(&text) {
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within {timeout:?}:\n{text}\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(self, timeout: Duration) -> (ExitStatus, String) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait_exit(timeout).await
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        nix::sys::signal::kill(pid, signal).expect("signal the agent");
    }

    /// Waits for the exit status; fails after `timeout`, killing the agent.
    pub async fn wait_exit(mut self, timeout: Duration) -> (ExitStatus, String) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return (status, self.output());
            }
            if tokio::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "agent did not exit within {timeout:?} of the signal:\n{}",
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Counts, per partition, the heartbeats on `topic` sent by agent `instance`: read from the
/// beginning until the topic stays quiet for two seconds.
pub async fn own_messages_on_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    instance: &str,
) -> BTreeMap<i32, u64> {
    let bootstrap = bootstrap.to_owned();
    let topic = topic.to_owned();
    let needle = format!("\"instance\":\"{instance}\"");
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "test-counter")
            .set("enable.auto.commit", "false")
            .create()
            .expect("counting consumer");
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition_offset(&topic, p, Offset::Beginning)
                .expect("partition");
        }
        consumer.assign(&list).expect("assign");
        let mut counts = BTreeMap::new();
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < Duration::from_secs(2) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                quiet_since = Instant::now();
                let payload = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                if payload.contains(&needle) {
                    *counts.entry(m.partition()).or_insert(0) += 1;
                }
            }
        }
        counts
    })
    .await
    .expect("count task")
}

/// The sum of the exposition's `metric` points whose label text contains `label` (every
/// point of it when `label` is empty).
pub fn sum_with(exposition: &str, metric: &str, label: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The sum of the exposition's `metric` points whose label text contains every one of
/// `labels`.
pub fn sum_matching(exposition: &str, metric: &str, labels: &[&str]) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Whether the exposition has a point of `metric` whose label text contains every one of
/// `labels`, and its value.
pub fn point_with(exposition: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && labels.iter().all(|x| l.contains(x)))
        .find_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
}
