//! Events of the Schema Registry probe: each probe's stage times and outcome, and the
//! registry becoming unreachable or reachable again.

use opentelemetry::KeyValue;
use tracing::{debug, info, warn};

use crate::kafka::reach::Outcome;
use crate::telemetry::instruments::{ClusterLabels, attr};
use crate::telemetry::{ClusterAttributes, Instruments};

/// One probe of the Schema Registry: a duration per stage, the check by outcome, `up`, and a
/// log line when the state changes.
pub struct RegistryProbed<'a> {
    pub cluster: &'a ClusterLabels,
    pub cluster_id: &'a str,
    pub outcome: &'a Outcome,
    /// What the previous probe found; `None` for the first.
    pub was_up: Option<bool>,
}

impl RegistryProbed<'_> {
    pub fn emit(self, instruments: &Instruments) {
        let outcome = self.outcome;
        let attrs = ClusterAttributes::new(self.cluster_id, self.cluster).with([
            KeyValue::new(attr::REGISTRY_NAME, self.cluster.name().to_owned()),
            KeyValue::new(attr::SERVER_ADDRESS, outcome.target.host.clone()),
            KeyValue::new(attr::SERVER_PORT, i64::from(outcome.target.port)),
        ]);
        let with = |extra: &[KeyValue]| {
            let mut a = attrs.clone();
            a.extend_from_slice(extra);
            a
        };
        for (stage, took) in &outcome.stages {
            instruments.record_registry_stage(
                *took,
                &with(&[KeyValue::new(attr::REGISTRY_STAGE, stage.as_str())]),
            );
        }
        instruments.set_registry_up(self.cluster.name(), attrs.clone(), outcome.up());
        match &outcome.failure {
            None => {
                instruments.count_registry_check(&attrs);
                if self.was_up == Some(false) {
                    info!(name: "schema_registry.registry_probed", address = %outcome.target.address(), "Schema Registry reachable again.");
                }
            }
            Some(failure) => {
                let kind = failure.kind();
                let failed = with(&[
                    KeyValue::new(attr::REGISTRY_STAGE, failure.stage.as_str()),
                    KeyValue::new(attr::ERROR_TYPE, kind.as_str()),
                ]);
                if let Some(took) = outcome.failed_after {
                    instruments.record_registry_stage(took, &failed);
                }
                instruments.count_registry_check(&failed);
                if self.was_up == Some(false) {
                    debug!(name: "schema_registry.registry_probed", stage = failure.stage.as_str(), error.type = kind.as_str(), error = %failure.detail(), "Schema Registry still unreachable.");
                } else {
                    warn!(
                        name: "schema_registry.registry_probed",
                        address = %outcome.target.address(),
                        stage = failure.stage.as_str(),
                        error.type = kind.as_str(),
                        error = %failure.detail(),
                        "Schema Registry unreachable."
                    );
                }
            }
        }
    }
}

/// The Schema Registry probe cannot run: its TLS settings do not load.
pub struct RegistryProbeUnavailable<'a> {
    pub error: &'a crate::kafka::tls::TlsSetupError,
}

impl RegistryProbeUnavailable<'_> {
    pub fn emit(self) {
        tracing::error!(name: "schema_registry.registry_probe_unavailable", error = %crate::error::Chain(self.error), "The Schema Registry probe cannot run: its TLS settings do not load.");
    }
}
