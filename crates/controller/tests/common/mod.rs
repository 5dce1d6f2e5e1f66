//! Test harness: one control plane and one in-process controller per test binary; each test
//! gets its own namespace with a Cluster, and drives objects the way gardenlet does.

#![allow(dead_code)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use sandbox_api::{
    Cluster, ClusterSpec, ContainerRuntime, ContainerRuntimeSpec, LastOperationState,
    ManagedResource, WorkerPool,
};
use sandbox_controller::{ControllerConfig, contract};
use sandbox_testenv::ControlPlane;
use serde_json::{Value, json};

pub const IMAGE: &str = "registry.local/node-agent:test";

/// The shared control plane with a controller running on it (started once).
pub fn env(config: fn() -> ControllerConfig) -> &'static ControlPlane {
    static STARTED: OnceLock<()> = OnceLock::new();
    let cp = sandbox_testenv::shared();
    STARTED.get_or_init(|| {
        let kubeconfig = cp.kubeconfig().clone();
        let config = config();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let config_k =
                    kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                        .await
                        .unwrap();
                let client = Client::try_from(config_k).unwrap();
                ready_tx.send(()).unwrap();
                sandbox_controller::run(
                    client,
                    config,
                    Arc::new(sandbox_controller::metrics::NoObserver),
                    Default::default(),
                    std::future::pending(),
                )
                .await;
            });
        });
        ready_rx.recv().unwrap();
    });
    cp
}

/// The controller configuration most tests use: short timeouts so failures show fast.
pub fn default_config() -> ControllerConfig {
    ControllerConfig {
        image: IMAGE.into(),
        delete_timeout: Duration::from_secs(4),
        wait_poll: Duration::from_millis(250),
        base_backoff: Duration::from_millis(500),
        max_backoff: Duration::from_secs(4),
        ..ControllerConfig::default()
    }
}

pub struct Shoot {
    pub client: Client,
    pub ns: String,
}

/// A namespace with a Cluster whose Shoot has the given pools with gVisor.
pub async fn shoot(cp: &ControlPlane, prefix: &str, shoot_patch: Value) -> Shoot {
    let client = cp.client().await.unwrap();
    let ns = cp
        .namespace(&client, &format!("shoot--{prefix}"))
        .await
        .unwrap();
    let mut shoot = json!({
        "apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
        "metadata": {"name": prefix, "namespace": "garden-test"},
        "spec": {"kubernetes": {"version": "1.34.2"}, "provider": {"type": "local", "workers": [
            {"name": "pool-a", "cri": {"name": "containerd", "containerRuntimes": [{"type": "gvisor"}]}},
            {"name": "pool-b", "cri": {"name": "containerd", "containerRuntimes": [{"type": "gvisor"}]}},
        ]}},
        "status": {"hibernated": false, "lastOperation": {"type": "Reconcile", "state": "Succeeded"}},
    });
    merge(&mut shoot, shoot_patch);
    create_cluster(&client, &ns, shoot).await;
    Shoot { client, ns }
}

pub async fn create_cluster(client: &Client, ns: &str, shoot: Value) {
    let cluster = Cluster::new(
        ns,
        ClusterSpec {
            cloud_profile: json!({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "CloudProfile", "metadata": {"name": "local"}}),
            seed: Some(
                json!({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Seed", "metadata": {"name": "local"}}),
            ),
            shoot,
        },
    );
    Api::<Cluster>::all(client.clone())
        .create(&PostParams::default(), &cluster)
        .await
        .unwrap();
}

fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

pub fn now_annotation() -> String {
    Timestamp::now().to_string()
}

impl Shoot {
    pub fn runtimes(&self) -> Api<ContainerRuntime> {
        Api::namespaced(self.client.clone(), &self.ns)
    }
    pub fn managed_resources(&self) -> Api<ManagedResource> {
        Api::namespaced(self.client.clone(), &self.ns)
    }
    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Creates `gvisor-<pool>` as gardenlet does; returns the timestamp annotation.
    pub async fn gardenlet_create(&self, pool: &str, provider_config: Option<Value>) -> String {
        self.gardenlet_create_with_class(pool, provider_config, None)
            .await
    }

    pub async fn gardenlet_create_with_class(
        &self,
        pool: &str,
        provider_config: Option<Value>,
        class: Option<&str>,
    ) -> String {
        let ts = now_annotation();
        let mut cr = ContainerRuntime::new(
            &format!("gvisor-{pool}"),
            ContainerRuntimeSpec {
                type_: "gvisor".into(),
                class: class.map(String::from),
                provider_config,
                binary_path: "/var/bin/containerruntimes".into(),
                worker_pool: WorkerPool::gardenlet(pool),
            },
        );
        cr.metadata.annotations = Some(
            [
                (
                    contract::OPERATION_ANNOTATION.to_string(),
                    "reconcile".to_string(),
                ),
                (contract::TIMESTAMP_ANNOTATION.to_string(), ts.clone()),
            ]
            .into(),
        );
        self.runtimes()
            .create(&PostParams::default(), &cr)
            .await
            .unwrap();
        ts
    }

    /// Sets an operation annotation and a new timestamp, as gardenlet does.
    pub async fn annotate(&self, name: &str, operation: &str) -> String {
        let ts = now_annotation();
        self.runtimes()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {
                    contract::OPERATION_ANNOTATION: operation, contract::TIMESTAMP_ANNOTATION: ts}}})),
            )
            .await
            .unwrap();
        ts
    }

    /// Gardenlet's deletion of a stale ContainerRuntime.
    pub async fn gardenlet_delete(&self, name: &str) {
        self.runtimes()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {
                    "confirmation.gardener.cloud/deletion": "true", contract::TIMESTAMP_ANNOTATION: now_annotation()}}})),
            )
            .await
            .unwrap();
        self.runtimes()
            .delete(name, &Default::default())
            .await
            .unwrap();
    }

    /// Waits until `check` holds for the object (or for its absence, `None`).
    pub async fn wait_for(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(Option<&ContainerRuntime>) -> bool,
    ) -> Option<ContainerRuntime> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let cr = self.runtimes().get_opt(name).await.unwrap();
            if check(cr.as_ref()) {
                return cr;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {name}: {what}; last seen: {cr:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits the way gardenlet does until the extension reports success for `timestamp`.
    pub async fn wait_ready(&self, name: &str, timestamp: &str) -> ContainerRuntime {
        let ts: Timestamp = timestamp.parse().unwrap();
        let truncated = Timestamp::from_second(ts.as_second()).unwrap();
        self.wait_for(name, "gardenlet's readiness check", |cr| {
            let Some(cr) = cr else { return false };
            let Some(status) = &cr.status else {
                return false;
            };
            let Some(op) = &status.last_operation else {
                return false;
            };
            status.last_error.is_none()
                && status.observed_generation == cr.metadata.generation
                && contract::operation_annotation(cr).is_none()
                && op.state == LastOperationState::Succeeded
                && op.last_update_time.0 >= truncated
        })
        .await
        .unwrap()
    }

    pub async fn mr_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .managed_resources()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|m| m.metadata.deletion_timestamp.is_none())
            .map(|m| m.metadata.name.unwrap())
            .collect();
        names.sort();
        names
    }

    pub async fn secret_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .secrets()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|s| s.metadata.name.unwrap())
            .collect();
        names.sort();
        names
    }

    /// The manifests in a ManagedResource's (only) secret.
    pub async fn mr_manifests(&self, mr: &str) -> std::collections::BTreeMap<String, String> {
        let mr = self.managed_resources().get(mr).await.unwrap();
        let secret = self
            .secrets()
            .get(&mr.spec.secret_refs[0].name)
            .await
            .unwrap();
        secret
            .data
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
            .collect()
    }

    /// Replaces the shoot's worker pools in the Cluster, as gardenlet does before it deletes
    /// stale ContainerRuntimes.
    pub async fn set_workers(&self, workers: Value) {
        Api::<Cluster>::all(self.client.clone())
            .patch(
                &self.ns,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"spec": {"shoot": {"spec": {"provider": {"workers": workers}}}}}),
                ),
            )
            .await
            .unwrap();
    }

    /// Simulates gardener-resource-manager's status on a ManagedResource: applied and healthy
    /// for its current generation, and progressing with `progressing` as the message (a
    /// DaemonSet whose pods are not all available yet) or done.
    pub async fn grm_status(&self, mr: &str, progressing: Option<&str>) {
        let generation = self
            .managed_resources()
            .get(mr)
            .await
            .unwrap()
            .metadata
            .generation;
        let now = now_annotation();
        let condition = |type_: &str, status: &str, reason: &str, message: &str| {
            json!({"type": type_, "status": status, "reason": reason, "message": message,
                   "lastTransitionTime": now, "lastUpdateTime": now})
        };
        let conditions = json!([
            condition(
                "ResourcesApplied",
                "True",
                "ApplySucceeded",
                "All resources are applied."
            ),
            condition(
                "ResourcesHealthy",
                "True",
                "ResourcesHealthy",
                "All resources are healthy."
            ),
            match progressing {
                Some(message) => condition(
                    "ResourcesProgressing",
                    "True",
                    "ResourcesProgressing",
                    message
                ),
                None => condition(
                    "ResourcesProgressing",
                    "False",
                    "ResourcesRolledOut",
                    "All resources are rolled out."
                ),
            },
        ]);
        self.managed_resources()
            .patch_status(
                mr,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"status": {"observedGeneration": generation, "conditions": conditions}}),
                ),
            )
            .await
            .unwrap();
    }

    /// Simulates gardener-resource-manager's finalizer on a ManagedResource.
    pub async fn hold_mr(&self, mr: &str, hold: bool) {
        let finalizers = if hold {
            json!(["resources.gardener.cloud/gardener-resource-manager"])
        } else {
            Value::Null
        };
        self.managed_resources()
            .patch(
                mr,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": finalizers}})),
            )
            .await
            .unwrap();
    }
}
