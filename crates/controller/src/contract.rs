//! The Gardener extension contract's pure rules. See the shared contract document; every
//! rule here is tested against a real API server in `tests/`.

use k8s_openapi::jiff::Timestamp;
use sandbox_api::{ContainerRuntime, ExtensionStatus, LastOperationState, LastOperationType};
use serde_json::{Value, json};

/// Annotation gardenlet uses to ask for an operation.
pub const OPERATION_ANNOTATION: &str = "gardener.cloud/operation";
/// Annotation gardenlet sets with each request, RFC3339.
pub const TIMESTAMP_ANNOTATION: &str = "gardener.cloud/timestamp";
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

/// Whether a change of a known object should be reconciled (default mode).
pub fn update_passes(old: &ContainerRuntime, new: &ContainerRuntime) -> bool {
    operation_annotation(new).is_some()
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
}
