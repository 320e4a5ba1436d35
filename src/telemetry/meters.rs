//! The agent's meters: one per metric reader, each from a provider of its own.
//!
//! The SDK runs a provider's observable callbacks at each collection of *each* of its readers,
//! and every run records into all of them. With the OTLP reader and `/metrics` on one provider,
//! a series gone between the two readers' collections reached the second reader once more,
//! beside the series that replaced it: one export could hold a broker's `up` under its old and
//! its new attributes. So every reader has its own provider: an instrument records into each,
//! and each provider's callbacks answer its own reader only. Recording costs what it did, since
//! the SDK too recorded every measurement once per reader.

use std::sync::Arc;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{AsyncInstrument, Counter, Histogram, Meter, SyncInstrument};

/// An observable instrument's builder on [`Meters`]: registers `callback` with every meter.
/// The SDK keeps the callbacks for the life of the provider (its observable handles are
/// markers), so nothing is returned.
macro_rules! observable {
    ($method:ident, $value:ty) => {
        pub(crate) fn $method(
            &self,
            name: &'static str,
            unit: &'static str,
            description: &'static str,
            callback: impl Fn(&dyn AsyncInstrument<$value>) + Send + Sync + 'static,
        ) {
            let callback = Arc::new(callback);
            for m in &self.0 {
                let callback = Arc::clone(&callback);
                m.$method(name)
                    .with_unit(unit)
                    .with_description(description)
                    .with_callback(move |o| callback(o))
                    .build();
            }
        }
    };
}

/// Builds every instrument once per meter; with no meter, instruments record nowhere.
pub(crate) struct Meters(Vec<Meter>);

impl Meters {
    pub(crate) fn new(meters: Vec<Meter>) -> Self {
        Self(meters)
    }

    pub(crate) fn u64_counter(
        &self,
        name: &'static str,
        unit: &'static str,
        description: &'static str,
    ) -> Counter<u64> {
        let counters = self
            .0
            .iter()
            .map(|m| {
                m.u64_counter(name)
                    .with_unit(unit)
                    .with_description(description)
                    .build()
            })
            .collect();
        Counter::new(Arc::new(FanOut(counters)))
    }

    pub(crate) fn f64_histogram(
        &self,
        name: &'static str,
        unit: &'static str,
        description: &'static str,
        boundaries: &[f64],
    ) -> Histogram<f64> {
        let histograms = self
            .0
            .iter()
            .map(|m| {
                m.f64_histogram(name)
                    .with_unit(unit)
                    .with_description(description)
                    .with_boundaries(boundaries.to_vec())
                    .build()
            })
            .collect();
        Histogram::new(Arc::new(FanOut(histograms)))
    }

    observable!(i64_observable_gauge, i64);
    observable!(f64_observable_gauge, f64);
    observable!(u64_observable_counter, u64);
}

/// One instrument per meter, each given every measurement.
struct FanOut<I>(Vec<I>);

impl SyncInstrument<u64> for FanOut<Counter<u64>> {
    fn measure(&self, value: u64, attributes: &[KeyValue]) {
        for counter in &self.0 {
            counter.add(value, attributes);
        }
    }
}

impl SyncInstrument<f64> for FanOut<Histogram<f64>> {
    fn measure(&self, value: f64, attributes: &[KeyValue]) {
        for histogram in &self.0 {
            histogram.record(value, attributes);
        }
    }
}
