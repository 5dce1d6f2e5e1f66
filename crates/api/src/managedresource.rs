//! `ManagedResource` (`resources.gardener.cloud/v1alpha1`): objects, held in Secrets, that the
//! shoot's gardener-resource-manager applies into the shoot.

use k8s_openapi::api::core::v1::LocalObjectReference;
use kube::CustomResource;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::extension::Condition;

/// Desired state of a ManagedResource.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "resources.gardener.cloud",
    version = "v1alpha1",
    kind = "ManagedResource",
    namespaced,
    status = "ManagedResourceStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ManagedResourceSpec {
    /// Resource class of the resource manager; none means the shoot's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// Secrets holding the manifests.
    #[serde(default)]
    pub secret_refs: Vec<LocalObjectReference>,
    /// Labels injected into every applied object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inject_labels: Option<BTreeMap<String, String>>,
    /// Keep the applied objects when the ManagedResource is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_objects: Option<bool>,
    /// Overwrite labels changed by others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_overwrite_labels: Option<bool>,
    /// Overwrite annotations changed by others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_overwrite_annotations: Option<bool>,
    /// Delete PVCs of deleted StatefulSets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_persistent_volume_claims: Option<bool>,
}

/// Observed state of a ManagedResource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ManagedResourceStatus {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets_data_checksum: Option<String>,
}

impl ManagedResource {
    /// Applied and healthy for the current generation, as Gardener checks it.
    pub fn is_healthy(&self) -> bool {
        let Some(status) = &self.status else {
            return false;
        };
        if status.observed_generation != self.metadata.generation {
            return false;
        }
        let is_true = |t: &str| {
            status
                .conditions
                .iter()
                .any(|c| c.type_ == t && c.status == "True")
        };
        is_true("ResourcesApplied") && is_true("ResourcesHealthy")
    }
}
