//! The reconcile loop: watch ContainerRuntimes, filter events as gardenlet expects, and run
//! the contract's algorithm for each object that passes.

use std::collections::HashMap;
use std::future::{Future, ready};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Config as RuntimeConfig, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use sandbox_api::{Cluster, ContainerRuntime, LastOperationType};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use crate::contract::{self, FINALIZER, OP_RECONCILE, OP_WAIT_FOR_STATE, OPERATION_ANNOTATION};
use crate::gvisor::Actuator;
use crate::operations::Readiness;
use crate::{Error, Result, kube_err};

type Guarded = DeserializeGuard<ContainerRuntime>;

/// How the controller behaves; the fields mirror the Go extensions' flags.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Extension classes served (`--extension-classes`); default `shoot`.
    pub extension_classes: Vec<String>,
    /// Reconcile on generation changes instead of operation annotations.
    pub ignore_operation_annotation: bool,
    /// `--max-concurrent-reconciles`.
    pub max_concurrent_reconciles: u16,
    /// How long deletion waits for ManagedResources to go.
    pub delete_timeout: Duration,
    /// The node-agent image reference.
    pub image: String,
    /// Name under which Events are reported.
    pub reporter: String,
    /// First retry delay after an error; doubles per failure up to `max_backoff`.
    pub base_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            extension_classes: vec![contract::DEFAULT_CLASS.to_string()],
            ignore_operation_annotation: false,
            max_concurrent_reconciles: 5,
            delete_timeout: Duration::from_secs(120),
            image: String::new(),
            reporter: "gardener-extension-runtime-sandbox".to_string(),
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// Per-operation counters the metrics endpoint exposes.
pub trait Observer: Send + Sync + 'static {
    /// One reconcile of `operation` ended after `elapsed`, with `error` (a label) if it failed.
    fn reconciled(&self, operation: &'static str, elapsed: Duration, error: Option<&'static str>);
}

/// An observer that records nothing.
pub struct NoObserver;
impl Observer for NoObserver {
    fn reconciled(&self, _: &'static str, _: Duration, _: Option<&'static str>) {}
}

struct Context {
    client: Client,
    config: ControllerConfig,
    actuator: Actuator,
    recorder: Recorder,
    failures: Mutex<HashMap<ObjectRef<Guarded>, u32>>,
    observer: Arc<dyn Observer>,
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
        config: config.clone(),
        readiness,
    };
    let trigger = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .filter_map(move |event| ready(filter.pass(event)));
    let mut controller = Controller::for_stream(trigger, reader.clone())
        .with_config(RuntimeConfig::default().concurrency(config.max_concurrent_reconciles))
        .graceful_shutdown_on(shutdown);
    if config.ignore_operation_annotation {
        // Cluster changes (e.g. a new Kubernetes version) then count too.
        let store = reader.clone();
        controller = controller.watches(
            Api::<Cluster>::all(client.clone()),
            watcher::Config::default(),
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
    let context = Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: config.reporter.clone(),
                instance: None,
            },
        ),
        actuator: Actuator {
            image: config.image.clone(),
            delete_timeout: config.delete_timeout,
        },
        client,
        config,
        failures: Mutex::new(HashMap::new()),
        observer,
    });
    controller
        .run(reconcile, error_policy, context)
        .for_each(|result| {
            if let Err(e) = result {
                debug!(error = %e, "reconcile ended with an error");
            }
            ready(())
        })
        .await;
}

/// Gardener's event filters, with the last seen version of each object to tell creates
/// (first sight, including the initial list) from updates.
struct EventFilter {
    seen: HashMap<(String, String), Guarded>,
    config: ControllerConfig,
    readiness: Readiness,
}

impl EventFilter {
    fn pass(
        &mut self,
        event: Result<watcher::Event<Guarded>, watcher::Error>,
    ) -> Option<Result<Guarded, watcher::Error>> {
        let object = match event {
            Err(e) => {
                warn!(error = %e, "watch error; the watch restarts with backoff");
                return None;
            }
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => o,
            Ok(watcher::Event::Delete(o)) => {
                self.seen.remove(&key(&o));
                return None;
            }
            Ok(watcher::Event::InitDone) => {
                self.readiness.set_ready();
                return None;
            }
            Ok(watcher::Event::Init) => return None,
        };
        let old = self.seen.insert(key(&object), object.clone());
        let new = match &object.0 {
            Ok(cr) => cr,
            Err(invalid) => {
                // Malformed objects get a log line (once per generation); the watch goes on.
                let changed = old
                    .as_ref()
                    .is_none_or(|o| o.meta().generation != object.meta().generation);
                if changed {
                    warn!(
                        namespace = invalid.metadata.namespace.as_deref().unwrap_or_default(),
                        name = invalid.metadata.name.as_deref().unwrap_or_default(),
                        error = %invalid.error,
                        "ignoring a ContainerRuntime that does not decode"
                    );
                }
                return None;
            }
        };
        if new.spec.type_ != sandbox_runtime::gvisor::RUNTIME_TYPE
            || !contract::class_matches(new, &self.config.extension_classes)
        {
            return None;
        }
        let passes = match old.as_ref().map(|o| &o.0) {
            Some(Ok(old)) if self.config.ignore_operation_annotation => {
                contract::generation_changed(old, new)
            }
            Some(Ok(old)) => contract::update_passes(old, new),
            _ if self.config.ignore_operation_annotation => true,
            _ => contract::create_passes(new),
        };
        passes.then_some(Ok(object))
    }
}

fn key(o: &Guarded) -> (String, String) {
    (
        o.meta().namespace.clone().unwrap_or_default(),
        o.meta().name.clone().unwrap_or_default(),
    )
}

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

async fn reconcile(object: Arc<Guarded>, ctx: Arc<Context>) -> Result<Action> {
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
        ctx.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ObjectRef::from_obj(&*object));
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

/// The contract's algorithm for one object.
async fn reconcile_object(mut cr: ContainerRuntime, ctx: &Context) -> Result<Action> {
    let namespace = cr.namespace().unwrap_or_default();
    let name = cr.name_any();
    let api = Api::<ContainerRuntime>::namespaced(ctx.client.clone(), &namespace);

    // A trigger queued while an earlier run was busy (e.g. by our own finalizer patch while
    // `restore` was still set) may be stale by now: check the rule against the current object,
    // so that finished work is not redone.
    if !ctx.config.ignore_operation_annotation && !contract::create_passes(&cr) {
        debug!(%namespace, %name, "nothing to do any more");
        return Ok(Action::await_change());
    }

    match contract::operation_annotation(&cr) {
        Some(OP_WAIT_FOR_STATE) => return Ok(Action::await_change()),
        Some(OP_RECONCILE) => {
            cr = patch(
                &api,
                &name,
                json!({"metadata": {"annotations": {OPERATION_ANNOTATION: null}}}),
                "removing the reconcile annotation",
            )
            .await?;
        }
        _ => {}
    }

    let cluster = Api::<Cluster>::all(ctx.client.clone())
        .get_opt(&namespace)
        .await
        .map_err(kube_err(format!("reading cluster {namespace}")))?
        .ok_or_else(|| Error::Cluster {
            name: namespace.clone(),
            message: "not found".into(),
        })?;
    let shoot = cluster.shoot().map_err(|e| Error::Cluster {
        name: namespace.clone(),
        message: format!("cannot decode spec.shoot: {e}"),
    })?;
    if shoot.has_failed() {
        info!(%namespace, %name, "skipping the ContainerRuntime of a failed shoot");
        return Ok(Action::await_change());
    }

    let op = contract::operation_type(&cr);
    if contract::skip_migrated(&cr, op) {
        debug!(%namespace, %name, "skipping a migrated ContainerRuntime");
        return Ok(Action::await_change());
    }
    info!(%namespace, %name, operation = operation_label(op), "reconciling");

    match op {
        LastOperationType::Migrate => {
            let (cr, ()) =
                operate(ctx, &api, &cr, op, ctx.actuator.migrate(&ctx.client, &cr)).await?;
            let cr = patch(
                &api,
                &name,
                json!({"metadata": {"finalizers": null, "resourceVersion": cr.metadata.resource_version}}),
                "removing finalizers",
            )
            .await?;
            remove_operation_annotation(&api, &cr).await?;
        }
        _ if cr.metadata.deletion_timestamp.is_some() => {
            if !cr.finalizers().iter().any(|f| f == FINALIZER) {
                return Ok(Action::await_change());
            }
            // Force deletion and hibernated shoots: nobody would remove the shoot objects.
            let wait = !shoot.force_deletion() && !shoot.is_hibernated();
            // gVisor removed from a pool that stays: its nodes are cleaned first.
            let cleanup = sandbox_runtime::gvisor::node_cleanup(&shoot, &cr.spec.worker_pool.name);
            let delete = ctx.actuator.delete(&ctx.client, &cr, wait, cleanup);
            let (cr, ()) = operate(ctx, &api, &cr, LastOperationType::Delete, delete).await?;
            let finalizers: Vec<&String> =
                cr.finalizers().iter().filter(|f| *f != FINALIZER).collect();
            patch(
                &api,
                &name,
                json!({"metadata": {"finalizers": finalizers, "resourceVersion": cr.metadata.resource_version}}),
                "removing the finalizer",
            )
            .await?;
        }
        _ => {
            if !cr.finalizers().iter().any(|f| f == FINALIZER) {
                let mut finalizers = cr.finalizers().to_vec();
                finalizers.push(FINALIZER.to_string());
                cr = patch(
                    &api,
                    &name,
                    json!({"metadata": {"finalizers": finalizers, "resourceVersion": cr.metadata.resource_version}}),
                    "adding the finalizer",
                )
                .await?;
            }
            let (cr, outcome) =
                operate(ctx, &api, &cr, op, ctx.actuator.reconcile(&ctx.client, &cr)).await?;
            if !outcome.ignored_flags.is_empty() {
                publish(
                    ctx,
                    &cr,
                    EventType::Warning,
                    "UnknownFlags",
                    format!(
                        "providerConfig.configFlags {} are not supported and were ignored; supported: debug, net-raw, nvproxy, panic-signal, platform",
                        outcome.ignored_flags.join(", ")
                    ),
                )
                .await;
            }
            if op == LastOperationType::Restore {
                remove_operation_annotation(&api, &cr).await?;
            }
        }
    }
    Ok(Action::await_change())
}

/// One operation as the contract frames it: Processing, the work, then Succeeded, or Error
/// (with an Event) when the work fails. Returns the object as last written.
async fn operate<T>(
    ctx: &Context,
    api: &Api<ContainerRuntime>,
    cr: &ContainerRuntime,
    op: LastOperationType,
    work: impl Future<Output = Result<T>>,
) -> Result<(ContainerRuntime, T)> {
    let cr = status(api, cr, contract::processing_patch(op, Timestamp::now())).await?;
    let value = match work.await {
        Ok(value) => value,
        Err(e) => return Err(fail(ctx, api, &cr, op, e).await),
    };
    let generation = cr.metadata.generation;
    let cr = status(
        api,
        &cr,
        contract::succeeded_patch(op, generation, Timestamp::now()),
    )
    .await?;
    Ok((cr, value))
}

/// Writes the Error status and an Event; returns the error for the backoff.
async fn fail(
    ctx: &Context,
    api: &Api<ContainerRuntime>,
    cr: &ContainerRuntime,
    op: LastOperationType,
    error: Error,
) -> Error {
    let patch = contract::error_patch(
        op,
        &error.to_string(),
        &error.codes(),
        cr.metadata.generation,
        Timestamp::now(),
    );
    if let Err(e) = status(api, cr, patch).await {
        warn!(error = %e, "could not write the Error status");
    }
    publish(
        ctx,
        cr,
        EventType::Warning,
        "ReconcileError",
        error.to_string(),
    )
    .await;
    error
}

async fn publish(
    ctx: &Context,
    cr: &ContainerRuntime,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &cr.object_ref(&())).await {
        debug!(error = %e, "could not publish an Event");
    }
}

async fn remove_operation_annotation(
    api: &Api<ContainerRuntime>,
    cr: &ContainerRuntime,
) -> Result<()> {
    if contract::operation_annotation(cr).is_some() {
        patch(
            api,
            &cr.name_any(),
            json!({"metadata": {"annotations": {OPERATION_ANNOTATION: null}}}),
            "removing the operation annotation",
        )
        .await?;
    }
    Ok(())
}

async fn patch(
    api: &Api<ContainerRuntime>,
    name: &str,
    patch: Value,
    action: &str,
) -> Result<ContainerRuntime> {
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(kube_err(action))
}

async fn status(
    api: &Api<ContainerRuntime>,
    cr: &ContainerRuntime,
    patch: Value,
) -> Result<ContainerRuntime> {
    api.patch_status(
        &cr.name_any(),
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await
    .map_err(kube_err("writing the status"))
}
