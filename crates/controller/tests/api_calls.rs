//! The exact API requests of the controller, read from the test control plane's audit log:
//! a create, an unchanged re-reconcile and a restart with up-to-date objects. Reads come from
//! watches, so a create makes only its 7 writes and an unchanged re-reconcile 3; a restart
//! makes the watches' five initial lists and nothing else. A change that
//! adds, drops or reorders a request fails here; update the expectation only on purpose (and
//! say why in the commit).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::IMAGE;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use sandbox_controller::ControllerConfig;
use sandbox_probes::Readiness;
use sandbox_testenv::ControlPlane;
use serde_json::json;

const USER: &str = "api-calls-controller";

/// The controller's requests after line `from` of the audit log, as `verb resource[/sub] name`
/// (watches, which end at arbitrary times, are left out), and the log's line count.
fn requests(cp: &ControlPlane, from: usize) -> (Vec<String>, usize) {
    let (requests, lines) = sandbox_testenv::audit::read(cp.audit_log().unwrap(), from);
    let mut out = Vec::new();
    for request in requests {
        if request.user != USER || request.verb == "watch" {
            continue;
        }
        let resource = request.resource_path();
        let name = request.name.as_str();
        // Our Secrets' names carry a content checksum: keep the stable part.
        let name = match name.rfind('-') {
            Some(i) if resource == "secrets" && name.starts_with("managedresource-") => {
                format!("{}-<checksum>", &name[..i])
            }
            _ => name.to_string(),
        };
        out.push(
            format!("{} {resource} {name}", request.verb)
                .trim_end()
                .to_string(),
        );
    }
    (out, lines)
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
    let cp = ControlPlane::start_audited().await.unwrap();
    let _logs = cp.logs_on_panic();
    let s = common::shoot(&cp, "calls", json!({})).await;
    let stop = start_controller(&cp).await;
    let (_, start) = settled(&cp, 0).await;

    // Create, as gardenlet does (with the reconcile annotation).
    let ts = s.gardenlet_create("pool-a", None).await;
    s.wait_ready("gvisor-pool-a", &ts).await;
    let (create, after_create) = settled(&cp, start).await;
    let shared = "managedresource-extension-runtime-gvisor-<checksum>";
    let pool = "managedresource-extension-runtime-gvisor-installation-pool-a-<checksum>";
    // Reads come from watches (Clusters, our ManagedResources): every request is a write.
    assert_eq!(
        create,
        [
            "patch containerruntimes/status gvisor-pool-a".to_string(), // Processing
            // Then the reconcile annotation goes and our finalizer comes, in one patch (a run
            // that stops before its status says so leaves gardenlet's request in place).
            "patch containerruntimes gvisor-pool-a".into(),
            format!("create secrets {shared}"),
            "create managedresources extension-runtime-gvisor".into(),
            // The health check's node-reader token, requested from gardener-resource-manager.
            "create secrets shoot-access-extension-runtime-gvisor".into(),
            format!("create secrets {pool}"),
            "create managedresources extension-runtime-gvisor-installation-pool-a".into(),
            "patch containerruntimes/status gvisor-pool-a".into(), // Succeeded
        ],
        "create"
    );

    // gardenlet asks again with nothing changed: two status writes and, between them, the
    // annotation consumed; the
    // ManagedResources are up to date in the cache, so no read and no write for them.
    let ts = s.annotate("gvisor-pool-a", "reconcile").await;
    s.wait_ready("gvisor-pool-a", &ts).await;
    let (again, after_again) = settled(&cp, after_create).await;
    assert_eq!(
        again,
        [
            "patch containerruntimes/status gvisor-pool-a",
            "patch containerruntimes gvisor-pool-a",
            "patch containerruntimes/status gvisor-pool-a",
        ],
        "unchanged re-reconcile"
    );

    // A restart relists and finds everything up to date: no reconcile, no write.
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, before_restart) = settled(&cp, after_again).await;
    let _stop = start_controller(&cp).await;
    let (mut restart, _) = settled(&cp, before_restart).await;
    // Five watches start at once; their lists come in any order. The two Secret lists are
    // by name (the shoot-access Secrets' metadata, for the health check, which then needs no
    // Secret read while they do not change).
    restart.sort();
    assert_eq!(
        restart,
        [
            "list clusters",
            "list containerruntimes",
            "list managedresources",
            "list secrets shoot-access-extension-runtime-gvisor",
            "list secrets shoot-access-extension-runtime-kata",
        ],
        "restart with up-to-date objects: the initial lists, nothing else"
    );

    // The figures docs/testing.md quotes come from here: printed, and checked against the doc.
    let writes = |calls: &[String]| {
        calls
            .iter()
            .filter(|c| {
                !c.starts_with("list ") && !c.starts_with("get ") && !c.starts_with("watch ")
            })
            .count()
    };
    let table = [
        ("a create", &create),
        ("an unchanged re-reconcile", &again),
        ("a restart with up-to-date objects", &restart),
    ]
    .iter()
    .map(|(what, calls)| format!("| {what} | {} | {} |\n", calls.len(), writes(calls)))
    .collect::<String>();
    let table =
        format!("| controller requests for | requests | writes |\n| --- | --- | --- |\n{table}");
    println!("{table}");
    let doc = sandbox_testenv::repo_root().join("docs/testing.md");
    let text = std::fs::read_to_string(&doc).unwrap();
    assert!(
        text.contains(&table),
        "{} must quote this test's figures; replace its table with:\n{table}",
        doc.display()
    );
}
