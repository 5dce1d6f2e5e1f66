//! The whole chain on one machine, every component real: the product controller (as a
//! process, with the chart's flags and RBAC) reconciles a Cluster and ContainerRuntimes created
//! as gardenlet creates them; gardener-resource-manager applies the RuntimeClass and the
//! installer DaemonSet into a test shoot; the kubelet runs the node agent from the node-agent
//! OCI image imported into the node's containerd (image vector overwrite, no registry); the
//! agent installs runsc, restarts containerd once through systemd's D-Bus API, verifies and
//! labels the node; kube-scheduler puts a `runtimeClassName: gvisor` pod there, and its
//! `dmesg`, read through the API, shows gVisor. Then: a flag change, a dedicated (tainted)
//! pool, the agent pod deleted and the kubelet restarted mid-install, and gVisor removed
//! from the pool.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use sandbox_runtime::gvisor::{self, NODE_READY_LABEL};
use sandbox_testenv::chart::RELEASE_NAMESPACE;
use sandbox_testenv::gardenlet::Shoot;
use sandbox_testenv::node::BUSYBOX_IMAGE;
use sandbox_testenv::shoot::{NODE_NAME, POOL};
use sandbox_testenv::stack::{Stack, StackOptions};
use sandbox_testenv::{ShootBuilder, eventually, free_port};
use serde_json::{Value, json};

const IMAGE_REPOSITORY: &str = "localhost/runtime-sandbox-test/node-agent";
const IMAGE_TAG: &str = "e2e";
/// A second gVisor pool without nodes: it keeps the RuntimeClass when `POOL` drops gVisor.
const OTHER_POOL: &str = "other";
const TAINT_KEY: &str = "sandbox.gardener.cloud/untrusted";

fn workers(gvisor_pools: &[&str], taints: Value) -> Value {
    let mut all = vec![POOL, OTHER_POOL];
    all.dedup();
    Value::Array(
        all.iter()
            .map(|pool| {
                let runtimes: Vec<Value> = if gvisor_pools.contains(pool) {
                    vec![json!({"type": "gvisor"})]
                } else {
                    vec![]
                };
                let taints = if *pool == POOL {
                    taints.clone()
                } else {
                    json!([])
                };
                json!({"name": pool, "taints": taints,
                    "cri": {"name": "containerd", "containerRuntimes": runtimes}})
            })
            .collect(),
    )
}

fn pod(name: &str, runtime_class: Option<&str>, command: &str, restart: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "runtimeClassName": runtime_class,
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                "command": ["sh", "-c", command]}],
        },
    }))
    .unwrap()
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .map(|c| c.restart_count)
        .unwrap_or_default()
}

/// The scheduler's reason for a Pending pod.
fn unschedulable(p: &Pod) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .and_then(|c| c.message.clone())
}

/// Waits until condition `type_` of ContainerRuntime `name` satisfies `check`.
async fn wait_condition(
    seed: &Shoot,
    name: &str,
    type_: &str,
    what: &str,
    check: impl Fn(&sandbox_api::extension::Condition) -> bool,
) -> sandbox_api::extension::Condition {
    sandbox_testenv::eventually_or(120, &format!("{name} {type_} {what}"), async || {
        let cr = seed.runtimes().get(name).await.unwrap();
        let conditions = cr.status.map(|s| s.conditions).unwrap_or_default();
        match conditions.iter().find(|c| c.type_ == type_ && check(c)) {
            Some(c) => Ok(c.clone()),
            None => Err(format!("conditions: {conditions:#?}")),
        }
    })
    .await
}

struct World {
    seed: Shoot,
    shoot: kube::Client,
    nodes: Api<Node>,
    pods: Api<Pod>,
    system_pods: Api<Pod>,
    daemon_sets: Api<DaemonSet>,
}

impl World {
    async fn node_ready_label(&self) -> bool {
        let node = self.nodes.get(NODE_NAME).await.unwrap();
        node.metadata
            .labels
            .unwrap_or_default()
            .get(NODE_READY_LABEL)
            .is_some_and(|v| v == "true")
    }

    /// The installer DaemonSet rolled out with `generation` observed and its pod ready.
    async fn installer_ready(&self) -> Option<DaemonSet> {
        let ds = self
            .daemon_sets
            .get_opt(&gvisor::AGENT.installer_name(POOL))
            .await
            .ok()??;
        let status = ds.status.as_ref()?;
        let done = status.observed_generation == ds.metadata.generation
            && status.desired_number_scheduled == 1
            && status.updated_number_scheduled == Some(1)
            && status.number_ready == 1;
        done.then_some(ds)
    }

    async fn wait_verified(&self, secs: u64, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !(self.installer_ready().await.is_some() && self.node_ready_label().await) {
            if Instant::now() > deadline {
                panic!(
                    "timed out after {secs} s: {what}\n{}",
                    self.diagnose().await
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The installer's DaemonSet status, its pods' status and logs, for a failing test.
    async fn diagnose(&self) -> String {
        let ds = self
            .daemon_sets
            .get_opt(&gvisor::AGENT.installer_name(POOL))
            .await;
        let mut out = format!("DaemonSet: {:#?}\n", ds.map(|d| d.map(|d| d.status)));
        for p in self
            .system_pods
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let name = p.metadata.name.clone().unwrap_or_default();
            let logs = self
                .system_pods
                .logs(
                    &name,
                    &LogParams {
                        tail_lines: Some(40),
                        ..Default::default()
                    },
                )
                .await
                .unwrap_or_else(|e| format!("(no logs: {e})"));
            out.push_str(&format!("pod {name}: {:#?}\nlogs:\n{logs}\n", p.status));
        }
        out
    }

    async fn run_to_completion(&self, pod: &Pod) -> String {
        let name = pod.metadata.name.clone().unwrap();
        self.pods.create(&PostParams::default(), pod).await.unwrap();
        let done = self
            .wait_pod(&name, 120, "to finish", |p| {
                matches!(phase(p), "Succeeded" | "Failed")
            })
            .await;
        assert_eq!(phase(&done), "Succeeded", "{name}: {:#?}", done.status);
        self.pods.logs(&name, &LogParams::default()).await.unwrap()
    }

    async fn running(&self, name: &str) -> Pod {
        self.wait_pod(name, 120, "Running", |p| phase(p) == "Running")
            .await
    }

    /// Waits until pod `name` satisfies `check`; fails with its status and events.
    async fn wait_pod(
        &self,
        name: &str,
        secs: u64,
        what: &str,
        check: impl Fn(&Pod) -> bool,
    ) -> Pod {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let p = self.pods.get(name).await.unwrap();
            if check(&p) {
                return p;
            }
            if Instant::now() > deadline {
                let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(
                    self.shoot.clone(),
                    "default",
                )
                .list(&ListParams::default())
                .await
                .map(|l| {
                    l.items
                        .iter()
                        .map(|e| {
                            format!(
                                "{} {}: {}",
                                e.involved_object.name.clone().unwrap_or_default(),
                                e.reason.clone().unwrap_or_default(),
                                e.message.clone().unwrap_or_default()
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default();
                panic!(
                    "timed out after {secs} s: pod {name} {what}: {:#?}\nevents:\n{events}",
                    p.status
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Sets the pool's gVisor flags (`None`: no providerConfig) and asks for a reconcile as
    /// gardenlet does; waits until it succeeded.
    async fn set_flags(&self, flags: Option<Value>) {
        let config = flags.map(|flags| {
            json!({
            "apiVersion": "gvisor.runtime.extensions.config.gardener.cloud/v1alpha1",
            "kind": "GVisorConfiguration", "configFlags": flags})
        });
        let name = format!("gvisor-{POOL}");
        self.seed
            .runtimes()
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"providerConfig": config}})),
            )
            .await
            .unwrap();
        let ts = self.seed.annotate(&name, "reconcile").await;
        self.seed.wait_ready(&name, &ts).await;
    }

    /// Deletes the current installer pod (the DaemonSet makes a new one).
    async fn delete_installer_pod(&self) {
        let pod = self.installer_pod().await.unwrap();
        self.system_pods
            .delete(
                pod.metadata.name.as_deref().unwrap(),
                &DeleteParams::default(),
            )
            .await
            .unwrap();
    }

    async fn installer_pod(&self) -> Option<Pod> {
        self.system_pods
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|p| {
                p.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with(&gvisor::AGENT.installer_name(POOL)))
                    && p.metadata.deletion_timestamp.is_none()
            })
    }
}

#[tokio::test]
async fn a_gvisor_pod_runs_on_a_node_our_agent_prepared_and_the_pool_can_drop_it_again() {
    let binary = env!("CARGO_BIN_EXE_gardener-extension-runtime-sandbox");
    let (health, metrics) = (free_port().unwrap(), free_port().unwrap());
    // The chart's flags, health refreshed every 2 s instead of 30 s, so the test sees changes
    // quickly; our image by overwrite.
    let mut controller_args = support::chart_controller_args(
        &["--set", "controllers.healthcheck.syncPeriodSeconds=2"],
        health,
        metrics,
    );
    controller_args.push("--log-format=text".into());
    let stack = Stack::start(StackOptions {
        namespace: "shoot--e2e--sandbox",
        shoot: ShootBuilder::new("sandbox")
            .namespace("garden-e2e")
            .workers(workers(&[POOL, OTHER_POOL], json!([])))
            .build(),
        binary: binary.as_ref(),
        image: &format!("{IMAGE_REPOSITORY}:{IMAGE_TAG}"),
        controller_args,
        controller_env: vec![("LEADER_ELECTION_NAMESPACE", RELEASE_NAMESPACE)],
        health,
        show_logs: true,
    })
    .await
    .unwrap();
    let _seed_logs = stack.seed.logs_on_panic();
    let _shoot_logs = stack.shoot.logs_on_panic();
    let (admin, ns, shoot) = (&stack.admin, &stack.ns, &stack.shoot);

    let client = shoot.client().await.unwrap();
    let w = World {
        seed: Shoot {
            client: admin.clone(),
            ns: ns.clone(),
        },
        shoot: client.clone(),
        nodes: Api::all(client.clone()),
        pods: Api::namespaced(client.clone(), "default"),
        system_pods: Api::namespaced(client.clone(), "kube-system"),
        daemon_sets: Api::namespaced(client.clone(), "kube-system"),
    };
    let restarts_of_containerd = || stack.containerd_restarts();

    // 1. gardenlet creates the ContainerRuntimes; our node gets gVisor; a gVisor pod runs.
    let ts = w.seed.gardenlet_create(POOL, None).await;
    w.seed.wait_ready(&format!("gvisor-{POOL}"), &ts).await;
    let ts = w.seed.gardenlet_create(OTHER_POOL, None).await;
    w.seed
        .wait_ready(&format!("gvisor-{OTHER_POOL}"), &ts)
        .await;
    w.wait_verified(180, "the installer ready and the node labelled")
        .await;
    assert!(
        Api::<RuntimeClass>::all(w.shoot.clone())
            .get_opt("gvisor")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        restarts_of_containerd(),
        1,
        "one containerd restart for the install"
    );
    let dmesg = w
        .run_to_completion(&pod("dmesg", Some("gvisor"), "dmesg", "Never"))
        .await;
    assert!(dmesg.contains("gVisor"), "dmesg in the gVisor pod: {dmesg}");
    // Health reported to Gardener: both conditions True, as the library words them.
    let cr_name = format!("gvisor-{POOL}");
    for type_ in ["SystemComponentsHealthy", "EveryNodeReady"] {
        let c = wait_condition(&w.seed, &cr_name, type_, "True", |c| c.status == "True").await;
        assert_eq!(c.reason, "HealthCheckSuccessful");
        assert_eq!(c.message, "All health checks successful");
    }
    // The health check reads the shoot with its own token, which the real
    // gardener-resource-manager issued into our shoot-access Secret (with the shoot's CA): it
    // lists nodes and is refused everything else.
    let access = eventually(60, "the node-reader token issued", async || {
        let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(admin.clone(), ns)
            .get("shoot-access-extension-runtime-gvisor")
            .await
            .ok()?;
        let text = String::from_utf8(secret.data?.get("kubeconfig")?.0.clone()).ok()?;
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&text).ok()?;
        let token = serde_json::to_value(&kubeconfig).ok()?["users"][0]["user"]["token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(String::from);
        token.map(|_| kubeconfig)
    })
    .await;
    let reader = sandbox_testenv::client_for(access).await.unwrap();
    let listed = Api::<Node>::all(reader.clone())
        .list(&Default::default())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1, "the token lists the shoot's node");
    match Api::<k8s_openapi::api::core::v1::Secret>::namespaced(reader, "kube-system")
        .list(&Default::default())
        .await
    {
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        other => panic!("the health check's token read the shoot's Secrets: {other:?}"),
    }
    // A long-running gVisor pod and a runc pod that must survive what follows.
    w.pods
        .create(
            &PostParams::default(),
            &pod("sandboxed", Some("gvisor"), "sleep 100000", "Always"),
        )
        .await
        .unwrap();
    w.pods
        .create(
            &PostParams::default(),
            &pod("plain", None, "sleep 100000", "Always"),
        )
        .await
        .unwrap();
    let sandboxed_uid = w.running("sandboxed").await.metadata.uid;
    let plain_uid = w.running("plain").await.metadata.uid;

    // 2. A flag change rolls the DaemonSet and restarts containerd once; the gVisor pod lives.
    let generation = w
        .daemon_sets
        .get(&gvisor::AGENT.installer_name(POOL))
        .await
        .unwrap()
        .metadata
        .generation;
    w.set_flags(Some(json!({"net-raw": "true"}))).await;
    eventually(60, "the installer DaemonSet's new generation", async || {
        let ds = w
            .daemon_sets
            .get(&gvisor::AGENT.installer_name(POOL))
            .await
            .ok()?;
        (ds.metadata.generation > generation).then_some(())
    })
    .await;
    w.wait_verified(180, "the node re-verified after the flag change")
        .await;
    assert_eq!(
        restarts_of_containerd(),
        2,
        "one more containerd restart for the flag change"
    );
    let sandboxed = w.running("sandboxed").await;
    assert_eq!(sandboxed.metadata.uid, sandboxed_uid);
    assert_eq!(restarts(&sandboxed), 0, "the gVisor pod kept running");

    // 2b. A node whose containerd configuration is broken shows up by name, with the agent's
    //     reason, in EveryNodeReady; repaired, the condition turns True again.
    let config = shoot.node().config_path();
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, "version = 3\n[plugins\n").unwrap();
    w.delete_installer_pod().await;
    let broken = wait_condition(
        &w.seed,
        &cr_name,
        "EveryNodeReady",
        "False naming the node",
        |c| c.status == "False",
    )
    .await;
    assert_eq!(broken.reason, "HealthCheckUnsuccessful");
    assert!(
        broken.message.starts_with(&format!(
            "0 of 1 nodes of pool {POOL} have gVisor ready; not ready: {NODE_NAME} (ContainerdConfigInvalid: "
        )),
        "{}",
        broken.message
    );
    assert!(
        !w.node_ready_label().await,
        "no ready label on a broken node"
    );
    std::fs::write(&config, &good).unwrap();
    w.delete_installer_pod().await;
    w.wait_verified(180, "the node verified again after the repair")
        .await;
    let repaired = wait_condition(&w.seed, &cr_name, "EveryNodeReady", "True again", |c| {
        c.status == "True"
    })
    .await;
    assert!(repaired.last_transition_time.0 > broken.last_transition_time.0);

    // 3. A dedicated pool: tainted node, the taint in the Cluster, the RuntimeClass tolerates it.
    w.nodes
        .patch(
            NODE_NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": [{"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}]}})),
        )
        .await
        .unwrap();
    w.seed
        .set_workers(workers(
            &[POOL, OTHER_POOL],
            json!([{"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}]),
        ))
        .await;
    let ts = w
        .seed
        .annotate(&format!("gvisor-{POOL}"), "reconcile")
        .await;
    w.seed.wait_ready(&format!("gvisor-{POOL}"), &ts).await;
    eventually(
        60,
        "the RuntimeClass tolerating the pool's taint",
        async || {
            let rc = Api::<RuntimeClass>::all(w.shoot.clone())
                .get("gvisor")
                .await
                .ok()?;
            let tolerations = rc.scheduling?.tolerations?;
            tolerations
                .iter()
                .any(|t| t.key.as_deref() == Some(TAINT_KEY))
                .then_some(())
        },
    )
    .await;
    w.pods
        .create(
            &PostParams::default(),
            &pod("dedicated", Some("gvisor"), "sleep 100000", "Always"),
        )
        .await
        .unwrap();
    w.pods
        .create(
            &PostParams::default(),
            &pod("outsider", None, "sleep 100000", "Always"),
        )
        .await
        .unwrap();
    w.running("dedicated").await;
    let reason = eventually(60, "the plain pod Pending for the taint", async || {
        let p = w.pods.get("outsider").await.ok()?;
        unschedulable(&p)
    })
    .await;
    assert!(reason.contains("untolerated taint"), "{reason}");
    for name in ["dedicated", "outsider"] {
        w.pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    w.nodes
        .patch(
            NODE_NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": null}})),
        )
        .await
        .unwrap();
    w.seed
        .set_workers(workers(&[POOL, OTHER_POOL], json!([])))
        .await;

    // 4. The agent pod deleted in the middle of an install, then the kubelet restarted in the
    //    middle of one: both converge with the node verified.
    let before = w.installer_pod().await.unwrap().metadata.uid;
    w.set_flags(Some(json!({"net-raw": "false"}))).await;
    let fresh = eventually(120, "the rolled installer pod", async || {
        w.installer_pod().await.filter(|p| p.metadata.uid != before)
    })
    .await;
    w.system_pods
        .delete(
            fresh.metadata.name.as_deref().unwrap(),
            &DeleteParams::default(),
        )
        .await
        .unwrap();
    // The DaemonSet's status still counts the deleted pod as ready for a moment: wait for its
    // replacement first, then for the node to be verified again.
    let replacement = eventually(120, "the deleted agent pod's replacement", async || {
        w.installer_pod()
            .await
            .filter(|p| p.metadata.uid != fresh.metadata.uid)
    })
    .await;
    w.wait_verified(180, "converged after the agent pod was deleted")
        .await;
    let before = replacement.metadata.uid;
    w.set_flags(None).await;
    eventually(120, "the rolled installer pod", async || {
        w.installer_pod().await.filter(|p| p.metadata.uid != before)
    })
    .await;
    shoot.stop_kubelet();
    tokio::time::sleep(Duration::from_secs(2)).await;
    shoot.start_kubelet().unwrap();
    w.wait_verified(180, "converged after the kubelet restarted")
        .await;
    let sandboxed = w.running("sandboxed").await;
    assert_eq!(sandboxed.metadata.uid, sandboxed_uid);

    // 5. gVisor leaves the pool: Cluster first, then the ContainerRuntime, as gardenlet does.
    w.seed.set_workers(workers(&[OTHER_POOL], json!([]))).await;
    w.nodes
        .patch(
            NODE_NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"containerruntime.worker.gardener.cloud/gvisor": null}}})),
        )
        .await
        .unwrap();
    w.seed.gardenlet_delete(&format!("gvisor-{POOL}")).await;
    // The gVisor pod `sandboxed` still runs there: the cleanup waits for it (its shim needs
    // runsc to stop and delete it) and says so on the node; the ContainerRuntime stays.
    let state = eventually(
        240,
        "the cleanup waiting for the running gVisor pod",
        async || {
            let node = w.nodes.get(NODE_NAME).await.ok()?;
            let state = node
                .metadata
                .annotations?
                .get(&sandbox_runtime::node_plan::state_annotation(
                    NODE_READY_LABEL,
                ))?
                .clone();
            state.contains("SandboxesRunning").then_some(state)
        },
    )
    .await;
    assert!(state.contains("sandboxed"), "{state}");
    assert!(
        w.seed
            .runtimes()
            .get_opt(&format!("gvisor-{POOL}"))
            .await
            .unwrap()
            .is_some(),
        "the ContainerRuntime went while a gVisor pod still ran"
    );
    assert_eq!(
        phase(&w.pods.get("sandboxed").await.unwrap()),
        "Running",
        "the gVisor pod was stopped by the cleanup"
    );
    w.pods
        .delete("sandboxed", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        240,
        "the ContainerRuntime's finalizer removed and the object gone",
        async || {
            w.seed
                .runtimes()
                .get_opt(&format!("gvisor-{POOL}"))
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    assert!(!w.node_ready_label().await, "the ready label is gone");
    assert!(
        w.daemon_sets
            .get_opt(&gvisor::AGENT.installer_name(POOL))
            .await
            .unwrap()
            .is_none()
            && w.daemon_sets
                .get_opt(&gvisor::AGENT.cleanup_name(POOL))
                .await
                .unwrap()
                .is_none(),
        "installer and cleanup DaemonSets gone"
    );
    w.pods
        .create(
            &PostParams::default(),
            &pod("late", Some("gvisor"), "sleep 100000", "Always"),
        )
        .await
        .unwrap();
    let reason = eventually(60, "the late gVisor pod Pending", async || {
        let p = w.pods.get("late").await.ok()?;
        unschedulable(&p)
    })
    .await;
    assert!(
        reason.contains("didn't match Pod's node affinity/selector"),
        "{reason}"
    );
    let plain = w.running("plain").await;
    assert_eq!(plain.metadata.uid, plain_uid);
    assert_eq!(restarts(&plain), 0, "the runc pod was not touched");
}
