//! The times on exported points, on a timeline that never runs backwards between two steps of
//! the wall clock: the wall clock read once, carried forward by the monotonic clock, and read
//! again when the two part by more than [`STEP`] (an NTP step, a VM resumed; slewing moves
//! both clocks alike).
//!
//! The SDK stamps points with the wall clock as it reads it, so after a backward step a point
//! would precede its series' start time (which a backend may refuse) and follow a later one.
//! Here every point gets its collection time on the timeline, and as start time the
//! timeline's start (cumulative) or the previous collection (delta): a point never precedes
//! its start. When the wall clock steps, the timeline moves with it and every start time
//! with it: each series restarts, as after a reset, and the step is said once.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::AggregationTemporality;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;

/// The wall clock and the timeline parting by more than this is a step, not drift.
pub(super) const STEP: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(super) struct Timeline {
    /// The wall clock (ns since the epoch) at `anchor_mono`, as last read.
    anchor_wall: i128,
    anchor_mono: Instant,
    /// When the series start: the first collection.
    start_mono: Instant,
    /// The previous collection, where a delta window starts.
    previous_mono: Instant,
}

fn wall_nanos() -> i128 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

impl Default for Timeline {
    fn default() -> Self {
        let now = Instant::now();
        Self {
            anchor_wall: wall_nanos(),
            anchor_mono: now,
            start_mono: now,
            previous_mono: now,
        }
    }
}

impl Timeline {
    /// `at` on the timeline, in ns since the epoch (0 before it).
    fn at(&self, at: Instant) -> u64 {
        let offset = if at >= self.anchor_mono {
            (at - self.anchor_mono).as_nanos() as i128
        } else {
            -((self.anchor_mono - at).as_nanos() as i128)
        };
        u64::try_from(self.anchor_wall + offset).unwrap_or(0)
    }

    /// Stamps every point of `request` (a collection made now); returns by how much the wall
    /// clock stepped since the last one (ns, negative: backwards) when it did.
    pub(super) fn stamp(&mut self, request: &mut ExportMetricsServiceRequest) -> Option<i128> {
        self.stamp_with(request, Instant::now(), wall_nanos())
    }

    fn stamp_with(
        &mut self,
        request: &mut ExportMetricsServiceRequest,
        now: Instant,
        wall: i128,
    ) -> Option<i128> {
        let expected = i128::from(self.at(now));
        let step = (wall - expected).abs() > STEP.as_nanos() as i128;
        if step {
            self.anchor_wall = wall;
            self.anchor_mono = now;
        }
        let (start, previous, time) = (
            self.at(self.start_mono),
            self.at(self.previous_mono),
            self.at(now),
        );
        self.previous_mono = now;
        let window = |delta: bool| if delta { previous } else { start };
        for resource in &mut request.resource_metrics {
            for scope in &mut resource.scope_metrics {
                for metric in &mut scope.metrics {
                    stamp_metric(metric.data.as_mut(), window, time);
                }
            }
        }
        step.then_some(wall - expected)
    }
}

fn stamp_metric(data: Option<&mut Data>, window: impl Fn(bool) -> u64, time: u64) {
    let delta = |t: i32| t == AggregationTemporality::Delta as i32;
    // A point without a start time (a gauge's) keeps none.
    let stamp = |start: &mut u64, at: &mut u64, delta: bool| {
        if *start != 0 {
            *start = window(delta);
        }
        *at = time;
    };
    match data {
        Some(Data::Gauge(g)) => g.data_points.iter_mut().for_each(|p| {
            stamp(&mut p.start_time_unix_nano, &mut p.time_unix_nano, false);
        }),
        Some(Data::Sum(s)) => {
            let d = delta(s.aggregation_temporality);
            s.data_points.iter_mut().for_each(|p| {
                stamp(&mut p.start_time_unix_nano, &mut p.time_unix_nano, d);
            });
        }
        Some(Data::Histogram(h)) => {
            let d = delta(h.aggregation_temporality);
            h.data_points.iter_mut().for_each(|p| {
                stamp(&mut p.start_time_unix_nano, &mut p.time_unix_nano, d);
            });
        }
        Some(Data::ExponentialHistogram(h)) => {
            let d = delta(h.aggregation_temporality);
            h.data_points.iter_mut().for_each(|p| {
                stamp(&mut p.start_time_unix_nano, &mut p.time_unix_nano, d);
            });
        }
        Some(Data::Summary(s)) => s.data_points.iter_mut().for_each(|p| {
            stamp(&mut p.start_time_unix_nano, &mut p.time_unix_nano, false);
        }),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::metrics::v1::{
        Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    };

    fn request(
        temporality: AggregationTemporality,
        start: u64,
        time: u64,
    ) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "c".into(),
                        data: Some(Data::Sum(Sum {
                            data_points: vec![NumberDataPoint {
                                start_time_unix_nano: start,
                                time_unix_nano: time,
                                ..Default::default()
                            }],
                            aggregation_temporality: temporality as i32,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn times(r: &ExportMetricsServiceRequest) -> (u64, u64) {
        match &r.resource_metrics[0].scope_metrics[0].metrics[0].data {
            Some(Data::Sum(s)) => (
                s.data_points[0].start_time_unix_nano,
                s.data_points[0].time_unix_nano,
            ),
            _ => unreachable!(),
        }
    }

    const S: i128 = 1_000_000_000;

    /// A timeline that read the wall clock as `wall` at `at`, and started there.
    fn anchored(at: Instant, wall: i128) -> Timeline {
        Timeline {
            anchor_wall: wall,
            anchor_mono: at,
            start_mono: at,
            previous_mono: at,
        }
    }

    #[test]
    fn a_backward_step_restarts_the_series_and_no_point_precedes_its_start() {
        let (t0, wall0) = (Instant::now(), 1_700_000_000 * S);
        let mut timeline = anchored(t0, wall0);
        let cumulative = AggregationTemporality::Cumulative;
        // Ten seconds on: no step, the point spans the run so far.
        let mut r = request(cumulative, 1, 2);
        assert_eq!(
            timeline.stamp_with(&mut r, t0 + Duration::from_secs(10), wall0 + 10 * S),
            None
        );
        assert_eq!(times(&r), ((wall0) as u64, (wall0 + 10 * S) as u64));
        // Drift within a second is not a step.
        let mut r = request(cumulative, 1, 2);
        assert_eq!(
            timeline.stamp_with(&mut r, t0 + Duration::from_secs(20), wall0 + 20 * S + S / 2),
            None
        );
        // The wall clock goes back an hour: the series restart an hour earlier, and the
        // point follows its start.
        let mut r = request(cumulative, 1, 2);
        let step = timeline.stamp_with(
            &mut r,
            t0 + Duration::from_secs(30),
            wall0 + 30 * S - 3600 * S,
        );
        assert_eq!(step, Some(-3600 * S));
        let (start, time) = times(&r);
        assert_eq!(time, (wall0 + 30 * S - 3600 * S) as u64);
        assert_eq!(
            start,
            (wall0 - 3600 * S) as u64,
            "the start moved with the clock"
        );
        assert!(start <= time);
    }

    #[test]
    fn a_delta_window_starts_at_the_previous_collection_on_the_same_timeline() {
        let (t0, wall0) = (Instant::now(), 1_700_000_000 * S);
        let mut timeline = anchored(t0, wall0);
        let delta = AggregationTemporality::Delta;
        let mut r = request(delta, 1, 2);
        timeline.stamp_with(&mut r, t0 + Duration::from_secs(60), wall0 + 60 * S);
        assert_eq!(times(&r), ((wall0) as u64, (wall0 + 60 * S) as u64));
        // A backward step of two minutes inside the next window.
        let mut r = request(delta, 1, 2);
        timeline.stamp_with(&mut r, t0 + Duration::from_secs(120), wall0);
        let (start, time) = times(&r);
        assert_eq!(time, wall0 as u64);
        assert_eq!(
            start,
            (wall0 - 60 * S) as u64,
            "the window is the minute it lasted"
        );
    }
}
