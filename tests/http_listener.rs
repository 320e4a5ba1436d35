#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code panics and prints on purpose

//! The HTTP listener under floods of idle clients: the agent runs with 1,024 open files at
//! most (as many containers do), 1,100 clients each send half a request and wait, and the
//! broker probe must not start failing for want of sockets, nor `/healthz` stop answering;
//! and a client that keeps 200 half-sent requests open, re-opening them every half second,
//! must not fail a single liveness or readiness probe.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::process::{BINARY, config_file, http_get};
use support::tansu::Tansu;
use support::{free_port, unique_topic};
use tokio::io::AsyncWriteExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_half_requests_take_neither_the_probes_sockets_nor_healthz() {
    let tansu = Tansu::start();
    let http_port = free_port();
    let config = config_file(&format!(
        "clusters: [{{name: flood, bootstrap_servers: '{}'}}]\n\
         heartbeat: {{topic: {}}}\n\
         checks: {{connectivity: {{interval: 1s, timeout: 500ms}}, metadata: {{interval: 1s}}}}\n\
         export: {{otlp: {{enabled: false}}}}\n\
         http: {{listen: '127.0.0.1:{http_port}', prometheus: true}}\nlog: {{level: warn}}\n",
        tansu.bootstrap(),
        unique_topic("flood")
    ));
    let log_dir = tempfile::tempdir().unwrap();
    let log_path = log_dir.path().join("agent.log");
    let log = std::fs::File::create(&log_path).unwrap();
    // A hard limit of 1,024 open files, which the agent cannot raise.
    let mut agent = Command::new("prlimit")
        .args(["--nofile=1024:1024", "--", BINARY, "run", "--config"])
        .arg(config.path())
        .env_clear()
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("prlimit (util-linux) runs the agent");
    let base = format!("http://127.0.0.1:{http_port}");
    let started = Instant::now();
    loop {
        if let Ok(r) = http_get(&format!("{base}/readyz/kafka")).await
            && r.status().is_success()
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "agent ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 1,100 clients send half a request head and wait.
    let mut idle = Vec::new();
    for _ in 0..1100 {
        if let Ok(mut socket) = tokio::net::TcpStream::connect(("127.0.0.1", http_port)).await {
            let _ = socket
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .await;
            idle.push(socket);
        }
    }
    println!("{} idle clients connected", idle.len());
    assert!(
        idle.len() > 1024,
        "more clients than the agent has files: {}",
        idle.len()
    );
    // Past the header timeout, /healthz answers while the idle clients still wait.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let answered =
        tokio::time::timeout(Duration::from_secs(1), http_get(&format!("{base}/healthz")))
            .await
            .expect("/healthz answers within a second")
            .expect("/healthz answers");
    assert!(answered.status().is_success());
    // Several broker probe rounds with the clients still there.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let exposition = http_get(&format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    drop(idle);
    let _ = agent.kill();
    let _ = agent.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    let failed: Vec<&str> = exposition
        .lines()
        .filter(|l| {
            l.starts_with("kafka_broker_connection_checks_total{") && l.contains("error_type")
        })
        .collect();
    let passed: Vec<&str> = exposition
        .lines()
        .filter(|l| {
            l.starts_with("kafka_broker_connection_checks_total{") && !l.contains("error_type")
        })
        .collect();
    assert!(failed.is_empty(), "no false failures: {failed:?}\n{log}");
    assert!(!passed.is_empty(), "the broker probe ran: {exposition}");
    assert!(!log.contains("Broker unreachable"), "{log}");
    assert!(
        log.contains("the one idle the longest is closed to make room"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn probes_are_answered_through_a_sustained_slow_client_flood() {
    let tansu = Tansu::start();
    let http_port = free_port();
    let mut agent = support::process::AgentProcess::start(
        &format!(
            "clusters: [{{name: flood, bootstrap_servers: '{}'}}]\n\
             heartbeat: {{topic: {}}}\n\
             export: {{otlp: {{enabled: false}}}}\n\
             http: {{listen: '127.0.0.1:{http_port}', prometheus: true}}\nlog: {{level: warn}}\n",
            tansu.bootstrap(),
            unique_topic("slow-flood")
        ),
        &[],
    );
    let base = format!("http://127.0.0.1:{http_port}");
    agent.wait_ready(http_port, Duration::from_secs(30)).await;

    // The flood: 200 connections, each with half a request head, replaced every 0.5 s, 20 s.
    let flood = tokio::spawn(async move {
        let until = Instant::now() + Duration::from_secs(20);
        let mut opened = 0usize;
        while Instant::now() < until {
            let mut held = Vec::with_capacity(200);
            for _ in 0..200 {
                if let Ok(mut socket) =
                    tokio::net::TcpStream::connect(("127.0.0.1", http_port)).await
                {
                    let _ = socket
                        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                        .await;
                    held.push(socket);
                    opened += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            drop(held);
        }
        opened
    });
    // The kubelet's probes meanwhile: a new connection each, one second to answer.
    let (mut asked, mut answered) = (0, 0);
    let mut failures = Vec::new();
    tokio::time::sleep(Duration::from_secs(1)).await;
    while !flood.is_finished() {
        for path in ["/healthz", "/readyz"] {
            asked += 1;
            match tokio::time::timeout(Duration::from_secs(1), http_get(&format!("{base}{path}")))
                .await
            {
                Ok(Ok(r)) if r.status().is_success() => answered += 1,
                Ok(Ok(r)) => failures.push(format!("{path}: {}", r.status())),
                Ok(Err(e)) => failures.push(format!("{path}: {e}")),
                Err(_) => failures.push(format!("{path}: no answer within 1 s")),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let opened = flood.await.unwrap();
    let log = agent.output();
    println!("{opened} flood connections; {answered} of {asked} probes answered");
    assert!(opened >= 4000, "the flood ran: {opened} connections");
    assert!(asked >= 30, "probed throughout: {asked}");
    assert!(
        failures.is_empty(),
        "{} of {asked} probes failed: {failures:?}",
        failures.len()
    );
    assert!(
        log.contains("the one idle the longest is closed to make room"),
        "{log}"
    );
}
