//! The test shoot as a component: its node registers Ready with a Gardener worker's labels,
//! runs a plain (runc) pod whose log is read through the API (kubelet -> API server), and
//! gardener-resource-manager applies a ManagedResource from the seed namespace into the shoot
//! and reports it applied and healthy.

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::{Api, LogParams, PostParams};
use sandbox_api::ManagedResource;
use sandbox_testenv::node::BUSYBOX_IMAGE;
use sandbox_testenv::shoot::{NODE_NAME, POOL, TestShoot};
use serde_json::json;

#[tokio::test]
async fn a_node_runs_pods_and_resource_manager_applies_managed_resources() {
    let seed = sandbox_testenv::shared();
    let seed_client = seed.client().await.unwrap();
    let ns = seed
        .namespace(&seed_client, "shoot--test--node")
        .await
        .unwrap();
    let shoot = TestShoot::start(
        seed,
        &ns,
        &[("containerruntime.worker.gardener.cloud/gvisor", "true")],
    )
    .await
    .unwrap();
    let _logs = shoot.logs_on_panic();
    let client = shoot.client().await.unwrap();

    let node = Api::<Node>::all(client.clone())
        .get(NODE_NAME)
        .await
        .unwrap();
    let labels = node.metadata.labels.unwrap();
    assert_eq!(labels["worker.gardener.cloud/pool"], POOL);
    assert_eq!(labels["worker.gardener.cloud/cri-name"], "containerd");
    assert_eq!(
        labels["containerruntime.worker.gardener.cloud/gvisor"],
        "true"
    );

    // A plain pod, scheduled by the scheduler, run by the kubelet on runc, its log via the API.
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "hello"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": BUSYBOX_IMAGE,
            "imagePullPolicy": "Never", "command": ["sh", "-c", "echo hello from $(hostname)"]}]},
    }))
    .unwrap();
    sandbox_testenv::eventually(60, "the default ServiceAccount", async || {
        pods.create(&PostParams::default(), &pod).await.ok()
    })
    .await;
    sandbox_testenv::eventually_or(120, "the pod succeeds", async || {
        let p = pods.get("hello").await.unwrap();
        match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Succeeded") => Ok(()),
            _ => Err(format!("{:#?}", p.status)),
        }
    })
    .await;
    let log = pods.logs("hello", &LogParams::default()).await.unwrap();
    assert_eq!(log.trim(), "hello from hello");

    // A ManagedResource in the seed namespace lands in the shoot.
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "managedresource-probe", "namespace": ns},
        "type": "Opaque",
        "stringData": {"cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe\n  namespace: kube-system\ndata:\n  k: v\n"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(seed_client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let mr: ManagedResource = serde_json::from_value(json!({
        "apiVersion": "resources.gardener.cloud/v1alpha1", "kind": "ManagedResource",
        "metadata": {"name": "probe", "namespace": ns},
        "spec": {"secretRefs": [{"name": "managedresource-probe"}]},
    }))
    .unwrap();
    let mrs = Api::<ManagedResource>::namespaced(seed_client.clone(), &ns);
    mrs.create(&PostParams::default(), &mr).await.unwrap();
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "kube-system");
    sandbox_testenv::eventually(60, "the ConfigMap in the shoot", async || {
        cms.get_opt("probe").await.ok().flatten()
    })
    .await;
    sandbox_testenv::eventually(60, "ResourcesApplied and ResourcesHealthy", async || {
        let mr = mrs.get("probe").await.ok()?;
        let conditions = mr.status?.conditions;
        let ok = |t: &str| {
            conditions
                .iter()
                .any(|c| c.type_ == t && c.status == "True")
        };
        (ok("ResourcesApplied") && ok("ResourcesHealthy")).then_some(())
    })
    .await;
}
