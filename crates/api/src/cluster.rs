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

/// A Cluster read for its Shoot alone, as the controller keeps every Cluster of the seed.
///
/// gardenlet embeds the whole CloudProfile and Seed into every Cluster: hundreds of KiB of
/// machine types, image versions and provider data per shoot. Decoded into [`Cluster`], each
/// becomes a `serde_json::Value` tree several times the size of its JSON, for every Cluster of
/// a list page at once, before anything can be dropped. Here `spec.cloudProfile` and
/// `spec.seed` are not fields at all, so the parser skips them without allocating (serde
/// ignores unknown fields), and `spec.shoot` is decoded straight into its
/// [`Shoot::projection`]: what the contract decides on.
#[derive(Clone, Debug, Deserialize)]
pub struct ClusterShoot {
    pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    #[serde(default)]
    pub spec: ClusterShootSpec,
}

/// See [`ClusterShoot`].
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ClusterShootSpec {
    #[serde(default)]
    pub shoot: EmbeddedShoot,
}

/// The Shoot embedded in a Cluster: its projection, or why it cannot be decoded. A Shoot we
/// cannot decode does not fail the Cluster (nor, with it, a watch's whole list page): the
/// reconcile of that shoot's ContainerRuntimes reports it.
#[derive(Clone, Debug)]
pub enum EmbeddedShoot {
    Decoded(Box<crate::Shoot>),
    Undecodable(String),
}

impl Default for EmbeddedShoot {
    fn default() -> Self {
        EmbeddedShoot::Undecodable("spec.shoot is missing".into())
    }
}

impl<'de> Deserialize<'de> for EmbeddedShoot {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // The Shoot's own text first (borrowed from the input where it can be), then our
        // types from it: an error there is the Shoot's, not the Cluster's.
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        Ok(match serde_json::from_str::<crate::Shoot>(raw.get()) {
            Ok(shoot) => EmbeddedShoot::Decoded(Box::new(shoot.projection())),
            Err(e) => EmbeddedShoot::Undecodable(e.to_string()),
        })
    }
}

impl ClusterShoot {
    /// The embedded Shoot's projection, or why it cannot be decoded.
    pub fn shoot(&self) -> Result<crate::Shoot, String> {
        match &self.spec.shoot {
            EmbeddedShoot::Decoded(shoot) => Ok((**shoot).clone()),
            EmbeddedShoot::Undecodable(e) => Err(e.clone()),
        }
    }
}

/// The same API object as [`Cluster`] (group, version, kind, plural, scope), read leaner.
impl kube::Resource for ClusterShoot {
    type DynamicType = ();
    type Scope = kube::core::ClusterResourceScope;

    fn kind(dt: &()) -> std::borrow::Cow<'_, str> {
        Cluster::kind(dt)
    }

    fn group(dt: &()) -> std::borrow::Cow<'_, str> {
        Cluster::group(dt)
    }

    fn version(dt: &()) -> std::borrow::Cow<'_, str> {
        Cluster::version(dt)
    }

    fn plural(dt: &()) -> std::borrow::Cow<'_, str> {
        Cluster::plural(dt)
    }

    fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_lean_cluster_skips_the_cloud_profile_and_keeps_the_shoot_s_projection() {
        let text = json!({
            "apiVersion": "extensions.gardener.cloud/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": "shoot--p--s"},
            "spec": {
                "cloudProfile": {"spec": {"machineTypes": [{"name": "m", "cpu": "2"}]}},
                "seed": {"metadata": {"name": "seed"}},
                "shoot": {
                    "metadata": {"name": "s", "labels": {"big": "x"}},
                    "spec": {"kubernetes": {"version": "1.36.0"}, "hibernation": {"enabled": true}},
                    "status": {"hibernated": true},
                },
            },
        })
        .to_string();
        let lean: ClusterShoot = serde_json::from_str(&text).unwrap();
        let full: Cluster = serde_json::from_str(&text).unwrap();
        assert_eq!(
            serde_json::to_value(lean.shoot().unwrap()).unwrap(),
            serde_json::to_value(full.shoot().unwrap().projection()).unwrap()
        );
        assert!(lean.shoot().unwrap().is_hibernated());
    }

    #[test]
    fn an_undecodable_or_missing_shoot_fails_the_shoot_not_the_cluster() {
        let lean: ClusterShoot = serde_json::from_str(
            r#"{"metadata": {"name": "c"}, "spec": {"shoot": {"spec": {"kubernetes": 7}}}}"#,
        )
        .unwrap();
        assert!(
            lean.shoot().unwrap_err().contains("invalid type"),
            "{lean:?}"
        );
        let lean: ClusterShoot =
            serde_json::from_str(r#"{"metadata": {"name": "c"}, "spec": {}}"#).unwrap();
        assert_eq!(lean.shoot().unwrap_err(), "spec.shoot is missing");
    }
}
