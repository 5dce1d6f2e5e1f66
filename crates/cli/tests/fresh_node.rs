//! A fresh node of a gVisor pool, in both installation modes, every part real: the product
//! controller (chart flags and RBAC, `installation.mode` set through the chart), the seed
//! webhook registered with the seed's API server, gardener-resource-manager applying into the
//! test shoot, the kubelet registering its node, kube-scheduler placing a
//! `runtimeClassName: gvisor` pod created before the node existed.
//!
//! - `osc`: gardenlet's OperatingSystemConfig for the pool goes through the seed's API server,
//!   which calls our webhook (`failurePolicy: Fail`); the real gardener-node-agent applies the
//!   OSC on the machine before its kubelet starts, pulling our node image from a real
//!   registry (CNCF distribution, through the mirror the OSC configures). The kubelet then
//!   registers the node reporting `runsc` in `status.runtimeHandlers`; the controller labels
//!   the node; the pod runs. No DaemonSet, no pod with host access.
//! - `daemonset`: the same fresh node gets our installer DaemonSet's pod after it registers.
//!
//! Each prints its figures (docs/benchmarks.md): node registered → ready label → first
//! gVisor pod Running; a flag change → node re-verified; containerd restarts per change; pods
//! with host access on the node. In `osc` the ContainerRuntime's deletion then takes gVisor
//! off the node through the OSC's `op: remove` and waits until the kubelet stops reporting
//! the handler.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, LogParams, Patch,
    PatchParams, PostParams,
};
use sandbox_runtime::gvisor::NODE_READY_LABEL;
use sandbox_runtime::osc::InstallationMode;
use sandbox_testenv::chart::RELEASE_NAMESPACE;
use sandbox_testenv::gardener_node::{self, CgroupDriver, GardenerNodeAgent};
use sandbox_testenv::gardenlet::{self, Shoot};
use sandbox_testenv::node::{BUSYBOX_IMAGE, Flavor};
use sandbox_testenv::registry::Registry;
use sandbox_testenv::shoot::{NODE_NAME, POOL, TestShoot};
use sandbox_testenv::{ControlPlane, ShootBuilder, Tool, eventually, free_port, http_get};
use serde_json::{Value, json};

const UPSTREAM: &str = "registry.runtime-sandbox.test";
const REPOSITORY: &str = "gardener-extension-runtime-sandbox/node-agent";
const GVISOR_POOL_LABEL: (&str, &str) = ("containerruntime.worker.gardener.cloud/gvisor", "true");
const OSC_NAME: &str = "cloud-config-sandbox-reconcile";

fn workers(gvisor: bool, flags: Option<Value>) -> Value {
    let runtimes = if gvisor {
        let config = flags.map(|f| {
            json!({"apiVersion": "gvisor.runtime.extensions.config.gardener.cloud/v1alpha1",
                "kind": "GVisorConfiguration", "configFlags": f})
        });
        json!([{"type": "gvisor", "providerConfig": config}])
    } else {
        json!([])
    };
    json!([{"name": POOL, "cri": {"name": "containerd", "containerRuntimes": runtimes}}])
}

fn pod(name: &str, command: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "runtimeClassName": "gvisor",
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                "command": ["sh", "-c", command]}],
        },
    }))
    .unwrap()
}

fn osc_api(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(
        "extensions.gardener.cloud",
        "v1alpha1",
        "OperatingSystemConfig",
    );
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

/// The pool's OSC as gardenlet and an OS extension write it (generation `generation`), with
/// a registry mirror to `registry`.
fn gardenlet_osc(registry: &str, generation: u32) -> Value {
    let mut osc = gardener_node::operating_system_config(Flavor::V2, CgroupDriver::Cgroupfs, 1);
    osc["metadata"] = json!({"name": OSC_NAME, "labels": {"worker.gardener.cloud/pool": POOL}});
    osc["spec"]["files"][0]["content"]["inline"]["data"] = json!(generation.to_string());
    osc["spec"]["criConfig"]["containerd"]["registries"]
        .as_array_mut()
        .unwrap()
        .push(json!({
            "upstream": UPSTREAM,
            "server": format!("https://{UPSTREAM}"),
            "hosts": [{"url": format!("http://{registry}"), "capabilities": ["pull", "resolve"]}],
        }));
    osc
}

/// gardenlet writes the pool's OSC (create or update); the seed's API server calls our
/// webhook; returns the OSC as stored.
async fn write_osc(api: &Api<DynamicObject>, osc: &Value) -> Value {
    let object: DynamicObject = serde_json::from_value(osc.clone()).unwrap();
    let stored = eventually(60, "the OSC admitted through our webhook", async || {
        let result = match api.get_opt(OSC_NAME).await.unwrap() {
            None => api.create(&PostParams::default(), &object).await,
            Some(current) => {
                let mut next = object.clone();
                next.metadata.resource_version = current.metadata.resource_version;
                api.replace(OSC_NAME, &PostParams::default(), &next).await
            }
        };
        match result {
            Ok(o) => Some(o),
            Err(e) => {
                eprintln!("writing the OSC: {e}");
                None
            }
        }
    })
    .await;
    serde_json::to_value(stored).unwrap()
}

fn plugin_paths(osc: &Value) -> Vec<(String, String)> {
    osc["spec"]["criConfig"]["containerd"]["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["op"].as_str().unwrap_or("add").to_string(),
                p["path"].to_string(),
            )
        })
        .collect()
}

struct Figures {
    registered_to_ready: Duration,
    ready_to_running: Duration,
    install_restarts: usize,
    flag_change: Duration,
    flag_restarts: usize,
    host_access_pods: usize,
}

/// Pods on the node with access to the host (privileged, a host namespace or a hostPath).
async fn host_access_pods(shoot: &kube::Client) -> Vec<String> {
    Api::<Pod>::all(shoot.clone())
        .list(&ListParams::default().fields(&format!("spec.nodeName={NODE_NAME}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| {
            let spec = p.spec.as_ref().unwrap();
            let privileged = spec.containers.iter().any(|c| {
                c.security_context
                    .as_ref()
                    .and_then(|s| s.privileged)
                    .unwrap_or(false)
            });
            let host = spec.host_pid.unwrap_or(false)
                || spec.host_network.unwrap_or(false)
                || spec.host_ipc.unwrap_or(false);
            let host_path = spec.volumes.iter().flatten().any(|v| v.host_path.is_some());
            privileged || host || host_path
        })
        .map(|p| p.metadata.name.unwrap_or_default())
        .collect()
}

async fn wait_until<T>(secs: u64, what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn fresh_node(mode: InstallationMode) -> Figures {
    let binary = env!("CARGO_BIN_EXE_gardener-extension-runtime-sandbox");
    let seed_cp = ControlPlane::start().await.unwrap();
    let _seed_logs = seed_cp.logs_on_panic();
    let admin = seed_cp.client().await.unwrap();
    let ns = seed_cp
        .namespace(&admin, &format!("shoot--{mode}--sandbox"))
        .await
        .unwrap();
    Api::<k8s_openapi::api::core::v1::Namespace>::all(admin.clone())
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"gardener.cloud/role": "shoot"}}})),
        )
        .await
        .unwrap();
    gardenlet::create_cluster(
        &admin,
        &ns,
        ShootBuilder::new("sandbox")
            .namespace("garden-fresh")
            .workers(workers(true, None))
            .build(),
    )
    .await;
    let seed = Shoot {
        client: admin.clone(),
        ns: ns.clone(),
    };
    // The machine boots: containerd and D-Bus, no kubelet yet.
    let shoot = TestShoot::start_with(&seed_cp, &ns, &[GVISOR_POOL_LABEL], false)
        .await
        .unwrap();
    let _shoot_logs = shoot.logs_on_panic();

    // Our node image: in a registry (osc), or in the node's containerd (daemonset, as the
    // e2e does: the kubelet never pulls it).
    let registry = Registry::start().await.unwrap();
    let overwrite = match mode {
        InstallationMode::Osc => {
            let tag = "v0.1.0-gvisor-fresh";
            let reference = format!("{UPSTREAM}/{REPOSITORY}:{tag}");
            let arch = sandbox_image::Arch::host().unwrap();
            let (archive, recorded) = sandbox_testenv::images::recorded_gvisor_agent_image(
                &reference,
                &[(arch, binary.as_ref(), &Tool::Gvisor.path().unwrap())],
            )
            .unwrap();
            let digest = registry.push(&archive, REPOSITORY, tag).await.unwrap();
            let entry = json!({"images": [{
                "name": sandbox_runtime::image::NODE_AGENT_IMAGE,
                "repository": format!("{UPSTREAM}/{REPOSITORY}"),
                "tag": format!("{tag}@{digest}"),
                "binaries": recorded,
            }]});
            let path = seed_cp.root().join("imagevector-overwrite.yaml");
            std::fs::write(&path, serde_saphyr::to_string(&entry).unwrap()).unwrap();
            path
        }
        InstallationMode::DaemonSet => shoot
            .provide_node_agent_image(
                "localhost/runtime-sandbox-test/node-agent",
                "fresh",
                binary.as_ref(),
            )
            .unwrap(),
    };

    // The controller with the chart's flags and identity, the mode through the chart value;
    // its webhook registered with the seed's API server by URL.
    let (health, metrics) = (free_port().unwrap(), free_port().unwrap());
    let mode_value = format!("installation.mode={mode}");
    let args = support::chart_controller_args(
        &[
            "--set",
            "controllers.healthcheck.syncPeriodSeconds=1",
            "--set",
            &mode_value,
        ],
        health,
        metrics,
    );
    assert!(
        args.contains(&format!("--installation-mode={mode}")),
        "{args:?}"
    );
    let webhook_port = args
        .iter()
        .find_map(|a| a.strip_prefix("--webhook-config-server-port="))
        .unwrap()
        .to_string();
    let mut args: Vec<String> = args
        .into_iter()
        .filter(|a| !a.starts_with("--webhook-config-namespace="))
        .collect();
    args.push("--webhook-config-mode=url".into());
    args.push(format!("--webhook-config-url=127.0.0.1:{webhook_port}"));
    args.push(format!("--webhook-config-namespace={RELEASE_NAMESPACE}"));
    let (_rbac, kubeconfig) = sandbox_testenv::chart::install_identity(&seed_cp, &[])
        .await
        .unwrap();
    let kubeconfig_path = seed_cp.root().join("kubeconfig-chart-serviceaccount");
    std::fs::write(
        &kubeconfig_path,
        serde_json::to_string(&kubeconfig).unwrap(),
    )
    .unwrap();
    let mut controller = std::process::Command::new(binary)
        .args(&args)
        .arg("--log-format=text")
        .arg(format!("--kubeconfig={}", kubeconfig_path.display()))
        .arg(format!(
            "--shoot-api-server={}",
            shoot.control_plane().server_url()
        ))
        .env("LEADER_ELECTION_NAMESPACE", RELEASE_NAMESPACE)
        .env("IMAGEVECTOR_OVERWRITE", &overwrite)
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _controller = Kill(std::mem::replace(
        &mut controller,
        std::process::Command::new("true").spawn().unwrap(),
    ));
    eventually(60, "the controller's /readyz", async || {
        http_get(health, "/readyz").filter(|(c, _)| *c == 200)
    })
    .await;

    // gardenlet creates the ContainerRuntime; the RuntimeClass reaches the shoot.
    let cr = format!("gvisor-{POOL}");
    let ts = seed.gardenlet_create(POOL, None).await;
    seed.wait_ready(&cr, &ts).await;
    let client = shoot.client().await.unwrap();
    eventually(60, "the RuntimeClass in the shoot", async || {
        Api::<RuntimeClass>::all(client.clone())
            .get_opt("gvisor")
            .await
            .unwrap()
    })
    .await;
    let containerd_restarts = || {
        shoot
            .systemd()
            .calls()
            .iter()
            .filter(|(unit, _)| unit == "containerd.service")
            .count()
    };

    // osc: the machine's first boot applies the pool's OSC before the kubelet starts.
    let oscs = osc_api(&admin, &ns);
    let mut gna = None;
    if mode == InstallationMode::Osc {
        let stored = write_osc(&oscs, &gardenlet_osc(&registry.host(), 1)).await;
        assert!(
            plugin_paths(&stored).contains(&(
                "add".into(),
                json!([
                    "io.containerd.grpc.v1.cri",
                    "containerd",
                    "runtimes",
                    "runsc"
                ])
                .to_string()
            )),
            "the webhook did not add the handler: {stored:#}"
        );
        let mut agent = GardenerNodeAgent::start_on_shoot_node(
            shoot.control_plane(),
            shoot.node().clone(),
            NODE_NAME,
            &shoot.bus_address(),
        )
        .await
        .unwrap();
        let spec = stored["spec"].clone();
        agent
            .apply_next_with(Duration::from_secs(180), |o| o["spec"] = spec)
            .await
            .unwrap_or_else(|e| panic!("{e}\nregistry:\n{}", registry.log_tail(20)));
        assert!(
            registry.blob_downloads(REPOSITORY) > 0,
            "no pull from the registry"
        );
        let cri = sandbox_node_agent::cri::Cri::new(shoot.node().socket());
        wait_until(60, "containerd loads runsc", async || {
            (cri.handler("runsc", "io.containerd.runsc.v1").await.ok()
                == Some(sandbox_node_agent::cri::HandlerState::Loaded))
            .then_some(())
        })
        .await;
        gna = Some(agent);
    }
    let restarts_before_kubelet = containerd_restarts();
    let nodes: Api<Node> = Api::all(client.clone());
    assert!(
        nodes.get_opt(NODE_NAME).await.unwrap().is_none(),
        "the kubelet has not run yet"
    );

    // A gVisor pod waits for a node; the kubelet starts and registers one.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod("first", "dmesg; sleep 100000"))
        .await
        .unwrap();
    shoot.start_kubelet().unwrap();
    let registered = wait_until(120, "the node registers", async || {
        nodes
            .get_opt(NODE_NAME)
            .await
            .unwrap()
            .map(|_| Instant::now())
    })
    .await;
    let ready = wait_until(240, "the node's ready label", async || {
        let node = nodes.get(NODE_NAME).await.unwrap();
        node.metadata
            .labels
            .unwrap_or_default()
            .get(NODE_READY_LABEL)
            .is_some_and(|v| v == "true")
            .then(Instant::now)
    })
    .await;
    let running = wait_until(180, "the first gVisor pod Running", async || {
        let p = pods.get("first").await.unwrap();
        (p.status.and_then(|s| s.phase).as_deref() == Some("Running")).then(Instant::now)
    })
    .await;
    let logs = eventually(30, "the pod's dmesg", async || {
        pods.logs("first", &LogParams::default())
            .await
            .ok()
            .filter(|l| l.contains("gVisor"))
    })
    .await;
    assert!(logs.contains("gVisor"), "{logs}");
    // What the label stands for: the kubelet reports the handler (in daemonset mode it does
    // so within its status period after our agent's restart; the agent's CRI check came first).
    eventually(60, "the kubelet reports runsc", async || {
        let node = nodes.get(NODE_NAME).await.unwrap();
        node.status
            .and_then(|s| s.runtime_handlers)
            .unwrap_or_default()
            .into_iter()
            .any(|h| h.name.as_deref() == Some("runsc"))
            .then_some(())
    })
    .await;
    let install_restarts = containerd_restarts();
    let host_access = host_access_pods(&client).await;
    match mode {
        InstallationMode::Osc => {
            assert!(
                host_access.is_empty(),
                "pods with host access: {host_access:?}"
            );
            assert_eq!(
                restarts_before_kubelet, install_restarts,
                "a restart after the kubelet started"
            );
            let daemon_sets = Api::<k8s_openapi::api::apps::v1::DaemonSet>::namespaced(
                client.clone(),
                "kube-system",
            )
            .list(&ListParams::default())
            .await
            .unwrap();
            assert!(daemon_sets.items.is_empty(), "a DaemonSet in osc mode");
        }
        InstallationMode::DaemonSet => assert_eq!(host_access.len(), 1, "{host_access:?}"),
    }
    let everyone = eventually(60, "EveryNodeReady True", async || {
        let cr = seed.runtimes().get(&cr).await.unwrap();
        cr.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "EveryNodeReady" && c.status == "True")
    })
    .await;
    assert_eq!(everyone.reason, "HealthCheckSuccessful");
    if mode == InstallationMode::Osc {
        // The labeller's token (issued by the real gardener-resource-manager) may change our
        // ready label, and nothing else on a node: the shoot's policy refuses the rest.
        let access = eventually(60, "the shoot-access token", async || {
            let secret = seed
                .secrets()
                .get("shoot-access-extension-runtime-gvisor")
                .await
                .ok()?;
            let text = String::from_utf8(secret.data?.get("kubeconfig")?.0.clone()).ok()?;
            let kubeconfig = kube::config::Kubeconfig::from_yaml(&text).ok()?;
            let token = serde_json::to_value(&kubeconfig).ok()?["users"][0]["user"]["token"]
                .as_str()
                .is_some_and(|t| !t.is_empty());
            token.then_some(kubeconfig)
        })
        .await;
        let labeller = sandbox_testenv::client_for(access).await.unwrap();
        let as_labeller: Api<Node> = Api::all(labeller);
        for (what, patch) in [
            (
                "another label",
                json!({"metadata": {"labels": {"evil": "true"}}}),
            ),
            (
                "a taint",
                json!({"spec": {"taints": [{"key": "evil", "effect": "NoSchedule"}]}}),
            ),
            (
                "the ready label set to another value",
                json!({"metadata": {"labels": {NODE_READY_LABEL: "yes"}}}),
            ),
        ] {
            match as_labeller
                .patch(NODE_NAME, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Err(kube::Error::Api(e)) if e.code == 403 || e.code == 422 => {}
                other => panic!("the labeller's token changed {what}: {other:?}"),
            }
        }
    }

    // A flag change, as gardenlet makes it: the Cluster and the ContainerRuntime, a reconcile,
    // and (osc) the pool's OSC written again.
    let flags = json!({"net-raw": "true"});
    let system: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    // The installer's pods before the change, by UID: a creationTimestamp has whole seconds
    // only, and the rollout often creates the new pod within the second of the change.
    let installers_before: Vec<String> = system
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.uid)
        .collect();
    let restarts = containerd_restarts();
    let started = Instant::now();
    seed.set_workers(workers(true, Some(flags.clone()))).await;
    seed.runtimes()
        .patch(
            &cr,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"providerConfig": {
                "apiVersion": "gvisor.runtime.extensions.config.gardener.cloud/v1alpha1",
                "kind": "GVisorConfiguration", "configFlags": flags}}})),
        )
        .await
        .unwrap();
    let ts = seed.annotate(&cr, "reconcile").await;
    seed.wait_ready(&cr, &ts).await;
    match mode {
        InstallationMode::Osc => {
            let stored = write_osc(&oscs, &gardenlet_osc(&registry.host(), 2)).await;
            let spec = stored["spec"].clone();
            gna.as_mut()
                .unwrap()
                .apply_next_with(Duration::from_secs(120), |o| o["spec"] = spec)
                .await
                .unwrap();
        }
        InstallationMode::DaemonSet => {
            // The installer rolls out with the new plan; the new pod verifies and labels.
            wait_until(
                180,
                "the installer's new pod verified the node",
                async || {
                    let pods = system.list(&ListParams::default()).await.unwrap().items;
                    let fresh = pods.iter().any(|p| {
                        p.metadata
                            .uid
                            .as_ref()
                            .is_some_and(|uid| !installers_before.contains(uid))
                            && p.status
                                .as_ref()
                                .and_then(|s| s.container_statuses.as_ref())
                                .is_some_and(|c| c.iter().all(|c| c.ready))
                    });
                    fresh.then_some(())
                },
            )
            .await;
        }
    }
    // Re-verified: the label is on and a new pod runs with the new flag.
    let flag_pod = pod(
        "net-raw",
        "cat /proc/self/status >/dev/null; dmesg; sleep 100000",
    );
    pods.create(&PostParams::default(), &flag_pod)
        .await
        .unwrap();
    wait_until(120, "a pod after the flag change Running", async || {
        let p = pods.get("net-raw").await.unwrap();
        (p.status.and_then(|s| s.phase).as_deref() == Some("Running")).then_some(())
    })
    .await;
    let flag_change = started.elapsed();
    let flag_restarts = containerd_restarts() - restarts;

    // osc: the pool drops gVisor; gardenlet writes the OSC (op: remove while the
    // ContainerRuntime exists), then deletes the ContainerRuntime, which waits until the
    // kubelet no longer reports the handler and takes the label off.
    if mode == InstallationMode::Osc {
        for name in ["first", "net-raw"] {
            pods.delete(name, &DeleteParams::default()).await.unwrap();
        }
        wait_until(120, "the gVisor pods gone", async || {
            pods.list(&ListParams::default())
                .await
                .unwrap()
                .items
                .is_empty()
                .then_some(())
        })
        .await;
        seed.set_workers(workers(false, None)).await;
        let stored = write_osc(&oscs, &gardenlet_osc(&registry.host(), 3)).await;
        assert!(
            plugin_paths(&stored)
                .iter()
                .any(|(op, path)| op == "remove" && path.contains("runsc")),
            "{stored:#}"
        );
        let spec = stored["spec"].clone();
        let restarts = containerd_restarts();
        gna.as_mut()
            .unwrap()
            .apply_next_with(Duration::from_secs(120), |o| o["spec"] = spec)
            .await
            .unwrap();
        let access = || async {
            seed.secrets()
                .get_opt("shoot-access-extension-runtime-gvisor")
                .await
                .unwrap()
                .is_some()
        };
        assert!(
            access().await,
            "the shoot-access Secret before the deletion"
        );
        seed.gardenlet_delete(&cr).await;
        let deadline = Instant::now() + Duration::from_secs(180);
        while let Some(object) = seed.runtimes().get_opt(&cr).await.unwrap() {
            if Instant::now() > deadline {
                let node = nodes.get(NODE_NAME).await.unwrap();
                panic!(
                    "the ContainerRuntime was not deleted: {:#?}\nthe node reports {:?}; shoot access: {}",
                    object.status,
                    node.status.and_then(|s| s.runtime_handlers),
                    access().await
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let node = nodes.get(NODE_NAME).await.unwrap();
        assert!(
            !node
                .metadata
                .labels
                .unwrap_or_default()
                .contains_key(NODE_READY_LABEL),
            "the ready label stayed"
        );
        assert_eq!(
            containerd_restarts() - restarts,
            1,
            "restarts for the removal"
        );
        // The OSC after that carries nothing of ours.
        let stored = write_osc(&oscs, &gardenlet_osc(&registry.host(), 4)).await;
        assert!(
            plugin_paths(&stored)
                .iter()
                .all(|(_, path)| !path.contains("runsc")),
            "{stored:#}"
        );
    }
    drop(gna);
    Figures {
        registered_to_ready: ready.duration_since(registered),
        ready_to_running: running.duration_since(ready),
        install_restarts,
        flag_change,
        flag_restarts,
        host_access_pods: host_access.len(),
    }
}

fn print(mode: InstallationMode, f: &Figures) {
    println!(
        "installation mode {mode}: node registered -> ready label {:.1} s -> first gVisor pod Running {:.1} s; \
         containerd restarts for the install {}; flag change -> node re-verified (new pod Running) {:.1} s, \
         {} containerd restarts; pods with host access on the node {}",
        f.registered_to_ready.as_secs_f64(),
        f.ready_to_running.as_secs_f64(),
        f.install_restarts,
        f.flag_change.as_secs_f64(),
        f.flag_restarts,
        f.host_access_pods,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_node_gets_gvisor_through_its_osc_before_the_kubelet_runs() {
    let figures = fresh_node(InstallationMode::Osc).await;
    print(InstallationMode::Osc, &figures);
    assert_eq!(figures.host_access_pods, 0);
    assert!(figures.install_restarts <= 1);
    assert_eq!(figures.flag_restarts, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_node_gets_gvisor_from_the_installer_daemonset() {
    let figures = fresh_node(InstallationMode::DaemonSet).await;
    print(InstallationMode::DaemonSet, &figures);
    assert_eq!(figures.install_restarts, 1);
    assert_eq!(figures.flag_restarts, 1);
}
