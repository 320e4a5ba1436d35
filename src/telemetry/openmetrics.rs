//! `/metrics` in the OpenMetrics text format, for scrapers that ask for it (Prometheus does by
//! default): the same families, names and labels as the Prometheus text format, with each
//! histogram bucket carrying the newest exemplar that fell into it, a kept span's trace and
//! span id. The `prometheus` crate writes only the older text format, which has no exemplars.

use std::fmt::Write as _;
use std::time::SystemTime;

use prometheus::proto::{LabelPair, MetricFamily, MetricType};

use super::export::exemplars::Held;
use super::names::attr;

/// The content type of this format.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics.
pub(crate) fn wanted(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// `families` in the OpenMetrics text format, ending with `# EOF`.
pub(crate) fn encode(families: &[MetricFamily], exemplars: &[Held]) -> String {
    let mut out = String::new();
    for family in families {
        let name = family.name();
        let (kind, family_name) = match family.get_field_type() {
            // A counter's family drops the `_total` its sample carries.
            MetricType::COUNTER => ("counter", name.strip_suffix("_total").unwrap_or(name)),
            MetricType::GAUGE => ("gauge", name),
            MetricType::HISTOGRAM => ("histogram", name),
            MetricType::SUMMARY => ("summary", name),
            // The OpenTelemetry exporter makes none (nor does the text encoder take them).
            MetricType::UNTYPED => continue,
        };
        if !family.help().is_empty() {
            let _ = writeln!(out, "# HELP {family_name} {}", escape(family.help()));
        }
        let _ = writeln!(out, "# TYPE {family_name} {kind}");
        let own: Vec<&Held> = exemplars
            .iter()
            .filter(|e| of_family(name, e.metric))
            .collect();
        for metric in family.get_metric() {
            let labels = metric.get_label();
            match family.get_field_type() {
                MetricType::UNTYPED => {}
                MetricType::COUNTER => sample(
                    &mut out,
                    &format!("{family_name}_total"),
                    labels,
                    None,
                    metric.get_counter().get_value(),
                ),
                MetricType::GAUGE => {
                    sample(&mut out, name, labels, None, metric.get_gauge().get_value());
                }
                MetricType::SUMMARY => {
                    let s = metric.get_summary();
                    for q in s.get_quantile() {
                        let quantile = q.quantile().to_string();
                        sample(
                            &mut out,
                            name,
                            labels,
                            Some(("quantile", &quantile)),
                            q.value(),
                        );
                    }
                    sample(
                        &mut out,
                        &format!("{name}_sum"),
                        labels,
                        None,
                        s.sample_sum(),
                    );
                    sample(
                        &mut out,
                        &format!("{name}_count"),
                        labels,
                        None,
                        s.sample_count() as f64,
                    );
                }
                MetricType::HISTOGRAM => {
                    let series: Vec<&Held> = own
                        .iter()
                        .copied()
                        .filter(|e| in_series(labels, e))
                        .collect();
                    histogram(&mut out, name, labels, metric.get_histogram(), &series);
                }
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

fn histogram(
    out: &mut String,
    name: &str,
    labels: &[LabelPair],
    h: &prometheus::proto::Histogram,
    exemplars: &[&Held],
) {
    let bucket = format!("{name}_bucket");
    let mut below = f64::NEG_INFINITY;
    let mut bounds: Vec<(f64, f64)> = h
        .get_bucket()
        .iter()
        .map(|b| (b.upper_bound(), b.cumulative_count() as f64))
        .collect();
    if !bounds.last().is_some_and(|(le, _)| *le == f64::INFINITY) {
        bounds.push((f64::INFINITY, h.get_sample_count() as f64));
    }
    for (le, count) in bounds {
        let le_text = if le == f64::INFINITY {
            "+Inf".to_owned()
        } else {
            le.to_string()
        };
        sample(out, &bucket, labels, Some(("le", &le_text)), count);
        let newest = exemplars
            .iter()
            .filter(|e| e.value > below && e.value <= le)
            .max_by_key(|e| e.time);
        if let Some(e) = newest {
            // Replace the line's end with the exemplar.
            out.pop();
            let seconds = e
                .time
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            let _ = writeln!(
                out,
                " # {{trace_id=\"{}\",span_id=\"{}\"}} {} {seconds:.3}",
                e.ids.trace,
                e.ids.span,
                number(e.value)
            );
        }
        below = le;
    }
    sample(
        out,
        &format!("{name}_sum"),
        labels,
        None,
        h.get_sample_sum(),
    );
    sample(
        out,
        &format!("{name}_count"),
        labels,
        None,
        h.get_sample_count() as f64,
    );
}

fn sample(
    out: &mut String,
    name: &str,
    labels: &[LabelPair],
    extra: Option<(&str, &str)>,
    value: f64,
) {
    out.push_str(name);
    let pairs: Vec<(&str, &str)> = labels
        .iter()
        .map(|l| (l.name(), l.value()))
        .chain(extra)
        .collect();
    if !pairs.is_empty() {
        out.push('{');
        for (i, (k, v)) in pairs.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {}", number(value));
}

fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value == f64::INFINITY {
        "+Inf".to_owned()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        value.to_string()
    }
}

/// Escapes a label value or help text: backslash, double quote, newline.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// An OpenTelemetry name as the Prometheus exporter writes it.
fn prometheus_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Whether `family` (a Prometheus name, with the unit the exporter appends) is `metric`'s.
fn of_family(family: &str, metric: &str) -> bool {
    let metric = prometheus_name(metric);
    family
        .strip_prefix(&metric)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('_'))
}

/// Whether a point's labels hold every attribute of the exemplar's series, and no
/// `error.type` (failures have no exemplars).
fn in_series(labels: &[LabelPair], exemplar: &Held) -> bool {
    let value = |key: &str| {
        let key = prometheus_name(key);
        labels
            .iter()
            .find(|l| l.name() == key)
            .map(LabelPair::value)
    };
    value(attr::ERROR_TYPE).is_none_or(str::is_empty)
        && exemplar
            .series
            .iter()
            .all(|(k, v)| value(k) == Some(v.as_str()))
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceId};
    use prometheus::{HistogramOpts, HistogramVec, IntCounter, Registry};

    use super::*;
    use crate::telemetry::traces::TraceIds;

    fn held(value: f64, trace: u128, partition: &str) -> Held {
        Held {
            metric: "kafka.heartbeat.produce.duration",
            series: vec![
                (attr::CLUSTER_NAME, "prod".to_owned()),
                (attr::PARTITION, partition.to_owned()),
            ],
            value,
            time: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_250),
            ids: TraceIds {
                trace: TraceId::from(trace),
                span: SpanId::from(7_u64),
            },
        }
    }

    fn registry() -> Registry {
        let registry = Registry::new();
        let h = HistogramVec::new(
            HistogramOpts::new(
                "kafka_heartbeat_produce_duration_seconds",
                "Produce \"ack\"\nlatency.",
            )
            .buckets(vec![0.01, 0.1]),
            &[
                "kafka_cluster_name",
                "messaging_destination_partition_id",
                "error_type",
            ],
        )
        .unwrap();
        h.with_label_values(&["prod", "0", ""]).observe(0.05);
        h.with_label_values(&["prod", "0", "timeout"]).observe(0.05);
        h.with_label_values(&["prod", "1", ""]).observe(0.5);
        registry.register(Box::new(h)).unwrap();
        let c = IntCounter::new("kafka_heartbeat_messages_sent_total", "Sent.").unwrap();
        c.inc_by(3);
        registry.register(Box::new(c)).unwrap();
        registry
    }

    #[test]
    fn exemplars_go_on_the_bucket_they_fell_into_of_their_own_series() {
        let text = encode(
            &registry().gather(),
            &[held(0.04, 1, "0"), held(0.05, 2, "0"), held(0.5, 3, "1")],
        );
        let lines: Vec<&str> = text.lines().collect();
        let with = |needle: &str| -> Vec<&str> {
            lines
                .iter()
                .copied()
                .filter(|l| l.contains(needle))
                .collect()
        };
        let exemplars = with(" # {");
        assert_eq!(exemplars.len(), 2, "{text}");
        assert!(
            exemplars.contains(&format!(
                "kafka_heartbeat_produce_duration_seconds_bucket{{error_type=\"\",kafka_cluster_name=\"prod\",messaging_destination_partition_id=\"0\",le=\"0.1\"}} 1 # {{trace_id=\"{}\",span_id=\"0000000000000007\"}} 0.05 1700000000.250",
                TraceId::from(2_u128)
            ).as_str()),
            "the newest of the bucket, on the series without an error: {text}"
        );
        assert!(exemplars[1].contains("le=\"+Inf\""), "{text}");
        assert_eq!(
            with("error_type=\"timeout\"")
                .iter()
                .filter(|l| l.contains(" # {"))
                .count(),
            0
        );
        assert!(text.contains("# TYPE kafka_heartbeat_messages_sent counter\n"));
        assert!(text.contains("\nkafka_heartbeat_messages_sent_total 3\n"));
        assert!(text.contains(
            "# HELP kafka_heartbeat_produce_duration_seconds Produce \\\"ack\\\"\\nlatency.\n"
        ));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn openmetrics_is_what_prometheus_asks_for() {
        assert!(wanted(Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(!wanted(Some("text/plain")));
        assert!(!wanted(None));
    }

    #[test]
    fn a_family_matches_its_metric_with_the_unit_suffix_only() {
        assert!(of_family(
            "kafka_heartbeat_produce_duration_seconds",
            "kafka.heartbeat.produce.duration"
        ));
        assert!(!of_family(
            "kafka_heartbeat_produce_durations",
            "kafka.heartbeat.produce.duration"
        ));
    }
}
