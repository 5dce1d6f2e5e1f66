//! A set of Kubernetes objects rendered for a ManagedResource secret.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Objects keyed like Gardener's managed-resource registry does
/// (`<kind>__<namespace>__<name>.yaml`), so keys are stable and sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectSet {
    objects: BTreeMap<String, String>,
}

/// An object that cannot be rendered (a bug, not bad input: our types always serialise).
#[derive(Debug, thiserror::Error)]
#[error("cannot render {key}: {message}")]
pub struct RenderError {
    pub key: String,
    pub message: String,
}

impl ObjectSet {
    /// Adds an object under its registry key.
    pub fn add<T: Serialize + kube_meta::Named>(&mut self, object: &T) -> Result<(), RenderError> {
        let key = format!(
            "{}__{}__{}.yaml",
            object.kind().to_lowercase(),
            object.namespace().unwrap_or_default(),
            object.name().replace(':', "_")
        );
        let yaml = serde_saphyr::to_string(object).map_err(|e| RenderError {
            key: key.clone(),
            message: e.to_string(),
        })?;
        self.objects.insert(key, yaml);
        Ok(())
    }

    /// The rendered objects by key.
    pub fn data(&self) -> &BTreeMap<String, String> {
        &self.objects
    }

    /// Turns the set into Secret data.
    pub fn into_data(self) -> BTreeMap<String, String> {
        self.objects
    }
}

/// Gardener's secret checksum: sha256 hex over the concatenated sha256 hex of each value,
/// keys sorted (Go: `utils.ComputeSecretChecksum`).
pub fn secret_checksum<'a>(data: impl IntoIterator<Item = (&'a String, &'a [u8])>) -> String {
    let mut sorted: Vec<(&String, &[u8])> = data.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut joined = String::new();
    for (_, value) in sorted {
        joined.push_str(&sha256_hex(value));
    }
    sha256_hex(joined.as_bytes())
}

/// Lower-case hex sha256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Name, namespace and kind of a typed Kubernetes object.
pub mod kube_meta {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::{Metadata, Resource};

    /// Gives the registry key's parts.
    pub trait Named {
        fn kind(&self) -> &str;
        fn name(&self) -> String;
        fn namespace(&self) -> Option<String>;
    }

    impl<T: Resource + Metadata<Ty = ObjectMeta>> Named for T {
        fn kind(&self) -> &str {
            T::KIND
        }
        fn name(&self) -> String {
            self.metadata().name.clone().unwrap_or_default()
        }
        fn namespace(&self) -> Option<String> {
            self.metadata().namespace.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_gardeners_algorithm() {
        // sha256("a") and sha256("b") concatenated, hashed again; independent of input order.
        let a = ("k1".to_string(), b"a".to_vec());
        let b = ("k2".to_string(), b"b".to_vec());
        let forward = secret_checksum([(&a.0, a.1.as_slice()), (&b.0, b.1.as_slice())]);
        let backward = secret_checksum([(&b.0, b.1.as_slice()), (&a.0, a.1.as_slice())]);
        assert_eq!(forward, backward);
        let expected = sha256_hex(format!("{}{}", sha256_hex(b"a"), sha256_hex(b"b")).as_bytes());
        assert_eq!(forward, expected);
        assert_eq!(
            sha256_hex(b"a"),
            "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
        );
    }
}
