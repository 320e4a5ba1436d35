//! The probe loop under virtual time, with a scripted probe: ticks, slow rounds, timeouts,
//! retries, wake-ups and cancellation.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;

const S: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug)]
enum Step {
    Ok,
    Fail,
    /// Succeeds after this long.
    Slow(Duration),
}

/// Rounds started (seconds since the loop began), and whether `stop` ran.
#[derive(Clone, Default)]
struct Log {
    rounds: Arc<Mutex<Vec<u64>>>,
    stopped: Arc<Mutex<bool>>,
}

impl Log {
    fn rounds(&self) -> Vec<u64> {
        self.rounds.lock().unwrap().clone()
    }
}

struct Scripted {
    schedule: Schedule,
    script: VecDeque<Step>,
    start: Instant,
    log: Log,
}

impl Scripted {
    fn new(schedule: Schedule, script: &[Step]) -> (Self, Log) {
        let log = Log::default();
        let probe = Self {
            schedule,
            script: script.iter().copied().collect(),
            start: Instant::now(),
            log: log.clone(),
        };
        (probe, log)
    }
}

impl Probe for Scripted {
    const KIND: &'static str = "scripted";
    type Output = ();
    type Error = std::io::Error;

    fn schedule(&self) -> Schedule {
        self.schedule
    }

    async fn probe_once(&mut self) -> Result<(), std::io::Error> {
        let at = Instant::now().duration_since(self.start);
        self.log.rounds.lock().unwrap().push(at.as_secs());
        match self.script.pop_front().unwrap_or(Step::Ok) {
            Step::Ok => Ok(()),
            Step::Fail => Err(std::io::Error::other("scripted failure")),
            Step::Slow(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
        }
    }

    async fn stop(self) {
        *self.log.stopped.lock().unwrap() = true;
    }
}

/// Runs `probe` for `for_` of virtual time, then cancels it and waits for the loop to end.
async fn run_for(probe: Scripted, wake: Wake, for_: Duration) {
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(
        probe,
        "test",
        wake,
        cancel.clone(),
        &Traces::disabled(),
    ));
    tokio::time::sleep(for_).await;
    cancel.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn rounds_run_on_a_fixed_grid_from_the_start() {
    let (probe, log) = Scripted::new(Schedule::every(10 * S, 5 * S), &[]);
    run_for(probe, Wake::new(), 35 * S).await;
    assert_eq!(log.rounds(), [0, 10, 20, 30]);
    assert!(
        *log.stopped.lock().unwrap(),
        "stop ran after the last round"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_round_skips_the_ticks_it_overran_instead_of_bursting() {
    // The first round takes 25 s of a 10 s interval: the ticks at 10 and 20 are dropped, and
    // the grid resumes at 30, not at 25 and not with two rounds in a row.
    let (probe, log) = Scripted::new(
        Schedule::every(10 * S, 60 * S),
        &[Step::Slow(25 * S), Step::Ok, Step::Ok],
    );
    run_for(probe, Wake::new(), 45 * S).await;
    assert_eq!(log.rounds(), [0, 30, 40]);
}

#[tokio::test(start_paused = true)]
async fn a_round_over_its_timeout_is_cut_short_and_the_grid_goes_on() {
    let (probe, log) = Scripted::new(
        Schedule::every(10 * S, 3 * S),
        &[Step::Slow(100 * S), Step::Ok],
    );
    run_for(probe, Wake::new(), 15 * S).await;
    assert_eq!(log.rounds(), [0, 10], "cut at 3 s, next round on the grid");
}

#[tokio::test(start_paused = true)]
async fn a_failing_probe_retries_with_backoff_then_returns_to_the_grid() {
    let (probe, log) = Scripted::new(
        Schedule::every(60 * S, 5 * S).retrying(S, 8 * S),
        &[
            Step::Fail,
            Step::Fail,
            Step::Fail,
            Step::Fail,
            Step::Fail,
            Step::Ok,
            Step::Ok,
        ],
    );
    run_for(probe, Wake::new(), 130 * S).await;
    // Waits of 1, 2, 4, 8, then 8 (the cap); after the success, the grid at 60 and 120.
    assert_eq!(log.rounds(), [0, 1, 3, 7, 15, 23, 60, 120]);
}

#[tokio::test(start_paused = true)]
async fn without_a_backoff_a_failed_round_waits_for_the_next_tick() {
    let (probe, log) = Scripted::new(
        Schedule::every(10 * S, 5 * S),
        &[Step::Fail, Step::Fail, Step::Ok],
    );
    run_for(probe, Wake::new(), 25 * S).await;
    assert_eq!(log.rounds(), [0, 10, 20]);
}

#[tokio::test(start_paused = true)]
async fn the_backoff_never_waits_past_the_next_tick() {
    let (probe, log) = Scripted::new(
        Schedule::every(10 * S, 5 * S).retrying(8 * S, 60 * S),
        &[Step::Fail, Step::Fail, Step::Fail],
    );
    run_for(probe, Wake::new(), 25 * S).await;
    // 8 s after 0, then 16 s would pass the tick at 10 + k·10: the tick wins.
    assert_eq!(log.rounds(), [0, 8, 10, 20]);
}

#[tokio::test(start_paused = true)]
async fn a_wake_runs_a_round_at_once_without_moving_the_grid() {
    let (probe, log) = Scripted::new(Schedule::every(10 * S, 5 * S), &[]);
    let wake = Wake::new();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(
        probe,
        "test",
        wake.clone(),
        cancel.clone(),
        &Traces::disabled(),
    ));
    tokio::time::sleep(3 * S).await;
    wake.now();
    wake.now(); // coalesced with the first
    tokio::time::sleep(9 * S).await;
    cancel.cancel();
    task.await.unwrap();
    assert_eq!(log.rounds(), [0, 3, 10]);
}

#[tokio::test(start_paused = true)]
async fn cancelling_mid_round_ends_the_loop_at_once_and_stops_the_probe() {
    let (probe, log) = Scripted::new(Schedule::every(10 * S, 500 * S), &[Step::Slow(300 * S)]);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(
        probe,
        "test",
        Wake::new(),
        cancel.clone(),
        &Traces::disabled(),
    ));
    tokio::time::sleep(5 * S).await;
    let cancelled_at = Instant::now();
    cancel.cancel();
    task.await.unwrap();
    assert_eq!(
        Instant::now(),
        cancelled_at,
        "no virtual time passed after the cancel"
    );
    assert_eq!(log.rounds(), [0]);
    assert!(*log.stopped.lock().unwrap());
}

#[test]
fn next_tick_is_the_first_grid_point_after_now() {
    let start = Instant::now();
    assert_eq!(next_tick(start, 10 * S, start), start + 10 * S);
    assert_eq!(next_tick(start, 10 * S, start + 9 * S), start + 10 * S);
    assert_eq!(next_tick(start, 10 * S, start + 10 * S), start + 20 * S);
    assert_eq!(next_tick(start, 10 * S, start + 25 * S), start + 30 * S);
    // Intervals beyond any clock do not overflow.
    let far = next_tick(start, Duration::MAX, start + S);
    assert!(far > start + 300 * 24 * 3600 * S);
}
