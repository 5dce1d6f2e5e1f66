//! One reconcile as a pipeline: read (the object, its Cluster), decide ([`contract::plan`],
//! pure), render (the actuator's desired state, pure), write (ManagedResources, status,
//! finalizers). Waits for gardener-resource-manager are requeues, never sleeps, so a slow
//! deletion holds no worker.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::{Resource, ResourceExt};
use sandbox_api::{ClusterShoot, ContainerRuntime, LastOperationType, Shoot};
use sandbox_runtime::actuator::{
    Actuator, ActuatorError, Desired, ManagedResourceContent, actuator,
};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

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
async fn reconcile_object(mut cr: ContainerRuntime, ctx: &Context) -> Result<Action> {
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
    let mut desired = None;
    match plan.step {
        // Deleting decides from the Cluster as it is now, not as the cache last saw it.
        Step::Delete { .. } => {
            shoot = read_shoot(ctx, &namespace, true).await?;
            plan = contract::plan(&cr, &shoot, actuator);
        }
        // Everything a reconcile writes is rendered before the first write.
        Step::Reconcile { .. } | Step::Restore => {
            desired = Some(actuator.desired(&cr, &shoot, ctx.config.image_for(actuator)));
        }
        _ => {}
    }
    // A reconcile or restore consumes gardenlet's `reconcile` request, and adds our finalizer,
    // in one patch right after its first status write (Processing, or an Error): a run that
    // stops before (killed, or the status write failed) leaves the request for the next run
    // instead of losing it. The other steps consume it now.
    let consume = plan.remove_reconcile_annotation;
    if consume && desired.is_none() {
        cr = target.update_metadata(&cr, true, false).await?;
    }
    match plan.step {
        Step::Skip(Skip::ShootFailed) => {
            info!(%namespace, %name, "skipping the ContainerRuntime of a failed shoot");
        }
        Step::Skip(why) => debug!(%namespace, %name, ?why, "nothing to do"),
        Step::Reconcile { op } => {
            info!(%namespace, %name, operation = operation_label(op), "reconciling");
            let desired = desired
                .unwrap_or_else(|| actuator.desired(&cr, &shoot, ctx.config.image_for(actuator)));
            target.reconcile(cr, op, desired, consume).await?;
        }
        Step::Restore => {
            info!(%namespace, %name, operation = "restore", "reconciling");
            let op = LastOperationType::Restore;
            let desired = desired
                .unwrap_or_else(|| actuator.desired(&cr, &shoot, ctx.config.image_for(actuator)));
            let cr = target.reconcile(cr, op, desired, consume).await?;
            target.remove_operation_annotation(&cr).await?;
        }
        Step::Delete { wait, clean_nodes } => {
            info!(%namespace, %name, operation = "delete", wait, clean_nodes, "reconciling");
            return target.delete(cr, &shoot, wait, clean_nodes).await;
        }
        Step::Migrate => {
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

/// What a deletion is still waiting for.
struct Pending {
    /// What has not happened yet.
    what: String,
    /// What the ManagedResource or gardener-resource-manager says.
    detail: String,
}

impl Target<'_> {
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

    /// Delete: cleans the pool's nodes first when the plan says so, deletes the pool's
    /// ManagedResource, and the shared one when no other ContainerRuntime of this type needs
    /// it. While gardener-resource-manager has not finished, the reconcile requeues after
    /// `wait_poll`; after `delete_timeout` (from the attempt's Processing status) it is an
    /// Error naming what is pending, retried with backoff.
    async fn delete(
        &self,
        cr: ContainerRuntime,
        shoot: &Shoot,
        wait: bool,
        clean_nodes: bool,
    ) -> Result<Action> {
        let op = LastOperationType::Delete;
        // A requeued wait continues its attempt: no second Processing write.
        let cr = match contract::in_progress_since(&cr, op) {
            Some(_) => cr,
            None => self.processing(&cr, op).await?,
        };
        let pending = match self.delete_step(&cr, shoot, wait, clean_nodes).await {
            Ok(pending) => pending,
            Err(e) => return Err(self.fail(&cr, op, e).await),
        };
        if let Some(pending) = pending {
            let since = contract::in_progress_since(&cr, op).unwrap_or_else(Timestamp::now);
            let waited =
                Duration::try_from(Timestamp::now().duration_since(since)).unwrap_or_default();
            let timeout = self.ctx.config.delete_timeout;
            if waited < timeout {
                debug!(what = %pending.what, "waiting");
                return Ok(Action::requeue(self.ctx.config.wait_poll));
            }
            let error = Error::Timeout {
                pending: pending.what,
                seconds: timeout.as_secs(),
                detail: pending.detail,
            };
            return Err(self.fail(&cr, op, error).await);
        }
        let cr = self.succeeded(&cr, op).await?;
        let finalizers: Vec<&String> = cr.finalizers().iter().filter(|f| *f != FINALIZER).collect();
        self.patch(
            &cr.name_any(),
            json!({"metadata": {"finalizers": finalizers, "resourceVersion": cr.metadata.resource_version}}),
            "removing the finalizer",
        )
        .await?;
        Ok(Action::await_change())
    }

    /// One pass of the deletion; `Some` while something is pending.
    async fn delete_step(
        &self,
        cr: &ContainerRuntime,
        shoot: &Shoot,
        wait: bool,
        clean_nodes: bool,
    ) -> Result<Option<Pending>> {
        let client = &self.ctx.client;
        let ns = &self.namespace;
        let pool_mr = self
            .actuator
            .description()
            .pool_managed_resource(&cr.spec.worker_pool.name);
        // The cleanup replaces the pool's installer (gardener-resource-manager deletes it) and
        // runs until every node of the pool verified the runtime is gone. Skipped when the
        // pool's ManagedResource is missing or already going (nothing installed, or an
        // earlier pass finished the cleanup).
        if clean_nodes && managedresource::is_live(client, ns, &pool_mr).await? {
            let cleanup =
                self.actuator
                    .cleanup(cr, shoot, self.ctx.config.image_for(self.actuator))?;
            self.ensure_shared(&cleanup.shared).await?;
            self.ensure(&cleanup.pool).await?;
            if let Some(summary) = managedresource::rollout_pending(client, ns, &pool_mr).await? {
                return Ok(Some(Pending {
                    what: cleanup.pending,
                    detail: format!("managedresource {pool_mr}: {summary}"),
                }));
            }
        }
        let pending = |name: &str| Pending {
            what: format!("managedresource {name} still exists"),
            detail:
                "gardener-resource-manager has not finished deleting its objects from the shoot"
                    .into(),
        };
        if !self.delete_managed_resource(&pool_mr).await? && wait {
            return Ok(Some(pending(&pool_mr)));
        }
        // Deciding and deleting under the shoot's lock: no other pool's reconcile finds the
        // shared ManagedResource present in between and reports Succeeded without it.
        let shared = self.actuator.description().shared_managed_resource;
        let _lock = self.ctx.shared.lock(ns, shared).await;
        if !self.shared_still_required(cr).await?
            && !self.delete_managed_resource(shared).await?
            && wait
        {
            return Ok(Some(pending(shared)));
        }
        Ok(None)
    }

    /// Deletes ManagedResource `name` (and its Secrets); returns whether it is gone.
    async fn delete_managed_resource(&self, name: &str) -> Result<bool> {
        let gone = managedresource::delete(&self.ctx.client, &self.namespace, name).await?;
        self.ctx.shared.mark_deleted(&self.namespace, name);
        Ok(gone)
    }

    /// Whether another ContainerRuntime of this type in the namespace still needs the shared
    /// ManagedResource: one that is not being deleted (its pool runs the runtime), or one being
    /// deleted whose pool's ManagedResource is still live (its cleanup DaemonSet may run with
    /// the shared RBAC). Deleting ones whose ManagedResource is already going do not count, so
    /// two deletions at once never keep the shared objects forever.
    async fn shared_still_required(&self, cr: &ContainerRuntime) -> Result<bool> {
        // Listed untyped: an undecodable neighbour must not block this deletion.
        let resource = ApiResource::erase::<ContainerRuntime>(&());
        let ns = &self.namespace;
        let client = &self.ctx.client;
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource);
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(kube_err("listing containerruntimes"))?;
        for other in &list.items {
            if other.metadata.name == cr.metadata.name
                || other.data["spec"]["type"] != self.actuator.description().runtime_type
            {
                continue;
            }
            if other.metadata.deletion_timestamp.is_none() {
                return Ok(true);
            }
            if let Some(pool) = other.data["spec"]["workerPool"]["name"].as_str() {
                let name = self.actuator.description().pool_managed_resource(pool);
                if managedresource::is_live(client, ns, &name).await? {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Migrate: the objects stay in the shoot (keepObjects), the ManagedResources go (the
    /// destination seed takes over), then every finalizer and the annotation.
    async fn migrate(&self, cr: ContainerRuntime) -> Result<()> {
        let client = &self.ctx.client;
        let ns = &self.namespace;
        let pool_mr = self
            .actuator
            .description()
            .pool_managed_resource(&cr.spec.worker_pool.name);
        let work = async {
            let _lock = self
                .ctx
                .shared
                .lock(ns, self.actuator.description().shared_managed_resource)
                .await;
            for name in [
                pool_mr.as_str(),
                self.actuator.description().shared_managed_resource,
            ] {
                managedresource::keep_objects(client, ns, name).await?;
                self.delete_managed_resource(name).await?;
            }
            Ok(())
        };
        let (cr, ()) = self.operate(&cr, LastOperationType::Migrate, work).await?;
        let cr = self
            .patch(
                &cr.name_any(),
                json!({"metadata": {"finalizers": null, "resourceVersion": cr.metadata.resource_version}}),
                "removing finalizers",
            )
            .await?;
        self.remove_operation_annotation(&cr).await
    }

    /// [`Target::ensure`] of the ManagedResource the shoot's pools share, under its lock.
    async fn ensure_shared(&self, content: &ManagedResourceContent) -> Result<()> {
        let _lock = self.ctx.shared.lock(&self.namespace, &content.name).await;
        self.ensure(content).await
    }

    async fn ensure(&self, content: &ManagedResourceContent) -> Result<()> {
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

    async fn managed_resource_live(
        &self,
        name: &str,
    ) -> Result<Option<sandbox_api::ManagedResource>> {
        managedresource::get(&self.ctx.client, &self.namespace, name).await
    }

    /// One operation as the contract frames it: Processing, the work, then Succeeded, or
    /// Error (with an Event) when the work fails. Returns the object as last written.
    async fn operate<T>(
        &self,
        cr: &ContainerRuntime,
        op: LastOperationType,
        work: impl Future<Output = Result<T>>,
    ) -> Result<(ContainerRuntime, T)> {
        let cr = self.processing(cr, op).await?;
        let value = match work.await {
            Ok(value) => value,
            Err(e) => return Err(self.fail(&cr, op, e).await),
        };
        let cr = self.succeeded(&cr, op).await?;
        Ok((cr, value))
    }

    /// Status: `op` is Processing (lastError and observedGeneration untouched).
    async fn processing(
        &self,
        cr: &ContainerRuntime,
        op: LastOperationType,
    ) -> Result<ContainerRuntime> {
        self.status(cr, contract::processing_patch(op, Timestamp::now()))
            .await
    }

    /// Status: `op` Succeeded for the current generation; lastError cleared.
    async fn succeeded(
        &self,
        cr: &ContainerRuntime,
        op: LastOperationType,
    ) -> Result<ContainerRuntime> {
        let generation = cr.metadata.generation;
        self.status(
            cr,
            contract::succeeded_patch(op, generation, Timestamp::now()),
        )
        .await
    }

    /// Writes the Error status and an Event; returns the error for the backoff.
    async fn fail(&self, cr: &ContainerRuntime, op: LastOperationType, error: Error) -> Error {
        self.fail_written(cr, op, error).await.0
    }

    /// [`Self::fail`], and the object with the Error status, if it was written.
    async fn fail_written(
        &self,
        cr: &ContainerRuntime,
        op: LastOperationType,
        error: Error,
    ) -> (Error, Option<ContainerRuntime>) {
        let patch = contract::error_patch(
            op,
            &error.to_string(),
            &error.codes(),
            cr.metadata.generation,
            Timestamp::now(),
        );
        let written = match self.status(cr, patch).await {
            Ok(cr) => Some(cr),
            Err(e) => {
                warn!(error = %e, "could not write the Error status");
                None
            }
        };
        self.publish(cr, EventType::Warning, "ReconcileError", error.to_string())
            .await;
        (error, written)
    }

    async fn publish(&self, cr: &ContainerRuntime, type_: EventType, reason: &str, note: String) {
        let event = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.ctx.recorder.publish(&event, &cr.object_ref(&())).await {
            debug!(error = %e, "could not publish an Event");
        }
    }

    /// One patch that consumes gardenlet's `reconcile` request and/or adds our finalizer (the
    /// latter guarded by the resourceVersion, so that no finalizer added meanwhile is lost).
    async fn update_metadata(
        &self,
        cr: &ContainerRuntime,
        remove_annotation: bool,
        add_finalizer: bool,
    ) -> Result<ContainerRuntime> {
        let mut metadata = serde_json::Map::new();
        if remove_annotation {
            metadata.insert("annotations".into(), json!({OPERATION_ANNOTATION: null}));
        }
        if add_finalizer {
            let mut finalizers = cr.finalizers().to_vec();
            finalizers.push(FINALIZER.to_string());
            metadata.insert("finalizers".into(), json!(finalizers));
            metadata.insert(
                "resourceVersion".into(),
                json!(cr.metadata.resource_version),
            );
        }
        if metadata.is_empty() {
            return Ok(cr.clone());
        }
        self.patch(
            &cr.name_any(),
            json!({"metadata": metadata}),
            "updating annotations and finalizers",
        )
        .await
    }

    async fn remove_operation_annotation(&self, cr: &ContainerRuntime) -> Result<()> {
        if contract::operation_annotation(cr).is_some() {
            self.patch(
                &cr.name_any(),
                json!({"metadata": {"annotations": {OPERATION_ANNOTATION: null}}}),
                "removing the operation annotation",
            )
            .await?;
        }
        Ok(())
    }

    async fn patch(&self, name: &str, patch: Value, action: &str) -> Result<ContainerRuntime> {
        self.api
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(kube_err(action))
    }

    async fn status(&self, cr: &ContainerRuntime, patch: Value) -> Result<ContainerRuntime> {
        self.api
            .patch_status(
                &cr.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
            .map_err(kube_err("writing the status"))
    }
}
