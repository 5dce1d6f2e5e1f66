//! The OperatingSystemConfig webhook with the real kube-apiserver calling it: registration
//! (certificates in Secrets, the MutatingWebhookConfiguration with our CA bundle, owned by the
//! extension's namespace), the devmapper unit added only to reconcile OSCs of pools offering
//! Firecracker, idempotence (a second mutation changes no byte), and a CA renewal that keeps
//! the API server's calls working throughout.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use sandbox_runtime::kata::devmapper::{SCRIPT, UNIT};
use sandbox_testenv::ShootBuilder;
use sandbox_testenv::{ControlPlane, eventually, free_port, gardenlet};
use sandbox_webhook::certificates::{NOT_AFTER, NOT_BEFORE};
use sandbox_webhook::registration::{self, CA_SECRET, Mode, NAME, SERVER_SECRET};
use serde_json::{Value, json};

fn osc_api(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(
        "extensions.gardener.cloud",
        "v1alpha1",
        "OperatingSystemConfig",
    );
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

fn osc(name: &str, pool: &str, purpose: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "extensions.gardener.cloud/v1alpha1",
        "kind": "OperatingSystemConfig",
        "metadata": {"name": name, "labels": {"worker.gardener.cloud/pool": pool}},
        "spec": {
            "type": "debian",
            "purpose": purpose,
            "files": [{"path": "/etc/gardener/x", "permissions": 0o644,
                       "content": {"inline": {"encoding": "", "data": "x"}}}],
            "units": [{"name": "containerd.service", "command": "start", "enable": true}],
        }
    }))
    .unwrap()
}

fn ours(object: &DynamicObject) -> (usize, usize) {
    let files = object.data["spec"]["files"]
        .as_array()
        .map_or(0, |f| f.iter().filter(|f| f["path"] == SCRIPT).count());
    let units = object.data["spec"]["units"]
        .as_array()
        .map_or(0, |u| u.iter().filter(|u| u["name"] == UNIT).count());
    (files, units)
}

fn kata(hypervisors: &[&str]) -> Value {
    json!({"name": "containerd", "containerRuntimes": [{"type": "kata", "providerConfig": {
        "apiVersion": "kata.runtime.extensions.config.gardener.cloud/v1alpha1",
        "kind": "KataConfiguration", "hypervisors": hypervisors}}]})
}

/// Dry-run creates of `object` until the API server calls our webhook (its configuration
/// reaches the API server's admission chain asynchronously), returning the mutated object.
async fn until_mutated(api: &Api<DynamicObject>, object: &DynamicObject) -> DynamicObject {
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    eventually(30, "the API server calls the webhook", async || {
        let created = api.create(&dry_run, object).await.unwrap();
        (ours(&created) == (1, 1)).then_some(created)
    })
    .await
}

#[tokio::test]
async fn the_api_server_calls_the_webhook_for_pools_offering_firecracker_only() {
    let cp = ControlPlane::start().await.unwrap();
    let _logs = cp.logs_on_panic();
    let client = cp.client().await.unwrap();
    let extension_ns = cp
        .namespace(&client, "extension-runtime-sandbox")
        .await
        .unwrap();
    let shoot_ns = cp.namespace(&client, "shoot--p--kata").await.unwrap();
    Api::<Namespace>::all(client.clone())
        .patch(
            &shoot_ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"gardener.cloud/role": "shoot"}}})),
        )
        .await
        .unwrap();
    gardenlet::create_cluster(
        &client,
        &shoot_ns,
        ShootBuilder::new("kata")
            .namespace("garden-p")
            .worker(json!({"name": "fc", "cri": kata(&["qemu", "fc"])}))
            .worker(json!({"name": "qemu", "cri": kata(&["qemu"])}))
            .build(),
    )
    .await;

    // Register and serve, as the controller does in `url` mode.
    let port = free_port().unwrap();
    let options = sandbox_webhook::Options {
        registration: registration::Config {
            mode: Mode::Url {
                host_port: format!("127.0.0.1:{port}"),
            },
            namespace: extension_ns.clone(),
            installation: Default::default(),
        },
        bind: format!("127.0.0.1:{port}").parse().unwrap(),
        renew_period: Duration::from_secs(2),
        install: Default::default(),
    };
    let server = tokio::spawn(sandbox_webhook::run(
        client.clone(),
        options.clone(),
        std::future::pending(),
    ));

    // The registration: Secrets, the configuration with our bundle, owned by our namespace.
    let configs = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let config = eventually(30, "the MutatingWebhookConfiguration", async || {
        configs.get_opt(NAME).await.unwrap()
    })
    .await;
    let secrets = Api::<Secret>::namespaced(client.clone(), &extension_ns);
    let ca = secrets.get(CA_SECRET).await.unwrap();
    let bundle = &ca.data.as_ref().unwrap()["bundle.crt"].0;
    let webhook = &config.webhooks.as_ref().unwrap()[0];
    assert_eq!(webhook.client_config.ca_bundle.as_ref().unwrap().0, *bundle);
    let owner = &config.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Namespace", extension_ns.as_str())
    );
    // The server certificate is issued after the configuration carries the CA bundle (so a
    // renewed CA is trusted before anything it signed is served): wait for it.
    eventually(30, "the server certificate Secret", async || {
        secrets.get_opt(SERVER_SECRET).await.unwrap().map(|_| ())
    })
    .await;

    // A reconcile OSC of the fc pool: our script and unit, once.
    let oscs = osc_api(&client, &shoot_ns);
    let fc = osc("gardener-node-agent-fc-77ac3", "fc", "reconcile");
    until_mutated(&oscs, &fc).await;
    let created = oscs.create(&PostParams::default(), &fc).await.unwrap();
    assert_eq!(ours(&created), (1, 1));
    let unit = created.data["spec"]["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == UNIT)
        .unwrap();
    assert!(
        unit["content"]
            .as_str()
            .unwrap()
            .contains("Before=containerd.service")
    );
    assert_eq!(
        created.data["spec"]["files"][0]["path"], "/etc/gardener/x",
        "other files kept, first"
    );

    // A second mutation is a no-op: writing the object back unchanged changes no byte, so the
    // API server does not even bump the resourceVersion.
    let again = oscs
        .replace(
            &created.metadata.name.clone().unwrap(),
            &PostParams::default(),
            &created,
        )
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        created.metadata.resource_version
    );
    assert_eq!(again.data["spec"], created.data["spec"]);

    // gardenlet rewrites the OSC from scratch (without our entries): they come back, once.
    let mut rewritten = osc("gardener-node-agent-fc-77ac3", "fc", "reconcile");
    rewritten.metadata.resource_version = again.metadata.resource_version.clone();
    rewritten.data["spec"]["files"]
        .as_array_mut()
        .unwrap()
        .push(json!({"path": "/etc/gardener/y", "content": {"inline": {"encoding": "", "data": "y"}}}));
    let updated = oscs
        .replace(
            "gardener-node-agent-fc-77ac3",
            &PostParams::default(),
            &rewritten,
        )
        .await
        .unwrap();
    assert_eq!(ours(&updated), (1, 1));
    assert_eq!(updated.data["spec"]["files"].as_array().unwrap().len(), 3);

    // Left alone: another pool's OSC, the provision OSC, a namespace that is not a shoot's.
    let qemu = oscs
        .create(
            &PostParams::default(),
            &osc("gardener-node-agent-qemu-1", "qemu", "reconcile"),
        )
        .await
        .unwrap();
    assert_eq!(ours(&qemu), (0, 0));
    let provision = oscs
        .create(
            &PostParams::default(),
            &osc("gardener-node-agent-fc-77ac3-init", "fc", "provision"),
        )
        .await
        .unwrap();
    assert_eq!(ours(&provision), (0, 0));
    let other_ns = cp.namespace(&client, "not-a-shoot").await.unwrap();
    let foreign = osc_api(&client, &other_ns)
        .create(
            &PostParams::default(),
            &osc("gardener-node-agent-fc-1", "fc", "reconcile"),
        )
        .await
        .unwrap();
    assert_eq!(ours(&foreign), (0, 0));

    // CA renewal: the CA looks 25 days old. One round renews it (the bundle carries old and
    // new), re-issues the server certificate, and the API server keeps calling us.
    let old_ca = String::from_utf8(ca.data.as_ref().unwrap()["ca.crt"].0.clone()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let aged: BTreeMap<String, String> = BTreeMap::from([
        (NOT_BEFORE.to_string(), (now - 25 * 86400).to_string()),
        (NOT_AFTER.to_string(), (now + 5 * 86400).to_string()),
    ]);
    secrets
        .patch(
            CA_SECRET,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": aged}})),
        )
        .await
        .unwrap();
    // The server's next round renews (every 2 s here).
    let renewed_bundle = eventually(30, "the CA renewed", async || {
        let renewed = secrets.get(CA_SECRET).await.unwrap();
        let bundle =
            String::from_utf8(renewed.data.as_ref().unwrap()["bundle.crt"].0.clone()).unwrap();
        (bundle.matches("BEGIN CERTIFICATE").count() == 2).then_some(bundle)
    })
    .await;
    assert!(
        renewed_bundle.ends_with(&old_ca),
        "the previous CA stays in the bundle"
    );
    let new_ca = renewed_bundle.strip_suffix(&old_ca).unwrap().to_string();
    // The bundle reaches the configuration right after the Secret (same round).
    eventually(
        10,
        "the renewed bundle reaches the configuration",
        async || {
            let config = configs.get(NAME).await.unwrap();
            let webhook = &config.webhooks.as_ref().unwrap()[0];
            (webhook.client_config.ca_bundle.as_ref().unwrap().0 == renewed_bundle.as_bytes())
                .then_some(())
        },
    )
    .await;
    // The running server now serves a certificate of the new CA (a client trusting only the
    // new CA completes its handshake), and the API server keeps calling us.
    eventually(
        30,
        "the server serves the renewed certificate",
        async || handshake_trusting(&new_ca, port).await.then_some(()),
    )
    .await;
    assert!(
        !handshake_trusting(&old_ca, port).await,
        "the old certificate is still served"
    );
    until_mutated(&oscs, &osc("probe-after-renewal", "fc", "reconcile")).await;

    server.abort();
    registration::deregister(&client).await.unwrap();
    assert!(configs.get_opt(NAME).await.unwrap().is_none());
}

/// Whether a TLS handshake with 127.0.0.1:`port` succeeds for a client trusting only `ca_pem`.
async fn handshake_trusting(ca_pem: &str, port: u16) -> bool {
    sandbox_testenv::tls_handshake(ca_pem, port, "127.0.0.1").await
}

/// Installation mode `osc`: the configuration fails closed, an OSC the webhook cannot decide
/// on (no Cluster) is refused rather than admitted without the runtime, and a pool offering
/// gVisor gets the handler and its files from the node image the image vector names.
#[tokio::test]
async fn in_installation_mode_osc_the_webhook_fails_closed_and_carries_the_runtime() {
    use sandbox_runtime::osc::InstallationMode;
    let cp = ControlPlane::start().await.unwrap();
    let _logs = cp.logs_on_panic();
    let client = cp.client().await.unwrap();
    let extension_ns = cp
        .namespace(&client, "extension-runtime-sandbox")
        .await
        .unwrap();
    let shoot_ns = cp.namespace(&client, "shoot--p--osc").await.unwrap();
    let orphan_ns = cp.namespace(&client, "shoot--p--nocluster").await.unwrap();
    for ns in [&shoot_ns, &orphan_ns] {
        Api::<Namespace>::all(client.clone())
            .patch(
                ns,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"gardener.cloud/role": "shoot"}}})),
            )
            .await
            .unwrap();
    }
    gardenlet::create_cluster(
        &client,
        &shoot_ns,
        ShootBuilder::new("osc")
            .namespace("garden-p")
            .worker(json!({"name": "sandbox", "cri": {"name": "containerd",
                "containerRuntimes": [{"type": "gvisor"}]}}))
            .build(),
    )
    .await;
    let image = format!(
        "registry.example/node-agent:v1-gvisor-20260905-160fafc42237@sha256:{}",
        "ab".repeat(32)
    );
    let port = free_port().unwrap();
    let options = sandbox_webhook::Options {
        registration: registration::Config {
            mode: Mode::Url {
                host_port: format!("127.0.0.1:{port}"),
            },
            namespace: extension_ns.clone(),
            installation: InstallationMode::Osc,
        },
        bind: format!("127.0.0.1:{port}").parse().unwrap(),
        renew_period: Duration::from_secs(30),
        install: sandbox_webhook::osc::Install {
            mode: InstallationMode::Osc,
            images: [(
                sandbox_runtime::image::NODE_AGENT_IMAGE.to_string(),
                (image.clone(), Default::default()),
            )]
            .into(),
        },
    };
    let _server = tokio::spawn(sandbox_webhook::run(
        client.clone(),
        options,
        std::future::pending(),
    ));
    let configs = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let config = eventually(30, "the MutatingWebhookConfiguration", async || {
        configs.get_opt(NAME).await.unwrap()
    })
    .await;
    assert_eq!(
        config.webhooks.as_ref().unwrap()[0]
            .failure_policy
            .as_deref(),
        Some("Fail")
    );
    let mut pool_osc = osc("cloud-config-sandbox", "sandbox", "reconcile");
    pool_osc.data["spec"]["criConfig"] = json!({"name": "containerd", "containerd": {"sandboxImage": "registry.example/pause:3.10"}});
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let oscs = osc_api(&client, &shoot_ns);
    let mutated = eventually(30, "the API server calls the webhook", async || {
        let created = match oscs.create(&dry_run, &pool_osc).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("creating the OSC: {e}");
                return None;
            }
        };
        created.data["spec"]["criConfig"]["containerd"]["plugins"]
            .is_array()
            .then_some(created)
    })
    .await;
    let plugin = &mutated.data["spec"]["criConfig"]["containerd"]["plugins"][0];
    assert_eq!(plugin["op"], "add");
    assert_eq!(plugin["path"][3], "runsc");
    let files = mutated.data["spec"]["files"].as_array().unwrap();
    let runsc = files
        .iter()
        .find(|f| {
            f["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("/20260905-160fafc42237/runsc"))
        })
        .unwrap_or_else(|| panic!("{files:#?}"));
    assert_eq!(runsc["content"]["imageRef"]["image"], image.as_str());
    assert_eq!(
        files[0]["path"], "/etc/gardener/x",
        "gardenlet's files kept, first"
    );

    // No Cluster: refused, with the reason.
    let refused = osc_api(&client, &orphan_ns)
        .create(&dry_run, &pool_osc)
        .await
        .unwrap_err();
    match refused {
        kube::Error::Api(e) => assert!(
            e.message
                .contains("cannot tell which runtimes pool sandbox offers")
                && e.message.contains("no Cluster"),
            "{e:?}"
        ),
        other => panic!("{other:?}"),
    }
    // Another pool of the shoot offers nothing: admitted unchanged.
    let mut plain = osc("cloud-config-plain", "plain", "reconcile");
    plain.data["spec"]["criConfig"] = json!({"name": "containerd", "containerd": {"sandboxImage": "registry.example/pause:3.10"}});
    let admitted = oscs.create(&dry_run, &plain).await.unwrap();
    assert_eq!(admitted.data["spec"], plain.data["spec"]);
}
