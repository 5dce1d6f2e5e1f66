//! The seam between the Gardener contract and one runtime. An [`Actuator`] renders, purely,
//! everything a ContainerRuntime of its type needs in the shoot: the ManagedResources'
//! contents, warnings for the owner, and the node cleanup when the runtime leaves a pool. The
//! controller decides the contract's step, asks the actuator, and only then writes.
//!
//! Registering a runtime is one entry in [`ACTUATORS`].

use std::collections::BTreeMap;

use sandbox_api::{ContainerRuntime, Shoot};

use crate::manifests::RenderError;

/// Every runtime this extension serves.
pub static ACTUATORS: &[&dyn Actuator] = &[&crate::gvisor::GVisor, &crate::kata::Kata];

/// The actuator of `runtime_type`, if we serve it.
pub fn actuator(runtime_type: &str) -> Option<&'static dyn Actuator> {
    ACTUATORS
        .iter()
        .copied()
        .find(|a| a.runtime_type() == runtime_type)
}

/// A providerConfig that cannot be used; the message names the field and what is allowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid providerConfig: {field}: {message}")]
pub struct ConfigError {
    /// JSON path of the offending field, e.g. `providerConfig.configFlags.platform`.
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

/// Something about a providerConfig that is accepted but that the owner should know (e.g.
/// a gVisor flag we do not pass on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigWarning {
    /// JSON path of the field, e.g. `providerConfig.configFlags`.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Why an actuator cannot render.
#[derive(Debug, thiserror::Error)]
pub enum ActuatorError {
    /// The owner's providerConfig is unusable.
    #[error(transparent)]
    Configuration(#[from] ConfigError),
    /// An object does not serialise (a bug, not bad input).
    #[error(transparent)]
    Render(#[from] RenderError),
}

/// One ManagedResource as it must be: its name and the objects in its Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedResourceContent {
    pub name: String,
    pub data: BTreeMap<String, String>,
}

/// Something the shoot owner should know (published as a Warning Event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub reason: &'static str,
    pub message: String,
}

/// Everything a reconcile of one ContainerRuntime writes, rendered before any write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// The ManagedResource shared by the shoot's pools of this runtime.
    pub shared: ManagedResourceContent,
    /// The pool's ManagedResource.
    pub pool: ManagedResourceContent,
    pub warnings: Vec<Warning>,
}

/// What deleting a pool's ContainerRuntime must do on the pool's nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeCleanup {
    /// Uninstall the runtime from the nodes before the installer goes: the pool stays and no
    /// longer asks for the runtime.
    Required,
    /// Leave the nodes alone: they go away (shoot deleted or hibernated, pool removed), the
    /// owner forced the deletion, or the Cluster says the pool still wants the runtime (the
    /// object comes back, and uninstalling would only stop new pods until it does).
    NotNeeded,
}

/// Decides [`NodeCleanup`] for `runtime_type` from the shoot in the Cluster (which gardenlet
/// updates before it deletes stale ContainerRuntimes).
pub fn pool_left_without(shoot: &Shoot, pool: &str, runtime_type: &str) -> NodeCleanup {
    let clean = !shoot.is_deleting()
        && !shoot.force_deletion()
        && !shoot.is_hibernated()
        && shoot
            .worker(pool)
            .is_some_and(|worker| !worker.wants_runtime(runtime_type));
    if clean {
        NodeCleanup::Required
    } else {
        NodeCleanup::NotNeeded
    }
}

/// The node cleanup of one pool: the ManagedResources while it runs, and what it waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cleanup {
    /// The shared ManagedResource (the cleanup pods may need what it holds, e.g. RBAC).
    pub shared: ManagedResourceContent,
    /// Replaces the pool's ManagedResource: its objects clean the nodes, and rolled out
    /// means every node is clean.
    pub pool: ManagedResourceContent,
    /// What is pending while it has not rolled out, for the status.
    pub pending: String,
}

/// One runtime's knowledge for the seed controller. Every method is pure.
pub trait Actuator: Send + Sync + 'static {
    /// The `spec.type` served, e.g. `gvisor`.
    fn runtime_type(&self) -> &'static str;
    /// Validates a pool's providerConfig with the same decoder [`Actuator::desired`] uses, so
    /// the garden's admission and the seed's controller can never disagree; Ok carries what
    /// the owner should know about an accepted configuration.
    fn validate(
        &self,
        provider_config: Option<&serde_json::Value>,
    ) -> Result<Vec<ConfigWarning>, ConfigError>;
    /// What the node agent makes true on each node of a pool with `provider_config`, run
    /// from the node agent `image` (for the offline `render`; `desired` carries the same plan
    /// to the nodes).
    fn node_plan(
        &self,
        provider_config: Option<&serde_json::Value>,
        image: &str,
    ) -> Result<crate::node_plan::NodePlan, ConfigError>;
    /// Whether the runtime runs pods in VMs and so needs (nested) hardware virtualisation on
    /// the node's machine type.
    fn needs_virtualization(&self) -> bool {
        false
    }
    /// The runtime as operators name it in messages, e.g. `gVisor`.
    fn display_name(&self) -> &'static str;
    /// The `origin` label of its ManagedResources.
    fn origin(&self) -> &'static str;
    /// The label the node agent sets on a node once the runtime works there (its state
    /// annotation is [`crate::node_plan::state_annotation`] of it).
    fn node_ready_label(&self) -> &'static str;
    /// Further labels a node of `cr`'s pool must carry to count as ready, each with the name
    /// operators know it by (e.g. Kata's `kata-qemu` and its `kata-qemu-ready` label); their
    /// state annotations carry the agent's reasons. None for most runtimes.
    fn component_ready_labels(&self, _cr: &ContainerRuntime) -> Vec<(String, String)> {
        Vec::new()
    }
    /// The name of its node-agent image in the image vector.
    fn image_name(&self) -> &'static str {
        crate::image::NODE_AGENT_IMAGE
    }
    /// Name of the ManagedResource shared by all pools of a shoot.
    fn shared_managed_resource(&self) -> &'static str;
    /// Name of a pool's ManagedResource.
    fn pool_managed_resource(&self, pool: &str) -> String;
    /// The desired state of `cr` in `shoot` (the Cluster's, for what spans pools, e.g. the
    /// RuntimeClass's tolerations), with the node agent's `image` (the image vector's
    /// [`Actuator::image_name`]); validates the providerConfig.
    fn desired(
        &self,
        cr: &ContainerRuntime,
        shoot: &Shoot,
        image: &str,
    ) -> Result<Desired, ActuatorError>;
    /// Whether deleting the ContainerRuntime of `pool` must clean the pool's nodes first.
    fn node_cleanup(&self, shoot: &Shoot, pool: &str) -> NodeCleanup {
        pool_left_without(shoot, pool, self.runtime_type())
    }
    /// The node cleanup of `cr`'s pool in `shoot`. Needs no providerConfig: an invalid one
    /// must not keep nodes from being cleaned.
    fn cleanup(
        &self,
        cr: &ContainerRuntime,
        shoot: &Shoot,
        image: &str,
    ) -> Result<Cleanup, ActuatorError>;
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
    fn cleanup_only_when_the_pool_stays_without_the_runtime() {
        let clean = |s: &Shoot, pool| pool_left_without(s, pool, "gvisor");
        let s = shoot(json!({}));
        assert_eq!(clean(&s, "without"), NodeCleanup::Required);
        assert_eq!(clean(&s, "other"), NodeCleanup::Required);
        assert_eq!(clean(&s, "with"), NodeCleanup::NotNeeded);
        assert_eq!(clean(&s, "removed"), NodeCleanup::NotNeeded);
        assert_eq!(
            pool_left_without(&s, "other", "kata"),
            NodeCleanup::NotNeeded
        );

        let deleting =
            shoot(json!({"metadata": {"name": "s", "deletionTimestamp": "2026-11-21T10:00:00Z"}}));
        assert_eq!(clean(&deleting, "without"), NodeCleanup::NotNeeded);
        let forced = shoot(json!({"metadata": {"name": "s", "annotations": {
            "confirmation.gardener.cloud/force-deletion": "true"}}}));
        assert_eq!(clean(&forced, "without"), NodeCleanup::NotNeeded);
        let mut hibernated = shoot(json!({"status": {"hibernated": true}}));
        hibernated.spec.hibernation = Some(sandbox_api::shoot::Hibernation {
            enabled: Some(true),
        });
        assert_eq!(clean(&hibernated, "without"), NodeCleanup::NotNeeded);
    }

    #[test]
    fn every_registered_runtime_is_found_by_its_type() {
        for a in ACTUATORS {
            assert_eq!(actuator(a.runtime_type()).unwrap().origin(), a.origin());
        }
        assert!(actuator("nope").is_none());
    }
}
