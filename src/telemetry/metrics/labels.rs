//! Label sets, the sorted request counter family and the histogram every duration uses.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;

use super::Outcome;

/// Ordered by event, then outcome: the order `/metrics` lists them in.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub(super) struct EventOutcomeLabels {
    pub(super) event: String,
    pub(super) outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct VersionLabels {
    pub(super) version: String,
}

/// `pollgate_requests_total`: a counter family that lists its series sorted (a `Family`
/// lists them in hash order, different on every start). A std lock: it is taken when a
/// generation is built and on each scrape, never on a call's path (calls hold handles).
#[derive(Clone, Debug, Default)]
pub(super) struct RequestCounters(Arc<RwLock<BTreeMap<EventOutcomeLabels, Counter>>>);

impl RequestCounters {
    pub(super) fn get_or_create(&self, event: &str, outcome: Outcome) -> Counter {
        let labels = EventOutcomeLabels {
            event: event.to_owned(),
            outcome: outcome.label().to_owned(),
        };
        if let Some(c) = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&labels)
        {
            return c.clone();
        }
        let mut series = self.0.write().unwrap_or_else(PoisonError::into_inner);
        series.entry(labels).or_default().clone()
    }
}

impl EncodeMetric for RequestCounters {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let series = self.0.read().unwrap_or_else(PoisonError::into_inner);
        for (labels, counter) in series.iter() {
            counter.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct EventLabels {
    pub(super) event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct UpstreamOutcomeLabels {
    pub(super) upstream: String,
    pub(super) outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct UpstreamStatusLabels {
    pub(super) upstream: String,
    pub(super) status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct UpstreamLabels {
    pub(super) upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ResultLabels {
    pub(super) result: String,
}

pub(super) type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub(super) fn seconds_histogram() -> Histogram {
    // 50 µs .. ~26 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OutcomeLabels {
    pub(super) outcome: String,
}
