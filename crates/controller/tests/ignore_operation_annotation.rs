//! `--ignore-operation-annotation=true`: generation changes and Cluster changes trigger
//! reconciles; the operation annotation is not needed.

mod common;

use std::time::Duration;

use common::{default_config, env, shoot};
use kube::api::{Api, Patch, PatchParams, PostParams};
use sandbox_api::{Cluster, ContainerRuntime, LastOperationState};
use sandbox_controller::ControllerConfig;
use serde_json::json;

fn config() -> ControllerConfig {
    ControllerConfig {
        ignore_operation_annotation: true,
        ..default_config()
    }
}

fn succeeded_at_generation(cr: Option<&ContainerRuntime>, generation: i64) -> bool {
    cr.and_then(|c| c.status.as_ref()).is_some_and(|s| {
        s.observed_generation == Some(generation)
            && s.last_operation
                .as_ref()
                .is_some_and(|o| o.state == LastOperationState::Succeeded)
    })
}

#[tokio::test]
async fn creates_spec_changes_and_cluster_changes_trigger_without_annotation() {
    let cp = env(config);
    let _logs = cp.logs_on_panic();
    let s = shoot(cp, "ignore", json!({})).await;
    let cr: ContainerRuntime = serde_json::from_value(json!({
        "apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "ContainerRuntime",
        "metadata": {"name": "gvisor-pool-a"},
        "spec": {"type": "gvisor", "binaryPath": "/var/bin/containerruntimes",
                 "workerPool": {"name": "pool-a", "selector": {"matchLabels": {"worker.gardener.cloud/pool": "pool-a"}}}},
    }))
    .unwrap();
    s.runtimes()
        .create(&PostParams::default(), &cr)
        .await
        .unwrap();
    s.wait_for("gvisor-pool-a", "reconciled without annotation", |cr| {
        succeeded_at_generation(cr, 1)
    })
    .await;

    s.runtimes()
        .patch("gvisor-pool-a", &PatchParams::default(), &Patch::Merge(json!({"spec": {"providerConfig": {
            "apiVersion": "gvisor.runtime.extensions.config.gardener.cloud/v1alpha1", "kind": "GVisorConfiguration",
            "configFlags": {"net-raw": "true"}}}})))
        .await
        .unwrap();
    s.wait_for("gvisor-pool-a", "reconciled after the spec change", |cr| {
        succeeded_at_generation(cr, 2)
    })
    .await;
    assert!(
        s.mr_manifests("extension-runtime-gvisor-installation-pool-a")
            .await["configmap__kube-system__containerd-gvisor-pool-a.yaml"]
            .contains("net-raw = \"true\"")
    );

    let before = s
        .runtimes()
        .get("gvisor-pool-a")
        .await
        .unwrap()
        .status
        .unwrap()
        .last_operation
        .unwrap()
        .last_update_time;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    Api::<Cluster>::all(s.client.clone())
        .patch(
            &s.ns,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"shoot": {"spec": {"kubernetes": {"version": "1.35.0"}}}}}),
            ),
        )
        .await
        .unwrap();
    s.wait_for(
        "gvisor-pool-a",
        "reconciled after the Cluster change",
        |cr| {
            cr.and_then(|c| c.status.as_ref())
                .and_then(|s| s.last_operation.as_ref())
                .is_some_and(|o| o.last_update_time.0 > before.0)
        },
    )
    .await;
}
