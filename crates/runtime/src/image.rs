//! The image vector: which image each component runs, overridable by operators the way
//! Gardener's `IMAGEVECTOR_OVERWRITE` works (entries with the same name replace ours).

use serde::{Deserialize, Serialize};

/// Name of the node-agent image in the image vector (the Go extension's name, so existing
/// overwrites keep working).
pub const NODE_AGENT_IMAGE: &str = "runtime-gvisor-installation";

/// The image vector shipped in the binary.
pub const DEFAULT_IMAGE_VECTOR: &str = include_str!("../images.yaml");

/// One image of the vector.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageSource {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_repository: Option<String>,
    pub repository: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The sha256 of the runtime binaries in the image, by architecture and binary name, as
    /// recorded when the image was built (`agent-image` writes them): the node agent installs
    /// only binaries that match (docs/security.md). Not part of Gardener's image vector
    /// format; Gardener passes the overwrite through untouched.
    #[serde(default, skip_serializing_if = "crate::node_plan::Pins::is_empty")]
    pub binaries: crate::node_plan::Pins,
}

impl ImageSource {
    /// Whether the reference names the image by its digest (content), not only by a movable
    /// tag: `tag: sha256:...` or `tag: v1.2.3@sha256:...`.
    pub fn pinned_by_digest(&self) -> bool {
        self.tag
            .as_deref()
            .is_some_and(|t| t.starts_with("sha256:") || t.contains("@sha256:"))
    }

    /// `repository:tag`, `repository@sha256:...` when the tag is a digest, or
    /// `repository:tag@sha256:...` for a tag pinned by digest.
    pub fn reference(&self) -> String {
        match &self.tag {
            Some(tag) if tag.starts_with("sha256:") => format!("{}@{tag}", self.repository),
            Some(tag) => format!("{}:{tag}", self.repository),
            None => self.repository.clone(),
        }
    }
}

/// A list of images by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageVector {
    pub images: Vec<ImageSource>,
}

/// The image vector could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImageVectorError {
    #[error("invalid image vector: {0}")]
    Invalid(String),
    #[error("image {0:?} is not in the image vector")]
    Missing(String),
}

impl ImageVector {
    /// Parses an image vector document (`images: [{name, repository, tag}]`).
    pub fn parse(yaml: &str) -> Result<Self, ImageVectorError> {
        serde_saphyr::from_str(yaml).map_err(|e| ImageVectorError::Invalid(e.to_string()))
    }

    /// Ours with the operator's overwrite applied: same name replaces, new names are added.
    pub fn overwritten_by(mut self, overwrite: ImageVector) -> Self {
        for image in overwrite.images {
            match self.images.iter_mut().find(|i| i.name == image.name) {
                Some(existing) => *existing = image,
                None => self.images.push(image),
            }
        }
        self
    }

    /// The image named `name`.
    pub fn find(&self, name: &str) -> Result<&ImageSource, ImageVectorError> {
        self.images
            .iter()
            .find(|i| i.name == name)
            .ok_or_else(|| ImageVectorError::Missing(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gvisor_image_tag_carries_the_pinned_gvisor() {
        let pinned = include_str!("../../../hack/versions.env")
            .lines()
            .find_map(|l| l.strip_prefix("GVISOR_VERSION="))
            .unwrap()
            .trim();
        let version = crate::gvisor::node::pin_version(pinned);
        let ours = ImageVector::parse(DEFAULT_IMAGE_VECTOR).unwrap();
        let image = ours.find(NODE_AGENT_IMAGE).unwrap().reference();
        assert_eq!(
            crate::gvisor::node::gvisor_version(&image),
            version,
            "{image}: run hack/bump-gvisor.sh"
        );
    }

    #[test]
    fn default_vector_has_the_node_agent_and_overwrite_replaces_it() {
        let ours = ImageVector::parse(DEFAULT_IMAGE_VECTOR).unwrap();
        assert!(ours.find(NODE_AGENT_IMAGE).unwrap().tag.is_some());
        let overwrite = ImageVector::parse(
            "images:\n- name: runtime-gvisor-installation\n  repository: registry.local/agent\n  tag: sha256:abc\n",
        )
        .unwrap();
        let merged = ours.overwritten_by(overwrite);
        assert_eq!(
            merged.find(NODE_AGENT_IMAGE).unwrap().reference(),
            "registry.local/agent@sha256:abc"
        );
        assert!(matches!(
            merged.find("nope"),
            Err(ImageVectorError::Missing(_))
        ));
    }

    #[test]
    fn a_release_entry_pins_the_tag_by_digest_and_records_the_binaries() {
        let entry = ImageVector::parse(
            "images:\n- name: runtime-gvisor-installation\n  repository: r.io/agent\n  tag: v1@sha256:abc\n  binaries:\n    amd64:\n      runsc: 00ff\n",
        )
        .unwrap();
        let source = entry.find(NODE_AGENT_IMAGE).unwrap();
        assert!(source.pinned_by_digest());
        assert_eq!(source.reference(), "r.io/agent:v1@sha256:abc");
        assert_eq!(source.binaries["amd64"]["runsc"], "00ff");
        assert_eq!(
            crate::node_plan::payload_version(&source.reference()),
            "v1",
            "the node's version folder still follows the tag"
        );
        let ours = ImageVector::parse(DEFAULT_IMAGE_VECTOR).unwrap();
        assert!(!ours.find(NODE_AGENT_IMAGE).unwrap().pinned_by_digest());
    }
}
