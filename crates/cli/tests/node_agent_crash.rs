//! The node agent killed at every crash point of an install, an upgrade and an uninstall: the
//! product binary (a test build, whose crash points are compiled in) runs `node-agent
//! install|uninstall --once` against a real containerd with the pinned gVisor binaries,
//! restarting containerd through systemd's D-Bus API on a real `dbus-daemon`, and aborts at
//! its n-th file write, rename, removal or containerd restart (`SANDBOX_FAULT_CRASH_AT`; no
//! destructor runs, as under SIGKILL). After each crash:
//! - containerd's configuration (`config.toml` and our drop-in) parses;
//! - containerd starts with it (restarted as a rebooted node would), a runc pod started before
//!   the whole test still runs, and a new runc pod runs;
//! - the next agent run converges with at most one containerd restart, no temporary file is
//!   left, and the handler is loaded (install, upgrade) or gone (uninstall).
//!
//! n runs from 1 until none of the three phases reaches it any more; every phase must crash at
//! least once (so a test build without crash points fails here instead of proving nothing).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sandbox_cri::v1::ContainerState;
use sandbox_node_agent::containerd::Config;
use sandbox_node_agent::cri::{Cri, HandlerState};
use sandbox_node_agent::host::CONFIG_TOML;
use sandbox_runtime::gvisor::node::{DROP_IN, INSTALL_DIR};
use sandbox_runtime::gvisor::{config, node_plan};
use sandbox_runtime::node_plan::{self, NodePlan};
use sandbox_testenv::dbus::{FakeSystemd, RestartAction, SystemBus};
use sandbox_testenv::node::{BINARY_PATH, Flavor, TestNode};
use sandbox_testenv::pods::{self, Pods};
use serde_json::json;

/// One phase of the agent's life on a node.
struct Phase {
    name: &'static str,
    action: &'static str,
    config_dir: PathBuf,
    source: PathBuf,
    /// Whether the handler is loaded once the phase is done.
    loaded_after: bool,
    /// The host path of the phase's runsc (in its version folder).
    runsc: String,
}

struct Bench {
    node: Arc<TestNode>,
    cri: Cri,
    pods: Pods,
    work: tempfile::TempDir,
    runc_pod: pods::RunningPod,
}

/// What one agent run did: crashed at a point, or finished with this many restarts.
enum Outcome {
    Crashed(String),
    Finished { restarts: u32 },
}

/// gVisor's plan for the node-agent image of gVisor version `version`, with `flags`.
fn plan(version: &str, flags: serde_json::Value) -> NodePlan {
    node_plan(
        &config::parse(Some(&json!({
            "apiVersion": config::API_VERSION, "kind": config::KIND, "configFlags": flags,
        })))
        .unwrap(),
        &format!("registry.local/node-agent:v0-gvisor-{version}"),
    )
}

/// What a bench keeps alive besides itself: the system bus with systemd on it.
type Bus = (SystemBus, FakeSystemd);

impl Bench {
    /// A node on `flavor` with its system bus and systemd, and a runc pod that must survive
    /// everything.
    async fn start(flavor: Flavor) -> (Self, Bus) {
        Self::start_with(flavor, |node| {
            Arc::new(move || node.restart().map_err(|e| e.to_string()))
        })
        .await
    }

    /// [`Bench::start`] with systemd's restart of containerd doing what `restart` makes of
    /// the node (e.g. a unit that fails to start).
    async fn start_with(
        flavor: Flavor,
        restart: impl FnOnce(Arc<TestNode>) -> RestartAction,
    ) -> (Self, Bus) {
        let node = Arc::new(TestNode::new(flavor).unwrap());
        node.start().unwrap();
        node.import_images().unwrap();
        let bus = SystemBus::start(&node.path("/run/dbus/system_bus_socket")).unwrap();
        let systemd = FakeSystemd::serve(&bus, "containerd.service", restart(node.clone()))
            .await
            .unwrap();
        let pods = Pods::new(node.socket());
        let runc_pod =
            pods::start_pod(&pods, "", &["sleep", "100000"], &node.path("/var/log/pods"))
                .await
                .unwrap();
        let bench = Bench {
            cri: Cri::new(node.socket()),
            pods,
            work: tempfile::tempdir().unwrap(),
            runc_pod,
            node,
        };
        (bench, (bus, systemd))
    }

    /// The agent's command line for one run of `phase` (no crash point).
    fn command(&self, phase: &Phase) -> tokio::process::Command {
        let mut command = self.daemon(phase);
        command.arg("--once");
        command
    }

    /// The agent's command line for `phase` as the DaemonSet runs it (until SIGTERM).
    fn daemon(&self, phase: &Phase) -> tokio::process::Command {
        let mut command =
            tokio::process::Command::new(env!("CARGO_BIN_EXE_gardener-extension-runtime-sandbox"));
        command
            .args(["node-agent", phase.action])
            .arg(format!("--host-root={}", self.node.root().display()))
            .arg(format!("--binary-path={BINARY_PATH}"))
            .arg(format!("--config-dir={}", phase.config_dir.display()))
            .arg(format!("--source-dir={}", phase.source.display()))
            .arg("--health-bind-address=127.0.0.1:0")
            .env_remove("NODE_NAME");
        command
    }

    fn phase(
        &self,
        name: &'static str,
        action: &'static str,
        plan: &NodePlan,
        trailer: &[u8],
        loaded_after: bool,
    ) -> Phase {
        let config_dir = self.work.path().join(format!("config-{name}"));
        std::fs::create_dir_all(&config_dir).unwrap();
        std::fs::write(config_dir.join(node_plan::FILE_NAME), plan.to_yaml()).unwrap();
        let source = self.work.path().join(format!("image-{name}"));
        let gvisor = sandbox_testenv::Tool::Gvisor.path().unwrap();
        sandbox_testenv::images::write_gvisor_payload(&gvisor, trailer, &source).unwrap();
        Phase {
            name,
            action,
            config_dir,
            source,
            loaded_after,
            runsc: format!("{}/runsc", plan.binaries.versioned.as_ref().unwrap().dir()),
        }
    }

    /// Runs the agent once for `phase`, crashing at point `crash_at` if it gets there. A
    /// crashing run starts without the backups earlier runs left (they serve the rollback of
    /// the run that wrote them, nothing later), so that every crashing run of a phase passes
    /// the same points in the same order and n really reaches each of them.
    async fn run(&self, phase: &Phase, crash_at: Option<u32>) -> Outcome {
        if crash_at.is_some() {
            for path in backups(self.node.root()) {
                std::fs::remove_file(path).unwrap();
            }
        }
        let log = self.work.path().join("points.log");
        let _ = std::fs::remove_file(&log);
        let mut command = self.command(phase);
        command.env("SANDBOX_FAULT_LOG", &log);
        if let Some(n) = crash_at {
            command.env("SANDBOX_FAULT_CRASH_AT", n.to_string());
        }
        let output = command.output().await.unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.signal() == Some(libc_sigabrt()) {
            let points = std::fs::read_to_string(&log).unwrap_or_default();
            let last = points.lines().last().unwrap_or_default().to_string();
            assert!(
                last.starts_with(&format!("{} ", crash_at.unwrap())),
                "crashed elsewhere than at point {crash_at:?}: {last}\n{stderr}"
            );
            return Outcome::Crashed(last);
        }
        assert!(
            output.status.success(),
            "{} run failed ({}):\n{stdout}\n{stderr}\ncontainerd:\n{}",
            phase.name,
            output.status,
            self.node.log_tail(20)
        );
        let restarts = stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix("restarts="))
            .unwrap_or_else(|| panic!("no restarts= in {stdout}"))
            .parse()
            .unwrap();
        Outcome::Finished { restarts }
    }

    /// What must hold on the node right after a crash, whatever the point.
    async fn check_after_crash(&self, at: &str) {
        for path in [CONFIG_TOML, DROP_IN] {
            let Ok(text) = std::fs::read_to_string(self.node.path(path)) else {
                continue;
            };
            // The drop-in is a whole containerd configuration too (it has its version).
            Config::parse(&text).unwrap_or_else(|e| panic!("after {at}: {path}: {e}"));
        }
        // A rebooted node: containerd starts with what is on disk.
        let node = self.node.clone();
        tokio::task::spawn_blocking(move || node.restart())
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("after {at}: containerd does not start: {e}"));
        self.cri
            .wait_until_answering(std::time::Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("after {at}: containerd's CRI does not answer: {e}"));
        self.check_runc(at).await;
    }

    async fn check_runc(&self, at: &str) {
        let (state, _) = pods::container_state(&self.pods, &self.runc_pod.container)
            .await
            .unwrap();
        assert_eq!(
            state,
            ContainerState::ContainerRunning,
            "after {at}: the runc pod stopped"
        );
        let logs = self.node.path("/var/log/pods");
        let result = pods::run_pod(&self.pods, "", &["echo", "runc runs"], &logs)
            .await
            .unwrap_or_else(|e| panic!("after {at}: a new runc pod does not run: {e}"));
        assert_eq!(result.exit_code, 0, "after {at}");
        assert!(
            result.output.contains("runc runs"),
            "after {at}: {result:?}"
        );
    }

    /// What must hold once a phase has converged.
    async fn check_converged(&self, phase: &Phase, at: &str) {
        let state = self
            .cri
            .handler("runsc", "io.containerd.runsc.v1")
            .await
            .unwrap();
        let wanted = if phase.loaded_after {
            HandlerState::Loaded
        } else {
            HandlerState::Missing
        };
        assert_eq!(state, wanted, "{} after {at}", phase.name);
        let temps = temp_files(self.node.root());
        assert!(
            temps.is_empty(),
            "{} after {at}: left {temps:?}",
            phase.name
        );
        let runsc = self.node.path(&phase.runsc);
        assert_eq!(
            runsc.exists(),
            phase.loaded_after,
            "{} after {at}",
            phase.name
        );
    }
}

/// SIGABRT: what `std::process::abort` ends a process with.
fn libc_sigabrt() -> i32 {
    6
}

/// Our temporary files anywhere below `root`.
fn temp_files(root: &Path) -> Vec<PathBuf> {
    files_containing(root, ".runtime-sandbox.tmp.")
}

/// Our backups anywhere below `root` (`<name>.runtime-sandbox-<runtime>.bak`).
fn backups(root: &Path) -> Vec<PathBuf> {
    files_containing(root, ".runtime-sandbox-")
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".bak"))
        .collect()
}

fn files_containing(root: &Path, marker: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() && !kind.is_symlink() {
                stack.push(path);
            } else if entry.file_name().to_string_lossy().contains(marker) {
                found.push(path);
            }
        }
    }
    found
}

async fn crash_at_every_point(flavor: Flavor) {
    let (bench, _bus) = Bench::start(flavor).await;
    let v1 = plan("v1", json!({}));
    let v2 = plan("v2", json!({"net-raw": "true", "debug": "true"}));
    let phases = [
        bench.phase("install", "install", &v1, b"", true),
        bench.phase("upgrade", "install", &v2, b"release-2", true),
        bench.phase("uninstall", "uninstall", &v2, b"release-2", false),
    ];
    let mut crashes = [0u32; 3];
    let mut n = 1;
    loop {
        let mut reached = false;
        for (i, phase) in phases.iter().enumerate() {
            let at = match bench.run(phase, Some(n)).await {
                Outcome::Crashed(point) => {
                    reached = true;
                    crashes[i] += 1;
                    let at = format!("{} crashed at {point}", phase.name);
                    println!("{flavor:?}: {at}");
                    bench.check_after_crash(&at).await;
                    at
                }
                Outcome::Finished { restarts } => {
                    assert!(restarts <= 1, "{}: {restarts} restarts", phase.name);
                    format!("{} finished before point {n}", phase.name)
                }
            };
            match bench.run(phase, None).await {
                Outcome::Finished { restarts } => assert!(
                    restarts <= 1,
                    "{at}: the next run restarted containerd {restarts} times"
                ),
                Outcome::Crashed(point) => panic!("{at}: crashed without being asked at {point}"),
            }
            bench.check_converged(phase, &at).await;
        }
        println!("{flavor:?}: point {n} done, crashes per phase {crashes:?}");
        if !reached {
            break;
        }
        n += 1;
    }
    assert!(
        crashes.iter().all(|c| *c > 0),
        "every phase must crash at least once (crash points compiled in?): {crashes:?}"
    );
    bench.check_runc("the whole test").await;
    println!(
        "{flavor:?}: {} crashes injected (install {}, upgrade {}, uninstall {}); every one recovered",
        crashes.iter().sum::<u32>(),
        crashes[0],
        crashes[1],
        crashes[2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_every_point_on_containerd_2_with_a_drop_in() {
    crash_at_every_point(Flavor::V2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_every_point_on_containerd_1_7_editing_config_toml() {
    crash_at_every_point(Flavor::V17).await;
}

/// A mount on the node for one test; unmounted (lazily) when dropped.
struct Mount(PathBuf);

impl Mount {
    fn new(args: &[&str], target: &Path) -> Self {
        std::fs::create_dir_all(target).unwrap();
        let status = std::process::Command::new("mount")
            .args(args)
            .arg(target)
            .status()
            .unwrap();
        assert!(status.success(), "mount {args:?} {}", target.display());
        Mount(target.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The node's configuration files: path and content, to prove nothing was written.
fn configuration(node: &TestNode) -> Vec<(String, Option<Vec<u8>>)> {
    [
        CONFIG_TOML,
        DROP_IN,
        "/opt/runtime-sandbox/gvisor/v1/runsc.toml",
    ]
    .iter()
    .map(|p| (p.to_string(), std::fs::read(node.path(p)).ok()))
    .collect()
}

/// Runs the agent expecting a failure; returns its output.
async fn run_failing(bench: &Bench, phase: &Phase) -> String {
    let output = bench.command(phase).output().await.unwrap();
    assert!(!output.status.success(), "the run succeeded");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_during_the_binary_copy_changes_nothing_else() {
    let (bench, (_bus, systemd)) = Bench::start(Flavor::V2).await;
    let install = bench.phase("install", "install", &plan("v1", json!({})), b"", true);
    let before = configuration(&bench.node);
    // 16 MiB for gVisor's versions: runsc (~60 MB) does not fit.
    let full = Mount::new(
        &["-t", "tmpfs", "-o", "size=16m", "tmpfs"],
        &bench.node.path(INSTALL_DIR),
    );
    let output = run_failing(&bench, &install).await;
    assert!(
        output.contains("No space left on device") && output.contains("runsc"),
        "{output}"
    );
    assert_eq!(configuration(&bench.node), before, "configuration written");
    assert!(systemd.calls().is_empty(), "containerd restarted");
    assert!(
        temp_files(bench.node.root()).is_empty(),
        "a partial copy stays"
    );
    bench.check_runc("a full disk").await;

    // Space again: the next run converges.
    drop(full);
    assert!(matches!(
        bench.run(&install, None).await,
        Outcome::Finished { restarts: 1 }
    ));
    bench.check_converged(&install, "a full disk").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_etc_containerd_is_an_error_naming_it_and_leaves_the_configuration_alone() {
    let (bench, (_bus, systemd)) = Bench::start(Flavor::V2).await;
    let install = bench.phase("install", "install", &plan("v1", json!({})), b"", true);
    let before = configuration(&bench.node);
    let etc = bench.node.path("/etc/containerd");
    let read_only = Mount::new(&["--bind", &etc.display().to_string()], &etc);
    let status = std::process::Command::new("mount")
        .args(["-o", "remount,bind,ro"])
        .arg(&etc)
        .status()
        .unwrap();
    assert!(status.success());
    let output = run_failing(&bench, &install).await;
    assert!(
        output.contains("Read-only file system") && output.contains("/etc/containerd"),
        "{output}"
    );
    assert_eq!(configuration(&bench.node), before, "configuration written");
    assert!(systemd.calls().is_empty(), "containerd restarted");
    bench.check_runc("a read-only /etc/containerd").await;

    drop(read_only);
    assert!(matches!(
        bench.run(&install, None).await,
        Outcome::Finished { restarts: 1 }
    ));
    bench
        .check_converged(&install, "a read-only /etc/containerd")
        .await;
}

/// SIGTERM (the kubelet stopping the agent's pod, say for a rollout) while the agent rolls
/// back a containerd restart that failed: the rollback finishes before the agent stops, so
/// containerd runs again with the configuration it had. Before, the agent stopped at once and
/// left containerd down with the configuration it had failed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_rollback_lets_the_rollback_finish() {
    // containerd does not come back while its configuration mentions runsc, as a unit whose
    // start fails after RestartUnit.
    let (bench, _bus) = Bench::start_with(Flavor::V2, |node| {
        Arc::new(move || {
            node.stop();
            let read = |p: &str| std::fs::read_to_string(node.path(p)).unwrap_or_default();
            if read(CONFIG_TOML).contains("runsc") || read(DROP_IN).contains("runsc") {
                return Err("containerd.service failed to start".into());
            }
            node.start().map_err(|e| e.to_string())
        })
    })
    .await;
    let original = std::fs::read(bench.node.config_path()).unwrap();
    let install = bench.phase("install", "install", &plan("v1", json!({})), b"", true);
    // The daemon (not --once), told SIGTERM at the start of its rollback.
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(180),
        bench
            .daemon(&install)
            .env("SANDBOX_FAULT_TERM_AT", "roll back")
            .output(),
    )
    .await
    .expect("the agent did not stop after SIGTERM")
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stderr.contains("fault injection: SIGTERM at point"),
        "the SIGTERM was never sent:\n{stdout}\n{stderr}"
    );
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        bench.node.is_running(),
        "containerd is down after the agent stopped:\n{stdout}\n{stderr}"
    );
    assert_eq!(std::fs::read(bench.node.config_path()).unwrap(), original);
    assert!(!bench.node.path(DROP_IN).exists());
    bench
        .cri
        .wait_until_answering(std::time::Duration::from_secs(30))
        .await
        .unwrap();
    // The runc pod started before still runs, and a new one runs.
    bench.check_runc("SIGTERM during the rollback").await;
}
