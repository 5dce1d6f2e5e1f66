//! gardenlet, simulated: how it writes a shoot's Cluster and ContainerRuntimes, asks for
//! operations, deletes stale objects and waits for the extension; and, for the controller's
//! tests, what gardener-resource-manager does to ManagedResources (status, finalizer). The
//! controller tests, the demo, the benchmark and the binary tests all drive the controller
//! through this one module.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use sandbox_api::{
    Cluster, ClusterSpec, ContainerRuntime, ContainerRuntimeSpec, LastOperationState,
    ManagedResource, OPERATION_ANNOTATION, TIMESTAMP_ANNOTATION, WorkerPool,
};
use serde_json::{Value, json};

/// `spec.binaryPath` as gardenlet sets it.
pub const BINARY_PATH: &str = "/var/bin/containerruntimes";

/// The ContainerRuntime gardenlet creates for `pool` with gVisor: name `gvisor-<pool>`,
/// binaryPath, the pool's selector and the raw providerConfig; no annotations yet (see
/// [`request`]).
pub fn container_runtime(
    namespace: &str,
    pool: &str,
    provider_config: Option<Value>,
) -> ContainerRuntime {
    let mut cr = ContainerRuntime::new(
        &format!("gvisor-{pool}"),
        ContainerRuntimeSpec {
            type_: "gvisor".into(),
            class: None,
            provider_config,
            binary_path: BINARY_PATH.into(),
            worker_pool: WorkerPool::gardenlet(pool),
        },
    );
    cr.metadata.namespace = Some(namespace.to_string());
    cr
}

/// The ContainerRuntime gardenlet creates for `pool` and `runtime_type`: `<type>-<pool>`.
pub fn container_runtime_of(
    namespace: &str,
    runtime_type: &str,
    pool: &str,
    provider_config: Option<Value>,
) -> ContainerRuntime {
    let mut cr = container_runtime(namespace, pool, provider_config);
    cr.metadata.name = Some(format!("{runtime_type}-{pool}"));
    cr.spec.type_ = runtime_type.to_string();
    cr
}

/// Asks for `operation` the way gardenlet does (operation annotation and a new timestamp);
/// returns the timestamp to wait for.
pub fn request(cr: &mut ContainerRuntime, operation: &str) -> String {
    let ts = now_annotation();
    let annotations = cr.metadata.annotations.get_or_insert_with(Default::default);
    annotations.insert(OPERATION_ANNOTATION.to_string(), operation.to_string());
    annotations.insert(TIMESTAMP_ANNOTATION.to_string(), ts.clone());
    ts
}

/// The Cluster gardenlet writes for shoot namespace `ns`, embedding `shoot`, with a
/// CloudProfile and a Seed that carry only their names (tests that do not care about size).
pub fn cluster(ns: &str, shoot: Value) -> Cluster {
    cluster_with(
        ns,
        shoot,
        json!({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "CloudProfile", "metadata": {"name": "local"}}),
        json!({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Seed", "metadata": {"name": "local"}}),
    )
}

/// The Cluster of `ns` embedding `shoot`, `cloud_profile` and `seed` (see [`cloud_profile`]
/// and [`seed`] for objects of a real size).
pub fn cluster_with(ns: &str, shoot: Value, cloud_profile: Value, seed: Value) -> Cluster {
    Cluster::new(
        ns,
        ClusterSpec {
            cloud_profile,
            seed: Some(seed),
            shoot,
        },
    )
}

/// A CloudProfile of about `kib` KiB of JSON, shaped like a real provider's: machine types
/// (CPU, GPU, memory, storage, architecture), machine images with many versions (CRI,
/// architectures, classification, expiration), regions with zones, and provider data mapping
/// every image version to an image per region. gardenlet embeds the whole CloudProfile into
/// every Cluster; real ones reach hundreds of KiB.
pub fn cloud_profile(kib: usize) -> Value {
    let target = kib * 1024;
    let regions: Vec<Value> = (0..8)
        .map(|r| json!({"name": format!("region-{r}"), "zones": (0..3).map(|z| json!({"name": format!("region-{r}{}", (b'a' + z) as char)})).collect::<Vec<_>>()}))
        .collect();
    let mut machine_types = Vec::new();
    let mut versions = Vec::new();
    let mut provider_images = Vec::new();
    let profile = |machine_types: &Vec<Value>,
                   versions: &Vec<Value>,
                   provider_images: &Vec<Value>| {
        json!({
            "apiVersion": "core.gardener.cloud/v1beta1",
            "kind": "CloudProfile",
            "metadata": {"name": "bench", "labels": {"provider.extensions.gardener.cloud/bench": "true"}},
            "spec": {
                "type": "bench",
                "kubernetes": {"versions": (28..=36).map(|m| json!({"version": format!("1.{m}.4"), "classification": "supported"})).collect::<Vec<_>>()},
                "machineTypes": machine_types,
                "machineImages": [{"name": "gardenlinux", "updateStrategy": "major", "versions": versions}],
                "regions": regions,
                "volumeTypes": [{"name": "standard", "class": "standard", "usable": true}, {"name": "premium", "class": "premium", "usable": true}],
                "providerConfig": {
                    "apiVersion": "bench.provider.extensions.gardener.cloud/v1alpha1",
                    "kind": "CloudProfileConfig",
                    "machineImages": [{"name": "gardenlinux", "versions": provider_images}],
                },
            },
        })
    };
    // The size is counted as the arrays grow (each item's JSON and a comma), not by encoding
    // the whole profile again every time.
    let len = |v: &Value| serde_json::to_vec(v).map(|b| b.len()).unwrap_or(0);
    let mut size = len(&profile(&machine_types, &versions, &provider_images));
    let mut i = 0usize;
    loop {
        if size >= target {
            return profile(&machine_types, &versions, &provider_images);
        }
        // Grow by one machine type and one image version (with its per-region images) at a
        // time, as real profiles do.
        let arch = if i.is_multiple_of(3) {
            "arm64"
        } else {
            "amd64"
        };
        machine_types.push(json!({
            "name": format!("m{}.{}xlarge", i % 9, i),
            "cpu": format!("{}", 2 << (i % 6)),
            "gpu": format!("{}", i % 2),
            "memory": format!("{}Gi", 8 << (i % 6)),
            "storage": {"class": "standard", "type": "gp3", "size": "50Gi"},
            "usable": true,
            "architecture": arch,
        }));
        let version = format!("{}.{}.0", 1592 + i / 10, i % 10);
        versions.push(json!({
            "version": version,
            "cri": [{"name": "containerd"}],
            "architectures": ["amd64", "arm64"],
            "classification": if i.is_multiple_of(4) { "supported" } else { "deprecated" },
            "expirationDate": "2027-06-30T23:59:59Z",
            "kubeletVersionConstraint": ">= 1.28",
        }));
        provider_images.push(json!({
            "version": version,
            "regions": (0..8).map(|r| json!({"name": format!("region-{r}"), "id": format!("image-{:016x}", (i * 8 + r) as u64 * 0x9e37_79b9), "architecture": "amd64"})).collect::<Vec<_>>(),
        }));
        size += [&machine_types, &versions, &provider_images]
            .iter()
            .filter_map(|a| a.last())
            .map(|v| len(v) + 1)
            .sum::<usize>();
        i += 1;
    }
}

/// A Seed with the fields a real one has (provider, networks, DNS, ingress, settings,
/// taints, volume, backup), as gardenlet embeds it into every Cluster.
pub fn seed() -> Value {
    json!({
        "apiVersion": "core.gardener.cloud/v1beta1",
        "kind": "Seed",
        "metadata": {"name": "bench-seed", "labels": {"seed.gardener.cloud/gardenlet": "true"}},
        "spec": {
            "provider": {"type": "bench", "region": "region-0", "zones": ["region-0a", "region-0b", "region-0c"]},
            "networks": {"nodes": "10.250.0.0/16", "pods": "100.96.0.0/11", "services": "100.64.0.0/13",
                         "shootDefaults": {"pods": "100.96.0.0/11", "services": "100.64.0.0/13"}},
            "dns": {"provider": {"type": "aws-route53", "secretRef": {"name": "seed-dns", "namespace": "garden"}}},
            "ingress": {"domain": "ingress.bench-seed.example.com", "controller": {"kind": "nginx"}},
            "backup": {"provider": "bench", "region": "region-0", "credentialsRef": {"apiVersion": "v1", "kind": "Secret", "name": "backup", "namespace": "garden"}},
            "settings": {"excessCapacityReservation": {"enabled": true}, "scheduling": {"visible": true},
                         "verticalPodAutoscaler": {"enabled": true}, "dependencyWatchdog": {"weeder": {"enabled": true}, "prober": {"enabled": true}},
                         "topologyAwareRouting": {"enabled": true}},
            "taints": [{"key": "seed.gardener.cloud/protected"}],
            "volume": {"minimumSize": "20Gi", "providers": [{"purpose": "etcd-main", "name": "gp3"}]},
        },
        "status": {"kubernetesVersion": "v1.36.4", "gardener": {"version": "v1.150.0"},
                   "allocatable": {"shoots": "250"}, "clusterIdentity": "bench-seed-identity"},
    })
}

/// Creates the Cluster of shoot namespace `ns`.
pub async fn create_cluster(client: &Client, ns: &str, shoot: Value) {
    Api::<Cluster>::all(client.clone())
        .create(&PostParams::default(), &cluster(ns, shoot))
        .await
        .unwrap();
}

/// gardenlet's readiness check for a request stamped `timestamp`: no lastError, the current
/// generation observed, no operation annotation left, Succeeded, and not before the request
/// (truncated to seconds).
pub fn is_ready(cr: &ContainerRuntime, timestamp: &str) -> bool {
    let Ok(ts) = timestamp.parse::<Timestamp>() else {
        return false;
    };
    let Ok(truncated) = Timestamp::from_second(ts.as_second()) else {
        return false;
    };
    let Some(status) = &cr.status else {
        return false;
    };
    let Some(op) = &status.last_operation else {
        return false;
    };
    let annotated = cr
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(OPERATION_ANNOTATION));
    status.last_error.is_none()
        && status.observed_generation == cr.metadata.generation
        && !annotated
        && op.state == LastOperationState::Succeeded
        && op.last_update_time.0 >= truncated
}

/// The conditions gardener-resource-manager writes on a ManagedResource it applied: applied
/// and healthy, and progressing with `progressing` as the message (a DaemonSet whose pods are
/// not all available yet) or rolled out.
pub fn grm_conditions(progressing: Option<&str>) -> Value {
    let now = now_annotation();
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastTransitionTime": now, "lastUpdateTime": now})
    };
    json!([
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
    ])
}

/// Whether a migration is done as gardenlet waits for it: Migrate Succeeded and no finalizer
/// left (the annotation may still be there for a moment).
pub fn is_migrated(cr: &ContainerRuntime) -> bool {
    cr.metadata.finalizers.as_ref().is_none_or(|f| f.is_empty())
        && cr
            .status
            .as_ref()
            .and_then(|s| s.last_operation.as_ref())
            .is_some_and(|o| {
                o.type_ == sandbox_api::LastOperationType::Migrate
                    && o.state == LastOperationState::Succeeded
            })
}

/// A shoot's seed namespace as gardenlet (and gardener-resource-manager) treat it.
pub struct Shoot {
    pub client: Client,
    pub ns: String,
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
        let mut cr = container_runtime(&self.ns, pool, provider_config);
        cr.spec.class = class.map(String::from);
        let ts = request(&mut cr, "reconcile");
        self.runtimes()
            .create(&PostParams::default(), &cr)
            .await
            .unwrap();
        ts
    }

    /// Creates `<runtime_type>-<pool>` as gardenlet does; returns the timestamp annotation.
    pub async fn gardenlet_create_runtime(
        &self,
        runtime_type: &str,
        pool: &str,
        provider_config: Option<Value>,
    ) -> String {
        let mut cr = container_runtime_of(&self.ns, runtime_type, pool, provider_config);
        let ts = request(&mut cr, "reconcile");
        self.runtimes()
            .create(&PostParams::default(), &cr)
            .await
            .unwrap();
        ts
    }

    /// Sets an operation annotation and a new timestamp, as gardenlet does.
    pub async fn annotate(&self, name: &str, operation: &str) -> String {
        self.annotate_at(name, operation, now_annotation()).await
    }

    /// [`Self::annotate`] with gardenlet's clock reading `ts` (a gardenlet whose clock runs
    /// ahead of the controller's).
    pub async fn annotate_at(&self, name: &str, operation: &str, ts: String) -> String {
        self.runtimes()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {
                    OPERATION_ANNOTATION: operation, TIMESTAMP_ANNOTATION: ts}}})),
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
                    "confirmation.gardener.cloud/deletion": "true", TIMESTAMP_ANNOTATION: now_annotation()}}})),
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
        crate::eventually_or(30, &format!("{name}: {what}"), async || {
            let cr = self.runtimes().get_opt(name).await.unwrap();
            if check(cr.as_ref()) {
                Ok(cr)
            } else {
                Err(format!("{cr:#?}"))
            }
        })
        .await
    }

    /// Waits the way gardenlet does until the extension reports success for `timestamp`.
    pub async fn wait_ready(&self, name: &str, timestamp: &str) -> ContainerRuntime {
        self.wait_for(name, "gardenlet's readiness check", |cr| {
            cr.is_some_and(|cr| is_ready(cr, timestamp))
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

    /// gardener-resource-manager's part in the health check's access when the "shoot" is the
    /// same API server `cp` (no gardener-resource-manager runs): the node-reader RBAC from
    /// `runtime`'s shared ManagedResource applied, the ServiceAccount created, and its token
    /// (TokenRequest API) and the CA written into the shoot-access Secret's kubeconfig, as the
    /// token requestor writes them. Returns the token's kubeconfig. (The e2e test's real
    /// gardener-resource-manager does all this itself.)
    pub async fn issue_node_reader_token(
        &self,
        cp: &crate::ControlPlane,
        runtime: &str,
    ) -> kube::config::Kubeconfig {
        use k8s_openapi::api::core::v1::ServiceAccount;
        use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
        let created = |result: Result<(), kube::Error>| match result {
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            other => other.unwrap(),
        };
        let shared = format!("extension-runtime-{runtime}");
        let service_account = format!("{shared}-health");
        let pp = PostParams::default();
        for (key, manifest) in self.mr_manifests(&shared).await {
            if !key.contains("health") {
                continue;
            }
            if key.starts_with("clusterrole____") {
                let role: ClusterRole = serde_saphyr::from_str(&manifest).unwrap();
                created(
                    Api::all(self.client.clone())
                        .create(&pp, &role)
                        .await
                        .map(|_| ()),
                );
            } else if key.starts_with("clusterrolebinding____") {
                let binding: ClusterRoleBinding = serde_saphyr::from_str(&manifest).unwrap();
                created(
                    Api::all(self.client.clone())
                        .create(&pp, &binding)
                        .await
                        .map(|_| ()),
                );
            }
        }
        let sa: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": service_account}})).unwrap();
        created(
            Api::<ServiceAccount>::namespaced(self.client.clone(), "kube-system")
                .create(&pp, &sa)
                .await
                .map(|_| ()),
        );
        let issued = cp
            .service_account_kubeconfig("kube-system", &service_account, None)
            .await
            .unwrap();
        let rendered = serde_json::to_value(&issued).unwrap();
        self.fill_shoot_access(
            runtime,
            rendered["users"][0]["user"].clone(),
            rendered["clusters"][0]["cluster"]["certificate-authority-data"].clone(),
        )
        .await;
        issued
    }

    /// Writes `user` and the CA data `ca` into `runtime`'s shoot-access Secret's kubeconfig,
    /// where gardener-resource-manager's token requestor writes the token and the CA.
    pub async fn fill_shoot_access(&self, runtime: &str, user: Value, ca: Value) {
        let name = format!("shoot-access-extension-runtime-{runtime}");
        let secret = self.secrets().get(&name).await.unwrap();
        let mut kubeconfig: Value =
            serde_saphyr::from_slice(&secret.data.unwrap()["kubeconfig"].0).unwrap();
        kubeconfig["users"][0]["user"] = user;
        kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"] = ca;
        self.secrets()
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"stringData": {"kubeconfig": kubeconfig.to_string()}})),
            )
            .await
            .unwrap();
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
        let conditions = grm_conditions(progressing);
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
