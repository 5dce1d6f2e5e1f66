//! Test harness: one control plane and one in-process controller per test binary; each test
//! gets its own namespace with a Cluster, and drives objects the way gardenlet does
//! (`sandbox_testenv::gardenlet`).
//!
//! The controller runs with exactly the chart's permissions: the chart's ServiceAccount and
//! RBAC (rendered by the pinned helm) are applied to the control plane, and the controller
//! authenticates with a bound token of that ServiceAccount. A scenario that needs a grant the
//! chart lacks fails here.

#![allow(dead_code)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sandbox_controller::ControllerConfig;
use sandbox_testenv::ControlPlane;
use sandbox_testenv::ShootBuilder;
pub use sandbox_testenv::gardenlet::{Shoot, create_cluster};
use serde_json::{Value, json};

pub const IMAGE: &str = "registry.local/node-agent:test";

/// The shared control plane with a controller running on it (started once).
pub fn env(config: fn() -> ControllerConfig) -> &'static ControlPlane {
    static STARTED: OnceLock<()> = OnceLock::new();
    let cp = sandbox_testenv::shared();
    STARTED.get_or_init(|| {
        let config = config();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let (_, kubeconfig) = sandbox_testenv::chart::install_identity(cp, &[])
                    .await
                    .expect("installing the chart's ServiceAccount and RBAC");
                let client = sandbox_testenv::client_for(kubeconfig).await.unwrap();
                ready_tx.send(()).unwrap();
                sandbox_controller::run(
                    client,
                    config,
                    Arc::new(sandbox_controller::metrics::NoObserver),
                    Default::default(),
                    std::future::pending(),
                )
                .await;
            });
        });
        ready_rx
            .recv()
            .expect("the controller's thread did not start (see its panic above)");
    });
    cp
}

/// The controller configuration most tests use: short timeouts so failures show fast.
pub fn default_config() -> ControllerConfig {
    ControllerConfig {
        image: IMAGE.into(),
        delete_timeout: Duration::from_secs(4),
        wait_poll: Duration::from_millis(250),
        base_backoff: Duration::from_millis(500),
        max_backoff: Duration::from_secs(4),
        ..ControllerConfig::default()
    }
}

/// A namespace with a Cluster whose Shoot has the given pools with gVisor.
pub async fn shoot(cp: &ControlPlane, prefix: &str, shoot_patch: Value) -> Shoot {
    let client = cp.client().await.unwrap();
    let ns = cp
        .namespace(&client, &format!("shoot--{prefix}"))
        .await
        .unwrap();
    let shoot = ShootBuilder::new(prefix)
        .kubernetes("1.34.2")
        .pool("pool-a", &["gvisor"])
        .pool("pool-b", &["gvisor"])
        .patch(shoot_patch)
        .build();
    create_cluster(&client, &ns, shoot).await;
    Shoot { client, ns }
}

/// A sibling shoot whose runtime is created when the witness is: a test that asserts that
/// nothing happened to its own object during a wait also asserts, with [`Witness::reconciled`],
/// that the controller was alive and reconciling meanwhile (a dead or stuck controller would
/// also "do nothing").
pub struct Witness {
    shoot: Shoot,
    timestamp: String,
}

impl Witness {
    /// Creates the sibling shoot and its runtime (as gardenlet would), without waiting.
    pub async fn start(cp: &ControlPlane, prefix: &str) -> Self {
        let shoot = shoot(cp, prefix, json!({})).await;
        let timestamp = shoot.gardenlet_create("pool-a", None).await;
        Witness { shoot, timestamp }
    }

    /// Waits until gardenlet would call the sibling's runtime ready.
    pub async fn reconciled(&self) {
        self.shoot
            .wait_ready("gvisor-pool-a", &self.timestamp)
            .await;
    }
}
