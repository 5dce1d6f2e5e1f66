//! Kata's node plan against real containerd (the pinned 1.7 with config version 2 edited in
//! place, the pinned 2.4 with version 3+ and a conf.d drop-in) and the real Kata shim built by
//! `hack/tools.sh ensure kata`, as far as this host allows.
//!
//! What a Kata pod needs (KVM with hardware virtualisation, `/dev/vhost-vsock` for QEMU, the
//! hypervisor, a guest kernel and image) is detected and printed first; the expectations follow
//! it: on a host without it, every `kata-*` ready label stays off with the reason and a Kata
//! sandbox fails in the real shim's host check; on a capable host the label is set (a running
//! Kata pod there needs Kata's guest kernel and image in `SANDBOX_KATA_GUEST_DIR`; the test
//! says so and fails rather than skip when they are missing).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sandbox_node_agent::agent::{self, Options};
use sandbox_node_agent::cri::HandlerState;
use sandbox_node_agent::host::{self};
use sandbox_runtime::kata::devmapper;
use sandbox_runtime::kata::node::{self as kata_node, DEVMAPPER_POOL, DROP_IN, INSTALL_DIR};
use sandbox_runtime::kata::{Hypervisor, KataConfig, hypervisor_ready_label, node_plan};
use sandbox_runtime::manifests::sha256_hex;
use sandbox_runtime::node_plan::NodePlan;
use sandbox_testenv::node::Flavor;
use sandbox_testenv::pods;
use sandbox_testenv::restarter::{AgentNode, NodeRestarter};

/// What this host offers a Kata VM, as the agent's capability check sees it.
#[derive(Debug)]
struct Capability {
    kvm: bool,
    vhost_vsock: bool,
    qemu: Option<PathBuf>,
}

impl Capability {
    fn detect() -> Self {
        let char_device =
            |p: &str| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_char_device());
        let qemu = PathBuf::from("/usr/bin/qemu-system-x86_64");
        Capability {
            kvm: char_device("/dev/kvm"),
            vhost_vsock: char_device("/dev/vhost-vsock"),
            qemu: qemu.exists().then_some(qemu),
        }
    }

    fn qemu_can_run(&self) -> bool {
        self.kvm && self.vhost_vsock && self.qemu.is_some()
    }
}

/// A payload folder as operators build it (docs/kata.md): the pinned shim, Debian's QEMU and
/// the guest kernel and image. Those are Kata's own artifacts; without
/// `SANDBOX_KATA_GUEST_DIR` they are stand-in files, which is enough here because no VM can
/// start on this host: the shim only checks that the configured paths exist before its host
/// check refuses.
fn payload(dir: &Path, capability: &Capability, trailer: &[u8]) -> PathBuf {
    let source = dir.join(format!("payload-{}", trailer.len()));
    std::fs::create_dir_all(&source).unwrap();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut shim = std::fs::read(
        sandbox_testenv::Tool::Kata
            .path()
            .unwrap()
            .join(kata_node::SHIM),
    )
    .unwrap();
    shim.extend_from_slice(trailer);
    files.push((kata_node::SHIM.into(), shim));
    let qemu = capability
        .qemu
        .as_ref()
        .expect("Debian's qemu-system-x86 is installed by hack/prereqs.sh");
    files.push((
        kata_node::hypervisor_binary(Hypervisor::Qemu).into(),
        std::fs::read(qemu).unwrap(),
    ));
    let guest = std::env::var_os("SANDBOX_KATA_GUEST_DIR").map(PathBuf::from);
    for name in [kata_node::GUEST_KERNEL, kata_node::GUEST_IMAGE] {
        let content = match &guest {
            Some(dir) => std::fs::read(dir.join(name)).unwrap(),
            None => format!("stand-in for Kata's {name}: no VM boots on this host\n").into_bytes(),
        };
        files.push((name.into(), content));
    }
    let mut sums = String::new();
    for (name, content) in &files {
        std::fs::write(source.join(name), content).unwrap();
        sums.push_str(&format!("{}  {name}\n", sha256_hex(content)));
    }
    std::fs::write(source.join(sandbox_runtime::node_plan::CHECKSUMS), sums).unwrap();
    source
}

fn plan(version: &str) -> NodePlan {
    node_plan(
        &KataConfig::everything(),
        &format!("localhost/runtime-sandbox-test/node-agent-kata:{version}"),
    )
}

/// A test node with the shims' syslog Kata needs (see `sandbox_testenv::restarter::AgentNode`).
struct Fixture(AgentNode);

impl std::ops::Deref for Fixture {
    type Target = AgentNode;
    fn deref(&self) -> &AgentNode {
        &self.0
    }
}

impl Fixture {
    fn new(flavor: Flavor) -> Self {
        Fixture(AgentNode::start(flavor, true))
    }

    fn options(&self, source: &Path, plan: NodePlan) -> Options {
        self.0.options(source, plan, Duration::from_secs(15))
    }

    fn containerd_config(&self) -> String {
        let read = |p: &str| std::fs::read_to_string(self.node.path(p)).unwrap_or_default();
        format!("{}\n{}", read(host::CONFIG_TOML), read(DROP_IN))
    }

    fn fingerprint(&self, plan: &NodePlan) -> Vec<(String, u64, i64, i64)> {
        let mut paths = vec![host::CONFIG_TOML.to_string(), DROP_IN.to_string()];
        paths.extend(plan.files.iter().map(|f| f.path.clone()));
        paths
            .iter()
            .filter_map(|p| {
                let m = std::fs::metadata(self.node.path(p)).ok()?;
                Some((p.clone(), m.ino(), m.mtime(), m.mtime_nsec()))
            })
            .collect()
    }
}

async fn kata_as_far_as_the_host_allows(flavor: Flavor) {
    let capability = Capability::detect();
    println!("host capability for Kata: {capability:?}");
    let f = Fixture::new(flavor);
    let original = std::fs::read(f.node.config_path()).unwrap();
    let v1 = plan("v1");
    let source = payload(f.work.path(), &capability, b"");
    let options = f.options(&source, v1.clone());

    // Install: payload into its version folder, handlers and Kata's configurations, one restart.
    let report = agent::install(&options, &f.restarter)
        .await
        .unwrap_or_else(|e| panic!("{e}\ncontainerd log:\n{}", f.node.log_tail(40)));
    assert_eq!(report.restarts, 1, "{report:?}");
    let version_dir = f.node.path(&format!("{INSTALL_DIR}/v1"));
    for name in [
        kata_node::SHIM,
        "qemu-system-x86_64",
        kata_node::GUEST_KERNEL,
    ] {
        assert!(
            version_dir.join(name).exists(),
            "{name} not installed: {report:?}"
        );
    }
    let config = f.containerd_config();
    for handler in ["kata-qemu", "kata-clh"] {
        assert!(config.contains(handler), "{handler} missing:\n{config}");
    }
    assert!(
        config.contains("runtime_path = \"/opt/runtime-sandbox/kata/v1/containerd-shim-kata-v2\""),
        "{config}"
    );
    // No devmapper pool here: Firecracker's entry (and its snapshotter) is never written, and
    // containerd keeps its CRI plugin.
    let pool = std::fs::metadata(DEVMAPPER_POOL).is_ok_and(|m| m.file_type().is_block_device());
    println!("devmapper pool {DEVMAPPER_POOL}: {pool}");
    assert!(
        !pool,
        "this test expects no devmapper pool on a test machine"
    );
    assert!(
        !config.contains("kata-fc") && !config.contains("snapshotter = \"devmapper\""),
        "{config}"
    );
    // The folder where the pool's unit publishes the snapshotter's configuration (only while
    // the pool exists) is imported (in the drop-in, or in config.toml in place); empty here,
    // and containerd's CRI stays up with it.
    assert!(
        config.contains(&format!("\"{}\"", devmapper::SNAPSHOTTER_IMPORT)),
        "{config}"
    );
    if flavor == Flavor::V2 {
        assert_eq!(
            std::fs::read(f.node.config_path()).unwrap(),
            original,
            "2.4 uses the drop-in"
        );
    }
    // containerd loaded them (CRI status; 2.x also lists them as runtime handlers).
    let handlers: Vec<_> = v1.handlers[..2].to_vec();
    assert_eq!(
        f.cri.handler_states(&handlers).await.unwrap(),
        [HandlerState::Loaded, HandlerState::Loaded]
    );
    assert_eq!(
        f.cri
            .handler("kata-fc", "io.containerd.kata-fc.v2")
            .await
            .unwrap(),
        HandlerState::Missing
    );

    // The capability check decides the ready labels, with the reason.
    let label = |h: Hypervisor| {
        report
            .labels
            .iter()
            .find(|s| s.label == hypervisor_ready_label(h))
            .unwrap_or_else(|| panic!("no label state for {h:?}: {report:?}"))
            .ready
            .clone()
    };
    println!("ready labels: {:?}", report.labels);
    match label(Hypervisor::Qemu) {
        Ok(()) => assert!(
            capability.qemu_can_run(),
            "qemu ready without the capability"
        ),
        Err(missing) => {
            assert!(
                !capability.qemu_can_run(),
                "qemu could run but: {missing:?}"
            );
            let expected = if capability.kvm {
                "NoVhostVsock"
            } else {
                "NoKVM"
            };
            assert_eq!(missing.reason, expected, "{missing:?}");
        }
    }
    // No Cloud Hypervisor in the payload: its label stays off whatever the host.
    let clh = label(Hypervisor::Clh).unwrap_err();
    assert!(
        ["NoKVM", "NoHypervisorBinary"].contains(&clh.reason.as_str()),
        "{clh:?}"
    );
    assert_eq!(label(Hypervisor::Fc).unwrap_err().reason, "NoDevmapperPool");

    // A Kata sandbox reaches the real shim with our configuration file.
    let attempt = pods::run_pod(
        &f.pods,
        "kata-qemu",
        &["true"],
        &f.node.path("/var/log/pods"),
    )
    .await;
    if capability.qemu_can_run() {
        let result = attempt.unwrap_or_else(|e| {
            panic!("this host can run QEMU VMs, so a Kata pod must run (SANDBOX_KATA_GUEST_DIR must hold Kata's guest kernel and image): {e}")
        });
        assert_eq!(result.exit_code, 0, "{result:?}");
    } else {
        let error = attempt.expect_err("no VM can start on this host");
        println!("RunPodSandbox with kata-qemu: {error}");
        let syslog = f.node.syslog().join("\n");
        let ours = kata_node::config_path(Hypervisor::Qemu);
        assert!(
            error.contains(&ours) || syslog.contains(&ours),
            "the shim did not load our configuration {ours}:\n{error}\nsyslog:\n{syslog}"
        );
        let host_check = if capability.kvm { "vsock" } else { "kvm" };
        assert!(
            error.to_lowercase().contains(host_check),
            "the shim did not fail at its host check ({host_check}): {error}"
        );
    }
    // runc pods are unaffected.
    f.runc_runs().await;

    // Unchanged re-run: nothing written, no restart.
    let before = f.fingerprint(&v1);
    let again = agent::install(&options, &f.restarter).await.unwrap();
    assert_eq!(
        (again.restarts, again.files.len(), again.binaries.len()),
        (0, 0, 0),
        "{again:?}"
    );
    assert_eq!(f.fingerprint(&v1), before);

    // The running agent's /readyz: verified (200), and naming each handler this host cannot
    // run with the reason its label stays off.
    let port = sandbox_testenv::free_port().unwrap();
    let daemon = sandbox_node_agent::daemon::Daemon {
        mode: sandbox_node_agent::daemon::Mode::Install,
        options: f.options(&source, v1.clone()),
        restarter: Arc::new(NodeRestarter::new(f.node.clone())),
        kube: None,
        health: ([127, 0, 0, 1], port).into(),
        resync: Duration::from_secs(3600),
        verify: Duration::from_secs(3600),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(daemon.run(async {
        let _ = stopped.await;
    }));
    let (_, body) = sandbox_testenv::eventually(30, "/readyz ready", async || {
        sandbox_testenv::http_get(port, "/readyz").filter(|(code, _)| *code == 200)
    })
    .await;
    println!("/readyz: {body}");
    for state in &report.labels {
        match &state.ready {
            Ok(()) => assert!(!body.contains(&state.handler), "{body}"),
            Err(missing) => assert!(
                body.contains(&format!("{}: {}: ", state.handler, missing.reason)),
                "{body}"
            ),
        }
    }
    let _ = stop.send(());
    running.await.unwrap().unwrap();
    assert_eq!(
        f.fingerprint(&v1),
        before,
        "the daemon's run changed nothing"
    );

    // A new payload version: a new folder; with no Kata sandbox running the old one goes.
    assert!(
        f.cri
            .sandboxes_of(&v1.handler_names())
            .await
            .unwrap()
            .is_empty()
    );
    let v2 = plan("v2");
    let source2 = payload(f.work.path(), &capability, b"\0v2");
    let upgraded = agent::install(&f.options(&source2, v2.clone()), &f.restarter)
        .await
        .unwrap();
    assert_eq!(upgraded.restarts, 1, "{upgraded:?}");
    assert!(
        f.node
            .path(&format!("{INSTALL_DIR}/v2"))
            .join(kata_node::SHIM)
            .exists()
    );
    assert!(
        !version_dir.exists(),
        "v1 stays although no sandbox uses it"
    );
    assert!(
        f.containerd_config()
            .contains("/opt/runtime-sandbox/kata/v2/")
    );

    // Uninstall: config.toml byte for byte, handlers gone, payload gone.
    let removed = agent::uninstall(&f.options(&source2, v2.clone()), &f.restarter)
        .await
        .unwrap();
    assert_eq!(removed.restarts, 1, "{removed:?}");
    assert_eq!(std::fs::read(f.node.config_path()).unwrap(), original);
    assert!(!f.node.path(DROP_IN).exists());
    assert_eq!(
        f.cri.handler_states(&handlers).await.unwrap(),
        [HandlerState::Missing, HandlerState::Missing]
    );
    assert!(!f.node.path(INSTALL_DIR).join("v2").exists());
    assert_eq!(f.restarter.calls(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn kata_on_containerd_1_7_config_v2() {
    kata_as_far_as_the_host_allows(Flavor::V17).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kata_on_containerd_2_4_drop_in() {
    kata_as_far_as_the_host_allows(Flavor::V2).await;
}

/// gVisor's node plan for the image of gVisor version `version`.
fn gvisor_plan(version: &str) -> NodePlan {
    sandbox_runtime::gvisor::node_plan(
        &sandbox_runtime::gvisor::GVisorConfig::default(),
        &format!("registry.local/node-agent:v0-gvisor-{version}"),
    )
}

/// A pool that offers gVisor and Kata: both agents on one node install, upgrade and uninstall
/// at the same time. They take turns on the one containerd lock (each edit of the
/// configuration and each restart is one agent's), keep their own backups, and each handler
/// works throughout; in the end `config.toml` is what it was.
async fn two_runtimes_on_one_node(flavor: Flavor) {
    let capability = Capability::detect();
    println!("host capability for Kata: {capability:?}");
    let f = Fixture::new(flavor);
    let original = std::fs::read(f.node.config_path()).unwrap();
    let gvisor_source = |trailer: &[u8], name: &str| {
        let dir = f.work.path().join(name);
        sandbox_testenv::images::write_gvisor_payload(
            &sandbox_testenv::Tool::Gvisor.path().unwrap(),
            trailer,
            &dir,
        )
        .unwrap();
        dir
    };
    let kata_handlers = plan("v1").handlers[..2].to_vec();
    let gvisor_works = |when: &'static str| {
        let pods = f.pods.clone();
        let logs = f.node.path("/var/log/pods");
        async move {
            let result = pods::run_pod(&pods, "runsc", &["dmesg"], &logs)
                .await
                .unwrap_or_else(|e| panic!("{when}: a gVisor pod does not run: {e}"));
            assert!(
                result.output.contains("Starting gVisor..."),
                "{when}: {result:?}"
            );
        }
    };

    for (step, gvisor_version, kata_version, trailer) in [
        ("install", "v1", "v1", &b""[..]),
        ("upgrade", "v2", "v2", &b"\0v2"[..]),
    ] {
        let gvisor = f.options(
            &gvisor_source(trailer, &format!("gvisor-{step}")),
            gvisor_plan(gvisor_version),
        );
        let kata = f.options(
            &payload(f.work.path(), &capability, trailer),
            plan(kata_version),
        );
        let (g, k) = tokio::join!(
            agent::install(&gvisor, &f.restarter),
            agent::install(&kata, &f.restarter)
        );
        let (g, k) = (g.unwrap(), k.unwrap());
        println!("{step}: gVisor {g:?}\nKata {k:?}");
        assert_eq!((g.restarts, k.restarts), (1, 1), "{step}");
        assert_eq!(
            f.cri
                .handler("runsc", "io.containerd.runsc.v1")
                .await
                .unwrap(),
            HandlerState::Loaded,
            "{step}: gVisor's handler lost"
        );
        assert_eq!(
            f.cri.handler_states(&kata_handlers).await.unwrap(),
            [HandlerState::Loaded, HandlerState::Loaded],
            "{step}: Kata's handlers lost"
        );
        gvisor_works(step).await;
        let config = format!(
            "{}\n{}",
            f.containerd_config(),
            std::fs::read_to_string(f.node.path(sandbox_runtime::gvisor::node::DROP_IN))
                .unwrap_or_default()
        );
        assert!(
            config.contains(&format!("/opt/runtime-sandbox/gvisor/{gvisor_version}/"))
                && config.contains(&format!("/opt/runtime-sandbox/kata/{kata_version}/")),
            "{step}:\n{config}"
        );
    }
    // Each agent keeps its own backup of what it changed.
    let backups: Vec<String> = std::fs::read_dir(f.node.path("/etc/containerd"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".bak"))
        .collect();
    println!("backups: {backups:?}");
    // On 1.x both edit config.toml in place (2.x: each its own drop-in).
    if flavor != Flavor::V2 {
        for runtime in ["gvisor", "kata"] {
            let name = format!("config.toml.runtime-sandbox-{runtime}.bak");
            assert!(backups.contains(&name), "no {name} in {backups:?}");
        }
    }

    let gvisor = f.options(&gvisor_source(b"", "gvisor-uninstall"), gvisor_plan("v2"));
    let kata = f.options(&payload(f.work.path(), &capability, b"\0v2"), plan("v2"));
    let (g, k) = tokio::join!(
        agent::uninstall(&gvisor, &f.restarter),
        agent::uninstall(&kata, &f.restarter)
    );
    g.unwrap();
    k.unwrap();
    assert_eq!(
        f.cri
            .handler("runsc", "io.containerd.runsc.v1")
            .await
            .unwrap(),
        HandlerState::Missing
    );
    assert_eq!(
        f.cri.handler_states(&kata_handlers).await.unwrap(),
        [HandlerState::Missing, HandlerState::Missing]
    );
    assert_eq!(std::fs::read(f.node.config_path()).unwrap(), original);
    f.runc_runs().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gvisor_and_kata_agents_at_once_on_containerd_1_7() {
    two_runtimes_on_one_node(Flavor::V17).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gvisor_and_kata_agents_at_once_on_containerd_2_4() {
    two_runtimes_on_one_node(Flavor::V2).await;
}
