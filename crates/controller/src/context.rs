//! What the controller is configured with ([`ControllerConfig`]) and what every reconcile and
//! the health loop share ([`Context`]): kept apart from the wiring in `controller.rs`, so that
//! `reconcile.rs` and `health_check.rs` depend on this and not on each other's caller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::ObjectRef;

use crate::cache::Caches;
use crate::contract;
use crate::event_filter::Guarded;
use crate::metrics::Observer;

/// How the controller behaves; the fields mirror the Go extensions' flags.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Extension classes served (`--extension-classes`); default `shoot`.
    pub extension_classes: Vec<String>,
    /// Reconcile on generation changes instead of operation annotations.
    pub ignore_operation_annotation: bool,
    /// `--max-concurrent-reconciles`.
    pub max_concurrent_reconciles: u16,
    /// How long deletion waits for ManagedResources to go (and the pool's nodes to be
    /// cleaned) before it reports an Error and retries.
    pub delete_timeout: Duration,
    /// How often a waiting deletion checks again (it requeues; no worker waits).
    pub wait_poll: Duration,
    /// The node-agent image reference (gVisor's, and any runtime's not in `images`).
    pub image: String,
    /// Image references by image-vector name, for runtimes with their own node-agent image
    /// (Kata's carries its payload).
    pub images: std::collections::BTreeMap<String, String>,
    /// The binaries' checksums the image vector records, by image-vector name (see
    /// [`sandbox_runtime::node_plan::Binaries::pinned`]).
    pub pinned: std::collections::BTreeMap<String, sandbox_runtime::node_plan::Pins>,
    /// Name under which Events are reported.
    pub reporter: String,
    /// First retry delay after an error; doubles per failure up to `max_backoff`.
    pub base_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// How often the health conditions are checked (`SystemComponentsHealthy`,
    /// `EveryNodeReady`; see [`crate::health`]).
    pub health_sync_period: Duration,
    /// The shoot's API server as seen from the seed, `{namespace}` standing for the shoot
    /// namespace (`--shoot-api-server`; [`crate::shoot_access::DEFAULT_SERVER`]).
    pub shoot_api_server: String,
    /// How the runtimes reach the nodes (`--installation-mode`): in `osc` no installer
    /// DaemonSet is deployed, nodes are labelled from the handlers their kubelet reports, and
    /// a deletion waits until no node of the pool reports them.
    pub installation_mode: sandbox_runtime::osc::InstallationMode,
}

impl ControllerConfig {
    /// The node-agent image of `actuator`.
    pub fn image_for(&self, actuator: &dyn sandbox_runtime::actuator::Actuator) -> &str {
        self.images
            .get(actuator.description().image_name)
            .map_or(self.image.as_str(), String::as_str)
    }

    /// The checksums the seed expects of `actuator`'s binaries (empty if none recorded).
    pub fn pinned_for(
        &self,
        actuator: &dyn sandbox_runtime::actuator::Actuator,
    ) -> &sandbox_runtime::node_plan::Pins {
        static NONE: sandbox_runtime::node_plan::Pins = std::collections::BTreeMap::new();
        self.pinned
            .get(actuator.description().image_name)
            .unwrap_or(&NONE)
    }
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            extension_classes: vec![contract::DEFAULT_CLASS.to_string()],
            ignore_operation_annotation: false,
            max_concurrent_reconciles: 5,
            delete_timeout: Duration::from_secs(120),
            wait_poll: Duration::from_secs(2),
            image: String::new(),
            images: Default::default(),
            pinned: Default::default(),
            reporter: "gardener-extension-runtime-sandbox".to_string(),
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            health_sync_period: Duration::from_secs(30),
            shoot_api_server: crate::shoot_access::DEFAULT_SERVER.to_string(),
            installation_mode: Default::default(),
        }
    }
}

/// What every reconcile shares.
pub(crate) struct Context {
    pub(crate) client: Client,
    /// Clusters and our ManagedResources, from watches.
    pub(crate) caches: Caches,
    pub(crate) config: ControllerConfig,
    pub(crate) recorder: Recorder,
    /// Consecutive failures per object, for the backoff.
    pub(crate) failures: Mutex<HashMap<ObjectRef<Guarded>, u32>>,
    pub(crate) observer: Arc<dyn Observer>,
    /// Order between the writes to a shoot's ManagedResources across its pools.
    pub(crate) shared: crate::shared::SharedResources,
    /// Shoot clients with our shoot-access tokens (the health check; in installation mode
    /// `osc` also the node labels and the deletion's wait).
    pub(crate) shoot_clients: crate::health_check::ShootClients,
}

impl Context {
    /// A reconcile of `object` succeeded: its backoff starts over.
    pub(crate) fn succeeded(&self, object: &Guarded) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ObjectRef::from_obj(object));
    }
}
