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
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use sandbox_api::shoot::Taint;
use sandbox_api::{ContainerRuntime, Shoot};

use crate::actuator::{Actuator, ActuatorError, Cleanup, Desired, ManagedResourceContent};
use crate::installation::{self, Agent, PoolInput};
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

/// Name of the per-pool ManagedResource.
pub fn installation_managed_resource(pool: &str) -> String {
    format!("{INSTALLATION_MANAGED_RESOURCE_PREFIX}{pool}")
}

/// Kata's [`Actuator`].
pub struct Kata;

impl Actuator for Kata {
    fn runtime_type(&self) -> &'static str {
        RUNTIME_TYPE
    }

    fn node_plan(
        &self,
        provider_config: Option<&serde_json::Value>,
        image: &str,
    ) -> Result<crate::node_plan::NodePlan, crate::actuator::ConfigError> {
        config::parse(provider_config).map(|c| node_plan(&c, image))
    }

    fn validate(
        &self,
        provider_config: Option<&serde_json::Value>,
    ) -> Result<Vec<crate::actuator::ConfigWarning>, crate::actuator::ConfigError> {
        config::parse(provider_config).map(|_| Vec::new())
    }

    fn needs_virtualization(&self) -> bool {
        true
    }

    fn display_name(&self) -> &'static str {
        "Kata Containers"
    }

    fn origin(&self) -> &'static str {
        ORIGIN
    }

    fn node_ready_label(&self) -> &'static str {
        NODE_READY_LABEL
    }

    fn image_name(&self) -> &'static str {
        IMAGE_NAME
    }

    /// Each offered hypervisor's ready label: a node where one is not verified cannot run that
    /// RuntimeClass's pods, which `EveryNodeReady` names with the agent's reason.
    fn component_ready_labels(&self, cr: &ContainerRuntime) -> Vec<(String, String)> {
        config::parse(cr.spec.provider_config.as_ref())
            .map(|c| {
                c.hypervisors
                    .iter()
                    .map(|h| (handler_name(*h), hypervisor_ready_label(*h)))
                    .collect()
            })
            .unwrap_or_default()
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
        let plan = node_plan(&config, image);
        let installation = installation::installation_objects(
            &AGENT,
            &PoolInput {
                pool,
                selector: &cr.spec.worker_pool.selector,
                binary_path: &cr.spec.binary_path,
                plan: &plan,
                image,
            },
        )?;
        Ok(Desired {
            shared: shared(shoot, Some((pool, &config)))?,
            pool: ManagedResourceContent {
                name: installation_managed_resource(pool),
                data: installation.into_data(),
            },
            warnings: Vec::new(),
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
        // Every hypervisor's handler and label goes, whatever the (maybe invalid) config was.
        let plan = node_plan(&KataConfig::everything(), image);
        let objects = installation::cleanup_objects(
            &AGENT,
            &PoolInput {
                pool,
                selector: &cr.spec.worker_pool.selector,
                binary_path: &cr.spec.binary_path,
                plan: &plan,
                image,
            },
        )?;
        Ok(Cleanup {
            shared: shared(shoot, None)?,
            pool: ManagedResourceContent {
                name: installation_managed_resource(pool),
                data: objects.into_data(),
            },
            pending: format!(
                "Kata is not yet removed from every node of pool {pool} (DaemonSet {}/{}); nodes with running Kata pods keep it until they end",
                installation::SHOOT_NAMESPACE,
                AGENT.cleanup_name(pool)
            ),
        })
    }
}

/// Per offered hypervisor: the RuntimeClass's overhead and tolerations.
pub type Offers = BTreeMap<Hypervisor, (config::Overhead, Vec<Toleration>)>;

/// What the shoot's pools offer: per hypervisor, the largest overhead any pool configures and
/// the pools' taints. `current` is the reconciled pool's validated config, which wins over its
/// entry in the Cluster (gardenlet updates the Cluster first, but a ContainerRuntime's own
/// providerConfig is what this reconcile validated). Pools whose providerConfig is invalid are
/// left out: their own ContainerRuntime reports the error.
pub fn offers(shoot: &Shoot, current: Option<(&str, &KataConfig)>) -> Offers {
    let mut offers: BTreeMap<Hypervisor, (config::Overhead, Vec<&Taint>)> = BTreeMap::new();
    let mut pools: Vec<(&str, Option<KataConfig>, &[Taint])> = shoot
        .spec
        .provider
        .workers
        .iter()
        .filter(|w| w.wants_runtime(RUNTIME_TYPE))
        .map(|w| {
            let raw = w
                .cri
                .as_ref()
                .and_then(|c| {
                    c.container_runtimes
                        .iter()
                        .find(|r| r.type_ == RUNTIME_TYPE)
                })
                .and_then(|r| r.provider_config.as_ref());
            (
                w.name.as_str(),
                config::parse(raw).ok(),
                w.taints.as_slice(),
            )
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
            entry.0 = larger(&entry.0, overhead);
            entry.1.extend(taints);
        }
    }
    offers
        .into_iter()
        .map(|(h, (overhead, taints))| (h, (overhead, crate::scheduling::tolerate(taints))))
        .collect()
}

/// The larger of two overheads, per resource (compared as quantities).
fn larger(a: &config::Overhead, b: &config::Overhead) -> config::Overhead {
    let pick = |x: &String, y: &String| {
        if quantity_value(y) > quantity_value(x) {
            y.clone()
        } else {
            x.clone()
        }
    };
    config::Overhead {
        memory: pick(&a.memory, &b.memory),
        cpu: pick(&a.cpu, &b.cpu),
    }
}

/// A validated quantity (`320Mi`, `250m`, `1`) in milli-units of bytes or cores.
fn quantity_value(q: &str) -> u128 {
    let digits: String = q.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n: u128 = digits.parse().unwrap_or(0);
    match &q[digits.len()..] {
        "m" => n,
        "Ki" => (n * 1000) << 10,
        "Mi" => (n * 1000) << 20,
        "Gi" => (n * 1000) << 30,
        "Ti" => (n * 1000) << 40,
        _ => n * 1000,
    }
}

fn shared(
    shoot: &Shoot,
    current: Option<(&str, &KataConfig)>,
) -> Result<ManagedResourceContent, RenderError> {
    Ok(ManagedResourceContent {
        name: MANAGED_RESOURCE.into(),
        data: shared_objects(&offers(shoot, current))?.into_data(),
    })
}

/// Objects shared by all Kata pools of a shoot: a RuntimeClass per offered hypervisor, the
/// installer's ServiceAccount with its permission to label nodes (RBAC), narrowed to its own
/// node's Kata labels (a ValidatingAdmissionPolicy).
pub fn shared_objects(offers: &Offers) -> Result<ObjectSet, RenderError> {
    let mut set = ObjectSet::default();
    for (h, (overhead, tolerations)) in offers {
        let runtime_class = RuntimeClass {
            metadata: ObjectMeta {
                name: Some(handler_name(*h)),
                ..ObjectMeta::default()
            },
            handler: handler_name(*h),
            overhead: Some(Overhead {
                pod_fixed: Some(
                    [
                        ("cpu".to_string(), Quantity(overhead.cpu.clone())),
                        ("memory".to_string(), Quantity(overhead.memory.clone())),
                    ]
                    .into(),
                ),
            }),
            scheduling: Some(Scheduling {
                // Only nodes where this hypervisor passed the agent's host check.
                node_selector: Some(
                    [
                        (NODE_LABEL.to_string(), "true".to_string()),
                        (hypervisor_ready_label(*h), "true".to_string()),
                    ]
                    .into(),
                ),
                tolerations: Some(tolerations.clone()).filter(|t| !t.is_empty()),
            }),
        };
        set.add(&runtime_class)?;
    }
    let labels: Vec<String> = std::iter::once(NODE_READY_LABEL.to_string())
        .chain(Hypervisor::ALL.map(hypervisor_ready_label))
        .collect();
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    AGENT.add_shared_objects(&mut set, &labels)?;
    Ok(set)
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
        assert_eq!(fc.memory, "130Mi");
        assert!(
            fc_tolerations.is_empty(),
            "pool a (tainted) does not offer fc"
        );
        let set = shared_objects(&offers).unwrap();
        let keys: Vec<_> = set.data().keys().cloned().collect();
        assert!(
            keys.contains(&"runtimeclass____kata-qemu.yaml".to_string()),
            "{keys:?}"
        );
        assert!(!keys.iter().any(|k| k.contains("kata-clh")), "{keys:?}");
    }

    #[test]
    fn quantities_compare_by_value() {
        assert!(quantity_value("1Gi") > quantity_value("900Mi"));
        assert!(quantity_value("1") > quantity_value("999m"));
    }
}
