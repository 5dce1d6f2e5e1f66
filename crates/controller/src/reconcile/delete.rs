//! Deleting and migrating: the steps that take the runtime out of a shoot (cleaning the pool's
//! nodes first when the pool stays) or hand it to another seed.

use super::*;

/// What a deletion is still waiting for.
struct Pending {
    /// What has not happened yet.
    what: String,
    /// What the ManagedResource or gardener-resource-manager says.
    detail: String,
}

impl Target<'_> {
    /// Delete: cleans the pool's nodes first when the plan says so, deletes the pool's
    /// ManagedResource, and the shared one when no other ContainerRuntime of this type needs
    /// it. While gardener-resource-manager has not finished, the reconcile requeues after
    /// `wait_poll`; after `delete_timeout` (from the attempt's Processing status) it is an
    /// Error naming what is pending, retried with backoff.
    pub(super) async fn delete(
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
        let pool_mr = self.pool_managed_resource(cr);
        // The cleanup replaces the pool's installer (gardener-resource-manager deletes it) and
        // runs until every node of the pool verified the runtime is gone. Skipped when the
        // pool's ManagedResource is missing or already going (nothing installed, or an
        // earlier pass finished the cleanup).
        // Installation mode osc: the seed webhook puts `op: remove` entries into the pool's
        // OSC while this ContainerRuntime exists; done once no node reports the handler
        // (then the labels go). As the cleanup: only while the pool's ManagedResource is live
        // (a later pass, after the shoot access went with the shared objects, skips it).
        let osc = self.ctx.config.installation_mode == InstallationMode::Osc;
        if clean_nodes && osc && managedresource::is_live(client, ns, &pool_mr).await? {
            if let Some(pending) = self.osc_nodes_pending(cr).await {
                return Ok(Some(pending));
            }
        } else if clean_nodes && !osc && managedresource::is_live(client, ns, &pool_mr).await? {
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
        if !self.shared_still_required(cr).await? {
            // The shoot-access token goes with the RBAC that gives it meaning.
            self.delete_shoot_access().await?;
            if !self.delete_managed_resource(shared).await? && wait {
                return Ok(Some(pending(shared)));
            }
        }
        Ok(None)
    }

    /// In installation mode osc: what the nodes of `cr`'s pool still wait for, or None once
    /// no node reports the runtime's handlers and their labels are gone.
    async fn osc_nodes_pending(&self, cr: &ContainerRuntime) -> Option<Pending> {
        let description = self.actuator.description();
        let pool = &cr.spec.worker_pool.name;
        let image = self.ctx.config.image_for(self.actuator);
        let waiting = |detail: String| Pending {
            what: format!(
                "the nodes of pool {pool} still run {}",
                description.display_name
            ),
            detail,
        };
        let client = match self
            .ctx
            .shoot_clients
            .get(self.ctx, &self.namespace, description)
            .await
        {
            Ok(c) => c,
            Err(e) => return Some(waiting(e)),
        };
        match crate::node_labels::still_reporting(&client, cr, self.actuator, image).await {
            Ok(nodes) if nodes.is_empty() => {}
            Ok(nodes) => {
                return Some(waiting(format!(
                    "{} node(s) still report its handler ({}); gardener-node-agent removes it with the OperatingSystemConfig's op: remove entry",
                    nodes.len(),
                    nodes.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            Err(e) => return Some(waiting(e)),
        }
        match crate::node_labels::unlabel_pool(&client, cr, self.actuator).await {
            Ok(()) => None,
            Err(e) => Some(waiting(e)),
        }
    }

    /// Deletes ManagedResource `name` (and its Secrets); returns whether it is gone.
    pub(super) async fn delete_managed_resource(&self, name: &str) -> Result<bool> {
        let gone = managedresource::delete(&self.ctx.client, &self.namespace, name).await?;
        self.ctx.shared.mark_deleted(&self.namespace, name);
        Ok(gone)
    }

    /// Whether another ContainerRuntime of this type in the namespace still needs the shared
    /// ManagedResource: one that is not being deleted (its pool runs the runtime), or one being
    /// deleted whose pool's ManagedResource is still live (its cleanup DaemonSet may run with
    /// the shared RBAC). Deleting ones whose ManagedResource is already going do not count, so
    /// two deletions at once never keep the shared objects forever.
    pub(super) async fn shared_still_required(&self, cr: &ContainerRuntime) -> Result<bool> {
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
    pub(super) async fn migrate(&self, cr: ContainerRuntime) -> Result<()> {
        let client = &self.ctx.client;
        let ns = &self.namespace;
        let pool_mr = self.pool_managed_resource(&cr);
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
}
