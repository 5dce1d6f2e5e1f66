//! The node plan: everything a node agent makes true on a node for one runtime, rendered by
//! the runtime's module (e.g. [`crate::gvisor::node_plan`]) and carried to the node in the
//! pool's ConfigMap. The agent applies a plan and knows no runtime: handler names, files,
//! binaries, paths and the oldest containerd all come from here.
//!
//! The plan is versioned (`apiVersion`/`kind`), serialised deterministically (YAML with fields
//! in declaration order and sorted maps: same input, same bytes, no needless rollout; files'
//! contents stay readable as block scalars in the ConfigMap), and
//! checked when it is read: a plan that names a path outside the folders an agent may write,
//! or that the agent does not understand, is refused before anything changes on the node.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

/// The plan's `apiVersion`.
pub const API_VERSION: &str = "node.runtime-sandbox.gardener.cloud/v1alpha1";
/// The plan's `kind`.
pub const KIND: &str = "NodePlan";
/// The plan's key in the pool's ConfigMap, i.e. its file name in the agent's config folder.
pub const FILE_NAME: &str = "node-plan.yaml";
/// The environment variable that carries a plan inline (the cleanup DaemonSet, which owns no
/// ConfigMap).
pub const PLAN_ENV: &str = "NODE_PLAN";

/// Folder that holds containerd's configuration; plan files live below it.
pub const CONTAINERD_DIR: &str = "/etc/containerd";
/// Folder gardener-node-agent imports drop-ins from (`imports = ["/etc/containerd/conf.d/*.toml"]`).
pub const CONF_D_DIR: &str = "/etc/containerd/conf.d";
/// Folder of the agents' host locks.
pub const LOCK_DIR: &str = "/run/runtime-sandbox";
/// The one host lock of every agent that edits containerd's configuration or restarts it,
/// whatever its runtime: two runtimes' agents on one node take turns.
pub const CONTAINERD_LOCK: &str = "/run/runtime-sandbox/containerd.lock";
/// The checksums file every runtime's image folder carries (`sha256sum` format).
pub const CHECKSUMS: &str = "SHA256SUMS";
/// Folder below which versioned payloads are installed.
pub const OPT_DIR: &str = "/opt/runtime-sandbox";

/// What one runtime needs on a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodePlan {
    /// [`API_VERSION`].
    pub api_version: String,
    /// [`KIND`].
    pub kind: String,
    /// The runtime's name as users know it (`gvisor`), for messages only.
    pub runtime: String,
    /// containerd runtime handlers to register (one per RuntimeClass handler).
    pub handlers: Vec<Handler>,
    /// Files to write, e.g. a shim's configuration.
    pub files: Vec<PlanFile>,
    /// Binaries to copy from the image into `spec.binaryPath`.
    pub binaries: Binaries,
    /// The drop-in file the handlers go to when `config.toml` imports `conf.d`.
    pub drop_in: String,
    /// The host lock that keeps two agents from editing containerd's configuration or
    /// restarting it at once ([`CONTAINERD_LOCK`] for every runtime of ours).
    pub lock: String,
    /// The node label set once containerd has loaded every handler (the RuntimeClass selects it).
    pub ready_label: String,
    /// The oldest containerd the runtime works with.
    pub min_containerd: MinContainerd,
    /// Globs added to containerd's `imports` (with the handlers: in the drop-in, or in
    /// `config.toml` in place), e.g. a folder below `/run` another component fills.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containerd_imports: Vec<String>,
}

/// A containerd CRI runtime handler entry. The optional fields are left out of the plan when
/// unset, so a runtime that does not use them (gVisor) keeps the bytes of its plan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Handler {
    /// Handler name, as in a RuntimeClass's `handler`.
    pub name: String,
    /// containerd shim, e.g. `io.containerd.runsc.v1`.
    pub runtime_type: String,
    /// The shim binary's absolute path (`runtime_path`), when it is not on containerd's PATH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_path: Option<String>,
    /// `privileged_without_host_devices`: a privileged pod of this handler gets no host
    /// devices (a VM must not see the host's).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged_without_host_devices: bool,
    /// `pod_annotations` passed to the shim (glob patterns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_annotations: Vec<String>,
    /// `container_annotations` passed to the shim (glob patterns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_annotations: Vec<String>,
    /// The entry's `options` table (string values).
    pub options: BTreeMap<String, String>,
    /// The label set on the node once this handler is loaded **and** its `requires` hold (a
    /// RuntimeClass per handler selects it); unset: the plan's `readyLabel` alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_label: Option<String>,
    /// What the host must offer before this handler may run pods; checked on every run, a
    /// failure keeps `readyLabel` off with the reason and changes nothing else.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<Requirement>,
    /// What the host must offer before the entry is even written (e.g. a devmapper pool the
    /// entry's snapshotter needs: containerd 2.x loses CRI when it is configured without one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub written_only_if: Vec<Requirement>,
    /// The snapshotter of this handler's containers (`snapshotter`), e.g. `devmapper`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshotter: Option<String>,
}

/// One host capability a handler needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Requirement {
    /// What kind of file must be at `path`.
    pub kind: RequirementKind,
    /// Absolute host path.
    pub path: String,
    /// The reason reported when it is missing, in one word (e.g. `NoVhostVsock`).
    pub reason: String,
    /// What it is for, for the message (e.g. `vhost-vsock, for the VM's agent connection`).
    pub purpose: String,
}

/// Kinds of [`Requirement`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RequirementKind {
    /// A character device that opens read-write (e.g. `/dev/kvm`).
    CharDevice,
    /// A block device (e.g. a device-mapper pool below `/dev/mapper`).
    BlockDevice,
    /// An executable regular file.
    Executable,
    /// A regular file.
    File,
}

/// A file with its whole content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanFile {
    /// Absolute host path below [`CONTAINERD_DIR`].
    pub path: String,
    /// The file's content.
    pub content: String,
}

/// Binaries shipped in the image next to a `sha256sum` file. A name is a file name or a path
/// below the image's folder (`gvisor-bin/gvisor_sentry`): the same path below the target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Binaries {
    /// The image's folder with the binaries and the checksums file.
    pub source: String,
    /// Name of the checksums file in `source`.
    pub checksums: String,
    /// File names to copy (no folders).
    pub names: Vec<String>,
    /// File names copied when the checksums file lists them (a payload may leave out, say, a
    /// hypervisor; the handler's host check then reports it missing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub optional: Vec<String>,
    /// A versioned install: the files go to `<target>/<version>/` instead of
    /// `spec.binaryPath`, and an older version's folder stays while a sandbox of the plan's
    /// handlers may still use it (its shim, runtime or VM run from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versioned: Option<Versioned>,
    /// The binaries' sha256 as the seed expects them, by architecture (`amd64`, `arm64`), from
    /// the image vector: when present, a binary is installed only if it hashes to the seed's
    /// value, whatever the image's own checksums file says (docs/security.md). Empty: the
    /// image's checksums file is all there is.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pinned: Pins,
}

/// Binary checksums by architecture, then by binary name (as `names` spells it).
pub type Pins = BTreeMap<String, BTreeMap<String, String>>;

/// This machine's architecture as images name it (`amd64`, `arm64`), or Rust's name for one
/// we build no image for.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Where a versioned install goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Versioned {
    /// Absolute host folder below [`OPT_DIR`], e.g. `/opt/runtime-sandbox/kata`.
    pub target: String,
    /// The payload's version: a plain folder name.
    pub version: String,
    /// Binaries of an earlier, unversioned install in `spec.binaryPath` (file names), removed
    /// with the older versions once no sandbox may use them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaces_binaries: Vec<String>,
    /// Files of that earlier install below [`CONTAINERD_DIR`], removed with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaces_files: Vec<String>,
}

impl Versioned {
    /// The folder of this version.
    pub fn dir(&self) -> String {
        format!("{}/{}", self.target, self.version)
    }
}

/// A payload version as a folder name: the image tag (also of `repository:tag@digest`, a tag
/// pinned by digest), else the digest's first 12 hex digits, with anything but
/// `[A-Za-z0-9._-]` replaced, so it can never leave its folder.
pub fn payload_version(image: &str) -> String {
    let tail = image.rsplit('/').next().unwrap_or(image);
    let raw = match (tail.split_once('@'), tail.split_once(':')) {
        (Some((named, _)), _) if named.contains(':') => named
            .split_once(':')
            .map(|(_, tag)| tag.to_string())
            .unwrap_or_default(),
        (Some((_, digest)), _) => digest
            .trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect(),
        (None, Some((_, tag))) => tag.to_string(),
        (None, None) => "latest".to_string(),
    };
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match clean.as_str() {
        "" | "." | ".." => "unversioned".into(),
        _ => clean,
    }
}

/// The oldest containerd a runtime works with, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MinContainerd {
    /// `major.minor`, e.g. `1.7`.
    pub version: String,
    /// What goes wrong with an older one.
    pub reason: String,
}

/// A plan the agent cannot use; nothing on the node was changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the node plan is not a valid {KIND}: {0}")]
    Decode(String),
    #[error(
        "the node plan has apiVersion {api_version:?} and kind {kind:?}; this agent reads {API_VERSION} {KIND} (agent and controller versions differ?)"
    )]
    Version { api_version: String, kind: String },
    #[error("the node plan's {field} is invalid: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> PlanError {
    PlanError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// `path` is absolute, normalised (no `.`, `..` or empty parts) and strictly below `dir`.
fn check_path(field: &str, path: &str, dir: &str) -> Result<(), PlanError> {
    let p = Path::new(path);
    let normal = p.is_absolute()
        && !path.ends_with('/')
        && !path.contains("//")
        && p.components()
            .skip(1)
            .all(|c| matches!(c, Component::Normal(_)));
    if !normal || !p.starts_with(dir) || p == Path::new(dir) {
        return Err(invalid(
            field,
            format!("{path:?} must be a normalised absolute path below {dir}/"),
        ));
    }
    Ok(())
}

/// A relative path of plain names (`runsc`, `gvisor-bin/gvisor_sentry`): no `.`, `..` or
/// empty part, at most two parts, printable.
fn check_relative(field: &str, name: &str) -> Result<(), PlanError> {
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 2 || parts.iter().any(|p| check_name(field, p).is_err()) {
        return Err(invalid(
            field,
            format!("{name:?} must be a file name, or a folder and a file name"),
        ));
    }
    Ok(())
}

/// A plain file name: no folder, not `.` or `..`, printable.
fn check_name(field: &str, name: &str) -> Result<(), PlanError> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && name.chars().all(|c| c.is_ascii_graphic());
    if !ok {
        return Err(invalid(
            field,
            format!("{name:?} must be a plain file name"),
        ));
    }
    Ok(())
}

/// A label key: not empty, no whitespace.
fn check_label(field: &str, label: &str) -> Result<(), PlanError> {
    if label.is_empty() || label.contains(char::is_whitespace) {
        return Err(invalid(field, format!("{label:?} must be a label key")));
    }
    Ok(())
}

/// `major.minor` of a version string as containerd reports or packages it (`1.7`, `v2.4.2`,
/// `1.6.20~ds1`, `2.0.0-rc.1`).
pub fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.trim_start_matches('v').split(['.', '~', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// What a runtime's plan says about itself; [`NodePlan::new`] adds what every plan of ours
/// shares.
#[derive(Clone, Debug)]
pub struct PlanHead<'a> {
    pub runtime: &'a str,
    pub ready_label: &'a str,
    pub drop_in: &'a str,
    pub min_containerd: MinContainerd,
}

impl NodePlan {
    /// The plan of `head` with its handlers, files and binaries: our `apiVersion` and `kind`,
    /// the one containerd lock, no further imports.
    pub fn new(
        head: PlanHead<'_>,
        handlers: Vec<Handler>,
        files: Vec<PlanFile>,
        binaries: Binaries,
    ) -> NodePlan {
        NodePlan {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            runtime: head.runtime.into(),
            handlers,
            files,
            binaries,
            drop_in: head.drop_in.into(),
            lock: CONTAINERD_LOCK.into(),
            ready_label: head.ready_label.into(),
            min_containerd: head.min_containerd,
            containerd_imports: Vec::new(),
        }
    }

    /// Reads a plan and checks it (see [`NodePlan::validate`]).
    pub fn parse(text: &str) -> Result<Self, PlanError> {
        // apiVersion and kind first, so a newer plan says so instead of failing on a field.
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct TypeMeta {
            #[serde(default)]
            api_version: String,
            #[serde(default)]
            kind: String,
        }
        let meta: TypeMeta =
            serde_saphyr::from_str(text).map_err(|e| PlanError::Decode(e.to_string()))?;
        if meta.api_version != API_VERSION || meta.kind != KIND {
            return Err(PlanError::Version {
                api_version: meta.api_version,
                kind: meta.kind,
            });
        }
        let plan: NodePlan =
            serde_saphyr::from_str(text).map_err(|e| PlanError::Decode(e.to_string()))?;
        plan.validate()?;
        Ok(plan)
    }

    /// The plan as the ConfigMap carries it (YAML).
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).expect("a NodePlan always serialises (strings and maps only)")
    }

    /// Checks everything the agent relies on: every path below the folder it belongs in,
    /// plain binary names, at least one handler with a name and a runtime type, and a
    /// readable minimum containerd version.
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.handlers.is_empty() {
            return Err(invalid("handlers", "at least one handler is needed"));
        }
        for (i, import) in self.containerd_imports.iter().enumerate() {
            let p = Path::new(import);
            if !p.is_absolute()
                || p.components().any(|c| matches!(c, Component::ParentDir))
                || !import.ends_with(".toml")
                || import
                    .chars()
                    .any(|c| c.is_control() || c == '"' || c == '\\')
            {
                return Err(invalid(
                    format!("containerdImports[{i}]"),
                    format!(
                        "{import:?} must be an absolute path or glob of .toml files without '..'"
                    ),
                ));
            }
        }
        for (i, handler) in self.handlers.iter().enumerate() {
            let name_ok = !handler.name.is_empty()
                && handler
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !name_ok {
                return Err(invalid(
                    format!("handlers[{i}].name"),
                    format!(
                        "{:?} must be a handler name (letters, digits, '-', '_', '.')",
                        handler.name
                    ),
                ));
            }
            if handler.runtime_type.is_empty() {
                return Err(invalid(
                    format!("handlers[{i}].runtimeType"),
                    "must not be empty",
                ));
            }
            if let Some(path) = &handler.runtime_path {
                check_path(&format!("handlers[{i}].runtimePath"), path, OPT_DIR)?;
            }
            if let Some(label) = &handler.ready_label {
                check_label(&format!("handlers[{i}].readyLabel"), label)?;
            }
            let requirements = handler.requires.iter().map(|r| ("requires", r));
            let gates = handler.written_only_if.iter().map(|r| ("writtenOnlyIf", r));
            for (j, (list, r)) in requirements.chain(gates).enumerate() {
                let field = format!("handlers[{i}].{list}[{j}]");
                let p = Path::new(&r.path);
                if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
                    return Err(invalid(
                        format!("{field}.path"),
                        format!("{:?} must be an absolute path without '..'", r.path),
                    ));
                }
                if r.reason.is_empty() || !r.reason.chars().all(|c| c.is_ascii_alphanumeric()) {
                    return Err(invalid(
                        format!("{field}.reason"),
                        format!("{:?} must be one word (letters and digits)", r.reason),
                    ));
                }
            }
            for (list, patterns) in [
                ("podAnnotations", &handler.pod_annotations),
                ("containerAnnotations", &handler.container_annotations),
            ] {
                for (j, pattern) in patterns.iter().enumerate() {
                    if pattern.is_empty() || !pattern.chars().all(|c| c.is_ascii_graphic()) {
                        return Err(invalid(
                            format!("handlers[{i}].{list}[{j}]"),
                            format!("{pattern:?} must be an annotation pattern"),
                        ));
                    }
                }
            }
        }
        for (i, file) in self.files.iter().enumerate() {
            // Below containerd's folder, or in the version's own folder (a file that belongs
            // to that version, e.g. its shim's configuration, goes with it).
            let field = format!("files[{i}].path");
            match &self.binaries.versioned {
                Some(v) if Path::new(&file.path).starts_with(v.dir()) => {
                    check_path(&field, &file.path, &v.dir())?
                }
                _ => check_path(&field, &file.path, CONTAINERD_DIR)?,
            }
        }
        check_path("dropIn", &self.drop_in, CONF_D_DIR)?;
        if !self.drop_in.ends_with(".toml") {
            return Err(invalid(
                "dropIn",
                format!("{:?} must end in .toml to be imported", self.drop_in),
            ));
        }
        check_path("lock", &self.lock, LOCK_DIR)?;
        if !Path::new(&self.binaries.source).is_absolute() {
            return Err(invalid(
                "binaries.source",
                format!("{:?} must be an absolute path", self.binaries.source),
            ));
        }
        check_name("binaries.checksums", &self.binaries.checksums)?;
        for (i, name) in self.binaries.names.iter().enumerate() {
            check_relative(&format!("binaries.names[{i}]"), name)?;
        }
        for (i, name) in self.binaries.optional.iter().enumerate() {
            check_relative(&format!("binaries.optional[{i}]"), name)?;
        }
        for (arch, sums) in &self.binaries.pinned {
            if !matches!(arch.as_str(), "amd64" | "arm64") {
                return Err(invalid(
                    "binaries.pinned",
                    format!("{arch:?} is not an architecture; allowed: amd64, arm64"),
                ));
            }
            for (name, sum) in sums {
                check_relative(&format!("binaries.pinned.{arch}"), name)?;
                if sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(invalid(
                        format!("binaries.pinned.{arch}.{name}"),
                        format!("{sum:?} is not a sha256 in hex"),
                    ));
                }
            }
        }
        if let Some(versioned) = &self.binaries.versioned {
            check_path("binaries.versioned.target", &versioned.target, OPT_DIR)?;
            check_name("binaries.versioned.version", &versioned.version)?;
            for (i, name) in versioned.replaces_binaries.iter().enumerate() {
                check_name(&format!("binaries.versioned.replacesBinaries[{i}]"), name)?;
            }
            for (i, path) in versioned.replaces_files.iter().enumerate() {
                check_path(
                    &format!("binaries.versioned.replacesFiles[{i}]"),
                    path,
                    CONTAINERD_DIR,
                )?;
            }
        }
        check_label("readyLabel", &self.ready_label)?;
        if major_minor(&self.min_containerd.version).is_none() {
            return Err(invalid(
                "minContainerd.version",
                format!("{:?} must look like 1.7", self.min_containerd.version),
            ));
        }
        Ok(())
    }

    /// The oldest containerd as `(major, minor)`.
    pub fn min_containerd(&self) -> (u32, u32) {
        major_minor(&self.min_containerd.version).unwrap_or((0, 0))
    }

    /// The handlers' names.
    pub fn handler_names(&self) -> Vec<&str> {
        self.handlers.iter().map(|h| h.name.as_str()).collect()
    }

    /// Every label the agent of this plan manages: the plan's and the handlers'.
    pub fn labels(&self) -> Vec<&str> {
        let mut labels = vec![self.ready_label.as_str()];
        labels.extend(
            self.handlers
                .iter()
                .filter_map(|h| h.ready_label.as_deref()),
        );
        labels
    }

    /// Where the binaries go on the host: the versioned folder, or `binary_path`.
    pub fn binary_dir(&self, binary_path: &str) -> String {
        match &self.binaries.versioned {
            Some(v) => v.dir(),
            None => binary_path.to_string(),
        }
    }

    /// The version a versioned install puts on the node.
    pub fn version(&self) -> Option<&str> {
        self.binaries.versioned.as_ref().map(|v| v.version.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> NodePlan {
        NodePlan {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            runtime: "example".into(),
            handlers: vec![Handler {
                name: "example".into(),
                runtime_type: "io.containerd.example.v1".into(),
                options: [(
                    "ConfigPath".to_string(),
                    "/etc/containerd/example.toml".into(),
                )]
                .into(),
                ..Handler::default()
            }],
            files: vec![PlanFile {
                path: "/etc/containerd/example.toml".into(),
                content: "[x]\n".into(),
            }],
            binaries: Binaries {
                source: "/usr/local/lib/example".into(),
                checksums: "SHA256SUMS".into(),
                names: vec!["example".into()],
                optional: Vec::new(),
                versioned: None,
                pinned: Default::default(),
            },
            drop_in: "/etc/containerd/conf.d/example.toml".into(),
            lock: "/run/runtime-sandbox/example.lock".into(),
            ready_label: "example.io/ready".into(),
            min_containerd: MinContainerd {
                version: "1.7".into(),
                reason: "because".into(),
            },
            containerd_imports: Vec::new(),
        }
    }

    #[test]
    fn round_trips_byte_for_byte() {
        let text = plan().to_yaml();
        assert_eq!(NodePlan::parse(&text).unwrap(), plan());
        assert_eq!(NodePlan::parse(&text).unwrap().to_yaml(), text);
        assert_eq!(plan().min_containerd(), (1, 7));
    }

    #[test]
    fn unreadable_plans_say_why() {
        assert!(matches!(
            NodePlan::parse("[runsc_config]\n").unwrap_err(),
            PlanError::Decode(_) | PlanError::Version { .. }
        ));
        assert!(matches!(
            NodePlan::parse("kind: [").unwrap_err(),
            PlanError::Decode(_)
        ));
        let newer = plan()
            .to_yaml()
            .replace(API_VERSION, "node.runtime-sandbox.gardener.cloud/v2")
            + "somethingNew: 1\n";
        let e = NodePlan::parse(&newer).unwrap_err();
        assert!(matches!(e, PlanError::Version { .. }), "{e}");
        assert!(e.to_string().contains(API_VERSION), "{e}");
        let unknown = plan().to_yaml() + "somethingNew: 1\n";
        let e = NodePlan::parse(&unknown).unwrap_err();
        assert!(e.to_string().contains("somethingNew"), "{e}");
    }

    #[test]
    fn paths_stay_in_their_folders() {
        type Change = fn(&mut NodePlan);
        let cases: [(&str, Change); 9] = [
            ("files[0].path", |p| p.files[0].path = "/etc/passwd".into()),
            ("files[0].path", |p| {
                p.files[0].path = "/etc/containerd/../passwd".into()
            }),
            ("files[0].path", |p| {
                p.files[0].path = "etc/containerd/x".into()
            }),
            ("files[0].path", |p| {
                p.files[0].path = "/etc/containerd".into()
            }),
            ("dropIn", |p| {
                p.drop_in = "/etc/containerd/config.toml".into()
            }),
            ("dropIn", |p| {
                p.drop_in = "/etc/containerd/conf.d/x.conf".into()
            }),
            ("lock", |p| p.lock = "/tmp/x.lock".into()),
            ("binaries.names[0]", |p| {
                p.binaries.names[0] = "../../bin/sh".into()
            }),
            ("handlers[0].name", |p| {
                p.handlers[0].name = "x]\n[evil".into()
            }),
        ];
        for (field, change) in cases {
            let mut p = plan();
            change(&mut p);
            match NodePlan::parse(&p.to_yaml()) {
                Err(PlanError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_versioned_install_may_have_subfolders_and_files_of_its_own() {
        let mut p = plan();
        p.binaries.versioned = Some(Versioned {
            target: "/opt/runtime-sandbox/example".into(),
            version: "v1".into(),
            replaces_binaries: vec!["example".into()],
            replaces_files: vec!["/etc/containerd/example.toml".into()],
        });
        p.binaries.optional = vec!["example-bin/helper".into()];
        p.files.push(PlanFile {
            path: "/opt/runtime-sandbox/example/v1/example.toml".into(),
            content: String::new(),
        });
        NodePlan::parse(&p.to_yaml()).unwrap();
        assert_eq!(p.version(), Some("v1"));
        type Change = fn(&mut NodePlan);
        let cases: [(&str, Change); 5] = [
            ("files[1].path", |p| {
                p.files[1].path = "/opt/runtime-sandbox/example/v2/example.toml".into()
            }),
            ("binaries.optional[0]", |p| {
                p.binaries.optional[0] = "a/b/c".into()
            }),
            ("binaries.optional[0]", |p| {
                p.binaries.optional[0] = "../helper".into()
            }),
            ("binaries.versioned.replacesBinaries[0]", |p| {
                p.binaries.versioned.as_mut().unwrap().replaces_binaries[0] = "../sh".into()
            }),
            ("binaries.versioned.replacesFiles[0]", |p| {
                p.binaries.versioned.as_mut().unwrap().replaces_files[0] = "/etc/passwd".into()
            }),
        ];
        for (field, change) in cases {
            let mut changed = p.clone();
            change(&mut changed);
            match NodePlan::parse(&changed.to_yaml()) {
                Err(PlanError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn containerd_versions_are_read_as_packaged() {
        assert_eq!(major_minor("1.6.20~ds1"), Some((1, 6)));
        assert_eq!(major_minor("v1.7.35"), Some((1, 7)));
        assert_eq!(major_minor("v2.4.2"), Some((2, 4)));
        assert_eq!(major_minor("2.0.0-rc.1"), Some((2, 0)));
        assert_eq!(major_minor("1.7"), Some((1, 7)));
        assert_eq!(major_minor("unknown"), None);
    }
}

/// The annotation in which a node agent reports its last run on its node, next to the ready
/// label: `runtime-sandbox.gardener.cloud/gvisor-ready` gives
/// `runtime-sandbox.gardener.cloud/gvisor-state`. The seed controller reads it for the
/// `EveryNodeReady` condition.
pub fn state_annotation(ready_label: &str) -> String {
    match ready_label.strip_suffix("-ready") {
        Some(stem) => format!("{stem}-state"),
        None => format!("{ready_label}-state"),
    }
}

/// What a node agent reports in [`state_annotation`] (JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    pub ready: bool,
    /// Why not, in one word (e.g. `ContainerdTooOld`, `ContainerdConfigInvalid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The runtime version installed on the node (a versioned install's folder name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// The longest message a [`NodeReport`] carries (annotations are small).
pub const REPORT_MESSAGE_LIMIT: usize = 512;

impl NodeReport {
    pub fn ready() -> Self {
        NodeReport {
            ready: true,
            ..NodeReport::default()
        }
    }

    /// Not ready for `reason`; `message` is cut to [`REPORT_MESSAGE_LIMIT`] bytes at a
    /// character boundary.
    pub fn failed(reason: &str, message: &str) -> Self {
        let mut end = message.len().min(REPORT_MESSAGE_LIMIT);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        NodeReport {
            ready: false,
            reason: Some(reason.to_string()),
            message: Some(message[..end].to_string()),
            version: None,
        }
    }

    /// The same report, naming the installed `version`.
    pub fn with_version(mut self, version: Option<String>) -> Self {
        self.version = version;
        self
    }
}

#[cfg(test)]
mod report_tests {
    use super::*;

    #[test]
    fn state_annotation_sits_next_to_the_ready_label() {
        assert_eq!(
            state_annotation("runtime-sandbox.gardener.cloud/gvisor-ready"),
            "runtime-sandbox.gardener.cloud/gvisor-state"
        );
        assert_eq!(state_annotation("example.io/ok"), "example.io/ok-state");
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let message = "ä".repeat(400);
        let report = NodeReport::failed("X", &message);
        let kept = report.message.unwrap();
        assert!(kept.len() <= REPORT_MESSAGE_LIMIT && message.starts_with(&kept));
        let json = serde_json::to_string(&NodeReport::ready()).unwrap();
        assert_eq!(json, r#"{"ready":true}"#);
    }
}
