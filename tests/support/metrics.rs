//! Reading what the agent recorded, from the SDK's in-memory export.

use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData, ResourceMetrics};

fn find<'a>(rm: &'a ResourceMetrics, name: &str) -> Option<&'a Metric> {
    rm.scope_metrics()
        .flat_map(|s| s.metrics())
        .find(|m| m.name() == name)
}

/// Whether `attrs` contain every `(key, value)` of `filter`; a value of `*` only needs the key,
/// and a value of `!` needs the key to be absent.
fn matches<'a>(attrs: impl Iterator<Item = &'a KeyValue>, filter: &[(&str, &str)]) -> bool {
    let attrs: Vec<&KeyValue> = attrs.collect();
    filter.iter().all(|(k, v)| {
        let found = attrs.iter().find(|kv| kv.key.as_str() == *k);
        match (*v, found) {
            ("!", found) => found.is_none(),
            ("*", found) => found.is_some(),
            (v, Some(kv)) => kv.value.to_string() == v,
            (_, None) => false,
        }
    })
}

/// Sum of a u64 counter's points that match `filter`. The metric must have been recorded: a
/// counter that is not there at all is no evidence of zero (the agent starts its counters at
/// 0), so a missing one fails the test.
#[track_caller]
pub fn counter(rm: &ResourceMetrics, name: &str, filter: &[(&str, &str)]) -> u64 {
    let Some(metric) = find(rm, name) else {
        panic!("{name} was never recorded");
    };
    match metric.data() {
        AggregatedMetrics::U64(MetricData::Sum(sum)) => sum
            .data_points()
            .filter(|p| matches(p.attributes(), filter))
            .map(|p| p.value())
            .sum(),
        other => panic!("{name} is not a u64 counter: {other:?}"),
    }
}

/// Sum of the points of a counter whose series appear only once something happened (they
/// carry what happened, e.g. `error.type`, so none can be started at 0): absent means none.
pub fn counter_if_any(rm: &ResourceMetrics, name: &str, filter: &[(&str, &str)]) -> u64 {
    if find(rm, name).is_none() {
        return 0;
    }
    counter(rm, name, filter)
}

/// Every attribute set a metric was recorded with.
pub fn attribute_sets(rm: &ResourceMetrics, name: &str) -> Vec<Vec<(String, String)>> {
    let Some(metric) = find(rm, name) else {
        return Vec::new();
    };
    let collect = |attrs: Box<dyn Iterator<Item = &KeyValue> + '_>| {
        let mut v: Vec<(String, String)> = attrs
            .map(|kv| (kv.key.to_string(), kv.value.to_string()))
            .collect();
        v.sort();
        v
    };
    match metric.data() {
        AggregatedMetrics::U64(MetricData::Sum(s)) => s
            .data_points()
            .map(|p| collect(Box::new(p.attributes())))
            .collect(),
        AggregatedMetrics::F64(MetricData::Histogram(h)) => h
            .data_points()
            .map(|p| collect(Box::new(p.attributes())))
            .collect(),
        AggregatedMetrics::F64(MetricData::ExponentialHistogram(h)) => h
            .data_points()
            .map(|p| collect(Box::new(p.attributes())))
            .collect(),
        AggregatedMetrics::I64(MetricData::Gauge(g)) => g
            .data_points()
            .map(|p| collect(Box::new(p.attributes())))
            .collect(),
        other => panic!("{name}: unexpected data {other:?}"),
    }
}

/// An explicit-bucket histogram point, summed over the points matching `filter`.
#[derive(Debug, Default)]
pub struct Buckets {
    pub count: u64,
    pub sum: f64,
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
}

impl Buckets {
    /// Observations in the bucket `(lower, upper]`.
    pub fn in_bucket(&self, lower: f64, upper: f64) -> u64 {
        let mut total = 0;
        for (i, c) in self.counts.iter().enumerate() {
            let lo = if i == 0 {
                f64::NEG_INFINITY
            } else {
                self.bounds[i - 1]
            };
            let hi = self.bounds.get(i).copied().unwrap_or(f64::INFINITY);
            if lo >= lower && hi <= upper {
                total += c;
            }
        }
        total
    }
}

pub fn histogram(rm: &ResourceMetrics, name: &str, filter: &[(&str, &str)]) -> Buckets {
    let Some(metric) = find(rm, name) else {
        return Buckets::default();
    };
    let AggregatedMetrics::F64(MetricData::Histogram(h)) = metric.data() else {
        panic!(
            "{name} is not an explicit f64 histogram: {:?}",
            metric.data()
        );
    };
    let mut out = Buckets::default();
    for p in h.data_points().filter(|p| matches(p.attributes(), filter)) {
        out.count += p.count();
        out.sum += p.sum();
        let counts: Vec<u64> = p.bucket_counts().collect();
        if out.counts.is_empty() {
            out.bounds = p.bounds().collect();
            out.counts = counts;
        } else {
            for (a, b) in out.counts.iter_mut().zip(counts) {
                *a += b;
            }
        }
    }
    out
}

/// The median of a base-2 exponential histogram's points matching `filter`, as the upper
/// bound of the bucket holding the middle observation (seconds), and the point count.
pub fn exponential_median(
    rm: &ResourceMetrics,
    name: &str,
    filter: &[(&str, &str)],
) -> (f64, usize) {
    let Some(metric) = find(rm, name) else {
        panic!("{name} missing")
    };
    let AggregatedMetrics::F64(MetricData::ExponentialHistogram(h)) = metric.data() else {
        panic!(
            "{name} is not an exponential histogram: {:?}",
            metric.data()
        );
    };
    let points: Vec<_> = h
        .data_points()
        .filter(|p| matches(p.attributes(), filter))
        .collect();
    assert_eq!(points.len(), 1, "expected one point for {filter:?}");
    let p = points[0];
    let base = 2f64.powf(2f64.powi(-i32::from(p.scale())));
    let counts: Vec<u64> = p.positive_bucket().counts().collect();
    let total: u64 = counts.iter().sum::<u64>() + p.zero_count();
    let middle = total.div_ceil(2);
    let mut seen = p.zero_count();
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= middle {
            let index = p.positive_bucket().offset() + i as i32;
            return (base.powi(index + 1), p.count());
        }
    }
    panic!("median not found");
}

/// Values of an i64 gauge, one per point matching `filter`.
pub fn gauge(rm: &ResourceMetrics, name: &str, filter: &[(&str, &str)]) -> Vec<i64> {
    let Some(metric) = find(rm, name) else {
        return Vec::new();
    };
    let AggregatedMetrics::I64(MetricData::Gauge(g)) = metric.data() else {
        panic!("{name} is not an i64 gauge: {:?}", metric.data());
    };
    g.data_points()
        .filter(|p| matches(p.attributes(), filter))
        .map(|p| p.value())
        .collect()
}

/// The value of an i64 gauge's one point matching `filter`; `None` when no point matches.
/// Panics when several do: a filter must name one series.
pub fn gauge_one(rm: &ResourceMetrics, name: &str, filter: &[(&str, &str)]) -> Option<i64> {
    let values = gauge(rm, name, filter);
    if values.len() > 1 {
        let points: Vec<String> = find(rm, name)
            .map(|metric| match metric.data() {
                AggregatedMetrics::I64(MetricData::Gauge(g)) => g
                    .data_points()
                    .filter(|p| matches(p.attributes(), filter))
                    .map(|p| format!("{} {:?}", p.value(), p.attributes().collect::<Vec<_>>()))
                    .collect(),
                _ => Vec::new(),
            })
            .unwrap_or_default();
        panic!(
            "{name} {filter:?} matches {} points: {points:#?}",
            values.len()
        );
    }
    values.first().copied()
}

/// The value of an f64 gauge's one point matching `filter`; `None` when no point matches.
pub fn gauge_f64(rm: &ResourceMetrics, name: &str, filter: &[(&str, &str)]) -> Option<f64> {
    let metric = find(rm, name)?;
    let AggregatedMetrics::F64(MetricData::Gauge(g)) = metric.data() else {
        panic!("{name} is not an f64 gauge: {:?}", metric.data())
    };
    let values: Vec<f64> = g
        .data_points()
        .filter(|p| matches(p.attributes(), filter))
        .map(|p| p.value())
        .collect();
    assert!(
        values.len() <= 1,
        "{name} {filter:?} matches {} points",
        values.len()
    );
    values.first().copied()
}
