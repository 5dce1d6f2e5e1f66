//! gVisor: what a pool with `type: gvisor` needs in the shoot (here and in `installation`)
//! and on its nodes (`node`, the node plan). Names match the Go extension
//! `gardener-extension-runtime-gvisor`, so operators' habits and tooling keep working.

pub mod config;
pub mod node;

pub use config::GVisorConfig;
pub use node::node_plan;

use k8s_openapi::api::node::v1::{RuntimeClass, Scheduling};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sandbox_api::Shoot;

use crate::actuator::{Description, Runtime};
use crate::installation::{self, Agent};
use crate::manifests::{ObjectSet, RenderError};

/// The `spec.type` of a gVisor ContainerRuntime.
pub const RUNTIME_TYPE: &str = "gvisor";
/// The RuntimeClass offered in the shoot.
pub const RUNTIME_CLASS: &str = "gvisor";
/// The containerd runtime handler: the RuntimeClass points at it and the node plan registers it.
pub const HANDLER: &str = "runsc";
/// The node label gardenlet sets on pools that run gVisor.
pub const NODE_LABEL: &str = "containerruntime.worker.gardener.cloud/gvisor";
/// The label our node agent puts on a node once containerd has loaded `runsc` there.
pub const NODE_READY_LABEL: &str = "runtime-sandbox.gardener.cloud/gvisor-ready";
/// ServiceAccount of the node installer in the shoot.
pub const SERVICE_ACCOUNT: &str = "gvisor";
/// ClusterRole (and binding) that lets the node agent label nodes.
pub const NODE_AGENT_CLUSTER_ROLE: &str = "extensions.gardener.cloud:runtime-gvisor:node-agent";
/// ValidatingAdmissionPolicy (and binding) that limits the node agent to its own node's
/// ready label.
pub const NODE_LABEL_POLICY: &str = "runtime-gvisor-node-agent-labels";
/// Namespace of everything we put into the shoot.
pub const SHOOT_NAMESPACE: &str = installation::SHOOT_NAMESPACE;
/// The shared ManagedResource (RuntimeClass + ServiceAccount).
pub const MANAGED_RESOURCE: &str = "extension-runtime-gvisor";
/// Prefix of the per-pool ManagedResource (the node installer).
pub const INSTALLATION_MANAGED_RESOURCE_PREFIX: &str = "extension-runtime-gvisor-installation-";
/// The `origin` label value of our ManagedResources.
pub const ORIGIN: &str = "gardener-extension-runtime-gvisor";

/// gVisor's node agents, named as the Go extension's installer (`containerd-gvisor-<pool>`).
pub const AGENT: Agent = Agent {
    app: "containerd-gvisor",
    service_account: SERVICE_ACCOUNT,
    origin: ORIGIN,
    cluster_role: NODE_AGENT_CLUSTER_ROLE,
    label_policy: NODE_LABEL_POLICY,
};

/// gVisor as a [`Runtime`].
pub struct GVisor;

impl Runtime for GVisor {
    type Config = GVisorConfig;

    const DESCRIPTION: Description = Description {
        runtime_type: RUNTIME_TYPE,
        display_name: "gVisor",
        needs_virtualization: false,
        image_name: crate::image::NODE_AGENT_IMAGE,
        node_ready_label: NODE_READY_LABEL,
        shared_managed_resource: MANAGED_RESOURCE,
        pool_managed_resource_prefix: INSTALLATION_MANAGED_RESOURCE_PREFIX,
        agent: AGENT,
    };

    fn cleanup_config(&self) -> GVisorConfig {
        GVisorConfig::default()
    }

    /// The RuntimeClass `gvisor`, tolerating the taints of the shoot's gVisor pools (see
    /// [`crate::scheduling::pool_tolerations`]).
    fn runtime_classes(
        &self,
        shoot: &Shoot,
        _current: Option<(&str, &GVisorConfig)>,
    ) -> Result<ObjectSet, RenderError> {
        let runtime_class = RuntimeClass {
            metadata: ObjectMeta {
                name: Some(RUNTIME_CLASS.into()),
                ..ObjectMeta::default()
            },
            handler: HANDLER.into(),
            scheduling: Some(Scheduling {
                // Only nodes whose agent verified that containerd loaded runsc.
                node_selector: Some(
                    [
                        (NODE_LABEL.to_string(), "true".to_string()),
                        (NODE_READY_LABEL.to_string(), "true".to_string()),
                    ]
                    .into(),
                ),
                // Dedicated (tainted) gVisor pools: a pod asking for gVisor tolerates them.
                tolerations: crate::scheduling::pool_tolerations(shoot, RUNTIME_TYPE),
            }),
            overhead: None,
        };
        let mut set = ObjectSet::default();
        set.add(&runtime_class)?;
        Ok(set)
    }
}
