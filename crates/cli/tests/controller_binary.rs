//! The product binary's `controller` subcommand end to end: flags, leader election,
//! heartbeat, readiness, metrics, and a ContainerRuntime reconciled to Succeeded.

use std::process::{Command, Stdio};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use sandbox_api::{ContainerRuntime, LastOperationState};
use sandbox_testenv::{free_port, gardenlet, http_get};
use serde_json::json;

mod support;

use sandbox_testenv::eventually;
use support::Kill;

#[tokio::test]
async fn controller_subcommand_reconciles_and_reports() {
    let cp = sandbox_testenv::shared();
    let _logs = cp.logs_on_panic();
    let client = cp.client().await.unwrap();
    let ns = cp.namespace(&client, "shoot--binary").await.unwrap();
    let system = cp.namespace(&client, "extension").await.unwrap();
    let (health, metrics) = (free_port().unwrap(), free_port().unwrap());

    let overwrite = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(overwrite.path(), "images:\n- name: runtime-gvisor-installation\n  repository: registry.local/agent\n  tag: v9\n").unwrap();
    let _controller = Kill(
        Command::new(env!("CARGO_BIN_EXE_gardener-extension-runtime-sandbox"))
            .args([
                "controller",
                "--leader-election=true",
                "--log-format=text",
                "--log-level=debug",
            ])
            .arg(format!("--kubeconfig={}", cp.kubeconfig_path().display()))
            .arg(format!("--leader-election-namespace={system}"))
            .arg(format!("--heartbeat-namespace={system}"))
            .arg("--heartbeat-renew-interval-seconds=1")
            .arg(format!("--health-bind-address=127.0.0.1:{health}"))
            .arg(format!("--metrics-bind-address=127.0.0.1:{metrics}"))
            .env("IMAGEVECTOR_OVERWRITE", overwrite.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );

    eventually(30, "/healthz ok", async || {
        http_get(health, "/healthz").filter(|(c, _)| *c == 200)
    })
    .await;
    eventually(30, "/readyz ok", async || {
        http_get(health, "/readyz").filter(|(c, _)| *c == 200)
    })
    .await;
    let leases = Api::<Lease>::namespaced(client.clone(), &system);
    eventually(30, "leader Lease", async || {
        leases
            .get_opt("runtime-gvisor-leader-election")
            .await
            .ok()
            .flatten()
    })
    .await;
    eventually(30, "heartbeat Lease", async || {
        leases
            .get_opt("gardener-extension-heartbeat")
            .await
            .ok()
            .flatten()
    })
    .await;

    gardenlet::create_cluster(
        &client,
        &ns,
        json!({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot", "metadata": {"name": "binary"}}),
    )
    .await;
    let runtimes = Api::<ContainerRuntime>::namespaced(client.clone(), &ns);
    let mut cr = gardenlet::container_runtime(&ns, "pool", None);
    gardenlet::request(&mut cr, "reconcile");
    runtimes.create(&PostParams::default(), &cr).await.unwrap();
    eventually(30, "Succeeded", async || {
        let cr = runtimes.get("gvisor-pool").await.ok()?;
        (cr.status?.last_operation?.state == LastOperationState::Succeeded).then_some(())
    })
    .await;

    let mr = Api::<sandbox_api::ManagedResource>::namespaced(client.clone(), &ns)
        .get("extension-runtime-gvisor-installation-pool")
        .await
        .unwrap();
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns)
        .get(&mr.spec.secret_refs[0].name)
        .await
        .unwrap();
    let ds = String::from_utf8(
        secret.data.unwrap()["daemonset__kube-system__containerd-gvisor-pool.yaml"]
            .0
            .clone(),
    )
    .unwrap();
    assert!(
        ds.contains("image: registry.local/agent:v9"),
        "IMAGEVECTOR_OVERWRITE applies: {ds}"
    );

    let (code, body) = http_get(metrics, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        body.contains("runtime_sandbox_reconciles_total{operation=\"create\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("runtime_sandbox_reconcile_duration_seconds_count{operation=\"create\"} 1"),
        "{body}"
    );
}
