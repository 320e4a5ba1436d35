//! Keeps delta counter series alive: with delta temporality the SDK reports only the series
//! that changed in an interval, so "nothing lost" would be a gap, not a 0. Every counter
//! series seen once is remembered, and each later request gets a 0 for it when it is idle.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, NumberDataPoint, ScopeMetrics,
};

/// The counters seen so far, by scope and metric name.
#[derive(Debug, Default)]
pub(super) struct KeepAlive {
    counters: BTreeMap<(String, String), Counter>,
    /// End of the last request's window, the start of the next one's.
    last_time: u64,
}

#[derive(Debug)]
struct Counter {
    /// The metric as first seen, without its points.
    template: Metric,
    /// Every attribute set seen, by a sortable key.
    series: BTreeMap<String, Vec<KeyValue>>,
}

fn series_key(attributes: &[KeyValue]) -> String {
    let mut parts: Vec<String> = attributes
        .iter()
        .map(|kv| format!("{}={:?}", kv.key, kv.value))
        .collect();
    parts.sort();
    parts.join(",")
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl KeepAlive {
    /// Remembers the counter series of `request`, and adds a 0 for each one remembered that
    /// `request` lacks.
    pub(super) fn fill(&mut self, request: &mut ExportMetricsServiceRequest) {
        let Some(resource) = request.resource_metrics.first_mut() else {
            return;
        };
        // The window of this request: taken from its points, else from the last one to now.
        let mut window = None;
        for scope in &resource.scope_metrics {
            let scope_name = scope
                .scope
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            for metric in &scope.metrics {
                // Only delta sums: a cumulative one (an observable counter under `lowmemory`)
                // is whole in every request, and a 0 would read as a reset.
                let Some(Data::Sum(sum)) = &metric.data else {
                    continue;
                };
                if sum.aggregation_temporality != AggregationTemporality::Delta as i32 {
                    continue;
                }
                let counter = self
                    .counters
                    .entry((scope_name.clone(), metric.name.clone()))
                    .or_insert_with(|| Counter {
                        template: Metric {
                            data: Some(Data::Sum(opentelemetry_proto::tonic::metrics::v1::Sum {
                                data_points: Vec::new(),
                                ..sum.clone()
                            })),
                            ..metric.clone()
                        },
                        series: BTreeMap::new(),
                    });
                for point in &sum.data_points {
                    window.get_or_insert((point.start_time_unix_nano, point.time_unix_nano));
                    counter
                        .series
                        .entry(series_key(&point.attributes))
                        .or_insert_with(|| point.attributes.clone());
                }
            }
        }
        let (start, time) = window.unwrap_or_else(|| (self.last_time, now_nanos()));
        self.last_time = time;
        for ((scope_name, name), counter) in &self.counters {
            let scope = scope_entry(&mut resource.scope_metrics, scope_name);
            let metric = match scope.metrics.iter().position(|m| &m.name == name) {
                Some(i) => &mut scope.metrics[i],
                None => {
                    scope.metrics.push(counter.template.clone());
                    let last = scope.metrics.len() - 1;
                    &mut scope.metrics[last]
                }
            };
            let Some(Data::Sum(sum)) = &mut metric.data else {
                continue;
            };
            let present: std::collections::BTreeSet<String> = sum
                .data_points
                .iter()
                .map(|p| series_key(&p.attributes))
                .collect();
            for (key, attributes) in &counter.series {
                if !present.contains(key) {
                    sum.data_points.push(NumberDataPoint {
                        attributes: attributes.clone(),
                        start_time_unix_nano: start,
                        time_unix_nano: time,
                        value: Some(Value::AsInt(0)),
                        ..NumberDataPoint::default()
                    });
                }
            }
        }
    }
}

/// The scope named `name` in `scopes`, added when missing.
fn scope_entry<'a>(scopes: &'a mut Vec<ScopeMetrics>, name: &str) -> &'a mut ScopeMetrics {
    let found = scopes
        .iter()
        .position(|s| s.scope.as_ref().is_some_and(|s| s.name == name));
    let i = match found {
        Some(i) => i,
        None => {
            scopes.push(ScopeMetrics {
                scope: Some(
                    opentelemetry_proto::tonic::common::v1::InstrumentationScope {
                        name: name.to_owned(),
                        ..Default::default()
                    },
                ),
                ..Default::default()
            });
            scopes.len() - 1
        }
    };
    &mut scopes[i]
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, any_value};
    use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, Sum};

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.to_owned())),
            }),
            ..KeyValue::default()
        }
    }

    fn request(points: &[(&str, i64)]) -> ExportMetricsServiceRequest {
        let data_points = points
            .iter()
            .map(|(partition, v)| NumberDataPoint {
                attributes: vec![kv("partition", partition)],
                start_time_unix_nano: 10,
                time_unix_nano: 20,
                value: Some(Value::AsInt(*v)),
                ..NumberDataPoint::default()
            })
            .collect();
        let metrics = if points.is_empty() {
            Vec::new()
        } else {
            vec![Metric {
                name: "lost".into(),
                data: Some(Data::Sum(Sum {
                    data_points,
                    aggregation_temporality: 1,
                    is_monotonic: true,
                })),
                ..Metric::default()
            }]
        };
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "s".into(),
                        ..Default::default()
                    }),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn points(request: &ExportMetricsServiceRequest) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for scope in &request.resource_metrics[0].scope_metrics {
            for metric in &scope.metrics {
                if let Some(Data::Sum(sum)) = &metric.data {
                    for p in &sum.data_points {
                        let Some(Value::AsInt(v)) = p.value else {
                            continue;
                        };
                        out.push((format!("{:?}", p.attributes[0].value), v));
                    }
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn idle_series_are_kept_at_zero_and_busy_ones_untouched() {
        let mut keep = KeepAlive::default();
        let mut first = request(&[("0", 1), ("1", 0)]);
        keep.fill(&mut first);
        assert_eq!(points(&first).len(), 2, "nothing added to a full request");
        // Partition 1 idle: it comes back as a 0, partition 0 keeps its value.
        let mut second = request(&[("0", 2)]);
        keep.fill(&mut second);
        let p = points(&second);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p.iter().any(|(k, v)| k.contains("\"1\"") && *v == 0),
            "{p:?}"
        );
        assert!(
            p.iter().any(|(k, v)| k.contains("\"0\"") && *v == 2),
            "{p:?}"
        );
        // The whole metric idle: it is recreated with both series at 0.
        let mut third = request(&[]);
        keep.fill(&mut third);
        assert_eq!(
            points(&third).iter().map(|(_, v)| *v).collect::<Vec<_>>(),
            [0, 0]
        );
    }
}
