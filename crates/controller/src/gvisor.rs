//! The gVisor actuator: turns a ContainerRuntime of type `gvisor` into ManagedResources for
//! the shoot (the shared RuntimeClass + ServiceAccount, and the pool's node installer).

use std::time::Duration;

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use sandbox_api::ContainerRuntime;
use sandbox_runtime::gvisor::{self, InstallationInput};

use crate::{Result, kube_err, managedresource};

/// What a successful reconcile has to tell besides success.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// providerConfig flags that were ignored (worth a Warning Event).
    pub ignored_flags: Vec<String>,
}

/// The gVisor actuator.
#[derive(Clone, Debug)]
pub struct Actuator {
    /// The node-agent image reference.
    pub image: String,
    /// How long deletion waits for ManagedResources to disappear.
    pub delete_timeout: Duration,
}

fn namespace(cr: &ContainerRuntime) -> &str {
    cr.metadata.namespace.as_deref().unwrap_or_default()
}

impl Actuator {
    /// Creates or updates both ManagedResources.
    pub async fn reconcile(&self, client: &Client, cr: &ContainerRuntime) -> Result<Outcome> {
        let config = gvisor::config::parse(cr.spec.provider_config.as_ref())?;
        let ns = namespace(cr);
        let shared = gvisor::shared_objects()?;
        managedresource::ensure(
            client,
            ns,
            gvisor::MANAGED_RESOURCE,
            gvisor::ORIGIN,
            shared.into_data(),
        )
        .await?;
        let installation = gvisor::installation_objects(&InstallationInput {
            pool: &cr.spec.worker_pool.name,
            selector: &cr.spec.worker_pool.selector,
            binary_path: &cr.spec.binary_path,
            config: &config,
            image: &self.image,
        })?;
        managedresource::ensure(
            client,
            ns,
            &gvisor::installation_managed_resource(&cr.spec.worker_pool.name),
            gvisor::ORIGIN,
            installation.into_data(),
        )
        .await?;
        Ok(Outcome {
            ignored_flags: config.ignored_flags,
        })
    }

    /// Deletes the pool's ManagedResource, and the shared one when no other gVisor
    /// ContainerRuntime without deletionTimestamp is left in the namespace. `wait` is false
    /// for force deletion and hibernated shoots (nobody would remove the objects).
    pub async fn delete(&self, client: &Client, cr: &ContainerRuntime, wait: bool) -> Result<()> {
        let ns = namespace(cr);
        let timeout = wait.then_some(self.delete_timeout);
        managedresource::delete(
            client,
            ns,
            &gvisor::installation_managed_resource(&cr.spec.worker_pool.name),
            timeout,
        )
        .await?;
        if still_required(client, cr).await? {
            return Ok(());
        }
        managedresource::delete(client, ns, gvisor::MANAGED_RESOURCE, timeout).await
    }

    /// Leaves the objects in the shoot and removes the ManagedResources (the destination
    /// seed takes over).
    pub async fn migrate(&self, client: &Client, cr: &ContainerRuntime) -> Result<()> {
        let ns = namespace(cr);
        let pool_mr = gvisor::installation_managed_resource(&cr.spec.worker_pool.name);
        for name in [pool_mr.as_str(), gvisor::MANAGED_RESOURCE] {
            managedresource::keep_objects(client, ns, name).await?;
            managedresource::delete(client, ns, name, None).await?;
        }
        Ok(())
    }
}

/// Whether another gVisor ContainerRuntime in the namespace still needs the RuntimeClass.
async fn still_required(client: &Client, cr: &ContainerRuntime) -> Result<bool> {
    // Listed untyped: an undecodable neighbour must not block this deletion.
    let resource = ApiResource::erase::<ContainerRuntime>(&());
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), namespace(cr), &resource);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(kube_err("listing containerruntimes"))?;
    Ok(list.items.iter().any(|other| {
        other.metadata.name != cr.metadata.name
            && other.metadata.deletion_timestamp.is_none()
            && other.data["spec"]["type"] == gvisor::RUNTIME_TYPE
    }))
}
