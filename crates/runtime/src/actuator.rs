//! The seam between the Gardener contract and one runtime. A runtime is a [`Description`]
//! (its names, its node agent, its image) and a [`Runtime`]: the few hooks that really differ
//! (decoding its providerConfig, its node plan, its RuntimeClasses). What a reconcile or a
//! cleanup renders from them is written once, here, for every runtime ([`Actuator`]): decode
//! → check the pool → the pool's node agent → the objects the shoot's pools share. The
//! controller decides the contract's step, asks the actuator, and only then writes.
//!
//! Registering a runtime is one entry in [`ACTUATORS`].

use std::collections::BTreeMap;

use sandbox_api::{ContainerRuntime, Shoot};

use crate::installation::{self, Agent, PoolInput, SHOOT_NAMESPACE};
use crate::manifests::{ObjectSet, RenderError};
use crate::node_plan::{NodePlan, Pins};
pub use crate::provider_config::{ConfigError, ConfigWarning};

/// Every runtime this extension serves.
pub static ACTUATORS: &[&dyn Actuator] = &[&crate::gvisor::GVisor, &crate::kata::Kata];

/// The actuator of `runtime_type`, if we serve it.
pub fn actuator(runtime_type: &str) -> Option<&'static dyn Actuator> {
    ACTUATORS
        .iter()
        .copied()
        .find(|a| a.description().runtime_type == runtime_type)
}

/// Why an actuator cannot render.
#[derive(Debug, thiserror::Error)]
pub enum ActuatorError {
    /// The owner's providerConfig is unusable.
    #[error(transparent)]
    Configuration(#[from] ConfigError),
    /// The plan cannot go through an OperatingSystemConfig.
    #[error(transparent)]
    Osc(#[from] crate::osc::OscError),
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

/// What names a runtime, wherever it shows: in the garden, in the seed, in the shoot.
#[derive(Clone, Copy, Debug)]
pub struct Description {
    /// The `spec.type` served, e.g. `gvisor`.
    pub runtime_type: &'static str,
    /// The runtime as operators name it in messages, e.g. `gVisor`.
    pub display_name: &'static str,
    /// Whether the runtime runs pods in VMs and so needs (nested) hardware virtualisation on
    /// the node's machine type.
    pub needs_virtualization: bool,
    /// The name of its node-agent image in the image vector.
    pub image_name: &'static str,
    /// The label the node agent sets on a node once the runtime works there (its state
    /// annotation is [`crate::node_plan::state_annotation`] of it).
    pub node_ready_label: &'static str,
    /// Name of the ManagedResource shared by all pools of a shoot.
    pub shared_managed_resource: &'static str,
    /// Prefix of a pool's ManagedResource (the pool's name follows).
    pub pool_managed_resource_prefix: &'static str,
    /// Its node agents' names (and the `origin` of its ManagedResources).
    pub agent: Agent,
}

impl Description {
    /// The `origin` label of its ManagedResources.
    pub fn origin(&self) -> &'static str {
        self.agent.origin
    }

    /// Name of a pool's ManagedResource.
    pub fn pool_managed_resource(&self, pool: &str) -> String {
        format!("{}{pool}", self.pool_managed_resource_prefix)
    }

    /// The seed Secret (shoot namespace) whose kubeconfig gardener-resource-manager's token
    /// requestor fills with a token of [`Self::health_service_account`]: the controller's only
    /// access to the shoot, `shoot-access-<shared ManagedResource>`.
    pub fn shoot_access_secret(&self) -> String {
        format!("shoot-access-{}", self.shared_managed_resource)
    }

    /// The shoot ServiceAccount (in `kube-system`) the health check reads nodes as; it may
    /// get and list nodes, nothing else.
    pub fn health_service_account(&self) -> String {
        format!("{}-health", self.shared_managed_resource)
    }
}

/// A runtime's validated providerConfig, and what it means on a node.
pub trait RuntimeConfig: Clone + Sized {
    /// Decodes and validates a pool's raw providerConfig (None: the defaults).
    fn parse(provider_config: Option<&serde_json::Value>) -> Result<Self, ConfigError>;
    /// What the owner should know about an accepted configuration.
    fn warnings(&self) -> Vec<ConfigWarning> {
        Vec::new()
    }
    /// What the node agent makes true on each node of a pool with this configuration, run
    /// from `image`.
    fn node_plan(&self, image: &str) -> NodePlan;
}

/// What differs between runtimes. Every method is pure; [`Actuator`] is written once on top.
pub trait Runtime: Send + Sync + 'static {
    /// The validated providerConfig.
    type Config: RuntimeConfig;
    /// Its names.
    const DESCRIPTION: Description;

    /// The configuration whose plan the cleanup runs: one that names everything any
    /// configuration may have installed (uninstalling needs the plan's names and paths, and
    /// an invalid providerConfig must not keep the nodes from being cleaned).
    fn cleanup_config(&self) -> Self::Config;
    /// The shoot's RuntimeClasses, from what its pools offer; `current` is the reconciled
    /// pool's validated config, which wins over its entry in the Cluster.
    fn runtime_classes(
        &self,
        shoot: &Shoot,
        current: Option<(&str, &Self::Config)>,
    ) -> Result<ObjectSet, RenderError>;
    /// Labels the node agent may set, beyond the ready label (their state annotations too).
    fn component_labels(&self) -> Vec<String> {
        Vec::new()
    }
    /// Further labels a node of a pool with `config` must carry to count as ready, each with
    /// the name operators know it by (e.g. Kata's `kata-qemu` and its `kata-qemu-ready`).
    fn component_ready_labels(&self, _config: &Self::Config) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// One runtime's knowledge for the seed controller and the garden's admission. Every method
/// is pure; every [`Runtime`] is one.
pub trait Actuator: Send + Sync + 'static {
    /// Its names.
    fn description(&self) -> &'static Description;
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
    ) -> Result<NodePlan, ConfigError>;
    /// Further labels a node of `cr`'s pool must carry to count as ready, with the names
    /// operators know them by; their state annotations carry the agent's reasons. None for
    /// most runtimes, and none for an invalid providerConfig (its error is reported).
    fn component_ready_labels(&self, cr: &ContainerRuntime) -> Vec<(String, String)>;
    /// The desired state of `cr` in `shoot` (the Cluster's, for what spans pools, e.g. the
    /// RuntimeClass's tolerations), with the node agent's `image` (the image vector's
    /// [`Description::image_name`]); validates the providerConfig.
    fn desired(
        &self,
        cr: &ContainerRuntime,
        shoot: &Shoot,
        image: &str,
    ) -> Result<Desired, ActuatorError> {
        self.desired_pinned(cr, shoot, image, &Pins::new())
    }
    /// [`Actuator::desired`], with the checksums the seed expects of the image's binaries
    /// (the image vector's, by architecture): the node agent installs nothing else.
    fn desired_pinned(
        &self,
        cr: &ContainerRuntime,
        shoot: &Shoot,
        image: &str,
        pinned: &Pins,
    ) -> Result<Desired, ActuatorError>;
    /// The desired state of `cr` in installation mode `osc`: the shared objects (the
    /// RuntimeClass among them) as [`Actuator::desired`] renders them, and a pool
    /// ManagedResource without an installer (the OSC carries the runtime to the nodes).
    fn desired_osc(&self, cr: &ContainerRuntime, shoot: &Shoot) -> Result<Desired, ActuatorError>;
    /// The pool's OperatingSystemConfig entries in installation mode `osc`
    /// ([`crate::osc::install`]) for its providerConfig, with the binaries from `image`.
    fn osc_install(
        &self,
        provider_config: Option<&serde_json::Value>,
        image: &str,
        pinned: &Pins,
    ) -> Result<crate::osc::RuntimeEntries, ActuatorError>;
    /// The entries that take the runtime off a pool's nodes ([`crate::osc::removal`]).
    fn osc_removal(&self, image: &str) -> Result<crate::osc::RuntimeEntries, ActuatorError>;
    /// The node cleanup of `cr`'s pool in `shoot`. Needs no providerConfig: an invalid one
    /// must not keep nodes from being cleaned.
    fn cleanup(
        &self,
        cr: &ContainerRuntime,
        shoot: &Shoot,
        image: &str,
    ) -> Result<Cleanup, ActuatorError>;
}

impl<R: Runtime> Actuator for R {
    fn description(&self) -> &'static Description {
        &R::DESCRIPTION
    }

    fn validate(
        &self,
        provider_config: Option<&serde_json::Value>,
    ) -> Result<Vec<ConfigWarning>, ConfigError> {
        R::Config::parse(provider_config).map(|c| c.warnings())
    }

    fn node_plan(
        &self,
        provider_config: Option<&serde_json::Value>,
        image: &str,
    ) -> Result<NodePlan, ConfigError> {
        R::Config::parse(provider_config).map(|c| c.node_plan(image))
    }

    fn component_ready_labels(&self, cr: &ContainerRuntime) -> Vec<(String, String)> {
        R::Config::parse(cr.spec.provider_config.as_ref())
            .map(|c| Runtime::component_ready_labels(self, &c))
            .unwrap_or_default()
    }

    fn desired_pinned(
        &self,
        cr: &ContainerRuntime,
        shoot: &Shoot,
        image: &str,
        pinned: &Pins,
    ) -> Result<Desired, ActuatorError> {
        let config = R::Config::parse(cr.spec.provider_config.as_ref())?;
        let pool = &cr.spec.worker_pool.name;
        R::DESCRIPTION.agent.check_pool(pool)?;
        let mut plan = config.node_plan(image);
        plan.binaries.pinned = pinned.clone();
        check_binary_path(&cr.spec.binary_path, &plan)?;
        let installer = installation::installation_objects(
            &R::DESCRIPTION.agent,
            &pool_input(cr, &plan, image),
        )?;
        let warnings = warnings_of(&config);
        Ok(Desired {
            shared: shared(self, shoot, Some((pool, &config)))?,
            pool: ManagedResourceContent {
                name: R::DESCRIPTION.pool_managed_resource(pool),
                data: installer.into_data(),
            },
            warnings,
        })
    }

    fn desired_osc(&self, cr: &ContainerRuntime, shoot: &Shoot) -> Result<Desired, ActuatorError> {
        let config = R::Config::parse(cr.spec.provider_config.as_ref())?;
        let pool = &cr.spec.worker_pool.name;
        R::DESCRIPTION.agent.check_pool(pool)?;
        let warnings = warnings_of(&config);
        Ok(Desired {
            shared: shared_for(
                self,
                shoot,
                Some((pool, &config)),
                crate::osc::InstallationMode::Osc,
            )?,
            pool: ManagedResourceContent {
                name: R::DESCRIPTION.pool_managed_resource(pool),
                data: BTreeMap::new(),
            },
            warnings,
        })
    }

    fn osc_install(
        &self,
        provider_config: Option<&serde_json::Value>,
        image: &str,
        pinned: &Pins,
    ) -> Result<crate::osc::RuntimeEntries, ActuatorError> {
        let mut plan = R::Config::parse(provider_config)?.node_plan(image);
        plan.binaries.pinned = pinned.clone();
        let everything = self.cleanup_config().node_plan(image);
        Ok(crate::osc::install(&plan, &everything, image)?)
    }

    fn osc_removal(&self, image: &str) -> Result<crate::osc::RuntimeEntries, ActuatorError> {
        Ok(crate::osc::removal(
            &self.cleanup_config().node_plan(image),
        )?)
    }

    fn cleanup(
        &self,
        cr: &ContainerRuntime,
        shoot: &Shoot,
        image: &str,
    ) -> Result<Cleanup, ActuatorError> {
        let description = &R::DESCRIPTION;
        let pool = &cr.spec.worker_pool.name;
        description.agent.check_pool(pool)?;
        let plan = self.cleanup_config().node_plan(image);
        check_binary_path(&cr.spec.binary_path, &plan)?;
        let objects =
            installation::cleanup_objects(&description.agent, &pool_input(cr, &plan, image))?;
        Ok(Cleanup {
            // The cleanup pods run as the shared ServiceAccount and unlabel nodes with its RBAC.
            shared: shared(self, shoot, None)?,
            pool: ManagedResourceContent {
                name: description.pool_managed_resource(pool),
                data: objects.into_data(),
            },
            pending: format!(
                "{name} is not yet removed from every node of pool {pool} (DaemonSet {SHOOT_NAMESPACE}/{}); nodes with running {name} pods keep it until they end",
                description.agent.cleanup_name(pool),
                name = description.display_name,
            ),
        })
    }
}

/// `spec.binaryPath` becomes a hostPath a root container writes into: refused unless it is a
/// plain binary folder ([`installation::check_binary_path`]).
fn check_binary_path(path: &str, plan: &NodePlan) -> Result<(), ConfigError> {
    let target = plan.binaries.versioned.as_ref().map(|v| v.target.as_str());
    installation::check_binary_path(path, target)
}

fn pool_input<'a>(cr: &'a ContainerRuntime, plan: &'a NodePlan, image: &'a str) -> PoolInput<'a> {
    PoolInput {
        pool: &cr.spec.worker_pool.name,
        selector: &cr.spec.worker_pool.selector,
        binary_path: &cr.spec.binary_path,
        plan,
        image,
    }
}

/// The ManagedResource shared by the shoot's pools of runtime `R`: its RuntimeClasses, and
/// its node agents' ServiceAccount with the permission to label nodes (RBAC), narrowed to
/// their own node's labels (a ValidatingAdmissionPolicy).
/// What the owner should know about `config`, as the controller publishes it.
fn warnings_of<C: RuntimeConfig>(config: &C) -> Vec<Warning> {
    config
        .warnings()
        .into_iter()
        .map(|w| Warning {
            reason: w.reason,
            message: format!("{} {}", w.field, w.message),
        })
        .collect()
}

fn shared<R: Runtime>(
    runtime: &R,
    shoot: &Shoot,
    current: Option<(&str, &R::Config)>,
) -> Result<ManagedResourceContent, RenderError> {
    shared_for(
        runtime,
        shoot,
        current,
        crate::osc::InstallationMode::DaemonSet,
    )
}

/// The shared objects; in installation mode `osc` the controller also labels nodes (its
/// shoot token may patch nodes, narrowed to the ready labels by a policy).
fn shared_for<R: Runtime>(
    runtime: &R,
    shoot: &Shoot,
    current: Option<(&str, &R::Config)>,
    mode: crate::osc::InstallationMode,
) -> Result<ManagedResourceContent, RenderError> {
    let mut set = runtime.runtime_classes(shoot, current)?;
    let labels: Vec<String> = std::iter::once(R::DESCRIPTION.node_ready_label.to_string())
        .chain(runtime.component_labels())
        .collect();
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    R::DESCRIPTION.agent.add_shared_objects(&mut set, &labels)?;
    let health = format!(
        "gardener.cloud:{}:health",
        R::DESCRIPTION.shared_managed_resource
    );
    match mode {
        crate::osc::InstallationMode::DaemonSet => installation::add_health_reader(
            &mut set,
            &R::DESCRIPTION.health_service_account(),
            &health,
        )?,
        crate::osc::InstallationMode::Osc => installation::add_node_labeller(
            &mut set,
            &R::DESCRIPTION.health_service_account(),
            &health,
            // A policy's name is a DNS subdomain (no colons).
            &format!("{}-node-labeller", R::DESCRIPTION.shared_managed_resource),
            &labels,
        )?,
    }
    Ok(ManagedResourceContent {
        name: R::DESCRIPTION.shared_managed_resource.into(),
        data: set.into_data(),
    })
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
            let d = a.description();
            assert_eq!(
                actuator(d.runtime_type).unwrap().description().origin(),
                d.origin()
            );
        }
        assert!(actuator("nope").is_none());
    }
}
