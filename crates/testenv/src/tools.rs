//! Where the pinned upstream programs are: from the environment, or built by `hack/tools.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result};

/// Paths of the programs and data a control plane needs.
#[derive(Clone, Debug)]
pub struct Tools {
    /// The `kube-apiserver` binary.
    pub kube_apiserver: PathBuf,
    /// The `etcd` binary.
    pub etcd: PathBuf,
    /// Folder with Gardener's CRD YAML files.
    pub gardener_crds: PathBuf,
    /// Folder with `runsc` and `containerd-shim-runsc-v1` for this machine.
    pub gvisor: PathBuf,
    /// Folder with `runsc` and `containerd-shim-runsc-v1` for linux/arm64 (the images' arm64
    /// variant), from the same pinned gVisor module.
    pub gvisor_arm64: PathBuf,
    /// Folder with containerd 2.x: `containerd`, `ctr` and `containerd-shim-runc-v2`.
    pub containerd2: PathBuf,
    /// Folder with containerd 1.7: `containerd`, `ctr` and `containerd-shim-runc-v2`.
    pub containerd17: PathBuf,
    /// Folder with the Go gVisor extension's binary `gardener-extension-runtime-gvisor`.
    pub gvisor_extension: PathBuf,
    /// Folder with Gardener's `gardener-apiserver`, `gardener-resource-manager` and the `helm`
    /// Gardener renders charts with.
    pub gardener: PathBuf,
    /// Folder with `kube-controller-manager`, `kube-scheduler` and `kubelet` (a test shoot's
    /// node and controllers), at the pinned Kubernetes version.
    pub kubernetes_node: PathBuf,
    /// Folder with Kata's `containerd-shim-kata-v2`.
    pub kata: PathBuf,
}

const ENV_APISERVER: &str = "SANDBOX_KUBE_APISERVER";
const ENV_ETCD: &str = "SANDBOX_ETCD";
const ENV_CRDS: &str = "SANDBOX_GARDENER_CRDS";
const ENV_GVISOR: &str = "SANDBOX_GVISOR";
const ENV_GVISOR_ARM64: &str = "SANDBOX_GVISOR_ARM64";
const ENV_CONTAINERD2: &str = "SANDBOX_CONTAINERD2";
const ENV_CONTAINERD17: &str = "SANDBOX_CONTAINERD17";
const ENV_GVISOR_EXTENSION: &str = "SANDBOX_GVISOR_EXTENSION";
const ENV_GARDENER: &str = "SANDBOX_GARDENER";
const ENV_KUBERNETES_NODE: &str = "SANDBOX_KUBERNETES_NODE";
const ENV_KATA: &str = "SANDBOX_KATA";

/// Every variable `hack/tools.sh env` prints, in the order of [`Tools`]' fields.
const ALL: [&str; 11] = [
    ENV_APISERVER,
    ENV_ETCD,
    ENV_CRDS,
    ENV_GVISOR,
    ENV_GVISOR_ARM64,
    ENV_CONTAINERD2,
    ENV_CONTAINERD17,
    ENV_GVISOR_EXTENSION,
    ENV_GARDENER,
    ENV_KUBERNETES_NODE,
    ENV_KATA,
];

impl Tools {
    /// Takes the paths from the `SANDBOX_*` variables `hack/tools.sh env` prints when all are
    /// set; otherwise runs `hack/tools.sh`, which builds whatever is missing (once per pinned
    /// version) and tells the paths.
    pub fn locate() -> Result<Self> {
        let from_env: Option<Vec<PathBuf>> = ALL
            .iter()
            .map(|name| std::env::var_os(name).map(PathBuf::from))
            .collect();
        let paths = match from_env {
            Some(paths) => paths,
            None => {
                let (text, script) = hack_script("all")?;
                ALL.iter()
                    .map(|name| env_var(&text, &script, name))
                    .collect::<Result<Vec<_>>>()?
            }
        };
        all_exist(&paths.iter().collect::<Vec<_>>(), "all")?;
        // Struct fields are evaluated in the order written: the order of `ALL`.
        let mut paths = paths.into_iter();
        let mut next = || paths.next().expect("one path per variable");
        Ok(Tools {
            kube_apiserver: next(),
            etcd: next(),
            gardener_crds: next(),
            gvisor: next(),
            gvisor_arm64: next(),
            containerd2: next(),
            containerd17: next(),
            gvisor_extension: next(),
            gardener: next(),
            kubernetes_node: next(),
            kata: next(),
        })
    }
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
    /// From `SANDBOX_KUBE_APISERVER`, `SANDBOX_ETCD` and `SANDBOX_GARDENER_CRDS` when set;
    /// otherwise `hack/tools.sh ensure control-plane` builds what is missing.
    pub fn locate() -> Result<Self> {
        let tools = match (
            std::env::var_os(ENV_APISERVER),
            std::env::var_os(ENV_ETCD),
            std::env::var_os(ENV_CRDS),
        ) {
            (Some(a), Some(e), Some(c)) => ControlPlaneTools {
                kube_apiserver: a.into(),
                etcd: e.into(),
                gardener_crds: c.into(),
            },
            _ => {
                let (text, script) = hack_script("control-plane")?;
                let var = |name: &str| env_var(&text, &script, name);
                ControlPlaneTools {
                    kube_apiserver: var(ENV_APISERVER)?,
                    etcd: var(ENV_ETCD)?,
                    gardener_crds: var(ENV_CRDS)?,
                }
            }
        };
        all_exist(
            &[&tools.kube_apiserver, &tools.etcd, &tools.gardener_crds],
            "control-plane",
        )?;
        Ok(tools)
    }
}

/// An error naming the first of `paths` that does not exist and the `hack/tools.sh ensure`
/// group that builds it.
fn all_exist(paths: &[&PathBuf], group: &str) -> Result<()> {
    match paths.iter().find(|p| !p.exists()) {
        Some(path) => Err(Error::Tools(format!(
            "{} does not exist; run `hack/tools.sh ensure {group}` or fix the SANDBOX_* variables",
            path.display()
        ))),
        None => Ok(()),
    }
}

/// The path `hack/tools.sh env` printed for `name`.
fn env_var(text: &str, script: &std::path::Path, name: &str) -> Result<PathBuf> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
        .map(PathBuf::from)
        .ok_or_else(|| Error::Tools(format!("{} env did not print {name}", script.display())))
}

/// Runs `hack/tools.sh ensure <what>` (progress on our stderr), then `env`; its output.
fn hack_script(what: &str) -> Result<(String, PathBuf)> {
    let script = repo_root().join("hack/tools.sh");
    // Progress and errors of the build go straight to our stderr.
    let status = Command::new("bash")
        .arg(&script)
        .args(["ensure", what])
        .status()
        .map_err(|e| Error::Tools(format!("cannot run {}: {e}", script.display())))?;
    if !status.success() {
        return Err(Error::Tools(format!(
            "{} ensure {what} failed ({status}); see the line above",
            script.display()
        )));
    }
    let output = Command::new("bash")
        .arg(&script)
        .arg("env")
        .output()
        .map_err(|e| Error::Tools(format!("cannot run {}: {e}", script.display())))?;
    Ok((String::from_utf8_lossy(&output.stdout).into_owned(), script))
}

/// The repository's root folder (this crate lives in `crates/testenv`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

impl Tools {
    /// The pinned `helm` (the version Gardener renders extension charts with).
    pub fn helm(&self) -> PathBuf {
        self.gardener.join("helm")
    }
}
