//! The product binary's `node-agent` on a real containerd 2.4 with the pinned runsc and a
//! real kube-apiserver: on an already-provisioned node it verifies runsc without restarting
//! containerd, labels its node with only the rendered RBAC, and reports ready on /readyz.
//! On a fresh node, with exactly the arguments of the rendered installer and cleanup
//! DaemonSets, it installs and uninstalls, restarting containerd through systemd's D-Bus API
//! on a real `dbus-daemon`.

use std::process::{Command, Stdio};
use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, PostParams};
use sandbox_node_agent::agent::{self, Options};
use sandbox_node_agent::cri::{Cri, HandlerState};
use sandbox_node_agent::host::Host;
use sandbox_runtime::gvisor::node::BINARIES;
use sandbox_runtime::gvisor::{self, GVisorConfig, NODE_READY_LABEL};
use sandbox_runtime::node_plan;
use sandbox_testenv::dbus::{FakeSystemd, SystemBus};
use sandbox_testenv::node::{BINARY_PATH, Flavor, TestNode};
use sandbox_testenv::restarter::NodeRestarter;
use sandbox_testenv::{free_port, http_get};

mod support;

use support::Kill;

/// The rendered installer container's memory limit in MiB.
fn memory_limit_mib() -> u64 {
    let pod = support::daemon_set_pod(&support::installer("i"));
    let resources = pod.containers[0].resources.clone().unwrap();
    resources.limits.unwrap()["memory"]
        .0
        .strip_suffix("Mi")
        .expect("a limit in Mi")
        .parse()
        .unwrap()
}

fn rendered<T: serde::de::DeserializeOwned>(kind: &str) -> T {
    support::object(&support::shared("i"), kind)
}

/// The image's folder: the pinned binaries with their checksums.
fn image_dir(work: &std::path::Path) -> std::path::PathBuf {
    let source = work.join("image");
    let gvisor_dir = sandbox_testenv::Tool::Gvisor.path().unwrap();
    sandbox_testenv::images::write_gvisor_payload(&gvisor_dir, &[], &source).unwrap();
    source
}

/// Creates a Node, the rendered RBAC, and a kubeconfig of the installer's ServiceAccount.
async fn node_and_rbac(cp: &sandbox_testenv::ControlPlane, node_name: &str) -> std::path::PathBuf {
    let client = cp.client().await.unwrap();
    Api::<Node>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": node_name}})).unwrap(),
        )
        .await
        .unwrap();
    let _ = Api::<ClusterRole>::all(client.clone())
        .create(
            &PostParams::default(),
            &rendered::<ClusterRole>("ClusterRole"),
        )
        .await;
    let _ = Api::<ClusterRoleBinding>::all(client.clone())
        .create(
            &PostParams::default(),
            &rendered::<ClusterRoleBinding>("ClusterRoleBinding"),
        )
        .await;
    cp.user_kubeconfig(
        "system:serviceaccount:kube-system:gvisor",
        &["system:serviceaccounts"],
    )
    .unwrap()
}

async fn ready_label(client: &kube::Client, node_name: &str) -> Option<String> {
    Api::<Node>::all(client.clone())
        .get(node_name)
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap_or_default()
        .get(NODE_READY_LABEL)
        .cloned()
}

async fn wait_ready(port: u16) {
    sandbox_testenv::eventually(60, "/readyz 200", async || {
        http_get(port, "/readyz").filter(|(code, _)| *code == 200)
    })
    .await;
}

#[tokio::test]
async fn node_agent_verifies_labels_and_reports_ready() {
    let cp = sandbox_testenv::shared();
    let client = cp.client().await.unwrap();
    let node = Arc::new(TestNode::new(Flavor::V2).unwrap());
    node.start().unwrap();
    let work = tempfile::tempdir().unwrap();

    // The image: pinned binaries with their checksums; the ConfigMap: the node plan.
    let source = image_dir(work.path());
    let config_dir = work.path().join("config");
    std::fs::create_dir_all(&config_dir).unwrap();
    // The image's tag names the gVisor version, which the agent reports.
    let plan = gvisor::node_plan(
        &GVisorConfig::default(),
        "registry.local/node-agent:v1-gvisor-agenttest",
    );
    std::fs::write(config_dir.join(node_plan::FILE_NAME), plan.to_yaml()).unwrap();

    // An already-provisioned node: an earlier run installed and restarted.
    let mut options = Options::new(Host::new(node.root()), plan, BINARY_PATH.into());
    options.source = source.clone();
    agent::install(&options, &NodeRestarter::new(node.clone()))
        .await
        .unwrap();
    let starts = node.starts();

    // The shoot: the node and the RBAC the controller renders, nothing more for the agent.
    let node_name = format!("node-{}", std::process::id());
    let kubeconfig = node_and_rbac(cp, &node_name).await;

    let binary = env!("CARGO_BIN_EXE_gardener-extension-runtime-sandbox");
    let args = |extra: &[String]| {
        let mut args: Vec<String> = vec![
            "node-agent".into(),
            "install".into(),
            format!("--host-root={}", node.root().display()),
            format!("--binary-path={BINARY_PATH}"),
            format!("--config-dir={}", config_dir.display()),
            format!("--source-dir={}", source.display()),
            format!("--node-name={node_name}"),
        ];
        args.extend_from_slice(extra);
        args
    };

    // --once: verified, no restart, the label is set. Under GNU time for the peak RSS, which
    // must stay well inside the DaemonSet's memory limit while it hashes ~136 MB of binaries
    // twice (it once read them whole and needed 229 MiB).
    let rusage = work.path().join("rusage");
    let output = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(&rusage)
        .arg(binary)
        .args(args(&["--once".into()]))
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .expect("GNU time (hack/prereqs.sh installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("restarts=0"), "{stdout}");
    let peak_kib: u64 = std::fs::read_to_string(&rusage)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let limit_mib = memory_limit_mib();
    assert!(
        peak_kib < limit_mib * 1024 / 2,
        "peak RSS {peak_kib} KiB is not below half the DaemonSet's {limit_mib} MiB limit"
    );
    assert_eq!(node.starts(), starts, "containerd was restarted");
    assert_eq!(
        ready_label(&client, &node_name).await.as_deref(),
        Some("true")
    );
    // Which version runs here: in the node's state annotation.
    let annotations = Api::<Node>::all(client.clone())
        .get(&node_name)
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap_or_default();
    let state = &annotations[&node_plan::state_annotation(NODE_READY_LABEL)];
    assert_eq!(state, r#"{"ready":true,"version":"agenttest"}"#);

    // As a daemon: /readyz turns 200 once verified.
    let port = free_port().unwrap();
    let _agent = Kill(
        Command::new(binary)
            .args(args(&[format!("--health-bind-address=127.0.0.1:{port}")]))
            .env("KUBECONFIG", &kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready(port).await;
    assert_eq!(http_get(port, "/healthz").map(|(code, _)| code), Some(200));
    // And in /readyz.
    let (_, body) = http_get(port, "/readyz").unwrap();
    assert!(body.contains("gvisor agenttest"), "{body}");
}

/// The container's arguments and literal environment variables of the rendered DaemonSet in
/// `set`, with the pod's paths mapped to the test's (as the kubelet's mounts would), and its
/// ConfigMap's data (if it has one) written to `config_dir`.
fn rendered_command(
    set: &support::Objects,
    node: &TestNode,
    config_dir: &std::path::Path,
    port: u16,
) -> (Vec<String>, Vec<(String, String)>) {
    std::fs::create_dir_all(config_dir).unwrap();
    if set.keys().any(|k| k.starts_with("configmap__")) {
        let config_map: ConfigMap = support::object(set, "ConfigMap");
        for (key, value) in config_map.data.unwrap() {
            std::fs::write(config_dir.join(key), value).unwrap();
        }
    }
    let pod = support::daemon_set_pod(set);
    let container = &pod.containers[0];
    let env = container.env.as_ref().unwrap();
    assert_eq!(
        env[0]
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "spec.nodeName",
        "NODE_NAME comes from the pod's node"
    );
    let literal_env = env
        .iter()
        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
        .collect();
    let args = container
        .args
        .clone()
        .unwrap()
        .into_iter()
        .map(|arg| match arg.split_once('=') {
            Some(("--host-root", _)) => format!("--host-root={}", node.root().display()),
            Some(("--config-dir", _)) => format!("--config-dir={}", config_dir.display()),
            Some(("--health-bind-address", _)) => format!("--health-bind-address=127.0.0.1:{port}"),
            _ => arg,
        })
        .collect();
    (args, literal_env)
}

#[tokio::test]
async fn rendered_installer_then_cleanup_install_and_uninstall_through_systemd() {
    let cp = sandbox_testenv::shared();
    let client = cp.client().await.unwrap();
    let node = Arc::new(TestNode::new(Flavor::V2).unwrap());
    node.start().unwrap();
    let config_before = std::fs::read(node.config_path()).unwrap();
    let starts = node.starts();
    let work = tempfile::tempdir().unwrap();
    let source = image_dir(work.path());
    let node_name = format!("node-e2e-{}", std::process::id());
    let kubeconfig = node_and_rbac(cp, &node_name).await;

    // The host's system bus with systemd on it, restarting this node's containerd.
    let bus = SystemBus::start(&node.path("/run/dbus/system_bus_socket")).unwrap();
    let systemd = FakeSystemd::for_node(&bus, node.clone()).await.unwrap();

    // What the controller renders for pool-a, with its ConfigMap as the kubelet mounts it.
    let installer = support::installer("registry.local/node-agent:test");
    let binary = env!("CARGO_BIN_EXE_gardener-extension-runtime-sandbox");
    let run = |(args, env): (Vec<String>, Vec<(String, String)>)| {
        Command::new(binary)
            .args(args)
            .envs(env)
            // The image's default source folder is not on this machine.
            .arg(format!("--source-dir={}", source.display()))
            .env("NODE_NAME", &node_name)
            .env("KUBECONFIG", &kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };

    // Install: one restart through D-Bus, runsc loaded, the node labelled, /readyz 200.
    let port = free_port().unwrap();
    let installer_dir = work.path().join("installer-config");
    let installer_pod = Kill(run(rendered_command(
        &installer,
        &node,
        &installer_dir,
        port,
    )));
    wait_ready(port).await;
    assert_eq!(
        systemd.calls(),
        [("containerd.service".to_string(), "replace".to_string())]
    );
    assert_eq!(node.starts(), starts + 1);
    let cri = Cri::new(node.socket());
    assert_eq!(
        cri.handler("runsc", "io.containerd.runsc.v1")
            .await
            .unwrap(),
        HandlerState::Loaded
    );
    assert_eq!(
        ready_label(&client, &node_name).await.as_deref(),
        Some("true")
    );
    // The installer pod goes (SIGTERM): the node keeps its runtime.
    drop(installer_pod);
    assert_eq!(
        cri.handler("runsc", "io.containerd.runsc.v1")
            .await
            .unwrap(),
        HandlerState::Loaded
    );

    // Cleanup: label gone, one more restart, runsc gone from containerd and the host.
    let cleanup = support::cleanup("registry.local/node-agent:test");
    let port = free_port().unwrap();
    let cleanup_dir = work.path().join("cleanup-config");
    let _cleanup_pod = Kill(run(rendered_command(&cleanup, &node, &cleanup_dir, port)));
    wait_ready(port).await;
    assert_eq!(systemd.calls().len(), 2);
    assert_eq!(node.starts(), starts + 2);
    assert_eq!(
        cri.handler("runsc", "io.containerd.runsc.v1")
            .await
            .unwrap(),
        HandlerState::Missing
    );
    assert_eq!(ready_label(&client, &node_name).await, None);
    for name in BINARIES {
        assert!(!node.path(BINARY_PATH).join(name).exists(), "{name} left");
    }
    assert_eq!(std::fs::read(node.config_path()).unwrap(), config_before);
    assert!(
        !node
            .path("/etc/containerd/conf.d/runtime-sandbox-gvisor.toml")
            .exists()
    );
}

/// The binary these tests run is the one we ship: no crash points compiled in.
#[test]
fn binary_under_test_has_no_crash_points() {
    support::assert_no_crash_points(std::path::Path::new(env!(
        "CARGO_BIN_EXE_gardener-extension-runtime-sandbox"
    )));
}

/// `--version` and `version` print the version, the git commit and the build date, as
/// Gardener's extensions do.
#[test]
fn version_names_commit_and_build_date() {
    let binary = env!("CARGO_BIN_EXE_gardener-extension-runtime-sandbox");
    for args in [&["--version"][..], &["version"][..]] {
        let output = std::process::Command::new(binary)
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success());
        let text = String::from_utf8(output.stdout).unwrap();
        assert!(
            text.starts_with(&format!(
                "gardener-extension-runtime-sandbox v{} (commit ",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        let commit = text
            .split("commit ")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap();
        let head = std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success());
        match head {
            Some(head) => assert_eq!(
                commit,
                String::from_utf8_lossy(&head.stdout).trim(),
                "{text}"
            ),
            None => assert_eq!(commit, "unknown", "no git checkout: {text}"),
        }
        let date = text
            .split("built ")
            .nth(1)
            .unwrap()
            .trim_end()
            .trim_end_matches(')');
        assert!(
            date.len() == 20 && date.ends_with('Z') && date.as_bytes()[10] == b'T',
            "RFC 3339 UTC date: {text}"
        );
    }
}
