//! Prometheus metrics (OpenMetrics). Labels are kinds and outcomes, never
//! object names, to keep cardinality bounded.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of reconcile metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// Kind reconciled, e.g. MinecraftServer.
    pub kind: String,
    /// `ok` or an error category.
    pub result: String,
}

/// Labels that only name a kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Kind reconciled.
    pub kind: String,
}

/// All metrics of the process.
pub struct Metrics {
    registry: Registry,
    /// Reconciles by kind and result.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Reconcile duration in seconds by kind.
    pub reconcile_duration: Family<KindLabels, Histogram>,
    /// Always 1; carries the version.
    pub build_info: Family<Vec<(String, String)>, Gauge>,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("craftplane");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register("reconciles", "Reconciles by kind and result", reconciles.clone());
        let reconcile_duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register("reconcile_duration_seconds", "Reconcile duration by kind", reconcile_duration.clone());
        let build_info = Family::<Vec<(String, String)>, Gauge>::default();
        registry.register("build_info", "craftplane build information", build_info.clone());
        build_info.get_or_create(&vec![("version".into(), env!("CARGO_PKG_VERSION").into())]).set(1);
        Metrics { registry, reconciles, reconcile_duration, build_info }
    }

    /// Records one reconcile of `kind`: its duration and result (`ok` or the
    /// error category).
    pub fn observe_reconcile(&self, kind: &str, took: std::time::Duration, error: Option<&str>) {
        self.reconciles
            .get_or_create(&ReconcileLabels { kind: kind.into(), result: error.unwrap_or("ok").into() })
            .inc();
        self.reconcile_duration.get_or_create(&KindLabels { kind: kind.into() }).observe(took.as_secs_f64());
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
