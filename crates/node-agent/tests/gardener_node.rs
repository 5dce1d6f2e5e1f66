//! The node agent on nodes that Gardener set up: the real gardener-node-agent (pinned Gardener
//! release) owns `config.toml` of a real containerd 1.7 and 2.4 and restarts containerd over
//! D-Bus, as on every Gardener node (`sandbox_testenv::gardener_node`).
//!
//! Proven per containerd version: the install keeps every setting gardener-node-agent wrote
//! (containerd's CRI configuration equals what it was, plus our handler); gVisor pods run;
//! across ten OperatingSystemConfig changes, each of which makes gardener-node-agent re-encode
//! `config.toml` and restart containerd, our handler stays loaded and our agent's re-runs
//! write nothing and restart nothing (no restart ping-pong; the count is printed); the
//! uninstall leaves `config.toml` with nothing of ours, and gardener-node-agent's next change
//! does not bring it back. On 1.7, a lost update of ours (gardener-node-agent writes without a
//! compare) is repaired by the running agent, with the ready label off while containerd runs
//! without the handler. A simulated reboot brings the node back with the handler loaded.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::time::Instant;

use k8s_openapi::api::core::v1::Node;
use sandbox_node_agent::agent::{self, Options};
use sandbox_node_agent::containerd::{CONF_D_IMPORT, Config};
use sandbox_node_agent::cri::{Cri, HandlerState};
use sandbox_node_agent::daemon::{Daemon, Mode};
use sandbox_node_agent::host::{self, Host};
use sandbox_node_agent::restart::Systemd;
use sandbox_runtime::gvisor::node::{DROP_IN, INSTALL_DIR};
use sandbox_runtime::gvisor::{GVisorConfig, node_plan};
use sandbox_testenv::gardener_node::{GardenerNodeAgent, MIRRORED_REGISTRY, NODE_NAME};
use sandbox_testenv::node::{BINARY_PATH, Flavor, TestNode};
use sandbox_testenv::pods::{self, Pods};
use sandbox_testenv::{ControlPlane, eventually};

const OSC_CHANGES: u32 = 10;
const APPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// The CRI configuration containerd runs with, without our handler.
async fn without_ours(cri: &Cri) -> serde_json::Value {
    let mut config = cri.config().await.unwrap();
    if let Some(runtimes) = config
        .pointer_mut("/containerd/runtimes")
        .and_then(|r| r.as_object_mut())
    {
        runtimes.remove("runsc");
    }
    config
}

async fn on_a_gardener_node(flavor: Flavor) {
    let control_plane = ControlPlane::start().await.unwrap();
    let node = Arc::new(TestNode::new(flavor).unwrap());
    node.start().unwrap();
    node.import_images().unwrap();
    let mut gardener = GardenerNodeAgent::start(&control_plane, node.clone())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "gardener-node-agent did not apply its OSC: {e}\ncontainerd's log:\n{}\nconfig.toml:\n{}",
                node.log_tail(30),
                std::fs::read_to_string(node.config_path()).unwrap_or_default()
            )
        });

    // What gardener-node-agent made of config.toml.
    let written = std::fs::read_to_string(node.config_path()).unwrap();
    for expected in [
        CONF_D_IMPORT,
        "/etc/containerd/certs.d",
        "SystemdCgroup = true",
    ] {
        assert!(
            written.contains(expected),
            "gardener-node-agent did not write {expected}:\n{written}"
        );
    }
    assert!(
        node.path(&format!(
            "/etc/containerd/certs.d/{MIRRORED_REGISTRY}/hosts.toml"
        ))
        .exists()
    );
    let cri = Cri::new(node.socket());
    let gardeners = without_ours(&cri).await;

    // Install, restarting containerd over the same D-Bus as gardener-node-agent.
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("image");
    sandbox_testenv::images::write_gvisor_payload(
        &sandbox_testenv::Tool::Gvisor.path().unwrap(),
        b"",
        &source,
    )
    .unwrap();
    let plan = node_plan(&GVisorConfig::default(), "registry.local/node-agent:v1");
    let mut options = Options::new(Host::new(node.root()), plan, BINARY_PATH.to_string());
    options.source = source;
    let restarter = Systemd::new(gardener.bus().socket(), "containerd.service");
    let report = agent::install(&options, &restarter).await.unwrap();
    assert_eq!(report.restarts, 1, "{report:?}");
    match flavor {
        // containerd 1.x would replace the CRI plugin's table with a drop-in's: in place.
        Flavor::V17 => {
            assert!(!node.path(DROP_IN).exists(), "a drop-in on containerd 1.7");
            assert!(
                report.files.iter().any(|f| f == host::CONFIG_TOML),
                "{report:?}"
            );
        }
        // containerd 2.x merges imports: the drop-in, config.toml as gardener-node-agent wrote it.
        _ => {
            assert!(node.path(DROP_IN).exists());
            assert_eq!(
                std::fs::read_to_string(node.config_path()).unwrap(),
                written
            );
        }
    }
    assert_eq!(
        without_ours(&cri).await,
        gardeners,
        "a setting gardener-node-agent wrote changed with the install"
    );
    let handler = || async {
        cri.handler("runsc", "io.containerd.runsc.v1")
            .await
            .unwrap()
    };
    assert_eq!(handler().await, HandlerState::Loaded);
    let pods = Pods::new(node.socket());
    let logs: PathBuf = node.path("/var/log/pods");
    let run = pods::run_pod(&pods, "runsc", &["dmesg"], &logs)
        .await
        .unwrap_or_else(|e| panic!("{e}\ncontainerd log:\n{}", node.log_tail(30)));
    assert!(run.output.contains("Starting gVisor..."), "{}", run.output);

    // OSC changes: gardener-node-agent re-encodes config.toml and restarts containerd each
    // time; our handler stays, and our agent's next run has nothing to do.
    let before = gardener.systemd().calls().len();
    let mut ours = 0;
    for _ in 0..OSC_CHANGES {
        gardener.apply_next(APPLY_TIMEOUT).await.unwrap();
        assert_eq!(
            handler().await,
            HandlerState::Loaded,
            "our handler is gone after gardener-node-agent's change:\n{}",
            std::fs::read_to_string(node.config_path()).unwrap()
        );
        let report = agent::install(&options, &restarter).await.unwrap();
        assert!(report.files.is_empty(), "{report:?}");
        ours += report.restarts;
    }
    let restarts = (gardener.systemd().calls().len() - before) as u32;
    println!(
        "containerd {flavor:?}: {OSC_CHANGES} OSC changes, {restarts} containerd restarts ({} by gardener-node-agent, {ours} by our agent)",
        restarts - ours
    );
    assert_eq!(
        ours, 0,
        "our agent restarted containerd after gardener-node-agent's changes"
    );
    assert_eq!(
        restarts, OSC_CHANGES,
        "one restart per OSC change (gardener-node-agent's), no more"
    );

    if flavor == Flavor::V17 {
        lost_update_is_repaired(&control_plane, &node, &options, &gardener).await;
    }
    reboot(&node, &mut gardener, &options, &restarter).await;

    // Uninstall: nothing of ours left, and gardener-node-agent's next change does not bring
    // it back.
    agent::uninstall(&options, &restarter).await.unwrap();
    gardener.apply_next(APPLY_TIMEOUT).await.unwrap();
    let config = std::fs::read_to_string(node.config_path()).unwrap();
    assert!(!config.contains("runsc"), "{config}");
    assert!(!node.path(DROP_IN).exists(), "{DROP_IN} is still there");
    let versions: Vec<_> = std::fs::read_dir(node.path(INSTALL_DIR))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(versions.is_empty(), "gVisor versions left: {versions:?}");
    assert_eq!(handler().await, HandlerState::Missing);
    let mut now = without_ours(&cri).await;
    let mut then = gardeners;
    // The one value the OSC changes alternates; everything else is as before the install.
    for config in [&mut now, &mut then] {
        if let Some(o) = config.as_object_mut() {
            o.remove("imagePullProgressTimeout");
        }
    }
    assert_eq!(
        now, then,
        "the uninstall changed what gardener-node-agent wrote"
    );
}

/// The node's ready label for gVisor.
async fn ready_label(client: &kube::Client, label: &str) -> Option<String> {
    let nodes: kube::Api<Node> = kube::Api::all(client.clone());
    nodes
        .get(NODE_NAME)
        .await
        .unwrap()
        .metadata
        .labels
        .and_then(|l| l.get(label).cloned())
}

/// gardener-node-agent writes `config.toml` without a compare: an edit of ours between its
/// read and its write is lost (on containerd 1.x, where our handler lives in `config.toml`).
/// Played here by removing our entry as its stale write would. The running agent notices
/// within its check interval: with containerd still running the handler, it writes the entry
/// back (no label change); after containerd restarted without it, the ready label goes off,
/// and comes back once the run that follows has repaired it.
async fn lost_update_is_repaired(
    control_plane: &ControlPlane,
    node: &Arc<TestNode>,
    options: &Options,
    gardener: &GardenerNodeAgent,
) {
    let client = control_plane.client().await.unwrap();
    let label = options.plan.ready_label.clone();
    let port = sandbox_testenv::free_port().unwrap();
    let daemon = Daemon {
        mode: Mode::Install,
        options: Options {
            host: options.host.clone(),
            plan: options.plan.clone(),
            source: options.source.clone(),
            binary_path: options.binary_path.clone(),
            restart_timeout: options.restart_timeout,
            lock_timeout: options.lock_timeout,
        },
        restarter: Arc::new(Systemd::new(gardener.bus().socket(), "containerd.service")),
        kube: Some((client.clone(), NODE_NAME.to_string())),
        health: ([127, 0, 0, 1], port).into(),
        resync: Duration::from_secs(3600),
        verify: Duration::from_secs(1),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(daemon.run(async {
        let _ = stopped.await;
    }));
    eventually(30, "the node labelled ready", async || {
        (ready_label(&client, &label).await.as_deref() == Some("true")).then_some(())
    })
    .await;
    let without_ours = |node: &TestNode| {
        let text = std::fs::read_to_string(node.config_path()).unwrap();
        let cleaned = Config::parse(&text)
            .unwrap()
            .without_handlers(&["runsc"])
            .expect("our entry is in config.toml");
        std::fs::write(node.config_path(), cleaned).unwrap();
    };

    // The entry lost, containerd still running it: written back, the label stays on.
    without_ours(node);
    eventually(20, "the entry written back", async || {
        let config = std::fs::read_to_string(node.config_path()).unwrap();
        config.contains("runsc").then_some(())
    })
    .await;

    // The entry lost and containerd restarted (gardener-node-agent's next change): the label
    // goes off while the handler is missing, and comes back.
    let cri = Cri::new(node.socket());
    eventually(20, "the repair after the restart to settle", async || {
        let state = cri
            .handler("runsc", "io.containerd.runsc.v1")
            .await
            .unwrap();
        (state == HandlerState::Loaded).then_some(())
    })
    .await;
    without_ours(node);
    node.restart().unwrap();
    // Not `eventually`: the label is off only for a moment, so this watches every 20 ms.
    let mut went_off = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match ready_label(&client, &label).await.as_deref() {
            Some("true") if went_off => break,
            Some("true") => {}
            _ => went_off = true,
        }
        assert!(
            Instant::now() < deadline,
            "the label back after the repair within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        cri.handler("runsc", "io.containerd.runsc.v1")
            .await
            .unwrap(),
        HandlerState::Loaded
    );
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

/// A reboot: containerd and gardener-node-agent stop, `/run` is emptied, both start again
/// (the kubelet would too). The binaries and configuration survive on disk, so containerd
/// comes back with our handler loaded, gVisor pods run, and our agent's next run has nothing
/// to do.
async fn reboot(
    node: &Arc<TestNode>,
    gardener: &mut GardenerNodeAgent,
    options: &Options,
    restarter: &Systemd,
) {
    gardener.stop();
    node.stop();
    let run = node.path("/run");
    for entry in std::fs::read_dir(&run).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
    node.start().unwrap();
    gardener.start_again().unwrap();
    let cri = Cri::new(node.socket());
    // The socket answers before the CRI plugin is initialized ("server is not initialized
    // yet", seen under an empty-cache CI's load): ask until CRI answers, then judge.
    let state = sandbox_testenv::eventually_or(30, "CRI after the reboot", async || {
        cri.handler("runsc", "io.containerd.runsc.v1")
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    assert_eq!(state, HandlerState::Loaded, "not loaded after the reboot");
    let pods = Pods::new(node.socket());
    let run = pods::run_pod(&pods, "runsc", &["dmesg"], &node.path("/var/log/pods"))
        .await
        .unwrap_or_else(|e| panic!("{e}\ncontainerd log:\n{}", node.log_tail(30)));
    assert!(run.output.contains("Starting gVisor..."), "{}", run.output);
    let report = agent::install(options, restarter).await.unwrap();
    assert!(
        report.files.is_empty() && report.binaries.is_empty() && report.restarts == 0,
        "{report:?}"
    );
}

#[tokio::test]
async fn on_containerd_1_7_that_gardener_node_agent_set_up() {
    on_a_gardener_node(Flavor::V17).await;
}

#[tokio::test]
async fn on_containerd_2_4_that_gardener_node_agent_set_up() {
    on_a_gardener_node(Flavor::V2).await;
}
