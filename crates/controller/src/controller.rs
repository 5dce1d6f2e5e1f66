//! The controller's wiring: a kube-runtime `Controller` over a filtered watch of
//! ContainerRuntimes (see [`crate::event_filter`]), running [`crate::reconcile`] with
//! exponential backoff on errors.

use std::collections::HashMap;
use std::future::{Future, ready};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Config as RuntimeConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use sandbox_api::ClusterShoot;
use sandbox_health::Readiness;
use tracing::{debug, warn};

use crate::cache::Caches;
use crate::contract;
use crate::event_filter::{EventFilter, Guarded};
use crate::metrics::Observer;
use crate::{Error, reconcile};

/// How the controller behaves; the fields mirror the Go extensions' flags.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Extension classes served (`--extension-classes`); default `shoot`.
    pub extension_classes: Vec<String>,
    /// Reconcile on generation changes instead of operation annotations.
    pub ignore_operation_annotation: bool,
    /// `--max-concurrent-reconciles`.
    pub max_concurrent_reconciles: u16,
    /// How long deletion waits for ManagedResources to go (and the pool's nodes to be
    /// cleaned) before it reports an Error and retries.
    pub delete_timeout: Duration,
    /// How often a waiting deletion checks again (it requeues; no worker waits).
    pub wait_poll: Duration,
    /// The node-agent image reference (gVisor's, and any runtime's not in `images`).
    pub image: String,
    /// Image references by image-vector name, for runtimes with their own node-agent image
    /// (Kata's carries its payload).
    pub images: std::collections::BTreeMap<String, String>,
    /// Name under which Events are reported.
    pub reporter: String,
    /// First retry delay after an error; doubles per failure up to `max_backoff`.
    pub base_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// How often the health conditions are checked (`SystemComponentsHealthy`,
    /// `EveryNodeReady`; see [`crate::health`]).
    pub health_sync_period: Duration,
}

impl ControllerConfig {
    /// The node-agent image of `actuator`.
    pub fn image_for(&self, actuator: &dyn sandbox_runtime::actuator::Actuator) -> &str {
        self.images
            .get(actuator.image_name())
            .map_or(self.image.as_str(), String::as_str)
    }
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            extension_classes: vec![contract::DEFAULT_CLASS.to_string()],
            ignore_operation_annotation: false,
            max_concurrent_reconciles: 5,
            delete_timeout: Duration::from_secs(120),
            wait_poll: Duration::from_secs(2),
            image: String::new(),
            images: Default::default(),
            reporter: "gardener-extension-runtime-sandbox".to_string(),
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            health_sync_period: Duration::from_secs(30),
        }
    }
}

/// What every reconcile shares.
pub(crate) struct Context {
    pub(crate) client: Client,
    /// Clusters and our ManagedResources, from watches.
    pub(crate) caches: Caches,
    pub(crate) config: ControllerConfig,
    pub(crate) recorder: Recorder,
    failures: Mutex<HashMap<ObjectRef<Guarded>, u32>>,
    pub(crate) observer: Arc<dyn Observer>,
    /// Order between the writes to a shoot's ManagedResources across its pools.
    pub(crate) shared: crate::shared::SharedResources,
}

impl Context {
    /// A reconcile of `object` succeeded: its backoff starts over.
    pub(crate) fn succeeded(&self, object: &Guarded) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ObjectRef::from_obj(object));
    }
}

/// Runs the controller until `shutdown` completes.
pub async fn run(
    client: Client,
    config: ControllerConfig,
    observer: Arc<dyn Observer>,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let api = Api::<Guarded>::all(client.clone());
    let (reader, writer) = reflector::store();
    let mut filter = EventFilter {
        seen: HashMap::new(),
        extension_classes: config.extension_classes.clone(),
        ignore_operation_annotation: config.ignore_operation_annotation,
        readiness,
    };
    // Managed fields are never read and are most of an object's bytes: neither the store nor
    // the event filter keeps them.
    let trigger = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|cr: &mut Guarded| cr.meta_mut().managed_fields = None)
        .reflect(writer)
        .filter_map(move |event| ready(filter.pass(event)));
    let mut controller = Controller::for_stream(trigger, reader.clone())
        .with_config(RuntimeConfig::default().concurrency(config.max_concurrent_reconciles))
        .graceful_shutdown_on(shutdown);
    if config.ignore_operation_annotation {
        // Cluster changes (e.g. a new Kubernetes version) then count too.
        let store = reader.clone();
        controller = controller.watches(
            Api::<ClusterShoot>::all(client.clone()),
            crate::cache::cluster_watch(),
            move |cluster| {
                let namespace = cluster.name_any();
                store
                    .state()
                    .into_iter()
                    .filter(|cr| cr.meta().namespace.as_deref() == Some(namespace.as_str()))
                    .map(|cr| ObjectRef::from_obj(&*cr))
                    .collect::<Vec<_>>()
            },
        );
    }
    let origins: Vec<&str> = sandbox_runtime::actuator::ACTUATORS
        .iter()
        .map(|a| a.origin())
        .collect();
    let context = Arc::new(Context {
        caches: Caches::start(&client, &origins, &crate::health_loop::SHOOT_ACCESS_SECRETS),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: config.reporter.clone(),
                instance: None,
            },
        ),
        client,
        config,
        failures: Mutex::new(HashMap::new()),
        observer,
        shared: Default::default(),
    });
    // Reconciles read the caches, so they start once the caches hold their initial lists.
    // Waited for here, once: kube's Store::wait_until_ready wakes only the last of several
    // concurrent waiters (a oneshot receiver keeps one waker), and reconciles that waited
    // there themselves hung for good.
    context.caches.wait_until_ready().await;
    let health = tokio::spawn(crate::health_loop::run(context.clone(), reader.clone()));
    controller
        .run(reconcile::reconcile, error_policy, context)
        .for_each(|result| {
            if let Err(e) = result {
                debug!(error = %e, "reconcile ended with an error");
            }
            ready(())
        })
        .await;
    health.abort();
}

/// Exponential backoff per object: `base_backoff` doubled per failure, up to `max_backoff`.
fn error_policy(object: Arc<Guarded>, error: &Error, ctx: Arc<Context>) -> Action {
    let mut failures = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
    let count = failures.entry(ObjectRef::from_obj(&*object)).or_insert(0);
    *count = count.saturating_add(1);
    let delay = ctx
        .config
        .base_backoff
        .saturating_mul(2u32.saturating_pow(count.saturating_sub(1).min(20)))
        .min(ctx.config.max_backoff);
    warn!(
        namespace = object.meta().namespace.as_deref().unwrap_or_default(),
        name = object.meta().name.as_deref().unwrap_or_default(),
        error = %error,
        retry_in_seconds = delay.as_secs_f64(),
        "reconcile failed"
    );
    Action::requeue(delay)
}
