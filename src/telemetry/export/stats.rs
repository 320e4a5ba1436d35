//! The exporter's own results, as the agent's metrics: export requests by outcome, points the
//! receiver refused or the delta buffer dropped, and the requests held for a collector that
//! is away. The exporter writes them; observable instruments read them at each collection.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};

use crate::error::ErrorKind;

/// The OpenTelemetry signals the agent exports (`otel.signal`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Signal {
    Metrics,
    Traces,
    Logs,
}

impl Signal {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Metrics => "metrics",
            Self::Traces => "traces",
            Self::Logs => "logs",
        }
    }
}

/// Counts shared by the exporters and the instruments that report them.
#[derive(Debug, Default)]
pub(crate) struct ExportStats {
    /// Requests by signal and outcome (`None`: delivered; else the `error.type`).
    batches: Mutex<BTreeMap<(Signal, Option<&'static str>), u64>>,
    /// Points refused (partial success, a permanent error) or dropped (full buffer).
    rejected: Mutex<BTreeMap<Signal, u64>>,
    /// Delta requests held for the collector, and their encoded bytes.
    held: AtomicI64,
    held_bytes: AtomicI64,
}

impl ExportStats {
    pub(crate) fn count_batch(&self, signal: Signal, error: Option<&'static str>) {
        if let Ok(mut batches) = self.batches.lock() {
            *batches.entry((signal, error)).or_default() += 1;
        }
    }

    /// Counts what an SDK exporter (spans, log records) did with a batch of `items`: delivered,
    /// or failed and its items dropped.
    pub(crate) fn count_sdk_export(&self, signal: Signal, result: &OTelSdkResult, items: usize) {
        let Err(error) = result else {
            self.count_batch(signal, None);
            return;
        };
        let kind = match error {
            OTelSdkError::Timeout(_) => ErrorKind::Timeout,
            _ => ErrorKind::Transport,
        };
        self.count_batch(signal, Some(kind.as_str()));
        self.count_rejected(signal, items as u64);
    }

    pub(crate) fn count_rejected(&self, signal: Signal, points: u64) {
        if let Ok(mut rejected) = self.rejected.lock() {
            *rejected.entry(signal).or_default() += points;
        }
    }

    pub(crate) fn set_held(&self, held: usize, bytes: usize) {
        self.held
            .store(i64::try_from(held).unwrap_or(i64::MAX), Ordering::Relaxed);
        self.held_bytes
            .store(i64::try_from(bytes).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// Every (signal, outcome, count) so far.
    pub(crate) fn batches(&self) -> Vec<(Signal, Option<&'static str>, u64)> {
        self.batches
            .lock()
            .map(|b| b.iter().map(|((s, e), n)| (*s, *e, *n)).collect())
            .unwrap_or_default()
    }

    /// Every (signal, points) so far; every signal that exports is listed, at 0 until a
    /// point is refused.
    pub(crate) fn rejected(&self) -> Vec<(Signal, u64)> {
        let mut out: BTreeMap<Signal, u64> = self
            .batches()
            .into_iter()
            .map(|(signal, _, _)| (signal, 0))
            .collect();
        if let Ok(rejected) = self.rejected.lock() {
            out.extend(rejected.iter().map(|(s, n)| (*s, *n)));
        }
        out.into_iter().collect()
    }

    pub(crate) fn held(&self) -> i64 {
        self.held.load(Ordering::Relaxed)
    }

    pub(crate) fn held_bytes(&self) -> i64 {
        self.held_bytes.load(Ordering::Relaxed)
    }
}

/// When a repeated failure is due to be said loudly: the first time, then at most every
/// `every`.
#[derive(Debug)]
pub(crate) struct Reminder {
    every: Duration,
    last: Mutex<Option<Instant>>,
}

impl Reminder {
    pub(crate) const fn every(every: Duration) -> Self {
        Self {
            every,
            last: Mutex::new(None),
        }
    }

    pub(crate) fn due(&self) -> bool {
        let now = Instant::now();
        self.last.lock().is_ok_and(|mut last| {
            let due = last.is_none_or(|at| now - at >= self.every);
            if due {
                *last = Some(now);
            }
            due
        })
    }
}
