//! Exemplars: a kept span's measurement, attached to the histogram point it fell into, so a
//! backend jumps from a latency spike to its trace. The OpenTelemetry SDK does not collect
//! exemplars; the probes record one when they keep a span, and the exporter attaches it to
//! the matching point of the next export (then forgets it). The newest few of each series
//! are also kept for `/metrics`, whose OpenMetrics exposition shows them on their buckets.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Exemplar, exemplar, metric};

use crate::telemetry::names::attr;
use crate::telemetry::traces::TraceIds;

/// At most this many exemplars wait for an export (the oldest go first).
const CAPACITY: usize = 512;
/// An exemplar older than this is not attached any more.
const MAX_AGE: Duration = Duration::from_secs(600);
/// At most this many exemplars on one point.
const PER_POINT: usize = 4;
/// For scrapes: the newest this many of each series, of at most this many series.
const SCRAPE_PER_SERIES: usize = 16;
const SCRAPE_SERIES: usize = 1024;

/// A histogram's series: its metric and the attributes that name it.
type SeriesKey = (&'static str, Vec<(&'static str, String)>);

/// One measurement with the span it belongs to.
#[derive(Clone, Debug)]
pub(crate) struct Held {
    pub(crate) metric: &'static str,
    /// Attributes the point must have (its series): the cluster and partition or broker.
    pub(crate) series: Vec<(&'static str, String)>,
    pub(crate) value: f64,
    pub(crate) time: SystemTime,
    pub(crate) ids: TraceIds,
}

/// Exemplars waiting for the next export; shared by the probes (through the traces) and the
/// exporter.
#[derive(Debug, Default)]
pub(crate) struct Exemplars {
    held: Mutex<VecDeque<Held>>,
    /// The newest of each series, for scrapes (not drained by them).
    latest: Mutex<HashMap<SeriesKey, VecDeque<Held>>>,
}

impl Exemplars {
    /// A measurement of `metric` on the series `series` (attribute, value pairs the point has),
    /// made in span `ids`.
    pub(crate) fn record(
        &self,
        metric: &'static str,
        series: Vec<(&'static str, String)>,
        value: f64,
        ids: TraceIds,
    ) {
        let exemplar = Held {
            metric,
            series,
            value,
            time: SystemTime::now(),
            ids,
        };
        if let Ok(mut latest) = self.latest.lock() {
            let key = (metric, exemplar.series.clone());
            if latest.len() < SCRAPE_SERIES || latest.contains_key(&key) {
                let newest = latest.entry(key).or_default();
                if newest.len() >= SCRAPE_PER_SERIES {
                    newest.pop_front();
                }
                newest.push_back(exemplar.clone());
            }
        }
        let Ok(mut held) = self.held.lock() else {
            return;
        };
        if held.len() >= CAPACITY {
            held.pop_front();
        }
        held.push_back(exemplar);
    }

    /// The newest exemplars of every series, for a scrape (younger than the export's age
    /// limit; a scrape does not consume them).
    pub(crate) fn for_scrape(&self) -> Vec<Held> {
        let Ok(latest) = self.latest.lock() else {
            return Vec::new();
        };
        let now = SystemTime::now();
        latest
            .values()
            .flatten()
            .filter(|h| now.duration_since(h.time).unwrap_or_default() <= MAX_AGE)
            .cloned()
            .collect()
    }

    /// Attaches every waiting exemplar to its point in `request` (a histogram point of its
    /// metric whose attributes include its series, without `error.type`), and forgets them.
    pub(crate) fn attach(&self, request: &mut ExportMetricsServiceRequest) {
        let Ok(mut held) = self.held.lock() else {
            return;
        };
        if held.is_empty() {
            return;
        }
        let now = SystemTime::now();
        let waiting: Vec<Held> = held
            .drain(..)
            .filter(|h| now.duration_since(h.time).unwrap_or_default() <= MAX_AGE)
            .collect();
        drop(held);
        for rm in &mut request.resource_metrics {
            for sm in &mut rm.scope_metrics {
                for m in &mut sm.metrics {
                    let (name, data) = (&m.name, &mut m.data);
                    let points: Vec<(&[KeyValue], &mut Vec<Exemplar>, u64)> = match data {
                        Some(metric::Data::Histogram(h)) => h
                            .data_points
                            .iter_mut()
                            .map(|p| (&p.attributes[..], &mut p.exemplars, p.start_time_unix_nano))
                            .collect(),
                        Some(metric::Data::ExponentialHistogram(h)) => h
                            .data_points
                            .iter_mut()
                            .map(|p| (&p.attributes[..], &mut p.exemplars, p.start_time_unix_nano))
                            .collect(),
                        _ => continue,
                    };
                    for (attributes, exemplars, start) in points {
                        for h in waiting.iter().filter(|h| h.metric == name.as_str()) {
                            let time = unix_nanos(h.time);
                            if exemplars.len() < PER_POINT
                                && time >= start
                                && in_series(attributes, &h.series)
                            {
                                exemplars.push(Exemplar {
                                    filtered_attributes: Vec::new(),
                                    time_unix_nano: time,
                                    span_id: h.ids.span.to_bytes().to_vec(),
                                    trace_id: h.ids.trace.to_bytes().to_vec(),
                                    value: Some(exemplar::Value::AsDouble(h.value)),
                                });
                            }
                        }
                    }
                }
            }
        }
    }
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Whether a point's attributes hold every pair of `series` and no `error.type`.
fn in_series(attributes: &[KeyValue], series: &[(&'static str, String)]) -> bool {
    let value = |key: &str| {
        attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
            match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.clone()),
                any_value::Value::IntValue(i) => Some(i.to_string()),
                _ => None,
            }
        })
    };
    value(attr::ERROR_TYPE).is_none()
        && series
            .iter()
            .all(|(k, v)| value(k).as_deref() == Some(v.as_str()))
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceId};
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::metrics::v1::{
        Histogram, HistogramDataPoint, Metric, ResourceMetrics, ScopeMetrics,
    };

    use super::*;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.to_owned())),
            }),
            ..Default::default()
        }
    }

    fn request(points: Vec<Vec<KeyValue>>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "m".to_owned(),
                        data: Some(metric::Data::Histogram(Histogram {
                            data_points: points
                                .into_iter()
                                .map(|attributes| HistogramDataPoint {
                                    attributes,
                                    ..Default::default()
                                })
                                .collect(),
                            aggregation_temporality: 2,
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn exemplars(r: &ExportMetricsServiceRequest) -> Vec<usize> {
        match &r.resource_metrics[0].scope_metrics[0].metrics[0].data {
            Some(metric::Data::Histogram(h)) => {
                h.data_points.iter().map(|p| p.exemplars.len()).collect()
            }
            _ => Vec::new(),
        }
    }

    #[test]
    fn an_exemplar_goes_to_its_series_point_once() {
        let store = Exemplars::default();
        let ids = TraceIds {
            trace: TraceId::from(7_u128),
            span: SpanId::from(9_u64),
        };
        store.record("m", vec![("p", "1".to_owned())], 0.25, ids);
        store.record("other", vec![("p", "1".to_owned())], 0.5, ids);
        let mut r = request(vec![
            vec![kv("p", "0")],
            vec![kv("p", "1"), kv("error.type", "timeout")],
            vec![kv("p", "1"), kv("x", "y")],
        ]);
        store.attach(&mut r);
        assert_eq!(exemplars(&r), [0, 0, 1], "its series, not a failure's");
        let Some(metric::Data::Histogram(h)) =
            &r.resource_metrics[0].scope_metrics[0].metrics[0].data
        else {
            unreachable!()
        };
        let e = &h.data_points[2].exemplars[0];
        assert_eq!(e.span_id, 9_u64.to_be_bytes());
        assert_eq!(e.trace_id, 7_u128.to_be_bytes());
        assert_eq!(e.value, Some(exemplar::Value::AsDouble(0.25)));
        let mut again = request(vec![vec![kv("p", "1")]]);
        store.attach(&mut again);
        assert_eq!(exemplars(&again), [0], "attached once");
    }

    #[test]
    fn the_store_is_bounded() {
        let store = Exemplars::default();
        let ids = TraceIds {
            trace: TraceId::from(1_u128),
            span: SpanId::from(1_u64),
        };
        for _ in 0..CAPACITY * 2 {
            store.record("m", Vec::new(), 1.0, ids);
        }
        assert_eq!(store.held.lock().unwrap().len(), CAPACITY);
        assert_eq!(store.for_scrape().len(), SCRAPE_PER_SERIES);
        for i in 0..SCRAPE_SERIES * 2 {
            store.record("m", vec![("p", i.to_string())], 1.0, ids);
        }
        assert_eq!(store.latest.lock().unwrap().len(), SCRAPE_SERIES);
    }

    #[test]
    fn a_scrape_sees_the_newest_of_each_series_and_does_not_take_them() {
        let store = Exemplars::default();
        let ids = |n: u64| TraceIds {
            trace: TraceId::from(u128::from(n)),
            span: SpanId::from(n),
        };
        for n in 1..=SCRAPE_PER_SERIES as u64 + 2 {
            store.record("m", vec![("p", "1".to_owned())], n as f64, ids(n));
        }
        store.record("m", vec![("p", "2".to_owned())], 0.5, ids(99));
        let seen = store.for_scrape();
        assert_eq!(seen.len(), SCRAPE_PER_SERIES + 1);
        assert!(
            seen.iter().all(|h| h.value > 2.0 || h.value == 0.5),
            "the oldest went"
        );
        assert_eq!(store.for_scrape().len(), seen.len(), "not consumed");
    }
}
