//! The health check's reads of the shoot, with the chart's permissions on a real API server
//! (audit log on): the controller creates its shoot-access Secret, finds it by a watch, reads
//! it once per version (never polling while it is absent or unfilled), refuses a kubeconfig
//! that runs a program, and the pool's nodes decide `EveryNodeReady`. The "shoot" is the same
//! API server; the test plays gardener-resource-manager's token requestor (a TokenRequest for
//! the ServiceAccount, written into the Secret's kubeconfig) and applies the shared
//! ManagedResource's RBAC, which the real gardener-resource-manager does in the e2e test.

mod common;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use sandbox_api::ContainerRuntime;
use sandbox_api::containerruntime::POOL_LABELS;
use sandbox_controller::ControllerConfig;
use sandbox_testenv::{ControlPlane, eventually_or};
use serde_json::json;

const SECRET: &str = "shoot-access-extension-runtime-gvisor";

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
        shoot_api_server: cp.server_url().to_string(),
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
    let secrets = Api::<Secret>::namespaced(s.client.clone(), &s.ns);

    // The reconcile created the Secret for gardener-resource-manager's token requestor; until
    // a token is in it the condition says so, and the unchanged Secret is not read again.
    let created = secrets.get(SECRET).await.unwrap();
    assert_eq!(
        created.metadata.labels.as_ref().unwrap()["resources.gardener.cloud/purpose"],
        "token-requestor"
    );
    until(&runtimes, "without a token", |status, message| {
        status == "Unknown" && message.contains("has not issued the token yet")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let unfilled = secret_requests(&cp, &s.ns, SECRET);
    assert_eq!(
        controller_gets(&unfilled),
        1,
        "3 health rounds read the unfilled Secret more than once: {unfilled:?}"
    );

    // A node of the pool in the "shoot", with the runtime ready.
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "health-n1", "labels": {
        POOL_LABELS[0]: "pool-a", "runtime-sandbox.gardener.cloud/gvisor-ready": "true"}}}))
    .unwrap();
    Api::<Node>::all(s.client.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap();

    // A kubeconfig that would run a program on the seed is refused, not used.
    s.fill_shoot_access(
        "gvisor",
        json!({"exec": {"apiVersion": "client.authentication.k8s.io/v1",
        "command": "/bin/sh", "args": ["-c", "touch /tmp/pwned"]}}),
        json!(null),
    )
    .await;
    until(&runtimes, "exec refused", |status, message| {
        status == "Unknown" && message.contains("refused, the kubeconfig runs a program")
    })
    .await;
    assert!(!std::path::Path::new("/tmp/pwned").exists());

    // gardener-resource-manager's part: the shared ManagedResource's RBAC in the shoot, the
    // ServiceAccount, its token in the kubeconfig.
    let token_kubeconfig = s.issue_node_reader_token(&cp, "gvisor").await;
    until(&runtimes, "with the node-reader token", |status, _| {
        status == "True"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let present = secret_requests(&cp, &s.ns, SECRET);
    assert_eq!(
        controller_gets(&present),
        3,
        "one read per version (created, exec, token), however many rounds: {present:?}"
    );

    // The token lists nodes and nothing else: reading Secrets in the shoot is refused.
    let shoot_client = sandbox_testenv::client_for(token_kubeconfig).await.unwrap();
    Api::<Node>::all(shoot_client.clone())
        .list(&Default::default())
        .await
        .unwrap();
    match Api::<Secret>::namespaced(shoot_client.clone(), "kube-system")
        .list(&Default::default())
        .await
    {
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        other => panic!("the node-reader token read Secrets: {other:?}"),
    }
    match Api::<Node>::all(shoot_client)
        .patch(
            "health-n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
    {
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        other => panic!("the node-reader token patched a node: {other:?}"),
    }

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
    assert_eq!(controller_gets(&gone), 3, "{gone:?}");
}
