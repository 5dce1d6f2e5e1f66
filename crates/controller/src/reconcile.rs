//! One reconcile as a pipeline: read (the object, its Cluster), decide ([`contract::plan`],
//! pure), render (the actuator's desired state, pure), write (ManagedResources, status,
//! finalizers). Waits for gardener-resource-manager are requeues, never sleeps, so a slow
//! deletion holds no worker.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::{Resource, ResourceExt};
use sandbox_api::{ClusterShoot, ContainerRuntime, LastOperationType, Shoot};
use sandbox_runtime::actuator::{
    Actuator, ActuatorError, Desired, ManagedResourceContent, actuator,
};
use sandbox_runtime::osc::InstallationMode;
use serde_json::{Value, json};
use tracing::{debug, info, warn};

mod delete;
mod status;

use crate::context::Context;
use crate::contract::{self, FINALIZER, OPERATION_ANNOTATION, Skip, Step};
use crate::event_filter::Guarded;
use crate::{Error, Result, kube_err, managedresource};

/// Entry point for kube-runtime: one object, with metrics and backoff bookkeeping.
pub(crate) async fn reconcile(object: Arc<Guarded>, ctx: Arc<Context>) -> Result<Action> {
    let cr = match &object.0 {
        Ok(cr) => cr.clone(),
        Err(invalid) => return Err(Error::InvalidObject(invalid.error.clone())),
    };
    let started = Instant::now();
    let operation = contract::operation_type(&cr);
    let result = reconcile_object(cr, &ctx).await;
    ctx.observer.reconciled(
        operation_label(operation),
        started.elapsed(),
        result.as_ref().err().map(Error::metric_label),
    );
    if result.is_ok() {
        ctx.succeeded(&object);
    }
    result
}

fn operation_label(op: LastOperationType) -> &'static str {
    match op {
        LastOperationType::Create => "create",
        LastOperationType::Reconcile => "reconcile",
        LastOperationType::Delete => "delete",
        LastOperationType::Migrate => "migrate",
        LastOperationType::Restore => "restore",
        LastOperationType::Unknown => "unknown",
    }
}

/// The object's namespace, the API it lives behind and the actuator of its type.
struct Target<'a> {
    ctx: &'a Context,
    namespace: String,
    api: Api<ContainerRuntime>,
    actuator: &'static dyn Actuator,
}

/// The contract's algorithm for one object.
async fn reconcile_object(cr: ContainerRuntime, ctx: &Context) -> Result<Action> {
    let namespace = cr.namespace().unwrap_or_default();
    let name = cr.name_any();
    // A trigger queued while an earlier run was busy (e.g. gardenlet renewing a request that
    // run then served) may be stale by now: check the rule against the current object, so that
    // finished work is not redone.
    if !ctx.config.ignore_operation_annotation && !contract::create_passes(&cr) {
        debug!(%namespace, %name, "nothing to do any more");
        return Ok(Action::await_change());
    }
    let Some(actuator) = actuator(&cr.spec.type_) else {
        // The event filter passes only types we serve.
        return Ok(Action::await_change());
    };
    let target = Target {
        ctx,
        api: Api::namespaced(ctx.client.clone(), &namespace),
        namespace: namespace.clone(),
        actuator,
    };

    let mut shoot = read_shoot(ctx, &namespace, false).await?;
    let mut plan = contract::plan(&cr, &shoot, actuator);
    // Deleting decides from the Cluster as it is now, not as the cache last saw it.
    if let Step::Delete { .. } = plan.step {
        shoot = read_shoot(ctx, &namespace, true).await?;
        plan = contract::plan(&cr, &shoot, actuator);
    }
    // A reconcile or restore consumes gardenlet's `reconcile` request, and adds our finalizer,
    // in one patch right after its first status write (Processing, or an Error): a run that
    // stops before (killed, or the status write failed) leaves the request for the next run
    // instead of losing it. The other steps consume it now.
    let consume = plan.remove_reconcile_annotation;
    match plan.step {
        Step::Reconcile { op } => {
            target.render_and_reconcile(cr, op, &shoot, consume).await?;
        }
        Step::Restore => {
            let op = LastOperationType::Restore;
            let cr = target.render_and_reconcile(cr, op, &shoot, consume).await?;
            target.remove_operation_annotation(&cr).await?;
        }
        Step::Skip(why) => {
            target.consume(cr, consume).await?;
            if why == Skip::ShootFailed {
                info!(%namespace, %name, "skipping the ContainerRuntime of a failed shoot");
            } else {
                debug!(%namespace, %name, ?why, "nothing to do");
            }
        }
        Step::Delete { wait, clean_nodes } => {
            let cr = target.consume(cr, consume).await?;
            info!(%namespace, %name, operation = "delete", wait, clean_nodes, "reconciling");
            return target.delete(cr, &shoot, wait, clean_nodes).await;
        }
        Step::Migrate => {
            let cr = target.consume(cr, consume).await?;
            info!(%namespace, %name, operation = "migrate", "reconciling");
            target.migrate(cr).await?;
        }
    }
    Ok(Action::await_change())
}

/// The shoot embedded in the namespace's Cluster, from the cache unless `live` (or the cache
/// does not have it yet); missing or undecodable is an error (retried with backoff, no status
/// written).
async fn read_shoot(ctx: &Context, namespace: &str, live: bool) -> Result<Shoot> {
    let cached = if live {
        None
    } else {
        ctx.caches.cluster(namespace)
    };
    let cluster = match cached {
        Some(cluster) => cluster,
        None => Api::<ClusterShoot>::all(ctx.client.clone())
            .get_opt(namespace)
            .await
            .map_err(kube_err(format!("reading cluster {namespace}")))?
            .map(Arc::new)
            .ok_or_else(|| Error::Cluster {
                name: namespace.to_string(),
                message: "not found".into(),
            })?,
    };
    cluster.shoot().map_err(|e| Error::Cluster {
        name: namespace.to_string(),
        message: format!("cannot decode spec.shoot: {e}"),
    })
}

impl Target<'_> {
    /// The name of `cr`'s pool's ManagedResource.
    pub(super) fn pool_managed_resource(&self, cr: &ContainerRuntime) -> String {
        self.actuator
            .description()
            .pool_managed_resource(&cr.spec.worker_pool.name)
    }

    /// Renders the desired state (before any write) and reconciles `op` with it.
    async fn render_and_reconcile(
        &self,
        cr: ContainerRuntime,
        op: LastOperationType,
        shoot: &Shoot,
        consume: bool,
    ) -> Result<ContainerRuntime> {
        info!(namespace = %self.namespace, name = %cr.name_any(), operation = operation_label(op), "reconciling");
        let image = self.ctx.config.image_for(self.actuator);
        let pinned = self.ctx.config.pinned_for(self.actuator);
        let desired = match self.ctx.config.installation_mode {
            InstallationMode::DaemonSet => self.actuator.desired_pinned(&cr, shoot, image, pinned),
            // The OSC carries the runtime to the nodes (the seed webhook); no installer.
            InstallationMode::Osc => self.actuator.desired_osc(&cr, shoot),
        };
        self.reconcile(cr, op, desired, consume).await
    }

    /// Consumes gardenlet's `reconcile` request now, if the plan says so (the steps that
    /// render nothing).
    async fn consume(&self, cr: ContainerRuntime, consume: bool) -> Result<ContainerRuntime> {
        if consume {
            self.update_metadata(&cr, true, false).await
        } else {
            Ok(cr)
        }
    }

    /// Create, Reconcile or Restore with the `desired` state rendered before any write: an
    /// invalid providerConfig is an Error before Processing, with nothing written but the
    /// finalizer; otherwise Processing, the ManagedResources, Succeeded, and the actuator's
    /// warnings as Events. With `consume`, gardenlet's `reconcile` request is removed once the
    /// Processing (or Error) status is written, not before (in the patch that adds our
    /// finalizer, before anything is created in the shoot): gardenlet's check then sees the
    /// outcome of this run, and a run that stops before it leaves the request in place.
    async fn reconcile(
        &self,
        cr: ContainerRuntime,
        op: LastOperationType,
        desired: std::result::Result<Desired, ActuatorError>,
        consume: bool,
    ) -> Result<ContainerRuntime> {
        let add_finalizer = !contract::has_finalizer(&cr);
        let desired = match desired {
            Ok(desired) => desired,
            Err(e) => {
                let (error, written) = self.fail_written(&cr, op, e.into()).await;
                if let Some(cr) = written {
                    self.update_metadata(&cr, consume, add_finalizer).await?;
                }
                return Err(error);
            }
        };
        let cr = self.processing(&cr, op).await?;
        let cr = self.update_metadata(&cr, consume, add_finalizer).await?;
        let applied = async {
            self.ensure_shared(&desired.shared).await?;
            self.ensure_shoot_access().await?;
            self.ensure(&desired.pool).await
        };
        if let Err(e) = applied.await {
            return Err(self.fail(&cr, op, e).await);
        }
        let cr = self.succeeded(&cr, op).await?;
        for warning in desired.warnings {
            self.publish(&cr, EventType::Warning, warning.reason, warning.message)
                .await;
        }
        Ok(cr)
    }

    /// [`Target::ensure`] of the ManagedResource the shoot's pools share, under its lock.
    pub(super) async fn ensure_shared(&self, content: &ManagedResourceContent) -> Result<()> {
        let _lock = self.ctx.shared.lock(&self.namespace, &content.name).await;
        self.ensure(content).await
    }

    /// Creates the runtime's shoot-access Secret if the cache does not show it (never
    /// updated: gardener-resource-manager writes the token into it).
    async fn ensure_shoot_access(&self) -> Result<()> {
        let description = self.actuator.description();
        let name = description.shoot_access_secret();
        // After our own deletion the cache may still show it: create (409 is fine) then.
        let shared = &self.ctx.shared;
        if !shared.deleted_since_written(&self.namespace, &name)
            && self
                .ctx
                .caches
                .shoot_access(&self.namespace, &name)
                .is_some()
        {
            return Ok(());
        }
        let server =
            crate::shoot_access::server(&self.ctx.config.shoot_api_server, &self.namespace);
        let secret = crate::shoot_access::secret(&self.namespace, description, &server);
        let created = Api::<Secret>::namespaced(self.ctx.client.clone(), &self.namespace)
            .create(&PostParams::default(), &secret)
            .await;
        managedresource::ok_if(&[409], created.map(|_| ()))
            .map_err(kube_err(format!("creating secret {name}")))?;
        shared.written(&self.namespace, &name);
        Ok(())
    }

    /// Deletes the runtime's shoot-access Secret (with the shared ManagedResource).
    pub(super) async fn delete_shoot_access(&self) -> Result<()> {
        let name = self.actuator.description().shoot_access_secret();
        let deleted = Api::<Secret>::namespaced(self.ctx.client.clone(), &self.namespace)
            .delete(&name, &Default::default())
            .await;
        managedresource::ok_if(&[404], deleted.map(|_| ()))
            .map_err(kube_err(format!("deleting secret {name}")))?;
        self.ctx.shared.mark_deleted(&self.namespace, &name);
        Ok(())
    }

    pub(super) async fn ensure(&self, content: &ManagedResourceContent) -> Result<()> {
        let shared = &self.ctx.shared;
        // After our own deletion the cache may still show the old object: ask the API server.
        let cached = if shared.deleted_since_written(&self.namespace, &content.name) {
            self.managed_resource_live(&content.name).await?
        } else {
            self.ctx
                .caches
                .managed_resource(&self.namespace, &content.name)
                .map(|mr| (*mr).clone())
        };
        managedresource::ensure(
            &self.ctx.client,
            &self.namespace,
            &content.name,
            self.actuator.description().origin(),
            content.data.clone(),
            cached,
        )
        .await?;
        shared.written(&self.namespace, &content.name);
        Ok(())
    }

    pub(super) async fn managed_resource_live(
        &self,
        name: &str,
    ) -> Result<Option<sandbox_api::ManagedResource>> {
        managedresource::get(&self.ctx.client, &self.namespace, name).await
    }
}
