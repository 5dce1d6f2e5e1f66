//! The node agent's label restriction, enforced by the real API server: with the shared
//! objects gVisor ships into a shoot (ServiceAccount, ClusterRole, ValidatingAdmissionPolicy),
//! a token bound to a pod on node A labels node A, and the same token can neither label node B
//! nor change any other field of node A.

use k8s_openapi::api::authentication::v1::BoundObjectReference;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use sandbox_api::Shoot;
use sandbox_runtime::actuator::Actuator;
use sandbox_runtime::gvisor::{GVisor, NODE_READY_LABEL, SERVICE_ACCOUNT, SHOOT_NAMESPACE};
use serde_json::{Value, json};

async fn patch(api: &Api<Node>, node: &str, patch: Value) -> Result<(), kube::Error> {
    api.patch(node, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(|_| ())
}

fn refused(result: Result<(), kube::Error>, what: &str) -> String {
    match result {
        Err(kube::Error::Api(e)) if e.code == 403 || e.code == 422 => e.message,
        other => panic!("{what} must be refused, got {other:?}"),
    }
}

#[tokio::test]
async fn the_node_agent_may_set_only_its_own_nodes_ready_label() {
    let cp = sandbox_testenv::shared();
    let _logs = cp.logs_on_panic();
    let admin = cp.client().await.unwrap();
    let cr = sandbox_testenv::gardenlet::container_runtime("shoot--p--s", "pool-a", None);
    let shared = GVisor
        .desired(&cr, &Shoot::default(), "img")
        .unwrap()
        .shared;
    for yaml in shared.data.values() {
        let object: Value = serde_saphyr::from_str(yaml).unwrap();
        sandbox_testenv::chart::ok_if_exists(sandbox_testenv::chart::create(&admin, &object).await)
            .unwrap_or_else(|e| panic!("creating {}: {e}", object["kind"]));
    }
    let suffix = std::process::id();
    let (node_a, node_b) = (format!("node-a-{suffix}"), format!("node-b-{suffix}"));
    let nodes = Api::<Node>::all(admin.clone());
    for name in [&node_a, &node_b] {
        let node: Node = serde_json::from_value(
            json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}}),
        )
        .unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
    }
    // The agent's pod on node A (nothing runs it: the token only needs the binding).
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": format!("agent-{suffix}"), "namespace": SHOOT_NAMESPACE},
        "spec": {"nodeName": node_a, "serviceAccountName": SERVICE_ACCOUNT, "containers": [{"name": "agent", "image": "agent"}]},
    }))
    .unwrap();
    let pod = Api::<Pod>::namespaced(admin.clone(), SHOOT_NAMESPACE)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    let bound = BoundObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
    };
    let kubeconfig = cp
        .service_account_kubeconfig(SHOOT_NAMESPACE, SERVICE_ACCOUNT, Some(bound))
        .await
        .unwrap();
    let agent = Api::<Node>::all(sandbox_testenv::client_for(kubeconfig).await.unwrap());

    // A new policy takes effect within a few seconds: until labelling another node is refused,
    // undo what got through and try again.
    let label = json!({"metadata": {"labels": {NODE_READY_LABEL: "true"}}});
    let unlabel = json!({"metadata": {"labels": {NODE_READY_LABEL: null}}});
    let message = sandbox_testenv::eventually_or(
        30,
        "labelling another node refused",
        async || match patch(&agent, &node_b, label.clone()).await {
            Err(kube::Error::Api(e)) if e.code == 403 || e.code == 422 => Ok(e.message),
            other => {
                patch(&nodes, &node_b, unlabel.clone()).await.unwrap();
                Err(format!("{other:?}"))
            }
        },
    )
    .await;
    assert!(
        message.contains("only the node its pod runs on"),
        "{message}"
    );
    assert!(
        !nodes
            .get(&node_b)
            .await
            .unwrap()
            .metadata
            .labels
            .unwrap()
            .contains_key(NODE_READY_LABEL)
    );

    // Its own node's ready label: allowed.
    patch(
        &agent,
        &node_a,
        json!({"metadata": {"labels": {NODE_READY_LABEL: "true"}}}),
    )
    .await
    .unwrap_or_else(|e| panic!("the agent must label its own node: {e}"));
    let labels = nodes.get(&node_a).await.unwrap().metadata.labels.unwrap();
    assert_eq!(labels[NODE_READY_LABEL], "true");

    // Anything else on its own node: refused.
    let message = refused(
        patch(
            &agent,
            &node_a,
            json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}}),
        )
        .await,
        "another label",
    );
    assert!(message.contains(NODE_READY_LABEL), "{message}");
    refused(
        patch(
            &agent,
            &node_a,
            json!({"metadata": {"labels": {NODE_READY_LABEL: "yes"}}}),
        )
        .await,
        "another value",
    );
    refused(
        patch(&agent, &node_a, json!({"spec": {"unschedulable": true}})).await,
        "the node's spec",
    );
    refused(
        patch(
            &agent,
            &node_a,
            json!({"metadata": {"annotations": {"x": "y"}}}),
        )
        .await,
        "an annotation",
    );
    // Its state annotation, with the label, as the agent writes both: allowed; removing it too.
    let state = sandbox_runtime::node_plan::state_annotation(NODE_READY_LABEL);
    patch(
        &agent,
        &node_a,
        json!({"metadata": {"labels": {NODE_READY_LABEL: null},
            "annotations": {&state: r#"{"ready":false,"reason":"ContainerdTooOld"}"#}}}),
    )
    .await
    .unwrap_or_else(|e| panic!("the agent must report its state: {e}"));
    patch(
        &agent,
        &node_a,
        json!({"metadata": {"annotations": {&state: null}}}),
    )
    .await
    .unwrap_or_else(|e| panic!("the agent must remove its state: {e}"));
    patch(
        &agent,
        &node_a,
        json!({"metadata": {"labels": {NODE_READY_LABEL: "true"}}}),
    )
    .await
    .unwrap();
    refused(
        agent.delete(&node_a, &Default::default()).await.map(|_| ()),
        "deleting the node",
    );

    // Removing its own label (what uninstall does) is allowed.
    patch(
        &agent,
        &node_a,
        json!({"metadata": {"labels": {NODE_READY_LABEL: null}}}),
    )
    .await
    .unwrap();
    let labels = nodes.get(&node_a).await.unwrap().metadata.labels.unwrap();
    assert!(!labels.contains_key(NODE_READY_LABEL));
    // Admin changes are not affected.
    patch(
        &nodes,
        &node_b,
        json!({"metadata": {"labels": {"admin": "ok"}}}),
    )
    .await
    .unwrap();
}
