//! What the agent observed of each heartbeat, set against what an independent witness read on
//! the topic: the check every heartbeat-truth test ends with.

use std::collections::{BTreeMap, BTreeSet};

use cc_heartbeat::error::ErrorKind;
use cc_heartbeat::probe::heartbeat::Observation;

/// (partition, sequence number) of one heartbeat.
pub type Heartbeat = (i32, u64);

#[derive(Debug, Default)]
pub struct Ledger {
    /// Sends the broker acknowledged.
    pub acked: BTreeSet<Heartbeat>,
    /// Sends reported failed, with the error they were reported with.
    pub failed: BTreeMap<Heartbeat, ErrorKind>,
    /// Heartbeats consumed back.
    pub received: BTreeSet<Heartbeat>,
    /// Heartbeats counted lost.
    pub lost: BTreeSet<Heartbeat>,
    /// Leaders the acks named, in order, per partition (each change once).
    pub leaders: BTreeMap<i32, Vec<i32>>,
}

impl Ledger {
    pub fn of(observations: &[Observation]) -> Self {
        let mut ledger = Self::default();
        for o in observations {
            match o {
                Observation::Acked {
                    partition,
                    seq,
                    error: None,
                    leader,
                    ..
                } => {
                    ledger.acked.insert((*partition, *seq));
                    if let Some(leader) = leader {
                        let seen = ledger.leaders.entry(*partition).or_default();
                        if seen.last() != Some(leader) {
                            seen.push(*leader);
                        }
                    }
                }
                Observation::Acked {
                    partition,
                    seq,
                    error: Some(kind),
                    ..
                } => {
                    ledger.failed.insert((*partition, *seq), *kind);
                }
                Observation::RoundTrip { partition, seq, .. } => {
                    ledger.received.insert((*partition, *seq));
                }
                Observation::Lost { partition, seq } => {
                    ledger.lost.insert((*partition, *seq));
                }
                _ => {}
            }
        }
        ledger
    }

    pub fn sent(&self) -> usize {
        self.acked.len() + self.failed.len()
    }

    /// Failed sends that are on the topic all the same.
    pub fn written_after_all(&self, on_topic: &BTreeSet<Heartbeat>) -> BTreeSet<Heartbeat> {
        self.failed
            .keys()
            .filter(|h| on_topic.contains(h))
            .copied()
            .collect()
    }

    /// The agent's account against the witness's `on_topic`:
    /// - every heartbeat on the topic was consumed back, but for the newest `in_flight` of
    ///   each partition, which may still have been on their way when the agent stopped;
    /// - nothing was consumed back that is not on the topic;
    /// - every heartbeat sent is accounted exactly once: received, lost, or failed and never
    ///   written (again leaving out those in flight at the stop);
    /// - nothing acknowledged went missing: nothing was lost.
    #[track_caller]
    pub fn assert_matches(&self, on_topic: &BTreeSet<Heartbeat>, in_flight: u64) {
        let newest = |p: i32| on_topic.iter().filter(|h| h.0 == p).map(|h| h.1).max();
        let at_the_end = |(p, seq): &Heartbeat| newest(*p).is_none_or(|max| seq + in_flight > max);
        let missed: Vec<&Heartbeat> = on_topic
            .difference(&self.received)
            .filter(|h| !at_the_end(h))
            .collect();
        assert!(
            missed.is_empty(),
            "on the topic but not consumed back: {missed:?}"
        );
        let phantom: Vec<&Heartbeat> = self.received.difference(on_topic).collect();
        assert!(
            phantom.is_empty(),
            "consumed back but not on the topic: {phantom:?}"
        );
        for h in self.acked.iter().chain(self.failed.keys()) {
            let never_written = self.failed.contains_key(h) && !on_topic.contains(h);
            let ways = [
                self.received.contains(h),
                self.lost.contains(h),
                never_written,
            ];
            let n = ways.iter().filter(|w| **w).count();
            assert!(
                n == 1 || (n == 0 && at_the_end(h)),
                "heartbeat {h:?} is accounted {n} times (received, lost, never written: {ways:?})"
            );
        }
        assert!(self.lost.is_empty(), "acked but lost: {:?}", self.lost);
    }
}
