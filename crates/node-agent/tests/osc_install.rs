//! Installation mode `osc` on a node that Gardener set up: gVisor arrives through the pool's
//! OperatingSystemConfig, applied by the real gardener-node-agent (pinned Gardener release),
//! which pulls our node image from a real registry (the CNCF distribution registry, built from
//! the Go module proxy) through the registry mirror it configures itself from the OSC's
//! `criConfig.containerd.registries`. No agent of ours runs on the node.
//!
//! The OSC entries are the webhook's ([`sandbox_runtime::osc::apply`] with the actuator's
//! entries, the functions the seed webhook answers with), the image is our node image built
//! from the pinned gVisor releases, pushed over the distribution API and named by digest as a
//! release's image vector names it.
//!
//! Proven on containerd 2.4 and 1.7: install (binaries from the registry in the version
//! folder, the handler in `config.toml` where gardener-node-agent writes every containerd
//! setting, a gVisor pod runs; one containerd restart), a flag change (a new `runsc.toml`, no
//! restart: the shim reads it per sandbox), an upgrade from the previous gVisor pin to the
//! current one (one restart; a pod of the old release keeps running and is stopped cleanly;
//! new pods run the new release), and the removal (`op: remove`: the handler leaves
//! containerd with one restart, gardener-node-agent deletes the files; the OSC after that
//! carries nothing of ours and changes nothing).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sandbox_node_agent::cri::{Cri, HandlerState};
use sandbox_runtime::actuator::Actuator;
use sandbox_runtime::gvisor::GVisor;
use sandbox_runtime::gvisor::node::{INSTALL_DIR, pin_version};
use sandbox_runtime::osc;
use sandbox_testenv::gardener_node::GardenerNodeAgent;
use sandbox_testenv::node::{Flavor, TestNode};
use sandbox_testenv::pods::{self, Pods};
use sandbox_testenv::registry::Registry;
use sandbox_testenv::{ControlPlane, Tool};
use serde_json::{Value, json};

const APPLY_TIMEOUT: Duration = Duration::from_secs(180);
/// The name nodes pull our image by; the OSC's registry mirror sends it to the local registry.
const UPSTREAM: &str = "registry.runtime-sandbox.test";
const REPOSITORY: &str = "gardener-extension-runtime-sandbox/node-agent";

/// Our node image with the gVisor release in `gvisor_dir`, pushed as `tag`; returns the
/// reference a release's image vector gives (tag pinned by digest) and the recorded binaries.
async fn push_image(
    registry: &Registry,
    gvisor_dir: &std::path::Path,
    tag: &str,
) -> (String, sandbox_runtime::node_plan::Pins) {
    let arch = sandbox_image::Arch::host().expect("an architecture we build images for");
    let reference = format!("{UPSTREAM}/{REPOSITORY}:{tag}");
    let agent = std::env::current_exe().unwrap();
    let (archive, pins) = sandbox_testenv::images::recorded_gvisor_agent_image(
        &reference,
        &[(arch, &agent, gvisor_dir)],
    )
    .unwrap();
    let digest = registry.push(&archive, REPOSITORY, tag).await.unwrap();
    (format!("{reference}@{digest}"), pins)
}

fn gvisor_config(flags: Value) -> Value {
    json!({"apiVersion": "gvisor.os.extensions.gardener.cloud/v1alpha1",
        "kind": "GVisorConfiguration", "configFlags": flags})
}

/// What the seed webhook adds to the pool's OSC, and the mirror the OSC configures.
fn mutate(registry: &str, entries: Vec<osc::RuntimeEntries>) -> impl FnOnce(&mut Value) {
    move |o: &mut Value| {
        o["spec"]["criConfig"]["containerd"]["registries"]
            .as_array_mut()
            .unwrap()
            .push(json!({
                "upstream": UPSTREAM,
                "server": format!("https://{UPSTREAM}"),
                "hosts": [{"url": format!("http://{registry}"), "capabilities": ["pull", "resolve"]}],
            }));
        // Gardener's own OSC has no entries of ours: an empty list of runtimes changes nothing.
        let _ = osc::apply(o, &entries);
    }
}

/// Applies the next OSC and waits until containerd's CRI server answers again (after a
/// restart it recovers its sandboxes first).
async fn apply(
    gardener: &mut GardenerNodeAgent,
    cri: &Cri,
    mutate: impl FnOnce(&mut Value),
) -> Result<u32, String> {
    let generation = gardener
        .apply_next_with(APPLY_TIMEOUT, mutate)
        .await
        .map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while let Err(e) = cri.config().await {
        if std::time::Instant::now() > deadline {
            return Err(format!("containerd's CRI did not come back: {e}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(generation)
}

fn version_dir(image: &str) -> String {
    format!(
        "{INSTALL_DIR}/{}",
        sandbox_runtime::gvisor::node::gvisor_version(image)
    )
}

async fn through_the_osc(flavor: Flavor) {
    let control_plane = ControlPlane::start().await.unwrap();
    let node = Arc::new(TestNode::new(flavor).unwrap());
    node.start().unwrap();
    node.import_images().unwrap();
    let registry = Registry::start().await.unwrap();
    let previous_pin = sandbox_testenv::pinned_version("GVISOR_PREVIOUS_VERSION").unwrap();
    let current_pin = sandbox_testenv::pinned_version("GVISOR_VERSION").unwrap();
    let (previous, previous_pins) = push_image(
        &registry,
        &Tool::GvisorPrevious.path().unwrap(),
        &format!("v0.1.0-gvisor-{}", pin_version(&previous_pin)),
    )
    .await;
    let (current, current_pins) = push_image(
        &registry,
        &Tool::Gvisor.path().unwrap(),
        &format!("v0.2.0-gvisor-{}", pin_version(&current_pin)),
    )
    .await;

    let mut gardener = GardenerNodeAgent::start(&control_plane, node.clone())
        .await
        .unwrap();
    gardener.keep_cri_settings();
    let host = registry.host();
    // One change without anything of ours: gardener-node-agent writes the mirror.
    let cri = Cri::new(node.socket());
    apply(&mut gardener, &cri, mutate(&host, vec![]))
        .await
        .unwrap();
    let pods = Pods::new(node.socket());
    let logs: PathBuf = node.path("/var/log/pods");
    let config_toml = || std::fs::read_to_string(node.config_path()).unwrap();
    let gvisor = &GVisor;

    // Install: the OSC gardener-node-agent applies when the node boots.
    let starts = node.starts();
    let entries = gvisor
        .osc_install(Some(&gvisor_config(json!({}))), &previous, &previous_pins)
        .unwrap();
    apply(&mut gardener, &cri, mutate(&host, vec![entries]))
        .await
        .unwrap_or_else(|e| panic!("{e}\nregistry:\n{}", registry.log_tail(20)));
    let install_restarts = node.starts() - starts;
    let old_dir = version_dir(&previous);
    for name in ["runsc", "containerd-shim-runsc-v1", "runsc.toml"] {
        assert!(
            node.path(&format!("{old_dir}/{name}")).exists(),
            "{old_dir}/{name} missing; gardener-node-agent's log:\n{}",
            gardener.log_tail(30)
        );
    }
    let runsc = std::fs::read(node.path(&format!("{old_dir}/runsc"))).unwrap();
    let arch = sandbox_runtime::node_plan::host_arch();
    assert_eq!(
        sandbox_runtime::manifests::sha256_hex(&runsc),
        previous_pins[arch]["runsc"],
        "runsc is not the pinned binary"
    );
    assert!(
        registry.blob_downloads(REPOSITORY) > 0,
        "the node did not pull from the registry:\n{}",
        registry.log_tail(20)
    );
    assert_eq!(
        cri.handler("runsc", "io.containerd.runsc.v1")
            .await
            .unwrap(),
        HandlerState::Loaded,
        "config.toml:\n{}",
        config_toml()
    );
    assert_eq!(
        runsc_definitions(&node),
        ["config.toml"],
        "the handler is defined in config.toml only (the drop-in path holds a comment)"
    );
    let run = pods::run_pod(&pods, "runsc", &["dmesg"], &logs)
        .await
        .unwrap_or_else(|e| panic!("{e}\ncontainerd log:\n{}", node.log_tail(30)));
    assert!(run.output.contains("Starting gVisor..."), "{}", run.output);
    assert_eq!(install_restarts, 1, "containerd restarts for the install");

    // A flag change: a new runsc.toml; the handler is unchanged, so no restart.
    let starts = node.starts();
    let entries = gvisor
        .osc_install(
            Some(&gvisor_config(json!({"net-raw": "true"}))),
            &previous,
            &previous_pins,
        )
        .unwrap();
    apply(&mut gardener, &cri, mutate(&host, vec![entries]))
        .await
        .unwrap();
    let flag_restarts = node.starts() - starts;
    let runsc_toml = std::fs::read_to_string(node.path(&format!("{old_dir}/runsc.toml"))).unwrap();
    assert!(runsc_toml.contains("net-raw = \"true\""), "{runsc_toml}");
    assert_eq!(flag_restarts, 0, "containerd restarts for a flag change");
    let old_pod = pods::start_pod(&pods, "runsc", &["sleep", "3600"], &logs)
        .await
        .unwrap();

    // The upgrade: the current pin's image, a new folder, one restart.
    let starts = node.starts();
    let mut entries = gvisor
        .osc_install(
            Some(&gvisor_config(json!({"net-raw": "true"}))),
            &current,
            &current_pins,
        )
        .unwrap();
    // As the webhook does with the stored OSC: the previous release's files stay.
    entries.retain_previous(gardener.last_osc());
    apply(&mut gardener, &cri, mutate(&host, vec![entries]))
        .await
        .unwrap();
    let upgrade_restarts = node.starts() - starts;
    let new_dir = version_dir(&current);
    assert_ne!(new_dir, old_dir);
    let version = std::process::Command::new(node.path(&format!("{new_dir}/runsc")))
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    assert!(version.contains(&current_pin), "{version}");
    let run = pods::run_pod(&pods, "runsc", &["dmesg"], &logs)
        .await
        .unwrap_or_else(|e| panic!("{e}\ncontainerd log:\n{}", node.log_tail(30)));
    assert!(run.output.contains("Starting gVisor..."), "{}", run.output);
    assert_eq!(upgrade_restarts, 1, "containerd restarts for the upgrade");
    // The old release's pod still runs, and stops cleanly.
    let (state, _) = pods::container_state(&pods, &old_pod.container)
        .await
        .unwrap();
    assert_eq!(
        format!("{state:?}"),
        "ContainerRunning",
        "the old release's pod"
    );
    let old_files: BTreeSet<String> = ["runsc", "containerd-shim-runsc-v1", "runsc.toml"]
        .iter()
        .filter(|n| node.path(&format!("{old_dir}/{n}")).exists())
        .map(|n| n.to_string())
        .collect();
    pods::stop_and_remove_pod(&pods, old_pod)
        .await
        .unwrap_or_else(|e| {
            panic!("the old release's pod did not stop (old folder holds {old_files:?}): {e}")
        });

    for name in ["runsc", "containerd-shim-runsc-v1", "runsc.toml"] {
        assert!(
            node.path(&format!("{old_dir}/{name}")).exists(),
            "the previous release's {name} was deleted by the upgrade"
        );
    }

    // The removal: while the ContainerRuntime exists, `op: remove`; no file of ours.
    let starts = node.starts();
    apply(
        &mut gardener,
        &cri,
        mutate(&host, vec![gvisor.osc_removal(&current).unwrap()]),
    )
    .await
    .unwrap();
    let removal_restarts = node.starts() - starts;
    assert_eq!(
        cri.handler("runsc", "io.containerd.runsc.v1")
            .await
            .unwrap(),
        HandlerState::Missing,
        "config.toml:\n{}",
        config_toml()
    );
    assert!(!config_toml().contains("runsc"), "{}", config_toml());
    for dir in [&old_dir, &new_dir] {
        for name in ["runsc", "containerd-shim-runsc-v1", "runsc.toml"] {
            assert!(
                !node.path(&format!("{dir}/{name}")).exists(),
                "{dir}/{name} left behind"
            );
        }
    }
    assert_eq!(removal_restarts, 1, "containerd restarts for the removal");
    // Then nothing of ours (the ContainerRuntime is gone): config.toml stays as it is, but
    // gardener-node-agent restarts containerd once more, because its list of plugin entries
    // changed (it compares the lists, not the file: Gardener v1.150's changes.go).
    let starts = node.starts();
    let before = config_toml();
    apply(&mut gardener, &cri, mutate(&host, vec![]))
        .await
        .unwrap();
    let after_removal_restarts = node.starts() - starts;
    assert!(after_removal_restarts <= 1);
    assert_eq!(config_toml(), before, "the entry's end changed config.toml");
    assert_eq!(
        cri.handler("runsc", "io.containerd.runsc.v1")
            .await
            .unwrap(),
        HandlerState::Missing
    );
    println!(
        "osc mode on containerd {flavor:?}: containerd restarts per change: install {install_restarts}, \
         flag change {flag_restarts}, upgrade {upgrade_restarts}, removal {removal_restarts}, \
         the remove entry leaving the OSC {after_removal_restarts}; registry blob downloads {}",
        registry.blob_downloads(REPOSITORY)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gvisor_through_the_osc_on_containerd_2_4() {
    through_the_osc(Flavor::V2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gvisor_through_the_osc_on_containerd_1_7() {
    through_the_osc(Flavor::V17).await;
}

/// The files that define the `runsc` table: `config.toml` and the node agent's drop-in.
fn runsc_definitions(node: &TestNode) -> Vec<&'static str> {
    let defines = |path: PathBuf| {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let doc: toml_edit::DocumentMut = text.parse().unwrap_or_default();
        ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"]
            .iter()
            .any(|plugin| {
                doc.get("plugins")
                    .and_then(|p| p.get(plugin))
                    .and_then(|p| p.get("containerd"))
                    .and_then(|c| c.get("runtimes"))
                    .and_then(|r| r.get("runsc"))
                    .is_some()
            })
    };
    let mut out = Vec::new();
    if defines(node.config_path()) {
        out.push("config.toml");
    }
    if defines(node.path(sandbox_runtime::gvisor::node::DROP_IN)) {
        out.push("drop-in");
    }
    out
}

async fn assert_running(pods: &Pods, pod: &pods::RunningPod, when: &str) {
    let (state, _) = pods::container_state(pods, &pod.container).await.unwrap();
    assert_eq!(
        format!("{state:?}"),
        "ContainerRunning",
        "the gVisor pod {when}"
    );
}

/// A live node switches from installation mode daemonset (our agent installed gVisor, a gVisor
/// pod runs) to osc (gardener-node-agent takes the handler and the files over) and back; the
/// pod runs throughout, and the handler is defined once.
async fn switching_modes(flavor: Flavor) {
    use sandbox_node_agent::agent::{self, Options};
    use sandbox_node_agent::host::Host;
    use sandbox_node_agent::restart::Systemd;
    use sandbox_runtime::gvisor::{GVisorConfig, node_plan};

    let control_plane = ControlPlane::start().await.unwrap();
    let node = Arc::new(TestNode::new(flavor).unwrap());
    node.start().unwrap();
    node.import_images().unwrap();
    let registry = Registry::start().await.unwrap();
    let pin = sandbox_testenv::pinned_version("GVISOR_VERSION").unwrap();
    let gvisor_dir = Tool::Gvisor.path().unwrap();
    let (image, pins) = push_image(
        &registry,
        &gvisor_dir,
        &format!("v0.2.0-gvisor-{}", pin_version(&pin)),
    )
    .await;
    let mut gardener = GardenerNodeAgent::start(&control_plane, node.clone())
        .await
        .unwrap();
    gardener.keep_cri_settings();
    let host = registry.host();
    let cri = Cri::new(node.socket());
    apply(&mut gardener, &cri, mutate(&host, vec![]))
        .await
        .unwrap();
    let pods = Pods::new(node.socket());
    let logs: PathBuf = node.path("/var/log/pods");
    let gvisor = &GVisor;

    // Mode daemonset: our agent installs the same release the OSC names.
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("image");
    sandbox_testenv::images::write_gvisor_payload(&gvisor_dir, b"", &source).unwrap();
    let plan = node_plan(&GVisorConfig::default(), &image);
    let mut options = Options::new(
        Host::new(node.root()),
        plan.clone(),
        sandbox_testenv::node::BINARY_PATH.to_string(),
    );
    options.source = source;
    let restarter = Systemd::new(gardener.bus().socket(), "containerd.service");
    let report = agent::install(&options, &restarter).await.unwrap();
    assert_eq!(report.restarts, 1);
    let pod = pods::start_pod(&pods, "runsc", &["sleep", "3600"], &logs)
        .await
        .unwrap();
    let before = runsc_definitions(&node);

    // To mode osc: the installer DaemonSet is gone (nothing runs our agent); gardenlet's next
    // OSC carries the handler, the files and the emptied drop-in.
    let starts = node.starts();
    let mut entries = gvisor.osc_install(None, &image, &pins).unwrap();
    entries.retain_previous(gardener.last_osc());
    apply(&mut gardener, &cri, mutate(&host, vec![entries]))
        .await
        .unwrap();
    let to_osc = node.starts() - starts;
    assert_running(&pods, &pod, "after the switch to osc").await;
    assert_eq!(
        std::fs::read_to_string(node.path(sandbox_runtime::gvisor::node::DROP_IN))
            .unwrap_or_default(),
        // On 1.x our agent wrote no drop-in; the placeholder is there all the same.
        osc::DROP_IN_PLACEHOLDER
    );
    assert_eq!(
        runsc_definitions(&node),
        ["config.toml"],
        "before: {before:?}"
    );
    assert_eq!(
        cri.handler("runsc", "io.containerd.runsc.v1")
            .await
            .unwrap(),
        HandlerState::Loaded
    );
    let run = pods::run_pod(&pods, "runsc", &["dmesg"], &logs)
        .await
        .unwrap();
    assert!(run.output.contains("Starting gVisor..."), "{}", run.output);

    // Back to mode daemonset: the agent runs again; gardenlet's next OSC has no plugin entry
    // but still lists the release's files (gardener-node-agent would delete them), and no
    // placeholder: gardener-node-agent deletes the drop-in path, and the agent's next check
    // writes it again.
    let starts = node.starts();
    agent::install(&options, &restarter).await.unwrap();
    let kept = osc::keep_after_switch(gvisor.osc_removal(&image).unwrap(), gardener.last_osc());
    apply(&mut gardener, &cri, mutate(&host, vec![kept]))
        .await
        .unwrap();
    agent::install(&options, &restarter).await.unwrap();
    let back = node.starts() - starts;
    assert_running(&pods, &pod, "after the switch back to daemonset").await;
    for name in ["runsc", "containerd-shim-runsc-v1", "runsc.toml"] {
        let dir = plan.binaries.versioned.as_ref().unwrap().dir();
        assert!(
            node.path(&format!("{dir}/{name}")).exists(),
            "{dir}/{name} was deleted"
        );
    }
    let expected: &[&str] = match flavor {
        Flavor::V17 => &["config.toml"],
        _ => &["drop-in"],
    };
    assert_eq!(runsc_definitions(&node), expected);
    assert_eq!(
        cri.handler("runsc", "io.containerd.runsc.v1")
            .await
            .unwrap(),
        HandlerState::Loaded
    );
    let run = pods::run_pod(&pods, "runsc", &["dmesg"], &logs)
        .await
        .unwrap();
    assert!(run.output.contains("Starting gVisor..."), "{}", run.output);
    pods::stop_and_remove_pod(&pods, pod).await.unwrap();
    println!(
        "mode switch on containerd {flavor:?}: daemonset -> osc {to_osc} containerd restart(s), osc -> daemonset {back}; the gVisor pod ran throughout"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn switching_a_live_node_between_modes_keeps_its_gvisor_pod_on_containerd_2_4() {
    switching_modes(Flavor::V2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn switching_a_live_node_between_modes_keeps_its_gvisor_pod_on_containerd_1_7() {
    switching_modes(Flavor::V17).await;
}

/// Kata's handlers through the OSC, as far as this host allows: Kata's node image (the pinned
/// shim, Debian's QEMU, stand-in guest files) from the registry, the `kata-qemu` handler in
/// containerd's configuration and its payload in the release's folder. Whether a Kata pod can
/// run depends on the host (KVM and vhost-vsock): printed, and asserted both ways. Its label
/// would stay off in this mode all the same (`HostNotVerified`: nothing on the node checks the
/// host; the `node_readiness` unit test).
#[tokio::test(flavor = "multi_thread")]
async fn kata_through_the_osc_as_far_as_this_host_allows() {
    use sandbox_runtime::kata::{Kata, node as kata_node};
    let control_plane = ControlPlane::start().await.unwrap();
    let mut node = TestNode::new(Flavor::V2).unwrap();
    // Kata's shim refuses to start without a syslog, as on a node.
    node.enable_syslog().unwrap();
    let node = Arc::new(node);
    node.start().unwrap();
    node.import_images().unwrap();
    let registry = Registry::start().await.unwrap();

    // Kata's payload as operators build it (docs/kata.md), stand-in guest files.
    let work = tempfile::tempdir().unwrap();
    let payload = work.path().join("payload");
    std::fs::create_dir_all(&payload).unwrap();
    let mut files: Vec<(String, Vec<u8>)> = vec![
        (
            kata_node::SHIM.into(),
            std::fs::read(Tool::Kata.path().unwrap().join(kata_node::SHIM)).unwrap(),
        ),
        (
            kata_node::hypervisor_binary(sandbox_runtime::kata::config::Hypervisor::Qemu).into(),
            std::fs::read("/usr/bin/qemu-system-x86_64")
                .expect("Debian's qemu-system-x86 is installed by hack/prereqs.sh"),
        ),
    ];
    for name in [kata_node::GUEST_KERNEL, kata_node::GUEST_IMAGE] {
        files.push((
            name.into(),
            format!("stand-in for Kata's {name}\n").into_bytes(),
        ));
    }
    let mut sums = String::new();
    for (name, content) in &files {
        std::fs::write(payload.join(name), content).unwrap();
        sums.push_str(&format!(
            "{}  {name}\n",
            sandbox_runtime::manifests::sha256_hex(content)
        ));
    }
    std::fs::write(payload.join(sandbox_runtime::node_plan::CHECKSUMS), sums).unwrap();
    let config = json!({"apiVersion": sandbox_runtime::kata::config::API_VERSION,
        "kind": "KataConfiguration", "hypervisors": ["qemu"]});
    let repository = "gardener-extension-runtime-sandbox/node-agent-kata";
    let tag = "3.20.0";
    let reference = format!("{UPSTREAM}/{repository}:{tag}");
    let binaries = Kata.node_plan(Some(&config), &reference).unwrap().binaries;
    let agent = std::env::current_exe().unwrap();
    let (archive, pins) = sandbox_image::recorded_agent_image(
        &reference,
        &binaries,
        sandbox_image::ChecksumsFile::Required,
        &[sandbox_image::AgentPlatform {
            arch: sandbox_image::Arch::host().unwrap(),
            binary: &agent,
            payload_dir: &payload,
        }],
    )
    .unwrap();
    let digest = registry.push(&archive, repository, tag).await.unwrap();
    let image = format!("{reference}@{digest}");

    let mut gardener = GardenerNodeAgent::start(&control_plane, node.clone())
        .await
        .unwrap();
    gardener.keep_cri_settings();
    let cri = Cri::new(node.socket());
    let host = registry.host();
    let entries = Kata.osc_install(Some(&config), &image, &pins).unwrap();
    let plan = Kata.node_plan(Some(&config), &image).unwrap();
    let handler = plan
        .handlers
        .iter()
        .find(|h| h.name == "kata-qemu")
        .unwrap();
    apply(&mut gardener, &cri, mutate(&host, vec![entries]))
        .await
        .unwrap_or_else(|e| panic!("{e}\nregistry:\n{}", registry.log_tail(20)));
    assert_eq!(
        cri.handler("kata-qemu", &handler.runtime_type)
            .await
            .unwrap(),
        HandlerState::Loaded,
        "config.toml:\n{}",
        std::fs::read_to_string(node.config_path()).unwrap()
    );
    let dir = plan.binaries.versioned.as_ref().unwrap().dir();
    for name in [
        kata_node::SHIM,
        "qemu-system-x86_64",
        kata_node::GUEST_KERNEL,
    ] {
        assert!(
            node.path(&format!("{dir}/{name}")).exists(),
            "{dir}/{name} missing"
        );
    }
    assert!(registry.blob_downloads(repository) > 0);

    // A Kata pod: this host cannot boot a VM (no usable KVM for guests, no vhost-vsock).
    let capable = std::path::Path::new("/dev/vhost-vsock").exists()
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
    let pods = Pods::new(node.socket());
    let run = pods::run_pod(&pods, "kata-qemu", &["true"], &node.path("/var/log/pods")).await;
    println!(
        "Kata through the OSC: handler kata-qemu loaded, payload in {dir}; host capable of Kata VMs: {capable}; a Kata pod: {}",
        match &run {
            Ok(_) => "ran".to_string(),
            Err(e) => format!("refused ({})", e.lines().next().unwrap_or_default()),
        }
    );
    if capable {
        run.unwrap();
    } else {
        // Refused by Kata's own host check, with the configuration the OSC delivered.
        let err = match run {
            Ok(_) => panic!("a Kata pod ran on a host without vhost-vsock or KVM"),
            Err(e) => e,
        };
        assert!(
            err.contains("configuration-qemu.toml")
                && (err.contains("vsock") || err.contains("kvm") || err.contains("KVM")),
            "{err}"
        );
    }
}
