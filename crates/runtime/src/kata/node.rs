//! What Kata needs on a node, as a [`NodePlan`]: one handler `kata-<hypervisor>` per offered
//! hypervisor (written as kata-deploy writes them), Kata's configuration per hypervisor with
//! paths into the installed payload version, the payload itself (shim, guest kernel and image,
//! hypervisor binaries) copied from the image into `/opt/runtime-sandbox/kata/<version>/`, and
//! the host checks that decide which hypervisors' ready labels a node gets.

use crate::node_plan::{
    self, Binaries, Handler, MinContainerd, NodePlan, PlanFile, PlanHead, Requirement,
    RequirementKind, Versioned,
};

use super::config::{Hypervisor, KataConfig};
use super::{NODE_READY_LABEL, RUNTIME_TYPE, handler_name, hypervisor_ready_label};

/// Where the versions of the payload are installed on the host.
pub const INSTALL_DIR: &str = "/opt/runtime-sandbox/kata";
/// Kata's configuration files (one per hypervisor).
pub const CONFIG_DIR: &str = "/etc/containerd/runtime-sandbox-kata";
/// Our drop-in, used when `config.toml` imports `conf.d`.
pub const DROP_IN: &str = "/etc/containerd/conf.d/runtime-sandbox-kata.toml";
/// The image's payload folder (see docs/kata.md).
pub const IMAGE_DIR: &str = "/usr/local/lib/runtime-sandbox/kata";
/// Kata's containerd shim.
pub const SHIM: &str = "containerd-shim-kata-v2";
/// The guest kernel every hypervisor boots.
pub const GUEST_KERNEL: &str = "vmlinux.container";
/// The guest root file system image.
pub const GUEST_IMAGE: &str = "kata-containers.img";
/// The device-mapper thin pool Firecracker's disks come from (set up by the
/// OperatingSystemConfig webhook's unit, docs/kata.md).
pub const DEVMAPPER_POOL: &str = "/dev/mapper/runtime-sandbox-kata-pool";
/// The oldest containerd: `runtime_path` and the v2 shim API as Kata 3 uses them.
pub const MIN_CONTAINERD: &str = "1.7";

/// The hypervisor's binary in the payload.
pub fn hypervisor_binary(h: Hypervisor) -> &'static str {
    match h {
        Hypervisor::Qemu => "qemu-system-x86_64",
        Hypervisor::Clh => "cloud-hypervisor",
        Hypervisor::Fc => "firecracker",
    }
}

/// Kata's configuration file for `h`.
pub fn config_path(h: Hypervisor) -> String {
    format!("{CONFIG_DIR}/configuration-{}.toml", h.name())
}

pub use crate::node_plan::payload_version;

fn requirement(kind: RequirementKind, path: &str, reason: &str, purpose: &str) -> Requirement {
    Requirement {
        kind,
        path: path.into(),
        reason: reason.into(),
        purpose: purpose.into(),
    }
}

/// The handler `kata-<h>` running the payload's shim of `dir` with [`config_path`].
pub fn handler(h: Hypervisor, dir: &str) -> Handler {
    let mut requires = vec![requirement(
        RequirementKind::CharDevice,
        "/dev/kvm",
        "NoKVM",
        "KVM, to run the VM",
    )];
    if h == Hypervisor::Qemu {
        requires.push(requirement(
            RequirementKind::CharDevice,
            "/dev/vhost-vsock",
            "NoVhostVsock",
            "vhost-vsock, for QEMU's connection to the agent in the VM",
        ));
    }
    requires.push(requirement(
        RequirementKind::Executable,
        &format!("{dir}/{}", hypervisor_binary(h)),
        "NoHypervisorBinary",
        "the hypervisor, from the payload",
    ));
    let (written_only_if, snapshotter) = if h == Hypervisor::Fc {
        (
            vec![requirement(
                RequirementKind::BlockDevice,
                DEVMAPPER_POOL,
                "NoDevmapperPool",
                "the devmapper thin pool for Firecracker's disks",
            )],
            Some("devmapper".to_string()),
        )
    } else {
        (Vec::new(), None)
    };
    Handler {
        name: handler_name(h),
        runtime_type: format!("io.containerd.kata-{}.v2", h.name()),
        runtime_path: Some(format!("{dir}/{SHIM}")),
        privileged_without_host_devices: true,
        pod_annotations: vec!["io.katacontainers.*".into()],
        container_annotations: vec!["io.kubernetes.container.terminationMessage*".into()],
        options: [("ConfigPath".to_string(), config_path(h))].into(),
        ready_label: Some(hypervisor_ready_label(h)),
        requires,
        written_only_if,
        snapshotter,
    }
}

/// Kata's configuration for `h` with `config`'s sizing, pointing at the payload in `dir`.
/// Rendered by a TOML library: no value can add a key.
pub fn configuration_toml(h: Hypervisor, config: &KataConfig, dir: &str) -> String {
    use toml_edit::{DocumentMut, Item, Table, value};
    let mut hypervisor = Table::new();
    let path = format!("{dir}/{}", hypervisor_binary(h));
    hypervisor.insert("path", value(path.as_str()));
    hypervisor.insert(
        "valid_hypervisor_paths",
        value(toml_edit::Array::from_iter([path.as_str()])),
    );
    hypervisor.insert("kernel", value(format!("{dir}/{GUEST_KERNEL}")));
    hypervisor.insert("image", value(format!("{dir}/{GUEST_IMAGE}")));
    if h == Hypervisor::Qemu {
        hypervisor.insert("machine_type", value("q35"));
    }
    hypervisor.insert("default_vcpus", value(i64::from(config.default_vcpus)));
    hypervisor.insert(
        "default_memory",
        value(i64::from(config.default_memory_mib)),
    );
    hypervisor.insert("enable_debug", value(config.debug));
    match h {
        // 9p needs no extra daemon in the payload; virtio-fs is a payload choice for later.
        Hypervisor::Qemu => {
            hypervisor.insert("shared_fs", value("virtio-9p"));
        }
        Hypervisor::Clh => {
            hypervisor.insert("shared_fs", value("virtio-fs"));
            hypervisor.insert("virtio_fs_daemon", value(format!("{dir}/virtiofsd")));
            hypervisor.insert(
                "valid_virtio_fs_daemon_paths",
                value(toml_edit::Array::from_iter([format!("{dir}/virtiofsd")])),
            );
        }
        Hypervisor::Fc => {}
    }
    let section = match h {
        Hypervisor::Qemu => "qemu",
        Hypervisor::Clh => "clh",
        Hypervisor::Fc => "firecracker",
    };
    let mut hypervisors = Table::new();
    hypervisors.set_implicit(true);
    hypervisors.insert(section, Item::Table(hypervisor));

    let mut agent = Table::new();
    agent.insert("enable_debug", value(config.debug));
    agent.insert("dial_timeout", value(45));
    let mut agents = Table::new();
    agents.set_implicit(true);
    agents.insert("kata", Item::Table(agent));

    let mut runtime = Table::new();
    runtime.insert("enable_debug", value(config.debug));
    runtime.insert("internetworking_model", value("tcfilter"));
    runtime.insert("disable_guest_seccomp", value(true));
    // Firecracker cannot hot-plug: the VM is sized for the pod up front.
    runtime.insert("static_sandbox_resource_mgmt", value(h == Hypervisor::Fc));

    let mut doc = DocumentMut::new();
    doc.insert("hypervisor", Item::Table(hypervisors));
    doc.insert("agent", Item::Table(agents));
    doc.insert("runtime", Item::Table(runtime));
    doc.to_string()
}

/// Kata on a node of a pool with `config`, from the payload of `image` (whose tag names the
/// installed version).
pub fn node_plan(config: &KataConfig, image: &str) -> NodePlan {
    let version = payload_version(image);
    let versioned = Versioned {
        target: INSTALL_DIR.into(),
        version,
        replaces_binaries: Vec::new(),
        replaces_files: Vec::new(),
    };
    let dir = versioned.dir();
    let mut names = vec![SHIM.to_string(), GUEST_KERNEL.into(), GUEST_IMAGE.into()];
    let mut optional: Vec<String> = Vec::new();
    for h in &config.hypervisors {
        optional.push(hypervisor_binary(*h).into());
    }
    if config.hypervisors.contains(&Hypervisor::Clh) {
        optional.push("virtiofsd".into());
    }
    names.sort();
    optional.sort();
    let head = PlanHead {
        runtime: RUNTIME_TYPE,
        ready_label: NODE_READY_LABEL,
        drop_in: DROP_IN,
        min_containerd: MinContainerd {
            version: MIN_CONTAINERD.into(),
            reason: "Kata's handlers need runtime_path".into(),
        },
    };
    let handlers = config
        .hypervisors
        .iter()
        .map(|h| handler(*h, &dir))
        .collect();
    let files = config
        .hypervisors
        .iter()
        .map(|h| PlanFile {
            path: config_path(*h),
            content: configuration_toml(*h, config, &dir),
        })
        .collect();
    let binaries = Binaries {
        source: IMAGE_DIR.into(),
        checksums: node_plan::CHECKSUMS.into(),
        names,
        optional,
        versioned: Some(versioned),
        pinned: Default::default(),
    };
    NodePlan {
        // The devmapper snapshotter's configuration appears there only while the pool exists
        // (written by the pool's unit before containerd starts; gone at reboot).
        containerd_imports: if config.hypervisors.contains(&Hypervisor::Fc) {
            vec![super::devmapper::SNAPSHOTTER_IMPORT.into()]
        } else {
            Vec::new()
        },
        ..NodePlan::new(head, handlers, files, binaries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_valid_and_point_into_the_version() {
        let plan = node_plan(&KataConfig::everything(), "registry/kata-agent:v3.20.0");
        plan.validate().unwrap();
        assert_eq!(plan.handler_names(), ["kata-qemu", "kata-clh", "kata-fc"]);
        let qemu = &plan.handlers[0];
        assert_eq!(
            qemu.runtime_path.as_deref(),
            Some("/opt/runtime-sandbox/kata/v3.20.0/containerd-shim-kata-v2")
        );
        assert!(
            plan.files[0]
                .content
                .contains("path = \"/opt/runtime-sandbox/kata/v3.20.0/qemu-system-x86_64\"")
        );
        assert_eq!(plan.handlers[2].written_only_if[0].path, DEVMAPPER_POOL);
        assert!(
            plan.labels()
                .contains(&"runtime-sandbox.gardener.cloud/kata-fc-ready")
        );
        let fc: toml_edit::DocumentMut = plan.files[2].content.parse().unwrap();
        assert!(fc["hypervisor"]["firecracker"]["path"].is_str());
    }

    #[test]
    fn versions_are_plain_folder_names() {
        assert_eq!(payload_version("r.io/kata:v3.20.0"), "v3.20.0");
        assert_eq!(payload_version("localhost:5000/kata"), "latest");
        assert_eq!(
            payload_version("r.io/kata@sha256:0123456789abcdef0123"),
            "0123456789ab"
        );
        assert_eq!(
            payload_version("r.io/kata:v3.20.0@sha256:0123456789abcdef0123"),
            "v3.20.0",
            "a tag pinned by digest keeps the tag's folder"
        );
        assert_eq!(payload_version("r.io/kata:.."), "unversioned");
        assert_eq!(payload_version("r.io/kata:a$(x)"), "a__x_");
    }
}
