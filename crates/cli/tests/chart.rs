//! The Helm chart: lint-clean with the Helm Gardener renders it with, a values schema that
//! turns typos into errors, the values Gardener injects accepted, objects the real API server
//! accepts, a pod the `restricted` Pod Security Standard admits, and registration files that
//! are generated from this very chart.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use sandbox_testenv::chart::{self, object};
use serde_json::{Value, json};

const NS: &str = "extension-runtime-sandbox";

fn render(extra: &[&str]) -> Vec<Value> {
    chart::template("runtime-sandbox", NS, extra)
        .unwrap()
        .unwrap_or_else(|e| panic!("helm template failed: {e}"))
}

#[test]
fn helm_lint_is_clean() {
    let dir = chart::chart_dir();
    let (ok, stdout, stderr) = chart::helm(&["lint", "--strict", &dir.to_string_lossy()]).unwrap();
    assert!(ok, "helm lint --strict failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("0 chart(s) failed"), "{stdout}");
}

#[test]
fn a_typo_in_values_is_an_error_naming_it() {
    for (set, field) in [
        ("controllers.concurentSyncs=3", "concurentSyncs"),
        ("imagee.tag=v1", "imagee"),
        ("replicaCount=two", "replicaCount"),
        (
            "disableControllers[0]=containerruntime",
            "disableControllers",
        ),
    ] {
        let result = chart::template("runtime-sandbox", NS, &["--set", set]).unwrap();
        let error = result.expect_err(&format!("--set {set} must be refused"));
        assert!(
            error.contains(field),
            "--set {set}: error must name {field}: {error}"
        );
    }
}

#[test]
fn default_render_is_what_an_operator_expects() {
    let objects = render(&[]);
    let mut kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "VerticalPodAutoscaler"
        ]
    );
    let deployment = object(&objects, "Deployment").unwrap();
    let spec = &deployment["spec"]["template"]["spec"];
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(spec["priorityClassName"], "gardener-system-900");
    assert_eq!(spec["automountServiceAccountToken"], false);
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(
        labels["networking.gardener.cloud/to-runtime-apiserver"],
        "allowed"
    );
    assert_eq!(labels["networking.gardener.cloud/to-dns"], "allowed");
    let zones: Vec<&Value> = spec["topologySpreadConstraints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["topologyKey"] == "topology.kubernetes.io/zone")
        .collect();
    assert_eq!(zones.len(), 1, "spread over zones");
    let container = &spec["containers"][0];
    assert_eq!(
        container["image"],
        "ghcr.io/gardener-extension-runtime-sandbox/controller:v0.1.0"
    );
    let args: Vec<&str> = container["command"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for flag in [
        "controller",
        "--leader-election=true",
        "--leader-election-id=runtime-gvisor-leader-election",
        "--heartbeat-namespace=extension-runtime-sandbox",
        "--max-concurrent-reconciles=5",
        "--metrics-bind-address=:8080",
    ] {
        assert!(args.contains(&flag), "{flag} missing from {args:?}");
    }
    let service = object(&objects, "Service").unwrap();
    assert!(
        service["metadata"]["annotations"]
            ["networking.resources.gardener.cloud/from-all-seed-scrape-targets-allowed-ports"]
            .as_str()
            .is_some_and(|v| v.contains("8080"))
    );
    // The seed webhook: flags, the Service port the registration names, the API server let in.
    for flag in [
        "--webhook-config-namespace=extension-runtime-sandbox",
        "--webhook-config-service-port=443",
        "--webhook-config-server-port=10250",
    ] {
        assert!(args.contains(&flag), "{flag} missing from {args:?}");
    }
    assert_eq!(
        service["metadata"]["name"],
        "gardener-extension-runtime-sandbox"
    );
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["port"] == 443 && p["targetPort"] == "webhook-server")
    );
    assert_eq!(
        service["metadata"]["annotations"]["networking.resources.gardener.cloud/from-all-webhook-targets-allowed-ports"],
        r#"[{"port":10250,"protocol":"TCP"}]"#
    );
    // Disabled: no port, no registration rights but the one to remove it.
    let disabled = render(&["--set", "disableWebhooks={kata-devmapper}"]);
    let container =
        &object(&disabled, "Deployment").unwrap()["spec"]["template"]["spec"]["containers"][0];
    assert!(
        container["command"]
            .as_array()
            .unwrap()
            .contains(&json!("--disable-webhooks=kata-devmapper"))
    );
    let role = object(&disabled, "ClusterRole").unwrap();
    let webhook_rule = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resources"] == json!(["mutatingwebhookconfigurations"]))
        .unwrap();
    assert_eq!(webhook_rule["verbs"], json!(["delete"]));

    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");

    // Value names of the Go gVisor extension's chart keep working.
    let objects = render(&[
        "--set",
        "controllers.concurrentSyncs=9",
        "--set",
        "controllers.ignoreOperationAnnotation=true",
        "--set",
        "controllers.heartbeat.renewIntervalSeconds=7",
        "--set",
        "disableControllers[0]=heartbeat",
        "--set",
        "vpa.enabled=false",
        "--set",
        "image.tag=sha256:0123",
        "--set",
        "imageVectorOverwrite.images[0].name=runtime-gvisor-installation",
        "--set",
        "imageVectorOverwrite.images[0].repository=registry.example.com/agent",
        "--set",
        "gardener.version=v1.150.0",
    ]);
    let deployment = object(&objects, "Deployment").unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args = container["command"].to_string();
    assert!(args.contains("--max-concurrent-reconciles=9"), "{args}");
    assert!(
        args.contains("--ignore-operation-annotation=true"),
        "{args}"
    );
    assert!(
        !args.contains("--heartbeat-namespace"),
        "heartbeat disabled: {args}"
    );
    assert!(args.contains("--gardener-version=v1.150.0"), "{args}");
    assert_eq!(
        container["image"],
        "ghcr.io/gardener-extension-runtime-sandbox/controller@sha256:0123"
    );
    assert!(object(&objects, "VerticalPodAutoscaler").is_none());
    let overwrite = object(&objects, "ConfigMap").expect("image vector overwrite ConfigMap");
    assert!(
        overwrite["data"]["images_overwrite.yaml"]
            .as_str()
            .unwrap()
            .contains("registry.example.com/agent")
    );
    assert!(
        container["env"]
            .to_string()
            .contains("IMAGEVECTOR_OVERWRITE")
    );
    let role = object(&objects, "Role").unwrap();
    assert!(
        !role.to_string().contains("gardener-extension-heartbeat"),
        "no heartbeat, no heartbeat Lease"
    );
}

/// What gardenlet (and gardener-operator) merge into the values when they deploy the chart
/// (pkg/gardenlet/controller/controllerinstallation): the schema must let them through.
#[test]
fn values_gardener_injects_are_accepted() {
    let values = json!({
        "gardener": {
            "version": "v1.150.0",
            "garden": {"clusterIdentity": "garden", "genericKubeconfigSecretName": "generic-garden-kubeconfig-1"},
            "gardenlet": {"featureGates": {"DefaultSeccompProfile": true}},
            "seed": {"name": "seed-1", "clusterIdentity": "seed-1", "provider": "local", "region": "local",
                     "annotations": {}, "labels": {}, "protected": false, "visible": true, "taints": [],
                     "volumeProvider": "", "volumeProviders": [], "networks": {}, "blockCIDRs": [], "spec": {}},
            "runtimeCluster": {"enabled": "true", "priorityClassName": "gardener-garden-system-200"},
        },
        "usablePorts": [10250],
        "image": {"tag": "v0.1.0"},
    });
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), values.to_string()).unwrap();
    let objects = render(&["-f", &file.path().to_string_lossy()]);
    let deployment = object(&objects, "Deployment").unwrap();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["priorityClassName"],
        "gardener-garden-system-200"
    );
}

/// Every rendered object is accepted by the real API server (with the VPA CRD a seed has),
/// and a pod from the Deployment's template is admitted in a namespace that enforces the
/// `restricted` Pod Security Standard; the same pod running as root is refused there, so the
/// check can fail.
#[tokio::test]
async fn the_api_server_accepts_the_objects_and_admits_the_pod_as_restricted() {
    let cp = sandbox_testenv::shared();
    let client = cp.client().await.unwrap();
    let ns = chart::restricted_namespace(cp, &client, "extension-chart", "gardener-system-900")
        .await
        .unwrap();
    let objects = chart::template("runtime-sandbox", &ns, &[])
        .unwrap()
        .unwrap();
    for o in &objects {
        let mut o = o.clone();
        // Cluster-scoped names carry the namespace so that tests sharing the API server don't clash.
        if o["metadata"]["namespace"].is_null() {
            o["metadata"]["name"] =
                json!(format!("{}-{ns}", o["metadata"]["name"].as_str().unwrap()));
        }
        chart::create(&client, &o).await.unwrap_or_else(|e| {
            panic!(
                "the API server refused {} {}: {e}",
                o["kind"], o["metadata"]["name"]
            )
        });
    }

    let template = &object(&objects, "Deployment").unwrap()["spec"]["template"];
    let pod_from = |spec: &Value, name: &str| -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": template["metadata"]["labels"]},
            "spec": spec,
        }))
        .unwrap()
    };
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let spec = template["spec"].clone();
    pods.create(&dry_run, &pod_from(&spec, "restricted"))
        .await
        .unwrap_or_else(|e| panic!("the chart's pod is not admitted as restricted: {e}"));

    let mut root = spec.clone();
    root["securityContext"]["runAsNonRoot"] = json!(false);
    root["securityContext"]["runAsUser"] = json!(0);
    let refused = pods.create(&dry_run, &pod_from(&root, "root")).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains("restricted")),
        "a root pod must be refused by the restricted namespace: {refused:?}"
    );
}

#[test]
fn registration_files_are_generated_from_this_chart() {
    let root = sandbox_testenv::repo_root();
    for (rel, want) in sandbox_image::chart::generated(&root).unwrap() {
        let have = std::fs::read_to_string(root.join(&rel)).unwrap_or_default();
        assert!(
            have == want,
            "{} is stale: run `make generate`",
            rel.display()
        );
    }
}

#[test]
fn versions_agree_between_workspace_chart_and_images() {
    let version = env!("CARGO_PKG_VERSION");
    let dir = chart::chart_dir();
    assert_eq!(
        sandbox_image::chart::chart_field(&dir, "version").unwrap(),
        version
    );
    let tag = format!("v{version}");
    assert_eq!(
        sandbox_image::chart::chart_field(&dir, "appVersion").unwrap(),
        tag
    );
    assert_eq!(
        render(&[])
            .iter()
            .find(|o| o["kind"] == "Deployment")
            .unwrap()["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap(),
        tag
    );
    let vector =
        sandbox_runtime::image::ImageVector::parse(sandbox_runtime::image::DEFAULT_IMAGE_VECTOR)
            .unwrap();
    // Every image is of this release; the gVisor node agent's tag also carries its gVisor
    // version (`<release>-gvisor-<version>`, issue 27), which names the version folder on nodes.
    for image in vector.images {
        let image_tag = image.tag.as_deref().unwrap_or_default();
        let release = image_tag.split("-gvisor-").next().unwrap_or_default();
        assert_eq!(release, tag, "{}", image.name);
        assert_eq!(
            image_tag.contains("-gvisor-"),
            image.name == sandbox_runtime::image::NODE_AGENT_IMAGE,
            "{image_tag}"
        );
    }
}

/// gardener-operator's `Extension` (example/extension.yaml) passes the validation of the
/// operator's CRD on a real API server.
#[tokio::test]
async fn the_operator_extension_is_accepted_by_its_crd() {
    let cp = sandbox_testenv::shared();
    let client = cp.client().await.unwrap();
    let text = std::fs::read_to_string(sandbox_testenv::repo_root().join("example/extension.yaml"))
        .unwrap();
    let mut extension: Value = serde_saphyr::from_str(&text).unwrap();
    let name = format!("runtime-sandbox-{}", std::process::id());
    extension["metadata"]["name"] = json!(name);
    chart::create(&client, &extension)
        .await
        .unwrap_or_else(|e| panic!("the API server refused example/extension.yaml: {e}"));
    // The CRD's validation is real: a resource without a type is refused.
    extension["metadata"]["name"] = json!(format!("{name}-bad"));
    extension["spec"]["resources"][0]
        .as_object_mut()
        .unwrap()
        .remove("type");
    assert!(
        chart::create(&client, &extension).await.is_err(),
        "a resource without type must be refused"
    );
}

/// `example/controller-registration.yaml` is accepted by the real gardener-apiserver of a test
/// garden (its defaulting and validation, reached through the garden's aggregator), and what
/// the garden stores is what the file says: the chart bytes and the registered type.
#[tokio::test]
async fn the_registration_is_accepted_by_gardener_apiserver() {
    let garden = sandbox_testenv::garden::shared();
    let _logs = garden.logs_on_panic();
    let client = garden.client().await.unwrap();
    let text = std::fs::read_to_string(
        sandbox_testenv::repo_root().join("example/controller-registration.yaml"),
    )
    .unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, ["ControllerDeployment", "ControllerRegistration"]);
    for doc in &docs {
        chart::create(&client, doc)
            .await
            .unwrap_or_else(|e| panic!("gardener-apiserver refused the {}: {e}", doc["kind"]));
    }

    let get = |api_version: &'static str, kind: &'static str| {
        let client = client.clone();
        async move {
            let (group, version) = api_version.split_once('/').unwrap();
            let gvk = kube::core::GroupVersionKind::gvk(group, version, kind);
            let api: Api<kube::api::DynamicObject> =
                Api::all_with(client, &kube::core::ApiResource::from_gvk(&gvk));
            serde_json::to_value(api.get("runtime-sandbox").await.unwrap()).unwrap()
        }
    };
    let deployment = get("core.gardener.cloud/v1", "ControllerDeployment").await;
    assert_eq!(deployment["helm"]["rawChart"], docs[0]["helm"]["rawChart"]);
    assert_eq!(deployment["helm"]["values"], docs[0]["helm"]["values"]);
    let registration = get("core.gardener.cloud/v1beta1", "ControllerRegistration").await;
    assert_eq!(
        registration["spec"]["resources"],
        json!([
            {"kind": "ContainerRuntime", "type": "gvisor", "primary": true},
            {"kind": "ContainerRuntime", "type": "kata", "primary": true},
        ])
    );
    assert_eq!(
        registration["spec"]["deployment"]["deploymentRefs"],
        json!([{"name": "runtime-sandbox"}])
    );
    assert_eq!(
        registration["metadata"]["annotations"]["security.gardener.cloud/pod-security-enforce"],
        "restricted"
    );

    // Gardener's admission is real: a second registration of the same kind and type under
    // another name is refused (plugin ControllerRegistrationResources), since one controller
    // owns each ContainerRuntime type.
    let mut twice = docs[1].clone();
    twice["metadata"]["name"] = json!("runtime-sandbox-twice");
    // Only the last type we register: Gardener's plugin (v1.150) indexes the existing
    // registrations by kind alone, so of our two types it remembers only the last one listed
    // (kata); a second controller for gvisor would slip through. That is Gardener's behaviour,
    // not ours, and docs/operations.md warns about it.
    twice["spec"]["resources"] =
        json!([{"kind": "ContainerRuntime", "type": "kata", "primary": true}]);
    let error = chart::create(&client, &twice)
        .await
        .expect_err("a second controller for ContainerRuntime/kata must be refused");
    assert!(
        error
            .to_string()
            .contains("controls resource ContainerRuntime/kata primarily"),
        "{error}"
    );
}
