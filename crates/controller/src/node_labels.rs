//! Installation mode `osc`: the controller, not a node agent, sets each node's ready labels,
//! from the handlers the node's kubelet reports (`status.runtimeHandlers`, which the kubelet
//! fills from containerd's CRI status: the handlers containerd has loaded). No pod with host
//! access runs on the node; the shoot token may patch nodes, and a ValidatingAdmissionPolicy
//! in the shoot narrows that to our ready labels and their state annotations
//! ([`sandbox_runtime::node_label_policy::labeller_policy`]). What a label means is
//! [`sandbox_runtime::osc::node_readiness`]'s to say; the labels and state annotations are the
//! node agent's, so the health check reads them the same way in both modes.
//!
//! Node objects are large and shoot-controlled: they are listed in pages of [`PAGE`],
//! decoded into the few fields needed, and at most [`crate::health_check::MAX_NODES`] per pool.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::Request;
use kube::{Client, ResourceExt};
use sandbox_api::ContainerRuntime;
use sandbox_runtime::actuator::Actuator;
use sandbox_runtime::node_plan::{NodeReport, state_annotation};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::info;

use crate::health_check::MAX_NODES;

/// Nodes per page (whole node objects, decoded into [`SlimNode`]).
pub const PAGE: u32 = 10;

#[derive(Deserialize)]
struct SlimList {
    #[serde(default)]
    metadata: SlimListMeta,
    #[serde(default)]
    items: Vec<SlimNode>,
}

#[derive(Default, Deserialize)]
struct SlimListMeta {
    #[serde(default, rename = "continue")]
    continue_: Option<String>,
}

#[derive(Deserialize)]
struct SlimNode {
    metadata: SlimMeta,
    #[serde(default)]
    status: SlimStatus,
}

#[derive(Deserialize)]
struct SlimMeta {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SlimStatus {
    #[serde(default)]
    runtime_handlers: Vec<SlimHandler>,
}

#[derive(Deserialize)]
struct SlimHandler {
    #[serde(default)]
    name: String,
}

/// The label selector of `cr`'s pool (`worker.gardener.cloud/pool=<pool>`).
pub(crate) fn pool_selector(cr: &ContainerRuntime) -> String {
    cr.spec
        .worker_pool
        .selector
        .match_labels
        .clone()
        .unwrap_or_default()
        .iter()
        .filter(|(k, _)| *k == sandbox_api::containerruntime::POOL_LABELS[0])
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Each node of `cr`'s pool with the handler names its kubelet reports.
async fn pool_nodes(
    client: &Client,
    cr: &ContainerRuntime,
) -> Result<Vec<(SlimMeta, BTreeSet<String>)>, String> {
    let mut params = ListParams::default().labels(&pool_selector(cr)).limit(PAGE);
    let mut out = Vec::new();
    loop {
        let request = Request::new("/api/v1/nodes")
            .list(&params)
            .map_err(|e| format!("listing the pool's nodes: {e}"))?;
        let page: SlimList = client
            .request(request)
            .await
            .map_err(|e| format!("listing the pool's nodes in the shoot: {e}"))?;
        for node in page.items {
            if out.len() == MAX_NODES {
                return Err(format!(
                    "pool has more than {MAX_NODES} nodes; at most {MAX_NODES} are labelled"
                ));
            }
            let handlers = node
                .status
                .runtime_handlers
                .into_iter()
                .map(|h| h.name)
                .collect();
            out.push((node.metadata, handlers));
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    Ok(out)
}

/// The metadata patch that gives `node` the `wanted` labels and reports (None: the label
/// and its annotation go), or None when it has them already.
fn patch_for(node: &SlimMeta, wanted: &[(String, Option<NodeReport>)]) -> Option<Value> {
    let mut labels = serde_json::Map::new();
    let mut annotations = serde_json::Map::new();
    for (label, report) in wanted {
        let annotation = state_annotation(label);
        let (label_value, annotation_value) = match report {
            Some(r) => (
                r.ready.then(|| "true".to_string()),
                serde_json::to_string(r).ok(),
            ),
            None => (None, None),
        };
        if node.labels.get(label) != label_value.as_ref() {
            labels.insert(label.clone(), json!(label_value));
        }
        if node.annotations.get(&annotation) != annotation_value.as_ref() {
            annotations.insert(annotation, json!(annotation_value));
        }
    }
    (!labels.is_empty() || !annotations.is_empty())
        .then(|| json!({"metadata": {"labels": labels, "annotations": annotations}}))
}

async fn patch(client: &Client, node: &str, patch: &Value) -> Result<(), String> {
    Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .patch_metadata(node, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(|_| ())
        .map_err(|e| format!("labelling node {node}: {e}"))
}

/// Labels every node of `cr`'s pool from the handlers its kubelet reports; returns how many
/// nodes it changed.
pub(crate) async fn label_pool(
    client: &Client,
    cr: &ContainerRuntime,
    actuator: &dyn Actuator,
    image: &str,
) -> Result<usize, String> {
    let Ok(plan) = actuator.node_plan(cr.spec.provider_config.as_ref(), image) else {
        // An invalid providerConfig is reported on the ContainerRuntime; labels stay.
        return Ok(0);
    };
    let version = plan.binaries.versioned.as_ref().map(|v| v.version.clone());
    let mut changed = 0;
    for (node, reported) in pool_nodes(client, cr).await? {
        let wanted: Vec<(String, Option<NodeReport>)> =
            sandbox_runtime::osc::node_readiness(&plan, &reported, version.as_deref())
                .into_iter()
                .map(|(label, report)| (label, Some(report)))
                .collect();
        if let Some(p) = patch_for(&node, &wanted) {
            patch(client, &node.name, &p).await?;
            info!(node = %node.name, namespace = cr.namespace().unwrap_or_default(), pool = %cr.spec.worker_pool.name, "node labelled from the handlers its kubelet reports");
            changed += 1;
        }
    }
    Ok(changed)
}

/// The nodes of `cr`'s pool whose kubelet still reports one of `actuator`'s handlers.
pub(crate) async fn still_reporting(
    client: &Client,
    cr: &ContainerRuntime,
    actuator: &dyn Actuator,
    image: &str,
) -> Result<Vec<String>, String> {
    let handlers: BTreeSet<String> = actuator
        .osc_removal(image)
        .map_err(|e| e.to_string())?
        .owned_handlers;
    Ok(pool_nodes(client, cr)
        .await?
        .into_iter()
        .filter(|(_, reported)| !reported.is_disjoint(&handlers))
        .map(|(node, _)| node.name)
        .collect())
}

/// Takes `actuator`'s ready labels (those of `cr`'s configuration) and their state
/// annotations off every node of `cr`'s pool.
pub(crate) async fn unlabel_pool(
    client: &Client,
    cr: &ContainerRuntime,
    actuator: &dyn Actuator,
) -> Result<(), String> {
    let wanted: Vec<(String, Option<NodeReport>)> =
        std::iter::once(actuator.description().node_ready_label.to_string())
            .chain(
                actuator
                    .component_ready_labels(cr)
                    .into_iter()
                    .map(|(_, l)| l),
            )
            .map(|l| (l, None))
            .collect();
    for (node, _) in pool_nodes(client, cr).await? {
        if let Some(p) = patch_for(&node, &wanted) {
            patch(client, &node.name, &p).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> SlimMeta {
        SlimMeta {
            name: "n".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_patch_only_when_labels_or_reports_differ() {
        let label = "runtime-sandbox.gardener.cloud/gvisor-ready";
        let ready = NodeReport::ready();
        let wanted = vec![(label.to_string(), Some(ready.clone()))];
        let p = patch_for(&node(&[], &[]), &wanted).unwrap();
        assert_eq!(p["metadata"]["labels"][label], "true");
        let report = serde_json::to_string(&ready).unwrap();
        let annotation = state_annotation(label);
        assert!(
            patch_for(
                &node(
                    &[(label, "true")],
                    &[(annotation.as_str(), report.as_str())]
                ),
                &wanted
            )
            .is_none()
        );
        // Not ready: the label goes (null), the report says why.
        let failed = NodeReport::failed("HandlerNotReported", "x");
        let p = patch_for(
            &node(&[(label, "true")], &[]),
            &[(label.to_string(), Some(failed))],
        )
        .unwrap();
        assert!(p["metadata"]["labels"][label].is_null());
        assert!(
            p["metadata"]["annotations"][&annotation]
                .as_str()
                .unwrap()
                .contains("HandlerNotReported")
        );
        // Removal: both go.
        let p = patch_for(
            &node(&[(label, "true")], &[(annotation.as_str(), "{}")]),
            &[(label.to_string(), None)],
        )
        .unwrap();
        assert!(p["metadata"]["annotations"][&annotation].is_null());
    }
}
