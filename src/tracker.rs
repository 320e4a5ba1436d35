//! Sequence and loss bookkeeping for heartbeats: what was sent, acked, consumed back or lost.
//!
//! Pure and clock-free: callers pass monotonic [`Instant`]s, so the rules are unit-tested
//! without a broker. Each partition keeps a ring of the last `window` sequence numbers; the
//! window spans several loss timeouts, so every heartbeat is resolved before its slot is reused.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::error::ErrorKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Handed to the producer, no ack yet.
    InFlight,
    /// Acked by the broker, not consumed back yet.
    Acked,
    /// Acked, and not consumed back within the loss timeout: lost, once the topic is known
    /// to be still there (see [`Tracker::overdue`]).
    Suspected,
    /// The send failed (with this error); not expected back, but it may show up: then it
    /// was written after all.
    Failed(ErrorKind),
    /// Not consumed back within the loss timeout after its ack.
    Lost,
    /// Sent to a topic that has since disappeared or been recreated: it can no longer be
    /// read back, so it is never counted lost (but counts as received if it shows up).
    Voided,
    /// Consumed back, from this offset.
    Received { offset: i64 },
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    seq: u64,
    sent_at: Instant,
    acked_at: Option<Instant>,
    state: State,
}

#[derive(Debug)]
struct Ledger {
    next_seq: u64,
    slots: Vec<Option<Slot>>,
    highest_received: Option<u64>,
}

impl Ledger {
    fn new(window: usize) -> Self {
        Self {
            next_seq: 0,
            slots: vec![None; window],
            highest_received: None,
        }
    }
}

/// What a consumed heartbeat turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Receipt {
    /// First time seen. `late` when it had already been counted lost; `out_of_order` when a
    /// higher sequence number was seen before it; `failed` when its send had been reported
    /// as failed (it was written after all).
    Received {
        end_to_end: Duration,
        out_of_order: bool,
        late: bool,
        failed: Option<ErrorKind>,
    },
    /// Seen before, in another record: the heartbeat is on the topic twice.
    Duplicate,
    /// The same record again (the same offset): the consumer read it twice (as it may after a
    /// leader change), the topic holds it once.
    Reread,
    /// Older than the window remembers, so it cannot be classified.
    Stale,
    /// A sequence number this run never sent on that partition.
    Unexpected,
}

/// Per-partition heartbeat bookkeeping.
#[derive(Debug)]
pub struct Tracker {
    window: usize,
    loss_timeout: Duration,
    ledgers: BTreeMap<i32, Ledger>,
}

/// One heartbeat, by partition and sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lost {
    pub partition: i32,
    pub seq: u64,
}

impl Tracker {
    /// Sized so the window spans at least four loss timeouts of heartbeats.
    pub fn new(interval: Duration, loss_timeout: Duration) -> Self {
        let per_timeout = loss_timeout.as_secs_f64() / interval.as_secs_f64().max(1e-3);
        let window = ((per_timeout * 4.0).ceil() as usize)
            .clamp(64, 16_384)
            .next_power_of_two();
        Self {
            window,
            loss_timeout,
            ledgers: BTreeMap::new(),
        }
    }

    pub fn window(&self) -> usize {
        self.window
    }

    /// Starts tracking `partition` (no-op when already tracked).
    pub fn add_partition(&mut self, partition: i32) {
        let window = self.window;
        self.ledgers
            .entry(partition)
            .or_insert_with(|| Ledger::new(window));
    }

    fn index(&self, seq: u64) -> usize {
        (seq % self.window as u64) as usize
    }

    /// Records heartbeat `seq` about to be sent on `partition` (sequence numbers of a
    /// partition are handed out in order by the sender, from 0).
    pub fn register(&mut self, partition: i32, seq: u64, sent_at: Instant) {
        let window = self.window;
        let ledger = self
            .ledgers
            .entry(partition)
            .or_insert_with(|| Ledger::new(window));
        ledger.next_seq = ledger.next_seq.max(seq + 1);
        ledger.slots[(seq % window as u64) as usize] = Some(Slot {
            seq,
            sent_at,
            acked_at: None,
            state: State::InFlight,
        });
    }

    fn slot_mut(&mut self, partition: i32, seq: u64) -> Option<&mut Slot> {
        let index = self.index(seq);
        self.ledgers
            .get_mut(&partition)?
            .slots
            .get_mut(index)?
            .as_mut()
            .filter(|slot| slot.seq == seq)
    }

    /// The broker acked the heartbeat, or its send failed with `Err(kind)`. Returns the
    /// failure when the heartbeat had already been read back: it was written after all (a
    /// leader whose in-sync replicas shrank to itself makes a record readable before the
    /// producer hears that the write failed).
    pub fn acked(
        &mut self,
        partition: i32,
        seq: u64,
        at: Instant,
        result: Result<(), ErrorKind>,
    ) -> Option<ErrorKind> {
        let slot = self.slot_mut(partition, seq)?;
        match (slot.state, result) {
            (State::InFlight, result) => {
                slot.state = match result {
                    Ok(()) => State::Acked,
                    Err(kind) => State::Failed(kind),
                };
                slot.acked_at = Some(at);
                None
            }
            // Consumed before its outcome arrived: it stays Received.
            (State::Received { .. }, Err(kind)) => Some(kind),
            // Acked after being consumed, or voided while in flight: nothing changes.
            _ => None,
        }
    }

    /// A heartbeat of this run was consumed back at `at`, from `offset`.
    pub fn received(&mut self, partition: i32, seq: u64, offset: i64, at: Instant) -> Receipt {
        let window = self.window as u64;
        let index = self.index(seq);
        let Some(ledger) = self.ledgers.get_mut(&partition) else {
            return Receipt::Unexpected;
        };
        if seq >= ledger.next_seq {
            return Receipt::Unexpected;
        }
        if seq + window < ledger.next_seq {
            return Receipt::Stale;
        }
        let Some(slot) = ledger.slots[index].as_mut().filter(|s| s.seq == seq) else {
            return Receipt::Stale;
        };
        let (late, failed) = match slot.state {
            State::Received { offset: first } if first == offset => return Receipt::Reread,
            State::Received { .. } => return Receipt::Duplicate,
            State::Lost => (true, None),
            State::Failed(kind) => (false, Some(kind)),
            State::InFlight | State::Acked | State::Suspected | State::Voided => (false, None),
        };
        slot.state = State::Received { offset };
        let out_of_order = ledger.highest_received.is_some_and(|h| h > seq);
        ledger.highest_received = Some(ledger.highest_received.map_or(seq, |h| h.max(seq)));
        Receipt::Received {
            end_to_end: at.saturating_duration_since(slot.sent_at),
            out_of_order,
            late,
            failed,
        }
    }

    /// Acked heartbeats not consumed back within the loss timeout (counted from the ack):
    /// marks them suspected and returns them. They count as lost once
    /// [`Tracker::confirm_lost`] says so, which the caller does after checking that the
    /// topic is still there; a topic that vanished voids them instead.
    pub fn overdue(&mut self, now: Instant) -> Vec<Lost> {
        let mut overdue = Vec::new();
        for (partition, ledger) in &mut self.ledgers {
            for slot in ledger.slots.iter_mut().flatten() {
                if slot.state == State::Acked
                    && slot.acked_at.is_some_and(|acked| {
                        now.saturating_duration_since(acked) >= self.loss_timeout
                    })
                {
                    slot.state = State::Suspected;
                    overdue.push(Lost {
                        partition: *partition,
                        seq: slot.seq,
                    });
                }
            }
        }
        overdue.sort();
        overdue
    }

    /// Counts as lost the suspected heartbeats among `suspects` (those consumed or voided
    /// meanwhile are not), and returns them.
    pub fn confirm_lost(&mut self, suspects: &[Lost]) -> Vec<Lost> {
        suspects
            .iter()
            .copied()
            .filter(|l| {
                self.slot_mut(l.partition, l.seq)
                    .filter(|slot| slot.state == State::Suspected)
                    .map(|slot| slot.state = State::Lost)
                    .is_some()
            })
            .collect()
    }

    /// Voids one heartbeat, unless it is already resolved.
    pub fn void(&mut self, partition: i32, seq: u64) {
        if let Some(slot) = self.slot_mut(partition, seq)
            && matches!(
                slot.state,
                State::InFlight | State::Acked | State::Suspected
            )
        {
            slot.state = State::Voided;
        }
    }

    /// Voids every unresolved heartbeat (in flight, acked or suspected) of `partitions`, or
    /// of every partition: their topic is gone. Returns how many.
    pub fn void_pending(&mut self, partitions: Option<&[i32]>) -> usize {
        let mut voided = 0;
        for (partition, ledger) in &mut self.ledgers {
            if partitions.is_some_and(|only| !only.contains(partition)) {
                continue;
            }
            for slot in ledger.slots.iter_mut().flatten() {
                if matches!(
                    slot.state,
                    State::InFlight | State::Acked | State::Suspected
                ) {
                    slot.state = State::Voided;
                    voided += 1;
                }
            }
        }
        voided
    }

    /// Heartbeats sent but not yet resolved (in flight, or acked and awaited).
    pub fn pending(&self) -> usize {
        self.ledgers
            .values()
            .flat_map(|l| l.slots.iter().flatten())
            .filter(|s| matches!(s.state, State::InFlight | State::Acked | State::Suspected))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn tracker() -> (Tracker, Instant) {
        let mut t = Tracker::new(SEC, 20 * SEC);
        t.add_partition(0);
        (t, Instant::now())
    }

    /// Overdue heartbeats, confirmed lost at once (the topic is there).
    fn sweep(t: &mut Tracker, now: Instant) -> Vec<Lost> {
        let overdue = t.overdue(now);
        t.confirm_lost(&overdue)
    }

    /// Registers the next heartbeat of `partition`, as the sender numbers them.
    fn send(t: &mut Tracker, partition: i32, at: Instant) -> u64 {
        let seq = t.ledgers.get(&partition).map_or(0, |l| l.next_seq);
        t.register(partition, seq, at);
        seq
    }

    #[test]
    fn window_covers_several_loss_timeouts() {
        assert_eq!(Tracker::new(SEC, 20 * SEC).window(), 128);
        assert_eq!(
            Tracker::new(Duration::from_millis(100), 20 * SEC).window(),
            1024
        );
        assert_eq!(Tracker::new(10 * SEC, 20 * SEC).window(), 64);
    }

    #[test]
    fn round_trip_reports_end_to_end_from_the_send_time() {
        let (mut t, t0) = tracker();
        let seq = send(&mut t, 0, t0);
        t.acked(0, seq, t0 + Duration::from_millis(3), Ok(()));
        let r = t.received(0, seq, seq as i64, t0 + Duration::from_millis(7));
        assert_eq!(
            r,
            Receipt::Received {
                end_to_end: Duration::from_millis(7),
                out_of_order: false,
                late: false,
                failed: None,
            }
        );
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn consumed_before_ack_is_not_later_counted_lost() {
        let (mut t, t0) = tracker();
        let seq = send(&mut t, 0, t0);
        assert!(matches!(
            t.received(0, seq, seq as i64, t0 + SEC),
            Receipt::Received { .. }
        ));
        t.acked(0, seq, t0 + 2 * SEC, Ok(()));
        assert!(sweep(&mut t, t0 + 60 * SEC).is_empty());
    }

    #[test]
    fn acked_but_never_consumed_is_lost_after_the_timeout_from_the_ack() {
        let (mut t, t0) = tracker();
        let seq = send(&mut t, 0, t0);
        t.acked(0, seq, t0 + 5 * SEC, Ok(()));
        assert!(
            sweep(&mut t, t0 + 24 * SEC).is_empty(),
            "19 s after the ack is not yet lost"
        );
        assert_eq!(sweep(&mut t, t0 + 25 * SEC), [Lost { partition: 0, seq }]);
        assert!(sweep(&mut t, t0 + 26 * SEC).is_empty(), "counted once");
        // A late arrival counts as received, flagged late, and is not un-lost.
        assert!(matches!(
            t.received(0, seq, seq as i64, t0 + 30 * SEC),
            Receipt::Received { late: true, .. }
        ));
    }

    #[test]
    fn failed_sends_are_never_lost_and_are_flagged_when_they_arrive_after_all() {
        let (mut t, t0) = tracker();
        let seq = send(&mut t, 0, t0);
        t.acked(0, seq, t0 + 5 * SEC, Err(ErrorKind::Timeout));
        assert!(sweep(&mut t, t0 + 100 * SEC).is_empty());
        assert!(matches!(
            t.received(0, seq, seq as i64, t0 + 6 * SEC),
            Receipt::Received {
                late: false,
                failed: Some(ErrorKind::Timeout),
                ..
            }
        ));
    }

    #[test]
    fn a_send_reported_failed_after_its_heartbeat_was_read_back_was_written_after_all() {
        let (mut t, t0) = tracker();
        let seq = send(&mut t, 0, t0);
        let other = send(&mut t, 0, t0);
        assert!(matches!(
            t.received(0, seq, seq as i64, t0 + SEC),
            Receipt::Received { failed: None, .. }
        ));
        assert_eq!(
            t.acked(0, seq, t0 + 2 * SEC, Err(ErrorKind::Timeout)),
            Some(ErrorKind::Timeout)
        );
        assert_eq!(
            t.acked(0, other, t0 + 2 * SEC, Err(ErrorKind::Timeout)),
            None
        );
        assert_eq!(
            t.acked(0, seq, t0 + 3 * SEC, Ok(())),
            None,
            "an ack after a read says nothing"
        );
        assert!(sweep(&mut t, t0 + 100 * SEC).is_empty());
    }

    #[test]
    fn overdue_heartbeats_count_lost_only_when_confirmed_and_not_resolved_meanwhile() {
        let (mut t, t0) = tracker();
        let a = send(&mut t, 0, t0);
        let b = send(&mut t, 0, t0);
        t.acked(0, a, t0, Ok(()));
        t.acked(0, b, t0, Ok(()));
        let overdue = t.overdue(t0 + 21 * SEC);
        assert_eq!(overdue.len(), 2);
        assert!(t.overdue(t0 + 22 * SEC).is_empty(), "suspected once");
        // One shows up while its loss is being confirmed: it is received, not lost or late.
        assert!(matches!(
            t.received(0, b, b as i64, t0 + 22 * SEC),
            Receipt::Received { late: false, .. }
        ));
        assert_eq!(
            t.confirm_lost(&overdue),
            [Lost {
                partition: 0,
                seq: a
            }]
        );
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn a_vanished_topic_voids_what_was_pending_so_it_is_never_lost() {
        let (mut t, t0) = tracker();
        t.add_partition(1);
        let inflight = send(&mut t, 0, t0);
        let acked = send(&mut t, 0, t0);
        let suspected = send(&mut t, 0, t0);
        let other = send(&mut t, 1, t0);
        t.acked(0, acked, t0, Ok(()));
        t.acked(0, suspected, t0, Ok(()));
        t.acked(1, other, t0, Ok(()));
        let overdue: Vec<Lost> = t
            .overdue(t0 + 21 * SEC)
            .into_iter()
            .filter(|l| l.partition == 0)
            .collect();
        assert_eq!(t.void_pending(Some(&[0])), 3);
        // An ack arriving after the topic vanished does not revive it.
        t.acked(0, inflight, t0 + 21 * SEC, Ok(()));
        assert!(t.confirm_lost(&overdue).is_empty());
        assert!(sweep(&mut t, t0 + 60 * SEC).is_empty());
        // A voided heartbeat that does show up (written to the new topic) counts as received.
        assert!(matches!(
            t.received(0, acked, acked as i64, t0 + 61 * SEC),
            Receipt::Received {
                late: false,
                failed: None,
                ..
            }
        ));
        // Partition 1 was not voided: its heartbeat is still suspected.
        assert_eq!(t.pending(), 1);
        assert_eq!(t.void_pending(None), 1);
    }

    #[test]
    fn duplicates_rereads_and_out_of_order_are_told_apart() {
        let (mut t, t0) = tracker();
        let a = send(&mut t, 0, t0);
        let b = send(&mut t, 0, t0 + SEC);
        assert!(matches!(
            t.received(0, b, b as i64, t0 + 2 * SEC),
            Receipt::Received {
                out_of_order: false,
                ..
            }
        ));
        assert!(matches!(
            t.received(0, a, a as i64, t0 + 2 * SEC),
            Receipt::Received {
                out_of_order: true,
                ..
            }
        ));
        // Another record with the same heartbeat: a duplicate; the same record again: a re-read.
        assert_eq!(t.received(0, b, 100, t0 + 3 * SEC), Receipt::Duplicate);
        assert_eq!(t.received(0, a, a as i64, t0 + 3 * SEC), Receipt::Reread);
    }

    #[test]
    fn unknown_future_and_stale_sequences_are_classified() {
        let (mut t, t0) = tracker();
        assert_eq!(
            t.received(0, 0, 0, t0),
            Receipt::Unexpected,
            "nothing sent yet"
        );
        assert_eq!(
            t.received(9, 0, 0, t0),
            Receipt::Unexpected,
            "untracked partition"
        );
        let window = t.window() as u64;
        for i in 0..window + 5 {
            let seq = send(&mut t, 0, t0 + Duration::from_millis(i));
            t.acked(0, seq, t0, Ok(()));
            t.received(0, seq, seq as i64, t0 + SEC);
        }
        assert_eq!(t.received(0, 0, 0, t0 + SEC), Receipt::Stale);
        assert_eq!(t.received(0, window + 4, 1, t0 + SEC), Receipt::Duplicate);
        assert_eq!(t.received(0, window + 5, 2, t0 + SEC), Receipt::Unexpected);
    }

    #[test]
    fn partitions_are_independent() {
        let mut t = Tracker::new(SEC, 20 * SEC);
        let t0 = Instant::now();
        assert_eq!(send(&mut t, 0, t0), 0);
        assert_eq!(send(&mut t, 1, t0), 0);
        assert_eq!(send(&mut t, 1, t0), 1);
        t.acked(1, 1, t0, Ok(()));
        assert_eq!(
            sweep(&mut t, t0 + 30 * SEC),
            [Lost {
                partition: 1,
                seq: 1
            }]
        );
    }
}
