//! Gardener's extension heartbeat: a Lease `gardener-extension-heartbeat` renewed every
//! interval, which Gardener's extension health checks read.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use tracing::warn;

/// Name of Gardener's extension heartbeat Lease.
pub const HEARTBEAT_LEASE: &str = "gardener-extension-heartbeat";

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
