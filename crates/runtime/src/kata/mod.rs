//! Kata Containers: what a pool with `type: kata` needs in the shoot and on its nodes.
//!
//! In the shoot: one RuntimeClass `kata-<hypervisor>` per hypervisor some pool offers, with
//! the pod overhead (`overhead.podFixed`) and a node selector on that hypervisor's ready label,
//! so a pool with QEMU and a pool with Firecracker never get each other's pods; the
//! installer per pool (the generic node agent with Kata's node plan and payload image).
//! Names follow the gVisor extension's pattern (`extension-runtime-kata`,
//! `extension-runtime-kata-installation-<pool>`).

pub mod config;
pub mod devmapper;
pub mod node;

pub use config::{Hypervisor, KataConfig};
pub use node::node_plan;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::api::node::v1::{Overhead, RuntimeClass, Scheduling};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sandbox_api::Shoot;
use sandbox_api::shoot::Taint;

use crate::actuator::{Description, Runtime};
use crate::installation::Agent;
use crate::manifests::{ObjectSet, RenderError};

/// The `spec.type` of a Kata ContainerRuntime.
pub const RUNTIME_TYPE: &str = "kata";
/// The node label gardenlet sets on pools that run Kata.
pub const NODE_LABEL: &str = "containerruntime.worker.gardener.cloud/kata";
/// The label our node agent sets once containerd has loaded the Kata handlers (whether or not
/// a hypervisor can run here: the per-hypervisor labels say that).
pub const NODE_READY_LABEL: &str = "runtime-sandbox.gardener.cloud/kata-ready";
/// ServiceAccount of the node installer in the shoot.
pub const SERVICE_ACCOUNT: &str = "kata";
/// ClusterRole (and binding) that lets the node agent label nodes.
pub const NODE_AGENT_CLUSTER_ROLE: &str = "extensions.gardener.cloud:runtime-kata:node-agent";
/// ValidatingAdmissionPolicy (and binding) that limits the node agent to its labels.
pub const NODE_LABEL_POLICY: &str = "runtime-kata-node-agent-labels";
/// The shared ManagedResource (RuntimeClasses + RBAC).
pub const MANAGED_RESOURCE: &str = "extension-runtime-kata";
/// Prefix of the per-pool ManagedResource (the node installer).
pub const INSTALLATION_MANAGED_RESOURCE_PREFIX: &str = "extension-runtime-kata-installation-";
/// The `origin` label value of our ManagedResources.
pub const ORIGIN: &str = "gardener-extension-runtime-kata";
/// Name of Kata's node-agent image (agent and payload) in the image vector.
pub const IMAGE_NAME: &str = "runtime-kata-installation";

/// Kata's node agents.
pub const AGENT: Agent = Agent {
    app: "containerd-kata",
    service_account: SERVICE_ACCOUNT,
    origin: ORIGIN,
    cluster_role: NODE_AGENT_CLUSTER_ROLE,
    label_policy: NODE_LABEL_POLICY,
};

/// The handler and RuntimeClass of `h`: `kata-qemu`, `kata-clh`, `kata-fc`.
pub fn handler_name(h: Hypervisor) -> String {
    format!("kata-{}", h.name())
}

/// The label a node gets once `h` passed its host check there.
pub fn hypervisor_ready_label(h: Hypervisor) -> String {
    format!("runtime-sandbox.gardener.cloud/kata-{}-ready", h.name())
}

/// Kata as a [`Runtime`].
pub struct Kata;

impl Runtime for Kata {
    type Config = KataConfig;

    const DESCRIPTION: Description = Description {
        runtime_type: RUNTIME_TYPE,
        display_name: "Kata Containers",
        needs_virtualization: true,
        image_name: IMAGE_NAME,
        node_ready_label: NODE_READY_LABEL,
        shared_managed_resource: MANAGED_RESOURCE,
        pool_managed_resource_prefix: INSTALLATION_MANAGED_RESOURCE_PREFIX,
        agent: AGENT,
    };

    /// Every hypervisor's handler and label goes, whatever the (maybe invalid) config was.
    fn cleanup_config(&self) -> KataConfig {
        KataConfig::everything()
    }

    /// One RuntimeClass per hypervisor some pool offers (see [`offers`]), with the pod
    /// overhead and a node selector on that hypervisor's ready label.
    fn runtime_classes(
        &self,
        shoot: &Shoot,
        current: Option<(&str, &KataConfig)>,
    ) -> Result<ObjectSet, RenderError> {
        let mut set = ObjectSet::default();
        for (h, (overhead, tolerations)) in offers(shoot, current) {
            let runtime_class = RuntimeClass {
                metadata: ObjectMeta {
                    name: Some(handler_name(h)),
                    ..ObjectMeta::default()
                },
                handler: handler_name(h),
                overhead: Some(Overhead {
                    pod_fixed: Some(
                        [
                            ("cpu".to_string(), overhead.cpu.into()),
                            ("memory".to_string(), overhead.memory.into()),
                        ]
                        .into(),
                    ),
                }),
                scheduling: Some(Scheduling {
                    // Only nodes where this hypervisor passed the agent's host check.
                    node_selector: Some(
                        [
                            (NODE_LABEL.to_string(), "true".to_string()),
                            (hypervisor_ready_label(h), "true".to_string()),
                        ]
                        .into(),
                    ),
                    tolerations: Some(tolerations).filter(|t| !t.is_empty()),
                }),
            };
            set.add(&runtime_class)?;
        }
        Ok(set)
    }

    /// Each hypervisor's ready label.
    fn component_labels(&self) -> Vec<String> {
        Hypervisor::ALL.map(hypervisor_ready_label).to_vec()
    }

    /// Each offered hypervisor's ready label: a node where one is not verified cannot run that
    /// RuntimeClass's pods, which `EveryNodeReady` names with the agent's reason.
    fn component_ready_labels(&self, config: &KataConfig) -> Vec<(String, String)> {
        config
            .hypervisors
            .iter()
            .map(|h| (handler_name(*h), hypervisor_ready_label(*h)))
            .collect()
    }
}

/// Per offered hypervisor: the RuntimeClass's overhead and tolerations.
type Offers = BTreeMap<Hypervisor, (config::Overhead, Vec<Toleration>)>;

/// What the shoot's pools offer: per hypervisor, the largest overhead any pool configures and
/// the pools' taints. `current` is the reconciled pool's validated config, which wins over its
/// entry in the Cluster (gardenlet updates the Cluster first, but a ContainerRuntime's own
/// providerConfig is what this reconcile validated). Pools whose providerConfig is invalid are
/// left out: their own ContainerRuntime reports the error.
fn offers(shoot: &Shoot, current: Option<(&str, &KataConfig)>) -> Offers {
    let mut offers: BTreeMap<Hypervisor, (config::Overhead, Vec<&Taint>)> = BTreeMap::new();
    let mut pools: Vec<(&str, Option<KataConfig>, &[Taint])> = shoot
        .spec
        .provider
        .workers
        .iter()
        .filter_map(|w| {
            let raw = w.runtime(RUNTIME_TYPE)?.provider_config.as_ref();
            Some((
                w.name.as_str(),
                config::parse(raw).ok(),
                w.taints.as_slice(),
            ))
        })
        .collect();
    if let Some((pool, config)) = current {
        match pools.iter_mut().find(|(name, _, _)| *name == pool) {
            Some(entry) => entry.1 = Some(config.clone()),
            None => pools.push((pool, Some(config.clone()), &[])),
        }
    }
    for (_, config, taints) in pools {
        let Some(config) = config else { continue };
        for h in &config.hypervisors {
            let overhead = &config.overhead[h];
            let entry = offers
                .entry(*h)
                .or_insert_with(|| (overhead.clone(), Vec::new()));
            entry.0 = entry.0.max(overhead);
            entry.1.extend(taints);
        }
    }
    offers
        .into_iter()
        .map(|(h, (overhead, taints))| (h, (overhead, crate::scheduling::tolerate(taints))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shoot(workers: serde_json::Value) -> Shoot {
        serde_json::from_value(
            json!({"metadata": {"name": "s"}, "spec": {"provider": {"workers": workers}}}),
        )
        .unwrap()
    }

    fn kata(hypervisors: &[&str], extra: serde_json::Value) -> serde_json::Value {
        let mut c = json!({"apiVersion": config::API_VERSION, "kind": config::KIND, "hypervisors": hypervisors});
        for (k, v) in extra.as_object().unwrap() {
            c[k.as_str()] = v.clone();
        }
        json!({"name": "containerd", "containerRuntimes": [{"type": "kata", "providerConfig": c}]})
    }

    #[test]
    fn runtime_classes_follow_what_the_pools_offer() {
        let s = shoot(json!([
            {"name": "a", "cri": kata(&["qemu"], json!({"overhead": {"qemu": {"memory": "512Mi"}}})),
             "taints": [{"key": "sandbox", "value": "kata", "effect": "NoSchedule"}]},
            {"name": "b", "cri": kata(&["qemu", "fc"], json!({}))},
            {"name": "broken", "cri": kata(&["nope"], json!({}))},
            {"name": "plain", "cri": {"name": "containerd"}},
        ]));
        let offers = offers(&s, None);
        assert_eq!(
            offers.keys().copied().collect::<Vec<_>>(),
            [Hypervisor::Qemu, Hypervisor::Fc]
        );
        let (qemu, qemu_tolerations) = &offers[&Hypervisor::Qemu];
        assert_eq!((qemu.memory.as_str(), qemu.cpu.as_str()), ("512Mi", "250m"));
        assert_eq!(qemu_tolerations.len(), 1);
        let (fc, fc_tolerations) = &offers[&Hypervisor::Fc];
        assert_eq!(fc.memory.as_str(), "130Mi");
        assert!(
            fc_tolerations.is_empty(),
            "pool a (tainted) does not offer fc"
        );
        let set = Kata.runtime_classes(&s, None).unwrap();
        let keys: Vec<_> = set.data().keys().cloned().collect();
        assert!(
            keys.contains(&"runtimeclass____kata-qemu.yaml".to_string()),
            "{keys:?}"
        );
        assert!(!keys.iter().any(|k| k.contains("kata-clh")), "{keys:?}");
    }
}
