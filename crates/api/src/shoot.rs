//! Lenient views of the `core.gardener.cloud/v1beta1` objects embedded in a Cluster.
//!
//! Only the fields this extension reads are declared; everything else is ignored, and
//! every declared field may be missing. Gardener adds fields often; none of that may break
//! decoding here.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// Annotation that lets Gardener delete a shoot without waiting for extensions' cleanup.
pub const FORCE_DELETION_ANNOTATION: &str = "confirmation.gardener.cloud/force-deletion";

/// The parts of a Shoot this extension reads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Shoot {
    pub metadata: ObjectMeta,
    pub spec: ShootSpec,
    pub status: ShootStatus,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ShootSpec {
    pub hibernation: Option<Hibernation>,
    pub kubernetes: KubernetesSpec,
    pub provider: Provider,
    /// The CloudProfile by name (older shoots; `cloudProfile` replaces it).
    pub cloud_profile_name: Option<String>,
    /// The CloudProfile or NamespacedCloudProfile the shoot uses.
    pub cloud_profile: Option<CloudProfileReference>,
}

/// `spec.cloudProfile` of a Shoot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CloudProfileReference {
    /// `CloudProfile` (the default) or `NamespacedCloudProfile`.
    pub kind: String,
    pub name: String,
}

/// Kind of a cluster-scoped CloudProfile.
pub const CLOUD_PROFILE_KIND: &str = "CloudProfile";
/// Kind of a CloudProfile in the shoot's project namespace.
pub const NAMESPACED_CLOUD_PROFILE_KIND: &str = "NamespacedCloudProfile";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Hibernation {
    pub enabled: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct KubernetesSpec {
    pub version: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Provider {
    #[serde(rename = "type")]
    pub type_: String,
    pub workers: Vec<Worker>,
}

/// A worker pool of the shoot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Worker {
    pub name: String,
    pub cri: Option<Cri>,
    pub machine: Machine,
    /// Taints gardenlet puts on every node of the pool (`spec.provider.workers[].taints`).
    pub taints: Vec<Taint>,
}

/// A node taint as a worker pool declares it (`core/v1` Taint without `timeAdded`).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Taint {
    pub key: String,
    pub value: Option<String>,
    pub effect: String,
}

impl Worker {
    /// Whether the pool asks for the container runtime `type_`.
    pub fn wants_runtime(&self, type_: &str) -> bool {
        self.runtime(type_).is_some()
    }

    /// The pool's entry for the container runtime `type_` (with its providerConfig), if it
    /// asks for it.
    pub fn runtime(&self, type_: &str) -> Option<&CriContainerRuntime> {
        self.cri
            .as_ref()?
            .container_runtimes
            .iter()
            .find(|r| r.type_ == type_)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Cri {
    pub name: String,
    pub container_runtimes: Vec<CriContainerRuntime>,
}

/// A runtime a worker pool asks for, with its raw providerConfig.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CriContainerRuntime {
    #[serde(rename = "type")]
    pub type_: String,
    pub provider_config: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Machine {
    #[serde(rename = "type")]
    pub type_: String,
    pub image: Option<MachineImage>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MachineImage {
    pub name: String,
    pub version: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ShootStatus {
    pub hibernated: bool,
    pub last_operation: Option<ShootLastOperation>,
}

/// The shoot's last operation; kept as strings so that any Gardener version decodes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ShootLastOperation {
    #[serde(rename = "type")]
    pub type_: String,
    pub state: String,
}

impl Shoot {
    /// Hibernated means: asked to hibernate and already hibernated.
    pub fn is_hibernated(&self) -> bool {
        self.spec
            .hibernation
            .as_ref()
            .and_then(|h| h.enabled)
            .unwrap_or(false)
            && self.status.hibernated
    }

    /// The shoot's last operation failed; extensions then stay quiet.
    pub fn has_failed(&self) -> bool {
        self.status
            .last_operation
            .as_ref()
            .is_some_and(|op| op.state == "Failed")
    }

    /// The shoot is being deleted (its nodes go with it).
    pub fn is_deleting(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    /// The worker pool named `name`, if the shoot still has it.
    pub fn worker(&self, name: &str) -> Option<&Worker> {
        self.spec.provider.workers.iter().find(|w| w.name == name)
    }

    /// The CloudProfile the shoot uses, as (kind, name): `spec.cloudProfile`, else
    /// `spec.cloudProfileName` as a CloudProfile.
    pub fn cloud_profile_reference(&self) -> Option<CloudProfileReference> {
        match (&self.spec.cloud_profile, &self.spec.cloud_profile_name) {
            (Some(r), _) if !r.name.is_empty() => Some(CloudProfileReference {
                kind: if r.kind.is_empty() {
                    CLOUD_PROFILE_KIND.into()
                } else {
                    r.kind.clone()
                },
                name: r.name.clone(),
            }),
            (_, Some(name)) if !name.is_empty() => Some(CloudProfileReference {
                kind: CLOUD_PROFILE_KIND.into(),
                name: name.clone(),
            }),
            _ => None,
        }
    }

    /// The owner confirmed force deletion.
    pub fn force_deletion(&self) -> bool {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(FORCE_DELETION_ANNOTATION))
            .is_some_and(|v| v == "true")
    }

    /// Only what the seed controller decides on: name, deletion, force deletion, hibernation,
    /// the last operation, and each pool's name, runtimes with their providerConfigs (shoot-wide
    /// objects such as Kata's RuntimeClasses follow every pool's configuration) and taints (the
    /// RuntimeClass tolerates them) (no worker providerConfig, machine, other annotations or
    /// managed fields). A controller that caches every Cluster keeps this.
    pub fn projection(&self) -> Shoot {
        let annotations = self
            .force_deletion()
            .then(|| [(FORCE_DELETION_ANNOTATION.to_string(), "true".to_string())].into());
        Shoot {
            metadata: ObjectMeta {
                name: self.metadata.name.clone(),
                deletion_timestamp: self.metadata.deletion_timestamp.clone(),
                annotations,
                ..ObjectMeta::default()
            },
            spec: ShootSpec {
                hibernation: self.spec.hibernation.clone(),
                kubernetes: KubernetesSpec::default(),
                provider: Provider {
                    type_: String::new(),
                    workers: self
                        .spec
                        .provider
                        .workers
                        .iter()
                        .map(|w| Worker {
                            name: w.name.clone(),
                            cri: w.cri.as_ref().map(|cri| Cri {
                                name: cri.name.clone(),
                                container_runtimes: cri
                                    .container_runtimes
                                    .iter()
                                    .map(|r| CriContainerRuntime {
                                        type_: r.type_.clone(),
                                        provider_config: r.provider_config.clone(),
                                    })
                                    .collect(),
                            }),
                            machine: Machine::default(),
                            taints: w.taints.clone(),
                        })
                        .collect(),
                },
                cloud_profile_name: None,
                cloud_profile: None,
            },
            status: self.status.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_projection_keeps_every_decision() {
        let shoot: Shoot = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s", "deletionTimestamp": "2026-11-21T10:00:00Z",
                "annotations": {FORCE_DELETION_ANNOTATION: "true", "other": "x"},
                "managedFields": [{"manager": "gardenlet"}]},
            "spec": {"hibernation": {"enabled": true}, "kubernetes": {"version": "1.34.2"},
                "provider": {"type": "aws", "workers": [
                    {"name": "a", "machine": {"type": "m5.large"}, "providerConfig": {"big": "x"},
                        "taints": [{"key": "sandbox", "value": "gvisor", "effect": "NoSchedule"}],
                        "cri": {"name": "containerd",
                        "containerRuntimes": [{"type": "gvisor", "providerConfig": {"flags": "kept"}}]}},
                    {"name": "b"}]}},
            "status": {"hibernated": true, "lastOperation": {"type": "Reconcile", "state": "Failed"}},
        }))
        .unwrap();
        let p = shoot.projection();
        assert_eq!(
            (
                p.is_deleting(),
                p.force_deletion(),
                p.is_hibernated(),
                p.has_failed()
            ),
            (true, true, true, true)
        );
        assert!(p.worker("a").unwrap().wants_runtime("gvisor"));
        assert!(p.worker("b").is_some_and(|w| !w.wants_runtime("gvisor")));
        assert_eq!(
            p.worker("a").unwrap().taints,
            shoot.worker("a").unwrap().taints
        );
        assert_eq!(
            p.worker("a").unwrap().taints[0].value.as_deref(),
            Some("gvisor")
        );
        let text = serde_json::to_string(&p).unwrap();
        assert!(
            text.contains("kept"),
            "runtime providerConfigs are kept: {text}"
        );
        for dropped in ["managedFields", "other", "m5.large", "big", "aws", "1.34.2"] {
            assert!(!text.contains(dropped), "{dropped} kept: {text}");
        }
        assert_eq!(p.projection(), p, "a projection projects to itself");
    }
}

/// The parts of a CloudProfile this extension reads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CloudProfile {
    pub metadata: ObjectMeta,
    pub spec: CloudProfileSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CloudProfileSpec {
    #[serde(rename = "type")]
    pub type_: String,
    pub machine_types: Vec<MachineType>,
    /// The capabilities machine types and images may have, each with its values (a machine
    /// type that does not name a capability has all of its values).
    pub machine_capabilities: Vec<CapabilityDefinition>,
    pub machine_images: Vec<CloudProfileMachineImage>,
}

/// A NamespacedCloudProfile: its status carries the merged spec shoots get.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NamespacedCloudProfile {
    pub metadata: ObjectMeta,
    pub status: NamespacedCloudProfileStatus,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NamespacedCloudProfileStatus {
    pub cloud_profile_spec: CloudProfileSpec,
}

/// A typed Gardener `core.gardener.cloud/v1beta1` resource whose struct holds only the fields
/// we read: a GET decodes the response body straight into it, skipping everything else
/// (regions, provider data, every image's other fields) while parsing, so a CloudProfile of
/// megabytes never exists in memory whole.
macro_rules! garden_resource {
    ($type:ty, $kind:expr, $plural:literal, $scope:ty) => {
        impl kube::Resource for $type {
            type DynamicType = ();
            type Scope = $scope;

            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                $kind.into()
            }

            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                "core.gardener.cloud".into()
            }

            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                "v1beta1".into()
            }

            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                $plural.into()
            }

            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

garden_resource!(
    CloudProfile,
    CLOUD_PROFILE_KIND,
    "cloudprofiles",
    kube::core::ClusterResourceScope
);
garden_resource!(
    NamespacedCloudProfile,
    NAMESPACED_CLOUD_PROFILE_KIND,
    "namespacedcloudprofiles",
    kube::core::NamespaceResourceScope
);

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CapabilityDefinition {
    pub name: String,
    pub values: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MachineType {
    pub name: String,
    pub architecture: Option<String>,
    /// Capability name to values; kept raw so that an odd entry never breaks decoding.
    pub capabilities: Option<serde_json::Value>,
}

impl MachineType {
    /// The values of capability `name` for this machine type, Gardener's way: its own entry,
    /// else every value of the CloudProfile's definition, else none.
    pub fn capability_values(
        &self,
        name: &str,
        definitions: &[CapabilityDefinition],
    ) -> Vec<String> {
        if let Some(own) = self.capabilities.as_ref().and_then(|c| c.get(name)) {
            return match own {
                serde_json::Value::Array(values) => values
                    .iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect(),
                serde_json::Value::String(value) => vec![value.clone()],
                _ => Vec::new(),
            };
        }
        definitions
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.values.clone())
            .unwrap_or_default()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CloudProfileMachineImage {
    pub name: String,
    pub versions: Vec<CloudProfileMachineImageVersion>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CloudProfileMachineImageVersion {
    pub version: String,
    /// The CRIs (and their container runtimes) this version supports.
    pub cri: Vec<Cri>,
}
