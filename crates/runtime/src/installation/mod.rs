//! The per-pool node agent of any runtime: the installer (a ConfigMap with the pool's node
//! plan and a DaemonSet running `node-agent install` on exactly that pool's containerd nodes),
//! and the cleanup that replaces it when the runtime is removed from a pool whose nodes stay
//! (a DaemonSet running `node-agent uninstall` on the same nodes, its plan inline in
//! `NODE_PLAN`: it owns no ConfigMap and depends on nothing the installer had). What differs
//! between runtimes is an [`Agent`] and the node plan; the host folders the pods mount follow
//! from the plan.
//!
//! Here: what names an agent and its host paths; [`daemon_set`]: the installer and the
//! cleanup; [`rbac`]: what the agents of all pools share (ServiceAccount, RBAC, label policy).

mod daemon_set;
mod rbac;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

pub use daemon_set::{cleanup_objects, installation_objects};
pub use rbac::{add_health_reader, add_node_labeller};

use crate::node_plan::NodePlan;

/// Namespace of everything we put into the shoot.
pub const SHOOT_NAMESPACE: &str = "kube-system";

/// What names a runtime's node agents.
#[derive(Clone, Copy, Debug)]
pub struct Agent {
    /// Prefix of the DaemonSets and ConfigMap (`<app>-<pool>`, `<app>-cleanup-<pool>`), and
    /// their `app.kubernetes.io/name`, e.g. `containerd-gvisor` as in the Go extension.
    pub app: &'static str,
    /// The ServiceAccount the pods run as (it may label nodes).
    pub service_account: &'static str,
    /// The `origin` label of the pods.
    pub origin: &'static str,
    /// ClusterRole (and binding) that lets the agent label nodes.
    pub cluster_role: &'static str,
    /// ValidatingAdmissionPolicy (and binding) narrowing that to its own node's labels.
    pub label_policy: &'static str,
}

/// Where the node agent sees the host's root file system (the DaemonSet mounts it there; the
/// agent's `--host-root` default).
pub const HOST_ROOT: &str = "/host";
/// Where the node agent reads its ConfigMap (the node plan; its `--config-dir` default).
pub const CONFIG_DIR: &str = "/etc/runtime-sandbox";
/// Port of the node agent's health endpoints.
pub const HEALTH_PORT: i32 = 8081;
/// The agent's `--health-bind-address` default: [`HEALTH_PORT`] on every address.
pub const HEALTH_BIND_ADDRESS: &str = ":8081";
/// The host's folder of the D-Bus system bus (the DaemonSet mounts it below [`HOST_ROOT`]).
pub const DBUS_DIR: &str = "/run/dbus";
/// The system bus socket on the host (the agent's `--dbus-socket` default).
pub const DBUS_SOCKET: &str = "/run/dbus/system_bus_socket";

/// Everything a node agent DaemonSet of one pool depends on.
#[derive(Clone, Debug)]
pub struct PoolInput<'a> {
    /// Worker pool name.
    pub pool: &'a str,
    /// The pool's node selector from the ContainerRuntime.
    pub selector: &'a LabelSelector,
    /// `spec.binaryPath` on the node.
    pub binary_path: &'a str,
    /// The node plan: for the installer the pool's, for the cleanup one from defaults (an
    /// invalid providerConfig must not keep the nodes from being cleaned; uninstalling needs
    /// the plan's names and paths, not the settings).
    pub plan: &'a NodePlan,
    /// The node-agent image reference.
    pub image: &'a str,
}

impl Agent {
    /// Name of the pool's installer DaemonSet and ConfigMap in `kube-system`.
    pub fn installer_name(&self, pool: &str) -> String {
        format!("{}-{pool}", self.app)
    }

    /// Name of the pool's cleanup DaemonSet in `kube-system`.
    pub fn cleanup_name(&self, pool: &str) -> String {
        format!("{}-cleanup-{pool}", self.app)
    }

    /// Checks that `pool` names objects: a DNS label (Gardener's rule for worker names) short
    /// enough that the longest name we derive from it (the cleanup DaemonSet's, which is also a
    /// label value) stays within 63 characters. Anything else would render objects the shoot's
    /// API server refuses (or, with `../` or a newline, names we never want to see).
    pub fn check_pool(&self, pool: &str) -> Result<(), crate::actuator::ConfigError> {
        let max = LABEL_VALUE_MAX - self.cleanup_name("").len();
        let dns_label = !pool.is_empty()
            && pool
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !pool.starts_with('-')
            && !pool.ends_with('-');
        if dns_label && pool.len() <= max {
            return Ok(());
        }
        let shown: String = pool.chars().take(80).collect();
        Err(crate::actuator::ConfigError {
            field: "spec.workerPool.name".into(),
            message: format!(
                "{shown:?} is not a usable pool name: allowed are 1 to {max} characters of a-z, 0-9 and '-', starting and ending with a letter or digit"
            ),
        })
    }
}

/// Host folders the node agent mounts besides `spec.binaryPath`, and kernel interfaces no
/// binary belongs in: `spec.binaryPath` may be none of them, inside none of them, and contain
/// none of them.
pub const RESERVED_HOST_PATHS: &[&str] = &[
    crate::node_plan::CONTAINERD_DIR,
    "/run/containerd",
    DBUS_DIR,
    crate::node_plan::LOCK_DIR,
    "/dev",
    "/proc",
    "/sys",
];

/// Checks `spec.binaryPath` before it becomes a hostPath volume that a root container writes
/// binaries into: absolute, normalised (no `.`, `..`, empty component or trailing `/`), not
/// `/`, at most 255 bytes of printable ASCII, and overlapping neither [`RESERVED_HOST_PATHS`]
/// nor `versioned_target` (the plan's own binary folder, if it has one).
pub fn check_binary_path(
    path: &str,
    versioned_target: Option<&str>,
) -> Result<(), crate::actuator::ConfigError> {
    let refuse = |why: String| {
        let shown: String = path.chars().take(80).collect();
        Err(crate::actuator::ConfigError {
            field: "spec.binaryPath".into(),
            message: format!(
                "{shown:?} {why}; allowed: an absolute, normalised folder such as /var/bin/containerruntimes that is not / and neither contains nor lies in {}",
                RESERVED_HOST_PATHS.join(", ")
            ),
        })
    };
    if path.len() > 255 || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return refuse("is longer than 255 bytes or not printable ASCII".into());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return refuse("is not absolute".into());
    };
    if rest.is_empty() {
        return refuse("is the root folder".into());
    }
    if rest
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return refuse("is not normalised".into());
    }
    let overlaps = |other: &str| {
        let within = |inner: &str, outer: &str| {
            inner == outer
                || inner
                    .strip_prefix(outer)
                    .is_some_and(|r| r.starts_with('/'))
        };
        within(path, other) || within(other, path)
    };
    if let Some(other) = RESERVED_HOST_PATHS
        .iter()
        .copied()
        .chain(versioned_target)
        .find(|other| overlaps(other))
    {
        return refuse(format!(
            "overlaps {other}, which the node agent mounts or must not write"
        ));
    }
    Ok(())
}

/// Kubernetes' limit for a label value (and a DNS label).
const LABEL_VALUE_MAX: usize = 63;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_defaults_are_the_daemon_sets_paths() {
        assert_eq!(HEALTH_BIND_ADDRESS, format!(":{HEALTH_PORT}"));
        assert!(DBUS_SOCKET.starts_with(&format!("{DBUS_DIR}/")));
    }

    #[test]
    fn binary_paths_that_would_mount_more_than_a_binary_folder_are_refused() {
        for ok in ["/var/bin/containerruntimes", "/usr/local/bin", "/opt/bin"] {
            assert!(
                check_binary_path(ok, Some("/opt/runtime-sandbox/kata")).is_ok(),
                "{ok}"
            );
        }
        for (bad, why) in [
            ("/", "root folder"),
            ("", "not absolute"),
            ("var/bin", "not absolute"),
            ("/var/bin/", "not normalised"),
            ("/var//bin", "not normalised"),
            ("/var/bin/../../etc", "not normalised"),
            ("/var/./bin", "not normalised"),
            ("/etc", "overlaps /etc/containerd"),
            ("/etc/containerd/bin", "overlaps /etc/containerd"),
            ("/run", "overlaps /run/containerd"),
            ("/run/dbus", "overlaps /run/dbus"),
            ("/run/runtime-sandbox/x", "overlaps /run/runtime-sandbox"),
            ("/dev", "overlaps /dev"),
            ("/proc/1/root", "overlaps /proc"),
            ("/sys/kernel", "overlaps /sys"),
            ("/opt/runtime-sandbox", "overlaps /opt/runtime-sandbox/kata"),
            ("/var/bin\ncontainerruntimes", "not printable"),
            ("/var/bin containerruntimes", "not printable"),
        ] {
            let e = check_binary_path(bad, Some("/opt/runtime-sandbox/kata")).unwrap_err();
            assert_eq!(e.field, "spec.binaryPath");
            assert!(e.message.contains(why), "{bad}: {}", e.message);
            assert!(
                e.message
                    .contains("allowed: an absolute, normalised folder"),
                "{}",
                e.message
            );
        }
        let long = format!("/{}", "a".repeat(300));
        assert!(
            check_binary_path(&long, None)
                .unwrap_err()
                .message
                .contains("longer than 255")
        );
        // /etc/containerdx is not inside /etc/containerd.
        assert!(check_binary_path("/etc/containerdx", None).is_ok());
    }
}
