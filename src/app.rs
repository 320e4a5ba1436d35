//! The agent: builds every cluster's probes, runs them until the shutdown trigger, then drains.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::cluster::ClusterRun;
use crate::config::Config;
use crate::error::BuildError;
use crate::health::{self, Readiness};
use crate::kafka::ClientTiming;
use crate::probe::heartbeat::{HeartbeatClients, Tap};
use crate::telemetry::{Identity, Instruments};

/// How long probes get to stop after the shutdown trigger.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Options beyond the config file.
#[derive(Default)]
pub struct RunOptions {
    /// Receives every heartbeat observation (the demo's summary, tests).
    pub tap: Option<Tap>,
    /// Serve `/healthz` and `/readyz` on `http.listen`.
    pub health: bool,
    /// Shared readiness; a fresh one when `None`.
    pub readiness: Option<Readiness>,
    /// Serve `/metrics` from this registry (with `health`).
    pub prometheus: Option<crate::telemetry::Scrape>,
}

/// Runs the agent until `shutdown` completes, then stops every probe within the grace period.
/// Errors only when something cannot be built at start-up; at run time everything is retried.
pub async fn run(
    config: &Config,
    identity: &Identity,
    instruments: &Instruments,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BuildError> {
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let readiness = options.readiness.unwrap_or_default();

    // Build every client before anything runs, so a bad setting fails start-up at once.
    let timing = ClientTiming::of(config);
    let mut clients = Vec::with_capacity(config.clusters.len());
    for cluster in &config.clusters {
        clients.push(HeartbeatClients::new(
            cluster,
            timing,
            &identity.instance_id,
            config.heartbeat.read_back,
        )?);
    }
    let health = if options.health {
        Some(
            health::serve(
                config.http.listen,
                readiness.clone(),
                config.http.readiness,
                options.prometheus.clone(),
                cancel.clone(),
            )
            .await?,
        )
    } else {
        None
    };

    info!(
        name: "agent.started",
        version = crate::telemetry::SERVICE_VERSION,
        instance = %identity.instance_id,
        clusters = config.clusters.len(),
        "cc-heartbeat started.",
    );
    for warning in crate::config::tls_weakened(config) {
        warn!(name: "agent.config_warning", "{warning}.");
    }
    if !tracing::enabled!(target: "librdkafka", tracing::Level::DEBUG) {
        for cluster in config
            .clusters
            .iter()
            .filter(|c| c.librdkafka.contains_key("debug"))
        {
            warn!(
                name: "agent.librdkafka_debug_hidden",
                cluster = %cluster.name,
                "librdkafka.debug is set, but the log level hides librdkafka's debug lines; run with --log-level info,librdkafka=debug (or set log.level) to see them."
            );
        }
    }
    for (cluster, clients) in config.clusters.iter().zip(clients) {
        let run = ClusterRun {
            cluster: cluster.clone(),
            heartbeat: config.heartbeat.clone(),
            checks: config.checks.clone(),
            timing,
            instruments: instruments.clone(),
            tap: options.tap.clone(),
            metadata_ready: readiness.latch(format!("{} metadata", cluster.name)),
            heartbeat_ready: readiness.latch(match config.heartbeat.read_back {
                true => format!("{} first heartbeat round trip", cluster.name),
                false => format!("{} first heartbeat acknowledged", cluster.name),
            }),
            topic_ready: readiness.condition(),
            cluster_usable: readiness.condition(),
        };
        tasks.spawn(run.run(clients, cancel.clone(), tasks.clone()));
    }

    shutdown.await;
    info!(name: "agent.stopping", "Shutting down: stopping probes.");
    cancel.cancel();
    tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait())
        .await
        .is_err()
    {
        warn!(name: "agent.stop_overdue", grace = ?SHUTDOWN_GRACE, "Probes did not stop within the grace period.");
    }
    if let Some(health) = health {
        health.stopped().await;
    }
    Ok(())
}
