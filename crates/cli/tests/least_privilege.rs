//! Least privilege, proven: the product binary runs with the chart's own flags, authenticated
//! as the chart's ServiceAccount (a bound token from the TokenRequest API) with exactly the
//! chart's RBAC, through create, re-reconcile, a providerConfig change, deletion of a pool,
//! migrate and deletion of the last one, with leader election and the heartbeat on. Then the
//! API server's audit log must show no request of ours refused, and every granted verb on every
//! granted resource used at least once: a grant nobody uses fails the test, so the role cannot
//! silently grow. (The contract scenarios in crates/controller/tests run with the same RBAC.)

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use sandbox_api::ContainerRuntime;
use sandbox_testenv::chart::{self, RELEASE_NAMESPACE, SERVICE_ACCOUNT};
use sandbox_testenv::gardenlet::{self, Shoot};
use sandbox_testenv::{ControlPlane, free_port, http_get};
use serde_json::{Value, json};

mod support;

use sandbox_testenv::eventually;
use support::Kill;

fn gvisor_config(flags: Value) -> Value {
    json!({"apiVersion": "gvisor.runtime.extensions.config.gardener.cloud/v1alpha1", "kind": "GVisorConfiguration", "configFlags": flags})
}

/// (apiGroup, resource[/subresource], verb) of every request `user` made, and those refused.
fn audit(log: &std::path::Path, user: &str) -> (BTreeSet<(String, String, String)>, Vec<String>) {
    let mut used = BTreeSet::new();
    let mut refused = Vec::new();
    for request in sandbox_testenv::audit::by_user(log, user, 0) {
        // The harness's dry run as the ServiceAccount that waits until the chart's admission
        // policy is enforced (refused on purpose; `chart::fence_probe`) is not the controller's.
        if request.uri.contains("dryRun=All") {
            continue;
        }
        let key = (
            request.api_group.clone(),
            request.resource_path(),
            request.verb.clone(),
        );
        if request.code == 403 {
            refused.push(format!("{key:?} {:?}", request.uri));
        }
        // A server-side apply that created its object (201) was authorized as a create too.
        if key.2 == "patch" && request.code == 201 {
            used.insert((key.0.clone(), key.1.clone(), "create".to_string()));
        }
        used.insert(key);
    }
    (used, refused)
}

/// Every (apiGroup, resource, verb) the chart's ClusterRole and Role grant.
fn grants(rbac: &[Value]) -> BTreeSet<(String, String, String)> {
    let mut grants = BTreeSet::new();
    for role in rbac
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
    {
        for rule in role["rules"].as_array().unwrap() {
            let list = |k: &str| -> Vec<String> {
                rule[k]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            assert!(
                !list("verbs").contains(&"*".to_string()),
                "no wildcard verbs: {rule}"
            );
            assert!(
                !list("resources").contains(&"*".to_string()),
                "no wildcard resources: {rule}"
            );
            for group in list("apiGroups") {
                for resource in list("resources") {
                    for verb in list("verbs") {
                        grants.insert((group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
    }
    grants
}

#[tokio::test]
async fn the_chart_grants_exactly_what_the_controller_uses() {
    let cp = ControlPlane::start_audited().await.unwrap();
    let _logs = cp.logs_on_panic();
    let admin = cp.client().await.unwrap();
    // The heartbeat renewed and the health checked every second, so their calls are exercised
    // within the test.
    let values = [
        "--set",
        "controllers.heartbeat.renewIntervalSeconds=1",
        "--set",
        "controllers.healthcheck.syncPeriodSeconds=1",
    ];
    let (rbac, kubeconfig) = chart::install_identity(&cp, &values).await.unwrap();
    let kubeconfig_path = cp.root().join("kubeconfig-chart-serviceaccount");
    std::fs::write(
        &kubeconfig_path,
        serde_saphyr::to_string(&kubeconfig).unwrap(),
    )
    .unwrap();

    // The chart's own command line, with local ports and the kubeconfig added.
    let (health, metrics) = (free_port().unwrap(), free_port().unwrap());
    let mut args = support::chart_controller_args(&values, health, metrics);
    // The webhook's certificates checked every second, so a renewal happens within the test.
    args.push("--webhook-config-sync-period-seconds=1".into());
    let binary = env!("CARGO_BIN_EXE_gardener-extension-runtime-sandbox");
    let start = || {
        Kill(
            Command::new(binary)
                .args(&args)
                .arg(format!("--kubeconfig={}", kubeconfig_path.display()))
                .arg("--log-format=text")
                .env("LEADER_ELECTION_NAMESPACE", RELEASE_NAMESPACE)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        )
    };
    let controller = start();
    eventually(60, "/readyz ok", async || {
        http_get(health, "/readyz").filter(|(c, _)| *c == 200)
    })
    .await;

    // The webhook registered itself (CA and server certificate in Secrets, the configuration
    // owned by our namespace); a CA that looks 25 days old is renewed and the server
    // certificate re-issued: every webhook permission used.
    let secrets =
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(admin.clone(), RELEASE_NAMESPACE);
    let ca = "gardener-extension-runtime-sandbox-webhook-ca";
    eventually(60, "the webhook's CA Secret", async || {
        secrets.get_opt(ca).await.ok().flatten()
    })
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    secrets
        .patch(
            ca,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "runtime-sandbox.gardener.cloud/not-before": (now - 25 * 86400).to_string(),
                "runtime-sandbox.gardener.cloud/not-after": (now + 5 * 86400).to_string(),
            }}})),
        )
        .await
        .unwrap();
    eventually(60, "the webhook's CA renewed", async || {
        let secret = secrets.get(ca).await.ok()?;
        let bundle = &secret.data.as_ref()?.get("bundle.crt")?.0;
        (String::from_utf8_lossy(bundle)
            .matches("BEGIN CERTIFICATE")
            .count()
            == 2)
            .then_some(())
    })
    .await;

    // A shoot with two gVisor pools, created as gardenlet creates them.
    let ns = cp.namespace(&admin, "shoot--rbac").await.unwrap();
    let workers = |pools: &[&str]| -> Value {
        pools.iter().map(|p| json!({"name": p, "cri": {"name": "containerd", "containerRuntimes": [{"type": "gvisor"}]}})).collect()
    };
    gardenlet::create_cluster(&admin, &ns, json!({
        "apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot", "metadata": {"name": "rbac", "namespace": "garden-test"},
        "spec": {"kubernetes": {"version": "1.34.2"}, "provider": {"type": "local", "workers": workers(&["pool-a", "pool-b"])}},
        "status": {"hibernated": false, "lastOperation": {"type": "Reconcile", "state": "Succeeded"}},
    })).await;
    let s = Shoot {
        client: admin.clone(),
        ns: ns.clone(),
    };
    // An unknown flag: a warning event; the re-reconcile repeats it (the event series is patched).
    let ts = s
        .gardenlet_create("pool-a", Some(gvisor_config(json!({"no-such-flag": "1"}))))
        .await;
    s.wait_ready("gvisor-pool-a", &ts).await;
    let ts = s.gardenlet_create("pool-b", None).await;
    s.wait_ready("gvisor-pool-b", &ts).await;
    let ts = s.annotate("gvisor-pool-a", "reconcile").await;
    s.wait_ready("gvisor-pool-a", &ts).await;
    // A providerConfig change: a new Secret, the ManagedResource patched.
    s.runtimes()
        .patch(
            "gvisor-pool-a",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"providerConfig": gvisor_config(json!({"net-raw": "true"}))}}),
            ),
        )
        .await
        .unwrap();
    let ts = s.annotate("gvisor-pool-a", "reconcile").await;
    s.wait_ready("gvisor-pool-a", &ts).await;

    // pool-b leaves the shoot: its ContainerRuntime is deleted and its objects go.
    s.set_workers(workers(&["pool-a"])).await;
    s.gardenlet_delete("gvisor-pool-b").await;
    s.wait_for(
        "gvisor-pool-b",
        "deleted",
        |cr: Option<&ContainerRuntime>| cr.is_none(),
    )
    .await;

    // The controller restarts (the Lease is released and taken again), then pool-a migrates
    // and is deleted.
    drop(controller);
    let _controller = start();
    eventually(60, "/readyz ok after restart", async || {
        http_get(health, "/readyz").filter(|(c, _)| *c == 200)
    })
    .await;
    s.annotate("gvisor-pool-a", "migrate").await;
    s.wait_for("gvisor-pool-a", "migrated", |cr| {
        cr.is_some_and(|c| c.metadata.finalizers.as_ref().is_none_or(|f| f.is_empty()))
    })
    .await;
    s.gardenlet_delete("gvisor-pool-a").await;
    s.wait_for("gvisor-pool-a", "deleted", |cr| cr.is_none())
        .await;
    let mrs = Api::<sandbox_api::ManagedResource>::namespaced(admin.clone(), &ns);
    eventually(60, "ManagedResources gone", async || {
        mrs.list(&Default::default())
            .await
            .ok()
            .filter(|l| l.items.is_empty())
            .map(|_| ())
    })
    .await;
    // Let the heartbeat and leader election renew at least once more.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let user = format!("system:serviceaccount:{RELEASE_NAMESPACE}:{SERVICE_ACCOUNT}");
    let (used, refused) = audit(cp.audit_log().unwrap(), &user);
    assert!(
        refused.is_empty(),
        "requests refused with the chart's RBAC: {refused:#?}"
    );
    let granted = grants(&rbac);
    let unused: Vec<_> = granted.difference(&used).collect();
    assert!(
        unused.is_empty(),
        "granted but never used by the scenarios: {unused:?}\nused: {used:#?}"
    );
    let ungranted: Vec<_> = used.difference(&granted).collect();
    assert!(
        ungranted.is_empty(),
        "used without a grant (impossible unless refused): {ungranted:?}"
    );
}
