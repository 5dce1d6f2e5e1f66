//! A test node that Gardener set up: the real `gardener-node-agent` (built from the pinned
//! Gardener release) owns the node's `/etc/containerd/config.toml`, as on every Gardener
//! node.
//!
//! gardenlet hands a node its OperatingSystemConfig as a Secret in the shoot's `kube-system`
//! (`osc.yaml`, with the checksum annotation `checksum/data-script`); gardener-node-agent
//! watches that Secret and, on every change, patches `config.toml` (the `conf.d` import, the
//! registry's `certs.d`, the sandbox image, the CNI folder, runc's `SystemdCgroup`), writes
//! the registry hosts and the OSC's files and units, reloads systemd, restarts containerd over
//! D-Bus when its configuration changed, and annotates the Node with the checksum it applied.
//!
//! Here the agent runs in a mount and UTS namespace of its own, in which the test node's
//! folders are bind-mounted onto the paths it writes (`/etc/containerd`, `/etc/systemd`,
//! `/run/containerd`, `/var/lib/gardener-node-agent`, `/var/lib/kubelet`) and the host name
//! is the Node's. It talks to a real kube-apiserver (a [`ControlPlane`]) with the admin
//! kubeconfig, and to systemd over a real D-Bus to the stand-in [`FakeSystemd`], whose
//! `containerd.service` restart restarts the test node's containerd. What stays simulated is
//! systemd itself: unit files are written by gardener-node-agent but not run by a systemd
//! (this machine has none as PID 1).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::dbus::{FakeSystemd, SystemBus};
use crate::node::{Flavor, PAUSE_IMAGE, TestNode};
use crate::{ControlPlane, Error, Result, Server, Tool, free_port, io_err};

/// The Secret gardener-node-agent reads its OperatingSystemConfig from (in `kube-system`).
pub const OSC_SECRET: &str = "gardener-node-agent-sandbox-test";
/// The Node, and the agent's host name.
pub const NODE_NAME: &str = "gardener-built-node";
/// The registry mirror the OSC configures (`/etc/containerd/certs.d/<upstream>/hosts.toml`).
pub const MIRRORED_REGISTRY: &str = "registry.example";
/// The annotation gardener-node-agent sets on the Node to the checksum it applied.
pub const APPLIED_ANNOTATION: &str = "checksum/cloud-config-data";
/// The OSC gardener-node-agent applied last (written after everything else).
const LAST_APPLIED: &str = "/var/lib/gardener-node-agent/last-applied-osc.yaml";
/// A file of the OSC whose content is the OSC's generation: each change is a new OSC.
pub const GENERATION_FILE: &str = "/etc/sandbox-test/osc-generation";

/// The node's folders gardener-node-agent writes to, bind-mounted in its namespace.
const AGENT_FOLDERS: &[&str] = &[
    "/etc/containerd",
    // Where OSC files of our runtimes go (the node's containerd sees the same folder).
    "/opt/runtime-sandbox",
    "/etc/systemd",
    "/etc/sandbox-test",
    "/run/containerd",
    "/var/lib/gardener-node-agent",
    "/var/lib/kubelet",
];

/// Runs the agent (after the arguments: root, host name, the folders separated by spaces,
/// binary, its arguments) in a new mount and UTS namespace with the node's folders in place.
const LAUNCHER: &str = r#"
exec unshare --mount --uts --propagation private sh -c '
  root=$1; name=$2; dirs=$3; shift 3
  hostname "$name" || exit 1
  for dir in $dirs; do
    mkdir -p "$root$dir" "$dir" && mount --bind "$root$dir" "$dir" || exit 1
  done
  exec "$@"
' launcher "$@"
"#;

/// What gardenlet and an OS extension put into a containerd worker's OperatingSystemConfig
/// (the parts gardener-node-agent acts on): `criConfig` with the cgroup driver, the
/// sandbox image and a registry mirror, the containerd unit, and a file whose content is
/// `generation` (so each generation is a new OSC). Each generation also changes one
/// `criConfig.containerd.plugins` value of the CRI plugin (`image_pull_progress_timeout`,
/// 5 or 6 minutes), so that gardener-node-agent rewrites `config.toml` and restarts containerd
/// on every change, as for a change of the sandbox image. (A string: gardener-node-agent
/// decodes plugin values as JSON into a map, so an integer such as `max_concurrent_downloads =
/// 3` is written back as the float `3.0`, and containerd 1.7 then refuses to start: "Can't
/// convert 3(float64) to int", found by this harness.)
pub fn operating_system_config(
    flavor: Flavor,
    cgroup_driver: CgroupDriver,
    generation: u32,
) -> serde_json::Value {
    let images_plugin = match flavor {
        Flavor::V2 => "io.containerd.cri.v1.images",
        _ => "io.containerd.grpc.v1.cri",
    };
    json!({
        "apiVersion": "extensions.gardener.cloud/v1alpha1",
        "kind": "OperatingSystemConfig",
        "metadata": {"name": "sandbox-test-worker", "namespace": "kube-system"},
        "spec": {
            "type": "debian",
            "purpose": "reconcile",
            "criConfig": {
                "name": "containerd",
                "cgroupDriver": cgroup_driver.as_str(),
                "containerd": {
                    "sandboxImage": PAUSE_IMAGE,
                    "plugins": [{
                        "path": [images_plugin],
                        "values": {"image_pull_progress_timeout": format!("{}m0s", 5 + generation % 2)},
                    }],
                    "registries": [{
                        "upstream": MIRRORED_REGISTRY,
                        "server": format!("https://{MIRRORED_REGISTRY}"),
                        "hosts": [{"url": "https://mirror.example"}],
                    }],
                },
            },
            "units": [{"name": "containerd.service", "enable": true}],
            "files": [{
                "path": GENERATION_FILE,
                "permissions": 0o644,
                "content": {"inline": {"encoding": "", "data": generation.to_string()}},
            }],
        },
    })
}

/// `criConfig.cgroupDriver`: gardener-node-agent sets runc's `SystemdCgroup` from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupDriver {
    /// What Gardener's nodes use. runc then creates cgroups through systemd, which this
    /// machine does not run: runc pods cannot start here (gVisor's can).
    Systemd,
    /// runc manages cgroups itself: runc pods run here too.
    Cgroupfs,
}

impl CgroupDriver {
    fn as_str(self) -> &'static str {
        match self {
            CgroupDriver::Systemd => "systemd",
            CgroupDriver::Cgroupfs => "cgroupfs",
        }
    }
}

/// gardener-node-agent running for a test node.
pub struct GardenerNodeAgent {
    // Field order is drop order: the agent before the bus it talks over.
    server: Server,
    /// `/usr/bin/env`'s arguments that start the agent again.
    args: Vec<String>,
    /// The bus and systemd stand-in of its own (None on a test shoot's node, which has both).
    own: Option<(FakeSystemd, SystemBus)>,
    node: Arc<TestNode>,
    client: kube::Client,
    /// The Node it looks for; created up front unless the kubelet registers it.
    node_name: String,
    created_node: bool,
    dir: tempfile::TempDir,
    cgroup_driver: CgroupDriver,
    generation: u32,
    /// Whether each generation changes a CRI plugin value (a containerd restart per change).
    vary_cri: bool,
    /// The OSC written last (what an OSC webhook sees as `oldObject`).
    last: serde_json::Value,
    /// How often [`GardenerNodeAgent::supervise`] started it again.
    restarts: u32,
}

impl GardenerNodeAgent {
    /// Creates the Node and the OSC Secret (generation 1, cgroup driver systemd) on
    /// `control_plane`, starts gardener-node-agent for the running `node`, and waits until it
    /// applied the OSC.
    pub async fn start(control_plane: &ControlPlane, node: Arc<TestNode>) -> Result<Self> {
        Self::start_with(control_plane, node, CgroupDriver::Systemd).await
    }

    /// As [`GardenerNodeAgent::start`], with the OSC's cgroup driver.
    pub async fn start_with(
        control_plane: &ControlPlane,
        node: Arc<TestNode>,
        cgroup_driver: CgroupDriver,
    ) -> Result<Self> {
        let client = control_plane.client().await?;
        let dir = tempfile::tempdir().map_err(io_err(std::env::temp_dir()))?;
        let bus = SystemBus::start(&dir.path().join("dbus/system_bus_socket"))?;
        let restart = {
            let node = node.clone();
            Arc::new(move || node.restart().map_err(|e| e.to_string()))
        };
        let systemd = FakeSystemd::serve_with(
            &bus,
            "containerd.service",
            restart,
            &["kubelet.service", "gardener-node-agent.service"],
        )
        .await
        .map_err(|e| Error::Tools(format!("systemd stand-in: {e}")))?;

        let nodes: Api<Node> = Api::all(client.clone());
        let labels = BTreeMap::from([
            ("kubernetes.io/hostname".to_string(), NODE_NAME.to_string()),
            (
                "worker.gardener.cloud/gardener-node-agent-secret-name".to_string(),
                OSC_SECRET.to_string(),
            ),
        ]);
        let mut object = Node::default();
        object.metadata.name = Some(NODE_NAME.into());
        object.metadata.labels = Some(labels);
        nodes
            .create(&PostParams::default(), &object)
            .await
            .map_err(|e| Error::Tools(format!("creating Node {NODE_NAME}: {e}")))?;

        let config_dir = dir.path().join("config");
        Self::write_config(control_plane, &node, &config_dir, NODE_NAME)?;

        let args = Self::arguments(control_plane, &node, &bus.address(), NODE_NAME, &config_dir)?;
        let mut agent = GardenerNodeAgent {
            server: Self::launch(&args, dir.path())?,
            args,
            own: Some((systemd, bus)),
            node,
            client,
            node_name: NODE_NAME.into(),
            created_node: true,
            dir,
            cgroup_driver,
            generation: 0,
            vary_cri: true,
            last: serde_json::Value::Null,
            restarts: 0,
        };
        agent.apply_next(Duration::from_secs(120)).await?;
        Ok(agent)
    }

    /// gardener-node-agent's configuration file in `config_dir`, and the machine's name.
    fn write_config(
        control_plane: &ControlPlane,
        node: &TestNode,
        config_dir: &Path,
        node_name: &str,
    ) -> Result<()> {
        std::fs::create_dir_all(config_dir).map_err(io_err(config_dir))?;
        let version = crate::pinned_version("GARDENER_VERSION")?;
        let kubernetes = crate::pinned_version("KUBERNETES_VERSION")?;
        let config = json!({
            "apiVersion": "nodeagent.config.gardener.cloud/v1alpha1",
            "kind": "NodeAgentConfiguration",
            "clientConnection": {"kubeconfig": control_plane.kubeconfig_path()},
            "logLevel": "info",
            "logFormat": "text",
            "server": {
                "healthProbes": {"bindAddress": "127.0.0.1", "port": free_port()?},
                "metrics": {"bindAddress": "127.0.0.1", "port": free_port()?},
            },
            "apiServer": {
                "server": control_plane.server_url(),
                "caFile": control_plane.ca_cert_path(),
            },
            "controllers": {
                "operatingSystemConfig": {
                    "secretName": OSC_SECRET,
                    "kubernetesVersion": kubernetes.trim_start_matches('v'),
                    "syncPeriod": "1h",
                },
                "token": {"syncConfigs": []},
            },
        });
        // The machine's name, which a node's user data writes (machine-controller-manager).
        let base = node.path("/var/lib/gardener-node-agent");
        std::fs::create_dir_all(&base).map_err(io_err(&base))?;
        let machine = base.join("machine-name");
        std::fs::write(&machine, node_name).map_err(io_err(&machine))?;
        let config_file = config_dir.join(format!("config-{version}.yaml"));
        std::fs::write(&config_file, config.to_string()).map_err(io_err(&config_file))?;
        Ok(())
    }

    fn arguments(
        control_plane: &ControlPlane,
        node: &TestNode,
        bus_address: &str,
        node_name: &str,
        config_dir: &Path,
    ) -> Result<Vec<String>> {
        let binary = Tool::Gardener.path()?.join("gardener-node-agent");
        let containerd = match node.flavor() {
            Flavor::V2 => Tool::Containerd2.path()?,
            _ => Tool::Containerd17.path()?,
        };
        let args = vec![
            format!("KUBECONFIG={}", control_plane.kubeconfig_path().display()),
            format!("DBUS_SYSTEM_BUS_ADDRESS={bus_address}"),
            format!(
                "PATH={}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                containerd.display()
            ),
            "sh".into(),
            "-c".into(),
            LAUNCHER.into(),
            "gardener-node-agent-launcher".into(),
            node.root().display().to_string(),
            node_name.into(),
            AGENT_FOLDERS.join(" "),
            binary.display().to_string(),
            format!("--config-dir={}", config_dir.display()),
        ];
        Ok(args)
    }

    fn launch(args: &[String], dir: &Path) -> Result<Server> {
        Server::start(
            "gardener-node-agent",
            Path::new("/usr/bin/env"),
            args,
            dir,
            None,
        )
    }

    /// systemd's `Restart=always` of `gardener-node-agent.service`: the agent exits on
    /// purpose once the kubelet registered its Node (to watch only that Node from then on),
    /// and after it restarted itself for a new version of its own; it is started again here,
    /// a few times at most.
    fn supervise(&mut self) -> Result<()> {
        if self.server.is_running() {
            return Ok(());
        }
        if self.restarts >= 5 {
            return Err(Error::NotReady {
                server: "gardener-node-agent",
                seconds: 0,
                log_tail: self.server.log_tail(40),
            });
        }
        self.restarts += 1;
        self.start_again()
    }

    /// Stops the agent (as a node's shutdown does).
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Starts the agent again after [`GardenerNodeAgent::stop`] (as a node's boot does).
    pub fn start_again(&mut self) -> Result<()> {
        self.server = Self::launch(&self.args, self.dir.path())?;
        Ok(())
    }

    /// Writes the next generation of the OSC and waits until gardener-node-agent applied it
    /// (the Node carries its checksum). Returns the generation.
    pub async fn apply_next(&mut self, timeout: Duration) -> Result<u32> {
        self.apply_next_with(timeout, |_| {}).await
    }

    /// From now on, OSC generations differ only in [`GENERATION_FILE`] and what the caller
    /// adds: gardener-node-agent restarts containerd only for the caller's changes.
    pub fn keep_cri_settings(&mut self) {
        self.vary_cri = false;
    }

    /// [`GardenerNodeAgent::apply_next`] with the OSC changed by `mutate` first (what a
    /// webhook on OSCs adds).
    pub async fn apply_next_with(
        &mut self,
        timeout: Duration,
        mutate: impl FnOnce(&mut serde_json::Value),
    ) -> Result<u32> {
        self.generation += 1;
        let cri_generation = if self.vary_cri { self.generation } else { 1 };
        let mut osc =
            operating_system_config(self.node.flavor(), self.cgroup_driver, cri_generation);
        osc["spec"]["files"][0]["content"]["inline"]["data"] = json!(self.generation.to_string());
        mutate(&mut osc);
        self.last = osc.clone();
        let yaml = serde_json::to_string(&osc).map_err(|e| Error::Tools(e.to_string()))?;
        let checksum = sandbox_runtime::manifests::sha256_hex(yaml.as_bytes());
        let written_at = std::time::SystemTime::now();
        let secret = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": OSC_SECRET,
                "namespace": "kube-system",
                "annotations": {"checksum/data-script": checksum},
            },
            "data": {"osc.yaml": base64(yaml.as_bytes())},
        });
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), "kube-system");
        secrets
            .patch(
                OSC_SECRET,
                &PatchParams::apply("sandbox-test-gardenlet").force(),
                &Patch::Apply(&secret),
            )
            .await
            .map_err(|e| Error::Tools(format!("writing the OSC Secret: {e}")))?;
        self.wait_applied(&checksum, written_at, timeout).await?;
        Ok(self.generation)
    }

    /// Starts gardener-node-agent on a test shoot's `node` (whose D-Bus is at `bus_address`
    /// and whose systemd stand-in restarts its containerd) for the shoot `control_plane`, as
    /// on a machine's first boot: no Node exists yet (the kubelet, started later, registers
    /// `node_name`). The OSC Secret is written by [`GardenerNodeAgent::apply_next_with`].
    pub async fn start_on_shoot_node(
        control_plane: &ControlPlane,
        node: Arc<TestNode>,
        node_name: &str,
        bus_address: &str,
    ) -> Result<Self> {
        let client = control_plane.client().await?;
        let dir = tempfile::tempdir().map_err(io_err(std::env::temp_dir()))?;
        let config_dir = dir.path().join("config");
        Self::write_config(control_plane, &node, &config_dir, node_name)?;
        let args = Self::arguments(control_plane, &node, bus_address, node_name, &config_dir)?;
        Ok(GardenerNodeAgent {
            server: Self::launch(&args, dir.path())?,
            args,
            own: None,
            node,
            client,
            node_name: node_name.into(),
            created_node: false,
            dir,
            cgroup_driver: CgroupDriver::Cgroupfs,
            generation: 0,
            vary_cri: false,
            last: serde_json::Value::Null,
            restarts: 0,
        })
    }

    /// Waits until gardener-node-agent applied the OSC with `checksum`: the Node it created
    /// carries the checksum; without a Node (before the kubelet registers it) it applies the
    /// OSC all the same and then waits for the Node, so applied means our generation's file is
    /// written and its last-applied OSC is newer than the Secret (written at `since`).
    async fn wait_applied(
        &mut self,
        checksum: &str,
        since: std::time::SystemTime,
        timeout: Duration,
    ) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let deadline = Instant::now() + timeout;
        let generation = self.generation.to_string();
        loop {
            let applied = if self.created_node {
                nodes
                    .get(&self.node_name)
                    .await
                    .ok()
                    .and_then(|n| n.metadata.annotations)
                    .and_then(|a| a.get(APPLIED_ANNOTATION).cloned())
                    .as_deref()
                    == Some(checksum)
            } else {
                let file =
                    std::fs::read_to_string(self.node.path(GENERATION_FILE)).unwrap_or_default();
                file == generation
                    && std::fs::metadata(self.node.path(LAST_APPLIED))
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| t >= since)
            };
            if applied {
                return Ok(());
            }
            self.supervise()?;
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    server: "gardener-node-agent",
                    seconds: timeout.as_secs(),
                    log_tail: self.server.log_tail(40),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The OSC written last, as stored (an OSC webhook's `oldObject` for the next write).
    pub fn last_osc(&self) -> &serde_json::Value {
        &self.last
    }

    /// The systemd stand-in the agent talks to (its own; a test shoot's node has its own).
    pub fn systemd(&self) -> &FakeSystemd {
        &self.own.as_ref().expect("a bus of its own").0
    }

    /// The system bus both agents restart containerd over (its own, as for `systemd`).
    pub fn bus(&self) -> &SystemBus {
        &self.own.as_ref().expect("a bus of its own").1
    }

    /// The node.
    pub fn node(&self) -> &Arc<TestNode> {
        &self.node
    }

    /// The agent's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.server.log_tail(lines)
    }

    /// The agent's working folder (its configuration and log).
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
