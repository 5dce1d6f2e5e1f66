//! The OperatingSystemConfig webhook: puts Firecracker's devmapper pool script and unit
//! ([`sandbox_runtime::kata::devmapper`]) into the reconcile OSC of each pool whose Kata
//! ContainerRuntime offers `fc`, and leaves every other OSC alone.
//!
//! The pool comes from the OSC's `worker.gardener.cloud/pool` label, its runtimes from the
//! shoot in the Cluster named like the OSC's namespace (the OSC carries no runtime label).
//! Anything we cannot decide on (no Cluster yet, an undecodable object) is admitted unchanged
//! and logged: the node agent then leaves `kata-fc` unlabelled with `NoDevmapperPool`, and
//! the next OSC write (gardenlet rewrites OSCs on every shoot reconcile) tries again.

use kube::Api;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use sandbox_api::{Cluster, Shoot};
use sandbox_runtime::kata::devmapper::{self, Skip};
use serde_json::Value;
use tracing::{info, warn};

/// The webhook's path on our server.
pub const PATH: &str = "/webhooks/kata-devmapper";
/// The webhook's name in the MutatingWebhookConfiguration.
pub const NAME: &str = "kata-devmapper.runtime-sandbox.extensions.gardener.cloud";

/// What the handler needs from the cluster: the shoot of a namespace's Cluster.
pub trait Shoots: Send + Sync {
    /// The shoot in the Cluster named `namespace`, or why there is none.
    fn shoot(&self, namespace: &str) -> impl Future<Output = Result<Shoot, String>> + Send;
}

/// Clusters read from the API server.
#[derive(Clone)]
pub struct ClusterApi(pub Api<Cluster>);

impl Shoots for ClusterApi {
    async fn shoot(&self, namespace: &str) -> Result<Shoot, String> {
        let cluster = self
            .0
            .get_opt(namespace)
            .await
            .map_err(|e| format!("reading Cluster {namespace}: {e}"))?
            .ok_or_else(|| format!("no Cluster {namespace}"))?;
        cluster
            .shoot()
            .map_err(|e| format!("Cluster {namespace} has no readable shoot: {e}"))
    }
}

/// Answers one AdmissionReview (as JSON): the review back with the response.
pub async fn review(body: Value, shoots: &impl Shoots) -> Value {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_value(body) {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "undecodable AdmissionReview");
            return to_json(
                AdmissionResponse::invalid(format!("undecodable AdmissionReview: {e}"))
                    .into_review(),
            );
        }
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => {
            return to_json(
                AdmissionResponse::invalid(format!("AdmissionReview without request: {e}"))
                    .into_review(),
            );
        }
    };
    to_json(respond(&request, shoots).await.into_review())
}

fn to_json(review: AdmissionReview<DynamicObject>) -> Value {
    serde_json::to_value(review).unwrap_or(Value::Null)
}

async fn respond(
    request: &AdmissionRequest<DynamicObject>,
    shoots: &impl Shoots,
) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let Some(object) = request.object.as_ref() else {
        return response;
    };
    let osc = match serde_json::to_value(object) {
        Ok(v) => v,
        Err(e) => {
            warn!(error = %e, "OSC not representable as JSON; admitted unchanged");
            return response;
        }
    };
    let namespace = request.namespace.as_deref().unwrap_or_default();
    let name = request.name.as_str();
    // Cheap checks first: most OSCs never need the Cluster.
    if osc["spec"]["purpose"].as_str() != Some("reconcile")
        || osc["metadata"]["labels"][devmapper::POOL_LABEL]
            .as_str()
            .is_none()
    {
        return response;
    }
    let shoot = match shoots.shoot(namespace).await {
        Ok(s) => s,
        Err(e) => {
            warn!(%namespace, osc = name, error = %e, "OSC admitted unchanged: the pool's runtimes are unknown");
            return response;
        }
    };
    match devmapper::mutation(&osc, &shoot) {
        Ok(ops) => {
            let patch: json_patch::Patch = match serde_json::from_value(Value::Array(ops)) {
                Ok(p) => p,
                Err(e) => {
                    warn!(error = %e, "internal: patch not representable; OSC admitted unchanged");
                    return response;
                }
            };
            info!(%namespace, osc = name, "adding Firecracker's devmapper pool unit");
            match response.clone().with_patch(patch) {
                Ok(patched) => patched,
                Err(e) => {
                    warn!(error = %e, "internal: patch not serialisable; OSC admitted unchanged");
                    response
                }
            }
        }
        Err(Skip::UpToDate | Skip::NoFirecracker | Skip::NotReconcile | Skip::NoPool) => response,
    }
}
