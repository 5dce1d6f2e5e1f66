//! A throw-away "node" for the node agent's tests: a temporary host root with its own
//! containerd (private root, state, socket and configuration), and locally built images.
//!
//! containerd runs in a private mount namespace (inside a user namespace, see [`LAUNCHER`])
//! in which the host root's `etc/containerd` is bind-mounted onto `/etc/containerd`: the agent edits files under the host root exactly
//! as it would under `/host` on a node, and containerd and its shims read them at the
//! absolute paths the configuration names (`/etc/containerd/runsc.toml`,
//! `/etc/containerd/conf.d/*.toml`). The host root's `usr/local/bin` comes first on
//! containerd's `PATH`, so the shims the agent installs there are the ones containerd runs.
//! Needs root (mount namespaces, overlayfs, runc), as CI has.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sandbox_runtime::manifests::sha256_hex;
use toml_edit::{DocumentMut, Item, Table, value};

use crate::images::busybox_archive;
use crate::{Error, Result, Server, Tool, io_err};

/// The pause image every test node's sandboxes use (built locally, never pulled).
pub const PAUSE_IMAGE: &str = "localhost/runtime-sandbox-test/pause:1";
/// A busybox image with `sh`, `dmesg`, `sleep`, `cat` and `echo`.
pub const BUSYBOX_IMAGE: &str = "localhost/runtime-sandbox-test/busybox:1";
/// Where the agent installs binaries in the tests (a host path).
pub const BINARY_PATH: &str = "/usr/local/bin";

/// Which containerd the node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// Debian's containerd 1.6 (`/usr/bin/containerd`), configuration version 2.
    Debian,
    /// The pinned containerd 1.7 from `hack/tools.sh`, configuration version 2.
    V17,
    /// The pinned containerd 2.x from `hack/tools.sh`, configuration version 3.
    V2,
}

/// A host root with a containerd that can be started, stopped and restarted.
pub struct TestNode {
    dir: tempfile::TempDir,
    flavor: Flavor,
    containerd: PathBuf,
    ctr: PathBuf,
    path_env: String,
    server: Mutex<Option<Server>>,
    starts: Mutex<usize>,
    /// The process holding the mount namespace containerd runs in, when it is a kubelet
    /// node's (see [`crate::shoot`]); otherwise containerd gets its own ([`LAUNCHER`]).
    namespace: Option<u32>,
    /// The syslog socket containerd's shims log to, with what it received.
    syslog: Option<(PathBuf, std::sync::Arc<Mutex<Vec<String>>>)>,
}

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The namespace wrapper, run under the watchdog with the host root's containerd folder and
/// the containerd binary as arguments. containerd gets a private mount namespace (the bind
/// mount of `/etc/containerd`) and network, UTS and IPC namespaces (what its host-network
/// pods share, so they may mount sysfs and join them) inside a user namespace that maps every id but the last one
/// to itself: files and processes stay root's, but containerd and the shims know they are
/// nested and tolerate what the machine forbids. Test machines are often containers without
/// CAP_SYS_RESOURCE, and gVisor's shim lowers its own OOM score, which needs it; on a real
/// node that succeeds. TERM is passed on to containerd.
///
/// The host root's `opt/runtime-sandbox` is bind-mounted onto `/opt/runtime-sandbox` too
/// (versioned payloads, e.g. Kata's, are installed there). With a syslog socket as third
/// argument, `/run` is a private tmpfs whose `/run/syslog` is that socket (Go's log/syslog
/// tries it after `/dev/log`; Kata's shim refuses to start without a syslog).
const LAUNCHER: &str = r#"
etc=$1; containerd=$2; syslog=$3
sync=$(mktemp -d)
mkfifo "$sync/ready" "$sync/go"
unshare --user --mount --net --uts --ipc --propagation private sh -c '
  echo ready > "$1/ready"; read _ < "$1/go"
  mount --bind "$2" /etc/containerd && mount --bind "$2/../../opt/runtime-sandbox" /opt/runtime-sandbox || exit 1
  if [ -n "$4" ]; then
    mount -t tmpfs tmpfs /run && touch /run/syslog && mount --bind "$4" /run/syslog || exit 1
  fi
  exec "$3" --config /etc/containerd/config.toml
' namespaced "$sync" "$etc" "$containerd" "$syslog" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
read _ < "$sync/ready"
echo "0 0 4294967294" > "/proc/$child/uid_map"
echo "0 0 4294967294" > "/proc/$child/gid_map"
echo go > "$sync/go"
rm -rf "$sync"
while kill -0 "$child" 2>/dev/null; do wait "$child"; done
"#;

impl TestNode {
    /// A new host root with containerd's default configuration for `flavor`, moved into the
    /// host root (root, state, sockets) and pointed at the local pause image. containerd is
    /// not started.
    pub fn new(flavor: Flavor) -> Result<Self> {
        let (containerd, ctr) = match flavor {
            Flavor::Debian => (
                PathBuf::from("/usr/bin/containerd"),
                PathBuf::from("/usr/bin/ctr"),
            ),
            Flavor::V17 => (
                Tool::Containerd17.path()?.join("containerd"),
                Tool::Containerd17.path()?.join("ctr"),
            ),
            Flavor::V2 => (
                Tool::Containerd2.path()?.join("containerd"),
                Tool::Containerd2.path()?.join("ctr"),
            ),
        };
        for binary in [&containerd, &ctr] {
            if !binary.exists() {
                return Err(Error::Tools(format!(
                    "{} is missing (Debian: 'apt-get install containerd runc'; 2.x: hack/tools.sh ensure containerd)",
                    binary.display()
                )));
            }
        }
        // The mount point of the bind mount; Debian's package creates it anyway.
        std::fs::create_dir_all("/etc/containerd").map_err(io_err("/etc/containerd"))?;
        let dir = tempfile::Builder::new()
            .prefix("node-")
            .tempdir()
            .map_err(io_err(std::env::temp_dir()))?;
        let root = dir.path().to_path_buf();
        let mut path_env = format!(
            "{}",
            root.join(BINARY_PATH.trim_start_matches('/')).display()
        );
        match flavor {
            // The pinned containerds' own runc shims.
            Flavor::V17 => path_env.push_str(&format!(":{}", Tool::Containerd17.path()?.display())),
            Flavor::V2 => path_env.push_str(&format!(":{}", Tool::Containerd2.path()?.display())),
            Flavor::Debian => {}
        }
        path_env.push_str(":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        let node = TestNode {
            dir,
            flavor,
            containerd,
            ctr,
            path_env,
            server: Mutex::new(None),
            starts: Mutex::new(0),
            namespace: None,
            syslog: None,
        };
        // The mount point of the payload bind mount (an empty folder on the machine).
        std::fs::create_dir_all("/opt/runtime-sandbox").map_err(io_err("/opt/runtime-sandbox"))?;
        for folder in [
            "opt/runtime-sandbox",
            "etc/containerd",
            "run/containerd",
            "var/lib/containerd",
            BINARY_PATH,
        ] {
            let path = node.path(folder);
            std::fs::create_dir_all(&path).map_err(io_err(&path))?;
        }
        // The node's devices are the machine's (the agent's capability checks look there).
        let dev = node.path("/dev");
        std::os::unix::fs::symlink("/dev", &dev).map_err(io_err(&dev))?;
        let default = Command::new(&node.containerd)
            .args(["config", "default"])
            .output()
            .map_err(io_err(&node.containerd))?;
        if !default.status.success() {
            return Err(Error::Tools(format!(
                "{} config default failed: {}",
                node.containerd.display(),
                String::from_utf8_lossy(&default.stderr)
            )));
        }
        let config = node.relocate(&String::from_utf8_lossy(&default.stdout))?;
        node.write_config(&config)?;
        Ok(node)
    }

    /// From now on containerd runs in the user, mount and network namespaces held by process
    /// `holder` (a kubelet node's, in which the host root's folders are bind-mounted onto the
    /// node's paths), with `binary_path` first on its `PATH`
    /// (as Gardener's containerd unit has it). Call before [`TestNode::start`].
    pub fn run_in_namespace(&mut self, holder: u32, binary_path: &str) {
        self.namespace = Some(holder);
        self.path_env = format!("{binary_path}:{}", self.path_env);
    }

    /// The host root (what the agent gets as `--host-root`).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The agent's path of host path `path`.
    pub fn path(&self, path: &str) -> PathBuf {
        self.root().join(path.trim_start_matches('/'))
    }

    /// Which containerd this node runs.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// containerd's socket.
    pub fn socket(&self) -> PathBuf {
        self.path("/run/containerd/containerd.sock")
    }

    /// The host's `config.toml` (in the host root).
    pub fn config_path(&self) -> PathBuf {
        self.path("/etc/containerd/config.toml")
    }

    /// Replaces `config.toml`.
    pub fn write_config(&self, text: &str) -> Result<()> {
        let path = self.config_path();
        std::fs::write(&path, text).map_err(io_err(&path))
    }

    /// Moves the default configuration's paths into the host root, turns NRI off (its
    /// socket is machine-wide), names the local pause image and keeps oom_score_adj restricted.
    fn relocate(&self, default: &str) -> Result<String> {
        let mut doc: DocumentMut = default
            .parse()
            .map_err(|e| Error::Tools(format!("containerd config default is not TOML: {e}")))?;
        let at = |p: &str| self.path(p).display().to_string();
        doc["root"] = value(at("/var/lib/containerd"));
        doc["state"] = value(at("/run/containerd"));
        let grpc = at("/run/containerd/containerd.sock");
        let ttrpc = at("/run/containerd/containerd.sock.ttrpc");
        if doc.contains_key("grpc") {
            // Version 2: top-level server sections.
            doc["grpc"]["address"] = value(grpc);
            if let Some(table) = doc.get_mut("ttrpc").and_then(Item::as_table_like_mut) {
                table.insert("address", value(ttrpc));
            }
        } else {
            // Versions 3 and 4: the servers are plugins.
            doc["plugins"]["io.containerd.server.v1.grpc"]["address"] = value(grpc);
            doc["plugins"]["io.containerd.server.v1.ttrpc"]["address"] = value(ttrpc);
        }
        let plugins = doc["plugins"]
            .as_table_like_mut()
            .ok_or_else(|| Error::Tools("containerd config default has no [plugins]".into()))?;
        if let Some(opt) = plugins
            .get_mut("io.containerd.internal.v1.opt")
            .and_then(Item::as_table_like_mut)
        {
            opt.insert("path", value(at("/opt/containerd")));
        }
        if let Some(nri) = plugins
            .get_mut("io.containerd.nri.v1.nri")
            .and_then(Item::as_table_like_mut)
        {
            nri.insert("disable", value(true));
        }
        // Test machines are often containers themselves, which may not lower oom_score_adj
        // below their own (kind sets the same).
        let runtime_plugin = match self.flavor {
            Flavor::Debian | Flavor::V17 => "io.containerd.grpc.v1.cri",
            Flavor::V2 => "io.containerd.cri.v1.runtime",
        };
        doc["plugins"][runtime_plugin]["restrict_oom_score_adj"] = value(true);
        match self.flavor {
            Flavor::Debian | Flavor::V17 => {
                doc["plugins"]["io.containerd.grpc.v1.cri"]["sandbox_image"] = value(PAUSE_IMAGE);
            }
            Flavor::V2 => {
                let images = &mut doc["plugins"]["io.containerd.cri.v1.images"];
                if images.get("pinned_images").is_none() {
                    images["pinned_images"] = Item::Table(Table::new());
                }
                images["pinned_images"]["sandbox"] = value(PAUSE_IMAGE);
            }
        }
        Ok(doc.to_string())
    }

    /// Starts containerd and waits until its socket accepts connections.
    pub fn start(&self) -> Result<()> {
        let mut server = self.server.lock().unwrap_or_else(|e| e.into_inner());
        if server.is_some() {
            return Ok(());
        }
        let etc = self.path("/etc/containerd");
        let args: Vec<String> = match self.namespace {
            None => vec![
                format!("PATH={}", self.path_env),
                "sh".into(),
                "-c".into(),
                LAUNCHER.into(),
                "containerd-launcher".into(),
                etc.display().to_string(),
                self.containerd.display().to_string(),
                self.syslog
                    .as_ref()
                    .map(|(path, _)| path.display().to_string())
                    .unwrap_or_default(),
            ],
            // The node's user, mount and network namespaces. nsenter execs containerd (no
            // fork): TERM reaches it directly.
            Some(holder) => vec![
                format!("PATH={}", self.path_env),
                "nsenter".into(),
                format!("--user=/proc/{holder}/ns/user"),
                format!("--mount=/proc/{holder}/ns/mnt"),
                format!("--net=/proc/{holder}/ns/net"),
                "--".into(),
                self.containerd.display().to_string(),
                "--config".into(),
                "/etc/containerd/config.toml".into(),
            ],
        };
        let started = Server::start(
            "containerd",
            Path::new("/usr/bin/env"),
            &args,
            self.root(),
            None,
        )?;
        let deadline = Instant::now() + START_TIMEOUT;
        while std::os::unix::net::UnixStream::connect(self.socket()).is_err() {
            if !started.is_running() || Instant::now() > deadline {
                return Err(Error::NotReady {
                    server: "containerd",
                    seconds: START_TIMEOUT.as_secs(),
                    log_tail: started.log_tail(30),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        *server = Some(started);
        *self.starts.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        Ok(())
    }

    /// Stops containerd (TERM, then KILL after 10 s). Running shims and sandboxes survive,
    /// as on a real node.
    pub fn stop(&self) {
        let server = self.server.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(server);
        let _ = std::fs::remove_file(self.socket());
    }

    /// Stops and starts containerd; fails when it does not come up.
    pub fn restart(&self) -> Result<()> {
        self.stop();
        self.start()
    }

    /// Gives containerd's shims a syslog (a datagram socket this process reads); call before
    /// [`TestNode::start`]. Kata's shim will not start without one.
    pub fn enable_syslog(&mut self) -> Result<()> {
        let path = self.path("/syslog.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).map_err(io_err(&path))?;
        let lines = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            let mut buffer = vec![0u8; 64 * 1024];
            while let Ok(n) = socket.recv(&mut buffer) {
                let line = String::from_utf8_lossy(&buffer[..n]).into_owned();
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        self.syslog = Some((path, lines));
        Ok(())
    }

    /// What the shims logged to syslog so far.
    pub fn syslog(&self) -> Vec<String> {
        match &self.syslog {
            Some((_, lines)) => lines.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            None => Vec::new(),
        }
    }

    /// How often containerd was started since the node was made (the first start included).
    pub fn starts(&self) -> usize {
        *self.starts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether containerd is running.
    pub fn is_running(&self) -> bool {
        self.server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(Server::is_running)
    }

    /// The last lines of containerd's log.
    pub fn log_tail(&self, lines: usize) -> String {
        match &*self.server.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(server) => server.log_tail(lines),
            None => std::fs::read_to_string(self.root().join("containerd.log"))
                .map(|log| {
                    let all: Vec<&str> = log.lines().collect();
                    all[all.len().saturating_sub(lines)..].join("\n")
                })
                .unwrap_or_default(),
        }
    }

    /// Imports the pause and busybox images (built from the host's static busybox) into
    /// containerd's `k8s.io` namespace, as the kubelet's pulls would.
    pub fn import_images(&self) -> Result<()> {
        let busybox = std::fs::read(BUSYBOX).map_err(|e| {
            Error::Tools(format!(
                "{BUSYBOX}: {e}; install Debian's busybox-static (hack/prereqs.sh does)"
            ))
        })?;
        for (name, entrypoint) in [
            (PAUSE_IMAGE, &["/bin/sleep", "2147483647"][..]),
            (BUSYBOX_IMAGE, &["/bin/sh"][..]),
        ] {
            let archive = busybox_archive(name, &busybox, entrypoint)
                .map_err(|e| Error::Tools(format!("building image {name}: {e}")))?;
            self.import_archive(name, &archive)?;
        }
        Ok(())
    }

    /// Imports the image archive `archive` (named `name`) into containerd's `k8s.io`
    /// namespace.
    pub fn import_archive(&self, name: &str, archive: &[u8]) -> Result<()> {
        let path = self
            .root()
            .join(format!("{}.tar", sha256_hex(name.as_bytes())));
        std::fs::write(&path, archive).map_err(io_err(&path))?;
        let output = Command::new(&self.ctr)
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", "k8s.io", "images", "import"])
            .arg(&path)
            .output()
            .map_err(io_err(&self.ctr));
        let _ = std::fs::remove_file(&path);
        let output = output?;
        if !output.status.success() {
            return Err(Error::Tools(format!(
                "ctr images import {name} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(())
    }

    /// Names the imported image `name` also `alias` (e.g. `repository@sha256:...`, which a
    /// pull by digest would have recorded, so that the kubelet finds a digest reference).
    pub fn tag_image(&self, name: &str, alias: &str) -> Result<()> {
        let output = Command::new(&self.ctr)
            .arg("--address")
            .arg(self.socket())
            .args([
                "--namespace",
                "k8s.io",
                "images",
                "tag",
                "--force",
                name,
                alias,
            ])
            .output()
            .map_err(io_err(&self.ctr))?;
        if !output.status.success() {
            return Err(Error::Tools(format!(
                "ctr images tag {name} {alias} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(())
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.stop();
        // Sandboxes the test left behind: their shims and runsc processes run under our host
        // root's state folders; stop them so nothing outlives the test.
        let root = self.root().display().to_string();
        let _ = Command::new("pkill").args(["-KILL", "-f", &root]).status();
    }
}

/// Debian's busybox-static.
const BUSYBOX: &str = "/bin/busybox";
