#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! The binary from outside: exit codes, `validate`, secrets in output, signals, the demo.

mod support;

use std::net::TcpListener;
use std::time::Duration;

use support::process::{AgentProcess, config_file, run_to_end};
use support::tansu::Tansu;
use support::{free_port, unique_topic};

const SECRETS: [&str; 4] = [
    "sasl-secret-9f2c",
    "header-secret-77aa",
    "librdkafka-secret-31d0",
    "oauth-secret-5e1b",
];

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn validate_prints_the_effective_config_with_secrets_redacted() {
    let config = config_file(
        "clusters:\n\
         \x20 - name: cc\n    bootstrap_servers: pkc-1.example:9092\n    security_protocol: SASL_SSL\n\
         \x20   sasl: {username: KEY, password: '${SASL_SECRET}'}\n\
         \x20   librdkafka: {ssl.key.password: librdkafka-secret-31d0}\n\
         \x20 - name: oauth\n    bootstrap_servers: pkc-2.example:9092\n    security_protocol: SASL_SSL\n\
         \x20   sasl:\n      mechanism: OAUTHBEARER\n      oauthbearer: {token_endpoint_url: 'https://idp/token?audience=aud-secret-88c2', client_id: id, client_secret: oauth-secret-5e1b}\n\
         export:\n  otlp: {headers: {x-api-key: header-secret-77aa}}\n",
    );
    let out = run_to_end(
        &["validate", "--config", config.path().to_str().unwrap()],
        &[("SASL_SECRET", "sasl-secret-9f2c")],
        Duration::from_secs(10),
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("is valid"), "{stdout}");
    assert!(stdout.contains("username: KEY"), "{stdout}");
    assert!(stdout.contains("password: \"<redacted>\""), "{stdout}");
    assert!(stdout.contains("client_secret: \"<redacted>\""), "{stdout}");
    assert!(stdout.contains("x-api-key: \"<redacted>\""), "{stdout}");
    assert!(
        stdout.contains("token_endpoint_url: \"https://idp/token?audience=redacted\""),
        "{stdout}"
    );
    for secret in SECRETS.iter().chain(&["aud-secret-88c2"]) {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} leaked:\n{stdout}{stderr}"
        );
    }
}

#[test]
fn validate_lists_every_problem_and_exits_2() {
    let config = config_file(
        "clusters:\n  - name: a\n    bootstrap_servers: nope\n    security_protocol: SASL_SSL\n\
         heartbeat: {interval: soon}\nexport: {otlp: {endpoint: '${MISSING_ENDPOINT}'}}\nsurprise: 1\n",
    );
    let out = run_to_end(
        &["validate", "-c", config.path().to_str().unwrap()],
        &[],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(": 5 problems"), "{stderr}");
    for expected in [
        "clusters[0].bootstrap_servers (line 3): \"nope\" is not host:port",
        "clusters[0].sasl (line 2): required with security_protocol SASL_SSL",
        "heartbeat.interval (line 5): \"soon\" is not a duration",
        "export.otlp.endpoint (line 6): environment variable MISSING_ENDPOINT is not set",
        "surprise (line 7): unknown key",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(out.stdout.is_empty());
}

/// Bad command lines exit 2 at once, saying what was wrong and what is allowed.
#[test]
fn bad_command_lines_exit_2_and_say_what_is_expected() {
    let config = config_file("clusters: [{name: a, bootstrap_servers: 'localhost:9'}]\n");
    let path = config.path().to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (
            &["validate", "--config", path, "--log-level", "warnn"],
            "\"warnn\" is not a log level; expected error, warn, info, debug, trace or off",
        ),
        (
            &[
                "validate",
                "--config",
                path,
                "--log-level",
                "info,librdkafka=loud",
            ],
            "is not a log level",
        ),
        (&["demo", "--report-every", "0s"], "must be longer than 0"),
        (&["demo", "--interval", "0ms"], "must be longer than 0"),
        (
            &["demo", "--report-every", "soon"],
            "expected a duration like 500ms",
        ),
        (
            &[
                "demo",
                "--fault-at",
                "500000000000y",
                "--fault-for",
                "500000000000y",
            ],
            "is too long; expected at most 1day",
        ),
    ];
    for (args, expected) in cases {
        let started = std::time::Instant::now();
        let out = run_to_end(args, &[], Duration::from_secs(10));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{args:?}: missing {expected:?} in {stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{args:?} answered at once"
        );
    }
}

#[test]
fn run_without_a_config_file_exits_2_and_says_how_to_give_one() {
    let out = run_to_end(&["run"], &[], Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("pass --config FILE or set CC_HEARTBEAT_CONFIG"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_bad_config_exits_2_before_touching_the_cluster() {
    let broker = TcpListener::bind("127.0.0.1:0").unwrap();
    broker.set_nonblocking(true).unwrap();
    let config = config_file(&format!(
        "clusters:\n  - name: a\n    bootstrap_servers: '{}'\nheartbeat: {{loss_timeout: 1s}}\n",
        broker.local_addr().unwrap()
    ));
    // The config file also comes from the environment variable.
    let out = run_to_end(
        &[],
        &[("CC_HEARTBEAT_CONFIG", config.path().to_str().unwrap())],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("heartbeat.loss_timeout"),
        "{}",
        text(&out.stderr)
    );
    assert!(broker.accept().is_err(), "nothing connected to the cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_agent_with_exit_0_and_secrets_never_reach_its_logs() {
    let tansu = Tansu::start();
    let http_port = free_port();
    // A second cluster with credentials the broker will not accept: the failures get logged,
    // at debug level, and the secrets must not be in them.
    let config = format!(
        "clusters:\n\
         \x20 - name: plain\n    bootstrap_servers: '{bootstrap}'\n\
         \x20 - name: with-credentials\n    bootstrap_servers: '{bootstrap}'\n    security_protocol: SASL_PLAINTEXT\n\
         \x20   sasl: {{mechanism: SCRAM-SHA-512, username: someone, password: sasl-secret-9f2c}}\n\
         \x20   librdkafka: {{ssl.key.password: librdkafka-secret-31d0}}\n\
         heartbeat: {{topic: {topic}, interval: 200ms}}\n\
         export:\n  otlp: {{endpoint: 'http://127.0.0.1:{dead}', interval: 1s, timeout: 500ms, headers: {{x-api-key: header-secret-77aa}}}}\n\
         http: {{listen: '127.0.0.1:{http_port}'}}\nlog: {{level: debug}}\n",
        bootstrap = tansu.bootstrap(),
        topic = unique_topic("sigterm"),
        dead = free_port(),
    );
    let mut agent = AgentProcess::start(&config, &[]);
    // Readiness needs every cluster; the unauthenticated one never gets there, so wait on the
    // log for the healthy one instead, then let the failing one retry a while.
    support::eventually(
        Duration::from_secs(30),
        "first round trip of the plain cluster",
        || {
            agent
                .output()
                .lines()
                .any(|l| {
                    l.contains("cluster=plain") && l.contains("First heartbeat round trip done.")
                })
                .then_some(())
        },
    )
    .await;
    // The agent runs: ready (the default `http.readiness: agent`), saying what Kafka waits
    // for; the Kafka readiness is not.
    let readyz = support::process::http_get(&format!("http://127.0.0.1:{http_port}/readyz"))
        .await
        .unwrap();
    assert_eq!(readyz.status(), 200);
    let body = readyz.text().await.unwrap();
    assert!(
        body.starts_with("ready (the agent runs; Kafka: waiting for:")
            && body.contains("with-credentials"),
        "{body}"
    );
    let kafka = support::process::http_get(&format!("http://127.0.0.1:{http_port}/readyz/kafka"))
        .await
        .unwrap();
    assert_eq!(kafka.status(), 503);
    let body = kafka.text().await.unwrap();
    assert!(body.contains("with-credentials"), "{body}");
    assert!(agent.is_running());
    tokio::time::sleep(Duration::from_secs(3)).await;

    let started = std::time::Instant::now();
    let (status, output) = agent.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}:\n{output}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "stopped within the grace period"
    );
    assert!(output.contains("SIGTERM received."), "{output}");
    assert!(output.contains("Final metric export"), "{output}");
    for secret in SECRETS {
        assert!(
            !output.contains(secret),
            "{secret} leaked into the logs:\n{output}"
        );
    }
}

#[test]
fn demo_measures_heartbeats_and_shows_an_injected_fault() {
    let out = run_to_end(
        &[
            "demo",
            "--duration",
            "10s",
            "--report-every",
            "3s",
            "--broker-down",
            "2",
            "--fault-at",
            "2s",
            "--fault-for",
            "4s",
        ],
        &[],
        Duration::from_secs(40),
    );
    let stdout = text(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A labelled summary table every 3 s.
    let header = "[  3s] partition leader rack     ack p50   ack p99   e2e p50   e2e p99  sent failed received  lost";
    assert!(stdout.contains(header), "{stdout}");
    // Each leader's rack, as the agent learned it from the mock cluster (zone-a for broker 1, …).
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.starts_with("       ") && !l.trim_start().starts_with("all"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(rows.len() >= 6, "{stdout}");
    for row in &rows {
        let leader: u8 = row[1].parse().expect("leader");
        let rack = format!("zone-{}", char::from(b'a' + leader - 1));
        assert_eq!(row[2], rack, "{stdout}");
    }
    assert!(
        stdout.contains("fault injected: broker 2 down for 4s"),
        "{stdout}"
    );
    assert!(
        stdout.contains("produce failed: timeout"),
        "the fault shows in the summary:\n{stdout}"
    );
    let done = stdout
        .lines()
        .find(|l| l.starts_with("Done after"))
        .expect("totals line");
    let received: u64 = done
        .split("received ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|n| n.parse().ok())
        .expect("received count");
    assert!(received >= 15, "{done}");
}

/// With `--otlp-endpoint`, the demo exports spans too, and a failed send's line in the summary
/// names the trace it is kept in: a `send` span that failed, in what the receiver got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_names_the_trace_of_a_failed_send() {
    let receiver = support::otlp::OtlpReceiver::start(0).await;
    let endpoint = receiver.endpoint();
    let out = tokio::task::spawn_blocking(move || {
        run_to_end(
            &[
                "demo",
                "--duration",
                "8s",
                "--report-every",
                "3s",
                "--broker-down",
                "2",
                "--fault-at",
                "1s",
                "--fault-for",
                "5s",
                "--otlp-endpoint",
                &endpoint,
            ],
            &[],
            Duration::from_secs(40),
        )
    })
    .await
    .unwrap();
    let stdout = text(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let traces: Vec<String> = stdout
        .lines()
        .filter_map(|l| {
            l.split_once("produce failed: timeout (trace ")
                .map(|(_, t)| t)
        })
        .map(|t| t.trim_end_matches(')').to_owned())
        .collect();
    assert!(
        !traces.is_empty(),
        "failed sends name their trace:\n{stdout}"
    );
    let spans = receiver.spans();
    for trace in &traces {
        let send = spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| {
                s.trace_id
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
                    == *trace
            })
            .unwrap_or_else(|| panic!("trace {trace} was exported"));
        assert_eq!(
            support::otlp::attr(&send.attributes, "cc_heartbeat.heartbeat.outcome").as_deref(),
            Some("failed")
        );
    }
}

/// Credentials inside the OTLP endpoint URL never reach `validate` or the run log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_otlp_endpoint_are_never_shown() {
    let http_port = free_port();
    let refused = free_port(); // nothing listens there: exports fail and are logged
    let yaml = format!(
        "clusters: [{{name: a, bootstrap_servers: 'localhost:{refused}'}}]\n\
         export: {{otlp: {{endpoint: 'http://user:url-secret-4b1d@127.0.0.1:{refused}/?token=query-secret-8e2a', protocol: http/protobuf, interval: 1s, timeout: 500ms}}}}\n\
         http: {{listen: '127.0.0.1:{http_port}'}}\nlog: {{level: debug}}\n"
    );
    let config = config_file(&yaml);
    let out = run_to_end(
        &["validate", "--config", config.path().to_str().unwrap()],
        &[],
        Duration::from_secs(10),
    );
    let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("redacted@127.0.0.1"), "{shown}");
    let agent = AgentProcess::start(&yaml, &[]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, log) = agent.terminate(Duration::from_secs(10)).await;
    assert!(
        log.contains("OTLP export failed"),
        "the failing export is logged:\n{log}"
    );
    for secret in ["url-secret-4b1d", "query-secret-8e2a"] {
        assert!(!shown.contains(secret), "{secret} in validate:\n{shown}");
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

/// What is not a config file is refused at once: a FIFO (would block), a device that never
/// ends, a file over 1 MiB.
#[test]
fn only_a_regular_file_of_sensible_size_is_read_as_config() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, "#".repeat(1024 * 1024 + 1)).unwrap();
    let cases = [
        (fifo.to_str().unwrap().to_owned(), "is not a regular file"),
        ("/dev/zero".to_owned(), "is not a regular file"),
        (
            big.to_str().unwrap().to_owned(),
            "expected at most 1048576 (1 MiB)",
        ),
    ];
    for (path, expected) in cases {
        let started = std::time::Instant::now();
        let out = run_to_end(
            &["validate", "--config", &path],
            &[],
            Duration::from_secs(10),
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{path}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{path}: missing {expected:?} in {stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path} answered at once"
        );
    }
}

/// Settings that weaken TLS are said, and `validate` prints the effective value.
#[test]
fn weakened_tls_is_warned_about_and_shown_as_it_is() {
    let config = config_file(
        "clusters:\n  - name: lax\n    bootstrap_servers: b:9093\n    security_protocol: SSL\n\
         \x20   librdkafka: {ssl.endpoint.identification.algorithm: none}\n\
         \x20 - name: strict\n    bootstrap_servers: c:9093\n    security_protocol: SSL\n",
    );
    let out = run_to_end(
        &["validate", "--config", config.path().to_str().unwrap()],
        &[],
        Duration::from_secs(10),
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: cluster lax: TLS certificate or host-name verification is off"),
        "{stderr}"
    );
    assert!(!stderr.contains("cluster strict"), "{stderr}");
    // The effective value: off for lax, on for strict.
    let verify: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("verify:"))
        .collect();
    assert_eq!(
        verify.iter().map(|l| l.trim()).collect::<Vec<_>>(),
        ["verify: false", "verify: true"],
        "{stdout}"
    );
}

/// `librdkafka: {debug: …}` output reaches the log when the log level lets librdkafka's debug
/// lines through, and when it does not, the agent says how to see them.
#[tokio::test]
async fn librdkafka_debug_output_reaches_the_log_or_the_agent_says_how() {
    let closed = free_port();
    let cases = [
        (
            "info",
            "the log level hides librdkafka's debug lines",
            "facility=\"BROKER\"",
        ),
        (
            "info,librdkafka=debug",
            "facility=\"BROKER\"",
            "the log level hides",
        ),
    ];
    for (level, expected, absent) in cases {
        let agent = AgentProcess::start(
            &format!(
                "clusters:\n  - name: dbg\n    bootstrap_servers: 127.0.0.1:{closed}\n    librdkafka: {{debug: broker}}\n\
                 export: {{otlp: {{enabled: false}}}}\nhttp: {{listen: '127.0.0.1:0'}}\nlog: {{level: '{level}'}}\n"
            ),
            &[],
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !agent.output().contains(expected) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let output = agent.output();
        assert!(output.contains(expected), "{level}: {output}");
        assert!(!output.contains(absent), "{level}: {output}");
    }
}

/// `healthcheck` asks a running agent's /healthz at the config's http.listen (0.0.0.0 asked
/// on loopback): exit 0; a listener that answers 503, exit 1 naming the status; nothing
/// listening, exit 1 saying so; an agent that accepts but never answers, exit 1 within the
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exits_0_only_when_healthz_answers_200() {
    let tansu = Tansu::start();
    let port = free_port();
    let text = format!(
        "clusters: [{{name: hc, bootstrap_servers: '{}'}}]\n\
         heartbeat: {{topic: {}}}\n\
         export: {{otlp: {{enabled: false}}}}\n\
         http: {{listen: '0.0.0.0:{port}'}}\n",
        tansu.bootstrap(),
        unique_topic("hc")
    );
    let config = config_file(&text);
    let config_path = config.path().to_str().unwrap().to_owned();
    let mut agent = AgentProcess::start(&text, &[]);
    agent.wait_ready(port, Duration::from_secs(30)).await;
    let healthcheck = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_to_end(&args, &[], Duration::from_secs(20))
        })
    };
    let out = healthcheck(vec![
        "healthcheck".into(),
        "--config".into(),
        config_path.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text_of(&out));
    drop(agent);

    // Nothing listening any more.
    let out = healthcheck(vec!["healthcheck".into(), "--config".into(), config_path])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text_of(&out).contains(&format!("nothing answers at 127.0.0.1:{port}")),
        "{}",
        text_of(&out)
    );

    // A listener whose /healthz says 503.
    let sick = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sick_addr = sick.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        while let Ok((mut s, _)) = sick.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let out = healthcheck(vec![
        "healthcheck".into(),
        "--address".into(),
        sick_addr.to_string(),
    ])
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text_of(&out).contains("answered 503"), "{}", text_of(&out));

    // A listener that accepts and never answers: unhealthy within the timeout.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let started = std::time::Instant::now();
    let out = healthcheck(vec![
        "healthcheck".into(),
        "--address".into(),
        silent_addr.to_string(),
        "--timeout".into(),
        "1s".into(),
    ])
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text_of(&out).contains("no answer"), "{}", text_of(&out));
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(silent);
}

fn text_of(out: &std::process::Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// A second signal while the agent waits on its final export (here a collector that never
/// answers) ends it at once, with the status a shell gives a process ended by SIGINT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_ends_the_agent_at_once() {
    use std::os::unix::process::ExitStatusExt as _;
    let collector = support::local::silent_listener();
    let agent = AgentProcess::start(
        &format!(
            "clusters:\n  - name: away\n    bootstrap_servers: '127.0.0.1:{}'\n\
             export: {{otlp: {{endpoint: 'http://{collector}'}}}}\n\
             http: {{listen: '127.0.0.1:{}'}}\n",
            free_port(),
            free_port()
        ),
        &[],
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    // The final export waits for the silent collector (up to 5 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        agent.output().contains("SIGTERM received.") && !agent.output().contains("Final metric"),
        "still exporting:\n{}",
        agent.output()
    );
    let started = std::time::Instant::now();
    agent.signal(nix::sys::signal::Signal::SIGINT);
    let (status, output) = agent.wait_exit(Duration::from_secs(10)).await;
    // Without it: the rest of the 5 s export bound, 3.5 s from here.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}:\n{output}",
        started.elapsed()
    );
    assert_eq!(status.code(), Some(130), "{status:?}:\n{output}");
    assert_eq!(status.signal(), None);
    assert!(
        output.contains("Second signal: exiting now") && output.contains("signal=\"SIGINT\""),
        "{output}"
    );
}
