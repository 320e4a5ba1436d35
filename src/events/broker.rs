//! Events of the broker probe: each probe's stages and outcome, brokers going down and
//! coming back, brokers no longer probed.

use opentelemetry::KeyValue;
use tracing::{debug, info, warn};

use crate::kafka::reach::{BOOTSTRAP_ID, Outcome};
use crate::kafka::tls::TlsSetupError;
use crate::telemetry::instruments::attr;
use crate::telemetry::{ClusterAttributes, Instruments};

/// One broker was probed: a duration per stage, the check by outcome, and `up`; and, when
/// its state changed, a log line: unreachable (WARN), reachable again (INFO), still
/// unreachable (DEBUG). The bootstrap address, probed until the brokers are known, is reported
/// through `up` alone: that gauge goes when the brokers are known, while a counter's or
/// histogram's series would stay.
pub struct BrokerProbed<'a> {
    pub cluster: &'a str,
    pub attrs: &'a ClusterAttributes,
    pub outcome: &'a Outcome,
    /// What the previous probe of this broker found; `None` for the first.
    pub was_up: Option<bool>,
}

impl BrokerProbed<'_> {
    pub fn emit(self, instruments: &Instruments) {
        self.log();
        let outcome = self.outcome;
        let attrs = outcome.target.attributes(self.attrs.base());
        let with = |extra: &[KeyValue]| {
            let mut a = attrs.clone();
            a.extend_from_slice(extra);
            a
        };
        instruments.set_broker_up(self.cluster, outcome.target.id, attrs.clone(), outcome.up());
        if outcome.target.id == BOOTSTRAP_ID {
            return;
        }
        for (stage, took) in &outcome.stages {
            instruments.record_stage(
                *took,
                &with(&[KeyValue::new(attr::CONNECTION_STAGE, stage.as_str())]),
            );
        }
        match &outcome.failure {
            None => instruments.count_check(&attrs),
            Some(failure) => {
                let failed = with(&[
                    KeyValue::new(attr::CONNECTION_STAGE, failure.stage.as_str()),
                    KeyValue::new(attr::ERROR_TYPE, failure.kind().as_str()),
                ]);
                if let Some(took) = outcome.failed_after {
                    instruments.record_stage(took, &failed);
                }
                instruments.count_check(&failed);
            }
        }
    }
}

impl BrokerProbed<'_> {
    fn log(&self) {
        let t = &self.outcome.target;
        match (&self.outcome.failure, self.was_up) {
            (Some(f), Some(true) | None) => warn!(
                name: "broker.broker_probed",
                broker = %t.label(),
                address = %t.address(),
                stage = f.stage.as_str(),
                error.type = f.kind().as_str(),
                error = %f.detail(),
                "Broker unreachable.",
            ),
            (None, Some(false)) => {
                info!(name: "broker.broker_probed", broker = %t.label(), address = %t.address(), "Broker reachable again.")
            }
            (Some(f), Some(false)) => debug!(
                name: "broker.broker_probed",
                broker = %t.label(),
                stage = f.stage.as_str(),
                error = %f.detail(),
                "Broker still unreachable.",
            ),
            (None, _) => {}
        }
    }
}

/// A broker gone from the metadata long enough (an hour) is no longer
/// probed or reported.
pub struct BrokerRetired<'a> {
    pub cluster: &'a str,
    pub broker: i32,
}

impl BrokerRetired<'_> {
    pub fn emit(self, instruments: &Instruments) {
        info!(
            name: "broker.broker_retired",
            broker = self.broker,
            "Broker has been gone from the metadata for an hour; no longer probed."
        );
        instruments.remove_broker_up(self.cluster, self.broker);
    }
}

/// The cluster's brokers are known: the bootstrap address no longer stands for them.
pub struct BootstrapRetired<'a> {
    pub cluster: &'a str,
}

impl BootstrapRetired<'_> {
    pub fn emit(self, instruments: &Instruments) {
        debug!(name: "broker.bootstrap_retired", "Brokers known from the metadata; the bootstrap address is no longer probed.");
        instruments.remove_broker_up(self.cluster, BOOTSTRAP_ID);
    }
}

/// The broker probe cannot run: its TLS settings do not load.
pub struct BrokerProbeUnavailable<'a> {
    pub error: &'a TlsSetupError,
}

impl BrokerProbeUnavailable<'_> {
    pub fn emit(self) {
        tracing::error!(
            name: "broker.broker_probe_unavailable",
            error = %crate::error::Chain(self.error),
            "The broker probe cannot set up TLS; it is not started."
        );
    }
}
