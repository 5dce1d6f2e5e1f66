//! What operators run the controller with: leader election and the heartbeat (both Leases,
//! compatible with controller-runtime's lease lock and Gardener's heartbeat controller),
//! health and readiness endpoints, and Prometheus metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::json;
use tracing::{info, warn};

use crate::reconciler::Observer;
use crate::{Error, Result, kube_err};

/// Name of Gardener's extension heartbeat Lease.
pub const HEARTBEAT_LEASE: &str = "gardener-extension-heartbeat";

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

/// Readiness of the process, flipped by the controller once its cache is filled.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Serves `/healthz` and `/readyz` on `health`, `/metrics` on `metrics` (may be the same).
pub async fn serve(
    health: SocketAddr,
    metrics_addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Readiness,
) -> std::io::Result<()> {
    let health_router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(r): State<Readiness>| async move {
                if r.is_ready() {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "cache not synced")
                }
            }),
        )
        .with_state(readiness);
    let metrics_router = Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move { m.encode() }),
        )
        .with_state(metrics);
    if health == metrics_addr {
        let listener = tokio::net::TcpListener::bind(health).await?;
        return axum::serve(listener, health_router.merge(metrics_router)).await;
    }
    let h = tokio::net::TcpListener::bind(health).await?;
    let m = tokio::net::TcpListener::bind(metrics_addr).await?;
    tokio::try_join!(
        axum::serve(h, health_router),
        axum::serve(m, metrics_router)
    )?;
    Ok(())
}

/// Renews Gardener's heartbeat Lease every `interval` forever.
pub async fn heartbeat(client: Client, namespace: String, extension: String, interval: Duration) {
    let api = Api::<Lease>::namespaced(client, &namespace);
    loop {
        let spec = json!({"spec": {
            "holderIdentity": extension,
            "leaseDurationSeconds": interval.as_secs(),
            "renewTime": MicroTime(Timestamp::now()),
        }});
        let result = match api
            .patch(
                HEARTBEAT_LEASE,
                &PatchParams::default(),
                &Patch::Merge(&spec),
            )
            .await
        {
            Err(kube::Error::Api(e)) if e.code == 404 => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(HEARTBEAT_LEASE.into()),
                        ..ObjectMeta::default()
                    },
                    spec: serde_json::from_value(spec["spec"].clone()).ok(),
                };
                api.create(&PostParams::default(), &lease).await.map(|_| ())
            }
            other => other.map(|_| ()),
        };
        if let Err(e) = result {
            warn!(error = %e, "could not renew the heartbeat Lease");
        }
        tokio::time::sleep(interval).await;
    }
}

/// Lease-based leader election with controller-runtime's timings and Lease fields, so that
/// our controller and a Go extension using the same id exclude each other.
#[derive(Clone)]
pub struct LeaderElection {
    pub client: Client,
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaderElection {
    /// controller-runtime's defaults: 15 s lease, 10 s renew deadline, 2 s retry.
    pub fn new(client: Client, namespace: String, name: String, identity: String) -> Self {
        LeaderElection {
            client,
            namespace,
            name,
            identity,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Blocks until we hold the Lease.
    pub async fn acquire(&self) -> Result<()> {
        info!(lease = %self.name, namespace = %self.namespace, identity = %self.identity, "waiting for leadership");
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(lease = %self.name, "became leader");
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(self.retry_period).await;
        }
    }

    /// Renews until renewal fails for longer than the renew deadline; returns then (the
    /// caller must stop working: someone else may take over).
    pub async fn keep(&self) -> Error {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    return Error::Leadership(format!(
                        "leadership of lease {} was lost to another holder",
                        self.name
                    ));
                }
                Err(e) => warn!(error = %e, "could not renew leadership"),
            }
            if last_renewal.elapsed() > self.renew_deadline {
                return Error::Leadership(format!(
                    "could not renew lease {} within {}s",
                    self.name,
                    self.renew_deadline.as_secs()
                ));
            }
        }
    }

    /// Gives the Lease up on shutdown, so a successor need not wait for it to expire.
    pub async fn release(&self) {
        let api = Api::<Lease>::namespaced(self.client.clone(), &self.namespace);
        let patch = json!({"spec": {"holderIdentity": null, "leaseDurationSeconds": 1, "renewTime": MicroTime(Timestamp::now())}});
        if let Ok(Some(lease)) = api.get_opt(&self.name).await
            && lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref())
                == Some(self.identity.as_str())
        {
            let _ = api
                .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        }
    }

    /// One round of client-go's algorithm: true if we hold the Lease afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let api = Api::<Lease>::namespaced(self.client.clone(), &self.namespace);
        let now = Timestamp::now();
        let duration_secs = i32::try_from(self.lease_duration.as_secs()).unwrap_or(15);
        let Some(mut lease) = api
            .get_opt(&self.name)
            .await
            .map_err(kube_err("reading the leader election Lease"))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(kube_err("creating the leader election Lease")(e)),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(self.identity.as_str());
        if !ours && holder.is_some() {
            let expires =
                spec.renew_time
                    .as_ref()
                    .map(|t| {
                        t.0 + Duration::from_secs(
                            spec.lease_duration_seconds.unwrap_or(0).max(0) as u64
                        )
                    })
                    .unwrap_or(now);
            if expires > now {
                return Ok(false);
            }
        }
        if !ours {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(duration_secs);
        spec.renew_time = Some(MicroTime(now));
        // Replace carries the resourceVersion: a concurrent change makes this a conflict.
        match api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(kube_err("updating the leader election Lease")(e)),
        }
    }
}
