//! Apache Kafka for the tests: a KRaft cluster of three combined broker+controller nodes on
//! loopback, one rack (zone) each, with the listeners users meet:
//!
//! | listener | security | who |
//! |---|---|---|
//! | `PLAINTEXT` | none | the harness (principal `ANONYMOUS`, a super user), inter-broker |
//! | `SASL_PLAINTEXT` | PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 | [`AGENT`] and users a test makes |
//! | `SASL_SSL` | the same over TLS with a CA made at start (hostname verification on) | the same |
//! | `OAUTH` | SASL_PLAINTEXT with OAUTHBEARER, JWTs checked against [`Oidc`]'s JWKS | [`OIDC_CLIENT`] |
//!
//! The StandardAuthorizer is on: `ANONYMOUS` and `admin` are super users, every other
//! principal has exactly the ACLs a test gives it; [`AGENT`] and [`OIDC_CLIENT`] start with
//! those the README lists for the agent ([`Kafka::grant_agent_acls`]).
//!
//! [`Kafka::shared`] is one cluster per test binary, for tests that leave it as they found
//! it; a test that breaks a broker starts its own with [`Kafka::start`]. `scripts/test`
//! installs the broker (Apache Kafka from Maven Central) and the admin helper
//! (tests/kafka/KafkaTestAdmin.java) under `.tools/kafka`; `CC_HEARTBEAT_KAFKA` may point
//! elsewhere. A missing install fails the test: it is never skipped.
//!
//! Every JVM is started by one long-lived thread with `PR_SET_PDEATHSIG`, so the cluster
//! dies with the test process however it ends.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::local::{free_port, spawn};
use super::oidc::Oidc;
use super::tls::Certificates;

/// The restricted principal the agent runs as in authorisation tests (PLAIN and SCRAM).
pub const AGENT: &str = "agent";
pub const AGENT_PASSWORD: &str = "agent-secret-51d3";
/// The OIDC client whose tokens the OAUTH listener accepts; its principal is this name.
pub const OIDC_CLIENT: &str = "cc-heartbeat-oidc";
pub const OIDC_SECRET: &str = "oidc-secret-a9e4";
const ADMIN_PASSWORD: &str = "admin-secret-77c0";

/// What Kafka's own consumer read on a heartbeat topic.
#[derive(Debug, Default)]
pub struct Witnessed {
    /// Records on the topic, anyone's.
    pub records: u64,
    /// The agent's heartbeats, as (partition, sequence number).
    pub heartbeats: std::collections::BTreeSet<(i32, u64)>,
    /// The agent's heartbeats that are on the topic more than once (extra copies).
    pub duplicates: u64,
    /// The `traceparent` header each heartbeat carried, if any.
    pub traceparents: std::collections::BTreeMap<(i32, u64), String>,
    /// The agent's heartbeats found after one with a higher sequence number on their partition
    /// (first copies only), in offset order.
    pub out_of_order: u64,
    /// Each partition's sequence numbers in offset order.
    pub order: std::collections::BTreeMap<i32, Vec<u64>>,
}

/// One node's ports.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub plaintext: u16,
    pub controller: u16,
    pub sasl: u16,
    pub sasl_ssl: u16,
    pub oauth: u16,
}

/// Which listener a bootstrap string names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    Plaintext,
    Sasl,
    SaslSsl,
    Oauth,
}

/// Broker settings beyond the harness's, e.g. `("min.insync.replicas", "3")`.
pub type Overrides = &'static [(&'static str, &'static str)];

struct Node {
    id: i32,
    ports: Ports,
    dir: PathBuf,
    child: Mutex<Option<Child>>,
}

pub struct Kafka {
    pub cluster_id: String,
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
    certs: Certificates,
    oidc: Oidc,
    admin: Mutex<Option<Helper>>,
    overrides: Vec<(String, String)>,
}

/// Where `scripts/install-test-tools` put the broker's jars and the admin helper.
pub fn home() -> PathBuf {
    let path = std::env::var_os("CC_HEARTBEAT_KAFKA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/kafka"));
    assert!(
        path.join("lib").is_dir() && path.join("helper/KafkaTestAdmin.class").is_file(),
        "Apache Kafka not found at {}: run ./scripts/test, which installs it (or set CC_HEARTBEAT_KAFKA)",
        path.display()
    );
    path
}

fn classpath() -> String {
    let home = home();
    format!("{}/lib/*:{}/helper", home.display(), home.display())
}

impl Kafka {
    /// The cluster this test binary shares: started by the first test that asks.
    pub fn shared() -> &'static Kafka {
        static SHARED: OnceLock<Kafka> = OnceLock::new();
        SHARED.get_or_init(|| Kafka::start(&[]))
    }

    /// A cluster of its own, for a test that stops, freezes or breaks brokers.
    pub fn start(overrides: Overrides) -> Kafka {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("cc-heartbeat-kafka-")
            .tempdir()
            .expect("kafka dir");
        let certs = Certificates::generate(&["127.0.0.1", "localhost"]);
        let oidc = Oidc::start(OIDC_CLIENT, OIDC_SECRET);
        let nodes: Vec<Node> = (1..=3)
            .map(|id| Node {
                id,
                ports: Ports {
                    plaintext: free_port(),
                    controller: free_port(),
                    sasl: free_port(),
                    sasl_ssl: free_port(),
                    oauth: free_port(),
                },
                dir: dir.path().join(format!("node-{id}")),
                child: Mutex::new(None),
            })
            .collect();
        let kafka = Kafka {
            cluster_id: cluster_id(),
            nodes,
            dir,
            certs,
            oidc,
            admin: Mutex::new(None),
            overrides: overrides
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        kafka.write_files();
        // Formatting is a JVM each: in parallel.
        let formats: Vec<Child> = kafka.nodes.iter().map(|n| kafka.format(n)).collect();
        for (mut format, node) in formats.into_iter().zip(&kafka.nodes) {
            let status = format.wait().expect("format");
            assert!(
                status.success(),
                "formatting node {} failed: {}",
                node.id,
                std::fs::read_to_string(node.dir.join("format.log")).unwrap_or_default()
            );
        }
        for node in &kafka.nodes {
            kafka.start_node(node.id);
        }
        kafka.wait_brokers(3, Duration::from_secs(90));
        kafka.grant_agent_acls(OIDC_CLIENT);
        kafka.grant_agent_acls(AGENT);
        kafka.wait_authorized(AGENT, AGENT_PASSWORD);
        eprintln!(
            "Apache Kafka cluster {} up in {:.1} s (PLAINTEXT {})",
            kafka.cluster_id,
            started.elapsed().as_secs_f64(),
            kafka.bootstrap()
        );
        kafka
    }

    fn node(&self, id: i32) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    pub fn ports(&self, id: i32) -> Ports {
        self.node(id).ports
    }

    pub fn node_ids(&self) -> Vec<i32> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// The rack (zone) of node `id`.
    pub fn rack(id: i32) -> String {
        format!(
            "zone-{}",
            char::from(b'a' + u8::try_from(id - 1).unwrap_or(0))
        )
    }

    /// The PLAINTEXT bootstrap list (the harness's, unrestricted).
    pub fn bootstrap(&self) -> String {
        self.bootstrap_on(Listener::Plaintext)
    }

    pub fn bootstrap_on(&self, listener: Listener) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let port = match listener {
                    Listener::Plaintext => n.ports.plaintext,
                    Listener::Sasl => n.ports.sasl,
                    Listener::SaslSsl => n.ports.sasl_ssl,
                    Listener::Oauth => n.ports.oauth,
                };
                format!("127.0.0.1:{port}")
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The CA the SASL_SSL listener's certificates are signed by.
    pub fn ca_file(&self) -> PathBuf {
        self.certs.ca_file()
    }

    /// The OIDC provider whose tokens the OAUTH listener accepts.
    pub fn oidc(&self) -> &Oidc {
        &self.oidc
    }

    fn write_files(&self) {
        let ssl = self.dir.path().join("ssl");
        std::fs::create_dir_all(&ssl).expect("ssl dir");
        std::fs::write(ssl.join("keystore.pem"), self.certs.server_keystore_pem())
            .expect("keystore");
        std::fs::copy(self.certs.ca_file(), ssl.join("truststore.pem")).expect("truststore");
        std::fs::write(self.dir.path().join("log4j2.yaml"), LOG4J).expect("log4j config");
        let voters = self
            .nodes
            .iter()
            .map(|n| format!("{}@127.0.0.1:{}", n.id, n.ports.controller))
            .collect::<Vec<_>>()
            .join(",");
        for node in &self.nodes {
            std::fs::create_dir_all(&node.dir).expect("node dir");
            let text = self.properties(node, &voters, &ssl);
            std::fs::write(node.dir.join("server.properties"), text).expect("properties");
        }
    }

    fn properties(&self, node: &Node, voters: &str, ssl: &Path) -> String {
        let p = node.ports;
        let plain_users =
            format!("user_admin=\"{ADMIN_PASSWORD}\" user_{AGENT}=\"{AGENT_PASSWORD}\"");
        let mut lines = vec![
            "process.roles=broker,controller".to_owned(),
            format!("node.id={}", node.id),
            format!("controller.quorum.voters={voters}"),
            format!(
                "listeners=PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{},SASL_PLAINTEXT://127.0.0.1:{},SASL_SSL://127.0.0.1:{},OAUTH://127.0.0.1:{}",
                p.plaintext, p.controller, p.sasl, p.sasl_ssl, p.oauth
            ),
            format!(
                "advertised.listeners=PLAINTEXT://127.0.0.1:{},SASL_PLAINTEXT://127.0.0.1:{},SASL_SSL://127.0.0.1:{},OAUTH://127.0.0.1:{}",
                p.plaintext, p.sasl, p.sasl_ssl, p.oauth
            ),
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,OAUTH:SASL_PLAINTEXT".to_owned(),
            "controller.listener.names=CONTROLLER".to_owned(),
            "inter.broker.listener.name=PLAINTEXT".to_owned(),
            format!("log.dirs={}", node.dir.join("data").display()),
            format!("broker.rack={}", Self::rack(node.id)),
            // Authorisation as on a managed cluster: nothing without an ACL.
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer".to_owned(),
            "super.users=User:ANONYMOUS;User:admin".to_owned(),
            "allow.everyone.if.no.acl.found=false".to_owned(),
            // PLAIN and SCRAM on the SASL listeners.
            "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512".to_owned(),
            // Connections re-authenticate every few seconds (KIP-368), as on managed clusters,
            // so a deleted credential is refused on connections already open.
            "connections.max.reauth.ms=5000".to_owned(),
        ];
        for listener in ["sasl_plaintext", "sasl_ssl"] {
            lines.push(format!(
                "listener.name.{listener}.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};"
            ));
            for scram in ["scram-sha-256", "scram-sha-512"] {
                lines.push(format!(
                    "listener.name.{listener}.{scram}.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
                ));
            }
        }
        lines.extend([
            "listener.name.sasl_ssl.ssl.keystore.type=PEM".to_owned(),
            format!(
                "listener.name.sasl_ssl.ssl.keystore.location={}",
                ssl.join("keystore.pem").display()
            ),
            "listener.name.sasl_ssl.ssl.truststore.type=PEM".to_owned(),
            format!(
                "listener.name.sasl_ssl.ssl.truststore.location={}",
                ssl.join("truststore.pem").display()
            ),
            // OAUTHBEARER: Kafka's own validation of JWTs against the test's JWKS.
            "listener.name.oauth.sasl.enabled.mechanisms=OAUTHBEARER".to_owned(),
            "listener.name.oauth.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;".to_owned(),
            "listener.name.oauth.oauthbearer.sasl.server.callback.handler.class=org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler".to_owned(),
            format!("sasl.oauthbearer.jwks.endpoint.url={}", self.oidc.jwks_url()),
            format!("sasl.oauthbearer.expected.issuer={}", self.oidc.issuer()),
            format!("sasl.oauthbearer.expected.audience={}", super::oidc::AUDIENCE),
            // Fast test settings: small internal topics, no rebalance delay, a dead broker
            // fenced within seconds, no automatic leader moves under a test's feet.
            "offsets.topic.replication.factor=3".to_owned(),
            "offsets.topic.num.partitions=3".to_owned(),
            "transaction.state.log.replication.factor=3".to_owned(),
            "transaction.state.log.num.partitions=3".to_owned(),
            "share.coordinator.state.topic.replication.factor=3".to_owned(),
            "share.coordinator.state.topic.num.partitions=1".to_owned(),
            "group.initial.rebalance.delay.ms=0".to_owned(),
            "auto.create.topics.enable=false".to_owned(),
            "auto.leader.rebalance.enable=false".to_owned(),
            "broker.heartbeat.interval.ms=500".to_owned(),
            "broker.session.timeout.ms=3000".to_owned(),
            "replica.lag.time.max.ms=5000".to_owned(),
            "num.network.threads=2".to_owned(),
            "num.io.threads=2".to_owned(),
            "background.threads=2".to_owned(),
            "log.cleaner.enable=false".to_owned(),
        ]);
        for (key, value) in &self.overrides {
            lines.push(format!("{key}={value}"));
        }
        lines.join("\n") + "\n"
    }

    fn java(&self, node: &Node, log: &str) -> Command {
        let mut cmd = Command::new("java");
        cmd.args([
            "-Xms64m",
            "-Xmx320m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
        ])
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            self.dir.path().join("log4j2.yaml").display()
        ))
        .arg(format!("-Dkafka.logs.dir={}", node.dir.display()))
        .arg(format!(
            "-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls={}",
            self.oidc.jwks_url()
        ))
        .arg("-cp")
        .arg(classpath())
        .env_remove("KAFKA_OPTS")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdin(Stdio::null());
        let out = std::fs::File::create(node.dir.join(log)).expect("log file");
        cmd.stdout(out.try_clone().expect("log file")).stderr(out);
        cmd
    }

    fn format(&self, node: &Node) -> Child {
        let mut cmd = self.java(node, "format.log");
        cmd.args(["kafka.tools.StorageTool", "format", "-t", &self.cluster_id])
            .arg("-c")
            .arg(node.dir.join("server.properties"))
            .args([
                "--add-scram",
                &format!("SCRAM-SHA-512=[name={AGENT},password={AGENT_PASSWORD}]"),
                "--add-scram",
                &format!("SCRAM-SHA-256=[name={AGENT},password={AGENT_PASSWORD}]"),
                "--add-scram",
                &format!("SCRAM-SHA-512=[name=admin,password={ADMIN_PASSWORD}]"),
            ]);
        spawn(cmd)
    }

    /// Starts node `id` (again), keeping its data.
    pub fn start_node(&self, id: i32) {
        let node = self.node(id);
        let mut child = node.child.lock().unwrap();
        assert!(child.is_none(), "node {id} is running");
        let mut cmd = self.java(node, "stdout.log");
        cmd.arg("kafka.Kafka")
            .arg(node.dir.join("server.properties"));
        *child = Some(spawn(cmd));
    }

    /// Kills node `id` at once (SIGKILL): no controlled shutdown, its data stays on disk.
    pub fn kill_node(&self, id: i32) {
        if let Some(mut child) = self.node(id).child.lock().unwrap().take() {
            let _ = signal(&child, nix::sys::signal::Signal::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops node `id` cleanly (SIGTERM: controlled shutdown moves its leaderships first).
    pub fn stop_node(&self, id: i32) {
        if let Some(mut child) = self.node(id).child.lock().unwrap().take() {
            let _ = signal(&child, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.wait();
        }
    }

    /// Freezes node `id` (SIGSTOP): its connections stay open and nothing is answered.
    pub fn freeze_node(&self, id: i32) {
        if let Some(child) = self.node(id).child.lock().unwrap().as_ref() {
            signal(child, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
        }
    }

    pub fn thaw_node(&self, id: i32) {
        if let Some(child) = self.node(id).child.lock().unwrap().as_ref() {
            signal(child, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT");
        }
    }

    /// Waits until `count` brokers are registered and unfenced.
    pub fn wait_brokers(&self, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok((_, nodes)) = self.try_cluster()
                && nodes.len() == count
            {
                return;
            }
            for node in &self.nodes {
                if let Some(child) = node.child.lock().unwrap().as_mut()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    panic!(
                        "Kafka node {} exited ({status}):\n{}\n{}",
                        node.id,
                        errors(&node.dir.join("server.log")),
                        tail(&node.dir.join("stdout.log"), 20)
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "Kafka did not have {count} brokers within {timeout:?}:\n{}",
                tail(&self.nodes[0].dir.join("server.log"), 40)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until node `id` listens on its PLAINTEXT port.
    pub fn wait_listening(&self, id: i32, timeout: Duration) {
        let port = self.node(id).ports.plaintext;
        let deadline = Instant::now() + timeout;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "node {id} did not listen within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One command to the admin helper; its answer after `ok`, or the helper's error.
    pub fn try_admin(&self, command: &str) -> Result<String, String> {
        let mut guard = self.admin.lock().unwrap();
        if guard.is_none() {
            *guard = Some(Helper::start(&self.bootstrap(), self.dir.path()));
        }
        let helper = guard.as_mut().expect("helper");
        helper.ask(command)
    }

    /// One command to the admin helper, which must succeed.
    #[track_caller]
    pub fn admin(&self, command: &str) -> String {
        match self.try_admin(command) {
            Ok(answer) => answer,
            Err(e) => panic!("kafka admin `{command}`: {e}"),
        }
    }

    /// The controller and the brokers (id, rack) DescribeCluster reports.
    pub fn try_cluster(&self) -> Result<(i32, Vec<(i32, String)>), String> {
        let answer = self.try_admin("cluster")?;
        let mut words = answer.split_whitespace();
        let controller = words
            .next()
            .and_then(|w| w.parse().ok())
            .ok_or_else(|| format!("bad answer {answer}"))?;
        let nodes = words
            .filter_map(|w| {
                let mut f = w.split(':');
                let id = f.next()?.parse().ok()?;
                let rack = f.nth(2)?.to_owned();
                Some((id, rack))
            })
            .collect();
        Ok((controller, nodes))
    }

    pub fn create_topic(&self, topic: &str, partitions: i32, replication: i32) {
        self.admin(&format!("create-topic {topic} {partitions} {replication}"));
    }

    pub fn delete_topic(&self, topic: &str) {
        self.admin(&format!("delete-topic {topic}"));
    }

    /// Each partition's (leader, replicas, in-sync replicas); leader -1 when it has none.
    pub fn describe_topic(&self, topic: &str) -> Vec<(i32, i32, Vec<i32>, Vec<i32>)> {
        let ids = |s: &str| -> Vec<i32> { s.split(',').filter_map(|x| x.parse().ok()).collect() };
        self.admin(&format!("describe-topic {topic}"))
            .split_whitespace()
            .map(|p| {
                let f: Vec<&str> = p.split(':').collect();
                (
                    f[0].parse().expect("partition"),
                    f[1].parse().expect("leader"),
                    ids(f[2]),
                    ids(f[3]),
                )
            })
            .collect()
    }

    /// The leader of each partition, by partition.
    pub fn leaders(&self, topic: &str) -> Vec<i32> {
        self.describe_topic(topic)
            .into_iter()
            .map(|(_, leader, _, _)| leader)
            .collect()
    }

    /// The heartbeats of agent `instance` on `topic` as Kafka's own Java consumer reads them
    /// (every record from the start of each partition to its end).
    pub fn witness(&self, topic: &str, instance: &str) -> Witnessed {
        let answer = self.admin(&format!("witness {topic} {instance}"));
        let mut words = answer.split_whitespace();
        let records = words.next().and_then(|w| w.parse().ok()).expect("records");
        let mut witnessed = Witnessed {
            records,
            ..Witnessed::default()
        };
        let mut highest = std::collections::BTreeMap::<i32, u64>::new();
        for word in words {
            let mut parts = word.splitn(3, ':');
            let (Some(p), Some(s)) = (parts.next(), parts.next()) else {
                continue;
            };
            let heartbeat = (p.parse().expect("partition"), s.parse().expect("sequence"));
            witnessed
                .order
                .entry(heartbeat.0)
                .or_default()
                .push(heartbeat.1);
            let highest = highest.entry(heartbeat.0).or_insert(heartbeat.1);
            let after_higher = *highest > heartbeat.1;
            *highest = (*highest).max(heartbeat.1);
            if !witnessed.heartbeats.insert(heartbeat) {
                witnessed.duplicates += 1;
            } else if after_higher {
                witnessed.out_of_order += 1;
            }
            if let Some(traceparent) = parts.next() {
                witnessed
                    .traceparents
                    .insert(heartbeat, traceparent.to_owned());
            }
        }
        witnessed
    }

    /// Gives `principal` (a user name) the ACLs the README lists for the agent: DESCRIBE,
    /// WRITE, READ and CREATE on topics named `cc-heartbeat…`, DESCRIBE and READ on its own
    /// groups (`cc-heartbeat-…`).
    /// The group ACL goes first: a broker that applied the topic ACL has applied it too (see
    /// [`Kafka::wait_authorized`]).
    pub fn grant_agent_acls(&self, user: &str) {
        self.admin(&format!(
            "acl-add User:{user} group prefixed cc-heartbeat- describe,read"
        ));
        self.admin(&format!(
            "acl-add User:{user} topic prefixed cc-heartbeat describe,write,read,create"
        ));
    }

    /// Waits until every broker authenticates `user` (SCRAM-SHA-512 on the SASL listener) and
    /// lets it describe topics named `cc-heartbeat…`. Credentials and ACLs reach each broker
    /// through the metadata log a moment after the admin call that set them returns; a test of
    /// what a principal may do must not measure that moment instead. Set the credential, then
    /// the ACLs, topic ACL last: brokers apply the log in order.
    pub fn wait_authorized(&self, user: &str, password: &str) {
        use rdkafka::consumer::{BaseConsumer, Consumer as _};
        use rdkafka::types::RDKafkaRespErr;
        let probe = format!("cc-heartbeat-acl-probe-{}", uuid::Uuid::new_v4().simple());
        for node in &self.nodes {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                // A fresh client each time: its first request goes to its only bootstrap broker.
                let consumer: BaseConsumer = rdkafka::ClientConfig::new()
                    .set(
                        "bootstrap.servers",
                        format!("127.0.0.1:{}", node.ports.sasl),
                    )
                    .set("security.protocol", "SASL_PLAINTEXT")
                    .set("sasl.mechanism", "SCRAM-SHA-512")
                    .set("sasl.username", user)
                    .set("sasl.password", password)
                    .set("log_level", "0")
                    .create()
                    .expect("a SASL client");
                let answer = consumer.fetch_metadata(Some(&probe), Duration::from_secs(5));
                let allowed = answer.as_ref().is_ok_and(|m| {
                    m.topics().first().is_some_and(|t| {
                        t.error()
                            != Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED)
                    })
                });
                if allowed {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "broker {} still refuses {user} after 30 s: {:?}",
                    node.id,
                    answer.map(|m| m.topics().first().and_then(|t| t.error()))
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// Everything node `id` logged (the end of it), for a failing test's message.
    pub fn log_tail(&self, id: i32, lines: usize) -> String {
        tail(&self.node(id).dir.join("server.log"), lines)
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        let helper = self.admin.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut helper) = helper {
            let _ = helper.child.kill();
            let _ = helper.child.wait();
        }
        for node in &self.nodes {
            let child = node.child.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(mut child) = child {
                let _ = signal(&child, nix::sys::signal::Signal::SIGCONT);
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The admin helper: Kafka's Java Admin client and consumer behind a line protocol.
struct Helper {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Helper {
    fn start(bootstrap: &str, dir: &Path) -> Self {
        let log = std::fs::File::create(dir.join("admin.log")).expect("admin log");
        let mut cmd = Command::new("java");
        cmd.args(["-Xmx192m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                dir.join("log4j2.yaml").display()
            ))
            .arg(format!("-Dkafka.logs.dir={}", dir.display()))
            .arg("-cp")
            .arg(classpath())
            .args(["KafkaTestAdmin", bootstrap])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = spawn(cmd);
        let stdin = child.stdin.take().expect("helper stdin");
        let stdout = BufReader::new(child.stdout.take().expect("helper stdout"));
        Self {
            child,
            stdin,
            stdout,
        }
    }

    fn ask(&mut self, command: &str) -> Result<String, String> {
        writeln!(self.stdin, "{command}").map_err(|e| format!("helper gone: {e}"))?;
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| format!("helper gone: {e}"))?;
        let line = line.trim_end();
        if let Some(answer) = line.strip_prefix("ok") {
            Ok(answer.trim_start().to_owned())
        } else if line.is_empty() {
            Err("the admin helper exited".to_owned())
        } else {
            Err(line.to_owned())
        }
    }
}

/// A random KRaft cluster id (a UUID in URL-safe base64 without padding).
/// One that starts with `-` would be read by kafka-storage as an option (1 in
/// 64): drawn again, as Kafka's own `Uuid.randomUuid` does.
fn cluster_id() -> String {
    use base64::Engine as _;
    loop {
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(uuid::Uuid::new_v4().as_bytes());
        if !id.starts_with('-') {
            return id;
        }
    }
}

fn signal(child: &Child, signal: nix::sys::signal::Signal) -> nix::Result<()> {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
    nix::sys::signal::kill(pid, signal)
}

/// The ERROR lines of a broker's log, and the line after each (the exception).
fn errors(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.contains("] ERROR ") {
            out.push(*line);
            if let Some(next) = lines.get(i + 1) {
                out.push(next);
            }
        }
    }
    out.join("\n")
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

const LOG4J: &str = "Configuration:
  Appenders:
    File:
      name: file
      fileName: \"${sys:kafka.logs.dir}/server.log\"
      PatternLayout:
        pattern: \"[%d] %p %m (%c)%n\"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: file
";
