//! The node agent against real containerd (the pinned 1.7 with config version 2, the pinned
//! 2.4 with version 4 and a conf.d import, and Debian's 1.6, which gVisor's current shim no
//! longer supports; 1.7 and 2.4 also as nodes that the real gardener-node-agent set up) and
//! the pinned runsc: install, prove a gVisor
//! sandbox runs, re-run, change a flag, upgrade under a running pod, uninstall, and the
//! failure paths. Each test has its own host root and containerd (see `TestNode`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use sandbox_cri::v1::ContainerState;
use sandbox_node_agent::agent::{self, AgentError, Options};
use sandbox_node_agent::containerd::CONF_D_IMPORT;
use sandbox_node_agent::cri::{Cri, HandlerState};
use sandbox_node_agent::host::{self, Host};
use sandbox_node_agent::restart::{RestartError, Restarter};
use sandbox_runtime::gvisor::node::{BINARIES, DROP_IN, RUNSC_TOML};
use sandbox_runtime::gvisor::{config, node_plan};
use sandbox_runtime::node_plan::NodePlan;
use sandbox_testenv::ControlPlane;
use sandbox_testenv::gardener_node::{CgroupDriver, GardenerNodeAgent};
use sandbox_testenv::node::{BINARY_PATH, Flavor, TestNode};
use sandbox_testenv::pods::{self, Pods};
use serde_json::json;

/// The test's restart mechanism: stops and starts the node's own containerd. With
/// `refuse_runsc` set it plays a containerd that fails to start with the new configuration
/// (the fault is injected here: it stays down while the host's containerd configuration
/// mentions runsc), as a real unit would fail after `RestartUnit`.
struct TestRestarter {
    node: Arc<TestNode>,
    calls: AtomicUsize,
    refuse_runsc: AtomicBool,
}

impl TestRestarter {
    fn new(node: Arc<TestNode>) -> Self {
        TestRestarter {
            node,
            calls: AtomicUsize::new(0),
            refuse_runsc: AtomicBool::new(false),
        }
    }

    fn configuration_mentions_runsc(&self) -> bool {
        let read = |p: &str| std::fs::read_to_string(self.node.path(p)).unwrap_or_default();
        read(host::CONFIG_TOML).contains("runsc") || read(DROP_IN).contains("runsc")
    }
}

impl Restarter for TestRestarter {
    fn restart(&self) -> BoxFuture<'_, Result<(), RestartError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let node = self.node.clone();
            let refuse =
                self.refuse_runsc.load(Ordering::SeqCst) && self.configuration_mentions_runsc();
            tokio::task::spawn_blocking(move || {
                node.stop();
                if refuse {
                    return Ok(());
                }
                node.start().map_err(|e| RestartError(e.to_string()))
            })
            .await
            .map_err(|e| RestartError(e.to_string()))?
        })
    }
}

/// The image's binary folder: the pinned runsc and shim with a `SHA256SUMS`. `trailer`
/// bytes appended to runsc make a "new release" that still runs (ELF ignores them).
fn image(dir: &Path, trailer: &[u8]) -> PathBuf {
    let gvisor = sandbox_testenv::Tool::Gvisor.path().unwrap();
    let source = dir.join(format!("image-{}", trailer.len()));
    sandbox_image::write_gvisor_source(&gvisor, trailer, &source).unwrap();
    source
}

/// gVisor's node plan for a providerConfig with `flags`, as the controller renders it.
fn plan(flags: serde_json::Value) -> NodePlan {
    node_plan(
        &config::parse(Some(&json!({
            "apiVersion": config::API_VERSION,
            "kind": config::KIND,
            "configFlags": flags,
        })))
        .unwrap(),
    )
}

struct Fixture {
    restarter: TestRestarter,
    // Before the node: gardener-node-agent stops first, then its API server.
    _gardener: Option<(GardenerNodeAgent, ControlPlane)>,
    node: Arc<TestNode>,
    cri: Cri,
    pods: Pods,
    work: tempfile::TempDir,
}

impl Fixture {
    fn new(flavor: Flavor) -> Self {
        let node = Arc::new(TestNode::new(flavor).unwrap());
        node.start().unwrap();
        node.import_images().unwrap();
        Fixture {
            restarter: TestRestarter::new(node.clone()),
            _gardener: None,
            cri: Cri::new(node.socket()),
            pods: Pods::new(node.socket()),
            node,
            work: tempfile::tempdir().unwrap(),
        }
    }

    /// A node that the real gardener-node-agent set up (`sandbox_testenv::gardener_node`): it
    /// owns `config.toml` (the `conf.d` import on every version, the registry's `certs.d`, the
    /// sandbox image), with the cgroupfs driver so that runc pods run on this machine too.
    async fn gardener_built(flavor: Flavor) -> Self {
        let mut f = Fixture::new(flavor);
        let control_plane = ControlPlane::start().await.unwrap();
        let gardener =
            GardenerNodeAgent::start_with(&control_plane, f.node.clone(), CgroupDriver::Cgroupfs)
                .await
                .unwrap();
        let config = std::fs::read_to_string(f.node.config_path()).unwrap();
        assert!(config.contains(CONF_D_IMPORT), "{config}");
        f._gardener = Some((gardener, control_plane));
        f
    }

    fn options(&self, source: &Path, plan: NodePlan) -> Options {
        let mut options = Options::new(Host::new(self.node.root()), plan, BINARY_PATH.to_string());
        options.source = source.to_path_buf();
        options.restart_timeout = Duration::from_secs(10);
        options
    }

    fn logs(&self) -> PathBuf {
        self.node.path("/var/log/pods")
    }

    fn restarts(&self) -> usize {
        self.restarter.calls.load(Ordering::SeqCst)
    }

    async fn handler(&self) -> HandlerState {
        self.cri
            .handler("runsc", "io.containerd.runsc.v1")
            .await
            .unwrap()
    }

    async fn dmesg(&self, handler: &str) -> String {
        let result = pods::run_pod(&self.pods, handler, &["dmesg"], &self.logs())
            .await
            .unwrap_or_else(|e| panic!("{e}\ncontainerd log:\n{}", self.node.log_tail(30)));
        assert_eq!(result.exit_code, 0, "{result:?}");
        result.output
    }

    /// Path, size, inode and mtime of every configuration file: equal means nothing was written.
    fn fingerprint(&self) -> Vec<(String, u64, u64, i64, i64)> {
        [host::CONFIG_TOML, DROP_IN, RUNSC_TOML]
            .iter()
            .filter_map(|p| {
                let m = std::fs::metadata(self.node.path(p)).ok()?;
                Some((p.to_string(), m.len(), m.ino(), m.mtime(), m.mtime_nsec()))
            })
            .collect()
    }
}

fn assert_gvisor(dmesg: &str) {
    assert!(
        dmesg.contains("Starting gVisor..."),
        "dmesg did not come from gVisor:\n{dmesg}"
    );
    assert!(
        !dmesg.contains("Linux version"),
        "the host kernel answered dmesg:\n{dmesg}"
    );
}

/// The whole life of gVisor on one node.
async fn lifecycle(f: Fixture) {
    let flavor = f.node.flavor();
    let original = std::fs::read(f.node.config_path()).unwrap();
    let v1 = image(f.work.path(), b"");
    let options = f.options(&v1, plan(json!({})));

    // Before: runsc is unknown to containerd.
    assert_eq!(f.handler().await, HandlerState::Missing);

    // Install: binaries, configuration, one restart, handler verified.
    let report = agent::install(&options, &f.restarter).await.unwrap();
    assert_eq!(report.restarts, 1, "{report:?}");
    assert_eq!(f.restarts(), 1);
    assert_eq!(report.binaries, BINARIES.to_vec());
    let expected_config_file = match flavor {
        // containerd 1.x: edited in place (a drop-in would replace the CRI plugin's table),
        // with gardener-node-agent's conf.d import too.
        Flavor::Debian | Flavor::V17 => host::CONFIG_TOML,
        // containerd 2.4 imports conf.d (its default, and gardener-node-agent's): a drop-in,
        // config.toml untouched.
        Flavor::V2 => DROP_IN,
    };
    assert!(
        report.files.iter().any(|p| p == expected_config_file),
        "{report:?}"
    );
    if flavor == Flavor::V2 {
        assert_eq!(std::fs::read(f.node.config_path()).unwrap(), original);
    }
    assert_eq!(f.handler().await, HandlerState::Loaded);

    // A gVisor pod: dmesg answers from gVisor's kernel.
    assert_gvisor(&f.dmesg("runsc").await);
    // runc pods are unaffected.
    let runc = pods::run_pod(&f.pods, "", &["echo", "runc"], &f.logs())
        .await
        .unwrap();
    assert_eq!(runc.output, "runc");

    // Unchanged re-run: zero writes, zero restarts.
    let before = f.fingerprint();
    let report = agent::install(&options, &f.restarter).await.unwrap();
    assert_eq!(report.restarts, 0, "{report:?}");
    assert!(
        report.files.is_empty() && report.binaries.is_empty(),
        "{report:?}"
    );
    assert_eq!(f.restarts(), 1);
    assert_eq!(f.fingerprint(), before);

    // Change net-raw: exactly one restart and the new runsc.toml.
    let options = f.options(&v1, plan(json!({"net-raw": "true"})));
    let report = agent::install(&options, &f.restarter).await.unwrap();
    assert_eq!(report.restarts, 1, "{report:?}");
    assert_eq!(report.files, vec![RUNSC_TOML.to_string()]);
    assert_eq!(f.restarts(), 2);
    assert_eq!(
        std::fs::read_to_string(f.node.path(RUNSC_TOML)).unwrap(),
        "[runsc_config]\nnet-raw = \"true\"\n"
    );

    // Upgrade under a running gVisor pod: new binaries by rename, no restart, the pod lives.
    let pod = pods::start_pod(&f.pods, "runsc", &["sleep", "3600"], &f.logs())
        .await
        .unwrap();
    let installed = f.node.path(BINARY_PATH).join("runsc");
    let old_inode = std::fs::metadata(&installed).unwrap().ino();
    let v2 = image(f.work.path(), &[0u8; 4096]);
    let options = f.options(&v2, plan(json!({"net-raw": "true"})));
    let report = agent::install(&options, &f.restarter).await.unwrap();
    assert_eq!(report.binaries, vec!["runsc".to_string()], "{report:?}");
    assert_eq!(report.restarts, 0, "{report:?}");
    assert_ne!(std::fs::metadata(&installed).unwrap().ino(), old_inode);
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(v2.join("runsc")).unwrap()
    );
    assert_eq!(
        pods::container_state(&f.pods, &pod.container)
            .await
            .unwrap()
            .0,
        ContainerState::ContainerRunning,
        "the running gVisor pod died during the upgrade"
    );
    // New pods use the new runsc.
    assert_gvisor(&f.dmesg("runsc").await);
    pods::remove_pod(&f.pods, pod).await;

    // Uninstall: handler gone after one restart, files and binaries removed, runc still runs.
    let report = agent::uninstall(&options, &f.restarter).await.unwrap();
    assert_eq!(report.restarts, 1, "{report:?}");
    assert_eq!(f.restarts(), 3);
    assert_eq!(f.handler().await, HandlerState::Missing);
    assert_eq!(std::fs::read(f.node.config_path()).unwrap(), original);
    for path in [DROP_IN, RUNSC_TOML] {
        assert!(!f.node.path(path).exists(), "{path} is still there");
    }
    for name in BINARIES {
        assert!(
            !f.node.path(BINARY_PATH).join(name).exists(),
            "{name} is still there"
        );
    }
    let runc = pods::run_pod(&f.pods, "", &["echo", "runc still works"], &f.logs())
        .await
        .unwrap();
    assert_eq!(runc.output, "runc still works");
    let err = pods::run_pod(&f.pods, "runsc", &["true"], &f.logs())
        .await
        .unwrap_err();
    assert!(err.contains("runsc"), "{err}");

    // Uninstalling again changes nothing and restarts nothing.
    let report = agent::uninstall(&options, &f.restarter).await.unwrap();
    assert_eq!(
        report,
        agent::Report {
            elapsed: report.elapsed,
            ..Default::default()
        }
    );
    assert_eq!(f.restarts(), 3);
}

#[tokio::test]
async fn lifecycle_on_containerd_1_7() {
    lifecycle(Fixture::new(Flavor::V17)).await;
}

#[tokio::test]
async fn lifecycle_on_a_containerd_1_7_node_that_gardener_node_agent_set_up() {
    lifecycle(Fixture::gardener_built(Flavor::V17).await).await;
}

#[tokio::test]
async fn lifecycle_on_a_containerd_2_node_that_gardener_node_agent_set_up() {
    lifecycle(Fixture::gardener_built(Flavor::V2).await).await;
}

/// gVisor's current shim answers containerd with the bootstrap protocol version 2, which
/// containerd 1.6 cannot read ("dial unix {\"version\":2,...}: invalid argument"), so the agent
/// refuses Debian's 1.6 before changing anything rather than announce a node that cannot
/// start gVisor pods.
#[tokio::test]
async fn debian_containerd_1_6_is_refused_before_anything_changes() {
    let f = Fixture::new(Flavor::Debian);
    let original = std::fs::read(f.node.config_path()).unwrap();
    let v1 = image(f.work.path(), b"");
    let err = agent::install(&f.options(&v1, plan(json!({}))), &f.restarter)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AgentError::UnsupportedContainerd { version, .. } if version.starts_with("1.6")),
        "{err}"
    );
    assert!(err.to_string().contains("1.7 or newer"), "{err}");
    assert_eq!(std::fs::read(f.node.config_path()).unwrap(), original);
    assert!(!f.node.path(RUNSC_TOML).exists());
    assert!(!f.node.path(BINARY_PATH).join("runsc").exists());
    assert_eq!(f.restarts(), 0);
    let runc = pods::run_pod(&f.pods, "", &["echo", "ok"], &f.logs())
        .await
        .unwrap();
    assert_eq!(runc.output, "ok");
}

#[tokio::test]
async fn lifecycle_on_containerd_2() {
    lifecycle(Fixture::new(Flavor::V2)).await;
}

#[tokio::test]
async fn a_broken_config_is_an_error_and_stays_untouched() {
    let f = Fixture::new(Flavor::V17);
    let broken = b"version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"\nroot = \n";
    std::fs::write(f.node.config_path(), broken).unwrap();
    let v1 = image(f.work.path(), b"");
    let err = agent::install(&f.options(&v1, plan(json!({}))), &f.restarter)
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, AgentError::Host(_)), "{message}");
    assert!(message.contains("config.toml"), "{message}");
    assert_eq!(std::fs::read(f.node.config_path()).unwrap(), broken);
    assert_eq!(f.restarts(), 0);
    assert!(!f.node.path(RUNSC_TOML).exists());
}

#[tokio::test]
async fn containerd_failing_with_the_new_config_gets_the_backup_back() {
    for flavor in [Flavor::V17, Flavor::V2] {
        let f = Fixture::new(flavor);
        let original = std::fs::read(f.node.config_path()).unwrap();
        f.restarter.refuse_runsc.store(true, Ordering::SeqCst);
        let v1 = image(f.work.path(), b"");
        let mut options = f.options(&v1, plan(json!({})));
        options.restart_timeout = Duration::from_secs(3);
        let err = agent::install(&options, &f.restarter).await.unwrap_err();
        assert!(
            matches!(&err, AgentError::RolledBack { after, .. } if after == "runs again"),
            "{flavor:?}: {err}"
        );
        // One restart into the failure, one back.
        assert_eq!(f.restarts(), 2, "{flavor:?}");
        assert!(f.node.is_running(), "{flavor:?}: containerd is down");
        assert_eq!(std::fs::read(f.node.config_path()).unwrap(), original);
        for path in [DROP_IN, RUNSC_TOML] {
            assert!(!f.node.path(path).exists(), "{flavor:?}: {path} remained");
        }
        let runc = pods::run_pod(&f.pods, "", &["echo", "ok"], &f.logs())
            .await
            .unwrap();
        assert_eq!(runc.output, "ok", "{flavor:?}");
    }
}

/// What gardener-node-agent writes into `config.toml` on every containerd version (Gardener's
/// `pkg/nodeagent/controller/operatingsystemconfig`, `ensureContainerdConfiguration`): the
/// `conf.d` import, the registry's `certs.d`, the CNI folder and runc's `SystemdCgroup` (the
/// sandbox image is the test node's local pause image already).
fn as_gardener_node_agent_writes(config: &str) -> String {
    let mut doc: toml_edit::DocumentMut = config.parse().unwrap();
    let mut imports = toml_edit::Array::new();
    imports.push(sandbox_node_agent::containerd::CONF_D_IMPORT);
    doc["imports"] = toml_edit::value(imports);
    let cri = &mut doc["plugins"]["io.containerd.grpc.v1.cri"];
    cri["registry"]["config_path"] = toml_edit::value("/etc/containerd/certs.d");
    cri["cni"]["bin_dir"] = toml_edit::value("/opt/cni/bin");
    cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] = toml_edit::value(true);
    doc.to_string()
}

/// The settings gardener-node-agent owns, as containerd runs with them (CRI status).
async fn gardener_settings(cri: &Cri) -> Vec<(&'static str, serde_json::Value)> {
    // Right after a restart the socket answers before the CRI plugin is initialized
    // ("server is not initialized yet"): ask until it is.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let config = loop {
        match cri.config().await {
            Ok(config) => break config,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("CRI not ready yet: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => panic!("CRI status within 30 s: {e}"),
        }
    };
    [
        "/sandboxImage",
        "/registry/configPath",
        "/cni/binDir",
        "/containerd/runtimes/runc/options/SystemdCgroup",
    ]
    .into_iter()
    .map(|p| (p, config.pointer(p).cloned().unwrap_or_default()))
    .collect()
}

/// containerd 1.x replaces an imported plugin table whole: a drop-in with only our runtime
/// would reset the CRI plugin (sandbox image back to registry.k8s.io/pause, runc's
/// SystemdCgroup and the registry mirrors gone). On a 1.7 node that gardener-node-agent set up
/// (conf.d imported), the install edits config.toml in place and every setting stays.
#[tokio::test]
async fn on_containerd_1_7_with_gardener_node_agent_s_import_nothing_it_wrote_is_lost() {
    let f = Fixture::new(Flavor::V17);
    let gardener =
        as_gardener_node_agent_writes(&std::fs::read_to_string(f.node.config_path()).unwrap());
    f.node.write_config(&gardener).unwrap();
    f.node.restart().unwrap();
    let before = gardener_settings(&f.cri).await;
    assert_eq!(
        before.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
        [
            json!(sandbox_testenv::node::PAUSE_IMAGE),
            json!("/etc/containerd/certs.d"),
            json!("/opt/cni/bin"),
            json!(true)
        ],
        "containerd runs with what gardener-node-agent wrote"
    );

    let v1 = image(f.work.path(), b"");
    let options = f.options(&v1, plan(json!({})));
    let report = agent::install(&options, &f.restarter).await.unwrap();
    assert!(
        report.files.iter().any(|p| p == host::CONFIG_TOML),
        "{report:?}"
    );
    assert!(
        !f.node.path(DROP_IN).exists(),
        "a drop-in on containerd 1.7"
    );
    assert_eq!(f.handler().await, HandlerState::Loaded);
    assert_eq!(
        gardener_settings(&f.cri).await,
        before,
        "a setting of gardener-node-agent was lost"
    );
    // gVisor pods run (their sandboxes need the sandbox image gardener-node-agent set).
    assert_gvisor(&f.dmesg("runsc").await);

    // Uninstall leaves config.toml as gardener-node-agent wrote it.
    agent::uninstall(&options, &f.restarter).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(f.node.config_path()).unwrap(),
        gardener
    );
    assert_eq!(gardener_settings(&f.cri).await, before);
}

#[tokio::test]
async fn files_written_but_never_loaded_are_loaded_by_the_next_run() {
    // An earlier agent wrote the configuration and died before restarting containerd.
    let f = Fixture::new(Flavor::V17);
    let v1 = image(f.work.path(), b"");
    let options = f.options(&v1, plan(json!({})));
    host::install(&Host::new(f.node.root()), &options.plan, Some((1, 7))).unwrap();
    assert_eq!(f.handler().await, HandlerState::Missing);
    let report = agent::install(&options, &f.restarter).await.unwrap();
    assert!(report.files.is_empty(), "{report:?}");
    assert_eq!(report.restarts, 1, "{report:?}");
    assert_eq!(f.handler().await, HandlerState::Loaded);
}
