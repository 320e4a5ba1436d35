//! The demo's live summary: per partition, the window's latency percentiles and counts, and
//! the run's totals.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::ErrorKind;
use crate::output::table::{Column, Table};
use crate::probe::heartbeat::Observation;

/// Seconds since the start, right-aligned, as the summary's time stamp.
pub(super) fn secs(d: Duration) -> String {
    format!("{:>3}s", d.as_secs())
}

/// Counts over the whole run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub sent: u64,
    pub failed: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
}

impl Totals {
    pub fn describe(&self, elapsed: Duration) -> String {
        format!(
            "Done after {}: sent {} (acked {}, failed {}), received {}, lost {}, duplicated {}, out of order {}.",
            humantime::format_duration(Duration::from_secs(elapsed.as_secs())),
            self.sent,
            self.sent - self.failed,
            self.failed,
            self.received,
            self.lost,
            self.duplicated,
            self.out_of_order
        )
    }
}

#[derive(Debug, Default)]
struct PartitionWindow {
    leader: Option<i32>,
    rack: Option<String>,
    ack: Vec<Duration>,
    e2e: Vec<Duration>,
    sent: u64,
    failed: u64,
    received: u64,
    lost: u64,
    last_error: Option<ErrorKind>,
    /// The trace the window's last failed send is kept in, when spans are exported.
    last_trace: Option<opentelemetry::trace::TraceId>,
}

/// Observations of the current report window, per partition, plus the run's totals.
#[derive(Debug, Default)]
pub struct Summary {
    window: BTreeMap<i32, PartitionWindow>,
    pub totals: Totals,
    pub faults: u32,
}

impl Summary {
    pub fn add(&mut self, observation: Observation) {
        match observation {
            Observation::Acked {
                partition,
                leader,
                rack,
                latency,
                error,
                trace,
                ..
            } => {
                let w = self.window.entry(partition).or_default();
                // A leader that left the metadata (a broker down) keeps the rack it had.
                if leader.is_some() && (leader != w.leader || rack.is_some()) {
                    (w.leader, w.rack) = (leader, rack);
                }
                w.sent += 1;
                self.totals.sent += 1;
                match error {
                    None => w.ack.push(latency),
                    Some(kind) => {
                        w.failed += 1;
                        w.last_error = Some(kind);
                        w.last_trace = trace.or(w.last_trace);
                        self.totals.failed += 1;
                    }
                }
            }
            Observation::RoundTrip {
                partition,
                end_to_end,
                out_of_order,
                ..
            } => {
                let w = self.window.entry(partition).or_default();
                w.e2e.push(end_to_end);
                w.received += 1;
                self.totals.received += 1;
                if out_of_order {
                    self.totals.out_of_order += 1;
                }
            }
            Observation::Lost { partition, .. } => {
                self.window.entry(partition).or_default().lost += 1;
                self.totals.lost += 1;
            }
            Observation::Duplicated { .. } => self.totals.duplicated += 1,
            Observation::Skipped { .. } => {}
        }
    }

    /// Renders the window as a table and starts a new one (partitions stay listed).
    pub fn take_window(&mut self, elapsed: Duration) -> String {
        let mut table = Table::new([
            Column::left("partition", 9),
            Column::right("leader", 6),
            Column::left("rack", 6),
            Column::right("ack p50", 9),
            Column::right("ack p99", 9),
            Column::right("e2e p50", 9),
            Column::right("e2e p99", 9),
            Column::right("sent", 5),
            Column::right("failed", 6),
            Column::right("received", 8),
            Column::right("lost", 5),
            Column::text("note"),
        ]);
        let mut all = PartitionWindow::default();
        for (partition, w) in &mut self.window {
            let note = match (w.last_error, w.last_trace) {
                (Some(kind), Some(trace)) if w.failed > 0 => {
                    format!("produce failed: {kind} (trace {trace})")
                }
                (Some(kind), None) if w.failed > 0 => format!("produce failed: {kind}"),
                _ => String::new(),
            };
            table.row([
                partition.to_string(),
                w.leader.map_or("-".into(), |l| l.to_string()),
                w.rack.clone().unwrap_or_else(|| "-".into()),
                percentile(&mut w.ack, 50.0),
                percentile(&mut w.ack, 99.0),
                percentile(&mut w.e2e, 50.0),
                percentile(&mut w.e2e, 99.0),
                w.sent.to_string(),
                w.failed.to_string(),
                w.received.to_string(),
                w.lost.to_string(),
                note,
            ]);
            all.sent += w.sent;
            all.failed += w.failed;
            all.received += w.received;
            all.lost += w.lost;
            *w = PartitionWindow {
                leader: w.leader,
                rack: w.rack.take(),
                ..PartitionWindow::default()
            };
        }
        let blank = String::new;
        table.row([
            "all".to_owned(),
            blank(),
            blank(),
            blank(),
            blank(),
            blank(),
            blank(),
            all.sent.to_string(),
            all.failed.to_string(),
            all.received.to_string(),
            all.lost.to_string(),
        ]);
        let text = table.render(&format!("[{}] ", secs(elapsed)), "       ");
        text.trim_end().to_owned()
    }
}

/// Nearest-rank percentile, formatted in milliseconds; `-` without samples.
fn percentile(samples: &mut [Duration], p: f64) -> String {
    if samples.is_empty() {
        return "-".into();
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * samples.len() as f64).ceil().max(1.0) as usize;
    let d = samples[rank.min(samples.len()) - 1];
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&mut s, 50.0), "50.0 ms");
        assert_eq!(percentile(&mut s, 99.0), "99.0 ms");
        assert_eq!(percentile(&mut [], 50.0), "-");
    }

    #[test]
    fn window_table_labels_counts_and_resets() {
        let mut summary = Summary::default();
        summary.add(Observation::Acked {
            partition: 0,
            seq: 0,
            leader: Some(2),
            rack: Some("zone-b".into()),
            latency: Duration::from_millis(4),
            error: None,
            trace: None,
        });
        summary.add(Observation::Acked {
            partition: 0,
            seq: 1,
            leader: Some(2),
            rack: Some("zone-b".into()),
            latency: Duration::from_millis(3000),
            error: Some(ErrorKind::Timeout),
            trace: Some(opentelemetry::trace::TraceId::from(0xabc_u128)),
        });
        summary.add(Observation::RoundTrip {
            partition: 0,
            seq: 0,
            end_to_end: Duration::from_millis(6),
            out_of_order: false,
            late: false,
            failed: None,
        });
        summary.add(Observation::Lost {
            partition: 0,
            seq: 2,
        });
        let table = summary.take_window(Duration::from_secs(5));
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].contains("ack p50")
                && lines[0].contains("sent")
                && lines[0].contains("received")
                && lines[0].contains("lost")
        );
        let row: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(row[..7], ["0", "2", "zone-b", "4.0", "ms", "4.0", "ms"]);
        assert!(
            lines[1].ends_with("produce failed: timeout (trace 00000000000000000000000000000abc)"),
            "the failure names its trace: {table}"
        );
        assert!(
            lines[2].split_whitespace().eq(["all", "2", "1", "1", "1"]),
            "{table}"
        );
        assert_eq!(summary.totals.sent, 2);
        assert_eq!(summary.totals.failed, 1);
        let next = summary.take_window(Duration::from_secs(10));
        assert!(
            next.lines()
                .nth(1)
                .unwrap()
                .split_whitespace()
                .eq(["0", "2", "zone-b", "-", "-", "-", "-", "0", "0", "0", "0"]),
            "{next}"
        );
    }
}
