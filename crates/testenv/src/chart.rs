//! The extension's Helm chart, rendered by the pinned `helm` (the version Gardener renders
//! extension charts with), and its objects applied to a test API server.

use std::path::PathBuf;
use std::process::Command;

use kube::Client;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use serde_json::Value;

use crate::tools::repo_root;
use crate::{Error, Result};

/// The chart's folder.
pub fn chart_dir() -> PathBuf {
    repo_root().join(sandbox_image::chart::CHART_DIR)
}

/// Runs the pinned helm with `args`; (success, stdout, stderr).
pub fn helm(args: &[&str]) -> Result<(bool, String, String)> {
    let helm = crate::tools::helm()?;
    let output = Command::new(&helm)
        .args(args)
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("sandbox-helm/cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("sandbox-helm/config"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("sandbox-helm/data"),
        )
        .output()
        .map_err(|e| Error::Tools(format!("cannot run {}: {e}", helm.display())))?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// `helm template` of the chart as release `release` in `namespace` with extra helm arguments
/// (`--set`, `-f`); the rendered objects, or helm's error output.
pub fn template(
    release: &str,
    namespace: &str,
    extra: &[&str],
) -> Result<std::result::Result<Vec<Value>, String>> {
    template_chart(&chart_dir(), release, namespace, extra)
}

/// [`template`] of the chart in `dir` (e.g. the admission charts).
pub fn template_chart(
    dir: &std::path::Path,
    release: &str,
    namespace: &str,
    extra: &[&str],
) -> Result<std::result::Result<Vec<Value>, String>> {
    let dir = dir.to_string_lossy();
    let mut args = vec!["template", release, &dir, "--namespace", namespace];
    args.extend_from_slice(extra);
    let (ok, stdout, stderr) = helm(&args)?;
    if !ok {
        return Ok(Err(stderr));
    }
    let docs: Vec<Value> = serde_saphyr::from_multiple(&stdout)
        .map_err(|e| Error::Tools(format!("helm template printed invalid YAML: {e}")))?;
    Ok(Ok(docs.into_iter().filter(|d| !d.is_null()).collect()))
}

/// The rendered object of `kind` (the first one).
pub fn object<'a>(objects: &'a [Value], kind: &str) -> Option<&'a Value> {
    objects.iter().find(|o| o["kind"] == kind)
}

/// Creates `object` on the API server, whatever its kind (discovered).
pub async fn create(client: &Client, object: &Value) -> std::result::Result<(), kube::Error> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, object["kind"].as_str().unwrap_or_default());
    let (resource, caps) = kube::discovery::pinned_kind(client, &gvk).await?;
    let dynamic: DynamicObject =
        serde_json::from_value(object.clone()).map_err(kube::Error::SerdeError)?;
    let api: Api<DynamicObject> = match (&caps.scope, object["metadata"]["namespace"].as_str()) {
        (kube::discovery::Scope::Namespaced, Some(ns)) => {
            Api::namespaced_with(client.clone(), ns, &resource)
        }
        (kube::discovery::Scope::Namespaced, None) => {
            Api::default_namespaced_with(client.clone(), &resource)
        }
        _ => Api::all_with(client.clone(), &resource),
    };
    api.create(&PostParams::default(), &dynamic)
        .await
        .map(|_| ())
}

/// The namespace the chart is installed into in tests (as gardenlet's `extension-<name>`).
pub const RELEASE_NAMESPACE: &str = "extension-runtime-sandbox";
/// The chart's ServiceAccount.
pub const SERVICE_ACCOUNT: &str = "gardener-extension-runtime-sandbox";
/// The kinds that make up the controller's identity and permissions.
pub const RBAC_KINDS: &[&str] = &[
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];

/// Installs the chart's ServiceAccount and RBAC (rendered with `extra` helm arguments) in
/// [`RELEASE_NAMESPACE`] and returns the rendered objects and a kubeconfig that authenticates
/// with a bound token of that ServiceAccount (TokenRequest API), as the pod's projected token
/// does.
pub async fn install_identity(
    cp: &crate::ControlPlane,
    extra: &[&str],
) -> Result<(Vec<Value>, kube::config::Kubeconfig)> {
    use k8s_openapi::api::core::v1::Namespace;

    let objects = template("runtime-sandbox", RELEASE_NAMESPACE, extra)?
        .map_err(|e| Error::Tools(format!("helm template failed: {e}")))?;
    let client = cp.client().await?;
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": RELEASE_NAMESPACE}}))
            .map_err(|e| Error::Tools(e.to_string()))?;
    ok_if_exists(
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .map(|_| ()),
    )?;
    let rbac: Vec<Value> = objects
        .iter()
        .filter(|o| RBAC_KINDS.iter().any(|k| o["kind"] == *k))
        .cloned()
        .collect();
    for object in &rbac {
        ok_if_exists(create(&client, object).await)?;
    }
    let kubeconfig = cp
        .service_account_kubeconfig(RELEASE_NAMESPACE, SERVICE_ACCOUNT, None)
        .await?;
    // The policy fence takes effect once the API server's policy cache has it: wait until
    // the ServiceAccount is refused a Secret the fence forbids (a dry run, nothing written).
    if rbac
        .iter()
        .any(|o| o["kind"] == "ValidatingAdmissionPolicyBinding")
    {
        let fenced = crate::client_for(kubeconfig.clone()).await?;
        crate::eventually_or(30, "the chart's admission policy in force", async || {
            match fence_probe(&fenced).await {
                Err(kube::Error::Api(e))
                    if e.code == 403 && e.message.contains("ValidatingAdmissionPolicy") =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }
    Ok((rbac, kubeconfig))
}

/// A dry-run create of a Secret the chart's policy refuses the controller (one outside every
/// shoot namespace).
pub async fn fence_probe(client: &Client) -> std::result::Result<(), kube::Error> {
    use k8s_openapi::api::core::v1::Secret;
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "fence-probe"}, "type": "Opaque"}))
    .map_err(kube::Error::SerdeError)?;
    Api::<Secret>::namespaced(client.clone(), RELEASE_NAMESPACE)
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &secret,
        )
        .await
        .map(|_| ())
}

/// `result`, with "already exists" (409) counted as success.
pub fn ok_if_exists(result: std::result::Result<(), kube::Error>) -> Result<()> {
    match result {
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        other => Ok(other?),
    }
}

/// A fresh namespace (named after `prefix`) that enforces the `restricted` Pod Security
/// Standard, and the PriorityClass `priority_class` the chart's pods name: where a chart's
/// pod template must be admitted.
pub async fn restricted_namespace(
    cp: &crate::ControlPlane,
    client: &Client,
    prefix: &str,
    priority_class: &str,
) -> Result<String> {
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::api::scheduling::v1::PriorityClass;

    let ns = cp.namespace(client, prefix).await?;
    Api::<Namespace>::all(client.clone())
        .patch(
            &ns,
            &Default::default(),
            &kube::api::Patch::Merge(serde_json::json!({"metadata": {"labels": {
                "pod-security.kubernetes.io/enforce": "restricted"}}})),
        )
        .await?;
    let priority: PriorityClass = serde_json::from_value(serde_json::json!({
        "metadata": {"name": priority_class}, "value": 999_990_000,
    }))
    .map_err(|e| Error::Tools(e.to_string()))?;
    ok_if_exists(
        Api::<PriorityClass>::all(client.clone())
            .create(&PostParams::default(), &priority)
            .await
            .map(|_| ()),
    )?;
    Ok(ns)
}
