//! gVisor: what a pool with `type: gvisor` needs in the shoot. Names match the Go extension
//! `gardener-extension-runtime-gvisor`, so operators' habits and tooling keep working.

pub mod config;
mod installation;

pub use config::{ConfigError, GVisorConfig};
pub use installation::{
    CleanupInput, InstallationInput, cleanup_name, cleanup_objects, installation_objects,
    installer_name,
};

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::node::v1::{RuntimeClass, Scheduling};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use sandbox_api::Shoot;

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

/// What deleting a pool's gVisor ContainerRuntime must do on the pool's nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeCleanup {
    /// Uninstall gVisor from the nodes before the installer goes: the pool stays and no longer
    /// asks for gVisor.
    Required,
    /// Leave the nodes alone: they go away (shoot deleted or hibernated, pool removed), the
    /// owner forced the deletion, or the Cluster says the pool still wants gVisor (the object
    /// comes back, and uninstalling would only stop new gVisor pods until it does).
    NotNeeded,
}

/// Decides [`NodeCleanup`] from the shoot in the Cluster (which gardenlet updates before it
/// deletes stale ContainerRuntimes).
pub fn node_cleanup(shoot: &Shoot, pool: &str) -> NodeCleanup {
    let clean = !shoot.is_deleting()
        && !shoot.force_deletion()
        && !shoot.is_hibernated()
        && shoot
            .worker(pool)
            .is_some_and(|worker| !worker.wants_runtime(RUNTIME_TYPE));
    if clean {
        NodeCleanup::Required
    } else {
        NodeCleanup::NotNeeded
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shoot(patch: serde_json::Value) -> Shoot {
        let mut value = json!({
            "metadata": {"name": "s"},
            "spec": {"provider": {"workers": [
                {"name": "with", "cri": {"name": "containerd", "containerRuntimes": [{"type": "gvisor"}]}},
                {"name": "without", "cri": {"name": "containerd"}},
                {"name": "other", "cri": {"name": "containerd", "containerRuntimes": [{"type": "kata"}]}},
            ]}},
        });
        for (k, v) in patch.as_object().unwrap() {
            value[k.as_str()] = v.clone();
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn cleanup_only_when_the_pool_stays_without_gvisor() {
        let s = shoot(json!({}));
        assert_eq!(node_cleanup(&s, "without"), NodeCleanup::Required);
        assert_eq!(node_cleanup(&s, "other"), NodeCleanup::Required);
        assert_eq!(node_cleanup(&s, "with"), NodeCleanup::NotNeeded);
        assert_eq!(node_cleanup(&s, "removed"), NodeCleanup::NotNeeded);

        let deleting =
            shoot(json!({"metadata": {"name": "s", "deletionTimestamp": "2026-11-21T10:00:00Z"}}));
        assert_eq!(node_cleanup(&deleting, "without"), NodeCleanup::NotNeeded);
        let forced = shoot(json!({"metadata": {"name": "s", "annotations": {
            "confirmation.gardener.cloud/force-deletion": "true"}}}));
        assert_eq!(node_cleanup(&forced, "without"), NodeCleanup::NotNeeded);
        let mut hibernated = shoot(json!({"status": {"hibernated": true}}));
        hibernated.spec.hibernation = Some(sandbox_api::shoot::Hibernation {
            enabled: Some(true),
        });
        assert_eq!(node_cleanup(&hibernated, "without"), NodeCleanup::NotNeeded);
    }
}
