//! `shoot-bench`: the whole chain on the test shoot (real kubelet, real
//! gardener-resource-manager), timed. The release product binary runs the controller (with the
//! chart's flags and RBAC) and, from a node-agent image built here, the node agent. Reported:
//! time from ContainerRuntime creation to the first gVisor pod Running, time from a
//! providerConfig flag change to the node re-verified (`--changes` times), and containerd
//! restarts per step.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::{Api, Patch, PatchParams, PostParams};
use sandbox_runtime::gvisor::{self, NODE_READY_LABEL};
use sandbox_testenv::gardenlet::Shoot;
use sandbox_testenv::node::BUSYBOX_IMAGE;
use sandbox_testenv::shoot::{NODE_NAME, POOL};
use sandbox_testenv::stack::{Stack, StackOptions};
use sandbox_testenv::{ShootBuilder, eventually, free_port};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// The product binary; default: next to this one.
    #[arg(long)]
    binary: Option<PathBuf>,
    /// How many flag changes to time.
    #[arg(long, default_value_t = 3)]
    changes: u32,
}

const IMAGE: &str = "localhost/runtime-sandbox-bench/node-agent:bench";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let binary = args.binary.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .unwrap()
            .with_file_name("gardener-extension-runtime-sandbox")
    });
    let health = free_port().unwrap();
    let stack = Stack::start(StackOptions {
        namespace: "shoot--bench--sandbox",
        shoot: ShootBuilder::new("sandbox")
            .namespace("garden-bench")
            .pool(POOL, &["gvisor"])
            .build(),
        binary: &binary,
        image: IMAGE,
        controller_args: vec![
            "controller".to_string(),
            "--leader-election=false".into(),
            format!("--health-bind-address=127.0.0.1:{health}"),
            format!("--metrics-bind-address=127.0.0.1:{}", free_port().unwrap()),
        ],
        controller_env: Vec::new(),
        health,
        show_logs: false,
    })
    .await
    .unwrap();
    let (admin, ns, shoot) = (&stack.admin, &stack.ns, &stack.shoot);

    let client = shoot.client().await.unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    let classes = Api::<RuntimeClass>::all(client.clone());
    let nodes = Api::<Node>::all(client.clone());
    let daemon_sets = Api::<DaemonSet>::namespaced(client.clone(), "kube-system");
    let restarts = || stack.containerd_restarts();
    let s = Shoot {
        client: admin.clone(),
        ns: ns.clone(),
    };
    let cr = format!("gvisor-{POOL}");

    // ContainerRuntime created -> first gVisor pod Running.
    let started = Instant::now();
    s.gardenlet_create(POOL, None).await;
    eventually(300, "RuntimeClass", async || {
        classes.get_opt("gvisor").await.ok().flatten()
    })
    .await;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "first"},
        "spec": {"runtimeClassName": "gvisor", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                "command": ["sleep", "100000"]}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    eventually(300, "first gVisor pod Running", async || {
        let p = pods.get("first").await.ok()?;
        (p.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
    let first_pod = started.elapsed();
    let first_restarts = restarts();
    println!(
        "ContainerRuntime created -> first gVisor pod Running: {:.1} s, containerd restarts: {first_restarts}",
        first_pod.as_secs_f64()
    );

    // Flag change -> node re-verified (new DaemonSet generation rolled out, label back).
    let mut times = Vec::new();
    for i in 0..args.changes {
        let before = restarts();
        let generation = daemon_sets
            .get(&gvisor::AGENT.installer_name(POOL))
            .await
            .unwrap()
            .metadata
            .generation;
        let started = Instant::now();
        let value = if i % 2 == 0 { "true" } else { "false" };
        s.runtimes()
            .patch(
                &cr,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"providerConfig": {
                    "apiVersion": "gvisor.runtime.extensions.config.gardener.cloud/v1alpha1",
                    "kind": "GVisorConfiguration", "configFlags": {"net-raw": value}}}})),
            )
            .await
            .unwrap();
        s.annotate(&cr, "reconcile").await;
        eventually(300, "node re-verified", async || {
            let ds = daemon_sets
                .get(&gvisor::AGENT.installer_name(POOL))
                .await
                .ok()?;
            let status = ds.status.as_ref()?;
            let rolled = ds.metadata.generation > generation
                && status.observed_generation == ds.metadata.generation
                && status.updated_number_scheduled == Some(1)
                && status.number_ready == 1;
            let labelled = nodes
                .get(NODE_NAME)
                .await
                .ok()?
                .metadata
                .labels?
                .get(NODE_READY_LABEL)
                .is_some_and(|v| v == "true");
            (rolled && labelled).then_some(())
        })
        .await;
        let took = started.elapsed();
        println!(
            "flag change {} -> node re-verified: {:.1} s, containerd restarts: {}",
            i + 1,
            took.as_secs_f64(),
            restarts() - before
        );
        times.push(took);
    }
    times.sort();
    if let Some(median) = times.get(times.len() / 2) {
        println!(
            "flag change -> node re-verified: median {:.1} s over {} changes",
            median.as_secs_f64(),
            times.len()
        );
    }
    drop(stack);
}
