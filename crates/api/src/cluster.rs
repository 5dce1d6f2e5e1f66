//! `Cluster` (`extensions.gardener.cloud/v1alpha1`, cluster-scoped, named after the shoot
//! namespace): the Shoot, CloudProfile and Seed embedded raw by gardenlet.

use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// The embedded objects, kept raw: they are full `core.gardener.cloud/v1beta1` objects of
/// whatever Gardener version wrote them, and we decode only the parts we need.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "extensions.gardener.cloud",
    version = "v1alpha1",
    kind = "Cluster",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// The shoot's CloudProfile.
    pub cloud_profile: serde_json::Value,
    /// The seed the shoot's control plane runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<serde_json::Value>,
    /// The Shoot itself.
    pub shoot: serde_json::Value,
}
