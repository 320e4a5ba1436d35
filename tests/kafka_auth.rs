#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! Authentication and authorisation against Apache Kafka (StandardAuthorizer on, nothing
//! allowed without an ACL): PLAIN and SCRAM with right and wrong passwords, SASL_SSL with the
//! test's CA, a SCRAM credential deleted under a running agent, OAUTHBEARER with a token from
//! an OIDC token endpoint that Kafka validates against the provider's JWKS, and a principal
//! missing one permission at a time.

mod support;

use std::time::{Duration, Instant};

use support::kafka::{AGENT, AGENT_PASSWORD, Kafka, Listener, OIDC_CLIENT, OIDC_SECRET};
use support::process::{
    AgentProcess, config_file, http_get, point_with, run_to_end, sum_matching, sum_with,
};
use support::{free_port, unique_topic};

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// The `clusters[0]` lines for `listener` and the given security settings.
fn cluster_yaml(kafka: &Kafka, listener: Listener, security: &str) -> String {
    format!(
        "clusters:\n  - name: secured\n    bootstrap_servers: '{}'\n{security}",
        kafka.bootstrap_on(listener)
    )
}

/// Runs `check` on `cluster` (the config's clusters part) with the heartbeat on `topic`.
async fn check(cluster: String, topic: &str) -> (Option<i32>, String) {
    let config = config_file(&format!(
        "{cluster}heartbeat: {{topic: {topic}, message_timeout: 2s, loss_timeout: 5s}}\n\
         checks: {{connectivity: {{timeout: 2s}}}}\n"
    ));
    let out = blocking(move || {
        run_to_end(
            &["check", "--config", config.path().to_str().unwrap()],
            &[],
            Duration::from_secs(90),
        )
    })
    .await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

fn sasl(protocol: &str, mechanism: &str, user: &str, password: &str, extra: &str) -> String {
    format!(
        "    security_protocol: {protocol}\n    sasl: {{mechanism: {mechanism}, username: {user}, password: '{password}'}}\n{extra}"
    )
}

/// A case: its name, the listener, the cluster's security settings, `check`'s exit status, and
/// what its report says.
type Case = (
    &'static str,
    Listener,
    String,
    Option<i32>,
    Vec<&'static str>,
);

/// Each account and transport through `check`: the right ones give a healthy cluster, a wrong
/// password is `auth` with Kafka's own reason, a CA the brokers' certificates do not chain
/// to is `tls`; no password is ever printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_right_and_wrong_accounts_and_transports_as_they_are() {
    let kafka = blocking(Kafka::shared).await;
    let ca = format!("    tls: {{ca_file: '{}'}}\n", kafka.ca_file().display());
    let wrong = "wrong-password-0b7d";
    let cases: Vec<Case> = vec![
        (
            "PLAIN, right password",
            Listener::Sasl,
            sasl("SASL_PLAINTEXT", "PLAIN", AGENT, AGENT_PASSWORD, ""),
            Some(0),
            vec!["verdict: HEALTHY"],
        ),
        (
            "PLAIN, wrong password",
            Listener::Sasl,
            sasl("SASL_PLAINTEXT", "PLAIN", AGENT, wrong, ""),
            Some(1),
            vec!["(auth)", "Invalid username or password"],
        ),
        (
            "SCRAM-SHA-512, right password",
            Listener::Sasl,
            sasl("SASL_PLAINTEXT", "SCRAM-SHA-512", AGENT, AGENT_PASSWORD, ""),
            Some(0),
            vec!["verdict: HEALTHY"],
        ),
        (
            "SCRAM-SHA-256, wrong password",
            Listener::Sasl,
            sasl("SASL_PLAINTEXT", "SCRAM-SHA-256", AGENT, wrong, ""),
            Some(1),
            vec![
                "(auth)",
                "Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-256",
            ],
        ),
        (
            "a mechanism the listener does not offer",
            Listener::Oauth,
            sasl("SASL_PLAINTEXT", "PLAIN", AGENT, AGENT_PASSWORD, ""),
            Some(1),
            vec!["(auth)", "broker's supported mechanisms: OAUTHBEARER"],
        ),
        (
            "SASL_SSL with the brokers' CA",
            Listener::SaslSsl,
            sasl("SASL_SSL", "SCRAM-SHA-512", AGENT, AGENT_PASSWORD, &ca),
            Some(0),
            vec!["verdict: HEALTHY", "tls"],
        ),
        (
            "SASL_SSL with the system's CAs only",
            Listener::SaslSsl,
            sasl("SASL_SSL", "PLAIN", AGENT, AGENT_PASSWORD, ""),
            Some(1),
            vec!["(tls)"],
        ),
    ];
    for (name, listener, security, exit, expected) in cases {
        let topic = unique_topic("cc-heartbeat-auth");
        let started = Instant::now();
        let (code, report) = check(cluster_yaml(kafka, listener, &security), &topic).await;
        println!("== {name} ({:?}):\n{report}", started.elapsed());
        assert_eq!(code, exit, "{name}:\n{report}");
        for text in expected {
            assert!(
                report.contains(text),
                "{name}: missing {text:?} in\n{report}"
            );
        }
        assert!(
            !report.contains(AGENT_PASSWORD) && !report.contains(wrong),
            "{name}: a password leaked"
        );
    }
}

/// A SCRAM credential deleted under a running agent, as rotating a key does: the brokers
/// re-authenticate connections (`connections.max.reauth.ms`), refuse the deleted credential,
/// and the heartbeats that fail from then on are counted as `auth`, with Kafka's reason in
/// the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scram_credential_deleted_under_a_running_agent_is_reported_as_auth() {
    let kafka = blocking(Kafka::shared).await;
    let user = format!(
        "rotated-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let password = "rotated-password-2c88";
    blocking({
        let user = user.clone();
        move || {
            kafka.admin(&format!("scram-set {user} SCRAM-SHA-512 {password}"));
            kafka.grant_agent_acls(&user);
            kafka.wait_authorized(&user, password);
        }
    })
    .await;
    let topic = unique_topic("cc-heartbeat-rotated");
    let http_port = free_port();
    let agent = AgentProcess::start(
        &format!(
            "{}heartbeat: {{topic: {topic}, interval: 500ms, message_timeout: 1s, loss_timeout: 5s}}\n\
             checks: {{metadata: {{interval: 2s}}}}\n\
             export: {{otlp: {{enabled: false}}}}\nhttp: {{listen: '127.0.0.1:{http_port}', prometheus: true}}\n",
            cluster_yaml(
                kafka,
                Listener::Sasl,
                &sasl("SASL_PLAINTEXT", "SCRAM-SHA-512", &user, password, "")
            )
        ),
        &[],
    );
    let mut agent = agent;
    agent.wait_ready(http_port, Duration::from_secs(60)).await;
    blocking({
        let user = user.clone();
        move || kafka.admin(&format!("scram-delete {user} SCRAM-SHA-512"))
    })
    .await;
    let sent = "kafka_heartbeat_messages_sent_total";
    let exposition = agent
        .scrape_until(
            http_port,
            Duration::from_secs(60),
            "sends failing as auth",
            |t| sum_with(t, sent, "error_type=\"auth\"") >= 3.0,
        )
        .await;
    let auth = sum_with(&exposition, sent, "error_type=\"auth\"");
    let timeout = sum_with(&exposition, sent, "error_type=\"timeout\"");
    assert!(
        auth > timeout,
        "auth {auth}, timeout {timeout}:\n{exposition}"
    );
    // A revoked key: the metadata requests fail as `auth` too, and the cluster reads down.
    agent
        .scrape_until(
            http_port,
            Duration::from_secs(30),
            "the cluster down with auth",
            |t| {
                point_with(t, "kafka_cluster_up", &[]) == Some(0.0)
                    && sum_matching(
                        t,
                        "kafka_cluster_requests_total",
                        &[
                            "error_type=\"auth\"",
                            "kafka_cluster_name=\"secured\"",
                            "kafka_request=\"metadata\"",
                        ],
                    ) >= 1.0
            },
        )
        .await;
    let (_, log) = agent.terminate(Duration::from_secs(10)).await;
    assert!(log.contains("authentication failed"), "{log}");
    assert!(log.contains("invalid credentials"), "{log}");
    assert!(!log.contains(password), "the password leaked:\n{log}");
}

/// OAUTHBEARER as Confluent Cloud's identity pools do it: the agent takes a token from the
/// OIDC token endpoint (client credentials, with the scope and Confluent's extensions) and
/// the brokers accept it after checking its signature against the provider's JWKS; heartbeats
/// flow. A wrong client secret gets no token, and `check` says so as `auth`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauthbearer_with_a_token_from_the_oidc_endpoint_is_accepted_by_kafka() {
    let kafka = blocking(Kafka::shared).await;
    let oauth = |secret: &str| {
        format!(
            "    security_protocol: SASL_PLAINTEXT\n    sasl:\n      mechanism: OAUTHBEARER\n\
             \x20     oauthbearer: {{token_endpoint_url: '{}', client_id: {OIDC_CLIENT}, client_secret: '{secret}', scope: kafka, extensions: {{logicalCluster: lkc-abc123, identityPoolId: pool-xyz}}}}\n",
            kafka.oidc().token_url()
        )
    };
    let topic = unique_topic("cc-heartbeat-oidc");
    let http_port = free_port();
    let mut agent = AgentProcess::start(
        &format!(
            "{}heartbeat: {{topic: {topic}, interval: 500ms, message_timeout: 2s, loss_timeout: 5s}}\n\
             export: {{otlp: {{enabled: false}}}}\nhttp: {{listen: '127.0.0.1:{http_port}', prometheus: true}}\n",
            cluster_yaml(kafka, Listener::Oauth, &oauth(OIDC_SECRET))
        ),
        &[],
    );
    agent.wait_ready(http_port, Duration::from_secs(60)).await;
    let exposition = agent
        .scrape_until(http_port, Duration::from_secs(30), "round trips", |t| {
            sum_with(t, "kafka_heartbeat_messages_received_total", "") >= 3.0
        })
        .await;
    assert_eq!(
        sum_with(
            &exposition,
            "kafka_heartbeat_messages_sent_total",
            "error_type="
        ),
        0.0,
        "{exposition}"
    );
    let (_, log) = agent.terminate(Duration::from_secs(10)).await;
    assert!(
        !log.contains(OIDC_SECRET),
        "the client secret leaked:\n{log}"
    );
    let requests = kafka.oidc().token_requests();
    let request = requests.first().expect("a token request");
    assert!(
        request.contains("grant_type=client_credentials"),
        "{request}"
    );
    assert!(request.contains("scope=kafka"), "{request}");

    let (code, report) = check(
        cluster_yaml(kafka, Listener::Oauth, &oauth("wrong-secret-93aa")),
        &unique_topic("cc-heartbeat-oidc"),
    )
    .await;
    println!("{report}");
    assert_eq!(code, Some(1), "{report}");
    assert!(report.contains("(auth)"), "{report}");
    assert!(!report.contains("wrong-secret-93aa"), "{report}");
}

/// What one agent run of a permission case showed: its log, `/readyz`, and `/metrics`.
struct Seen {
    log: String,
    ready: String,
    metrics: String,
}

impl Seen {
    fn warnings(&self, text: &str) -> usize {
        self.log
            .lines()
            .filter(|l| l.contains(" WARN ") && l.contains(text))
            .count()
    }

    fn sum(&self, metric: &str, label: &str) -> f64 {
        sum_with(&self.metrics, metric, label)
    }

    fn sum_all(&self, metric: &str, labels: &[&str]) -> f64 {
        sum_matching(&self.metrics, metric, labels)
    }

    /// Every other probe goes on: each broker reached, the metadata read.
    fn assert_other_probes_go_on(&self, case: &str) {
        assert_eq!(
            self.sum("kafka_broker_up", ""),
            3.0,
            "{case}: every broker up:\n{}",
            self.metrics
        );
        assert_eq!(
            self.sum("kafka_cluster_brokers", ""),
            3.0,
            "{case}: metadata read"
        );
    }
}

/// Runs the agent as `user` for a while on `topic` and reports what it showed.
async fn run_as(kafka: &'static Kafka, user: &str, topic: &str, extra: &str) -> Seen {
    let http_port = free_port();
    let agent = AgentProcess::start(
        &format!(
            "{}heartbeat: {{topic: {topic}, interval: 500ms, message_timeout: 1s, loss_timeout: 3s}}\n\
             checks: {{metadata: {{interval: 2s}}, connectivity: {{interval: 2s, timeout: 1s}}{extra}}}\n\
             export: {{otlp: {{enabled: false}}}}\nhttp: {{listen: '127.0.0.1:{http_port}', prometheus: true}}\n",
            cluster_yaml(
                kafka,
                Listener::Sasl,
                &sasl("SASL_PLAINTEXT", "SCRAM-SHA-512", user, PERM_PASSWORD, "")
            )
        ),
        &[],
    );
    // Past the loss timeout and a confirmation, so a false loss would show.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let get = |path: &str| {
        let url = format!("http://127.0.0.1:{http_port}{path}");
        async move {
            match http_get(&url).await {
                Ok(r) => format!(
                    "{} {}",
                    r.status().as_u16(),
                    r.text().await.unwrap_or_default()
                ),
                Err(e) => e.to_string(),
            }
        }
    };
    let ready = get("/readyz/kafka").await;
    let metrics = get("/metrics").await;
    let (_, log) = agent.terminate(Duration::from_secs(10)).await;
    assert!(!log.contains(PERM_PASSWORD), "the password leaked");
    Seen {
        log,
        ready,
        metrics,
    }
}

const PERM_PASSWORD: &str = "perm-password-6d01";

/// A user with the agent's ACLs but `missing` (a topic operation, or `group` for the
/// agent's own groups).
async fn principal_without(kafka: &'static Kafka, missing: &'static str) -> String {
    let user = format!("perm-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    blocking({
        let user = user.clone();
        move || {
            kafka.admin(&format!("scram-set {user} SCRAM-SHA-512 {PERM_PASSWORD}"));
            if missing != "group" {
                kafka.admin(&format!(
                    "acl-add User:{user} group prefixed cc-heartbeat- describe,read"
                ));
            }
            let topic_ops: Vec<&str> = ["describe", "write", "read", "create"]
                .into_iter()
                .filter(|op| *op != missing)
                .collect();
            kafka.admin(&format!(
                "acl-add User:{user} topic prefixed cc-heartbeat {}",
                topic_ops.join(",")
            ));
            kafka.wait_authorized(&user, PERM_PASSWORD);
        }
    })
    .await;
    user
}

/// A principal missing one permission at a time, each case an agent of its own (all at once):
/// what is refused is named once, clearly, as `authorization`, nothing is counted lost for
/// it, and every other probe goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_missing_one_permission_is_told_once_and_the_rest_goes_on() {
    let kafka = blocking(Kafka::shared).await;
    let mut runs = tokio::task::JoinSet::new();
    for missing in ["create", "write", "read", "group"] {
        let user = principal_without(kafka, missing).await;
        let topic = unique_topic("cc-heartbeat-perm");
        if missing != "create" {
            blocking({
                let topic = topic.clone();
                move || kafka.create_topic(&topic, 3, 3)
            })
            .await;
        }
        runs.spawn(async move { (missing, run_as(kafka, &user, &topic, "").await) });
    }
    for (missing, seen) in runs.join_all().await {
        println!("===== without {missing}: {}\n{}", seen.ready, seen.log);
        seen.assert_other_probes_go_on(missing);
        let lost = seen.sum("kafka_heartbeat_messages_lost_total", "");
        assert_eq!(lost, 0.0, "{missing}: nothing counted lost");
        assert_eq!(
            point_with(&seen.metrics, "kafka_cluster_up", &[]),
            Some(1.0),
            "{missing}: the cluster itself is usable"
        );
        match missing {
            "create" => {
                assert_eq!(seen.warnings("not allowed to create it"), 1, "{missing}");
                assert!(
                    seen.sum_all(
                        "kafka_cluster_requests_total",
                        &[
                            "error_type=\"authorization\"",
                            "kafka_cluster_name=\"secured\"",
                            "kafka_error_code=\"TOPIC_AUTHORIZATION_FAILED\"",
                            "kafka_request=\"create_topic\""
                        ]
                    ) >= 1.0,
                    "{}",
                    seen.metrics
                );
                assert!(seen.warnings("error.type=\"authorization\"") >= 1);
                assert!(
                    seen.ready.starts_with("503") && seen.ready.contains("missing"),
                    "{}",
                    seen.ready
                );
            }
            "write" => {
                assert_eq!(
                    seen.warnings("may not write to heartbeat topic"),
                    1,
                    "{missing}"
                );
                assert_eq!(seen.warnings("Heartbeat produce failed"), 0, "{missing}");
                assert!(
                    seen.sum(
                        "kafka_heartbeat_messages_sent_total",
                        "error_type=\"authorization\""
                    ) >= 3.0,
                    "{}",
                    seen.metrics
                );
                // The broker's own word for it, beside the bounded error.type.
                assert!(
                    seen.sum(
                        "kafka_heartbeat_messages_sent_total",
                        "kafka_error_code=\"TOPIC_AUTHORIZATION_FAILED\""
                    ) >= 3.0,
                    "{}",
                    seen.metrics
                );
            }
            "read" => {
                assert_eq!(
                    seen.warnings("may not read heartbeat topic"),
                    1,
                    "{missing}"
                );
                assert!(seen.sum("kafka_heartbeat_messages_sent_total", "") >= 3.0);
                assert_eq!(seen.sum("kafka_heartbeat_messages_received_total", ""), 0.0);
                // The refused reads are counted where the requests are.
                assert!(
                    seen.sum_all(
                        "kafka_cluster_requests_total",
                        &[
                            "error_type=\"authorization\"",
                            "kafka_cluster_name=\"secured\"",
                            "kafka_error_code=\"TOPIC_AUTHORIZATION_FAILED\"",
                            "kafka_request=\"fetch\""
                        ]
                    ) >= 1.0,
                    "{}",
                    seen.metrics
                );
            }
            "group" => {
                // The consumer reads by assignment: its own group is nothing it needs.
                assert!(seen.ready.starts_with("200"), "{}", seen.ready);
                assert!(seen.sum("kafka_heartbeat_messages_received_total", "") >= 3.0);
                assert_eq!(
                    seen.warnings("authorization"),
                    0,
                    "{missing}: nothing to warn about"
                );
                assert!(
                    seen.log
                        .matches("may not describe its own consumer group")
                        .count()
                        <= 1
                );
                // The commit probe (`auto`) stops where its group may not be used: said once,
                // at INFO, and nothing measured.
                assert_eq!(
                    seen.log.matches("The commit probe stops").count(),
                    1,
                    "{}",
                    seen.log
                );
                assert_eq!(seen.sum("kafka_commit_duration_seconds_count", ""), 0.0);
            }
            _ => unreachable!(),
        }
    }
}

/// Consumer groups as Apache Kafka shows them to a principal: a group it may not describe is
/// not listed at all, and the committed offsets of topics it may not describe are left out of
/// the answer (OffsetFetch omits them; nothing fails). So the agent reports what it is shown:
/// lag for the readable group, members only for the group whose topic is hidden, nothing for
/// the hidden group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_groups_are_reported_as_far_as_the_principal_may_see_them() {
    let kafka = blocking(Kafka::shared).await;
    let user = principal_without(kafka, "nothing").await;
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let readable = format!("lagging-readable-{tag}");
    let topic_hidden = format!("lagging-topic-hidden-{tag}");
    let group_hidden = format!("lagging-group-hidden-{tag}");
    let (visible_topic, hidden_topic) = (
        format!("cc-heartbeat-lag-{tag}"),
        format!("hidden-lag-{tag}"),
    );
    blocking({
        let (user, readable, topic_hidden, group_hidden) = (
            user.clone(),
            readable.clone(),
            topic_hidden.clone(),
            group_hidden.clone(),
        );
        let (visible_topic, hidden_topic) = (visible_topic.clone(), hidden_topic.clone());
        move || {
            kafka.create_topic(&visible_topic, 1, 3);
            kafka.create_topic(&hidden_topic, 1, 3);
            for _ in 0..5 {
                kafka.admin(&format!("produce {visible_topic} 0 x"));
                kafka.admin(&format!("produce {hidden_topic} 0 x"));
            }
            kafka.admin(&format!("commit {readable} {visible_topic} 0 2"));
            kafka.admin(&format!("commit {topic_hidden} {hidden_topic} 0 2"));
            kafka.admin(&format!("commit {group_hidden} {visible_topic} 0 2"));
            kafka.admin(&format!(
                "acl-add User:{user} group literal {readable} describe"
            ));
            kafka.admin(&format!(
                "acl-add User:{user} group literal {topic_hidden} describe"
            ));
        }
    })
    .await;
    let topic = unique_topic("cc-heartbeat-groups");
    let seen = run_as(kafka, &user, &topic, ", consumer_groups: {interval: 2s}").await;
    let lag = |group: &str| seen.sum("kafka_consumer_group_lag", &format!("group=\"{group}\""));
    let members = |group: &str| {
        seen.metrics.lines().any(|l| {
            l.starts_with("kafka_consumer_group_members{")
                && l.contains(&format!("group=\"{group}\""))
        })
    };
    assert_eq!(lag(&readable), 3.0, "{}", seen.metrics);
    assert!(
        members(&readable) && members(&topic_hidden),
        "{}",
        seen.metrics
    );
    assert!(
        !seen
            .metrics
            .contains(&format!("group=\"{topic_hidden}\",kafka_cluster_id"))
            || lag(&topic_hidden) == 0.0
    );
    assert!(
        !seen.metrics.contains(&hidden_topic),
        "a hidden topic's offsets are not shown"
    );
    assert!(
        !members(&group_hidden),
        "a group the principal may not describe is not listed"
    );
    assert_eq!(seen.warnings(""), 0, "nothing to warn about:\n{}", seen.log);
}
