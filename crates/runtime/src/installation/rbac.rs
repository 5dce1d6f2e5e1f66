//! What the node agents of all pools of a runtime share: their ServiceAccount, the permission
//! to label nodes, and the policy that narrows it to their own node's labels; and what the
//! controller's health check may read in the shoot (nodes, nothing else).

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{Agent, SHOOT_NAMESPACE};
use crate::manifests::{ObjectSet, RenderError};

impl Agent {
    /// Adds what the agents of all pools share to `set`: their ServiceAccount, the permission
    /// to label nodes (RBAC: nodes get/patch), and the policy that narrows it to `labels` (and
    /// their state annotations) on the agent's own node.
    pub fn add_shared_objects(
        &self,
        set: &mut ObjectSet,
        labels: &[&str],
    ) -> Result<(), RenderError> {
        let service_account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(self.service_account.into()),
                namespace: Some(SHOOT_NAMESPACE.into()),
                ..ObjectMeta::default()
            },
            automount_service_account_token: Some(false),
            ..ServiceAccount::default()
        };
        // The agent labels its own node: nodes get and patch, nothing else.
        let cluster_role = ClusterRole {
            metadata: ObjectMeta {
                name: Some(self.cluster_role.into()),
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
                name: Some(self.cluster_role.into()),
                ..ObjectMeta::default()
            },
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: self.cluster_role.into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: self.service_account.into(),
                namespace: Some(SHOOT_NAMESPACE.into()),
                ..Subject::default()
            }]),
        };
        set.add(&service_account)?;
        set.add(&cluster_role)?;
        set.add(&binding)?;
        // RBAC lets it patch any node; the policy narrows that to its own node's labels.
        crate::node_label_policy::add_node_label_policy(
            set,
            self.label_policy,
            SHOOT_NAMESPACE,
            self.service_account,
            labels,
        )
    }
}

/// The health check's permission in the shoot: `get` and `list` on nodes for
/// `service_account` in `kube-system` (which gardener-resource-manager's token requestor
/// creates and issues the token of), as ClusterRole and binding `name`.
pub fn add_health_reader(
    set: &mut ObjectSet,
    service_account: &str,
    name: &str,
) -> Result<(), RenderError> {
    add_node_access(set, service_account, name, &["get", "list"])
}

/// The controller's permission in the shoot in installation mode `osc`: as
/// [`add_health_reader`], and `patch` on nodes, which [`crate::node_label_policy::labeller_policy`]
/// narrows to the runtime's ready labels and their state annotations.
pub fn add_node_labeller(
    set: &mut ObjectSet,
    service_account: &str,
    name: &str,
    policy: &str,
    labels: &[&str],
) -> Result<(), RenderError> {
    add_node_access(set, service_account, name, &["get", "list", "patch"])?;
    crate::node_label_policy::add_labeller_policy(
        set,
        policy,
        SHOOT_NAMESPACE,
        service_account,
        labels,
    )
}

fn add_node_access(
    set: &mut ObjectSet,
    service_account: &str,
    name: &str,
    verbs: &[&str],
) -> Result<(), RenderError> {
    let cluster_role = ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["nodes".into()]),
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
            ..PolicyRule::default()
        }]),
        ..ClusterRole::default()
    };
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: name.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: service_account.into(),
            namespace: Some(SHOOT_NAMESPACE.into()),
            ..Subject::default()
        }]),
    };
    set.add(&cluster_role)?;
    set.add(&binding)
}
