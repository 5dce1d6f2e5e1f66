//! What a shoot owner controls cannot blow up the seed (docs/security.md, threat S3): a pool
//! of a thousand Nodes whose agents' state annotations are 255 KiB each (the API's limit for
//! all of a node's annotations), read by the product binary with the chart's identity through
//! its node-reader token. The controller reads them in pages of metadata, cuts every report on
//! read, names ten nodes in the condition and counts the rest: its peak memory and the status
//! it writes stay bounded, and both figures are printed for docs/security.md.

use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use sandbox_api::ContainerRuntime;
use sandbox_api::containerruntime::POOL_LABELS;
use sandbox_testenv::chart::{self, RELEASE_NAMESPACE};
use sandbox_testenv::gardenlet::{self, Shoot};
use sandbox_testenv::{ControlPlane, eventually, eventually_or, free_port, http_get};
use serde_json::json;

mod support;

use support::Kill;

const NODES: usize = 1000;
const REPORT_BYTES: usize = 255 * 1024;

/// The process's peak resident memory (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_nodes_with_huge_reports_keep_the_controller_and_the_status_bounded() {
    let cp = ControlPlane::start().await.unwrap();
    let _logs = cp.logs_on_panic();
    let admin = cp.client().await.unwrap();
    let values = ["--set", "controllers.healthcheck.syncPeriodSeconds=2"];
    let (_, kubeconfig) = chart::install_identity(&cp, &values).await.unwrap();
    let kubeconfig_path = cp.root().join("kubeconfig-chart-serviceaccount");
    std::fs::write(
        &kubeconfig_path,
        serde_json::to_string(&kubeconfig).unwrap(),
    )
    .unwrap();
    let (health, metrics) = (free_port().unwrap(), free_port().unwrap());
    let controller = Kill(
        Command::new(env!("CARGO_BIN_EXE_gardener-extension-runtime-sandbox"))
            .args(support::chart_controller_args(&values, health, metrics))
            .arg(format!("--kubeconfig={}", kubeconfig_path.display()))
            .arg(format!("--shoot-api-server={}", cp.server_url()))
            .env("LEADER_ELECTION_NAMESPACE", RELEASE_NAMESPACE)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = controller.0.id();
    eventually(60, "/readyz ok", async || {
        http_get(health, "/readyz").filter(|(c, _)| *c == 200)
    })
    .await;

    let ns = cp.namespace(&admin, "shoot--bounded").await.unwrap();
    gardenlet::create_cluster(
        &admin,
        &ns,
        sandbox_testenv::ShootBuilder::new("bounded")
            .kubernetes("1.34.2")
            .pool("pool-a", &["gvisor"])
            .build(),
    )
    .await;
    let s = Shoot {
        client: admin.clone(),
        ns: ns.clone(),
    };
    let ts = s.gardenlet_create("pool-a", None).await;
    s.wait_ready("gvisor-pool-a", &ts).await;

    // gardener-resource-manager's part: the node reader's RBAC and token.
    s.issue_node_reader_token(&cp, "gvisor").await;
    let runtimes = s.runtimes();
    let every_node_ready = async || -> Option<sandbox_api::extension::Condition> {
        runtimes
            .get("gvisor-pool-a")
            .await
            .ok()?
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "EveryNodeReady")
    };
    eventually_or(
        60,
        "EveryNodeReady from the token's (empty) node list",
        async || match every_node_ready().await {
            Some(c) if c.status == "True" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    let before = peak_rss_kib(pid);

    // A thousand nodes of the pool, each with a report at the annotation limit.
    let report = json!({"ready": false, "reason": "R".repeat(4096), "message": "m".repeat(REPORT_BYTES - 8192)}).to_string();
    let nodes = Api::<Node>::all(admin.clone());
    let started = std::time::Instant::now();
    use futures::StreamExt;
    futures::stream::iter((0..NODES).map(|i| {
        let (nodes, report) = (nodes.clone(), report.clone());
        async move {
            let node: Node = serde_json::from_value(json!({"metadata": {
                "name": format!("bounded-{i:04}"),
                "labels": {POOL_LABELS[0]: "pool-a"},
                "annotations": {"runtime-sandbox.gardener.cloud/gvisor-state": report}}}))
            .unwrap();
            nodes.create(&PostParams::default(), &node).await.unwrap();
        }
    }))
    .buffer_unordered(16)
    .collect::<Vec<()>>()
    .await;
    println!(
        "{NODES} nodes of {} KiB of annotations created in {:?}",
        report.len() / 1024,
        started.elapsed()
    );

    let condition = eventually_or(
        180,
        "EveryNodeReady False for the thousand nodes",
        async || match every_node_ready().await {
            Some(c) if c.status == "False" && c.message.contains(&format!("of {NODES} nodes")) => {
                Ok(c)
            }
            other => Err(format!(
                "{:?}",
                other.map(|c| (c.status, c.message.chars().take(300).collect::<String>()))
            )),
        },
    )
    .await;
    // Two more rounds over the thousand nodes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = peak_rss_kib(pid);
    let cr: ContainerRuntime = runtimes.get("gvisor-pool-a").await.unwrap();
    let status_bytes = serde_json::to_string(&cr.status).unwrap().len();
    println!(
        "controller peak RSS: {} MiB before the nodes, {} MiB after reading {NODES} nodes of {} MiB of annotations; status {status_bytes} bytes, EveryNodeReady message {} bytes",
        before / 1024,
        after / 1024,
        (NODES * report.len()) >> 20,
        condition.message.len()
    );
    assert!(
        condition.message.contains("and 990 more"),
        "{}",
        &condition.message[..300]
    );
    assert!(
        !condition.message.contains(&"m".repeat(600)),
        "a node's message is cut to 512 bytes on read"
    );
    assert!(
        condition.message.contains("InvalidReason"),
        "a 4 KiB reason is no identifier"
    );
    assert!(status_bytes < 16 * 1024, "status of {status_bytes} bytes");
    assert!(
        after < before + 64 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB reading {NODES} nodes"
    );
}
