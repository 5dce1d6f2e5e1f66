//! Writing ManagedResources for the shoot the way Gardener's `managedresources.CreateForShoot`
//! does, and deleting them. Writes happen only when something differs, so a resync of an
//! unchanged object costs reads only. Nothing here waits: callers check again later (the
//! reconcile requeues), so a slow gardener-resource-manager never holds a worker.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{LocalObjectReference, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use sandbox_api::{ManagedResource, ManagedResourceSpec};
use sandbox_runtime::manifests::{secret_checksum, sha256_hex};
use serde_json::json;

use crate::{Error, Result, kube_err};

/// Label that lets gardener-resource-manager garbage-collect unused secrets.
pub const GARBAGE_COLLECTABLE_LABEL: &str =
    "resources.gardener.cloud/garbage-collectable-reference";
/// Prefix of the reference annotations on a ManagedResource.
pub const REFERENCE_ANNOTATION_PREFIX: &str = "reference.resources.gardener.cloud/";
/// Label injected into every object in the shoot: Gardener's shoot cleanup leaves them alone.
pub const NO_CLEANUP_LABEL: &str = "shoot.gardener.cloud/no-cleanup";

/// The Secret name for a ManagedResource's data: `managedresource-<mr>-<checksum[:8]>`.
pub fn secret_name(managed_resource: &str, data: &BTreeMap<String, String>) -> String {
    let checksum = secret_checksum(data.iter().map(|(k, v)| (k, v.as_bytes())));
    format!("managedresource-{managed_resource}-{}", &checksum[..8])
}

/// The reference annotation key for a secret (Go: `references.AnnotationKey`).
pub fn reference_annotation(secret: &str) -> String {
    format!(
        "{REFERENCE_ANNOTATION_PREFIX}secret-{}",
        &sha256_hex(secret.as_bytes())[..8]
    )
}

/// Ensures ManagedResource `name` in `namespace` holds exactly `data`. `cached` is what the
/// caller's cache holds (None when it has nothing): a ManagedResource that already references
/// the Secret for `data` proves that Secret exists (its name carries the content checksum, it
/// is immutable, and gardener-resource-manager never collects a referenced Secret), and one
/// that is up to date needs no request at all. A write that conflicts (created or changed
/// meanwhile, e.g. by another pool's reconcile of the shared one) re-reads live and decides
/// again.
pub async fn ensure(
    client: &Client,
    namespace: &str,
    name: &str,
    origin: &str,
    data: BTreeMap<String, String>,
    cached: Option<ManagedResource>,
) -> Result<()> {
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let secret_name = secret_name(name, &data);
    let referenced = cached
        .as_ref()
        .is_some_and(|mr| mr.spec.secret_refs.iter().any(|r| r.name == secret_name));
    if !referenced {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(secret_name.clone()),
                namespace: Some(namespace.into()),
                labels: Some([(GARBAGE_COLLECTABLE_LABEL.to_string(), "true".to_string())].into()),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".into()),
            immutable: Some(true),
            data: Some(
                data.into_iter()
                    .map(|(k, v)| (k, ByteString(v.into_bytes())))
                    .collect(),
            ),
            ..Secret::default()
        };
        // Existing means equal (same checksum, immutable): "already exists" is success.
        let result = secrets.create(&PostParams::default(), &secret).await;
        ok_if(&[409], result.map(|_| ()))
            .map_err(kube_err(format!("creating secret {secret_name}")))?;
    }

    let api = Api::<ManagedResource>::namespaced(client.clone(), namespace);
    let mut existing = cached;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match ensure_managed_resource(&api, name, origin, &secret_name, existing.as_ref()).await {
            Err(Error::Kube {
                source: kube::Error::Api(e),
                ..
            }) if e.code == 409 && attempt < 5 => {
                existing = api
                    .get_opt(name)
                    .await
                    .map_err(kube_err(format!("reading managedresource {name}")))?;
            }
            other => return other,
        }
    }
}

/// Creates the ManagedResource, or updates `existing` if it differs.
async fn ensure_managed_resource(
    api: &Api<ManagedResource>,
    name: &str,
    origin: &str,
    secret_name: &str,
    existing: Option<&ManagedResource>,
) -> Result<()> {
    let spec = ManagedResourceSpec {
        secret_refs: vec![LocalObjectReference {
            name: secret_name.to_string(),
        }],
        inject_labels: Some([(NO_CLEANUP_LABEL.to_string(), "true".to_string())].into()),
        keep_objects: Some(false),
        ..ManagedResourceSpec::default()
    };
    let reference = reference_annotation(secret_name);
    if existing.is_some_and(|mr| mr.metadata.deletion_timestamp.is_some()) {
        // An update would be lost with the object: wait until it is gone, then create it.
        return Err(Error::ManagedResourceDeleting {
            name: name.to_string(),
        });
    }
    let Some(existing) = existing else {
        let mut mr = ManagedResource::new(name, spec);
        mr.metadata.labels = Some([("origin".to_string(), origin.to_string())].into());
        mr.metadata.annotations = Some([(reference, secret_name.to_string())].into());
        return api
            .create(&PostParams::default(), &mr)
            .await
            .map(|_| ())
            .map_err(kube_err(format!("creating managedresource {name}")));
    };

    let labels = existing.metadata.labels.clone().unwrap_or_default();
    let annotations = existing.metadata.annotations.clone().unwrap_or_default();
    let stale: Vec<&String> = annotations
        .keys()
        .filter(|k| k.starts_with(REFERENCE_ANNOTATION_PREFIX) && **k != reference)
        .collect();
    let up_to_date = existing.spec == spec
        && labels.get("origin").map(String::as_str) == Some(origin)
        && annotations.get(&reference).map(String::as_str) == Some(secret_name)
        && stale.is_empty();
    if up_to_date {
        return Ok(());
    }
    let mut annotation_patch = serde_json::Map::new();
    for key in stale {
        annotation_patch.insert(key.clone(), serde_json::Value::Null);
    }
    annotation_patch.insert(reference, json!(secret_name));
    let patch = json!({
        "metadata": {"labels": {"origin": origin}, "annotations": annotation_patch,
                     "resourceVersion": existing.metadata.resource_version},
        "spec": spec,
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(|_| ())
        .map_err(kube_err(format!("updating managedresource {name}")))
}

/// Treats "not found" as done (deleting or patching what is already gone) and "already
/// exists" as done (creating what a concurrent writer created): both are the wanted outcome.
pub(crate) fn ok_if(codes: &[u16], result: Result<(), kube::Error>) -> Result<(), kube::Error> {
    match result {
        Err(kube::Error::Api(e)) if codes.contains(&e.code) => Ok(()),
        other => other,
    }
}

/// Sets `keepObjects: true`, so deleting the ManagedResource leaves its objects in the shoot.
pub async fn keep_objects(client: &Client, namespace: &str, name: &str) -> Result<()> {
    let api = Api::<ManagedResource>::namespaced(client.clone(), namespace);
    let patch = Patch::Merge(json!({"spec": {"keepObjects": true}}));
    let result = api.patch(name, &PatchParams::default(), &patch).await;
    ok_if(&[404], result.map(|_| ())).map_err(kube_err(format!(
        "setting keepObjects on managedresource {name}"
    )))
}

/// ManagedResource `name`, if it exists.
pub async fn get(client: &Client, namespace: &str, name: &str) -> Result<Option<ManagedResource>> {
    Api::<ManagedResource>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(kube_err(format!("reading managedresource {name}")))
}

/// Whether ManagedResource `name` exists and is not being deleted.
pub async fn is_live(client: &Client, namespace: &str, name: &str) -> Result<bool> {
    let existing = get(client, namespace, name).await?;
    Ok(existing.is_some_and(|mr| mr.metadata.deletion_timestamp.is_none()))
}

/// None once gardener-resource-manager reports ManagedResource `name` applied, healthy and no
/// longer progressing for its current generation; otherwise what it reports (its conditions,
/// or that it does not exist).
pub async fn rollout_pending(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<String>> {
    Ok(match get(client, namespace, name).await? {
        Some(mr) if mr.is_rolled_out() => None,
        Some(mr) => Some(mr.conditions_summary()),
        None => Some("it does not exist".to_string()),
    })
}

/// Deletes ManagedResource `name` and the secrets it references. Returns whether it is gone;
/// while it is not, gardener-resource-manager is still deleting its objects from the shoot.
pub async fn delete(client: &Client, namespace: &str, name: &str) -> Result<bool> {
    let api = Api::<ManagedResource>::namespaced(client.clone(), namespace);
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let Some(existing) = get(client, namespace, name).await? else {
        return Ok(true);
    };
    // The Secrets go first: once the ManagedResource is gone nothing names them any more, and
    // a controller stopped between the two would leave them behind (we never list Secrets).
    // gardener-resource-manager deletes a ManagedResource's objects from its status, not from
    // the Secrets.
    for secret in &existing.spec.secret_refs {
        let result = secrets.delete(&secret.name, &DeleteParams::default()).await;
        ok_if(&[404], result.map(|_| ()))
            .map_err(kube_err(format!("deleting secret {}", secret.name)))?;
    }
    // Left: the object remains (finalizers); Right: it is gone.
    let gone = match existing.metadata.deletion_timestamp {
        Some(_) => false,
        None => match api.delete(name, &DeleteParams::default()).await {
            Ok(response) => response.is_right(),
            Err(kube::Error::Api(e)) if e.code == 404 => true,
            Err(e) => return Err(kube_err(format!("deleting managedresource {name}"))(e)),
        },
    };
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_gardener() {
        let data: BTreeMap<String, String> = [("a.yaml".to_string(), "x".to_string())].into();
        let name = secret_name("extension-runtime-gvisor", &data);
        let checksum = sha256_hex(sha256_hex(b"x").as_bytes());
        assert_eq!(
            name,
            format!(
                "managedresource-extension-runtime-gvisor-{}",
                &checksum[..8]
            )
        );
        assert_eq!(
            reference_annotation("s"),
            format!(
                "reference.resources.gardener.cloud/secret-{}",
                &sha256_hex(b"s")[..8]
            )
        );
    }
}
