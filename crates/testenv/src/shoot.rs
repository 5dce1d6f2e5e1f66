//! A test shoot with a real node on this machine: a second kube-apiserver + etcd as the
//! shoot's API server, kube-controller-manager and kube-scheduler, a kubelet on the pinned
//! containerd 2.x with Debian's CNI plugins, and gardener-resource-manager applying the
//! ManagedResources of a seed namespace into the shoot, as in a real seed.
//!
//! The node: kubelet, containerd, the shims and every container share one mount namespace
//! and one network namespace (held by a `sleep` process, see [`NAMESPACE_HOLDER`]) in which
//! the node's host root folders are bind-mounted onto the paths a Gardener node has
//! (`/etc/containerd`, `/run/containerd`, `/var/bin/containerruntimes`, `/opt/runtime-sandbox`, `/run/dbus`,
//! `/run/runtime-sandbox`, `/var/lib/kubelet`, `/var/log/pods`): the installer DaemonSet's
//! hostPath volumes land in the node, not on the machine, and restarting containerd (through
//! systemd's D-Bus API, [`FakeSystemd`]) keeps the kubelet's volume mounts visible.
//! containerd also runs in the node's user namespace (identity-mapped), the kubelet in the
//! machine's. The node's network is joined to the machine by a veth pair (10.201.0.0/30):
//! the node IP is 10.201.0.2, the shoot's API server listens on port 443 and is reached at
//! 10.201.0.1, and gardener-resource-manager's `kubernetes-service-host` webhook points pods
//! there, as Gardener does for every shoot (no kube-proxy needed). Pods get their addresses
//! from Debian's CNI bridge inside the node's network namespace.
//!
//! Needs root, cgroups (v1 works: the kubelet runs with `failCgroupV1: false`), a free port
//! 443 and the 10.201.0.0/30 range, and Debian's `containernetworking-plugins`. One test
//! shoot per machine at a time: [`TestShoot::start`] waits for a machine-wide lock
//! ([`MACHINE_LOCK`]), so test binaries that run side by side (hack/test.sh) take turns.

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use toml_edit::{DocumentMut, value};

use crate::dbus::{FakeSystemd, SystemBus};
use crate::node::{Flavor, TestNode};
use crate::{ControlPlane, Error, Options, Result, Server, ShootApiServer, Tool, io_err};

/// Where gardenlet tells containerd runtimes to put binaries (`spec.binaryPath`).
pub const BINARY_PATH: &str = "/var/bin/containerruntimes";
/// The worker pool the node belongs to.
pub const POOL: &str = "sandbox";
/// The node's name.
pub const NODE_NAME: &str = "shoot-worker-sandbox-0";
/// Debian's CNI plugins.
const CNI_BIN: &str = "/usr/lib/cni";
/// The pods' network (the CNI bridge's host-local range).
const POD_CIDR: &str = "10.88.0.0/16";

/// Host folders of a Gardener node that live in the node's host root here.
const NODE_FOLDERS: &[&str] = &[
    "/etc/containerd",
    "/run/containerd",
    BINARY_PATH,
    "/run/dbus",
    "/run/runtime-sandbox",
    // Versioned runtime installs (gVisor's and Kata's version folders).
    "/opt/runtime-sandbox",
    "/var/lib/kubelet",
    "/var/log/pods",
    "/var/log/containers",
    // Where gardener-node-agent points containerd's CNI (links to Debian's plugins).
    "/opt/cni/bin",
    "/var/lib/gardener-node-agent",
];

/// Creates the node's namespaces and holds them: a user namespace that maps every id but the
/// last to itself (root stays root for files and processes, but containerd and the shims know
/// they are nested: this machine may lack CAP_SYS_RESOURCE, and gVisor's shim lowers its own
/// OOM score, which a real node allows), a mount namespace with the node's folders
/// bind-mounted, and a network namespace (the node's own, joined to the machine by a veth
/// pair). Writes the holder's pid once everything is set up, then sleeps.
const NAMESPACE_HOLDER: &str = r#"
root=$1; shift
sync=$(mktemp -d)
mkfifo "$sync/ready" "$sync/go"
unshare --user --mount --net --propagation private sh -c '
  root=$1; sync=$2; shift 2
  echo ready > "$sync/ready"; read _ < "$sync/go"
  for dir in "$@"; do
    mkdir -p "$dir" "$root$dir"
    mount --bind "$root$dir" "$dir"
  done
  ip link set lo up
  echo $$ > "$root/namespace.pid.tmp" && mv "$root/namespace.pid.tmp" "$root/namespace.pid"
  exec sleep infinity
' node-namespace "$root" "$sync" "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
read _ < "$sync/ready"
echo "0 0 4294967294" > "/proc/$child/uid_map"
echo "0 0 4294967294" > "/proc/$child/gid_map"
echo go > "$sync/go"
rm -rf "$sync"
while kill -0 "$child" 2>/dev/null; do wait "$child"; done
"#;

/// The link between the machine and the node: the machine's end (where the shoot's API
/// server is reached) and the node's (the node IP).
const HOST_ADDRESS: &str = "10.201.0.1";
const NODE_ADDRESS: &str = "10.201.0.2";
const LINK_PREFIX: u8 = 30;
const HOST_LINK: &str = "sandbox-host0";
const NODE_LINK: &str = "sandbox-node0";

const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The lock a test shoot holds for its lifetime: the port, the addresses and the link names
/// are the machine's.
pub const MACHINE_LOCK: &str = "/run/lock/sandbox-test-shoot.lock";
/// How long a shoot waits for another test's shoot to end.
const LOCK_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A running test shoot with one node. Dropping it stops everything.
pub struct TestShoot {
    // Field order is drop order: the kubelet first, the API server last.
    kubelet: Mutex<Option<Server>>,
    grm: Server,
    systemd: FakeSystemd,
    node: Arc<TestNode>,
    bus: SystemBus,
    scheduler: Server,
    kcm: Server,
    holder: Server,
    control_plane: ControlPlane,
    node_ip: IpAddr,
    grm_webhook_port: u16,
    seed_namespace: String,
    // Last: released once everything above has stopped.
    _machine: std::fs::File,
}

impl TestShoot {
    /// Starts the shoot for the seed namespace `seed_namespace` of `seed` (whose
    /// ManagedResources gardener-resource-manager applies into the shoot), with one node of pool
    /// [`POOL`] that carries `labels` besides a Gardener worker node's
    /// (`worker.gardener.cloud/pool`, `worker.garden.sapcloud.io/group`,
    /// `worker.gardener.cloud/cri-name: containerd`). Waits
    /// until the node is Ready.
    pub async fn start(
        seed: &ControlPlane,
        seed_namespace: &str,
        labels: &[(&str, &str)],
    ) -> Result<Self> {
        Self::start_with(seed, seed_namespace, labels, true).await
    }

    /// [`TestShoot::start`]; without `kubelet` the node's machine is up (containerd, D-Bus)
    /// but its kubelet has not started: [`TestShoot::start_kubelet`] and
    /// [`TestShoot::wait_node_ready`] follow, as on a machine's first boot after
    /// gardener-node-agent applied its OperatingSystemConfig.
    pub async fn start_with(
        seed: &ControlPlane,
        seed_namespace: &str,
        labels: &[(&str, &str)],
        kubelet: bool,
    ) -> Result<Self> {
        let machine = machine_lock().await?;
        let host_ip: IpAddr = HOST_ADDRESS.parse().expect("constant address");
        let node_ip: IpAddr = NODE_ADDRESS.parse().expect("constant address");
        let control_plane = ControlPlane::start_with(Options {
            skip_crds: true,
            shoot: Some(ShootApiServer {
                address: host_ip,
                port: 443,
            }),
            ..Options::default()
        })
        .await?;
        let root = control_plane.root().to_path_buf();
        let kubeconfig = control_plane.kubeconfig_path().display().to_string();
        let k8s = &Tool::KubernetesNode.path()?;

        let kcm = Server::start(
            "kube-controller-manager",
            &k8s.join("kube-controller-manager"),
            &[
                format!("--kubeconfig={kubeconfig}"),
                format!("--authentication-kubeconfig={kubeconfig}"),
                format!("--authorization-kubeconfig={kubeconfig}"),
                // What a node's pods need: DaemonSets, default ServiceAccounts, the CA
                // ConfigMap of projected tokens, owner-based deletion, pod cleanup, and the node
                // lifecycle (it lifts the not-ready taint a new node registers with).
                "--controllers=daemonset-controller,serviceaccount-controller,root-ca-certificate-publisher-controller,garbage-collector-controller,pod-garbage-collector-controller,namespace-controller,node-lifecycle-controller".into(),
                format!("--root-ca-file={}", control_plane.ca_cert_path().display()),
                format!(
                    "--service-account-private-key-file={}",
                    control_plane.service_account_key_path().display()
                ),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", crate::free_port()?),
                format!("--cert-dir={}", root.join("kcm-certs").display()),
                "--v=1".into(),
            ],
            &root,
            None,
        )?;
        let scheduler = Server::start(
            "kube-scheduler",
            &k8s.join("kube-scheduler"),
            &[
                format!("--kubeconfig={kubeconfig}"),
                format!("--authentication-kubeconfig={kubeconfig}"),
                format!("--authorization-kubeconfig={kubeconfig}"),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", crate::free_port()?),
                format!("--cert-dir={}", root.join("scheduler-certs").display()),
                "--v=1".into(),
            ],
            &root,
            None,
        )?;

        // The node: its host root, the mount namespace, containerd in it.
        let mut node = TestNode::new(Flavor::V2)?;
        let mut holder_args = vec![
            "-c".to_string(),
            NAMESPACE_HOLDER.into(),
            "node-namespace-holder".into(),
            node.root().display().to_string(),
        ];
        holder_args.extend(NODE_FOLDERS.iter().map(|f| f.to_string()));
        let holder = Server::start(
            "node-namespace",
            Path::new("/bin/sh"),
            &holder_args,
            node.root(),
            None,
        )?;
        let pid_file = node.root().join("namespace.pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        let holder_pid = loop {
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok())
            {
                break pid;
            }
            if !holder.is_running() || Instant::now() > deadline {
                return Err(Error::NotReady {
                    server: "node-namespace",
                    seconds: 10,
                    log_tail: holder.log_tail(20),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        link_node(holder_pid)?;
        node.run_in_namespace(holder_pid, BINARY_PATH);
        configure_cni(&node)?;
        node.start()?;
        node.import_images()?;
        let node = Arc::new(node);

        let bus = SystemBus::start(&node.path("/run/dbus/system_bus_socket"))?;
        let systemd = FakeSystemd::for_node(&bus, node.clone())
            .await
            .map_err(|e| Error::Tools(format!("fake systemd on the test bus: {e}")))?;

        let (grm, grm_webhook_port) = start_grm(seed, seed_namespace, &control_plane, host_ip)?;
        let shoot = TestShoot {
            kubelet: Mutex::new(None),
            grm,
            systemd,
            node,
            bus,
            scheduler,
            kcm,
            holder,
            control_plane,
            node_ip,
            grm_webhook_port,
            seed_namespace: seed_namespace.to_string(),
            _machine: machine,
        };
        shoot.register_service_host_webhook().await?;
        shoot.write_kubelet_config(labels)?;
        if kubelet {
            shoot.start_kubelet()?;
            shoot.wait_node_ready(START_TIMEOUT).await?;
        }
        Ok(shoot)
    }

    /// The node's system bus (D-Bus address).
    pub fn bus_address(&self) -> String {
        self.bus.address()
    }

    /// The shoot's API server.
    pub fn control_plane(&self) -> &ControlPlane {
        &self.control_plane
    }

    /// A cluster-admin client for the shoot.
    pub async fn client(&self) -> Result<kube::Client> {
        self.control_plane.client().await
    }

    /// The node (its containerd, host root and images).
    pub fn node(&self) -> &Arc<TestNode> {
        &self.node
    }

    /// systemd's stand-in: which units were restarted.
    pub fn systemd(&self) -> &FakeSystemd {
        &self.systemd
    }

    /// The seed namespace gardener-resource-manager watches.
    pub fn seed_namespace(&self) -> &str {
        &self.seed_namespace
    }

    /// Builds the node agent's image `repository:tag` for this machine's architecture from the
    /// product `binary` and the pinned gVisor, imports it into the node's containerd (the
    /// kubelet never pulls it), and writes an image vector overwrite naming it
    /// (`IMAGEVECTOR_OVERWRITE` for the controller); returns the overwrite's path.
    pub fn provide_node_agent_image(
        &self,
        repository: &str,
        tag: &str,
        binary: &Path,
    ) -> Result<std::path::PathBuf> {
        let image = format!("{repository}:{tag}");
        let arch = sandbox_image::Arch::host().ok_or_else(|| {
            Error::Tools(format!(
                "no image for this machine's architecture ({})",
                std::env::consts::ARCH
            ))
        })?;
        let (archive, recorded) = crate::images::recorded_gvisor_agent_image(
            &image,
            &[(arch, binary, &Tool::Gvisor.path()?)],
        )
        .map_err(|e| Error::Tools(format!("building {image}: {e}")))?;
        self.node.import_archive(&image, &archive)?;
        // As a release pins it: the tag (the node's version folder) pinned by the digest the
        // image is served under, and the binaries the seed expects (the agent enforces them).
        let digest = sandbox_image::index_digest(&archive)
            .map_err(|e| Error::Tools(format!("{image}: {e}")))?;
        self.node
            .tag_image(&image, &format!("{repository}@{digest}"))?;
        let entry = sandbox_runtime::image::ImageVector {
            images: vec![sandbox_runtime::image::ImageSource {
                name: sandbox_runtime::image::NODE_AGENT_IMAGE.into(),
                source_repository: None,
                repository: repository.into(),
                tag: Some(format!("{tag}@{digest}")),
                binaries: recorded,
            }],
        };
        let path = self.control_plane.root().join("imagevector-overwrite.yaml");
        let text = serde_saphyr::to_string(&entry).map_err(|e| Error::Tools(e.to_string()))?;
        std::fs::write(&path, text).map_err(io_err(&path))?;
        Ok(path)
    }

    /// Stops the kubelet (its pods keep running, as on a real node).
    pub fn stop_kubelet(&self) {
        drop(
            self.kubelet
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
    }

    /// Starts the kubelet (again).
    pub fn start_kubelet(&self) -> Result<()> {
        let mut kubelet = self.kubelet.lock().unwrap_or_else(|e| e.into_inner());
        if kubelet.is_some() {
            return Ok(());
        }
        let root = self.node.root();
        let args = vec![
            // The node's mount and network namespaces, but the machine's user namespace: the
            // kubelet manages cgroups and sysctls as on a real node.
            "nsenter".to_string(),
            format!("--mount=/proc/{}/ns/mnt", self.holder_pid()?),
            format!("--net=/proc/{}/ns/net", self.holder_pid()?),
            "--".into(),
            Tool::KubernetesNode
                .path()?
                .join("kubelet")
                .display()
                .to_string(),
            format!("--config={}", root.join("kubelet.yaml").display()),
            format!("--kubeconfig={}", root.join("kubelet.kubeconfig").display()),
            format!("--hostname-override={NODE_NAME}"),
            format!("--node-ip={}", self.node_ip),
            format!(
                "--node-labels={}",
                std::fs::read_to_string(root.join("node-labels"))
                    .map_err(io_err(root.join("node-labels")))?
            ),
            "--v=1".into(),
        ];
        *kubelet = Some(Server::start(
            "kubelet",
            Path::new("/usr/bin/env"),
            &args,
            root,
            None,
        )?);
        Ok(())
    }

    /// Waits until the node reports Ready.
    pub async fn wait_node_ready(&self, timeout: Duration) -> Result<()> {
        let nodes = Api::<Node>::all(self.client().await?);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(node) = nodes.get_opt(NODE_NAME).await? {
                let ready = node
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                if ready {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    server: "kubelet",
                    seconds: timeout.as_secs(),
                    log_tail: self.log_tails(30),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn holder_pid(&self) -> Result<u32> {
        let path = self.node.root().join("namespace.pid");
        std::fs::read_to_string(&path)
            .map_err(io_err(&path))?
            .trim()
            .parse()
            .map_err(|e| Error::Tools(format!("{}: {e}", path.display())))
    }

    fn write_kubelet_config(&self, labels: &[(&str, &str)]) -> Result<()> {
        let root = self.node.root();
        let config = format!(
            r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine has cgroup v1 (hybrid) and no systemd: supported by the pinned kubelet when
# told so (failCgroupV1), with the cgroupfs driver.
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: "{ca}"}}
authorization: {{mode: Webhook}}
address: "{ip}"
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
containerRuntimeEndpoint: "unix://{socket}"
# A test machine's disk is the developer's: never evict, never collect images.
evictionHard: {{memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
resolvConf: /etc/resolv.conf
registerNode: true
podCIDR: "{cidr}"
nodeStatusUpdateFrequency: 5s
syncFrequency: 10s
"#,
            ca = self.control_plane.ca_cert_path().display(),
            ip = self.node_ip,
            socket = self.node.socket().display(),
            cidr = POD_CIDR,
        );
        let path = root.join("kubelet.yaml");
        std::fs::write(&path, config).map_err(io_err(&path))?;
        let kubeconfig = self
            .control_plane
            .user_kubeconfig(&format!("system:node:{NODE_NAME}"), &["system:nodes"])?;
        // The kubelet reaches the API server from the node's network, over the veth pair.
        let text = std::fs::read_to_string(&kubeconfig).map_err(io_err(&kubeconfig))?;
        let text = text.replace(
            self.control_plane.server_url(),
            &format!("https://{HOST_ADDRESS}:443"),
        );
        let target = root.join("kubelet.kubeconfig");
        std::fs::write(&target, text).map_err(io_err(&target))?;
        // gardenlet's worker pool labels, the legacy one included (a pool's ContainerRuntime
        // selects both).
        let mut all = vec![
            format!("worker.gardener.cloud/pool={POOL}"),
            format!("worker.garden.sapcloud.io/group={POOL}"),
            "worker.gardener.cloud/cri-name=containerd".to_string(),
        ];
        all.extend(labels.iter().map(|(k, v)| format!("{k}={v}")));
        let path = root.join("node-labels");
        std::fs::write(&path, all.join(",")).map_err(io_err(&path))
    }

    /// gardenlet registers gardener-resource-manager's pod webhooks in every shoot; this one
    /// points the pods of `kube-system` at the API server's address.
    async fn register_service_host_webhook(&self) -> Result<()> {
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD.encode(self.control_plane.ca_pem());
        let config: MutatingWebhookConfiguration = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "gardener-resource-manager-shoot"},
            "webhooks": [{
                "name": "kubernetes-service-host.resources.gardener.cloud",
                "admissionReviewVersions": ["v1"],
                "clientConfig": {
                    "url": format!("https://127.0.0.1:{}/webhooks/kubernetes-service-host", self.grm_webhook_port),
                    "caBundle": ca,
                },
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "objectSelector": {"matchExpressions": [{"key": "apiserver-proxy.networking.gardener.cloud/inject", "operator": "NotIn", "values": ["disable"]}]},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "timeoutSeconds": 10,
            }],
        }))
        .map_err(|e| Error::Tools(e.to_string()))?;
        Api::<MutatingWebhookConfiguration>::all(self.client().await?)
            .create(&PostParams::default(), &config)
            .await?;
        Ok(())
    }

    /// The last `lines` lines of every component's log.
    pub fn log_tails(&self, lines: usize) -> String {
        let kubelet = self
            .kubelet
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|k| k.log_tail(lines))
            .unwrap_or_else(|| tail_file(&self.node.root().join("kubelet.log"), lines));
        format!(
            "{}\n--- kubelet ---\n{kubelet}\n--- containerd ---\n{}\n--- gardener-resource-manager ---\n{}\n--- kube-controller-manager ---\n{}\n--- kube-scheduler ---\n{}\n--- dbus ---\n{}\n--- node namespace ---\n{}",
            self.control_plane.log_tails(lines),
            self.node.log_tail(lines),
            self.grm.log_tail(lines),
            self.kcm.log_tail(lines),
            self.scheduler.log_tail(lines),
            self.bus.log_tail(lines),
            self.holder.log_tail(lines),
        )
    }

    /// A guard that prints every component's log tail if the test holding it panics.
    pub fn logs_on_panic(&self) -> crate::LogsOnPanic<'_> {
        crate::LogsOnPanic(self)
    }
}

impl Drop for TestShoot {
    fn drop(&mut self) {
        self.stop_kubelet();
        // The node's drop kills every process naming its host root, the holder's watchdog
        // included: end the holder first, so its `sleep` is not orphaned. containerd and the
        // pods keep the namespace until they go.
        if let Ok(pid) = self.holder_pid() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
}

impl crate::LogTails for TestShoot {
    fn log_tails(&self, lines: usize) -> String {
        TestShoot::log_tails(self, lines)
    }
}

/// Takes [`MACHINE_LOCK`] (an `flock`, so the kernel releases it when a test dies), waiting
/// while another test's shoot holds it.
async fn machine_lock() -> Result<std::fs::File> {
    let path = Path::new(MACHINE_LOCK);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    let deadline = Instant::now() + LOCK_TIMEOUT;
    let mut said = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                if !said {
                    eprintln!(
                        "test shoot: waiting for another test's shoot to end ({MACHINE_LOCK})"
                    );
                    said = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Tools(format!(
                    "another test shoot held {MACHINE_LOCK} for {} s",
                    LOCK_TIMEOUT.as_secs()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(path)(e)),
        }
    }
}

fn tail_file(path: &Path, lines: usize) -> String {
    std::fs::read_to_string(path)
        .map(|log| {
            let all: Vec<&str> = log.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        })
        .unwrap_or_default()
}

/// Joins the node's network namespace (held by `holder`) to the machine with a veth pair:
/// [`HOST_ADDRESS`] on the machine's end, [`NODE_ADDRESS`] (the node IP, default route) on the
/// node's. The pair goes away with the node's namespace.
fn link_node(holder: u32) -> Result<()> {
    let netns = format!("/proc/{holder}/ns/net");
    let run = |args: &[&str]| -> Result<()> {
        let output = std::process::Command::new(args[0])
            .args(&args[1..])
            .output()
            .map_err(io_err(args[0]))?;
        if !output.status.success() {
            return Err(Error::Tools(format!(
                "{} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(())
    };
    // A pair left by a test that was killed: its namespace is gone, so is the pair, unless
    // the machine's end survived alone.
    let _ = run(&["ip", "link", "del", HOST_LINK]);
    let host_cidr = format!("{HOST_ADDRESS}/{LINK_PREFIX}");
    let node_cidr = format!("{NODE_ADDRESS}/{LINK_PREFIX}");
    run(&[
        "ip", "link", "add", HOST_LINK, "type", "veth", "peer", "name", NODE_LINK, "netns", &netns,
    ])?;
    run(&["ip", "addr", "add", &host_cidr, "dev", HOST_LINK])?;
    run(&["ip", "link", "set", HOST_LINK, "up"])?;
    let inside = |args: &[&str]| -> Result<()> {
        let net = format!("--net={netns}");
        let mut all = vec!["nsenter", net.as_str(), "--"];
        all.extend_from_slice(args);
        run(&all)
    };
    inside(&["ip", "addr", "add", &node_cidr, "dev", NODE_LINK])?;
    inside(&["ip", "link", "set", NODE_LINK, "up"])?;
    inside(&["ip", "route", "add", "default", "via", HOST_ADDRESS])
}

/// Points the node's containerd at Debian's CNI plugins and a bridge network in its host root.
fn configure_cni(node: &TestNode) -> Result<()> {
    if !Path::new(CNI_BIN).join("bridge").exists() {
        return Err(Error::Tools(format!(
            "{CNI_BIN}/bridge is missing: install Debian's containernetworking-plugins (hack/prereqs.sh does)"
        )));
    }
    // gardener-node-agent sets containerd's CNI folder to /opt/cni/bin: the same plugins.
    let opt_cni = node.path("/opt/cni/bin");
    std::fs::create_dir_all(&opt_cni).map_err(io_err(&opt_cni))?;
    for entry in std::fs::read_dir(CNI_BIN).map_err(io_err(CNI_BIN))? {
        let entry = entry.map_err(io_err(CNI_BIN))?;
        let link = opt_cni.join(entry.file_name());
        if !link.exists() {
            std::os::unix::fs::symlink(entry.path(), &link).map_err(io_err(&link))?;
        }
    }
    let conf_dir = node.path("/etc/cni/net.d");
    std::fs::create_dir_all(&conf_dir).map_err(io_err(&conf_dir))?;
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "shoot-pods",
        "plugins": [
            {"type": "bridge", "bridge": "shoot0", "isGateway": true, "ipMasq": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                      "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": node.path("/var/lib/cni/networks").display().to_string()}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    });
    let path = conf_dir.join("10-bridge.conflist");
    std::fs::write(&path, conflist.to_string()).map_err(io_err(&path))?;
    let config_path = node.config_path();
    let text = std::fs::read_to_string(&config_path).map_err(io_err(&config_path))?;
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e| Error::Tools(format!("{}: {e}", config_path.display())))?;
    let cni = &mut doc["plugins"]["io.containerd.cri.v1.runtime"]["cni"];
    cni["conf_dir"] = value(conf_dir.display().to_string());
    let mut bins = toml_edit::Array::new();
    bins.push(CNI_BIN);
    cni["bin_dirs"] = value(bins);
    node.write_config(&doc.to_string())
}

/// gardener-resource-manager as a shoot's: ManagedResources from `seed_namespace` of the seed,
/// applied into the shoot; its webhooks served on a local port. Returns the server and the
/// webhook port.
fn start_grm(
    seed: &ControlPlane,
    seed_namespace: &str,
    shoot: &ControlPlane,
    api_address: IpAddr,
) -> Result<(Server, u16)> {
    let dir = shoot.root().join("gardener-resource-manager");
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).map_err(io_err(&certs))?;
    let (cert, key) = shoot.serving_cert("gardener-resource-manager", &["localhost"])?;
    for (from, to) in [(&cert, "tls.crt"), (&key, "tls.key")] {
        std::fs::copy(from, certs.join(to)).map_err(io_err(certs.join(to)))?;
    }
    let webhook_port = crate::free_port()?;
    let health_port = crate::free_port()?;
    let metrics_port = crate::free_port()?;
    let config = format!(
        r#"apiVersion: resourcemanager.config.gardener.cloud/v1alpha1
kind: ResourceManagerConfiguration
sourceClientConnection:
  kubeconfig: "{seed}"
  namespaces: ["{seed_namespace}"]
  qps: 100
  burst: 130
targetClientConnection:
  kubeconfig: "{target}"
  qps: 100
  burst: 130
leaderElection:
  leaderElect: false
  resourceNamespace: "{seed_namespace}"
server:
  webhooks:
    bindAddress: 127.0.0.1
    port: {webhook_port}
    tls:
      serverCertDir: "{certs}"
  healthProbes:
    bindAddress: 127.0.0.1
    port: {health_port}
  metrics:
    bindAddress: 127.0.0.1
    port: {metrics_port}
logLevel: info
logFormat: text
controllers:
  clusterID: ""
  garbageCollector:
    enabled: false
  health:
    syncPeriod: 15s
  managedResource:
    syncPeriod: 1m
  tokenRequestor:
    enabled: true
webhooks:
  kubernetesServiceHost:
    enabled: true
    host: "{host}"
"#,
        seed = seed.kubeconfig_path().display(),
        target = shoot.kubeconfig_path().display(),
        certs = certs.display(),
        host = api_address,
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, config).map_err(io_err(&path))?;
    let server = Server::start(
        "gardener-resource-manager",
        &Tool::Gardener.path()?.join("gardener-resource-manager"),
        &[format!("--config={}", path.display())],
        &dir,
        None,
    )?;
    let deadline = Instant::now() + START_TIMEOUT;
    while crate::http_get(health_port, "/readyz").is_none_or(|(code, _)| code != 200) {
        if !server.is_running() || Instant::now() > deadline {
            return Err(Error::NotReady {
                server: "gardener-resource-manager",
                seconds: START_TIMEOUT.as_secs(),
                log_tail: server.log_tail(30),
            });
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok((server, webhook_port))
}
