//! gVisor: what a pool with `type: gvisor` needs in the shoot. Names match the Go extension
//! `gardener-extension-runtime-gvisor`, so operators' habits and tooling keep working.

pub mod config;
mod installation;

pub use config::{ConfigError, GVisorConfig};
pub use installation::{InstallationInput, installation_objects};

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::node::v1::{RuntimeClass, Scheduling};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::manifests::{ObjectSet, RenderError};

/// The `spec.type` of a gVisor ContainerRuntime.
pub const RUNTIME_TYPE: &str = "gvisor";
/// The RuntimeClass offered in the shoot.
pub const RUNTIME_CLASS: &str = "gvisor";
/// The containerd runtime handler the RuntimeClass points at.
pub const HANDLER: &str = "runsc";
/// The node label gardenlet sets on pools that run gVisor.
pub const NODE_LABEL: &str = "containerruntime.worker.gardener.cloud/gvisor";
/// The label our node agent puts on a node once containerd has loaded `runsc` there.
pub const NODE_READY_LABEL: &str = "runtime-sandbox.gardener.cloud/gvisor-ready";
/// ServiceAccount of the node installer in the shoot.
pub const SERVICE_ACCOUNT: &str = "gvisor";
/// ClusterRole (and binding) that lets the node agent label nodes.
pub const NODE_AGENT_CLUSTER_ROLE: &str = "extensions.gardener.cloud:runtime-gvisor:node-agent";
/// Namespace of everything we put into the shoot.
pub const SHOOT_NAMESPACE: &str = "kube-system";
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

/// Objects shared by all gVisor pools of a shoot: the RuntimeClass, and the installer's
/// ServiceAccount with its permission to label nodes.
pub fn shared_objects() -> Result<ObjectSet, RenderError> {
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
            tolerations: None,
        }),
        overhead: None,
    };
    let service_account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(SERVICE_ACCOUNT.into()),
            namespace: Some(SHOOT_NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    };
    // The agent labels its own node: nodes get and patch, nothing else.
    let cluster_role = ClusterRole {
        metadata: ObjectMeta {
            name: Some(NODE_AGENT_CLUSTER_ROLE.into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["nodes".into()]),
            verbs: vec!["get".into(), "patch".into()],
            ..PolicyRule::default()
        }]),
        ..ClusterRole::default()
    };
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(NODE_AGENT_CLUSTER_ROLE.into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: NODE_AGENT_CLUSTER_ROLE.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: SERVICE_ACCOUNT.into(),
            namespace: Some(SHOOT_NAMESPACE.into()),
            ..Subject::default()
        }]),
    };
    let mut set = ObjectSet::default();
    set.add(&runtime_class)?;
    set.add(&service_account)?;
    set.add(&cluster_role)?;
    set.add(&binding)?;
    Ok(set)
}
