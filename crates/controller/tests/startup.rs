//! Objects that are waiting for a reconcile when the controller starts are all reconciled.
//! The first reconciles start before the controller's caches hold their initial lists; an
//! earlier version let each wait for the caches itself, and kube's `Store::wait_until_ready`
//! wakes only the last of several waiters: the first objects were never reconciled.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::IMAGE;
use sandbox_controller::ControllerConfig;
use sandbox_testenv::ControlPlane;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_object_waiting_at_start_is_reconciled() {
    let cp = ControlPlane::start().await.unwrap();
    let _logs = cp.logs_on_panic();
    let pools: Vec<String> = (0..12).map(|i| format!("pool-{i}")).collect();
    let workers: Vec<_> = pools
        .iter()
        .map(|p| json!({"name": p, "cri": {"name": "containerd", "containerRuntimes": [{"type": "gvisor"}]}}))
        .collect();
    let s = common::shoot(
        &cp,
        "startup",
        json!({"spec": {"provider": {"workers": workers}}}),
    )
    .await;
    let mut requests = Vec::new();
    for pool in &pools {
        requests.push((
            format!("gvisor-{pool}"),
            s.gardenlet_create(pool, None).await,
        ));
    }

    let client = cp.client().await.unwrap();
    let config = ControllerConfig {
        image: IMAGE.into(),
        max_concurrent_reconciles: 5,
        ..ControllerConfig::default()
    };
    tokio::spawn(sandbox_controller::run(
        client,
        config,
        Arc::new(sandbox_controller::metrics::NoObserver),
        Default::default(),
        std::future::pending(),
    ));
    let all = async {
        for (name, ts) in &requests {
            s.wait_ready(name, ts).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("every waiting object is reconciled");
}
