//! The node's ready label (the plan's `readyLabel`): set only after containerd has loaded the
//! handlers, removed before an uninstall. The RuntimeClass selects it, so no sandboxed pod
//! lands on a node before its runtime works there.

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};

/// Sets (`ready`) or removes `label` on node `name` with a JSON merge patch, which leaves
/// every other label alone and needs only `nodes: get, patch`.
pub async fn set_ready_label(
    client: &kube::Client,
    name: &str,
    label: &str,
    ready: bool,
) -> Result<(), kube::Error> {
    let value = if ready {
        serde_json::Value::String("true".into())
    } else {
        serde_json::Value::Null
    };
    let patch = serde_json::json!({"metadata": {"labels": {label: value}}});
    Api::<Node>::all(client.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}
