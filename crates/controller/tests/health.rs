//! The health check's reads of the shoot, with the chart's permissions on a real API server
//! (audit log on): the shoot-access Secret is found by a watch, read once per version, never
//! polled while it is absent, and its nodes decide `EveryNodeReady`. The "shoot" is the same
//! API server, reached with an admin kubeconfig in the Secret, as gardenlet's would be.

mod common;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use sandbox_api::ContainerRuntime;
use sandbox_api::containerruntime::POOL_LABELS;
use sandbox_controller::ControllerConfig;
use sandbox_testenv::{ControlPlane, eventually, eventually_or};
use serde_json::json;

const SECRET: &str = "gardener";

/// The `EveryNodeReady` condition: (status, message).
async fn every_node_ready(runtimes: &Api<ContainerRuntime>) -> Option<(String, String)> {
    let cr = runtimes.get("gvisor-pool-a").await.unwrap();
    cr.status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "EveryNodeReady")
        .map(|c| (c.status, c.message))
}

/// Waits until `EveryNodeReady` matches `want` (what it last was, if not in 30 s).
async fn until(runtimes: &Api<ContainerRuntime>, what: &str, want: impl Fn(&str, &str) -> bool) {
    eventually_or(30, what, async || match every_node_ready(runtimes).await {
        Some((status, message)) if want(&status, &message) => Ok(()),
        now => Err(format!("EveryNodeReady is {now:?}")),
    })
    .await
}

/// Requests for the Secret `name` in `namespace` in the audit log: (verb, user) in order.
fn secret_requests(cp: &ControlPlane, namespace: &str, name: &str) -> Vec<(String, String)> {
    sandbox_testenv::audit::read(cp.audit_log().unwrap(), 0)
        .0
        .into_iter()
        .filter(|r| r.resource == "secrets" && r.namespace == namespace && r.name == name)
        .map(|r| (r.verb, r.user))
        .collect()
}

fn controller_gets(requests: &[(String, String)]) -> usize {
    requests
        .iter()
        .filter(|(verb, user)| verb == "get" && user.starts_with("system:serviceaccount:"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shoot_access_secret_is_read_once_per_version_and_never_polled_while_absent() {
    let cp = ControlPlane::start_audited().await.unwrap();
    let _logs = cp.logs_on_panic();
    // The controller with the chart's ServiceAccount and RBAC, health rounds every second.
    let (_, kubeconfig) = sandbox_testenv::chart::install_identity(&cp, &[])
        .await
        .unwrap();
    let controller_client = sandbox_testenv::client_for(kubeconfig).await.unwrap();
    let config = ControllerConfig {
        health_sync_period: Duration::from_secs(1),
        ..common::default_config()
    };
    tokio::spawn(sandbox_controller::run(
        controller_client,
        config,
        Arc::new(sandbox_controller::metrics::NoObserver),
        Default::default(),
        std::future::pending(),
    ));

    let s = common::shoot(&cp, "health", json!({})).await;
    let ts = s.gardenlet_create("pool-a", None).await;
    s.wait_ready("gvisor-pool-a", &ts).await;
    let runtimes = s.runtimes();

    // No Secret yet: the condition says so, and nothing asks for the Secret round after round.
    until(&runtimes, "without shoot access", |status, message| {
        status == "Unknown" && message.contains("no shoot access")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let absent = secret_requests(&cp, &s.ns, SECRET);
    assert_eq!(
        controller_gets(&absent),
        0,
        "3 health rounds without the Secret read it: {absent:?}"
    );

    // A node of the pool in the "shoot", with the runtime ready.
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "health-n1", "labels": {
        POOL_LABELS[0]: "pool-a", "runtime-sandbox.gardener.cloud/gvisor-ready": "true"}}}))
    .unwrap();
    Api::<Node>::all(s.client.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap();

    // gardenlet writes the Secret: the watch sees it, one read builds the shoot client.
    let admin = cp
        .user_kubeconfig("health-shoot-admin", &["system:masters"])
        .unwrap();
    let kubeconfig = std::fs::read_to_string(&admin).unwrap();
    let secrets = Api::<Secret>::namespaced(s.client.clone(), &s.ns);
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": SECRET},
        "stringData": {"kubeconfig": kubeconfig}}))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    until(&runtimes, "with shoot access", |status, _| status == "True").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let present = secret_requests(&cp, &s.ns, SECRET);
    assert_eq!(
        controller_gets(&present),
        1,
        "one read for one version, however many rounds: {present:?}"
    );

    // The Secret changes (gardenlet rotates the kubeconfig): exactly one more read.
    secrets
        .patch(
            SECRET,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"rotated": "1"}}})),
        )
        .await
        .unwrap();
    eventually(30, "the changed Secret read", async || {
        (controller_gets(&secret_requests(&cp, &s.ns, SECRET)) >= 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let changed = secret_requests(&cp, &s.ns, SECRET);
    assert_eq!(controller_gets(&changed), 2, "{changed:?}");

    // The node loses the runtime: read through the cached client, no Secret read.
    Api::<Node>::all(s.client.clone())
        .patch(
            "health-n1",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"runtime-sandbox.gardener.cloud/gvisor-ready": null}}}),
            ),
        )
        .await
        .unwrap();
    until(&runtimes, "node not ready", |status, message| {
        status == "False" && message.contains("health-n1")
    })
    .await;

    // The Secret goes: the condition says so at once, still without a read.
    secrets
        .delete(SECRET, &DeleteParams::default())
        .await
        .unwrap();
    until(&runtimes, "Secret deleted", |status, message| {
        status == "Unknown" && message.contains("no shoot access")
    })
    .await;
    let gone = secret_requests(&cp, &s.ns, SECRET);
    assert_eq!(controller_gets(&gone), 2, "{gone:?}");
}
