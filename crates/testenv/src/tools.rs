//! Where the pinned upstream programs are: from the environment, or built by `hack/tools.sh`.
//!
//! Each tool is built when a test first asks for it ([`Tool::path`]), not before: a test of
//! the controller on a fresh machine pays for the control plane and Helm, never for Kata's
//! shim, arm64 gVisor or the Go extension. A `SANDBOX_*` variable (what `hack/tools.sh env`
//! prints) names a tool's path and skips the script.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::{Error, Result};

/// A pinned upstream program (or folder of programs built together) that tests run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tool {
    /// The `kube-apiserver` binary.
    KubeApiserver,
    /// The `etcd` binary.
    Etcd,
    /// Folder with Gardener's CRD YAML files.
    GardenerCrds,
    /// Folder with `runsc` and `containerd-shim-runsc-v1` for this machine.
    Gvisor,
    /// Folder with `runsc` and `containerd-shim-runsc-v1` for linux/arm64 (the images' arm64
    /// variant), from the same pinned gVisor module.
    GvisorArm64,
    /// Folder with `runsc` and `containerd-shim-runsc-v1` of the pin before the current one
    /// (`GVISOR_PREVIOUS_VERSION`), for this machine: the upgrade tests start from it.
    GvisorPrevious,
    /// Folder with containerd 2.x: `containerd`, `ctr` and `containerd-shim-runc-v2`.
    Containerd2,
    /// Folder with containerd 1.7: `containerd`, `ctr` and `containerd-shim-runc-v2`.
    Containerd17,
    /// Folder with the Go gVisor extension's binary `gardener-extension-runtime-gvisor`.
    GvisorExtension,
    /// Folder with Gardener's `gardener-apiserver`, `gardener-resource-manager`, `gardener-node-agent` and the `helm`
    /// Gardener renders charts with (one `go build`).
    Gardener,
    /// Folder with `kube-controller-manager`, `kube-scheduler` and `kubelet` (a test shoot's
    /// node and controllers), at the pinned Kubernetes version.
    KubernetesNode,
    /// Folder with Kata's `containerd-shim-kata-v2`.
    Kata,
    /// Folder with the CNCF distribution registry's `registry` (the local registry nodes
    /// pull our node image from in the OperatingSystemConfig install tests).
    Registry,
}

impl Tool {
    /// Every tool, in the order `hack/tools.sh env` prints them.
    pub const ALL: [Tool; 13] = [
        Tool::KubeApiserver,
        Tool::Etcd,
        Tool::GardenerCrds,
        Tool::Gvisor,
        Tool::GvisorArm64,
        Tool::GvisorPrevious,
        Tool::Containerd2,
        Tool::Containerd17,
        Tool::GvisorExtension,
        Tool::Gardener,
        Tool::KubernetesNode,
        Tool::Kata,
        Tool::Registry,
    ];

    /// Its name for `hack/tools.sh ensure|path`.
    pub fn name(self) -> &'static str {
        match self {
            Tool::KubeApiserver => "kube-apiserver",
            Tool::Etcd => "etcd",
            Tool::GardenerCrds => "gardener-crds",
            Tool::Gvisor => "gvisor",
            Tool::GvisorArm64 => "gvisor-arm64",
            Tool::GvisorPrevious => "gvisor-previous",
            Tool::Containerd2 => "containerd",
            Tool::Containerd17 => "containerd17",
            Tool::GvisorExtension => "gvisor-extension",
            Tool::Gardener => "gardener",
            Tool::KubernetesNode => "kubernetes-node",
            Tool::Kata => "kata",
            Tool::Registry => "registry",
        }
    }

    /// The variable that overrides its path (as `hack/tools.sh env` prints it).
    pub fn env(self) -> &'static str {
        match self {
            Tool::KubeApiserver => "SANDBOX_KUBE_APISERVER",
            Tool::Etcd => "SANDBOX_ETCD",
            Tool::GardenerCrds => "SANDBOX_GARDENER_CRDS",
            Tool::Gvisor => "SANDBOX_GVISOR",
            Tool::GvisorArm64 => "SANDBOX_GVISOR_ARM64",
            Tool::GvisorPrevious => "SANDBOX_GVISOR_PREVIOUS",
            Tool::Containerd2 => "SANDBOX_CONTAINERD2",
            Tool::Containerd17 => "SANDBOX_CONTAINERD17",
            Tool::GvisorExtension => "SANDBOX_GVISOR_EXTENSION",
            Tool::Gardener => "SANDBOX_GARDENER",
            Tool::KubernetesNode => "SANDBOX_KUBERNETES_NODE",
            Tool::Kata => "SANDBOX_KATA",
            Tool::Registry => "SANDBOX_REGISTRY",
        }
    }

    /// Its path: the `SANDBOX_*` variable if set, otherwise what `hack/tools.sh` builds (only
    /// this tool, once per pinned version; progress on our stderr). Tests of one process that
    /// ask at the same time wait for one build; `hack/tools.sh` locks each tool's folder
    /// against other processes.
    pub fn path(self) -> Result<PathBuf> {
        static KNOWN: Mutex<Option<HashMap<Tool, PathBuf>>> = Mutex::new(None);
        let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(path) = known.get_or_insert_default().get(&self) {
            return Ok(path.clone());
        }
        let path = match std::env::var_os(self.env()) {
            Some(path) => PathBuf::from(path),
            None => {
                tools_script(&["ensure", self.name()])?;
                PathBuf::from(tools_script(&["path", self.name()])?.trim())
            }
        };
        if !path.exists() {
            return Err(Error::Tools(format!(
                "{} does not exist; run `hack/tools.sh ensure {}` or fix {}",
                path.display(),
                self.name(),
                self.env()
            )));
        }
        known.get_or_insert_default().insert(self, path.clone());
        Ok(path)
    }
}

/// The pinned `helm` (the version Gardener renders extension charts with).
pub fn helm() -> Result<PathBuf> {
    Ok(Tool::Gardener.path()?.join("helm"))
}

/// What a control plane needs (kube-apiserver, etcd, Gardener's CRDs) and nothing else, so
/// that `make demo` and `make control-plane` build only these on a fresh machine.
#[derive(Clone, Debug)]
pub struct ControlPlaneTools {
    pub kube_apiserver: PathBuf,
    pub etcd: PathBuf,
    pub gardener_crds: PathBuf,
}

impl ControlPlaneTools {
    /// The three paths, each from its `SANDBOX_*` variable or built if missing: the missing
    /// ones in one `hack/tools.sh ensure control-plane` (etcd and kube-apiserver share one
    /// `go build`), once per process.
    pub fn locate() -> Result<Self> {
        static ENSURED: Mutex<bool> = Mutex::new(false);
        let tools = [Tool::GardenerCrds, Tool::Etcd, Tool::KubeApiserver];
        if tools.iter().any(|t| std::env::var_os(t.env()).is_none()) {
            let mut ensured = ENSURED.lock().unwrap_or_else(|e| e.into_inner());
            if !*ensured {
                tools_script(&["ensure", "control-plane"])?;
                *ensured = true;
            }
        }
        Ok(ControlPlaneTools {
            gardener_crds: Tool::GardenerCrds.path()?,
            etcd: Tool::Etcd.path()?,
            kube_apiserver: Tool::KubeApiserver.path()?,
        })
    }
}

/// Runs `hack/tools.sh ARGS` (its progress and errors go straight to our stderr); its output.
fn tools_script(args: &[&str]) -> Result<String> {
    let script = repo_root().join("hack/tools.sh");
    let output = Command::new("bash")
        .arg(&script)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| Error::Tools(format!("cannot run {}: {e}", script.display())))?;
    if !output.status.success() {
        return Err(Error::Tools(format!(
            "{} {} failed ({}); see the lines above",
            script.display(),
            args.join(" "),
            output.status
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The repository's root folder (this crate lives in `crates/testenv`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
