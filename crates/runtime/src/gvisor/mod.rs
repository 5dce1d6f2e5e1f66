//! gVisor: what a pool with `type: gvisor` needs in the shoot (here and in `installation`)
//! and on its nodes (`node`, the node plan). Names match the Go extension
//! `gardener-extension-runtime-gvisor`, so operators' habits and tooling keep working.

pub mod config;
pub mod node;

pub use config::GVisorConfig;
pub use node::node_plan;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::installation::{self, Agent, PoolInput};

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::api::node::v1::{RuntimeClass, Scheduling};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use sandbox_api::{ContainerRuntime, Shoot};

use crate::actuator::{Actuator, ActuatorError, Cleanup, Desired, ManagedResourceContent, Warning};
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

/// Name of the per-pool ManagedResource.
pub fn installation_managed_resource(pool: &str) -> String {
    format!("{INSTALLATION_MANAGED_RESOURCE_PREFIX}{pool}")
}

/// gVisor's node agents, named as the Go extension's installer (`containerd-gvisor-<pool>`).
pub const AGENT: Agent = Agent {
    app: "containerd-gvisor",
    service_account: SERVICE_ACCOUNT,
    origin: ORIGIN,
    cluster_role: NODE_AGENT_CLUSTER_ROLE,
    label_policy: NODE_LABEL_POLICY,
};

/// Name of the pool's installer DaemonSet and ConfigMap in `kube-system` (as in the Go extension).
pub fn installer_name(pool: &str) -> String {
    AGENT.installer_name(pool)
}

/// Name of the pool's cleanup DaemonSet in `kube-system`.
pub fn cleanup_name(pool: &str) -> String {
    AGENT.cleanup_name(pool)
}

/// Everything the installer of one pool depends on.
#[derive(Clone, Debug)]
pub struct InstallationInput<'a> {
    /// Worker pool name.
    pub pool: &'a str,
    /// The pool's node selector from the ContainerRuntime.
    pub selector: &'a LabelSelector,
    /// `spec.binaryPath` on the node.
    pub binary_path: &'a str,
    /// The validated providerConfig.
    pub config: &'a GVisorConfig,
    /// The node-agent image reference.
    pub image: &'a str,
}

/// Everything the cleanup of one pool depends on: no providerConfig (an invalid one must not
/// keep the nodes from being cleaned).
#[derive(Clone, Debug)]
pub struct CleanupInput<'a> {
    pub pool: &'a str,
    pub selector: &'a LabelSelector,
    pub binary_path: &'a str,
    pub image: &'a str,
}

/// The pool's installer: its node plan in a ConfigMap and the DaemonSet.
pub fn installation_objects(input: &InstallationInput<'_>) -> Result<ObjectSet, RenderError> {
    installation::installation_objects(
        &AGENT,
        &PoolInput {
            pool: input.pool,
            selector: input.selector,
            binary_path: input.binary_path,
            plan: &node_plan(input.config, input.image),
            image: input.image,
        },
    )
}

/// The pool's cleanup DaemonSet.
pub fn cleanup_objects(input: &CleanupInput<'_>) -> Result<ObjectSet, RenderError> {
    installation::cleanup_objects(
        &AGENT,
        &PoolInput {
            pool: input.pool,
            selector: input.selector,
            binary_path: input.binary_path,
            plan: &node_plan(&GVisorConfig::default(), input.image),
            image: input.image,
        },
    )
}

/// gVisor's [`Actuator`].
pub struct GVisor;

impl Actuator for GVisor {
    fn runtime_type(&self) -> &'static str {
        RUNTIME_TYPE
    }

    fn node_plan(
        &self,
        provider_config: Option<&serde_json::Value>,
        image: &str,
    ) -> Result<crate::node_plan::NodePlan, crate::actuator::ConfigError> {
        config::parse(provider_config).map(|c| node::node_plan(&c, image))
    }

    fn validate(
        &self,
        provider_config: Option<&serde_json::Value>,
    ) -> Result<Vec<crate::actuator::ConfigWarning>, crate::actuator::ConfigError> {
        config::parse(provider_config).map(|c| config::warnings(&c))
    }

    fn display_name(&self) -> &'static str {
        "gVisor"
    }

    fn origin(&self) -> &'static str {
        ORIGIN
    }

    fn node_ready_label(&self) -> &'static str {
        NODE_READY_LABEL
    }

    fn shared_managed_resource(&self) -> &'static str {
        MANAGED_RESOURCE
    }

    fn pool_managed_resource(&self, pool: &str) -> String {
        installation_managed_resource(pool)
    }

    fn desired(
        &self,
        cr: &ContainerRuntime,
        shoot: &Shoot,
        image: &str,
    ) -> Result<Desired, ActuatorError> {
        let config = config::parse(cr.spec.provider_config.as_ref())?;
        let pool = &cr.spec.worker_pool.name;
        AGENT.check_pool(pool)?;
        let installation = installation_objects(&InstallationInput {
            pool,
            selector: &cr.spec.worker_pool.selector,
            binary_path: &cr.spec.binary_path,
            config: &config,
            image,
        })?;
        let warnings = config::warnings(&config)
            .into_iter()
            .map(|w| Warning {
                reason: "UnknownFlags",
                message: format!("{} {}", w.field, w.message),
            })
            .collect();
        Ok(Desired {
            shared: self.shared(shoot)?,
            pool: ManagedResourceContent {
                name: installation_managed_resource(pool),
                data: installation.into_data(),
            },
            warnings,
        })
    }

    fn cleanup(
        &self,
        cr: &ContainerRuntime,
        shoot: &Shoot,
        image: &str,
    ) -> Result<Cleanup, ActuatorError> {
        let pool = &cr.spec.worker_pool.name;
        AGENT.check_pool(pool)?;
        let objects = cleanup_objects(&CleanupInput {
            pool,
            selector: &cr.spec.worker_pool.selector,
            binary_path: &cr.spec.binary_path,
            image,
        })?;
        Ok(Cleanup {
            // The cleanup pods run as the shared ServiceAccount and unlabel nodes with its RBAC.
            shared: self.shared(shoot)?,
            pool: ManagedResourceContent {
                name: installation_managed_resource(pool),
                data: objects.into_data(),
            },
            pending: format!(
                "gVisor is not yet removed from every node of pool {pool} (DaemonSet {SHOOT_NAMESPACE}/{})",
                cleanup_name(pool)
            ),
        })
    }
}

impl GVisor {
    fn shared(&self, shoot: &Shoot) -> Result<ManagedResourceContent, RenderError> {
        let tolerations = crate::scheduling::pool_tolerations(shoot, RUNTIME_TYPE);
        Ok(ManagedResourceContent {
            name: MANAGED_RESOURCE.into(),
            data: shared_objects(tolerations)?.into_data(),
        })
    }
}

/// Objects shared by all gVisor pools of a shoot: the RuntimeClass (tolerating the pools'
/// `tolerations`, see [`crate::scheduling::pool_tolerations`]), and the installer's
/// ServiceAccount with its permission to label nodes (RBAC) narrowed to its own node's ready
/// label (a ValidatingAdmissionPolicy).
pub fn shared_objects(tolerations: Option<Vec<Toleration>>) -> Result<ObjectSet, RenderError> {
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
            tolerations,
        }),
        overhead: None,
    };
    let mut set = ObjectSet::default();
    set.add(&runtime_class)?;
    AGENT.add_shared_objects(&mut set, &[NODE_READY_LABEL])?;
    Ok(set)
}
