//! The product binary's `node-agent` on a real containerd 2.4 with the pinned runsc and a
//! real kube-apiserver: on an already-provisioned node it verifies runsc without restarting
//! containerd, labels its node with only the rendered RBAC, and reports ready on /readyz.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, PostParams};
use sandbox_node_agent::agent::{self, GVISOR_BINARIES, Options};
use sandbox_node_agent::binaries::CHECKSUMS;
use sandbox_node_agent::host::Host;
use sandbox_node_agent::restart::{RestartError, Restarter};
use sandbox_runtime::gvisor::{self, NODE_READY_LABEL};
use sandbox_runtime::manifests::sha256_hex;
use sandbox_testenv::node::{BINARY_PATH, Flavor, TestNode};
use sandbox_testenv::{free_port, http_get};

struct RestartTestNode(Arc<TestNode>);

impl Restarter for RestartTestNode {
    fn restart(&self) -> BoxFuture<'_, Result<(), RestartError>> {
        let node = self.0.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || node.restart())
                .await
                .unwrap()
                .map_err(|e| RestartError(e.to_string()))
        })
    }
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rendered<T: serde::de::DeserializeOwned>(kind: &str) -> T {
    let set = gvisor::shared_objects().unwrap();
    let (_, yaml) = set
        .data()
        .iter()
        .find(|(key, _)| key.starts_with(&format!("{}__", kind.to_lowercase())))
        .unwrap_or_else(|| panic!("no {kind} among the shared objects"));
    serde_saphyr::from_str(yaml).unwrap()
}

#[tokio::test]
async fn node_agent_verifies_labels_and_reports_ready() {
    let cp = sandbox_testenv::shared();
    let client = cp.client().await.unwrap();
    let node = Arc::new(TestNode::new(Flavor::V2).unwrap());
    node.start().unwrap();
    let work = tempfile::tempdir().unwrap();

    // The image: pinned binaries with their checksums; the ConfigMap: runsc.toml.
    let source = work.path().join("image");
    std::fs::create_dir_all(&source).unwrap();
    let gvisor_dir = sandbox_testenv::Tools::locate().unwrap().gvisor;
    let mut sums = String::new();
    for name in GVISOR_BINARIES {
        let content = std::fs::read(gvisor_dir.join(name)).unwrap();
        sums.push_str(&format!("{}  {name}\n", sha256_hex(&content)));
        std::fs::write(source.join(name), content).unwrap();
    }
    std::fs::write(source.join(CHECKSUMS), sums).unwrap();
    let config_dir = work.path().join("config");
    std::fs::create_dir_all(&config_dir).unwrap();
    let runsc_toml = "[runsc_config]\n";
    std::fs::write(config_dir.join("runsc.toml"), runsc_toml).unwrap();

    // An already-provisioned node: an earlier run installed and restarted.
    let options = Options::gvisor(
        Host::new(node.root()),
        source.clone(),
        BINARY_PATH.into(),
        runsc_toml.into(),
    );
    agent::install(&options, &RestartTestNode(node.clone()))
        .await
        .unwrap();
    let starts = node.starts();

    // The shoot: the node and the RBAC the controller renders, nothing more for the agent.
    let node_name = format!("node-{}", std::process::id());
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
    let kubeconfig = cp
        .user_kubeconfig(
            "system:serviceaccount:kube-system:gvisor",
            &["system:serviceaccounts"],
        )
        .unwrap();

    let binary = env!("CARGO_BIN_EXE_gardener-extension-runtime-sandbox");
    let args = |extra: &[String]| {
        let mut args: Vec<String> = vec![
            "node-agent".into(),
            "install".into(),
            "--runtime=gvisor".into(),
            format!("--host-root={}", node.root().display()),
            format!("--binary-path={BINARY_PATH}"),
            format!("--config-dir={}", config_dir.display()),
            format!("--source-dir={}", source.display()),
            format!("--node-name={node_name}"),
        ];
        args.extend_from_slice(extra);
        args
    };

    // --once: verified, no restart, the label is set.
    let output = Command::new(binary)
        .args(args(&["--once".into()]))
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("restarts=0"), "{stdout}");
    assert_eq!(node.starts(), starts, "containerd was restarted");
    let labels = Api::<Node>::all(client.clone())
        .get(&node_name)
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap_or_default();
    assert_eq!(
        labels.get(NODE_READY_LABEL).map(String::as_str),
        Some("true")
    );

    // As a daemon: /readyz turns 200 once verified.
    let port = free_port().unwrap();
    let _agent = KillOnDrop(
        Command::new(binary)
            .args(args(&[format!("--health-bind-address=127.0.0.1:{port}")]))
            .env("KUBECONFIG", &kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((200, _)) = http_get(port, "/readyz") {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz never turned 200");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(http_get(port, "/healthz").map(|(code, _)| code), Some(200));
}
