//! The exact API requests of the controller, read from the test control plane's audit log:
//! a create, an unchanged re-reconcile and a restart with up-to-date objects. A change that
//! adds, drops or reorders a request fails here; update the expectation only on purpose (and
//! say why in the commit).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::IMAGE;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use sandbox_controller::ControllerConfig;
use sandbox_health::Readiness;
use sandbox_testenv::{ControlPlane, Options};
use serde_json::{Value, json};

const USER: &str = "api-calls-controller";

/// The controller's requests after line `from` of the audit log, as `verb resource[/sub] name`
/// (watches, which end at arbitrary times, are left out), and the log's line count.
fn requests(cp: &ControlPlane, from: usize) -> (Vec<String>, usize) {
    let text = std::fs::read_to_string(cp.audit_log().unwrap()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for line in &lines[from.min(lines.len())..] {
        let entry: Value = serde_json::from_str(line).unwrap();
        if entry["user"]["username"] != USER || entry["verb"] == "watch" {
            continue;
        }
        let object = &entry["objectRef"];
        let mut resource = object["resource"].as_str().unwrap_or_default().to_string();
        if let Some(sub) = object["subresource"].as_str() {
            resource = format!("{resource}/{sub}");
        }
        let name = object["name"].as_str().unwrap_or_default();
        // Secret names carry a content checksum: keep the stable part.
        let name = match name.rfind('-') {
            Some(i) if resource == "secrets" => format!("{}-<checksum>", &name[..i]),
            _ => name.to_string(),
        };
        out.push(
            format!(
                "{} {resource} {name}",
                entry["verb"].as_str().unwrap_or_default()
            )
            .trim_end()
            .to_string(),
        );
    }
    (out, lines.len())
}

/// Waits until the audit log has been quiet (no new controller request) for a second.
async fn settled(cp: &ControlPlane, from: usize) -> (Vec<String>, usize) {
    let mut last = requests(cp, from);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = requests(cp, from);
        if now.0 == last.0 {
            return now;
        }
        last = now;
    }
}

/// Starts the controller in-process as [`USER`]; returns its shutdown trigger.
async fn start_controller(cp: &ControlPlane) -> tokio::sync::oneshot::Sender<()> {
    let path = cp.user_kubeconfig(USER, &["system:masters"]).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&path).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = Client::try_from(config).unwrap();
    let readiness = Readiness::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = ControllerConfig {
        image: IMAGE.into(),
        ..ControllerConfig::default()
    };
    tokio::spawn(sandbox_controller::run(
        client,
        config,
        Arc::new(sandbox_controller::metrics::NoObserver),
        readiness.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    while !readiness.is_ready() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_rereconcile_and_restart_make_exactly_these_requests() {
    let cp = ControlPlane::start_with(Options { audit_log: true })
        .await
        .unwrap();
    let _logs = cp.logs_on_panic();
    let s = common::shoot(&cp, "calls", json!({})).await;
    let ns = s.ns.clone();
    let stop = start_controller(&cp).await;
    let (_, start) = settled(&cp, 0).await;

    // Create, as gardenlet does (with the reconcile annotation).
    let ts = s.gardenlet_create("pool-a", None).await;
    s.wait_ready("gvisor-pool-a", &ts).await;
    let (create, after_create) = settled(&cp, start).await;
    let shared = "managedresource-extension-runtime-gvisor-<checksum>";
    let pool = "managedresource-extension-runtime-gvisor-installation-pool-a-<checksum>";
    assert_eq!(
        create,
        [
            format!("get clusters {ns}"),
            "patch containerruntimes gvisor-pool-a".into(), // the reconcile annotation goes
            "patch containerruntimes gvisor-pool-a".into(), // our finalizer
            "patch containerruntimes/status gvisor-pool-a".into(), // Processing
            format!("get secrets {shared}"),
            format!("create secrets {shared}"),
            "get managedresources extension-runtime-gvisor".into(),
            "create managedresources extension-runtime-gvisor".into(),
            format!("get secrets {pool}"),
            format!("create secrets {pool}"),
            "get managedresources extension-runtime-gvisor-installation-pool-a".into(),
            "create managedresources extension-runtime-gvisor-installation-pool-a".into(),
            "patch containerruntimes/status gvisor-pool-a".into(), // Succeeded
        ],
        "create"
    );

    // gardenlet asks again with nothing changed: reads, the annotation, two status writes.
    let ts = s.annotate("gvisor-pool-a", "reconcile").await;
    s.wait_ready("gvisor-pool-a", &ts).await;
    let (again, after_again) = settled(&cp, after_create).await;
    assert_eq!(
        again,
        [
            format!("get clusters {ns}"),
            "patch containerruntimes gvisor-pool-a".into(),
            "patch containerruntimes/status gvisor-pool-a".into(),
            format!("get secrets {shared}"),
            "get managedresources extension-runtime-gvisor".into(),
            format!("get secrets {pool}"),
            "get managedresources extension-runtime-gvisor-installation-pool-a".into(),
            "patch containerruntimes/status gvisor-pool-a".into(),
        ],
        "unchanged re-reconcile"
    );

    // A restart relists and finds everything up to date: no reconcile, no write.
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, before_restart) = settled(&cp, after_again).await;
    let _stop = start_controller(&cp).await;
    let (restart, _) = settled(&cp, before_restart).await;
    assert_eq!(
        restart,
        ["list containerruntimes"],
        "restart with up-to-date objects"
    );
}
