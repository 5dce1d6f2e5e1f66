//! The garden's Shoot admission through the real admission path: Shoots sent to the real
//! gardener-apiserver of the test garden, which calls our `admission` subcommand (the product
//! binary, with the identity and RBAC the application chart gives it) as the chart's
//! ValidatingWebhookConfiguration tells it to.

use std::process::{Command, Stdio};

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use sandbox_testenv::chart::{self, ok_if_exists};
use sandbox_testenv::{free_port, http_get, repo_root};
use serde_json::{Value, json};

mod support;

use sandbox_testenv::eventually;
use support::Kill;

const NAMESPACE: &str = "garden-dev";
const WEBHOOK: &str = "gardener-extension-admission-runtime-sandbox";

fn documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo_root().join(path)).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn yaml(path: &str) -> Value {
    documents(path).remove(0)
}

fn shoots(client: &kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("core.gardener.cloud", "v1beta1", "Shoot");
    Api::namespaced_with(client.clone(), NAMESPACE, &ApiResource::from_gvk(&gvk))
}

fn dry_run() -> PostParams {
    PostParams {
        dry_run: true,
        ..PostParams::default()
    }
}

/// The example Shoot named `name`, changed by `edit`.
fn shoot(name: &str, edit: impl FnOnce(&mut Value)) -> DynamicObject {
    let mut shoot = yaml("example/garden/shoot.yaml");
    shoot["metadata"]["name"] = json!(name);
    edit(&mut shoot);
    serde_json::from_value(shoot).unwrap()
}

fn gvisor_flags(shoot: &mut Value) -> &mut Value {
    &mut shoot["spec"]["provider"]["workers"][0]["cri"]["containerRuntimes"][0]["providerConfig"]["configFlags"]
}

/// The message of a refused request.
fn refusal(result: Result<DynamicObject, kube::Error>) -> String {
    match result {
        Ok(created) => panic!("admitted: {}", serde_json::to_string(&created).unwrap()),
        Err(kube::Error::Api(status)) => status.message,
        Err(other) => panic!("not an API refusal: {other}"),
    }
}

/// What Gardener needs before it takes a Shoot: the project, its credentials, the
/// CloudProfile, and a registration for every extension type the Shoot names.
async fn prerequisites(client: &kube::Client) {
    let mut objects = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE,
            "labels": {"project.gardener.cloud/name": "dev", "gardener.cloud/role": "project"}}}),
        json!({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Project",
            "metadata": {"name": "dev"}, "spec": {"namespace": NAMESPACE}}),
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "local", "namespace": NAMESPACE}, "data": {}}),
        json!({"apiVersion": "security.gardener.cloud/v1alpha1", "kind": "CredentialsBinding",
            "metadata": {"name": "local", "namespace": NAMESPACE},
            "provider": {"type": "local"},
            "credentialsRef": {"apiVersion": "v1", "kind": "Secret", "name": "local", "namespace": NAMESPACE}}),
        yaml("example/garden/cloudprofile.yaml"),
        json!({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "ControllerRegistration",
        "metadata": {"name": "provider-local"},
        "spec": {"resources": [
            {"kind": "ControlPlane", "type": "local"},
            {"kind": "Infrastructure", "type": "local"},
            {"kind": "Worker", "type": "local"},
            {"kind": "OperatingSystemConfig", "type": "local"},
            {"kind": "Network", "type": "calico"},
        ]}}),
    ];
    objects.extend(documents("example/controller-registration.yaml"));
    for object in &objects {
        ok_if_exists(chart::create(client, object).await)
            .unwrap_or_else(|e| panic!("creating {}: {e}", object["kind"]));
    }
}

#[tokio::test]
async fn shoots_are_reviewed_by_our_webhook_through_gardener_apiserver() {
    let garden = sandbox_testenv::garden::shared();
    let _logs = garden.logs_on_panic();
    let client = garden.client().await.unwrap();
    prerequisites(&client).await;
    let api = shoots(&client);

    // Without our webhook, Gardener itself takes a Shoot with an invalid gVisor flag: the
    // refusals below are ours.
    let invalid = shoot("bad-flag", |s| {
        gvisor_flags(s)["platform"] = json!("ptrace")
    });
    // (gardener-apiserver sees new registrations through its informers: retry a while.)
    let mut last = String::new();
    for _ in 0..50 {
        match api.create(&dry_run(), &invalid).await {
            Ok(_) => {
                last.clear();
                break;
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        last.is_empty(),
        "gardener-apiserver refused the Shoot on its own: {last}"
    );

    // The application chart (virtual garden part), pointed at our server on this machine.
    let work = tempfile::tempdir().unwrap();
    let ca = work.path().join("ca.crt");
    std::fs::write(&ca, garden.ca_pem()).unwrap();
    let port = free_port().unwrap();
    let objects = chart::template_chart(
        &repo_root().join("charts/admission/application"),
        "runtime-sandbox",
        "garden",
        &[
            "--set",
            &format!("webhookConfig.url=https://localhost:{port}"),
            "--set-file",
            &format!("webhookConfig.caBundle={}", ca.display()),
        ],
    )
    .unwrap()
    .unwrap_or_else(|e| panic!("helm template: {e}"));
    let account = json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "extension-admission-runtime-sandbox", "namespace": "kube-system"}});
    ok_if_exists(chart::create(&client, &account).await).unwrap();
    for object in &objects {
        ok_if_exists(chart::create(&client, object).await)
            .unwrap_or_else(|e| panic!("creating {}: {e}", object["kind"]));
    }
    // The server runs with the identity gardener-operator gives it, and only the chart's RBAC.
    let kubeconfig = garden
        .service_account_kubeconfig("kube-system", "extension-admission-runtime-sandbox", None)
        .await
        .unwrap();
    let kubeconfig_file = work.path().join("garden.kubeconfig");
    std::fs::write(
        &kubeconfig_file,
        serde_json::to_string(&kubeconfig).unwrap(),
    )
    .unwrap();
    // The certificate files as a mounted Secret has them: replaced while the server runs.
    let (issued_cert, issued_key) = garden.serving_cert("admission", &["localhost"]).unwrap();
    let (cert, key) = (work.path().join("tls.crt"), work.path().join("tls.key"));
    std::fs::copy(&issued_cert, &cert).unwrap();
    std::fs::copy(&issued_key, &key).unwrap();
    let health = free_port().unwrap();
    let mut webhook = Some(Kill(
        Command::new(env!("CARGO_BIN_EXE_gardener-extension-runtime-sandbox"))
            .args(["admission", "--log-format=text", "--log-level=debug"])
            .arg(format!("--kubeconfig={}", kubeconfig_file.display()))
            .arg(format!("--tls-cert-file={}", cert.display()))
            .arg(format!("--tls-private-key-file={}", key.display()))
            .arg("--webhook-config-server-host=127.0.0.1")
            .arg(format!("--webhook-config-server-port={port}"))
            .arg(format!("--health-bind-address=127.0.0.1:{health}"))
            .arg(format!("--metrics-bind-address=127.0.0.1:{health}"))
            .arg("--cert-reload-period-seconds=1")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    ));
    eventually(30, "/readyz ok", async || {
        http_get(health, "/readyz").filter(|(c, _)| *c == 200)
    })
    .await;

    // An invalid flag value: refused, naming the field and the allowed values. The API server
    // learns of a new webhook configuration through its informer: wait for the first refusal.
    let message = eventually(30, "the webhook refuses an invalid flag", async || {
        api.create(&dry_run(), &invalid)
            .await
            .err()
            .map(|e| e.to_string())
    })
    .await;
    for expected in [
        "validate-shoot.runtime-sandbox.extensions.gardener.cloud",
        "spec.provider.workers[0].cri.containerRuntimes[0].providerConfig.configFlags.platform",
        "\"ptrace\" is not allowed; allowed: systrap, kvm",
    ] {
        assert!(message.contains(expected), "{expected:?} not in {message}");
    }

    // An unknown flag: admitted, with a warning the client sees (the Warning header).
    let unknown = shoot("unknown-flag", |s| gvisor_flags(s)["fancy"] = json!("yes"));
    let request = http::Request::post(format!(
        "/apis/core.gardener.cloud/v1beta1/namespaces/{NAMESPACE}/shoots?dryRun=All"
    ))
    .header("Content-Type", "application/json")
    .body(kube::client::Body::from(
        serde_json::to_vec(&unknown).unwrap(),
    ))
    .unwrap();
    let response = client.send(request).await.unwrap();
    assert_eq!(response.status().as_u16(), 201, "{response:?}");
    let warnings: Vec<String> = response
        .headers()
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        warnings.iter().any(|w| w.contains(
            "spec.provider.workers[0].cri.containerRuntimes[0].providerConfig.configFlags: fancy is not supported and ignored"
        )),
        "{warnings:?}"
    );

    // Kata on a machine type without nested virtualisation: refused, naming pool and type.
    let small = shoot("kata-small", |s| {
        s["spec"]["provider"]["workers"][1]["machine"]["type"] = json!("local")
    });
    let message = refusal(api.create(&dry_run(), &small).await);
    assert!(
        message.contains(
            "spec.provider.workers[1].machine.type: pool \"isolated\": machine type \"local\" does not offer nested virtualisation, which Kata Containers needs"
        ) && message.contains("allowed: machine types whose nestedVirtualization includes \"true\": local-metal"),
        "{message}"
    );

    // The same through a NamespacedCloudProfile of the project (its status carries the
    // merged spec; gardener-controller-manager, not running here, would write it).
    let namespaced: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NAMESPACE,
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "core.gardener.cloud",
            "v1beta1",
            "NamespacedCloudProfile",
        )),
    );
    let profile: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "core.gardener.cloud/v1beta1", "kind": "NamespacedCloudProfile",
        "metadata": {"name": "local-project", "namespace": NAMESPACE},
        "spec": {"parent": {"kind": "CloudProfile", "name": "local"}},
    }))
    .unwrap();
    namespaced
        .create(&PostParams::default(), &profile)
        .await
        .unwrap();
    let status = json!({"status": {
        "cloudProfileSpec": yaml("example/garden/cloudprofile.yaml")["spec"]}});
    namespaced
        .patch_status(
            "local-project",
            &PatchParams::default(),
            &Patch::Merge(status),
        )
        .await
        .unwrap();
    let small_namespaced = shoot("kata-small-ns", |s| {
        s["spec"]["cloudProfile"] =
            json!({"kind": "NamespacedCloudProfile", "name": "local-project"});
        s["spec"]["provider"]["workers"][1]["machine"]["type"] = json!("local")
    });
    let message = refusal(api.create(&dry_run(), &small_namespaced).await);
    assert!(
        message.contains("machine type \"local\" does not offer nested virtualisation")
            && message.contains("CloudProfile local-project"),
        "{message}"
    );

    // A valid Shoot with both runtimes: admitted, for real.
    let valid = shoot("sandboxed", |_| {});
    api.create(&PostParams::default(), &valid).await.unwrap();
    // The operator takes nested virtualisation away from the Kata pool's machine type: a new
    // such Shoot is refused, but the existing one is not stuck on edits of other things ...
    let profiles: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "core.gardener.cloud",
            "v1beta1",
            "CloudProfile",
        )),
    );
    let mut profile = profiles.get("local").await.unwrap();
    profile.data["spec"]["machineTypes"][1]["capabilities"]["nestedVirtualization"] =
        json!(["false"]);
    profiles
        .replace("local", &PostParams::default(), &profile)
        .await
        .unwrap();
    let message = refusal(
        api.create(&dry_run(), &shoot("sandboxed-too", |_| {}))
            .await,
    );
    assert!(
        message.contains("machine type \"local-metal\""),
        "{message}"
    );
    let patch = Patch::Merge(json!({"metadata": {"labels": {"unrelated": "edit"}}}));
    let patched = api
        .patch("sandboxed", &PatchParams::default(), &patch)
        .await
        .unwrap();
    assert_eq!(patched.metadata.labels.unwrap()["unrelated"], "edit");
    // ... while a change to what we own is reviewed.
    let mut changed = api.get("sandboxed").await.unwrap();
    changed.data["spec"]["provider"]["workers"][0]["cri"]["containerRuntimes"][0]["providerConfig"]
        ["configFlags"]["platform"] = json!("ptrace");
    let message = refusal(
        api.replace("sandboxed", &PostParams::default(), &changed)
            .await,
    );
    assert!(message.contains("configFlags.platform"), "{message}");

    // The webhook's own figures.
    let (_, metrics) = http_get(health, "/metrics").unwrap();
    for outcome in ["allowed", "warned", "denied"] {
        assert!(
            metrics.contains(&format!(
                "runtime_sandbox_admission_reviews_total{{outcome=\"{outcome}\"}}"
            )),
            "{outcome} not counted: {metrics}"
        );
    }

    // A new certificate in the files is served without a restart (to new connections; the
    // API server's kept-alive ones keep the old one): one for another name fails a client's
    // verification, the right one passes again.
    let ca_pem = garden.ca_pem().to_string();
    assert!(sandbox_testenv::tls_handshake(&ca_pem, port, "localhost").await);
    let (other_cert, other_key) = garden.serving_cert("elsewhere", &["elsewhere"]).unwrap();
    std::fs::copy(&other_cert, &cert).unwrap();
    std::fs::copy(&other_key, &key).unwrap();
    eventually(30, "the other certificate is served", async || {
        (!sandbox_testenv::tls_handshake(&ca_pem, port, "localhost").await).then_some(())
    })
    .await;
    assert!(sandbox_testenv::tls_handshake(&ca_pem, port, "elsewhere").await);
    std::fs::copy(&issued_cert, &cert).unwrap();
    std::fs::copy(&issued_key, &key).unwrap();
    eventually(30, "the right certificate is served again", async || {
        sandbox_testenv::tls_handshake(&ca_pem, port, "localhost")
            .await
            .then_some(())
    })
    .await;
    let gvisor_only = shoot("reload", |s| {
        s["spec"]["provider"]["workers"]
            .as_array_mut()
            .unwrap()
            .truncate(1)
    });
    api.create(&dry_run(), &gvisor_only).await.unwrap();

    // Webhook down. failurePolicy Fail (the chart's default): a Shoot with a sandboxed
    // runtime is refused rather than written unchecked ...
    webhook.take();
    let message = refusal(api.create(&dry_run(), &shoot("while-down", |_| {})).await);
    assert!(message.contains("failed calling webhook"), "{message}");
    // ... a Shoot without one never reaches the webhook (the match condition) ...
    let plain = shoot("plain", |s| {
        for worker in s["spec"]["provider"]["workers"].as_array_mut().unwrap() {
            worker["cri"] = json!({"name": "containerd"});
        }
    });
    api.create(&dry_run(), &plain).await.unwrap();
    // ... and with failurePolicy Ignore, the sandboxed Shoot goes through unchecked.
    let configurations: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingWebhookConfiguration",
        )),
    );
    let mut configuration = configurations.get(WEBHOOK).await.unwrap();
    configuration.data["webhooks"][0]["failurePolicy"] = json!("Ignore");
    configurations
        .replace(WEBHOOK, &PostParams::default(), &configuration)
        .await
        .unwrap();
    eventually(30, "Ignore lets the Shoot through", async || {
        api.create(&dry_run(), &shoot("while-down", |_| {}))
            .await
            .ok()
    })
    .await;
}
