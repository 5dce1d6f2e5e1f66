//! Every rule of the Gardener extension contract, driven as gardenlet drives it, against a
//! real kube-apiserver with Gardener's CRDs and the controller running in-process.

mod common;

use std::time::Duration;

use common::{IMAGE, default_config, env, shoot};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ListParams, Patch, PatchParams};
use sandbox_api::{LastOperationState, LastOperationType};
use sandbox_controller::contract::{FINALIZER, OPERATION_ANNOTATION};
use sandbox_testenv::eventually_or;
use serde_json::json;

const SHARED_MR: &str = "extension-runtime-gvisor";
fn pool_mr(pool: &str) -> String {
    format!("extension-runtime-gvisor-installation-{pool}")
}

fn gvisor_config(flags: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "gvisor.runtime.extensions.config.gardener.cloud/v1alpha1", "kind": "GVisorConfiguration", "configFlags": flags})
}

#[tokio::test]
async fn create_reconciles_to_succeeded_with_finalizer_and_managed_resources() {
    let cp = env(default_config);
    let _logs = cp.logs_on_panic();
    let s = shoot(cp, "create", json!({})).await;
    let ts = s
        .gardenlet_create("pool-a", Some(gvisor_config(json!({"net-raw": "true"}))))
        .await;
    let cr = s.wait_ready("gvisor-pool-a", &ts).await;

    assert!(
        cr.metadata
            .finalizers
            .unwrap()
            .contains(&FINALIZER.to_string())
    );
    let status = cr.status.unwrap();
    let op = status.last_operation.unwrap();
    assert_eq!(
        (op.type_, op.state, op.progress),
        (
            LastOperationType::Create,
            LastOperationState::Succeeded,
            100
        )
    );
    assert_eq!(op.description, "Successfully reconciled ContainerRuntime");
    assert_eq!(status.observed_generation, Some(1));

    assert_eq!(
        s.mr_names().await,
        [SHARED_MR.to_string(), pool_mr("pool-a")]
    );
    for name in [SHARED_MR.to_string(), pool_mr("pool-a")] {
        let mr = s.managed_resources().get(&name).await.unwrap();
        assert_eq!(
            mr.metadata.labels.as_ref().unwrap()["origin"],
            "gardener-extension-runtime-gvisor"
        );
        assert_eq!(mr.spec.class, None);
        assert_eq!(mr.spec.keep_objects, Some(false));
        assert_eq!(
            mr.spec.inject_labels.as_ref().unwrap()["shoot.gardener.cloud/no-cleanup"],
            "true"
        );
        let secret_name = &mr.spec.secret_refs[0].name;
        assert!(
            secret_name.starts_with(&format!("managedresource-{name}-")),
            "{secret_name}"
        );
        let annotations = mr.metadata.annotations.unwrap();
        assert_eq!(
            annotations.values().filter(|v| *v == secret_name).count(),
            1
        );
        assert!(
            annotations
                .keys()
                .any(|k| k.starts_with("reference.resources.gardener.cloud/secret-"))
        );
        let secret = s.secrets().get(secret_name).await.unwrap();
        assert_eq!(secret.immutable, Some(true));
        assert_eq!(
            secret.metadata.labels.unwrap()["resources.gardener.cloud/garbage-collectable-reference"],
            "true"
        );
    }
    let shared = s.mr_manifests(SHARED_MR).await;
    assert!(shared["runtimeclass____gvisor.yaml"].contains("handler: runsc"));
    assert!(shared["serviceaccount__kube-system__gvisor.yaml"].contains("name: gvisor"));
    let pool = s.mr_manifests(&pool_mr("pool-a")).await;
    assert!(
        pool["configmap__kube-system__containerd-gvisor-pool-a.yaml"]
            .contains("net-raw = \"true\"")
    );
    let ds = &pool["daemonset__kube-system__containerd-gvisor-pool-a.yaml"];
    assert!(
        ds.contains(IMAGE) && ds.contains("worker.gardener.cloud/pool: pool-a"),
        "{ds}"
    );
}

#[tokio::test]
async fn two_pools_share_the_runtime_class_and_the_last_deletion_removes_everything() {
    let cp = env(default_config);
    let _logs = cp.logs_on_panic();
    let s = shoot(cp, "pools", json!({})).await;
    let ts_a = s.gardenlet_create("pool-a", None).await;
    let ts_b = s.gardenlet_create("pool-b", None).await;
    s.wait_ready("gvisor-pool-a", &ts_a).await;
    s.wait_ready("gvisor-pool-b", &ts_b).await;
    assert_eq!(
        s.mr_names().await,
        [SHARED_MR.to_string(), pool_mr("pool-a"), pool_mr("pool-b")]
    );

    s.gardenlet_delete("gvisor-pool-a").await;
    s.wait_for("gvisor-pool-a", "gone", |cr| cr.is_none()).await;
    assert_eq!(
        s.mr_names().await,
        [SHARED_MR.to_string(), pool_mr("pool-b")],
        "pool-b still needs the RuntimeClass"
    );

    s.gardenlet_delete("gvisor-pool-b").await;
    s.wait_for("gvisor-pool-b", "gone", |cr| cr.is_none()).await;
    assert!(s.mr_names().await.is_empty());
    assert!(
        s.secret_names()
            .await
            .iter()
            .all(|n| !n.starts_with("managedresource-")),
        "{:?}",
        s.secret_names().await
    );
}

#[tokio::test]
async fn invalid_provider_config_is_an_error_with_code_and_fixing_it_recovers() {
    let cp = env(default_config);
    let _logs = cp.logs_on_panic();
    let s = shoot(cp, "invalid", json!({})).await;
    s.gardenlet_create("pool-a", Some(gvisor_config(json!({"platform": "ptrace"}))))
        .await;
    let cr = s
        .wait_for("gvisor-pool-a", "Error status", |cr| {
            cr.and_then(|c| c.status.as_ref())
                .and_then(|s| s.last_error.as_ref())
                .is_some()
        })
        .await
        .unwrap();
    let status = cr.status.unwrap();
    let error = status.last_error.unwrap();
    assert_eq!(error.codes, ["ERR_CONFIGURATION_PROBLEM"]);
    assert!(
        error
            .description
            .starts_with("Error reconciling ContainerRuntime: "),
        "{}",
        error.description
    );
    assert!(
        error
            .description
            .contains("providerConfig.configFlags.platform")
            && error.description.contains("systrap, kvm")
    );
    let op = status.last_operation.unwrap();
    assert_eq!((op.state, op.progress), (LastOperationState::Error, 50));
    assert_eq!(op.description, error.description);
    assert!(
        s.mr_names().await.iter().all(|n| *n != pool_mr("pool-a")),
        "nothing rendered from a bad config"
    );

    // The owner fixes the shoot; gardenlet patches the spec and asks for a reconcile.
    s.runtimes()
        .patch(
            "gvisor-pool-a",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"providerConfig": gvisor_config(json!({"platform": "kvm"}))}}),
            ),
        )
        .await
        .unwrap();
    let ts = s.annotate("gvisor-pool-a", "reconcile").await;
    let cr = s.wait_ready("gvisor-pool-a", &ts).await;
    assert!(cr.status.unwrap().last_error.is_none());
    assert!(s.mr_manifests(&pool_mr("pool-a")).await["configmap__kube-system__containerd-gvisor-pool-a.yaml"].contains("platform = \"kvm\""));
}

#[tokio::test]
async fn unknown_flags_are_ignored_with_a_warning_event() {
    let cp = env(default_config);
    let _logs = cp.logs_on_panic();
    let s = shoot(cp, "unknown", json!({})).await;
    let ts = s
        .gardenlet_create(
            "pool-a",
            Some(gvisor_config(json!({"net-raw": "false", "strace": "true"}))),
        )
        .await;
    s.wait_ready("gvisor-pool-a", &ts).await;
    let config = &s.mr_manifests(&pool_mr("pool-a")).await["configmap__kube-system__containerd-gvisor-pool-a.yaml"];
    assert!(
        config.contains("net-raw = \"false\"") && !config.contains("strace"),
        "{config}"
    );
    let events = Api::<Event>::namespaced(s.client.clone(), &s.ns);
    let event = eventually_or(10, "an UnknownFlags event", async || {
        let list = events.list(&ListParams::default()).await.unwrap();
        list.items
            .iter()
            .find(|e| e.reason.as_deref() == Some("UnknownFlags"))
            .cloned()
            .ok_or_else(|| format!("{list:?}"))
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(event.note.as_deref().unwrap().contains("strace"));
}

#[tokio::test]
async fn same_input_twice_writes_nothing() {
    let cp = env(default_config);
    let _logs = cp.logs_on_panic();
    let s = shoot(cp, "noop", json!({})).await;
    let ts = s
        .gardenlet_create(
            "pool-a",
            Some(gvisor_config(json!({"net-raw": "true", "nvproxy": "true"}))),
        )
        .await;
    s.wait_ready("gvisor-pool-a", &ts).await;
    let secrets = s.secret_names().await;
    let versions = |mrs: Vec<sandbox_api::ManagedResource>| {
        mrs.into_iter()
            .map(|m| {
                (
                    m.metadata.name.unwrap(),
                    m.metadata.resource_version.unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let before = versions(
        s.managed_resources()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items,
    );

    tokio::time::sleep(Duration::from_millis(1100)).await; // a new second for the timestamp
    let ts = s.annotate("gvisor-pool-a", "reconcile").await;
    s.wait_ready("gvisor-pool-a", &ts).await;
    assert_eq!(s.secret_names().await, secrets, "no new Secret");
    let after = versions(
        s.managed_resources()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items,
    );
    assert_eq!(after, before, "no write to the ManagedResources");
}

#[tokio::test]
async fn migrate_keeps_objects_removes_finalizers_and_later_deletion_is_skipped() {
    let cp = env(default_config);
    let _logs = cp.logs_on_panic();
    let s = shoot(cp, "migrate", json!({})).await;
    let ts = s.gardenlet_create("pool-a", None).await;
    s.wait_ready("gvisor-pool-a", &ts).await;
    // gardener-resource-manager would hold the MRs until it has handled keepObjects.
    s.hold_mr(&pool_mr("pool-a"), true).await;
    s.hold_mr(SHARED_MR, true).await;

    s.annotate("gvisor-pool-a", "migrate").await;
    let cr = s
        .wait_for("gvisor-pool-a", "migrated", |cr| {
            cr.is_some_and(sandbox_testenv::gardenlet::is_migrated)
        })
        .await
        .unwrap();
    assert_eq!(
        cr.status.unwrap().last_operation.unwrap().description,
        "Successfully migrated ContainerRuntime"
    );
    let cr = s
        .wait_for("gvisor-pool-a", "annotation removed", |cr| {
            cr.is_some_and(|c| sandbox_controller::contract::operation_annotation(c).is_none())
        })
        .await
        .unwrap();
    assert!(cr.metadata.finalizers.unwrap_or_default().is_empty());
    for name in [pool_mr("pool-a"), SHARED_MR.to_string()] {
        let mr = s.managed_resources().get(&name).await.unwrap();
        assert_eq!(
            mr.spec.keep_objects,
            Some(true),
            "{name} keeps the shoot's objects"
        );
        assert!(
            mr.metadata.deletion_timestamp.is_some(),
            "{name} is being deleted"
        );
        s.hold_mr(&name, false).await;
    }

    // Deleting a migrated object: it just disappears, the status is not touched.
    let status_before = cr.status.clone();
    s.gardenlet_delete("gvisor-pool-a").await;
    s.wait_for("gvisor-pool-a", "gone", |cr| cr.is_none()).await;
    assert!(status_before.is_some());
}

#[tokio::test]
async fn wait_for_state_is_ignored_then_restore_reconciles() {
    let cp = env(default_config);
    let _logs = cp.logs_on_panic();
    let s = shoot(cp, "restore", json!({})).await;
    let mut cr = sandbox_api::ContainerRuntime::new("gvisor-pool-a", serde_json::from_value(json!({
        "type": "gvisor", "binaryPath": "/var/bin/containerruntimes",
        "workerPool": {"name": "pool-a", "selector": {"matchLabels": {"worker.gardener.cloud/pool": "pool-a"}}}})).unwrap());
    cr.metadata.annotations = Some(
        [(
            OPERATION_ANNOTATION.to_string(),
            "wait-for-state".to_string(),
        )]
        .into(),
    );
    s.runtimes().create(&Default::default(), &cr).await.unwrap();
    let witness = common::Witness::start(cp, "restore-witness").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    witness.reconciled().await;
    let cr = s.runtimes().get("gvisor-pool-a").await.unwrap();
    assert!(cr.status.is_none(), "wait-for-state: nothing happens");
    assert!(cr.metadata.finalizers.is_none());
    assert_eq!(
        sandbox_controller::contract::operation_annotation(&cr),
        Some("wait-for-state")
    );

    let ts = s.annotate("gvisor-pool-a", "restore").await;
    let cr = s.wait_ready("gvisor-pool-a", &ts).await;
    let op = cr.status.unwrap().last_operation.unwrap();
    assert_eq!(
        (op.type_, op.description.as_str()),
        (
            LastOperationType::Restore,
            "Successfully restored ContainerRuntime"
        )
    );
    assert!(
        cr.metadata
            .finalizers
            .unwrap()
            .contains(&FINALIZER.to_string())
    );
    assert_eq!(
        s.mr_names().await,
        [SHARED_MR.to_string(), pool_mr("pool-a")]
    );
}

#[tokio::test]
async fn missing_cluster_is_retried_until_it_appears() {
    let cp = env(default_config);
    let _logs = cp.logs_on_panic();
    let client = cp.client().await.unwrap();
    let ns = cp.namespace(&client, "shoot--nocluster").await.unwrap();
    let s = common::Shoot {
        client: client.clone(),
        ns: ns.clone(),
    };
    let ts = s.gardenlet_create("pool-a", None).await;
    let witness = common::Witness::start(cp, "nocluster-witness").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    witness.reconciled().await;
    let cr = s.runtimes().get("gvisor-pool-a").await.unwrap();
    assert!(
        cr.status.is_none(),
        "no status while the Cluster is missing"
    );
    assert!(s.mr_names().await.is_empty());

    common::create_cluster(
        &client,
        &ns,
        json!({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
        "metadata": {"name": "late"}, "spec": {}, "status": {}}),
    )
    .await;
    s.wait_ready("gvisor-pool-a", &ts).await;
}

#[tokio::test]
async fn failed_shoot_is_left_alone() {
    let cp = env(default_config);
    let _logs = cp.logs_on_panic();
    let s = shoot(
        cp,
        "failed",
        json!({"status": {"lastOperation": {"type": "Reconcile", "state": "Failed"}}}),
    )
    .await;
    s.gardenlet_create("pool-a", None).await;
    s.wait_for("gvisor-pool-a", "reconcile annotation removed", |cr| {
        cr.is_some_and(|c| sandbox_controller::contract::operation_annotation(c).is_none())
    })
    .await;
    let witness = common::Witness::start(cp, "failed-witness").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    witness.reconciled().await;
    let cr = s.runtimes().get("gvisor-pool-a").await.unwrap();
    assert!(cr.status.is_none(), "no status write for a failed shoot");
    assert!(cr.metadata.finalizers.is_none());
    assert!(s.mr_names().await.is_empty());
}

#[tokio::test]
async fn wrong_class_or_type_is_not_touched() {
    let cp = env(default_config);
    let _logs = cp.logs_on_panic();
    let s = shoot(cp, "class", json!({})).await;
    s.gardenlet_create_with_class("pool-a", None, Some("seed"))
        .await;
    s.gardenlet_create_with_class("pool-b", None, Some(""))
        .await;
    // A runtime type this extension does not serve.
    let mut kata = sandbox_api::ContainerRuntime::new(
        "youki-pool-a",
        serde_json::from_value(json!({
        "type": "youki", "binaryPath": "/var/bin/containerruntimes",
        "workerPool": {"name": "pool-a", "selector": {}}}))
        .unwrap(),
    );
    kata.metadata.annotations =
        Some([(OPERATION_ANNOTATION.to_string(), "reconcile".to_string())].into());
    s.runtimes()
        .create(&Default::default(), &kata)
        .await
        .unwrap();
    let witness = common::Witness::start(cp, "class-witness").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    witness.reconciled().await;
    for name in ["gvisor-pool-a", "gvisor-pool-b", "youki-pool-a"] {
        let cr = s.runtimes().get(name).await.unwrap();
        assert!(cr.status.is_none(), "{name} was touched");
        assert_eq!(
            sandbox_controller::contract::operation_annotation(&cr),
            Some("reconcile"),
            "{name}"
        );
    }
}

#[tokio::test]
async fn deletion_waits_for_managed_resources_then_finishes() {
    let cp = env(default_config);
    let _logs = cp.logs_on_panic();
    let s = shoot(cp, "delwait", json!({})).await;
    let ts = s.gardenlet_create("pool-a", None).await;
    s.wait_ready("gvisor-pool-a", &ts).await;
    s.hold_mr(&pool_mr("pool-a"), true).await;

    s.gardenlet_delete("gvisor-pool-a").await;
    // The delete timeout (4 s in tests) passes: Error on Delete, object still there.
    let cr = s
        .wait_for("gvisor-pool-a", "delete error", |cr| {
            cr.and_then(|c| c.status.as_ref())
                .and_then(|s| s.last_operation.as_ref())
                .is_some_and(|o| {
                    o.type_ == LastOperationType::Delete && o.state == LastOperationState::Error
                })
        })
        .await
        .unwrap();
    let desc = cr.status.unwrap().last_error.unwrap().description;
    assert!(
        desc.starts_with("Error deleting ContainerRuntime: ") && desc.contains("still exists"),
        "{desc}"
    );
    assert!(
        cr.metadata
            .finalizers
            .unwrap()
            .contains(&FINALIZER.to_string())
    );

    // gardener-resource-manager finishes; the retry completes the deletion.
    s.hold_mr(&pool_mr("pool-a"), false).await;
    s.wait_for("gvisor-pool-a", "gone", |cr| cr.is_none()).await;
    assert!(s.mr_names().await.is_empty());
}

#[tokio::test]
async fn removing_gvisor_from_a_pool_cleans_its_nodes_before_the_installer_goes() {
    let cp = env(default_config);
    let _logs = cp.logs_on_panic();
    let s = shoot(cp, "cleanup", json!({})).await;
    let ts_a = s.gardenlet_create("pool-a", None).await;
    let ts_b = s.gardenlet_create("pool-b", None).await;
    s.wait_ready("gvisor-pool-a", &ts_a).await;
    s.wait_ready("gvisor-pool-b", &ts_b).await;

    // The owner removes gVisor from pool-a (the pool stays) and removes pool-b altogether.
    s.set_workers(json!([
        {"name": "pool-a", "cri": {"name": "containerd"}},
    ]))
    .await;
    s.hold_mr(&pool_mr("pool-b"), true).await;
    let installer_b = s.managed_resources().get(&pool_mr("pool-b")).await.unwrap();
    s.gardenlet_delete("gvisor-pool-b").await;
    s.gardenlet_delete("gvisor-pool-a").await;

    // pool-b: its nodes go away, so no cleanup: the ManagedResource is deleted as it was.
    let deleting_b = loop {
        let mr = s.managed_resources().get(&pool_mr("pool-b")).await.unwrap();
        if mr.metadata.deletion_timestamp.is_some() {
            break mr;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(deleting_b.spec.secret_refs, installer_b.spec.secret_refs);
    s.hold_mr(&pool_mr("pool-b"), false).await;
    s.wait_for("gvisor-pool-b", "gone", |cr| cr.is_none()).await;

    // pool-a: the installer is replaced by the cleanup DaemonSet on the same nodes.
    let manifests = eventually_or(
        30,
        "the cleanup DaemonSet in pool-a's ManagedResource",
        async || {
            let manifests = s.mr_manifests(&pool_mr("pool-a")).await;
            if manifests.keys().any(|k| k.contains("cleanup")) {
                Ok(manifests)
            } else {
                Err(format!("{manifests:?}"))
            }
        },
    )
    .await;
    assert_eq!(
        manifests.keys().collect::<Vec<_>>(),
        ["daemonset__kube-system__containerd-gvisor-cleanup-pool-a.yaml"]
    );
    let ds = &manifests["daemonset__kube-system__containerd-gvisor-cleanup-pool-a.yaml"];
    for needle in [
        "- uninstall",
        "- --binary-path=/var/bin/containerruntimes",
        "worker.gardener.cloud/pool: pool-a",
        IMAGE,
        "path: /readyz",
    ] {
        assert!(ds.contains(needle), "{needle} missing in\n{ds}");
    }
    assert!(!ds.contains("configMap"), "{ds}");

    // Not every node is clean yet: the deletion stays pending and the status says why.
    s.grm_status(&pool_mr("pool-a"), Some("DaemonSet kube-system/containerd-gvisor-cleanup-pool-a is progressing: 1 of 3 updated pods are available"))
        .await;
    let cr = s
        .wait_for("gvisor-pool-a", "cleanup pending error", |cr| {
            cr.and_then(|c| c.status.as_ref())
                .and_then(|s| s.last_error.as_ref())
                .is_some_and(|e| e.description.contains("not yet removed"))
        })
        .await
        .unwrap();
    let description = cr.status.unwrap().last_error.unwrap().description;
    assert!(
        description.contains("pool pool-a") && description.contains("1 of 3 updated pods"),
        "{description}"
    );
    assert_eq!(
        s.mr_names().await,
        [SHARED_MR.to_string(), pool_mr("pool-a")],
        "nothing deleted while nodes are not clean"
    );

    // Every node clean: the ManagedResource goes (and with it the cleanup DaemonSet), then
    // the RuntimeClass, then the object.
    s.grm_status(&pool_mr("pool-a"), None).await;
    s.wait_for("gvisor-pool-a", "gone", |cr| cr.is_none()).await;
    assert!(s.mr_names().await.is_empty());
}

#[tokio::test]
async fn force_deletion_and_hibernation_do_not_wait() {
    let cp = env(default_config);
    let _logs = cp.logs_on_panic();
    for (prefix, patch) in [
        (
            "force",
            json!({"metadata": {"annotations": {"confirmation.gardener.cloud/force-deletion": "true"}}}),
        ),
        (
            "hibernated",
            json!({"spec": {"hibernation": {"enabled": true}}, "status": {"hibernated": true}}),
        ),
    ] {
        let s = shoot(cp, prefix, patch).await;
        let ts = s.gardenlet_create("pool-a", None).await;
        s.wait_ready("gvisor-pool-a", &ts).await; // a hibernated shoot still gets its ManagedResources
        s.hold_mr(&pool_mr("pool-a"), true).await;
        s.hold_mr(SHARED_MR, true).await;
        s.gardenlet_delete("gvisor-pool-a").await;
        s.wait_for("gvisor-pool-a", "gone without waiting", |cr| cr.is_none())
            .await;
        for name in [pool_mr("pool-a"), SHARED_MR.to_string()] {
            let mr = s.managed_resources().get(&name).await.unwrap();
            assert!(
                mr.metadata.deletion_timestamp.is_some(),
                "{prefix}: {name} deletion requested"
            );
            s.hold_mr(&name, false).await;
        }
    }
}

#[tokio::test]
async fn a_malformed_cluster_is_retried_and_does_not_stop_other_shoots() {
    let cp = env(default_config);
    let _logs = cp.logs_on_panic();
    // The CRD keeps embedded objects raw, so the API server accepts a Shoot of the wrong shape.
    let bad = shoot(
        cp,
        "malformed",
        json!({"status": {"hibernated": "not-a-bool"}}),
    )
    .await;
    let ts_bad = bad.gardenlet_create("pool-a", None).await;
    let good = shoot(cp, "healthy", json!({})).await;
    let ts_good = good.gardenlet_create("pool-a", None).await;
    good.wait_ready("gvisor-pool-a", &ts_good).await;
    let cr = bad.runtimes().get("gvisor-pool-a").await.unwrap();
    assert!(cr.status.is_none(), "no success for an undecodable Cluster");
    assert!(bad.mr_names().await.is_empty());

    Api::<sandbox_api::Cluster>::all(bad.client.clone())
        .patch(
            &bad.ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"shoot": {"status": {"hibernated": false}}}})),
        )
        .await
        .unwrap();
    bad.wait_ready("gvisor-pool-a", &ts_bad).await; // the backoff retry picks up the fix
}

#[tokio::test]
async fn many_pools_at_once_share_the_runtime_class_without_errors() {
    let cp = env(default_config);
    let _logs = cp.logs_on_panic();
    let s = shoot(cp, "race", json!({})).await;
    let pools: Vec<String> = (0..6).map(|i| format!("p{i}")).collect();
    let mut stamps = Vec::new();
    for pool in &pools {
        stamps.push(s.gardenlet_create(pool, None).await);
    }
    for (pool, ts) in pools.iter().zip(&stamps) {
        let cr = s.wait_ready(&format!("gvisor-{pool}"), ts).await;
        assert_eq!(
            cr.status.unwrap().last_operation.unwrap().type_,
            LastOperationType::Create
        );
    }
    assert_eq!(s.mr_names().await.len(), pools.len() + 1);
    let events = Api::<Event>::namespaced(s.client.clone(), &s.ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    let errors: Vec<_> = events
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("ReconcileError"))
        .map(|e| e.note.clone())
        .collect();
    assert!(
        errors.is_empty(),
        "no pool may fail on the shared ManagedResource: {errors:?}"
    );
}

#[tokio::test]
async fn migrate_beats_a_pending_deletion() {
    let cp = env(default_config);
    let _logs = cp.logs_on_panic();
    let s = shoot(cp, "migdel", json!({})).await;
    let ts = s.gardenlet_create("pool-a", None).await;
    s.wait_ready("gvisor-pool-a", &ts).await;
    s.hold_mr(&pool_mr("pool-a"), true).await;
    // Deletion is stuck waiting for the pool's ManagedResource...
    s.gardenlet_delete("gvisor-pool-a").await;
    s.wait_for("gvisor-pool-a", "stuck in Delete", |cr| {
        cr.and_then(|c| c.status.as_ref())
            .and_then(|s| s.last_operation.as_ref())
            .is_some_and(|o| o.type_ == LastOperationType::Delete)
    })
    .await;
    // ...when the shoot is migrated to another seed: migration wins, keeps the shoot's objects
    // and drops every finalizer, so the object goes away without the deletion finishing.
    s.annotate("gvisor-pool-a", "migrate").await;
    s.wait_for("gvisor-pool-a", "gone after migration", |cr| cr.is_none())
        .await;
    let mr = s.managed_resources().get(&pool_mr("pool-a")).await.unwrap();
    assert_eq!(
        mr.spec.keep_objects,
        Some(true),
        "migration keeps the objects in the shoot"
    );
    s.hold_mr(&pool_mr("pool-a"), false).await;
}

fn kata_config(fields: serde_json::Value) -> serde_json::Value {
    let mut config = json!({"apiVersion": "kata.runtime.extensions.config.gardener.cloud/v1alpha1", "kind": "KataConfiguration"});
    for (k, v) in fields.as_object().unwrap() {
        config[k.as_str()] = v.clone();
    }
    config
}

/// gVisor and Kata (QEMU) in one pool, Kata (Firecracker, tainted) in another: each runtime
/// gets its own ManagedResources, each hypervisor its RuntimeClass selecting only its nodes.
#[tokio::test]
async fn kata_and_gvisor_in_one_pool_and_kata_in_another() {
    let cp = env(default_config);
    let _logs = cp.logs_on_panic();
    let qemu = kata_config(json!({"hypervisors": ["qemu"]}));
    let fc = kata_config(json!({"hypervisors": ["fc"], "overhead": {"fc": {"memory": "256Mi"}}}));
    let s = shoot(
        cp,
        "kata",
        json!({"spec": {"provider": {"workers": [
            {"name": "pool-a", "cri": {"name": "containerd", "containerRuntimes": [
                {"type": "gvisor"}, {"type": "kata", "providerConfig": qemu}]}},
            {"name": "pool-b", "taints": [{"key": "sandbox", "value": "kata", "effect": "NoSchedule"}],
             "cri": {"name": "containerd", "containerRuntimes": [{"type": "kata", "providerConfig": fc}]}},
        ]}}}),
    )
    .await;
    let ts_g = s.gardenlet_create("pool-a", None).await;
    let ts_a = s
        .gardenlet_create_runtime("kata", "pool-a", Some(qemu.clone()))
        .await;
    let ts_b = s
        .gardenlet_create_runtime("kata", "pool-b", Some(fc.clone()))
        .await;
    s.wait_ready("gvisor-pool-a", &ts_g).await;
    s.wait_ready("kata-pool-a", &ts_a).await;
    s.wait_ready("kata-pool-b", &ts_b).await;
    assert_eq!(
        s.mr_names().await,
        [
            SHARED_MR.to_string(),
            pool_mr("pool-a"),
            "extension-runtime-kata".to_string(),
            "extension-runtime-kata-installation-pool-a".to_string(),
            "extension-runtime-kata-installation-pool-b".to_string(),
        ]
    );
    let kata_mr = s
        .managed_resources()
        .get("extension-runtime-kata")
        .await
        .unwrap();
    assert_eq!(
        kata_mr.metadata.labels.as_ref().unwrap()["origin"],
        "gardener-extension-runtime-kata"
    );
    let shared = s.mr_manifests("extension-runtime-kata").await;
    let qemu_class = &shared["runtimeclass____kata-qemu.yaml"];
    assert!(
        qemu_class.contains("memory: 320Mi") && qemu_class.contains("cpu: 250m"),
        "{qemu_class}"
    );
    assert!(
        qemu_class.contains("runtime-sandbox.gardener.cloud/kata-qemu-ready: \"true\""),
        "{qemu_class}"
    );
    assert!(
        !qemu_class.contains("tolerations"),
        "pool-a is not tainted: {qemu_class}"
    );
    let fc_class = &shared["runtimeclass____kata-fc.yaml"];
    assert!(
        fc_class.contains("memory: 256Mi") && fc_class.contains("key: sandbox"),
        "{fc_class}"
    );
    assert!(
        !shared.contains_key("runtimeclass____kata-clh.yaml"),
        "{:?}",
        shared.keys()
    );
    let policy = &shared["validatingadmissionpolicy____runtime-kata-node-agent-labels.yaml"];
    assert!(
        policy.contains("kata-fc-ready") && policy.contains("kata-qemu-state"),
        "{policy}"
    );

    let pool_a = s
        .mr_manifests("extension-runtime-kata-installation-pool-a")
        .await;
    let plan_a = &pool_a["configmap__kube-system__containerd-kata-pool-a.yaml"];
    assert!(
        plan_a.contains("name: kata-qemu") && !plan_a.contains("kata-fc"),
        "{plan_a}"
    );
    let ds_a = &pool_a["daemonset__kube-system__containerd-kata-pool-a.yaml"];
    assert!(
        ds_a.contains("/opt/runtime-sandbox/kata") && ds_a.contains("serviceAccountName: kata"),
        "{ds_a}"
    );
    let pool_b = s
        .mr_manifests("extension-runtime-kata-installation-pool-b")
        .await;
    let plan_b = &pool_b["configmap__kube-system__containerd-kata-pool-b.yaml"];
    assert!(
        plan_b.contains("name: kata-fc") && plan_b.contains("snapshotter: devmapper"),
        "{plan_b}"
    );

    // A typo in Kata's providerConfig is the owner's configuration problem, naming the field.
    let ts = s
        .gardenlet_create_runtime(
            "kata",
            "pool-c",
            Some(kata_config(json!({"hypervisors": ["qemu", "vmware"]}))),
        )
        .await;
    let cr = s
        .wait_for("kata-pool-c", "an error", |cr| {
            cr.and_then(|cr| cr.status.as_ref()?.last_operation.clone())
                .is_some_and(|op| op.state == LastOperationState::Error)
        })
        .await
        .unwrap();
    let status = cr.status.unwrap();
    let error = status.last_error.unwrap();
    assert!(
        error.description.contains("providerConfig.hypervisors[1]")
            && error.description.contains("allowed: qemu, clh, fc"),
        "{}",
        error.description
    );
    assert_eq!(error.codes, ["ERR_CONFIGURATION_PROBLEM"]);
    let _ = ts;

    for name in ["kata-pool-c", "kata-pool-b", "kata-pool-a", "gvisor-pool-a"] {
        s.gardenlet_delete(name).await;
        s.wait_for(name, "gone", |cr| cr.is_none()).await;
    }
    assert!(s.mr_names().await.is_empty(), "{:?}", s.mr_names().await);
}

/// gardenlet's `reconcile` request is consumed only once the status says the run started: a
/// run whose status write fails (the API server or etcd away, the process killed) leaves the
/// request for the next run. Chaos found requests lost when the annotation went first: the next
/// run saw no request and a Succeeded status, and gardenlet waited in vain.
#[tokio::test]
async fn a_reconcile_request_is_kept_until_its_status_is_written() {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let cp = env(default_config);
    let _logs = cp.logs_on_panic();
    let s = shoot(cp, "keep-request", json!({})).await;
    let ts = s.gardenlet_create("pool-a", None).await;
    s.wait_ready("gvisor-pool-a", &ts).await;

    // Status writes to this namespace's ContainerRuntimes are refused from now on.
    let admin = cp.client().await.unwrap();
    let name = format!("refuse-status-{}", s.ns);
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(admin.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(admin);
    let policy = json!({"metadata": {"name": name}, "spec": {
        "failurePolicy": "Fail",
        "matchConstraints": {"resourceRules": [{"apiGroups": ["extensions.gardener.cloud"],
            "apiVersions": ["*"], "operations": ["UPDATE"], "resources": ["containerruntimes/status"]}]},
        "validations": [{"expression": "false", "message": "status writes refused by the test"}]}});
    let binding = json!({"metadata": {"name": name}, "spec": {
        "policyName": name, "validationActions": ["Deny"],
        "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": s.ns}}}}});
    policies
        .create(
            &Default::default(),
            &serde_json::from_value(policy).unwrap(),
        )
        .await
        .unwrap();
    bindings
        .create(
            &Default::default(),
            &serde_json::from_value(binding).unwrap(),
        )
        .await
        .unwrap();
    // Policies load asynchronously: wait until a (dry-run) status write is refused.
    let dry_run = PatchParams {
        dry_run: true,
        ..Default::default()
    };
    let probe = json!({"status": {"lastOperation": {"description": "probe"}}});
    eventually_or(30, "the policy takes effect", async || {
        match s
            .runtimes()
            .patch_status("gvisor-pool-a", &dry_run, &Patch::Merge(&probe))
            .await
        {
            Err(kube::Error::Api(e)) if e.message.contains("refused by the test") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    let ts = s.annotate("gvisor-pool-a", "reconcile").await;
    // The controller tries (and fails) several times meanwhile (backoff 0.5 to 4 s); the request
    // stays the whole time.
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let cr = s.runtimes().get("gvisor-pool-a").await.unwrap();
        assert_eq!(
            cr.metadata
                .annotations
                .unwrap()
                .get(OPERATION_ANNOTATION)
                .map(String::as_str),
            Some("reconcile"),
            "the request was consumed although no status says so"
        );
    }
    bindings.delete(&name, &Default::default()).await.unwrap();
    policies.delete(&name, &Default::default()).await.unwrap();
    let cr = s.wait_ready("gvisor-pool-a", &ts).await;
    assert_eq!(
        cr.status.unwrap().last_operation.unwrap().type_,
        LastOperationType::Reconcile
    );
}

#[tokio::test]
async fn a_controller_clock_behind_gardenlet_still_satisfies_its_wait() {
    // gardenlet's clock runs 10 minutes ahead of ours: it waits for a lastUpdateTime that is
    // not before its own timestamp, which a status stamped with our "now" would never reach.
    let cp = env(default_config);
    let _logs = cp.logs_on_panic();
    let s = shoot(cp, "clock-skew", json!({})).await;
    let ts = s.gardenlet_create("pool-a", None).await;
    s.wait_ready("gvisor-pool-a", &ts).await;

    let ahead = Timestamp::now() + SignedDuration::from_mins(10);
    let ts = s
        .annotate_at("gvisor-pool-a", "reconcile", ahead.to_string())
        .await;
    let cr = s.wait_ready("gvisor-pool-a", &ts).await;
    let written = cr
        .status
        .unwrap()
        .last_operation
        .unwrap()
        .last_update_time
        .0;
    assert!(
        written.as_second() >= ahead.as_second(),
        "lastUpdateTime {written} is before gardenlet's request {ahead}"
    );
}
