//! The test node itself works: its containerd runs runc pods from the local images.

mod common;

use sandbox_node_agent::cri::Cri;
use sandbox_testenv::node::{Flavor, TestNode};

async fn runc_pod_runs(flavor: Flavor) {
    let node = TestNode::new(flavor).unwrap();
    node.start().unwrap();
    node.import_images().unwrap();
    let cri = Cri::new(node.socket());
    let result = common::run_pod(
        &cri,
        "",
        &["echo", "hello from runc"],
        &node.path("/var/log/pods"),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\ncontainerd log:\n{}", node.log_tail(40)));
    assert_eq!(result.exit_code, 0, "{result:?}");
    assert_eq!(result.output, "hello from runc");
}

#[tokio::test]
async fn debian_containerd_runs_runc_pods() {
    runc_pod_runs(Flavor::Debian).await;
}

#[tokio::test]
async fn containerd_2_runs_runc_pods() {
    runc_pod_runs(Flavor::V2).await;
}

#[tokio::test]
async fn containerd_1_7_runs_runc_pods() {
    runc_pod_runs(Flavor::V17).await;
}
