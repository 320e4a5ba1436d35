//! Reading `export.otlp`, `export.traces` and `export.logs`. A key the file does not set falls back to its
//! standard `OTEL_*` variable, then to the default; each setting has its own resolver below.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use super::types::{
    Compression, DEFAULT_DELTA_BUFFER, DEFAULT_DELTA_BUFFER_SIZE, DEFAULT_EXPORT_INTERVAL,
    DEFAULT_EXPORT_TIMEOUT, DEFAULT_OTLP_GRPC_ENDPOINT, DEFAULT_OTLP_HTTP_ENDPOINT,
    DEFAULT_SAMPLE_RATIO, DEFAULT_SLOW_CONNECTION, DEFAULT_SLOW_END_TO_END, DEFAULT_SLOW_PRODUCE,
    DELTA_BUFFER, DELTA_BUFFER_SIZE, EXPORT_INTERVAL, EXPORT_TIMEOUT, ExportConfig, HistogramKind,
    LogsConfig, MessagingNames, OtlpConfig, OtlpProtocol, OtlpTls, SLOW, Secret, SlowConfig,
    Temporality, TracesConfig,
};
use super::yaml::{Field, Reader, Section};

// Each choice's first entry is its default.
const OTLP_PROTOCOLS: [(&str, OtlpProtocol); 3] = [
    ("grpc", OtlpProtocol::Grpc),
    ("http/protobuf", OtlpProtocol::HttpProtobuf),
    ("http", OtlpProtocol::HttpProtobuf),
];
const COMPRESSIONS: [(&str, Compression); 2] =
    [("gzip", Compression::Gzip), ("none", Compression::None)];
const TEMPORALITIES: [(&str, Temporality); 3] = [
    ("cumulative", Temporality::Cumulative),
    ("delta", Temporality::Delta),
    ("lowmemory", Temporality::LowMemory),
];
const HISTOGRAMS: [(&str, HistogramKind); 4] = [
    ("explicit", HistogramKind::Explicit),
    ("exponential", HistogramKind::Exponential),
    // The OpenTelemetry specification's names, as OTEL_* variables spell them.
    ("explicit_bucket_histogram", HistogramKind::Explicit),
    (
        "base2_exponential_bucket_histogram",
        HistogramKind::Exponential,
    ),
];
const TEMPORALITY_VAR: &str = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE";
const HISTOGRAM_VAR: &str = "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION";

pub(super) fn read_export(r: &mut Reader<'_>, mut s: Section<'_>) -> Option<ExportConfig> {
    let mut o = s.section(r, "otlp");
    let path = o.path().to_owned();
    let enabled = enabled(r, o.field("enabled"));
    let protocol = choose(
        r,
        o.field("protocol"),
        &otlp_vars("PROTOCOL"),
        &OTLP_PROTOCOLS,
    );
    let endpoint = endpoint(r, o.field("endpoint"));
    let interval = interval(r, o.field("interval"));
    let timeout_explicit = o.has("timeout");
    let timeout = timeout(r, o.field("timeout"));
    let headers = headers(r, o.field("headers"));
    let compression = choose(
        r,
        o.field("compression"),
        &otlp_vars("COMPRESSION"),
        &COMPRESSIONS,
    );
    let temporality = choose(
        r,
        o.field("temporality"),
        &[TEMPORALITY_VAR],
        &TEMPORALITIES,
    );
    let histogram = choose(r, o.field("histogram"), &[HISTOGRAM_VAR], &HISTOGRAMS);
    let delta_buffer = match o.field("delta_buffer") {
        Some(f) => f.duration(r, &DELTA_BUFFER),
        None => Some(DEFAULT_DELTA_BUFFER),
    };
    let delta_buffer_size = match o.field("delta_buffer_size") {
        Some(f) => f.bytes(r, &DELTA_BUFFER_SIZE),
        None => Some(DEFAULT_DELTA_BUFFER_SIZE),
    };
    let tls = tls(r, &mut o);
    o.finish(r);
    let messaging_names = messaging_names(r, s.field("messaging_names"));
    let t = s.section(r, "traces");
    let traces = read_traces(r, t);
    let l = s.section(r, "logs");
    let logs = read_logs(r, l);
    s.finish(r);

    let protocol = protocol?;
    let endpoint = endpoint_for(r, endpoint?, protocol)?;
    let (tls, tls_in_file) = tls?;
    // Variables may be set for every exporter of a host; only the file's own settings on a
    // plain-text endpoint are a contradiction.
    if tls_in_file && !endpoint.starts_with("https://") {
        r.error(
            format!("{path}.tls"),
            None,
            "TLS settings need an https:// endpoint",
        );
        return None;
    }
    let timeout = fit_timeout(r, &path, interval?, timeout?, timeout_explicit)?;
    let (traces_enabled, sample_ratio, slow, traces_url) = traces?;
    let traces = TracesConfig {
        enabled: traces_enabled && enabled?,
        sample_ratio,
        slow,
        endpoint: traces_url.unwrap_or_else(|| {
            signal_default_endpoint(
                r,
                &endpoint,
                protocol,
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "traces",
            )
        }),
    };
    let (logs_enabled, level, logs_url) = logs?;
    let logs = LogsConfig {
        enabled: logs_enabled && enabled?,
        level,
        endpoint: logs_url.unwrap_or_else(|| {
            signal_default_endpoint(
                r,
                &endpoint,
                protocol,
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                "logs",
            )
        }),
    };
    Some(ExportConfig {
        traces,
        logs,
        otlp: OtlpConfig {
            enabled: enabled?,
            endpoint,
            protocol,
            interval: interval?,
            timeout,
            headers: headers?,
            compression: compression?,
            temporality: temporality?,
            histogram: histogram?,
            delta_buffer: delta_buffer?,
            delta_buffer_size: delta_buffer_size?,
            tls,
        },
        messaging_names: messaging_names?,
    })
}

/// `export.traces` but its endpoint: whether on, the share of healthy heartbeats kept, and
/// what is slow.
fn read_traces(
    r: &mut Reader<'_>,
    mut t: Section<'_>,
) -> Option<(bool, f64, SlowConfig, Option<String>)> {
    let enabled = match t.field("enabled") {
        Some(f) => f.bool(r),
        None => exporter_var(r, "OTEL_TRACES_EXPORTER"),
    };
    let endpoint = signal_endpoint(r, t.field("endpoint"), "traces");
    let sample_ratio = match t.field("sample_ratio") {
        Some(f) => f.fraction(r),
        None => sampler_ratio(r),
    };
    let mut slow = t.section(r, "slow");
    let mut threshold =
        |r: &mut Reader<'_>, key: &'static str, default: Duration| match slow.field(key) {
            Some(f) => f.duration(r, &SLOW),
            None => Some(default),
        };
    let produce = threshold(r, "produce", DEFAULT_SLOW_PRODUCE);
    let end_to_end = threshold(r, "end_to_end", DEFAULT_SLOW_END_TO_END);
    let connection = threshold(r, "connection", DEFAULT_SLOW_CONNECTION);
    slow.finish(r);
    t.finish(r);
    Some((
        enabled?,
        sample_ratio?,
        SlowConfig {
            produce: produce?,
            end_to_end: end_to_end?,
            connection: connection?,
        },
        endpoint?,
    ))
}

/// A signal's own `endpoint`: `Some(None)` when not set, `None` when set and wrong (said), so
/// every problem is listed at once.
fn signal_endpoint(
    r: &mut Reader<'_>,
    field: Option<Field<'_>>,
    signal: &str,
) -> Option<Option<String>> {
    let Some(f) = field else {
        return Some(None);
    };
    let url = f.non_empty_string(r)?.trim().to_owned();
    if url.starts_with("http://") || url.starts_with("https://") {
        return Some(Some(url));
    }
    f.error(
        r,
        format!(
            "{:?} is not an OTLP endpoint; expected a URL like http://collector:4318/v1/{signal}",
            crate::config::redact_url(&url)
        ),
    );
    None
}

/// `export.logs` but its endpoint: whether on, and the level of what is sent.
fn read_logs(r: &mut Reader<'_>, mut l: Section<'_>) -> Option<(bool, String, Option<String>)> {
    let enabled = match l.field("enabled") {
        Some(f) => f.bool(r),
        None => exporter_var(r, "OTEL_LOGS_EXPORTER"),
    };
    let level = match l.field("level") {
        Some(f) => f.non_empty_string(r).and_then(|text| {
            match crate::telemetry::logging::check_filter(&text) {
                Ok(()) => Some(text),
                Err(why) => {
                    f.error(r, why);
                    None
                }
            }
        }),
        None => Some("info".to_owned()),
    };
    let endpoint = signal_endpoint(r, l.field("endpoint"), "logs");
    l.finish(r);
    Some((enabled?, level?, endpoint?))
}

/// The ratio `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` ask for, as other SDKs read
/// them (the parent-based samplers alike: a heartbeat has no parent), else the default.
fn sampler_ratio(r: &mut Reader<'_>) -> Option<f64> {
    const SAMPLER: &str = "OTEL_TRACES_SAMPLER";
    const ARG: &str = "OTEL_TRACES_SAMPLER_ARG";
    let sampler = r.env(SAMPLER).unwrap_or_default();
    match sampler.trim() {
        "" => Some(DEFAULT_SAMPLE_RATIO),
        "always_on" | "parentbased_always_on" => Some(1.0),
        "always_off" | "parentbased_always_off" => Some(0.0),
        "traceidratio" | "parentbased_traceidratio" => {
            let Some(arg) = r.env(ARG).filter(|a| !a.trim().is_empty()) else {
                // The specification's default for a ratio sampler without its argument.
                return Some(1.0);
            };
            match arg.trim().parse::<f64>() {
                Ok(ratio) if (0.0..=1.0).contains(&ratio) => Some(ratio),
                _ => {
                    r.error(
                        ARG,
                        None,
                        format!("{arg:?} is not a ratio; expected a number from 0 to 1"),
                    );
                    None
                }
            }
        }
        other => {
            r.error(
                SAMPLER,
                None,
                format!(
                    "{other:?} is not supported; expected always_on, always_off or traceidratio (or their parentbased_ forms)"
                ),
            );
            None
        }
    }
}

/// Where a signal (`traces`, `logs`) goes without its own `endpoint`: its
/// `OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT` as given, else the metrics' endpoint; over HTTP with
/// the signal's path in place of the metrics one.
fn signal_default_endpoint(
    r: &Reader<'_>,
    metrics: &str,
    protocol: OtlpProtocol,
    var: &str,
    signal: &str,
) -> String {
    if let Some(url) = r
        .env(var)
        .map(|v| v.trim().to_owned())
        .filter(|v| v.contains("://"))
    {
        return url;
    }
    match protocol {
        OtlpProtocol::Grpc => metrics.to_owned(),
        OtlpProtocol::HttpProtobuf => match metrics.strip_suffix("/v1/metrics") {
            Some(base) => format!("{base}/v1/{signal}"),
            None => {
                // A metrics path of the user's own: the signal goes to the standard path of the
                // same server (its variable names another).
                let (scheme, rest) = metrics.split_once("://").unwrap_or(("http", metrics));
                let host = rest.split('/').next().unwrap_or(rest);
                format!("{scheme}://{host}/v1/{signal}")
            }
        },
    }
}

const MESSAGING_NAMES: [(&str, MessagingNames); 3] = [
    ("agent", MessagingNames::Agent),
    ("semconv", MessagingNames::Semconv),
    ("both", MessagingNames::Both),
];

/// `messaging_names`, else `OTEL_SEMCONV_STABILITY_OPT_IN` (a comma-separated list shared with
/// other instrumentations: `messaging` for the conventions' names only, `messaging/dup` for
/// both; other entries are theirs), else the agent's names.
fn messaging_names(r: &mut Reader<'_>, field: Option<Field<'_>>) -> Option<MessagingNames> {
    if let Some(f) = field {
        return f.choice(r, &MESSAGING_NAMES, true);
    }
    let opt_in = r.env("OTEL_SEMCONV_STABILITY_OPT_IN").unwrap_or_default();
    let entries: Vec<&str> = opt_in.split(',').map(str::trim).collect();
    Some(if entries.contains(&"messaging/dup") {
        MessagingNames::Both
    } else if entries.contains(&"messaging") {
        MessagingNames::Semconv
    } else {
        MessagingNames::Agent
    })
}

/// `enabled`, else off with `OTEL_METRICS_EXPORTER=none` or `OTEL_SDK_DISABLED=true`.
fn enabled(r: &mut Reader<'_>, field: Option<Field<'_>>) -> Option<bool> {
    match field {
        Some(f) => f.bool(r),
        None => exporter_var(r, "OTEL_METRICS_EXPORTER"),
    }
}

/// A signal's `OTEL_*_EXPORTER` (`otlp` or `none`), with `OTEL_SDK_DISABLED=true` turning
/// every signal off.
fn exporter_var(r: &mut Reader<'_>, var: &'static str) -> Option<bool> {
    match r.env(var).as_deref().map(str::trim) {
        Some("none") => Some(false),
        Some("otlp") | Some("") | None => {
            Some(r.env("OTEL_SDK_DISABLED").as_deref() != Some("true"))
        }
        Some(other) => {
            r.error(
                var,
                None,
                format!("{other:?} is not supported; expected otlp or none"),
            );
            None
        }
    }
}

/// Where the endpoint came from: the file, a variable, or nowhere (the protocol's default).
struct EndpointSource {
    url: String,
    /// The key or variable that set it; `None` for the default.
    source: Option<String>,
    /// A base URL for every signal (`OTEL_EXPORTER_OTLP_ENDPOINT`): over HTTP the metrics path
    /// is appended.
    is_base: bool,
    /// Set by a variable rather than the file.
    from_env: bool,
}

fn endpoint(r: &mut Reader<'_>, field: Option<Field<'_>>) -> Option<EndpointSource> {
    if let Some(f) = field {
        return f.non_empty_string(r).map(|url| EndpointSource {
            url,
            source: Some(f.path().to_owned()),
            is_base: false,
            from_env: false,
        });
    }
    let set = |r: &Reader<'_>, var: &str| r.env(var).filter(|v| !v.trim().is_empty());
    let specific = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT";
    let generic = "OTEL_EXPORTER_OTLP_ENDPOINT";
    Some(match (set(r, specific), set(r, generic)) {
        (Some(url), _) => EndpointSource {
            url,
            source: Some(specific.to_owned()),
            is_base: false,
            from_env: true,
        },
        (None, Some(url)) => EndpointSource {
            url,
            source: Some(generic.to_owned()),
            is_base: true,
            from_env: true,
        },
        (None, None) => EndpointSource {
            url: String::new(),
            source: None,
            is_base: false,
            from_env: false,
        },
    })
}

/// The endpoint URL to export to, checked, with the metrics path over HTTP when needed.
fn endpoint_for(
    r: &mut Reader<'_>,
    endpoint: EndpointSource,
    protocol: OtlpProtocol,
) -> Option<String> {
    let Some(source) = endpoint.source else {
        return Some(
            match protocol {
                OtlpProtocol::Grpc => DEFAULT_OTLP_GRPC_ENDPOINT,
                OtlpProtocol::HttpProtobuf => DEFAULT_OTLP_HTTP_ENDPOINT,
            }
            .to_owned(),
        );
    };
    let mut url = endpoint.url.trim().to_owned();
    // A variable may name a gRPC endpoint without a scheme (`collector:4317`), as the
    // specification allows: https, unless OTEL_EXPORTER_OTLP_INSECURE says plain text.
    if endpoint.from_env
        && protocol == OtlpProtocol::Grpc
        && !url.contains("://")
        && !url.is_empty()
    {
        let insecure = first_env(r, &otlp_vars("INSECURE"))
            .is_some_and(|(_, v)| v.trim().eq_ignore_ascii_case("true"));
        url = format!("{}://{url}", if insecure { "http" } else { "https" });
    }
    let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
    let host_ok = url
        .split_once("://")
        .is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with('/'));
    if !scheme_ok || !host_ok {
        r.error(
            source,
            None,
            format!("{url:?} is not an OTLP endpoint; expected a URL like http://collector:4317"),
        );
        return None;
    }
    Some(match protocol {
        // Over HTTP, a base URL (the generic variable, or a URL without a path) gets the
        // signal path.
        OtlpProtocol::HttpProtobuf if endpoint.is_base || url_path_is_empty(&url) => {
            format!("{}/v1/metrics", url.trim_end_matches('/'))
        }
        _ => url,
    })
}

fn interval(r: &mut Reader<'_>, field: Option<Field<'_>>) -> Option<Duration> {
    match field {
        Some(f) => f.duration(r, &EXPORT_INTERVAL),
        None => env_millis(r, "OTEL_METRIC_EXPORT_INTERVAL", &EXPORT_INTERVAL)
            .map(|d| d.unwrap_or(DEFAULT_EXPORT_INTERVAL)),
    }
}

fn timeout(r: &mut Reader<'_>, field: Option<Field<'_>>) -> Option<Duration> {
    if let Some(f) = field {
        return f.duration(r, &EXPORT_TIMEOUT);
    }
    match env_millis(r, "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", &EXPORT_TIMEOUT)? {
        Some(d) => Some(d),
        None => env_millis(r, "OTEL_EXPORTER_OTLP_TIMEOUT", &EXPORT_TIMEOUT)
            .map(|d| d.unwrap_or(DEFAULT_EXPORT_TIMEOUT)),
    }
}

/// `tls`: each file from the config, else from its `OTEL_EXPORTER_OTLP_[METRICS_]*` variable;
/// every file named must exist, and a client certificate needs its key. Also whether the file
/// set any of them.
fn tls(r: &mut Reader<'_>, o: &mut Section<'_>) -> Option<(OtlpTls, bool)> {
    let mut t = o.section(r, "tls");
    let path = t.path().to_owned();
    let in_file = ["ca_file", "cert_file", "key_file"]
        .iter()
        .any(|k| t.has(k));
    let mut ok = true;
    let mut file =
        |r: &mut Reader<'_>, key: &'static str, var: &str| -> Option<std::path::PathBuf> {
            let field = t.field(key);
            let (value, var) = match &field {
                Some(f) => (f.non_empty_string(r)?, None),
                None => {
                    let (var, value) = first_env(r, &otlp_vars(var))?;
                    (value, Some(var))
                }
            };
            let file = std::path::PathBuf::from(value.trim());
            if file.is_file() {
                return Some(file);
            }
            let why = format!("file {} does not exist or is not a file", file.display());
            match (&field, var) {
                (Some(f), _) => f.error(r, why),
                (None, Some(var)) => r.error(var, None, why),
                (None, None) => {}
            }
            ok = false;
            None
        };
    let ca_file = file(r, "ca_file", "CERTIFICATE");
    let cert_file = file(r, "cert_file", "CLIENT_CERTIFICATE");
    let key_file = file(r, "key_file", "CLIENT_KEY");
    t.finish(r);
    if !ok {
        return None;
    }
    if !super::cluster::client_pair_complete(
        r,
        &path,
        cert_file.is_some(),
        key_file.is_some(),
        "mTLS to the collector needs both cert_file and key_file (or OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY)",
    ) {
        return None;
    }
    Some((
        OtlpTls {
            ca_file,
            cert_file,
            key_file,
        },
        in_file,
    ))
}

/// A default timeout shrinks to fit a short interval; only a contradiction the file states is
/// an error.
fn fit_timeout(
    r: &mut Reader<'_>,
    path: &str,
    interval: Duration,
    timeout: Duration,
    explicit: bool,
) -> Option<Duration> {
    if !explicit {
        return Some(timeout.min(interval));
    }
    if timeout > interval {
        r.error(
            format!("{path}.timeout"),
            None,
            format!(
                "{} must not be longer than {path}.interval ({})",
                humantime::format_duration(timeout),
                humantime::format_duration(interval)
            ),
        );
        return None;
    }
    Some(timeout)
}

/// Headers from `OTEL_EXPORTER_OTLP_HEADERS` and the file, merged; the file wins per header.
fn headers(r: &mut Reader<'_>, field: Option<Field<'_>>) -> Option<BTreeMap<String, Secret>> {
    let mut headers = match first_env(r, &otlp_vars("HEADERS")) {
        Some((var, text)) => parse_env_headers(r, &var, &text)?,
        None => BTreeMap::new(),
    };
    let Some(f) = field else {
        return Some(headers);
    };
    for (name, value) in f.string_map(r)? {
        if !http_header_name_is_valid(&name) {
            r.error(
                format!("{}.{name}", f.path()),
                f.line(),
                "not a valid HTTP header name",
            );
            return None;
        }
        headers.insert(name.to_ascii_lowercase(), Secret::new(value));
    }
    Some(headers)
}

/// Parses an `OTEL_*` value holding milliseconds, reporting a bad one under the variable's name.
fn env_millis(
    r: &mut Reader<'_>,
    var: &str,
    bounds: &RangeInclusive<Duration>,
) -> Option<Option<Duration>> {
    let Some(text) = r.env(var) else {
        return Some(None);
    };
    match text.trim().parse::<u64>() {
        Ok(ms) if bounds.contains(&Duration::from_millis(ms)) => {
            Some(Some(Duration::from_millis(ms)))
        }
        _ => {
            r.error(
                var,
                None,
                format!(
                    "{text:?} is not valid; expected a whole number of milliseconds from {} to {}",
                    bounds.start().as_millis(),
                    bounds.end().as_millis()
                ),
            );
            None
        }
    }
}

/// The metric-specific and the generic `OTEL_EXPORTER_OTLP_*` variable, in that order.
fn otlp_vars(suffix: &str) -> [String; 2] {
    [
        format!("OTEL_EXPORTER_OTLP_METRICS_{suffix}"),
        format!("OTEL_EXPORTER_OTLP_{suffix}"),
    ]
}

/// The first of `vars` that is set (and not blank), with its value.
fn first_env(r: &Reader<'_>, vars: &[impl AsRef<str>]) -> Option<(String, String)> {
    vars.iter().find_map(|var| {
        let var = var.as_ref();
        r.env(var)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (var.to_owned(), v))
    })
}

/// Parses `OTEL_EXPORTER_OTLP_HEADERS` (`k=v,k2=v2`, values URL-encoded).
fn parse_env_headers(
    r: &mut Reader<'_>,
    var: &str,
    text: &str,
) -> Option<BTreeMap<String, Secret>> {
    let mut out = BTreeMap::new();
    for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            r.error(var, None, "expected comma-separated key=value pairs");
            return None;
        };
        out.insert(
            k.trim().to_ascii_lowercase(),
            Secret::new(percent_decode(v.trim())),
        );
    }
    Some(out)
}

/// Decodes `%XX` escapes (as in `OTEL_*` values); other text is kept as it is.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Resolves a choice: the config file first, then the first of `vars` that is set, then the
/// default (the first choice).
fn choose<T: Copy>(
    r: &mut Reader<'_>,
    field: Option<Field<'_>>,
    vars: &[impl AsRef<str>],
    choices: &[(&str, T)],
) -> Option<T> {
    if let Some(f) = field {
        return f.choice(r, choices, true);
    }
    let Some((var, value)) = first_env(r, vars) else {
        return choices.first().map(|(_, default)| *default);
    };
    if let Some((_, v)) = choices
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(value.trim()))
    {
        return Some(*v);
    }
    let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
    r.error(
        var,
        None,
        format!(
            "{value:?} is not valid; expected one of: {}",
            names.join(", ")
        ),
    );
    None
}

fn url_path_is_empty(url: &str) -> bool {
    url.split_once("://")
        .is_none_or(|(_, rest)| match rest.find('/') {
            None => true,
            Some(i) => rest[i..].trim_end_matches('/').is_empty(),
        })
}

fn http_header_name_is_valid(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
