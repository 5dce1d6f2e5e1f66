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
    fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
    }

    /// Applied and healthy for the current generation, as Gardener checks it.
    pub fn is_healthy(&self) -> bool {
        let Some(status) = &self.status else {
            return false;
        };
        if status.observed_generation != self.metadata.generation {
            return false;
        }
        let is_true = |t: &str| self.condition(t).is_some_and(|c| c.status == "True");
        is_true("ResourcesApplied") && is_true("ResourcesHealthy")
    }

    /// Healthy and no longer progressing: for a DaemonSet, every scheduled pod is updated and
    /// available (gardener-resource-manager's `ResourcesProgressing` condition; Healthy alone
    /// tolerates `maxUnavailable` unready pods).
    pub fn is_rolled_out(&self) -> bool {
        self.is_healthy()
            && self
                .condition("ResourcesProgressing")
                .is_none_or(|c| c.status != "True")
    }

    /// The conditions in one line (`type=status: message`), for error messages.
    pub fn conditions_summary(&self) -> String {
        let Some(status) = &self.status else {
            return "no status yet".into();
        };
        if status.conditions.is_empty() {
            return "no conditions yet".into();
        }
        let mut parts: Vec<String> = status
            .conditions
            .iter()
            .map(|c| match c.message.as_str() {
                "" => format!("{}={}", c.type_, c.status),
                message => format!("{}={}: {message}", c.type_, c.status),
            })
            .collect();
        parts.sort();
        let mut summary = parts.join("; ");
        if status.observed_generation != self.metadata.generation {
            summary.push_str(&format!(
                " (observed generation {:?} of {:?})",
                status.observed_generation, self.metadata.generation
            ));
        }
        summary
    }
}
