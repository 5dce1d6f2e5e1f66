//! The control plane serves Gardener's real CRDs and behaves like a real API server:
//! objects round-trip, `/status` is a subresource, watches see changes, and fields the
//! schema does not define are pruned.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use sandbox_api::{
    Cluster, ClusterSpec, ContainerRuntime, ContainerRuntimeSpec, ExtensionStatus, LastOperation,
    LastOperationState, LastOperationType, WorkerPool,
};
use serde_json::json;

fn container_runtime(name: &str, pool: &str) -> ContainerRuntime {
    ContainerRuntime::new(
        name,
        ContainerRuntimeSpec {
            type_: "gvisor".into(),
            class: None,
            provider_config: Some(json!({
                "apiVersion": "gvisor.runtime.extensions.config.gardener.cloud/v1alpha1",
                "kind": "GVisorConfiguration",
                "configFlags": {"net-raw": "true"},
            })),
            binary_path: "/var/bin/containerruntimes".into(),
            worker_pool: WorkerPool::gardenlet(pool),
        },
    )
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

#[tokio::test]
async fn gardener_crds_are_installed_and_established() {
    let cp = sandbox_testenv::shared();
    let _logs = cp.logs_on_panic();
    let crds = cp.crds();
    for name in [
        "containerruntimes.extensions.gardener.cloud",
        "clusters.extensions.gardener.cloud",
        "operatingsystemconfigs.extensions.gardener.cloud",
        "extensions.extensions.gardener.cloud",
        "managedresources.resources.gardener.cloud",
    ] {
        assert!(
            crds.iter().any(|c| c == name),
            "{name} missing from {crds:?}"
        );
    }
    let client = cp.client().await.unwrap();
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
}

#[tokio::test]
async fn container_runtime_and_cluster_round_trip() {
    let cp = sandbox_testenv::shared();
    let _logs = cp.logs_on_panic();
    let client = cp.client().await.unwrap();
    let ns = cp.namespace(&client, "roundtrip").await.unwrap();

    let api = Api::<ContainerRuntime>::namespaced(client.clone(), &ns);
    let want = container_runtime("gvisor-pool-a", "pool-a");
    api.create(&PostParams::default(), &want).await.unwrap();
    let got = api.get("gvisor-pool-a").await.unwrap();
    assert_eq!(got.spec, want.spec);
    assert_eq!(got.metadata.generation, Some(1));
    assert!(got.status.is_none());

    let clusters = Api::<Cluster>::all(client.clone());
    let cluster = Cluster::new(
        &ns,
        ClusterSpec {
            cloud_profile: json!({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "CloudProfile",
                                  "metadata": {"name": "local"}, "spec": {"type": "local"}}),
            seed: Some(
                json!({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Seed",
                              "metadata": {"name": "local"}}),
            ),
            shoot: sandbox_testenv::ShootBuilder::new("demo")
                .namespace("garden-dev")
                .pool("pool-a", &["gvisor"])
                .build(),
        },
    );
    clusters
        .create(&PostParams::default(), &cluster)
        .await
        .unwrap();
    let got = clusters.get(&ns).await.unwrap();
    assert_eq!(
        got.spec, cluster.spec,
        "embedded objects are preserved unpruned"
    );
    clusters.delete(&ns, &Default::default()).await.unwrap();
}

#[tokio::test]
async fn status_subresource_patch_is_seen_by_a_watch() {
    let cp = sandbox_testenv::shared();
    let _logs = cp.logs_on_panic();
    let client = cp.client().await.unwrap();
    let ns = cp.namespace(&client, "status").await.unwrap();
    let api = Api::<ContainerRuntime>::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &container_runtime("gvisor-w", "w"))
        .await
        .unwrap();

    // Start watching before the change, then wait for the object with the new status.
    let mut stream = watcher(api.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let first = stream.try_next().await.unwrap().expect("initial object");
    assert!(first.status.is_none());

    let status = ExtensionStatus {
        last_operation: Some(LastOperation {
            description: "Successfully reconciled ContainerRuntime".into(),
            last_update_time: now(),
            progress: 100,
            state: LastOperationState::Succeeded,
            type_: LastOperationType::Reconcile,
        }),
        observed_generation: Some(1),
        ..ExtensionStatus::default()
    };
    let patched = api
        .patch_status(
            "gvisor-w",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.status.as_ref().unwrap().observed_generation,
        Some(1)
    );
    assert_eq!(
        patched.metadata.generation,
        Some(1),
        "status writes do not bump the generation"
    );

    // A spec patch through /status is ignored by the server.
    let ignored = api
        .patch_status(
            "gvisor-w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"binaryPath": "/elsewhere"}})),
        )
        .await
        .unwrap();
    assert_eq!(ignored.spec.binary_path, "/var/bin/containerruntimes");

    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(obj) = stream.try_next().await.unwrap() {
            if let Some(op) = obj.status.as_ref().and_then(|s| s.last_operation.as_ref()) {
                return op.clone();
            }
        }
        panic!("watch ended")
    })
    .await
    .expect("the watch saw the status change within 20s");
    assert_eq!(seen.state, LastOperationState::Succeeded);
    assert_eq!(seen.progress, 100);
}

#[tokio::test]
async fn unknown_status_fields_are_pruned_and_required_ones_enforced() {
    let cp = sandbox_testenv::shared();
    let _logs = cp.logs_on_panic();
    let client = cp.client().await.unwrap();
    let ns = cp.namespace(&client, "prune").await.unwrap();
    let api = Api::<ContainerRuntime>::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &container_runtime("gvisor-p", "p"))
        .await
        .unwrap();

    let gvk = GroupVersionKind::gvk("extensions.gardener.cloud", "v1alpha1", "ContainerRuntime");
    let raw =
        Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &ApiResource::from_gvk(&gvk));
    let ts = "2026-01-02T03:04:05Z";
    raw.patch_status(
        "gvisor-p",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "notInSchema": "gone",
            "lastOperation": {"description": "d", "lastUpdateTime": ts, "progress": 0,
                              "state": "Processing", "type": "Reconcile", "extra": 1},
            "providerStatus": {"anything": {"goes": true}},
        }})),
    )
    .await
    .unwrap();
    let stored = raw.get("gvisor-p").await.unwrap();
    let status = &stored.data["status"];
    assert!(
        status.get("notInSchema").is_none(),
        "undefined status field survived: {status}"
    );
    assert!(
        status["lastOperation"].get("extra").is_none(),
        "undefined nested field survived: {status}"
    );
    assert_eq!(status["lastOperation"]["progress"], 0, "progress 0 is kept");
    assert_eq!(
        status["providerStatus"]["anything"]["goes"], true,
        "providerStatus preserves unknown fields"
    );

    // lastOperation without progress violates the schema: the server refuses it.
    let err = raw
        .patch_status(
            "gvisor-p",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"lastOperation": {"progress": null}}})),
        )
        .await
        .expect_err("progress is required");
    assert!(
        err.to_string().contains("progress"),
        "unexpected error: {err}"
    );

    // Our typed status always serialises the required fields, so it reads back losslessly.
    let typed = api.get_status("gvisor-p").await.unwrap();
    let op = typed.status.unwrap().last_operation.unwrap();
    assert_eq!(
        (op.progress, op.state, op.type_),
        (
            0,
            LastOperationState::Processing,
            LastOperationType::Reconcile
        )
    );
}
