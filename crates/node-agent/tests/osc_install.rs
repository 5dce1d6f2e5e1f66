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
    assert!(
        !node.path(sandbox_runtime::gvisor::node::DROP_IN).exists(),
        "a drop-in in osc mode"
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
