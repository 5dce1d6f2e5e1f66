//! Prometheus metrics of the reconciles, by operation and error; what the reconcile loop
//! reports them through ([`Observer`]); and the `/metrics` route.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// What the reconcile loop reports after each reconcile.
pub trait Observer: Send + Sync + 'static {
    /// One reconcile of `operation` ended after `elapsed`, with `error` (a label) if it failed.
    fn reconciled(&self, operation: &'static str, elapsed: Duration, error: Option<&'static str>);
}

/// An observer that records nothing.
pub struct NoObserver;
impl Observer for NoObserver {
    fn reconciled(&self, _: &'static str, _: Duration, _: Option<&'static str>) {}
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    operation: &'static str,
    error: &'static str,
}

/// Reconcile metrics by operation.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<OperationLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: Family<OperationLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("runtime_sandbox");
        let reconciles = Family::<OperationLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let durations = Family::<OperationLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        registry.register(
            "reconciles",
            "ContainerRuntime reconciles by operation",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed ContainerRuntime reconciles by operation and error",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of ContainerRuntime reconciles",
            durations.clone(),
        );
        Metrics {
            registry,
            reconciles,
            errors,
            durations,
        }
    }
}

impl Metrics {
    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Observer for Metrics {
    fn reconciled(&self, operation: &'static str, elapsed: Duration, error: Option<&'static str>) {
        self.reconciles
            .get_or_create(&OperationLabels { operation })
            .inc();
        self.durations
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
        if let Some(error) = error {
            self.errors
                .get_or_create(&ErrorLabels { operation, error })
                .inc();
        }
    }
}

/// `/metrics` in the text exposition format.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new().route("/metrics", get(move || async move { metrics.encode() }))
}
