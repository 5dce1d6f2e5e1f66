//! The node's ready label (the plan's `readyLabel`): set only after containerd has loaded the
//! handlers, removed before an uninstall. The RuntimeClass selects it, so no sandboxed pod
//! lands on a node before its runtime works there. Next to it, the state annotation
//! ([`sandbox_runtime::node_plan::state_annotation`]) says why not, for the seed's health check.

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use sandbox_runtime::node_plan::{NodeReport, state_annotation};

/// Sets `label` on node `name` when `report` says ready (else removes it) and writes `report`
/// into the state annotation (removes it when `None`: an uninstall leaves nothing behind),
/// with one JSON merge patch, which leaves every other label and annotation alone and needs
/// only `nodes: get, patch`.
pub async fn set_ready_label(
    client: &kube::Client,
    name: &str,
    label: &str,
    report: Option<&NodeReport>,
) -> Result<(), kube::Error> {
    set_labels(client, name, &[(label, report)]).await
}

/// [`set_ready_label`] for several labels (a runtime with a label per handler) in one patch.
pub async fn set_labels(
    client: &kube::Client,
    name: &str,
    labels: &[(&str, Option<&NodeReport>)],
) -> Result<(), kube::Error> {
    let mut label_patch = serde_json::Map::new();
    let mut annotation_patch = serde_json::Map::new();
    for (label, report) in labels {
        let value = if report.is_some_and(|r| r.ready) {
            serde_json::Value::String("true".into())
        } else {
            serde_json::Value::Null
        };
        let state = match report {
            Some(report) => serde_json::Value::String(
                serde_json::to_string(report).unwrap_or_else(|_| r#"{"ready":false}"#.into()),
            ),
            None => serde_json::Value::Null,
        };
        label_patch.insert(label.to_string(), value);
        annotation_patch.insert(state_annotation(label), state);
    }
    let patch = serde_json::json!({"metadata": {
        "labels": label_patch,
        "annotations": annotation_patch,
    }});
    Api::<Node>::all(client.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}
