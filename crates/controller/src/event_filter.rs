//! Which watch events trigger a reconcile: Gardener's predicates (operation annotation,
//! deletion, last operation, or generation with `--ignore-operation-annotation`), for the
//! runtime types we serve and the classes configured.

use std::collections::HashMap;

use kube::Resource;
use kube::core::DeserializeGuard;
use kube::runtime::watcher;
use sandbox_api::ContainerRuntime;
use sandbox_probes::Readiness;
use sandbox_runtime::actuator::actuator;
use tracing::warn;

use crate::contract;

pub(crate) type Guarded = DeserializeGuard<ContainerRuntime>;

/// Gardener's event filters, with the last seen version of each object to tell creates
/// (first sight, including the initial list) from updates.
pub(crate) struct EventFilter {
    pub(crate) seen: HashMap<(String, String), Guarded>,
    pub(crate) extension_classes: Vec<String>,
    pub(crate) ignore_operation_annotation: bool,
    pub(crate) readiness: Readiness,
}

impl EventFilter {
    /// The object to reconcile, if `event` is a trigger.
    pub(crate) fn pass(
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
        if actuator(&new.spec.type_).is_none()
            || !contract::class_matches(new, &self.extension_classes)
        {
            return None;
        }
        let passes = match old.as_ref().map(|o| &o.0) {
            Some(Ok(old)) if self.ignore_operation_annotation => {
                contract::generation_changed(old, new)
            }
            Some(Ok(old)) => contract::update_passes(old, new),
            _ if self.ignore_operation_annotation => true,
            _ => contract::create_passes(new),
        };
        passes.then_some(Ok(object))
    }
}

pub(crate) fn key(o: &Guarded) -> (String, String) {
    (
        o.meta().namespace.clone().unwrap_or_default(),
        o.meta().name.clone().unwrap_or_default(),
    )
}
