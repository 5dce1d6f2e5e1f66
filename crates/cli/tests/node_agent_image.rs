//! The node agent's image, built from local files, run as the installer DaemonSet's pod
//! would run it: a runc container from the image on a real containerd 2.4, with the
//! rendered arguments and the DaemonSet's host mounts, restarting containerd through
//! systemd's D-Bus API on a real `dbus-daemon`. The image's own runsc and `SHA256SUMS` are
//! what lands on the node.

mod support;

use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use sandbox_image::Arch;
use sandbox_node_agent::cri::{Cri, HandlerState};
use sandbox_runtime::gvisor::node::{BINARIES, gvisor_version, version_dir};
use sandbox_testenv::dbus::{FakeSystemd, SystemBus};
use sandbox_testenv::images::gvisor_agent_image;
use sandbox_testenv::node::{Flavor, TestNode};
use sandbox_testenv::pods::{Container, Pods, run_container};

const IMAGE: &str = "localhost/runtime-sandbox-test/node-agent:1";

#[tokio::test]
async fn the_image_installs_its_own_runsc_as_the_daemon_set_runs_it() {
    let node = Arc::new(TestNode::new(Flavor::V2).unwrap());
    node.start().unwrap();
    node.import_images().unwrap();
    let gvisor_dir = sandbox_testenv::Tool::Gvisor.path().unwrap();
    let binary = env!("CARGO_BIN_EXE_gardener-extension-runtime-sandbox");
    let platforms = [(Arch::host().unwrap(), binary.as_ref(), gvisor_dir.as_path())];
    let archive = gvisor_agent_image(IMAGE, &platforms).unwrap();
    // Same files, same bytes: the image digest only changes when its content does.
    assert_eq!(archive, gvisor_agent_image(IMAGE, &platforms).unwrap());
    node.import_archive(IMAGE, &archive).unwrap();

    let bus = SystemBus::start(&node.path("/run/dbus/system_bus_socket")).unwrap();
    let systemd = FakeSystemd::for_node(&bus, node.clone()).await.unwrap();

    // The rendered installer: its arguments, its host mounts, its ConfigMap.
    let set = support::installer(IMAGE);
    let pod = support::daemon_set_pod(&set);
    let work = tempfile::tempdir().unwrap();
    let config_dir = work.path().join("config");
    std::fs::create_dir_all(&config_dir).unwrap();
    let config_map: ConfigMap = support::object(&set, "ConfigMap");
    for (key, value) in config_map.data.unwrap() {
        std::fs::write(config_dir.join(key), value).unwrap();
    }
    let container = &pod.containers[0];
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.as_ref().unwrap() {
        let volume = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == mount.name)
            .unwrap();
        let host = match &volume.host_path {
            Some(host_path) => {
                let path = node.path(&host_path.path);
                std::fs::create_dir_all(&path).unwrap(); // DirectoryOrCreate
                path
            }
            None => config_dir.clone(), // the ConfigMap volume
        };
        mounts.push((
            host,
            mount.mount_path.clone(),
            mount.read_only == Some(true),
        ));
    }
    let mut args = container.args.clone().unwrap();
    args.push("--once".into());
    let cri = Cri::new(node.socket());
    let logs = work.path().join("logs");
    let result = run_container(
        &Pods::new(node.socket()),
        "",
        &Container {
            image: IMAGE.into(),
            args,
            mounts,
            ..Container::default()
        },
        &logs,
    )
    .await
    .unwrap();

    assert_eq!(result.exit_code, 0, "{}", result.output);
    assert!(
        result.output.contains("verified") && result.output.contains("restarts=1"),
        "{}",
        result.output
    );
    assert_eq!(systemd.calls().len(), 1);
    assert_eq!(
        cri.handler("runsc", "io.containerd.runsc.v1")
            .await
            .unwrap(),
        HandlerState::Loaded
    );
    // Into the version folder the image's tag names.
    let installed = node.path(&version_dir(&gvisor_version(IMAGE)));
    for name in BINARIES {
        assert_eq!(
            std::fs::read(installed.join(name)).unwrap(),
            std::fs::read(gvisor_dir.join(name)).unwrap(),
            "{name} on the node is the image's"
        );
    }
}
