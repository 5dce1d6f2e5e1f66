//! The health check's I/O: every sync period, for each ContainerRuntime we serve, read what
//! [`crate::health`] needs (our ManagedResources from the cache, the pool's nodes from the
//! shoot), compute the conditions, and patch the status only when they changed.
//!
//! The shoot is read the way Gardener's health check library reads it (`NewClientForShoot`):
//! with the kubeconfig in the shoot namespace's `gardener-internal` Secret (or `gardener`),
//! which gardenlet maintains for extensions; the chart grants `get`, `list` and `watch` on
//! exactly those two Secret names. Which of them exists, and its version, comes from a
//! metadata watch: a converged seed costs no Secret reads. Only Nodes of the pool are read (their ready label and the agent's state
//! annotation). Without that Secret the condition falls back to what gardener-resource-manager
//! reports about the installer DaemonSet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use sandbox_api::ContainerRuntime;
use sandbox_runtime::actuator::actuator;
use sandbox_runtime::node_plan::{NodeReport, state_annotation};
use serde_json::json;
use tracing::{debug, warn};

use crate::conditions::{self, ComponentState, Input, NodeState};
use crate::context::Context;
use crate::contract;
use crate::event_filter::Guarded;

/// The Secrets with the shoot's kubeconfig that gardenlet keeps for extensions, preferred first.
pub const SHOOT_ACCESS_SECRETS: [&str; 2] = ["gardener-internal", "gardener"];
const SHOOT_TIMEOUT: Duration = Duration::from_secs(10);
const CONCURRENCY: usize = 5;

/// Shoot clients by namespace, rebuilt when the Secret changes.
#[derive(Default)]
pub(crate) struct ShootClients(Mutex<HashMap<String, (String, Client)>>);

/// Runs the health checks every `ctx.config.health_sync_period` until dropped.
pub(crate) async fn run(ctx: Arc<Context>, store: Store<Guarded>) {
    let clients = ShootClients::default();
    // The first round comes one period after start, not at once: a restart or a leader
    // handover finds the conditions the previous instance wrote (at most one period old) and
    // does not read every shoot's nodes in one burst, and a restart with up-to-date objects
    // makes no request beyond its initial lists (controller/api_calls pins that).
    let period = ctx.config.health_sync_period;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let objects: Vec<ContainerRuntime> = store
            .state()
            .iter()
            .filter_map(|g| g.0.as_ref().ok().cloned())
            .filter(|cr| checked(cr, &ctx.config.extension_classes))
            .collect();
        futures::stream::iter(objects)
            .for_each_concurrent(CONCURRENCY, |cr| {
                let (ctx, clients) = (&ctx, &clients);
                async move {
                    if let Err(e) = check(ctx, clients, &cr).await {
                        warn!(namespace = cr.namespace().unwrap_or_default(), name = %cr.name_any(), error = %e, "health check failed");
                    }
                }
            })
            .await;
    }
}

/// Whether `cr` gets health conditions: ours, reconciled once, not being deleted or migrated
/// (as Gardener's library skips them).
fn checked(cr: &ContainerRuntime, classes: &[String]) -> bool {
    let migrating = contract::operation_annotation(cr) == Some("migrate")
        || cr
            .status
            .as_ref()
            .and_then(|s| s.last_operation.as_ref())
            .is_some_and(|op| op.type_ == sandbox_api::LastOperationType::Migrate);
    actuator(&cr.spec.type_).is_some()
        && contract::class_matches(cr, classes)
        && cr.metadata.deletion_timestamp.is_none()
        && contract::has_finalizer(cr)
        && !migrating
        && contract::operation_annotation(cr) != Some("restore")
}

async fn check(
    ctx: &Context,
    clients: &ShootClients,
    cr: &ContainerRuntime,
) -> Result<(), kube::Error> {
    let Some(actuator) = actuator(&cr.spec.type_) else {
        return Ok(());
    };
    let namespace = cr.namespace().unwrap_or_default();
    let pool = &cr.spec.worker_pool.name;
    let hibernated = ctx
        .caches
        .cluster(&namespace)
        .and_then(|c| c.shoot().ok())
        .is_some_and(|s| s.is_hibernated());
    let shared_name = actuator.description().shared_managed_resource;
    let pool_name = actuator.description().pool_managed_resource(pool);
    let shared = ctx.caches.managed_resource(&namespace, shared_name);
    let pool_mr = ctx.caches.managed_resource(&namespace, &pool_name);
    let nodes = if hibernated {
        Ok(Vec::new())
    } else {
        pool_nodes(
            ctx,
            clients,
            cr,
            actuator.description().node_ready_label,
            &actuator.component_ready_labels(cr),
        )
        .await
    };
    let input = Input {
        runtime: actuator.description().display_name,
        pool,
        namespace: &namespace,
        shared: (shared_name, shared.as_deref()),
        pool_mr: (&pool_name, pool_mr.as_deref()),
        nodes,
        hibernated,
    };
    let old = cr
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let new = conditions::conditions(&input, &old, Timestamp::now());
    if new == old {
        return Ok(());
    }
    debug!(%namespace, name = %cr.name_any(), "health conditions changed");
    Api::<ContainerRuntime>::namespaced(ctx.client.clone(), &namespace)
        .patch_status(
            &cr.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": new}})),
        )
        .await?;
    Ok(())
}

/// The pool's nodes as their agents reported them, or why they cannot be read.
async fn pool_nodes(
    ctx: &Context,
    clients: &ShootClients,
    cr: &ContainerRuntime,
    ready_label: &str,
    components: &[(String, String)],
) -> Result<Vec<NodeState>, String> {
    let namespace = cr.namespace().unwrap_or_default();
    let client = clients.get(ctx, &namespace).await?;
    let selector = cr
        .spec
        .worker_pool
        .selector
        .match_labels
        .clone()
        .unwrap_or_default()
        .iter()
        .filter(|(k, _)| *k == sandbox_api::containerruntime::POOL_LABELS[0])
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let nodes = Api::<Node>::all(client)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| format!("listing the pool's nodes in the shoot: {e}"))?;
    let annotation = state_annotation(ready_label);
    Ok(nodes
        .items
        .iter()
        .map(|node| {
            let ready = node.labels().get(ready_label).is_some_and(|v| v == "true");
            let report: Option<NodeReport> = node
                .annotations()
                .get(&annotation)
                .and_then(|v| serde_json::from_str(v).ok());
            let version = report.as_ref().and_then(|r| r.version.clone());
            let report = report.filter(|r| !r.ready);
            let components_not_ready = components
                .iter()
                .filter(|(_, label)| node.labels().get(label).is_none_or(|v| v != "true"))
                .map(|(name, label)| {
                    let report: Option<NodeReport> = node
                        .annotations()
                        .get(&state_annotation(label))
                        .and_then(|v| serde_json::from_str(v).ok());
                    ComponentState {
                        name: name.clone(),
                        reason: report.as_ref().and_then(|r| r.reason.clone()),
                        message: report.and_then(|r| r.message),
                    }
                })
                .collect();
            NodeState {
                name: node.name_any(),
                ready,
                reason: report.as_ref().and_then(|r| r.reason.clone()),
                message: report.and_then(|r| r.message),
                components_not_ready,
                version,
            }
        })
        .collect())
}

impl ShootClients {
    /// A client for the shoot of `namespace`, from gardenlet's Secret. Whether the Secret
    /// exists and its version come from the seed watch ([`crate::cache::Caches`]): the Secret
    /// itself is read only when its version differs from the one the cached client was built
    /// from, so a converged seed costs no Secret reads at all.
    async fn get(&self, ctx: &Context, namespace: &str) -> Result<Client, String> {
        let (name, version) = ctx.caches.shoot_access(namespace).ok_or_else(|| {
            format!(
                "no shoot access: neither secret {} exists in {namespace}",
                SHOOT_ACCESS_SECRETS.join(" nor ")
            )
        })?;
        if let Some((cached, client)) = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(namespace)
            && *cached == format!("{name}@{version}")
        {
            return Ok(client.clone());
        }
        let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
            .get_opt(&name)
            .await
            .map_err(|e| format!("reading secret {namespace}/{name}: {e}"))?
            .ok_or_else(|| format!("secret {namespace}/{name} was deleted meanwhile"))?;
        // The version read now (the watch may lag by an event): the next round compares it.
        let version = format!("{name}@{}", secret.resource_version().unwrap_or_default());
        let data = secret
            .data
            .as_ref()
            .and_then(|d| d.get("kubeconfig"))
            .ok_or_else(|| format!("secret {namespace}/{name} has no kubeconfig"))?;
        let text = String::from_utf8_lossy(&data.0);
        let kubeconfig =
            Kubeconfig::from_yaml(&text).map_err(|e| format!("secret {namespace}/{name}: {e}"))?;
        let mut config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| format!("secret {namespace}/{name}: {e}"))?;
        config.connect_timeout = Some(SHOOT_TIMEOUT);
        config.read_timeout = Some(SHOOT_TIMEOUT);
        let client = Client::try_from(config).map_err(|e| format!("shoot client: {e}"))?;
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(namespace.to_string(), (version, client.clone()));
        Ok(client)
    }
}
