//! The Gardener extension contract's pure rules: which events count, which step a reconcile
//! takes ([`plan`], decided once per reconcile), and what status to write. See the shared
//! contract document; every rule here is tested against a real API server in `tests/`.

use k8s_openapi::jiff::Timestamp;
use sandbox_api::{
    ContainerRuntime, ExtensionStatus, LastOperationState, LastOperationType, Shoot,
};
use sandbox_runtime::actuator::{Actuator, NodeCleanup, pool_left_without};
use serde_json::{Value, json};

pub use sandbox_api::{OPERATION_ANNOTATION, TIMESTAMP_ANNOTATION};
/// Finalizer the extension puts on ContainerRuntime objects.
pub const FINALIZER: &str = "extensions.gardener.cloud/containerruntime";
/// Operation annotation values.
pub const OP_RECONCILE: &str = "reconcile";
pub const OP_MIGRATE: &str = "migrate";
pub const OP_RESTORE: &str = "restore";
pub const OP_WAIT_FOR_STATE: &str = "wait-for-state";
/// The class an object without `spec.class` belongs to.
pub const DEFAULT_CLASS: &str = "shoot";
/// Error code for configuration the user must fix.
pub const ERR_CONFIGURATION_PROBLEM: &str = "ERR_CONFIGURATION_PROBLEM";

/// The operation annotation, if any.
pub fn operation_annotation(cr: &ContainerRuntime) -> Option<&str> {
    cr.metadata
        .annotations
        .as_ref()?
        .get(OPERATION_ANNOTATION)
        .map(String::as_str)
}

/// Whether this controller serves the object's class: a missing class means `shoot`,
/// an empty string is a class of its own (matches nothing we serve unless configured).
pub fn class_matches(cr: &ContainerRuntime, classes: &[String]) -> bool {
    let class = cr.spec.class.as_deref().unwrap_or(DEFAULT_CLASS);
    classes.iter().any(|c| c == class)
}

fn last_operation_succeeded(status: Option<&ExtensionStatus>) -> bool {
    status
        .and_then(|s| s.last_operation.as_ref())
        .is_some_and(|op| op.state == LastOperationState::Succeeded)
}

/// Whether a newly seen object should be reconciled (default mode).
pub fn create_passes(cr: &ContainerRuntime) -> bool {
    matches!(
        operation_annotation(cr),
        Some(OP_RECONCILE | OP_RESTORE | OP_MIGRATE)
    ) || cr.metadata.deletion_timestamp.is_some()
        || !last_operation_succeeded(cr.status.as_ref())
}

/// Whether a change of a known object should be reconciled (default mode): an operation
/// annotation that gardenlet set or renewed (its timestamp changes with it) or that came with a
/// new generation, or a deletion. The status writes of a reconcile that has not consumed the
/// request yet are not a new request.
pub fn update_passes(old: &ContainerRuntime, new: &ContainerRuntime) -> bool {
    (operation_annotation(new).is_some()
        && (old.metadata.annotations != new.metadata.annotations
            || old.metadata.generation != new.metadata.generation))
        || (new.metadata.deletion_timestamp.is_some() && old.status == new.status)
}

/// Whether a change should be reconciled with `--ignore-operation-annotation=true`.
pub fn generation_changed(old: &ContainerRuntime, new: &ContainerRuntime) -> bool {
    old.metadata.generation != new.metadata.generation
        || (new.metadata.deletion_timestamp.is_some() && old.metadata.deletion_timestamp.is_none())
}

/// The operation to perform; the first rule that matches wins.
pub fn operation_type(cr: &ContainerRuntime) -> LastOperationType {
    let last = cr.status.as_ref().and_then(|s| s.last_operation.as_ref());
    match operation_annotation(cr) {
        Some(OP_MIGRATE) => return LastOperationType::Migrate,
        _ if cr.metadata.deletion_timestamp.is_some() => return LastOperationType::Delete,
        Some(OP_RESTORE) => return LastOperationType::Restore,
        _ => {}
    }
    match last {
        None => LastOperationType::Create,
        Some(op)
            if matches!(
                op.type_,
                LastOperationType::Create | LastOperationType::Migrate | LastOperationType::Restore
            ) && op.state != LastOperationState::Succeeded =>
        {
            op.type_
        }
        Some(_) => LastOperationType::Reconcile,
    }
}

/// A migrated object is left alone unless it is migrated again or restored.
pub fn skip_migrated(cr: &ContainerRuntime, op: LastOperationType) -> bool {
    let migrated = cr
        .status
        .as_ref()
        .and_then(|s| s.last_operation.as_ref())
        .is_some_and(|l| {
            l.type_ == LastOperationType::Migrate && l.state == LastOperationState::Succeeded
        });
    migrated && !matches!(op, LastOperationType::Migrate | LastOperationType::Restore)
}

/// What one reconcile does, decided once from the object and the shoot before any write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Remove gardenlet's `reconcile` annotation before working (it asked once).
    pub remove_reconcile_annotation: bool,
    pub step: Step,
}

/// The contract's branches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do.
    Skip(Skip),
    /// Create or reconcile (`op` is `Create` or `Reconcile`): finalizer, ManagedResources.
    Reconcile { op: LastOperationType },
    /// As a reconcile, then the `restore` annotation goes.
    Restore,
    /// Delete the ManagedResources. `wait` for gardener-resource-manager to remove them (not
    /// on force deletion or for a hibernated shoot, where nobody would); with `clean_nodes`,
    /// uninstall the runtime from the pool's nodes first.
    Delete { wait: bool, clean_nodes: bool },
    /// Keep the shoot's objects, remove the ManagedResources and every finalizer.
    Migrate,
}

/// Why a reconcile does nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// gardenlet annotated `wait-for-state`.
    WaitForState,
    /// The shoot's last operation failed: no status write until it is retried.
    ShootFailed,
    /// Migrated away; only a new migrate or a restore touches it again.
    Migrated,
    /// Being deleted without our finalizer: nothing of ours is left.
    NotOurs,
}

impl Step {
    /// The operation type the status reports for this step.
    pub fn operation(self) -> Option<LastOperationType> {
        match self {
            Step::Skip(_) => None,
            Step::Reconcile { op } => Some(op),
            Step::Restore => Some(LastOperationType::Restore),
            Step::Delete { .. } => Some(LastOperationType::Delete),
            Step::Migrate => Some(LastOperationType::Migrate),
        }
    }
}

/// Whether our finalizer is on the object.
pub fn has_finalizer(cr: &ContainerRuntime) -> bool {
    cr.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == FINALIZER))
}

/// Decides the reconcile of `cr`, given the shoot from its Cluster and its runtime's actuator
/// (which says whether the pool's nodes need cleaning when the object goes).
pub fn plan(cr: &ContainerRuntime, shoot: &Shoot, actuator: &dyn Actuator) -> Plan {
    let annotation = operation_annotation(cr);
    if annotation == Some(OP_WAIT_FOR_STATE) {
        return Plan {
            remove_reconcile_annotation: false,
            step: Step::Skip(Skip::WaitForState),
        };
    }
    let op = operation_type(cr);
    let step = if shoot.has_failed() {
        Step::Skip(Skip::ShootFailed)
    } else if skip_migrated(cr, op) {
        Step::Skip(Skip::Migrated)
    } else {
        match op {
            LastOperationType::Migrate => Step::Migrate,
            _ if cr.metadata.deletion_timestamp.is_some() => {
                if !has_finalizer(cr) {
                    Step::Skip(Skip::NotOurs)
                } else {
                    let wait = !shoot.force_deletion() && !shoot.is_hibernated();
                    let pool = &cr.spec.worker_pool.name;
                    Step::Delete {
                        wait,
                        clean_nodes: wait
                            && pool_left_without(shoot, pool, actuator.description().runtime_type)
                                == NodeCleanup::Required,
                    }
                }
            }
            LastOperationType::Restore => Step::Restore,
            op => Step::Reconcile { op },
        }
    };
    Plan {
        remove_reconcile_annotation: annotation == Some(OP_RECONCILE),
        step,
    }
}

/// When the current attempt of `op` started, if the object is in the middle of one (its last
/// status is `op`, Processing): a reconcile that requeues while it waits continues the same
/// attempt and measures its time bound from here.
pub fn in_progress_since(cr: &ContainerRuntime, op: LastOperationType) -> Option<Timestamp> {
    let last = cr.status.as_ref()?.last_operation.as_ref()?;
    (last.type_ == op && last.state == LastOperationState::Processing)
        .then_some(last.last_update_time.0)
}

/// The time a status write records: now, or gardenlet's request timestamp when that is later.
/// gardenlet waits until `lastUpdateTime` is not before its `gardener.cloud/timestamp`
/// (truncated to seconds); a controller whose clock runs behind gardenlet's would otherwise write
/// a success that gardenlet never accepts, and the shoot's reconcile would time out. An
/// annotation that does not parse is ignored (it is gardenlet's to write, not ours to judge).
pub fn status_time(cr: &ContainerRuntime, now: Timestamp) -> Timestamp {
    cr.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TIMESTAMP_ANNOTATION))
        .and_then(|ts| ts.parse::<Timestamp>().ok())
        .map_or(now, |requested| requested.max(now))
}

/// `(processing, error prefix, success)` descriptions, exactly as the Go extensions write them.
pub fn descriptions(op: LastOperationType) -> (&'static str, &'static str, &'static str) {
    match op {
        LastOperationType::Restore => (
            "Restoring the ContainerRuntime",
            "Error restoring ContainerRuntime",
            "Successfully restored ContainerRuntime",
        ),
        LastOperationType::Delete => (
            "Deleting the ContainerRuntime",
            "Error deleting ContainerRuntime",
            "Successfully deleted ContainerRuntime",
        ),
        LastOperationType::Migrate => (
            "Migrating the ContainerRuntime",
            "Error migrating ContainerRuntime",
            "Successfully migrated ContainerRuntime",
        ),
        _ => (
            "Reconciling the ContainerRuntime",
            "Error reconciling ContainerRuntime",
            "Successfully reconciled ContainerRuntime",
        ),
    }
}

fn rfc3339(now: Timestamp) -> String {
    // Gardener's metav1.Time has second precision.
    now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn op_type_str(op: LastOperationType) -> Value {
    serde_json::to_value(op).unwrap_or(Value::Null)
}

/// Status merge patch: the operation started (lastError and observedGeneration untouched).
pub fn processing_patch(op: LastOperationType, now: Timestamp) -> Value {
    json!({"status": {"lastOperation": {
        "type": op_type_str(op), "state": "Processing", "progress": 1,
        "description": descriptions(op).0, "lastUpdateTime": rfc3339(now),
    }}})
}

/// Status merge patch: the operation failed with `err`.
pub fn error_patch(
    op: LastOperationType,
    err: &str,
    codes: &[&str],
    generation: Option<i64>,
    now: Timestamp,
) -> Value {
    let description = format!("{}: {err}", descriptions(op).1);
    let mut last_error = json!({"description": description, "lastUpdateTime": rfc3339(now)});
    if !codes.is_empty() {
        last_error["codes"] = json!(codes);
    }
    json!({"status": {
        "lastOperation": {"type": op_type_str(op), "state": "Error", "progress": 50,
                          "description": description, "lastUpdateTime": rfc3339(now)},
        "lastError": last_error,
        "observedGeneration": generation,
    }})
}

/// Status merge patch: the operation succeeded.
pub fn succeeded_patch(op: LastOperationType, generation: Option<i64>, now: Timestamp) -> Value {
    json!({"status": {
        "lastOperation": {"type": op_type_str(op), "state": "Succeeded", "progress": 100,
                          "description": descriptions(op).2, "lastUpdateTime": rfc3339(now)},
        "lastError": null,
        "observedGeneration": generation,
    }})
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandbox_api::{ContainerRuntimeSpec, LastOperation, WorkerPool};

    fn cr(
        annotation: Option<&str>,
        last: Option<(LastOperationType, LastOperationState)>,
    ) -> ContainerRuntime {
        let mut cr = ContainerRuntime::new(
            "gvisor-a",
            ContainerRuntimeSpec {
                type_: "gvisor".into(),
                class: None,
                provider_config: None,
                binary_path: "/var/bin/containerruntimes".into(),
                worker_pool: WorkerPool::default(),
            },
        );
        if let Some(a) = annotation {
            cr.metadata.annotations =
                Some([(OPERATION_ANNOTATION.to_string(), a.to_string())].into());
        }
        cr.status = last.map(|(type_, state)| ExtensionStatus {
            last_operation: Some(LastOperation {
                description: String::new(),
                last_update_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    Timestamp::UNIX_EPOCH,
                ),
                progress: 0,
                state,
                type_,
            }),
            ..ExtensionStatus::default()
        });
        cr
    }

    #[test]
    fn operation_type_first_match_wins() {
        use LastOperationState::*;
        use LastOperationType::*;
        assert_eq!(operation_type(&cr(None, None)), Create);
        assert_eq!(
            operation_type(&cr(Some("migrate"), Some((Reconcile, Succeeded)))),
            Migrate
        );
        let mut deleting = cr(Some("restore"), None);
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH),
        );
        assert_eq!(operation_type(&deleting), Delete);
        let mut migrating_and_deleting = deleting.clone();
        migrating_and_deleting.metadata.annotations =
            Some([(OPERATION_ANNOTATION.to_string(), "migrate".to_string())].into());
        assert_eq!(
            operation_type(&migrating_and_deleting),
            Migrate,
            "migrate beats deletion"
        );
        assert_eq!(
            operation_type(&cr(Some("restore"), Some((Reconcile, Succeeded)))),
            Restore
        );
        assert_eq!(operation_type(&cr(None, Some((Create, Error)))), Create);
        assert_eq!(
            operation_type(&cr(None, Some((Restore, Processing)))),
            Restore
        );
        assert_eq!(
            operation_type(&cr(None, Some((Create, Succeeded)))),
            Reconcile
        );
        assert_eq!(operation_type(&cr(None, Some((Delete, Error)))), Reconcile);
    }

    fn shoot(patch: Value) -> Shoot {
        let mut value = json!({"metadata": {"name": "s"}, "spec": {"provider": {"workers": [
            {"name": "a", "cri": {"name": "containerd", "containerRuntimes": [{"type": "gvisor"}]}},
            {"name": "b", "cri": {"name": "containerd"}},
        ]}}, "status": {"lastOperation": {"type": "Reconcile", "state": "Succeeded"}}});
        for (k, v) in patch.as_object().unwrap() {
            value[k.as_str()] = v.clone();
        }
        serde_json::from_value(value).unwrap()
    }

    fn deleting(pool: &str) -> ContainerRuntime {
        let mut c = cr(
            None,
            Some((LastOperationType::Reconcile, LastOperationState::Succeeded)),
        );
        c.spec.worker_pool.name = pool.into();
        c.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::UNIX_EPOCH,
        ));
        c.metadata.finalizers = Some(vec![FINALIZER.into()]);
        c
    }

    #[test]
    fn plan_decides_each_branch_once() {
        use LastOperationState::*;
        use LastOperationType::*;
        let gvisor = sandbox_runtime::actuator::actuator("gvisor").unwrap();
        let s = shoot(json!({}));
        let step = |c: &ContainerRuntime, s: &Shoot| plan(c, s, gvisor).step;

        assert_eq!(step(&cr(None, None), &s), Step::Reconcile { op: Create });
        let p = plan(
            &cr(Some("reconcile"), Some((Reconcile, Succeeded))),
            &s,
            gvisor,
        );
        assert!(p.remove_reconcile_annotation);
        assert_eq!(p.step, Step::Reconcile { op: Reconcile });
        assert_eq!(
            plan(&cr(Some("wait-for-state"), None), &s, gvisor),
            Plan {
                remove_reconcile_annotation: false,
                step: Step::Skip(Skip::WaitForState)
            }
        );
        assert_eq!(step(&cr(Some("restore"), None), &s), Step::Restore);
        assert_eq!(step(&cr(Some("migrate"), None), &s), Step::Migrate);
        assert_eq!(
            step(&cr(None, Some((Migrate, Succeeded))), &s),
            Step::Skip(Skip::Migrated)
        );
        let failed =
            shoot(json!({"status": {"lastOperation": {"type": "Reconcile", "state": "Failed"}}}));
        let p = plan(&cr(Some("reconcile"), None), &failed, gvisor);
        assert_eq!(p.step, Step::Skip(Skip::ShootFailed));
        assert!(p.remove_reconcile_annotation, "the request is consumed");

        // Deletion: the pool that stays without gVisor is cleaned; a removed pool is not.
        assert_eq!(
            step(&deleting("b"), &s),
            Step::Delete {
                wait: true,
                clean_nodes: true
            }
        );
        assert_eq!(
            step(&deleting("gone"), &s),
            Step::Delete {
                wait: true,
                clean_nodes: false
            }
        );
        let forced = shoot(json!({"metadata": {"name": "s", "annotations": {
            "confirmation.gardener.cloud/force-deletion": "true"}}}));
        assert_eq!(
            step(&deleting("b"), &forced),
            Step::Delete {
                wait: false,
                clean_nodes: false
            }
        );
        let mut not_ours = deleting("b");
        not_ours.metadata.finalizers = None;
        assert_eq!(step(&not_ours, &s), Step::Skip(Skip::NotOurs));
        let mut migrating = deleting("b");
        migrating.metadata.annotations =
            Some([(OPERATION_ANNOTATION.to_string(), "migrate".to_string())].into());
        assert_eq!(
            step(&migrating, &s),
            Step::Migrate,
            "migrate beats deletion"
        );
    }

    #[test]
    fn an_attempt_in_progress_is_continued() {
        use LastOperationState::*;
        use LastOperationType::*;
        assert_eq!(
            in_progress_since(&cr(None, Some((Delete, Processing))), Delete),
            Some(Timestamp::UNIX_EPOCH)
        );
        assert_eq!(
            in_progress_since(&cr(None, Some((Delete, Error))), Delete),
            None
        );
        assert_eq!(
            in_progress_since(&cr(None, Some((Create, Processing))), Delete),
            None
        );
        assert_eq!(in_progress_since(&cr(None, None), Delete), None);
    }

    #[test]
    fn migrated_objects_are_skipped_unless_migrated_or_restored() {
        use LastOperationState::*;
        use LastOperationType::*;
        let migrated = cr(None, Some((Migrate, Succeeded)));
        assert!(skip_migrated(&migrated, Reconcile));
        assert!(skip_migrated(&migrated, Delete));
        assert!(!skip_migrated(&migrated, Restore));
        assert!(!skip_migrated(&migrated, Migrate));
    }

    #[test]
    fn class_filter() {
        let classes = vec!["shoot".to_string()];
        let mut c = cr(None, None);
        assert!(class_matches(&c, &classes));
        c.spec.class = Some(String::new());
        assert!(
            !class_matches(&c, &classes),
            "an empty class is not the default class"
        );
        c.spec.class = Some("seed".into());
        assert!(!class_matches(&c, &classes));
    }

    #[test]
    fn event_filters() {
        use LastOperationState::*;
        use LastOperationType::*;
        assert!(create_passes(&cr(None, None)));
        assert!(create_passes(&cr(
            Some("reconcile"),
            Some((Reconcile, Succeeded))
        )));
        assert!(!create_passes(&cr(
            Some("wait-for-state"),
            Some((Reconcile, Succeeded))
        )));
        assert!(!create_passes(&cr(None, Some((Reconcile, Succeeded)))));
        assert!(create_passes(&cr(None, Some((Reconcile, Error)))));
        let old = cr(None, Some((Reconcile, Succeeded)));
        assert!(update_passes(
            &old,
            &cr(Some("reconcile"), Some((Reconcile, Succeeded)))
        ));
        assert!(!update_passes(&old, &cr(None, Some((Reconcile, Error)))));
        // Our own Processing write while the request is still there is no new request; the
        // same annotation renewed (timestamp) or a new generation is.
        let requested = cr(Some("reconcile"), Some((Reconcile, Succeeded)));
        let processing = cr(Some("reconcile"), Some((Reconcile, Processing)));
        assert!(!update_passes(&requested, &processing));
        let mut renewed = requested.clone();
        kube::ResourceExt::annotations_mut(&mut renewed).insert(
            "gardener.cloud/timestamp".into(),
            "2026-11-23T00:06:59Z".into(),
        );
        assert!(update_passes(&requested, &renewed));
        let mut changed = requested.clone();
        changed.metadata.generation = Some(2);
        assert!(update_passes(&requested, &changed));
    }

    #[test]
    fn status_patches_carry_every_required_field() {
        let now: Timestamp = "2026-11-21T10:11:12.999Z".parse().unwrap();
        assert_eq!(
            processing_patch(LastOperationType::Create, now),
            json!({"status": {"lastOperation": {"type": "Create", "state": "Processing", "progress": 1,
                "description": "Reconciling the ContainerRuntime", "lastUpdateTime": "2026-11-21T10:11:12Z"}}})
        );
        let e = error_patch(
            LastOperationType::Delete,
            "boom",
            &[ERR_CONFIGURATION_PROBLEM],
            Some(3),
            now,
        );
        assert_eq!(
            e["status"]["lastOperation"]["description"],
            "Error deleting ContainerRuntime: boom"
        );
        assert_eq!(e["status"]["lastOperation"]["progress"], 50);
        assert_eq!(
            e["status"]["lastError"]["codes"],
            json!(["ERR_CONFIGURATION_PROBLEM"])
        );
        assert_eq!(e["status"]["observedGeneration"], 3);
        let s = succeeded_patch(LastOperationType::Migrate, Some(3), now);
        assert_eq!(
            s["status"]["lastOperation"]["description"],
            "Successfully migrated ContainerRuntime"
        );
        assert!(
            s["status"]["lastError"].is_null()
                && s["status"].as_object().unwrap().contains_key("lastError")
        );
    }

    #[test]
    fn status_time_is_never_before_gardenlets_request() {
        let now: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        let mut c = cr(Some("reconcile"), None);
        assert_eq!(status_time(&c, now), now, "no timestamp: now");
        let set = |c: &mut ContainerRuntime, ts: &str| {
            c.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(TIMESTAMP_ANNOTATION.into(), ts.into());
        };
        set(&mut c, "2026-12-03T10:05:00.123456789Z");
        assert_eq!(
            status_time(&c, now),
            "2026-12-03T10:05:00.123456789Z"
                .parse::<Timestamp>()
                .unwrap(),
            "our clock behind gardenlet's: the request's time"
        );
        set(&mut c, "2026-12-03T09:00:00Z");
        assert_eq!(status_time(&c, now), now, "our clock ahead: now");
        set(&mut c, "yesterday");
        assert_eq!(status_time(&c, now), now, "unparsable: now");
    }
}
