//! The gVisor actuator: turns a ContainerRuntime of type `gvisor` into ManagedResources for
//! the shoot (the shared RuntimeClass + ServiceAccount, and the pool's node installer).

use std::time::Duration;

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use sandbox_api::ContainerRuntime;
use sandbox_runtime::gvisor::{self, CleanupInput, InstallationInput, NodeCleanup};
use tracing::info;

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
    /// for force deletion and hibernated shoots (nobody would remove the objects). With
    /// [`NodeCleanup::Required`] the pool's nodes are cleaned first (see [`Self::clean_nodes`]).
    pub async fn delete(
        &self,
        client: &Client,
        cr: &ContainerRuntime,
        wait: bool,
        cleanup: NodeCleanup,
    ) -> Result<()> {
        let ns = namespace(cr);
        if wait && cleanup == NodeCleanup::Required {
            self.clean_nodes(client, cr).await?;
        }
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

    /// Replaces the pool's installer with its cleanup (a DaemonSet running `node-agent
    /// uninstall` on the same nodes; gardener-resource-manager deletes the installer) and waits
    /// until every cleanup pod is ready, i.e. every node of the pool verified that gVisor is
    /// gone. Skipped when the pool's ManagedResource is missing or already being deleted
    /// (nothing installed, or an earlier attempt finished the cleanup). A timeout is an error,
    /// retried with backoff: a node that cannot be cleaned keeps the deletion pending and says
    /// so in the status, until it is cleaned or replaced.
    async fn clean_nodes(&self, client: &Client, cr: &ContainerRuntime) -> Result<()> {
        let ns = namespace(cr);
        let pool = &cr.spec.worker_pool.name;
        let name = gvisor::installation_managed_resource(pool);
        if !managedresource::is_live(client, ns, &name).await? {
            return Ok(());
        }
        // The cleanup pods run as the shared ServiceAccount and unlabel nodes with its RBAC.
        managedresource::ensure(
            client,
            ns,
            gvisor::MANAGED_RESOURCE,
            gvisor::ORIGIN,
            gvisor::shared_objects()?.into_data(),
        )
        .await?;
        let cleanup = gvisor::cleanup_objects(&CleanupInput {
            pool,
            selector: &cr.spec.worker_pool.selector,
            binary_path: &cr.spec.binary_path,
            image: &self.image,
        })?;
        managedresource::ensure(client, ns, &name, gvisor::ORIGIN, cleanup.into_data()).await?;
        info!(namespace = ns, pool = %pool, "waiting for gVisor to be removed from the pool's nodes");
        managedresource::wait_rolled_out(
            client,
            ns,
            &name,
            self.delete_timeout,
            &format!(
                "gVisor is not yet removed from every node of pool {pool} (DaemonSet {}/{})",
                gvisor::SHOOT_NAMESPACE,
                gvisor::cleanup_name(pool)
            ),
        )
        .await
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

/// Whether another gVisor ContainerRuntime in the namespace still needs the shared objects:
/// one that is not being deleted (its pool runs gVisor), or one being deleted whose pool's
/// ManagedResource is still live (its cleanup DaemonSet runs with the shared ServiceAccount
/// and RBAC). Deleting ones whose ManagedResource is already going do not count, so two
/// deletions at once never keep the shared objects forever.
async fn still_required(client: &Client, cr: &ContainerRuntime) -> Result<bool> {
    // Listed untyped: an undecodable neighbour must not block this deletion.
    let resource = ApiResource::erase::<ContainerRuntime>(&());
    let ns = namespace(cr);
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(kube_err("listing containerruntimes"))?;
    for other in &list.items {
        if other.metadata.name == cr.metadata.name
            || other.data["spec"]["type"] != gvisor::RUNTIME_TYPE
        {
            continue;
        }
        if other.metadata.deletion_timestamp.is_none() {
            return Ok(true);
        }
        if let Some(pool) = other.data["spec"]["workerPool"]["name"].as_str() {
            let name = gvisor::installation_managed_resource(pool);
            if managedresource::is_live(client, ns, &name).await? {
                return Ok(true);
            }
        }
    }
    Ok(false)
}
