//! The admission webhook's charts (runtime cluster and virtual garden): versions agree with
//! the workspace, the runtime chart's flags are the binary's, and its objects are accepted by
//! a real API server with the pod admitted as `restricted`. (The application chart's
//! objects are applied to the real garden in admission.rs.)

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use sandbox_testenv::{chart, repo_root};
use serde_json::{Value, json};

const TLS: &[&str] = &[
    "--set",
    "webhookConfig.tls.crt=CERT",
    "--set",
    "webhookConfig.tls.key=KEY",
];

fn render(dir: &str, namespace: &str, extra: &[&str]) -> Result<Vec<Value>, String> {
    chart::template_chart(&repo_root().join(dir), "runtime-sandbox", namespace, extra).unwrap()
}

#[test]
fn versions_and_flags_agree_with_the_binary() {
    let version = env!("CARGO_PKG_VERSION");
    let tag = format!("v{version}");
    for dir in ["charts/admission/runtime", "charts/admission/application"] {
        let dir = repo_root().join(dir);
        assert_eq!(
            sandbox_image::chart::chart_field(&dir, "version").unwrap(),
            version
        );
        assert_eq!(
            sandbox_image::chart::chart_field(&dir, "appVersion").unwrap(),
            tag
        );
    }
    let objects = render("charts/admission/runtime", "garden", TLS).unwrap();
    let container = &chart::object(&objects, "Deployment").unwrap()["spec"]["template"]["spec"]["containers"]
        [0];
    assert!(container["image"].as_str().unwrap().ends_with(&tag));
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_gardener-extension-runtime-sandbox"))
        .args(["admission", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let command: Vec<&str> = container["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        command[..2],
        ["/gardener-extension-runtime-sandbox", "admission"]
    );
    for arg in &command[2..] {
        let flag = arg.split('=').next().unwrap();
        assert!(
            help.contains(flag),
            "the chart passes {flag}, which admission does not know"
        );
    }

    // Without the certificate the chart says what is missing.
    let error = render("charts/admission/runtime", "garden", &[]).unwrap_err();
    assert!(
        error.contains("webhookConfig.tls.crt is required"),
        "{error}"
    );
    let error = render("charts/admission/application", "garden", &[]).unwrap_err();
    assert!(
        error.contains("webhookConfig.caBundle is required"),
        "{error}"
    );
    // By default the API server calls the Service in the garden namespace.
    let objects = render(
        "charts/admission/application",
        "garden",
        &["--set", "webhookConfig.caBundle=CA"],
    )
    .unwrap();
    let webhook =
        &chart::object(&objects, "ValidatingWebhookConfiguration").unwrap()["webhooks"][0];
    assert_eq!(
        webhook["clientConfig"]["url"],
        "https://gardener-extension-admission-runtime-sandbox.garden/webhooks/validate-shoot"
    );
    assert_eq!(webhook["failurePolicy"], "Fail");
    assert_eq!(
        webhook["name"],
        sandbox_webhook::admission::NAME,
        "the chart and the server name the webhook alike"
    );
}

#[tokio::test]
async fn the_runtime_part_is_accepted_and_its_pod_is_restricted() {
    let cp = sandbox_testenv::shared();
    let client = cp.client().await.unwrap();
    let ns = chart::restricted_namespace(
        cp,
        &client,
        "garden-admission",
        "gardener-garden-system-400",
    )
    .await
    .unwrap();
    let objects = render("charts/admission/runtime", &ns, TLS).unwrap();
    for object in &objects {
        chart::create(&client, object)
            .await
            .unwrap_or_else(|e| panic!("the API server refused {}: {e}", object["kind"]));
    }
    let template = &chart::object(&objects, "Deployment").unwrap()["spec"]["template"];
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "admission", "namespace": ns, "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }))
    .unwrap();
    Api::<Pod>::namespaced(client, &ns)
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &pod,
        )
        .await
        .unwrap_or_else(|e| panic!("the admission pod is not admitted as restricted: {e}"));
}
