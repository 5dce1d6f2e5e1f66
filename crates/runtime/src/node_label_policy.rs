//! RBAC cannot say "only your own node, only this label": a node agent allowed to patch nodes
//! may patch any node, any field. This `ValidatingAdmissionPolicy` (Kubernetes 1.30+; Gardener
//! supports shoots from 1.32 on) closes that in the shoot's API server: a request of the node
//! agent's ServiceAccount may change a node only if the node is the one its pod runs on (the
//! node name the API server puts into a pod-bound token, `authentication.kubernetes.io/node-name`),
//! and only the runtime's ready label, which it may set to `"true"` or remove, and the state
//! annotation next to it ([`crate::node_plan::state_annotation`]), where it reports its last run.

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use serde_json::json;

use crate::manifests::{ObjectSet, RenderError};

/// The key under which the API server records the node of a pod-bound ServiceAccount token.
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

/// `k == 'a'`, or `(k == 'a' || k == 'b')` for several keys (CEL).
fn is_one_of(keys: &[String]) -> String {
    let tests: Vec<String> = keys.iter().map(|k| format!("k == '{k}'")).collect();
    match tests.len() {
        1 => tests[0].clone(),
        _ => format!("({})", tests.join(" || ")),
    }
}

/// The policy and its binding for the node agent `namespace/service_account`, limited to
/// `labels` (a runtime's ready labels, e.g. one per Kata hypervisor) and their state
/// annotations. `name` names both (cluster-scoped).
pub fn node_label_policy(
    name: &str,
    namespace: &str,
    service_account: &str,
    labels: &[&str],
) -> Result<(ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding), RenderError> {
    policy(name, namespace, service_account, labels, true)
}

/// The policy for the controller's node labeller (installation mode `osc`): as
/// [`node_label_policy`], on any node (the controller labels every node of the shoot's pools
/// from what their kubelets report; its token is bound to no node).
pub fn labeller_policy(
    name: &str,
    namespace: &str,
    service_account: &str,
    labels: &[&str],
) -> Result<(ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding), RenderError> {
    policy(name, namespace, service_account, labels, false)
}

fn policy(
    name: &str,
    namespace: &str,
    service_account: &str,
    labels: &[&str],
    own_node_only: bool,
) -> Result<(ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding), RenderError> {
    let user = format!("system:serviceaccount:{namespace}:{service_account}");
    let label_keys: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
    let annotation_keys: Vec<String> = labels
        .iter()
        .map(|l| crate::node_plan::state_annotation(l))
        .collect();
    let (label, annotation) = (label_keys.join(", "), annotation_keys.join(", "));
    let ours = is_one_of(&annotation_keys);
    let unchanged_except_annotation = format!(
        "(!has(object.metadata.annotations) || object.metadata.annotations.all(k, {ours} || \
           (has(oldObject.metadata.annotations) && k in oldObject.metadata.annotations && oldObject.metadata.annotations[k] == object.metadata.annotations[k]))) && \
         (!has(oldObject.metadata.annotations) || oldObject.metadata.annotations.all(k, {ours} || \
           (has(object.metadata.annotations) && k in object.metadata.annotations)))"
    );
    let ours = is_one_of(&label_keys);
    let unchanged_except_label = format!(
        "object.metadata.labels.all(k, {ours} || (k in oldObject.metadata.labels && oldObject.metadata.labels[k] == object.metadata.labels[k])) && \
         (!has(oldObject.metadata.labels) || oldObject.metadata.labels.all(k, {ours} || k in object.metadata.labels))"
    );
    let only_true: Vec<String> = label_keys
        .iter()
        .map(|l| {
            format!(
                "(!('{l}' in object.metadata.labels) || object.metadata.labels['{l}'] == 'true')"
            )
        })
        .collect();
    let only_true = only_true.join(" && ");
    let policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"], "resources": ["nodes"],
                "operations": ["CREATE", "UPDATE", "DELETE"],
            }]},
            "matchConditions": [{"name": "node-agent", "expression": format!("request.userInfo.username == '{user}'")}],
            "validations": [
                if own_node_only { json!({
                    "expression": format!(
                        "request.operation == 'UPDATE' && '{NODE_NAME_EXTRA}' in request.userInfo.extra && \
                         request.userInfo.extra['{NODE_NAME_EXTRA}'] == [object.metadata.name]"
                    ),
                    "message": "the node agent may change only the node its pod runs on",
                    "reason": "Forbidden",
                }) } else { json!({
                    "expression": "request.operation == 'UPDATE'",
                    "message": "the node labeller may only update nodes",
                    "reason": "Forbidden",
                }) },
                {
                    "expression": format!(
                        "has(object.metadata.labels) && {unchanged_except_label} && \
                         {only_true}"
                    ),
                    "message": format!("the node agent may change only the label {label}, to \"true\" or removed"),
                    "reason": "Forbidden",
                },
                {
                    "expression": format!("object.spec == oldObject.spec && {unchanged_except_annotation} && \
                        (has(object.metadata.ownerReferences) == has(oldObject.metadata.ownerReferences)) && \
                        (!has(object.metadata.ownerReferences) || object.metadata.ownerReferences == oldObject.metadata.ownerReferences) && \
                        (has(object.metadata.finalizers) == has(oldObject.metadata.finalizers)) && \
                        (!has(object.metadata.finalizers) || object.metadata.finalizers == oldObject.metadata.finalizers)"),
                    "message": format!("the node agent may change only the label {label} and the annotation {annotation}"),
                    "reason": "Forbidden",
                },
            ],
        },
    });
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    });
    let err = |e: serde_json::Error| RenderError {
        key: name.to_string(),
        message: e.to_string(),
    };
    Ok((
        serde_json::from_value(policy).map_err(err)?,
        serde_json::from_value(binding).map_err(err)?,
    ))
}

/// Adds the labeller's policy and its binding to `set`.
pub fn add_labeller_policy(
    set: &mut ObjectSet,
    name: &str,
    namespace: &str,
    service_account: &str,
    labels: &[&str],
) -> Result<(), RenderError> {
    let (policy, binding) = labeller_policy(name, namespace, service_account, labels)?;
    set.add(&policy)?;
    set.add(&binding)
}

/// Adds the policy and its binding to `set`.
pub fn add_node_label_policy(
    set: &mut ObjectSet,
    name: &str,
    namespace: &str,
    service_account: &str,
    labels: &[&str],
) -> Result<(), RenderError> {
    let (policy, binding) = node_label_policy(name, namespace, service_account, labels)?;
    set.add(&policy)?;
    set.add(&binding)
}
