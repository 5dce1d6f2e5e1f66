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
    /// Folder with `runsc` and `containerd-shim-runsc-v1`.
    pub gvisor: PathBuf,
    /// Folder with containerd 2.x: `containerd`, `ctr` and `containerd-shim-runc-v2`.
    pub containerd2: PathBuf,
    /// Folder with containerd 1.7: `containerd`, `ctr` and `containerd-shim-runc-v2`.
    pub containerd17: PathBuf,
    /// Folder with the Go gVisor extension's binary `gardener-extension-runtime-gvisor`.
    pub gvisor_extension: PathBuf,
    /// Folder with Gardener's `gardener-apiserver`, `gardener-resource-manager` and the `helm`
    /// Gardener renders charts with.
    pub gardener: PathBuf,
}

const ENV_APISERVER: &str = "SANDBOX_KUBE_APISERVER";
const ENV_ETCD: &str = "SANDBOX_ETCD";
const ENV_CRDS: &str = "SANDBOX_GARDENER_CRDS";
const ENV_GVISOR: &str = "SANDBOX_GVISOR";
const ENV_CONTAINERD2: &str = "SANDBOX_CONTAINERD2";
const ENV_CONTAINERD17: &str = "SANDBOX_CONTAINERD17";
const ENV_GVISOR_EXTENSION: &str = "SANDBOX_GVISOR_EXTENSION";
const ENV_GARDENER: &str = "SANDBOX_GARDENER";

impl Tools {
    /// Takes the paths from `SANDBOX_KUBE_APISERVER`, `SANDBOX_ETCD`,
    /// `SANDBOX_GARDENER_CRDS`, `SANDBOX_GVISOR`, `SANDBOX_CONTAINERD2`, `SANDBOX_CONTAINERD17`
    /// `SANDBOX_GVISOR_EXTENSION` and `SANDBOX_GARDENER` when all are set; otherwise runs
    /// `hack/tools.sh`, which builds whatever is missing (once per pinned version) and tells
    /// the paths.
    pub fn locate() -> Result<Self> {
        let from_env = (
            std::env::var_os(ENV_APISERVER),
            std::env::var_os(ENV_ETCD),
            std::env::var_os(ENV_CRDS),
            std::env::var_os(ENV_GVISOR),
            std::env::var_os(ENV_CONTAINERD2),
            std::env::var_os(ENV_CONTAINERD17),
            std::env::var_os(ENV_GVISOR_EXTENSION),
            std::env::var_os(ENV_GARDENER),
        );
        let tools =
            if let (Some(a), Some(e), Some(c), Some(g), Some(d), Some(d17), Some(x), Some(gr)) =
                from_env
            {
                Tools {
                    kube_apiserver: a.into(),
                    etcd: e.into(),
                    gardener_crds: c.into(),
                    gvisor: g.into(),
                    containerd2: d.into(),
                    containerd17: d17.into(),
                    gvisor_extension: x.into(),
                    gardener: gr.into(),
                }
            } else {
                Self::from_hack_script()?
            };
        all_exist(
            &[
                &tools.kube_apiserver,
                &tools.etcd,
                &tools.gardener_crds,
                &tools.gvisor,
                &tools.containerd2,
                &tools.containerd17,
                &tools.gvisor_extension,
                &tools.gardener,
            ],
            "all",
        )?;
        Ok(tools)
    }

    fn from_hack_script() -> Result<Self> {
        let (text, script) = hack_script("all")?;
        let var = |name: &str| env_var(&text, &script, name);
        Ok(Tools {
            kube_apiserver: var(ENV_APISERVER)?,
            etcd: var(ENV_ETCD)?,
            gardener_crds: var(ENV_CRDS)?,
            gvisor: var(ENV_GVISOR)?,
            containerd2: var(ENV_CONTAINERD2)?,
            containerd17: var(ENV_CONTAINERD17)?,
            gvisor_extension: var(ENV_GVISOR_EXTENSION)?,
            gardener: var(ENV_GARDENER)?,
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
