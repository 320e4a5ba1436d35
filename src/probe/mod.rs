//! The probes, and the one loop that runs every one of them.
//!
//! A probe is a [`Probe`]: [`Probe::probe_once`] measures once and emits what it saw (each
//! probe's events log and record together), and [`Probe::schedule`] says how often. [`run`]
//! owns everything else: ticking, the bound on one probe, retrying a failing probe sooner,
//! waking early on request, cancellation, and the `probe` span every log line of the probe
//! carries. `check` runs one round of each probe through [`once`], with the same bound and
//! span. [`set::ProbeSet`] builds a cluster's probes for both.
//!
//! Missed ticks are skipped: ticks stay on a fixed grid from the probe's start, and a tick
//! that falls while the probe is still running is dropped, never queued. A slow probe
//! therefore never causes a burst of catch-up probes, and a steady one runs exactly once per
//! interval (a heartbeat rate stays 1/interval whatever a single round cost).

pub mod broker;
pub mod cap;
pub mod commit;
pub mod groups;
pub mod heartbeat;
pub mod metadata;
pub mod offsets;
pub mod schema_registry;
pub mod set;
mod spans;
pub mod topic;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;

use crate::error::TimedOut;
use crate::events::probe::{FailureStreak, ProbeStarted};
use crate::telemetry::instruments::{attr, error_kv};
use crate::telemetry::traces::{FinishedSpan, TraceIds, Traces, WallClock, in_span};

/// One kind of measurement, run by [`run`] on its [`Schedule`].
pub trait Probe: Send {
    /// Names the probe in the `probe` span and in logs: `broker`, `metadata`, `topic`, …
    const KIND: &'static str;
    /// What one round found (used by `check`; the agent's loop drops it).
    type Output: Send;
    /// Why one round could not be done. Failures that are measurements (a broker that does
    /// not answer) are part of the output, not errors.
    type Error: std::error::Error + Send + Sync + 'static;

    /// How often to run, and how long one round may take.
    fn schedule(&self) -> Schedule;

    /// One round: measure, emit the events (log lines and metrics), return what was found.
    ///
    /// It must be cancel-safe: the loop drops a round that runs past its bound, and shutdown
    /// drops the one under way. A round cut at any await leaves the probe as it was, or
    /// makes the next round finish its work; each implementation says how.
    fn probe_once(&mut self) -> impl Future<Output = Result<Self::Output, Self::Error>> + Send;

    /// Whether each round is a span of its own (`probe <kind>`, with its outcome). Probes
    /// whose rounds are traced per target (brokers, the heartbeat) say no.
    const ROUND_SPAN: bool = true;

    /// What the probe does, for its start-up log line.
    fn describe(&self) -> String {
        String::new()
    }

    /// Cleans up after the last round (e.g. waits for heartbeats in flight).
    fn stop(self) -> impl Future<Output = ()> + Send
    where
        Self: Sized,
    {
        async {}
    }
}

/// When a probe runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub interval: Duration,
    /// Bound on one [`Probe::probe_once`]; a round still running then fails with `timeout`.
    pub timeout: Duration,
    /// After a failed round, try again this much sooner than the next tick.
    pub retry: Option<Backoff>,
}

impl Schedule {
    pub fn every(interval: Duration, timeout: Duration) -> Self {
        Self {
            interval,
            timeout,
            retry: None,
        }
    }

    /// Retries a failed round after `first`, doubling up to `max`, but never later than the
    /// next tick.
    pub fn retrying(self, first: Duration, max: Duration) -> Self {
        Self {
            retry: Some(Backoff { first, max }),
            ..self
        }
    }
}

/// Exponential backoff between retries of a failing probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

/// Asks a running probe for a round now, without waiting for its next tick. Requests made
/// before the probe gets to them are coalesced into one round.
#[derive(Clone, Debug)]
pub struct Wake(Arc<watch::Sender<u64>>);

impl Default for Wake {
    fn default() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }
}

impl Wake {
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests a round as soon as the probe is idle.
    pub fn now(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn listen(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// The span every log line of a probe carries: `probe{kind, cluster}`.
pub fn span(kind: &'static str, cluster: &str) -> tracing::Span {
    // A root span: the cluster's own span would only repeat the cluster name.
    tracing::info_span!(parent: None, "probe", kind = %kind, cluster = %cluster)
}

/// Why one round gave no result.
#[derive(Debug, thiserror::Error)]
pub enum RoundError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Failed(E),
    #[error("the round did not finish")]
    TimedOut(#[source] TimedOut),
}

/// One round of `probe`, bounded by its schedule's timeout, inside its [`span`]: what `check`
/// runs, and what the loop runs on every tick.
pub async fn once<P: Probe>(
    probe: &mut P,
    cluster: &str,
) -> Result<P::Output, RoundError<P::Error>> {
    round(probe).instrument(span(P::KIND, cluster)).await
}

/// One bounded round, in the caller's span.
async fn round<P: Probe>(probe: &mut P) -> Result<P::Output, RoundError<P::Error>> {
    let timeout = probe.schedule().timeout;
    match tokio::time::timeout(timeout, probe.probe_once()).await {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(error)) => Err(RoundError::Failed(error)),
        Err(_) => Err(RoundError::TimedOut(TimedOut {
            what: "no result",
            after: timeout,
        })),
    }
}

/// Runs `probe` until `cancel`, inside its [`span`], then stops it. `wake` asks for a round
/// before the next tick; `traces` keeps the rounds that failed (and a sample of the others)
/// as spans, the failure logged inside.
pub fn run<P: Probe + 'static>(
    probe: P,
    cluster: &str,
    wake: Wake,
    cancel: CancellationToken,
    traces: &Traces,
) -> impl Future<Output = ()> + Send + 'static {
    let rounds = RoundSpans {
        traces: if P::ROUND_SPAN {
            traces.clone()
        } else {
            Traces::disabled()
        },
        cluster: cluster.to_owned(),
    };
    run_rounds(probe, wake, cancel, rounds).instrument(span(P::KIND, cluster))
}

/// The spans of a probe's rounds: `probe <kind>`, from the round's start to its end, with
/// the cluster, the outcome and the failure's `error.type`.
struct RoundSpans {
    traces: Traces,
    cluster: String,
}

impl RoundSpans {
    /// Records the round if kept; returns its ids, for the failure to be logged inside.
    fn record(
        &self,
        kind: &'static str,
        started: std::time::Instant,
        error: Option<&(dyn std::error::Error + 'static)>,
    ) -> Option<TraceIds> {
        let ids = self.traces.start()?;
        if error.is_none() && !self.traces.keeps_healthy(ids.trace) {
            return None;
        }
        let mut attributes = vec![
            KeyValue::new(attr::CLUSTER_NAME, self.cluster.clone()),
            KeyValue::new(
                "cc_heartbeat.probe.outcome",
                if error.is_some() { "failed" } else { "ok" },
            ),
        ];
        if let Some(error) = error {
            attributes.push(error_kv(crate::error::ErrorKind::of(error)));
        }
        let clock = WallClock::now();
        self.traces.record(FinishedSpan {
            name: format!("probe {kind}"),
            kind: SpanKind::Internal,
            ids,
            parent: None,
            start: clock.at(started),
            end: clock.at(std::time::Instant::now()),
            attributes,
            error: error.map(|e| crate::error::Chain(e).to_string()),
            links: Vec::new(),
        });
        Some(ids)
    }
}

async fn run_rounds<P: Probe>(
    mut probe: P,
    wake: Wake,
    cancel: CancellationToken,
    spans: RoundSpans,
) {
    let schedule = probe.schedule();
    ProbeStarted {
        kind: P::KIND,
        interval: schedule.interval,
        timeout: schedule.timeout,
        description: &probe.describe(),
    }
    .emit();
    let start = Instant::now();
    let mut due = start;
    let mut streak = FailureStreak::default();
    let mut retry_in = schedule.retry.map(|b| b.first);
    let mut requests = wake.listen();
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(due) => {}
            // `wake` is held here, so the channel never closes under the loop.
            Ok(()) = requests.changed() => {}
        }
        // This round answers every request made so far.
        requests.borrow_and_update();
        let started = std::time::Instant::now();
        let result = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            result = round(&mut probe) => result,
        };
        let now = Instant::now();
        let next_tick = next_tick(start, schedule.interval, now);
        let error: Option<Box<dyn std::error::Error + Send + Sync>> = match result {
            Ok(_) => None,
            Err(RoundError::Failed(error)) => Some(Box::new(error)),
            Err(RoundError::TimedOut(timed_out)) => Some(Box::new(timed_out)),
        };
        let traced = spans.record(P::KIND, started, error.as_deref().map(|e| e as _));
        match error {
            None => {
                streak.recovered(P::KIND);
                retry_in = schedule.retry.map(|b| b.first);
                due = next_tick;
            }
            Some(error) => {
                due = match (schedule.retry, retry_in) {
                    (Some(backoff), Some(wait)) => {
                        retry_in = Some((wait * 2).min(backoff.max));
                        (now + wait).min(next_tick)
                    }
                    _ => next_tick,
                };
                in_span(traced, || {
                    streak.failed(P::KIND, &*error, due.saturating_duration_since(now));
                });
            }
        }
    }
    probe.stop().await;
}

/// The first tick of the grid `start + k·interval` that is after `now`.
fn next_tick(start: Instant, interval: Duration, now: Instant) -> Instant {
    let interval = interval.max(Duration::from_millis(1));
    let elapsed = now.saturating_duration_since(start);
    let ticks = elapsed.as_nanos() / interval.as_nanos() + 1;
    u32::try_from(ticks)
        .ok()
        .and_then(|ticks| interval.checked_mul(ticks))
        .and_then(|offset| start.checked_add(offset))
        // Beyond any real schedule: a year from now is as good as never.
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

#[cfg(test)]
mod tests;
