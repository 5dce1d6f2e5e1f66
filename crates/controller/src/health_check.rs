//! The health check's I/O: every sync period, for each ContainerRuntime we serve, read what
//! [`crate::conditions`] needs (our ManagedResources from the cache, the pool's nodes from the
//! shoot), compute the conditions, and patch the status only when they changed.
//!
//! The shoot is read with a token that may only `get` and `list` nodes
//! ([`crate::shoot_access`]), never with gardenlet's admin kubeconfig. Whether our
//! shoot-access Secret exists, and its version, comes from a metadata watch: a converged seed
//! costs no Secret reads. Without a usable token the condition falls back to what
//! gardener-resource-manager reports about the installer DaemonSet.
//!
//! Nodes are data a shoot owner controls, so what is read is bounded: metadata only, in
//! pages of [`NODE_PAGE`], at most [`MAX_NODES`] per pool, and each node's state annotation
//! cut on read (reason to a short identifier, message to [`MESSAGE_MAX`] bytes) before it is
//! kept; condition messages are bounded in [`crate::conditions`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::KubeConfigOptions;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use sandbox_api::ContainerRuntime;
use sandbox_runtime::actuator::actuator;
use sandbox_runtime::node_plan::{NodeReport, state_annotation};
use sandbox_runtime::osc::InstallationMode;
use serde_json::json;
use tracing::{debug, warn};

use crate::conditions::{self, ComponentState, Input, NodeState};
use crate::context::Context;
use crate::contract;
use crate::event_filter::Guarded;

const SHOOT_TIMEOUT: Duration = Duration::from_secs(10);
/// Nodes per page of a pool's node list (metadata only: a page holds at most this many
/// nodes' annotations, each at most 256 KiB).
pub const NODE_PAGE: u32 = 20;
/// Nodes of one pool the health check reads at most; a larger pool is reported as such.
pub const MAX_NODES: usize = 5000;
/// A node agent's reported message is cut to this many bytes on read (what an honest agent
/// writes at most).
pub const MESSAGE_MAX: usize = sandbox_runtime::node_plan::REPORT_MESSAGE_LIMIT;
/// A reported reason longer than this, or not an identifier, is replaced.
pub const REASON_MAX: usize = 64;
const CONCURRENCY: usize = 5;

/// A shoot client (or why there is none), and the Secret version it came from.
type Versioned = (String, Result<Client, String>);

/// Shoot clients by Secret, rebuilt when the Secret changes.
#[derive(Default)]
pub(crate) struct ShootClients(Mutex<HashMap<String, Versioned>>);

/// Runs the health checks every `ctx.config.health_sync_period` until dropped.
pub(crate) async fn run(ctx: Arc<Context>, store: Store<Guarded>) {
    let clients = &ctx.shoot_clients;
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
                let (ctx, clients) = (&ctx, clients);
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
    // Installation mode osc: the labels come from what the kubelets report, set here first.
    if !hibernated && ctx.config.installation_mode == InstallationMode::Osc {
        let labelled = match clients.get(ctx, &namespace, actuator.description()).await {
            Ok(client) => {
                crate::node_labels::label_pool(
                    &client,
                    cr,
                    actuator,
                    ctx.config.image_for(actuator),
                )
                .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = labelled {
            warn!(%namespace, name = %cr.name_any(), error = %e, "labelling the pool's nodes failed");
        }
    }
    let nodes = if hibernated {
        Ok(Vec::new())
    } else {
        pool_nodes(
            ctx,
            clients,
            cr,
            actuator.description(),
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
    runtime: &sandbox_runtime::actuator::Description,
    components: &[(String, String)],
) -> Result<Vec<NodeState>, String> {
    let namespace = cr.namespace().unwrap_or_default();
    let ready_label = runtime.node_ready_label;
    let client = clients.get(ctx, &namespace, runtime).await?;
    let selector = crate::node_labels::pool_selector(cr);
    let api = Api::<Node>::all(client);
    let mut params = ListParams::default().labels(&selector).limit(NODE_PAGE);
    let annotation = state_annotation(ready_label);
    let mut states = Vec::new();
    loop {
        let page = api
            .list_metadata(&params)
            .await
            .map_err(|e| format!("listing the pool's nodes in the shoot: {e}"))?;
        for node in &page.items {
            if states.len() == MAX_NODES {
                return Err(format!(
                    "pool has more than {MAX_NODES} nodes; the health check reads at most {MAX_NODES}"
                ));
            }
            states.push(node_state(node, ready_label, &annotation, components));
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    Ok(states)
}

/// What one node's agent reported, cut to bounded sizes.
fn node_state(
    node: &PartialObjectMeta<Node>,
    ready_label: &str,
    annotation: &str,
    components: &[(String, String)],
) -> NodeState {
    let report = |key: &str| -> Option<NodeReport> {
        node.annotations()
            .get(key)
            .and_then(|v| serde_json::from_str::<NodeReport>(v).ok())
    };
    let ready = node.labels().get(ready_label).is_some_and(|v| v == "true");
    let own = report(annotation);
    let version = own
        .as_ref()
        .and_then(|r| r.version.as_deref())
        .map(|v| cut_reason(v).to_string());
    let (reason, message) = cut_report(own.filter(|r| !r.ready));
    let components_not_ready = components
        .iter()
        .filter(|(_, label)| node.labels().get(label).is_none_or(|v| v != "true"))
        .map(|(name, label)| {
            let (reason, message) = cut_report(report(&state_annotation(label)));
            ComponentState {
                name: name.clone(),
                reason,
                message,
            }
        })
        .collect();
    NodeState {
        name: node.name_any(),
        ready,
        reason,
        message,
        components_not_ready,
        version,
    }
}

/// A report's reason and message, cut on read.
fn cut_report(report: Option<NodeReport>) -> (Option<String>, Option<String>) {
    let Some(report) = report else {
        return (None, None);
    };
    (
        report.reason.as_deref().map(|r| cut_reason(r).to_string()),
        report
            .message
            .as_deref()
            .map(|m| crate::conditions::cut(m, MESSAGE_MAX)),
    )
}

/// A reported reason as a short identifier (`ContainerdTooOld`); anything else becomes
/// `InvalidReason`.
fn cut_reason(reason: &str) -> &str {
    let identifier = !reason.is_empty()
        && reason.len() <= REASON_MAX
        && reason
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b));
    if identifier { reason } else { "InvalidReason" }
}

impl ShootClients {
    /// A client for the shoot of `namespace` with `runtime`'s node-reader token. Whether the
    /// Secret exists and its version come from the seed watch ([`crate::cache::Caches`]): the
    /// Secret itself is read only when its version differs from the one the cached client was
    /// built from, so a converged seed costs no Secret reads at all.
    pub(crate) async fn get(
        &self,
        ctx: &Context,
        namespace: &str,
        runtime: &sandbox_runtime::actuator::Description,
    ) -> Result<Client, String> {
        let name = runtime.shoot_access_secret();
        let key = format!("{namespace}/{name}");
        let version = ctx.caches.shoot_access(namespace, &name).ok_or_else(|| {
            format!("no shoot access: secret {name} does not exist in {namespace} yet")
        })?;
        if let Some((cached, client)) = self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&key)
            && *cached == version
        {
            return client.clone();
        }
        let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
            .get_opt(&name)
            .await
            .map_err(|e| format!("reading secret {namespace}/{name}: {e}"))?
            .ok_or_else(|| format!("secret {namespace}/{name} was deleted meanwhile"))?;
        // The version read now (the watch may lag by an event): the next round compares it.
        // An unusable Secret is remembered too: it is read again only once it changed.
        let version = secret.resource_version().unwrap_or_default();
        let server = crate::shoot_access::server(&ctx.config.shoot_api_server, namespace);
        let client = shoot_client(&secret, &server).await;
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, (version, client.clone()));
        client
    }
}

/// A client with the node-reader token in `secret`, for `server`.
async fn shoot_client(secret: &Secret, server: &str) -> Result<Client, String> {
    let name = secret.name_any();
    let kubeconfig = crate::shoot_access::kubeconfig(secret, server)?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| format!("secret {name}: {e}"))?;
    config.connect_timeout = Some(SHOOT_TIMEOUT);
    config.read_timeout = Some(SHOOT_TIMEOUT);
    Client::try_from(config).map_err(|e| format!("shoot client: {e}"))
}
