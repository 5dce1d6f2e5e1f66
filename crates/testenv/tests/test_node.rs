//! The test node itself works: its containerd runs runc pods from the local images.

use sandbox_testenv::node::{Flavor, TestNode};
use sandbox_testenv::pods::{self, Pods};

async fn runc_pod_runs(flavor: Flavor) {
    let node = TestNode::new(flavor).unwrap();
    node.start().unwrap();
    node.import_images().unwrap();
    let result = pods::run_pod(
        &Pods::new(node.socket()),
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
