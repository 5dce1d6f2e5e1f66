//! Waiting holds no worker: deletions that wait for gardener-resource-manager requeue instead
//! of polling inside a reconcile, so with the default 5 workers, 10 stuck deletions (their
//! ManagedResources never go) do not delay a new ContainerRuntime in another shoot. With
//! in-reconcile polling the new object would wait for a worker until the stuck deletions time
//! out (2 minutes here).

mod common;

use std::time::Duration;

use common::{default_config, env, shoot};
use sandbox_api::{ContainerRuntime, LastOperationState, LastOperationType};
use sandbox_controller::ControllerConfig;
use serde_json::json;

fn config() -> ControllerConfig {
    ControllerConfig {
        delete_timeout: Duration::from_secs(120),
        max_concurrent_reconciles: 5,
        ..default_config()
    }
}

fn deleting(cr: Option<&ContainerRuntime>) -> bool {
    cr.and_then(|c| c.status.as_ref())
        .and_then(|s| s.last_operation.as_ref())
        .is_some_and(|o| {
            o.type_ == LastOperationType::Delete && o.state == LastOperationState::Processing
        })
}

#[tokio::test]
async fn ten_waiting_deletions_do_not_delay_another_shoot() {
    let cp = env(config);
    let _logs = cp.logs_on_panic();
    let pools: Vec<String> = (0..10).map(|i| format!("pool-{i}")).collect();
    let workers: Vec<_> = pools
        .iter()
        .map(|p| json!({"name": p, "cri": {"name": "containerd", "containerRuntimes": [{"type": "gvisor"}]}}))
        .collect();
    let stuck = shoot(
        cp,
        "stuck",
        json!({"spec": {"provider": {"workers": workers}}}),
    )
    .await;
    for pool in &pools {
        let ts = stuck.gardenlet_create(pool, None).await;
        stuck.wait_ready(&format!("gvisor-{pool}"), &ts).await;
        // gardener-resource-manager never finishes deleting this pool's objects.
        stuck
            .hold_mr(
                &format!("extension-runtime-gvisor-installation-{pool}"),
                true,
            )
            .await;
    }
    for pool in &pools {
        stuck.gardenlet_delete(&format!("gvisor-{pool}")).await;
    }
    for pool in &pools {
        stuck
            .wait_for(&format!("gvisor-{pool}"), "a waiting deletion", deleting)
            .await;
    }

    let fresh = shoot(cp, "fresh", json!({})).await;
    let started = tokio::time::Instant::now();
    let ts = fresh.gardenlet_create("pool-a", None).await;
    fresh.wait_ready("gvisor-pool-a", &ts).await;
    let took = started.elapsed();
    println!("a new ContainerRuntime was Succeeded after {took:?} beside 10 waiting deletions");
    assert!(took < Duration::from_secs(10), "took {took:?}");

    // The deletions still wait, in Processing, without an Error: nothing timed out.
    for pool in &pools {
        let cr = stuck
            .runtimes()
            .get(&format!("gvisor-{pool}"))
            .await
            .unwrap();
        assert!(deleting(Some(&cr)), "{pool}: {:?}", cr.status);
    }
    // And they finish once gardener-resource-manager does.
    for pool in &pools {
        stuck
            .hold_mr(
                &format!("extension-runtime-gvisor-installation-{pool}"),
                false,
            )
            .await;
    }
    for pool in &pools {
        stuck
            .wait_for(&format!("gvisor-{pool}"), "gone", |cr| cr.is_none())
            .await;
    }
    assert!(stuck.mr_names().await.is_empty());
}
