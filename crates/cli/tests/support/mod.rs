//! What the cli tests take from the controller's rendering: the installer of a pool and the
//! pod of a rendered DaemonSet.

#![allow(dead_code)]

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::PodSpec;
use std::collections::BTreeMap;

use sandbox_api::{ContainerRuntime, Shoot};
use sandbox_runtime::actuator::Actuator;
use sandbox_runtime::gvisor::GVisor;
use sandbox_testenv::node::BINARY_PATH;

/// Objects as a ManagedResource carries them: file name to YAML.
pub type Objects = BTreeMap<String, String>;

/// gVisor's ContainerRuntime of pool `pool-a` with the default configuration, its binaries
/// in the test node's [`BINARY_PATH`].
fn container_runtime() -> ContainerRuntime {
    let mut cr = sandbox_testenv::gardenlet::container_runtime("shoot--p--s", "pool-a", None);
    cr.spec.binary_path = BINARY_PATH.into();
    cr
}

/// The installer objects of pool `pool-a` with the default configuration and `image`, as the
/// controller renders them.
pub fn installer(image: &str) -> Objects {
    GVisor
        .desired(&container_runtime(), &Shoot::default(), image)
        .unwrap()
        .pool
        .data
}

/// The objects gVisor's pools share (the node agent's RBAC and label policy).
pub fn shared(image: &str) -> Objects {
    GVisor
        .desired(&container_runtime(), &Shoot::default(), image)
        .unwrap()
        .shared
        .data
}

/// The cleanup objects of pool `pool-a` with `image`.
pub fn cleanup(image: &str) -> Objects {
    GVisor
        .cleanup(&container_runtime(), &Shoot::default(), image)
        .unwrap()
        .pool
        .data
}

/// The rendered object whose key starts with `<kind>__`, decoded.
pub fn object<T: serde::de::DeserializeOwned>(set: &Objects, kind: &str) -> T {
    let prefix = format!("{}__", kind.to_lowercase());
    let (_, yaml) = set
        .iter()
        .find(|(key, _)| key.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {kind} in the rendered objects"));
    serde_saphyr::from_str(yaml).unwrap()
}

/// The pod template's spec of the DaemonSet in `set`.
pub fn daemon_set_pod(set: &Objects) -> PodSpec {
    let ds: DaemonSet = object(set, "DaemonSet");
    ds.spec.unwrap().template.spec.unwrap()
}

/// A child process killed (and reaped) when the test ends, passing or not.
pub struct Kill(pub std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The controller's command line as the chart renders it (with helm `values`), with the
/// health and metrics servers moved to local ports `health` and `metrics`; without the
/// binary (the first word).
pub fn chart_controller_args(values: &[&str], health: u16, metrics: u16) -> Vec<String> {
    use sandbox_testenv::chart::{self, RELEASE_NAMESPACE, object};
    let objects = chart::template("runtime-sandbox", RELEASE_NAMESPACE, values)
        .unwrap()
        .unwrap();
    let container =
        &object(&objects, "Deployment").unwrap()["spec"]["template"]["spec"]["containers"][0];
    let command: Vec<String> = container["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(command[0], "/gardener-extension-runtime-sandbox");
    // The webhook server on a free loopback port (the chart's 10250 is the kubelet's here).
    let webhook = sandbox_testenv::free_port().unwrap();
    let mut args: Vec<String> = command[1..]
        .iter()
        .map(|a| {
            if a.starts_with("--metrics-bind-address=") {
                format!("--metrics-bind-address=127.0.0.1:{metrics}")
            } else if a.starts_with("--health-bind-address=") {
                format!("--health-bind-address=127.0.0.1:{health}")
            } else if a.starts_with("--webhook-config-server-port=") {
                format!("--webhook-config-server-port={webhook}")
            } else {
                a.clone()
            }
        })
        .collect();
    args.push("--webhook-config-server-host=127.0.0.1".into());
    args
}

/// Fails unless the binary at `path` is built without the node agent's crash points (the
/// `fault-injection` feature, which only the crash test's own cargo invocation turns on): what
/// the other tests run must be what we ship.
pub fn assert_no_crash_points(path: &std::path::Path) {
    let bytes = std::fs::read(path).unwrap();
    let marker = b"SANDBOX_FAULT_CRASH_AT";
    assert!(
        !bytes.windows(marker.len()).any(|w| w == marker),
        "{} has the node agent's crash points compiled in (built with the fault-injection feature)",
        path.display()
    );
}
