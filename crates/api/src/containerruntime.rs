//! `ContainerRuntime` (`extensions.gardener.cloud/v1alpha1`): one per worker pool and runtime type.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

use crate::extension::ExtensionStatus;

/// Desired state of a ContainerRuntime, as gardenlet writes it.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "extensions.gardener.cloud",
    version = "v1alpha1",
    kind = "ContainerRuntime",
    namespaced,
    status = "ExtensionStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRuntimeSpec {
    /// The runtime type, e.g. `gvisor`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Extension class (`garden`, `seed` or `shoot`); absent means `shoot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// Runtime-specific configuration, raw from the Shoot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_config: Option<serde_json::Value>,
    /// Where on the node the runtime's binaries go (`/var/bin/containerruntimes`).
    pub binary_path: String,
    /// The worker pool whose nodes get the runtime.
    pub worker_pool: WorkerPool,
}

/// The worker pool a ContainerRuntime is for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPool {
    /// Name of the pool.
    pub name: String,
    /// Selects the pool's nodes.
    pub selector: LabelSelector,
}

/// Labels gardenlet puts into a ContainerRuntime's pool selector (the current and the
/// legacy pool label).
pub const POOL_LABELS: [&str; 2] = [
    "worker.gardener.cloud/pool",
    "worker.garden.sapcloud.io/group",
];

impl WorkerPool {
    /// The pool as gardenlet describes it: selected by both pool labels.
    pub fn gardenlet(name: &str) -> Self {
        WorkerPool {
            name: name.to_string(),
            selector: LabelSelector {
                match_labels: Some(
                    POOL_LABELS
                        .iter()
                        .map(|l| (l.to_string(), name.to_string()))
                        .collect(),
                ),
                ..LabelSelector::default()
            },
        }
    }
}
