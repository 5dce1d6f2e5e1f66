//! The controller's wiring: a kube-runtime `Controller` over a filtered watch of
//! ContainerRuntimes (see [`crate::event_filter`]), running [`crate::reconcile`] with
//! exponential backoff on errors.

use std::collections::HashMap;
use std::future::{Future, ready};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Config as RuntimeConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use sandbox_api::ClusterShoot;
use sandbox_probes::Readiness;
use tracing::{debug, warn};

use crate::cache::Caches;
use crate::context::Context;
pub use crate::context::ControllerConfig;
use crate::event_filter::{EventFilter, Guarded};
use crate::metrics::Observer;
use crate::{Error, reconcile};

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
        .map(|a| a.description().origin())
        .collect();
    let shoot_access: Vec<String> = sandbox_runtime::actuator::ACTUATORS
        .iter()
        .map(|a| a.description().shoot_access_secret())
        .collect();
    let shoot_access: Vec<&str> = shoot_access.iter().map(String::as_str).collect();
    let context = Arc::new(Context {
        caches: Caches::start(&client, &origins, &shoot_access),
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
        shoot_clients: Default::default(),
    });
    // Reconciles read the caches, so they start once the caches hold their initial lists.
    // Waited for here, once: kube's Store::wait_until_ready wakes only the last of several
    // concurrent waiters (a oneshot receiver keeps one waker), and reconciles that waited
    // there themselves hung for good.
    context.caches.wait_until_ready().await;
    let health = tokio::spawn(crate::health_check::run(context.clone(), reader.clone()));
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
