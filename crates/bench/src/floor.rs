//! The API floor: a bare client making exactly the writes the contract requires for the
//! same number of ContainerRuntimes, on the same control plane, with no controller logic in
//! between (no watch, no cache, no rendering, no decisions). Our time divided by this one is
//! what the controller adds to what the API server and etcd cost anyway.
//!
//! Per ContainerRuntime, in the order our controller writes: gardenlet's create, the
//! Processing status, the patch that adds the finalizer and consumes the operation
//! annotation, the pool's Secret and ManagedResource (and, for a shoot's first pool, the
//! shared ones), the Succeeded status. The Secrets carry the bytes of the controller's own
//! (copied from the run before), the patches are the contract's own functions.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use sandbox_api::{ContainerRuntime, LastOperationType, ManagedResource, OPERATION_ANNOTATION};
use sandbox_controller::contract;
use serde_json::json;

use crate::Error;

/// What the controller wrote in the run before, reused byte for byte: the data of the
/// largest Secret behind one of its ManagedResources in `namespace`.
async fn template(client: &Client, namespace: &str) -> Result<Vec<(String, ByteString)>, Error> {
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let mut best: Vec<(String, ByteString)> = Vec::new();
    let mut best_size = 0;
    for mr in Api::<ManagedResource>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?
    {
        for reference in &mr.spec.secret_refs {
            let Some(secret) = secrets.get_opt(&reference.name).await? else {
                continue;
            };
            let data: Vec<(String, ByteString)> =
                secret.data.unwrap_or_default().into_iter().collect();
            let size: usize = data.iter().map(|(_, v)| v.0.len()).sum();
            if size > best_size {
                (best, best_size) = (data, size);
            }
        }
    }
    if best.is_empty() {
        return Err(format!("no ManagedResource Secret in {namespace} to copy").into());
    }
    Ok(best)
}

/// A Secret and a ManagedResource pointing to it, both named `name`.
async fn managed_resource(
    client: &Client,
    namespace: &str,
    name: &str,
    data: &[(String, ByteString)],
) -> Result<(), kube::Error> {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        data: Some(data.iter().cloned().collect()),
        immutable: Some(true),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await?;
    let mr: ManagedResource = serde_json::from_value(json!({
        "apiVersion": "resources.gardener.cloud/v1alpha1", "kind": "ManagedResource",
        "metadata": {"name": name, "namespace": namespace, "labels": {"origin": "floor"}},
        "spec": {"secretRefs": [{"name": name}], "keepObjects": false},
    }))
    .map_err(kube::Error::SerdeError)?;
    Api::<ManagedResource>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &mr)
        .await?;
    Ok(())
}

/// One ContainerRuntime's writes, from gardenlet's create to Succeeded.
async fn one(
    client: Client,
    namespace: String,
    pool: usize,
    data: &[(String, ByteString)],
) -> Result<(), kube::Error> {
    let api = Api::<ContainerRuntime>::namespaced(client.clone(), &namespace);
    let cr = crate::runtime(&namespace, &format!("floor{pool}"));
    let cr = api.create(&PostParams::default(), &cr).await?;
    let name = cr.name_any();
    let status = |patch| {
        let api = api.clone();
        let name = name.clone();
        async move {
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
        }
    };
    status(contract::processing_patch(
        LastOperationType::Create,
        Timestamp::now(),
    ))
    .await?;
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {
            "finalizers": [contract::FINALIZER],
            "annotations": {OPERATION_ANNOTATION: null},
        }})),
    )
    .await?;
    if pool == 0 {
        managed_resource(&client, &namespace, "floor-shared", data).await?;
    }
    managed_resource(&client, &namespace, &format!("floor-pool{pool}"), data).await?;
    status(contract::succeeded_patch(
        LastOperationType::Create,
        cr.metadata.generation,
        Timestamp::now(),
    ))
    .await?;
    Ok(())
}

/// The floor for `pools` ContainerRuntimes in each of `namespaces`, `parallelism` in flight
/// (the benchmark's creates in flight): the time until the last one is Succeeded.
pub async fn floor(
    client: Client,
    namespaces: &[String],
    pools: usize,
    parallelism: usize,
) -> Result<Duration, Error> {
    let data = template(&client, &namespaces[0]).await?;
    let started = Instant::now();
    futures::stream::iter(
        namespaces
            .iter()
            .flat_map(|ns| (0..pools).map(move |p| (ns.clone(), p))),
    )
    .map(|(ns, pool)| one(client.clone(), ns, pool, &data))
    .buffer_unordered(parallelism)
    .try_collect::<Vec<_>>()
    .await?;
    Ok(started.elapsed())
}
