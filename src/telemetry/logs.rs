//! The agent's log events as OTLP log records (`export.logs`): the `tracing` events the
//! `events` module writes go, beside stderr, through the OpenTelemetry bridge to the SDK's
//! batch log processor and opentelemetry-otlp's log exporter, on the metrics' settings and
//! under their resource. The exporter's outcomes are counted with the other signals'.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{
    BatchConfigBuilder, BatchLogProcessor, LogBatch, LogExporter, LogProcessor,
    OTEL_BLRP_MAX_QUEUE_SIZE, OTEL_BLRP_MAX_QUEUE_SIZE_DEFAULT, OTEL_BLRP_SCHEDULE_DELAY,
    SdkLogRecord, SdkLoggerProvider,
};

use super::export::signals::{self, Backlog, InRuntime, Leaving};
use super::export::stats::{ExportStats, Reminder, Signal};
use super::export::transport::TransportError;
use crate::config::{ExportConfig, OtlpProtocol};

/// The OTLP log pipeline, when on; shut down at exit so queued records go out.
#[derive(Clone, Debug, Default)]
pub struct Logs {
    provider: Option<SdkLoggerProvider>,
}

impl Logs {
    /// Builds the pipeline of `export.logs` and attaches it to the subscriber; inside the
    /// tokio runtime.
    pub(crate) fn build(
        export: &ExportConfig,
        resource: &opentelemetry_sdk::Resource,
        stats: Arc<ExportStats>,
    ) -> Result<Self, TransportError> {
        let config = &export.logs;
        if !config.enabled {
            return Ok(Self::default());
        }
        let otlp = &export.otlp;
        let built = match otlp.protocol {
            OtlpProtocol::Grpc => signals::over_grpc(
                opentelemetry_otlp::LogExporter::builder().with_tonic(),
                otlp,
                &config.endpoint,
                "LOGS",
            )?
            .build(),
            OtlpProtocol::HttpProtobuf => signals::over_http(
                opentelemetry_otlp::LogExporter::builder().with_http(),
                otlp,
                &config.endpoint,
                "LOGS",
            )?
            .build(),
        };
        let exporter = built.map_err(|e| TransportError::SignalExporter {
            signal: "log",
            message: e.to_string(),
        })?;
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| TransportError::NoRuntime)?;
        let backlog = Arc::new(Backlog::from_env(
            OTEL_BLRP_MAX_QUEUE_SIZE,
            OTEL_BLRP_MAX_QUEUE_SIZE_DEFAULT,
        ));
        let exporter = CountedExporter {
            inner: exporter,
            runtime,
            stats: Arc::clone(&stats),
            reminder: Reminder::every(FAILURE_LOG_EVERY),
            backlog: Arc::clone(&backlog),
        };
        // The SDK's default sends records every second: its thread waking that often cost
        // more than all the spans (bench/footprint, docs/performance.md). Every 5 s unless
        // OTEL_BLRP_SCHEDULE_DELAY says otherwise, as for spans.
        let mut batching = BatchConfigBuilder::default();
        if std::env::var_os(OTEL_BLRP_SCHEDULE_DELAY).is_none() {
            batching = batching.with_scheduled_delay(SCHEDULE_DELAY);
        }
        let processor = Bounded {
            inner: BatchLogProcessor::builder(exporter)
                .with_batch_config(batching.build())
                .build(),
            backlog,
            stats,
        };
        let provider = SdkLoggerProvider::builder()
            .with_resource(resource.clone())
            .with_log_processor(processor)
            .build();
        super::logging::attach_otlp(&provider);
        Ok(Self {
            provider: Some(provider),
        })
    }

    /// Sends what is queued and stops; blocking, so called off the async threads.
    pub fn shutdown(&self, timeout: Duration) -> OTelSdkResult {
        match &self.provider {
            Some(provider) => provider.shutdown_with_timeout(timeout),
            None => Ok(()),
        }
    }
}

/// How often queued records are sent, unless `OTEL_BLRP_SCHEDULE_DELAY` says.
const SCHEDULE_DELAY: Duration = Duration::from_secs(5);

/// Failed log exports are logged at most this often (on stderr only: never as an OTLP record
/// of their own, which would fail the same way).
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(300);

/// The OTLP log exporter, polled inside the agent's runtime, its outcomes counted as
/// `cc_heartbeat.export.batches{otel.signal=logs}`.
#[derive(Debug)]
struct CountedExporter {
    inner: opentelemetry_otlp::LogExporter,
    runtime: tokio::runtime::Handle,
    stats: Arc<ExportStats>,
    reminder: Reminder,
    backlog: Arc<Backlog>,
}

impl LogExporter for CountedExporter {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let records = batch.iter().count();
        let _out = Leaving(&self.backlog, records);
        let result = InRuntime::new(&self.runtime, self.inner.export(batch)).await;
        self.stats.count_sdk_export(Signal::Logs, &result, records);
        if let Err(error) = &result {
            crate::events::export::LogExportFailed {
                error,
                records,
                loud: self.reminder.due(),
            }
            .emit();
        }
        result
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
}

/// The batch log processor behind the backlog: a record past its bound (the processor's queue
/// size, `OTEL_BLRP_MAX_QUEUE_SIZE`) is dropped and counted in
/// `cc_heartbeat.export.points.rejected{otel.signal=logs}`, as the processor would drop it
/// unsaid.
#[derive(Debug)]
struct Bounded {
    inner: BatchLogProcessor,
    backlog: Arc<Backlog>,
    stats: Arc<ExportStats>,
}

impl LogProcessor for Bounded {
    fn emit(&self, record: &mut SdkLogRecord, scope: &InstrumentationScope) {
        if self.backlog.admit() {
            self.inner.emit(record, scope);
        } else {
            self.stats.count_rejected(Signal::Logs, 1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}
