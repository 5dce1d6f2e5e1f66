//! The node agent against real containerd (the pinned 1.7 with config version 2, the pinned
//! 2.4 with version 4 and a conf.d import, and Debian's 1.6, which gVisor's current shim no
//! longer supports; 1.7 and 2.4 also as nodes that the real gardener-node-agent set up) and
//! the pinned runsc: install, prove a gVisor
//! sandbox runs, re-run, change a flag, upgrade under a running pod (also from the previous
//! gVisor pin), uninstall (waiting for a running pod), gVisor's and Kata's agents on one node,
//! and the failure paths. Each test has its own host root and containerd (see `TestNode`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sandbox_cri::v1::ContainerState;
use sandbox_node_agent::agent::{self, AgentError, Options};
use sandbox_node_agent::containerd::CONF_D_IMPORT;
use sandbox_node_agent::cri::{Cri, HandlerState};
use sandbox_node_agent::host::{self, Host};
use sandbox_runtime::gvisor::node::{BINARIES, DROP_IN, INSTALL_DIR, version_dir};
use sandbox_runtime::gvisor::{config, node_plan};
use sandbox_runtime::node_plan::NodePlan;
use sandbox_testenv::ControlPlane;
use sandbox_testenv::gardener_node::{CgroupDriver, GardenerNodeAgent};
use sandbox_testenv::node::{BINARY_PATH, Flavor};
use sandbox_testenv::pods::{self, Pods};
use sandbox_testenv::restarter::AgentNode;
use serde_json::json;

/// The image's binary folder: the pinned runsc and shim with a `SHA256SUMS`. `trailer`
/// bytes appended to runsc make a "new release" that still runs (ELF ignores them).
fn image(dir: &Path, trailer: &[u8]) -> PathBuf {
    let gvisor = sandbox_testenv::Tool::Gvisor.path().unwrap();
    let source = dir.join(format!("image-{}", trailer.len()));
    sandbox_testenv::images::write_gvisor_payload(&gvisor, trailer, &source).unwrap();
    source
}

/// gVisor's node plan for a providerConfig with `flags`, as the controller renders it for
/// the node-agent image of gVisor version `v1`.
fn plan(flags: serde_json::Value) -> NodePlan {
    plan_of("v1", flags)
}

/// The same for the image of gVisor version `version`.
fn plan_of(version: &str, flags: serde_json::Value) -> NodePlan {
    node_plan(
        &config::parse(Some(&json!({
            "apiVersion": config::API_VERSION,
            "kind": config::KIND,
            "configFlags": flags,
        })))
        .unwrap(),
        &format!("registry.local/node-agent:v0-gvisor-{version}"),
    )
}

/// The shim's configuration file of gVisor version `version` on the host.
fn runsc_toml(version: &str) -> String {
    format!("{}/runsc.toml", version_dir(version))
}

/// A test node (see `sandbox_testenv::restarter::AgentNode`), maybe one that the real
/// gardener-node-agent set up.
struct Fixture {
    // Before the node: gardener-node-agent stops first, then its API server.
    _gardener: Option<(GardenerNodeAgent, ControlPlane)>,
    agent: AgentNode,
}

impl std::ops::Deref for Fixture {
    type Target = AgentNode;
    fn deref(&self) -> &AgentNode {
        &self.agent
    }
}

impl Fixture {
    fn new(flavor: Flavor) -> Self {
        Fixture {
            _gardener: None,
            agent: AgentNode::start(flavor, false),
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
        self.agent.options(source, plan, Duration::from_secs(10))
    }

    fn logs(&self) -> PathBuf {
        self.node.path("/var/log/pods")
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
        [host::CONFIG_TOML, DROP_IN, &runsc_toml("v1")]
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

    // Change net-raw: exactly one restart and the new runsc.toml of the version.
    let options = f.options(&v1, plan(json!({"net-raw": "true"})));
    let report = agent::install(&options, &f.restarter).await.unwrap();
    assert_eq!(report.restarts, 1, "{report:?}");
    assert_eq!(report.files, vec![runsc_toml("v1")]);
    assert_eq!(f.restarts(), 2);
    assert_eq!(
        std::fs::read_to_string(f.node.path(&runsc_toml("v1"))).unwrap(),
        format!(
            "binary_name = \"{}/runsc\"\n[runsc_config]\nnet-raw = \"true\"\n",
            version_dir("v1")
        )
    );

    // Upgrade under a running gVisor pod: the new version in its own folder, one restart
    // (the handler now names the new folder), the pod lives on the old one.
    let pod = pods::start_pod(&f.pods, "runsc", &["sleep", "3600"], &f.logs())
        .await
        .unwrap();
    let v2 = image(f.work.path(), &[0u8; 4096]);
    let options = f.options(&v2, plan_of("v2", json!({"net-raw": "true"})));
    let report = agent::install(&options, &f.restarter).await.unwrap();
    assert_eq!(report.binaries, BINARIES.to_vec(), "{report:?}");
    assert_eq!(report.restarts, 1, "{report:?}");
    assert_eq!(report.version.as_deref(), Some("v2"));
    assert_eq!(
        report.kept_versions,
        ["v1"],
        "the running pod's version goes"
    );
    assert_eq!(
        std::fs::read(f.node.path(&version_dir("v2")).join("runsc")).unwrap(),
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
    // New pods use the new version.
    assert_gvisor(&f.dmesg("runsc").await);
    // The old pod stops and goes cleanly (its shim and runsc are the old folder's); then the
    // next run removes that folder, without a restart.
    pods::stop_and_remove_pod(&f.pods, pod).await.unwrap();
    let report = agent::install(&options, &f.restarter).await.unwrap();
    assert_eq!(report.restarts, 0, "{report:?}");
    assert!(report.kept_versions.is_empty(), "{report:?}");
    assert!(!f.node.path(&version_dir("v1")).exists());
    assert_eq!(f.restarts(), 3);

    // Uninstall: handler gone after one restart, files and binaries removed, runc still runs.
    let report = agent::uninstall(&options, &f.restarter).await.unwrap();
    assert_eq!(report.restarts, 1, "{report:?}");
    assert_eq!(f.restarts(), 4);
    assert_eq!(f.handler().await, HandlerState::Missing);
    assert_eq!(std::fs::read(f.node.config_path()).unwrap(), original);
    for path in [DROP_IN, INSTALL_DIR] {
        let left = std::fs::read_dir(f.node.path(path))
            .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
            .unwrap_or_default();
        assert!(
            !f.node.path(path).is_file() && left.is_empty(),
            "{path} is still there: {left:?}"
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
    assert_eq!(f.restarts(), 4);
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
    assert!(!f.node.path(&runsc_toml("v1")).exists());
    assert!(!f.node.path(&version_dir("v1")).join("runsc").exists());
    assert_eq!(f.restarts(), 0);
    let runc = pods::run_pod(&f.pods, "", &["echo", "ok"], &f.logs())
        .await
        .unwrap();
    assert_eq!(runc.output, "ok");
}

/// Whoever can push the node agent's tag can replace runsc and write a SHA256SUMS to match;
/// the seed's record of the binaries (the image vector's checksums, carried in the plan) still
/// refuses it, before anything on the node changes, with the reason the health condition shows.
#[tokio::test]
async fn a_tampered_image_with_matching_checksums_is_refused_on_the_node() {
    let f = Fixture::new(Flavor::V2);
    let original = std::fs::read(f.node.config_path()).unwrap();
    let genuine = image(f.work.path(), b"");
    let sums = std::fs::read_to_string(genuine.join("SHA256SUMS")).unwrap();
    let recorded: std::collections::BTreeMap<String, String> = sums
        .lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(sum, name)| (name.to_string(), sum.to_string()))
        .collect();
    let mut pinned = plan(json!({}));
    pinned.binaries.pinned = [(
        sandbox_runtime::node_plan::host_arch().to_string(),
        recorded,
    )]
    .into();
    let tampered = image(f.work.path(), b"#tampered");
    let err = agent::install(&f.options(&tampered, pinned.clone()), &f.restarter)
        .await
        .unwrap_err();
    println!("{}: {err}", err.reason());
    assert_eq!(err.reason(), "BinaryNotAsPinned");
    assert!(
        err.to_string()
            .contains("runsc: the image's binary has sha256")
            && err.to_string().contains("the seed expects"),
        "{err}"
    );
    assert_eq!(std::fs::read(f.node.config_path()).unwrap(), original);
    assert!(!f.node.path(&version_dir("v1")).join("runsc").exists());
    assert_eq!(f.restarts(), 0);
    // The genuine image passes the same plan, on a real containerd.
    agent::install(&f.options(&genuine, pinned), &f.restarter)
        .await
        .unwrap();
    assert!(f.node.path(&version_dir("v1")).join("runsc").exists());
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
    assert!(!f.node.path(&runsc_toml("v1")).exists());
}

#[tokio::test]
async fn containerd_failing_with_the_new_config_gets_the_backup_back() {
    for flavor in [Flavor::V17, Flavor::V2] {
        let f = Fixture::new(flavor);
        let original = std::fs::read(f.node.config_path()).unwrap();
        // containerd fails to start while its configuration mentions runsc.
        f.restarter.stay_down_while(|node| {
            let read = |p: &str| std::fs::read_to_string(node.path(p)).unwrap_or_default();
            read(host::CONFIG_TOML).contains("runsc") || read(DROP_IN).contains("runsc")
        });
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
        for path in [DROP_IN.to_string(), runsc_toml("v1")] {
            assert!(!f.node.path(&path).exists(), "{flavor:?}: {path} remained");
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
    let config = sandbox_testenv::eventually_or(30, "CRI status", async || {
        cri.config().await.map_err(|e| e.to_string())
    })
    .await;
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

/// A gVisor pin of `hack/versions.env` and the version folder gVisor's image tag names for it.
fn pinned(variable: &str) -> (String, String) {
    let pin = sandbox_testenv::pinned_version(variable).unwrap();
    let folder = sandbox_runtime::gvisor::node::pin_version(&pin).to_string();
    (pin, folder)
}

/// `runsc --version` of the executable a running gVisor sandbox was started from: its host
/// process's `/proc/<pid>/exe`, which stays that binary even after an upgrade or removal of
/// its folder. (gVisor's guest reports a fixed Linux version, so nothing inside the sandbox
/// names the gVisor release; the sandbox's own process does.)
async fn sandbox_runsc_version(pods: &Pods, pod: &pods::RunningPod) -> String {
    let pid = pods::sandbox_pid(pods, &pod.sandbox).await.unwrap();
    let exe = format!("/proc/{pid}/exe");
    let target = std::fs::read_link(&exe).unwrap();
    let out = std::process::Command::new(&exe)
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&out.stdout).to_string();
    println!("sandbox process {pid}: {} -> {version}", target.display());
    version
}

/// The upgrade operators run: a node on the previous gVisor pin with a gVisor pod running,
/// then the agent of the current pin. containerd restarts once; the old pod keeps running on
/// the old release (its runsc is the old folder's) and then stops and goes cleanly; a new pod
/// runs on the new release; the old folder goes once its pod is gone.
async fn upgrade_from_the_previous_pin(f: Fixture) {
    let (old_pin, old) = pinned("GVISOR_PREVIOUS_VERSION");
    let (new_pin, new) = pinned("GVISOR_VERSION");
    assert_ne!(old, new);
    let source = |tool: sandbox_testenv::Tool, name: &str| {
        let dir = f.work.path().join(name);
        sandbox_testenv::images::write_gvisor_payload(&tool.path().unwrap(), b"", &dir).unwrap();
        dir
    };
    let previous = source(sandbox_testenv::Tool::GvisorPrevious, "previous");
    let current = source(sandbox_testenv::Tool::Gvisor, "current");

    let report = agent::install(
        &f.options(&previous, plan_of(&old, json!({}))),
        &f.restarter,
    )
    .await
    .unwrap();
    assert_eq!(report.version.as_deref(), Some(old.as_str()));
    let old_pod = pods::start_pod(&f.pods, "runsc", &["sleep", "3600"], &f.logs())
        .await
        .unwrap_or_else(|e| panic!("{e}\ncontainerd log:\n{}", f.node.log_tail(30)));
    assert!(
        sandbox_runsc_version(&f.pods, &old_pod)
            .await
            .contains(&old_pin)
    );
    let before = f.restarts();

    let options = f.options(&current, plan_of(&new, json!({})));
    let report = agent::install(&options, &f.restarter).await.unwrap();
    assert_eq!(report.restarts, 1, "{report:?}");
    assert_eq!(
        f.restarts() - before,
        1,
        "containerd restarted more than once"
    );
    assert_eq!(
        report.kept_versions,
        std::slice::from_ref(&old),
        "{report:?}"
    );
    assert!(f.node.path(&version_dir(&old)).join("runsc").exists());

    // The old pod lives on its release; a new one runs on the new release.
    assert_eq!(
        pods::container_state(&f.pods, &old_pod.container)
            .await
            .unwrap()
            .0,
        ContainerState::ContainerRunning,
        "the running gVisor pod died during the upgrade"
    );
    assert!(
        sandbox_runsc_version(&f.pods, &old_pod)
            .await
            .contains(&old_pin)
    );
    let new_pod = pods::start_pod(&f.pods, "runsc", &["sleep", "3600"], &f.logs())
        .await
        .unwrap();
    assert!(
        sandbox_runsc_version(&f.pods, &new_pod)
            .await
            .contains(&new_pin)
    );
    assert_gvisor(&f.dmesg("runsc").await);

    // A run while the old pod lives keeps its folder; once it is gone, the next run removes
    // it (the new pod runs on: its version is the current one), with no restart.
    let report = agent::install(&options, &f.restarter).await.unwrap();
    assert_eq!(
        (report.restarts, report.kept_versions.clone()),
        (0, vec![old.clone()])
    );
    pods::stop_and_remove_pod(&f.pods, old_pod).await.unwrap();
    let report = agent::install(&options, &f.restarter).await.unwrap();
    assert_eq!(report.restarts, 0, "{report:?}");
    assert!(report.kept_versions.is_empty(), "{report:?}");
    assert!(!f.node.path(&version_dir(&old)).exists());
    assert!(f.node.path(&version_dir(&new)).join("runsc").exists());
    assert_eq!(
        pods::container_state(&f.pods, &new_pod.container)
            .await
            .unwrap()
            .0,
        ContainerState::ContainerRunning
    );
    pods::stop_and_remove_pod(&f.pods, new_pod).await.unwrap();
}

#[tokio::test]
async fn upgrade_from_the_previous_gvisor_pin_on_containerd_2_with_a_running_pod() {
    upgrade_from_the_previous_pin(Fixture::new(Flavor::V2)).await;
}

#[tokio::test]
async fn upgrade_from_the_previous_gvisor_pin_on_a_containerd_1_7_node_that_gardener_node_agent_set_up()
 {
    upgrade_from_the_previous_pin(Fixture::gardener_built(Flavor::V17).await).await;
}

/// An earlier, unversioned install (the Go extension's, or ours before versioned installs:
/// runsc and the shim in the binary path, `/etc/containerd/runsc.toml`) with a pod running on
/// it: the versioned install takes over the handler and keeps the old files while that pod
/// runs (which folder it uses cannot be told), then removes them.
#[tokio::test]
async fn an_unversioned_install_is_replaced_and_its_files_go_after_its_last_pod() {
    let f = Fixture::new(Flavor::V2);
    let v1 = image(f.work.path(), b"");
    let binaries = f.node.path(BINARY_PATH);
    for name in BINARIES {
        std::fs::copy(v1.join(name), binaries.join(name)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(binaries.join(name), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    }
    let legacy_toml = "/etc/containerd/runsc.toml";
    std::fs::write(f.node.path(legacy_toml), "[runsc_config]\n").unwrap();
    let mut config = std::fs::read_to_string(f.node.config_path()).unwrap();
    config.push_str(&format!(
        "\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runsc]\n  runtime_type = \"io.containerd.runsc.v1\"\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runsc.options]\n  TypeUrl = \"io.containerd.runsc.v1.options\"\n  ConfigPath = \"{legacy_toml}\"\n"
    ));
    f.node.write_config(&config).unwrap();
    f.node.restart().unwrap();
    let old_pod = pods::start_pod(&f.pods, "runsc", &["sleep", "3600"], &f.logs())
        .await
        .unwrap_or_else(|e| panic!("{e}\ncontainerd log:\n{}", f.node.log_tail(30)));

    let options = f.options(&v1, plan(json!({})));
    let report = agent::install(&options, &f.restarter).await.unwrap();
    assert_eq!(report.restarts, 1, "{report:?}");
    for name in BINARIES {
        assert!(
            binaries.join(name).exists(),
            "{name} removed under a running pod"
        );
    }
    assert!(f.node.path(legacy_toml).exists());
    assert_gvisor(&f.dmesg("runsc").await);

    pods::stop_and_remove_pod(&f.pods, old_pod).await.unwrap();
    let report = agent::install(&options, &f.restarter).await.unwrap();
    assert_eq!(report.restarts, 0, "{report:?}");
    for name in BINARIES {
        assert!(!binaries.join(name).exists(), "{name} is still there");
    }
    assert!(!f.node.path(legacy_toml).exists());
}

/// Uninstall never pulls gVisor from under a running pod: it waits (an error that names the
/// pod, in the agent's report and so in the health condition), changes nothing, and finishes
/// once the pod is gone.
#[tokio::test]
async fn uninstall_waits_for_a_running_gvisor_pod() {
    let f = Fixture::new(Flavor::V17);
    let v1 = image(f.work.path(), b"");
    let options = f.options(&v1, plan(json!({})));
    agent::install(&options, &f.restarter).await.unwrap();
    let pod = pods::start_pod(&f.pods, "runsc", &["sleep", "3600"], &f.logs())
        .await
        .unwrap();
    let config = std::fs::read(f.node.config_path()).unwrap();
    let restarts = f.restarts();

    let err = agent::uninstall(&options, &f.restarter).await.unwrap_err();
    assert!(
        matches!(err, AgentError::SandboxesRunning { count: 1, .. }),
        "{err}"
    );
    assert_eq!(err.reason(), "SandboxesRunning");
    println!("uninstall with a running pod: {err}");
    assert_eq!(f.restarts(), restarts, "containerd was restarted");
    assert_eq!(std::fs::read(f.node.config_path()).unwrap(), config);
    assert!(f.node.path(&version_dir("v1")).join("runsc").exists());
    assert_eq!(f.handler().await, HandlerState::Loaded);
    assert_eq!(
        pods::container_state(&f.pods, &pod.container)
            .await
            .unwrap()
            .0,
        ContainerState::ContainerRunning
    );

    pods::stop_and_remove_pod(&f.pods, pod).await.unwrap();
    let report = agent::uninstall(&options, &f.restarter).await.unwrap();
    assert_eq!(report.restarts, 1, "{report:?}");
    assert_eq!(f.handler().await, HandlerState::Missing);
    assert!(!f.node.path(&version_dir("v1")).exists());
}
