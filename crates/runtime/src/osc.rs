//! Installation mode `osc`: a runtime delivered through the pool's OperatingSystemConfig, so
//! that gardener-node-agent puts it on the node before the kubelet starts and no pod with
//! host access is needed (docs/operations.md, "Installation modes").
//!
//! The node plan stays the one description of what a node needs; this module is its second
//! consumer next to the node agent:
//! - each handler becomes a `criConfig.containerd.plugins` entry (`op: add`) at its
//!   containerd config version 2 path, which gardener-node-agent translates for version 3;
//! - each binary becomes a file with `content.imageRef` (our node image, the binary's path in
//!   it) in the plan's versioned folder, so an upgrade is a new folder and one restart;
//! - each of the plan's files becomes an inline file.
//!
//! gardener-node-agent patches `config.toml` and never drops a table it was not told about,
//! so a runtime leaves a pool through `op: remove` entries ([`removal`]), emitted while the
//! pool's ContainerRuntime still exists (its deletion waits until no node reports the
//! handler). Files are different: gardener-node-agent deletes a file once no OSC lists it.
//!
//! Every function is pure: the webhook reads the OSC, the shoot and the ContainerRuntimes,
//! calls [`apply`], and answers with the difference.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::node_plan::{Handler, NodePlan};

/// containerd's CRI plugin in config version 2; gardener-node-agent translates the path to
/// `io.containerd.cri.v1.runtime` for version 3 and 4.
pub const CRI_PLUGIN_V2: &str = "io.containerd.grpc.v1.cri";
/// Permissions of a binary written from the image.
const BINARY_PERMISSIONS: u32 = 0o755;
/// Permissions of a configuration file.
const FILE_PERMISSIONS: u32 = 0o644;

/// How the runtime reaches the nodes, chosen by the operator (chart value
/// `installation.mode`, controller flag `--installation-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstallationMode {
    /// The installer DaemonSet's node agent (the default).
    #[default]
    DaemonSet,
    /// The pool's OperatingSystemConfig, applied by gardener-node-agent.
    Osc,
}

impl InstallationMode {
    /// Its name as flags and chart values spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            InstallationMode::DaemonSet => "daemonset",
            InstallationMode::Osc => "osc",
        }
    }
}

impl fmt::Display for InstallationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for InstallationMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "daemonset" => Ok(InstallationMode::DaemonSet),
            "osc" => Ok(InstallationMode::Osc),
            other => Err(format!(
                "installation mode {other:?} is not one of \"daemonset\", \"osc\""
            )),
        }
    }
}

/// A plan that cannot be delivered through an OSC.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OscError {
    #[error(
        "the {runtime} node plan is not versioned; an OSC install needs a versioned folder for its binaries"
    )]
    NotVersioned { runtime: String },
}

/// One runtime's part of a pool's OSC: what it adds (or removes), and what it owns, so that
/// a re-render replaces its earlier entries and leaves everybody else's alone.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuntimeEntries {
    /// The runtime, for messages.
    pub runtime: String,
    /// `criConfig.containerd.plugins` entries.
    pub plugins: Vec<Value>,
    /// `files` entries.
    pub files: Vec<Value>,
    /// Handler names whose plugin entries are the runtime's (every handler any configuration
    /// of it may have: a changed configuration drops the others).
    pub owned_handlers: BTreeSet<String>,
    /// Folder whose files are the runtime's (its versioned target, with a trailing `/`).
    pub owned_folder: String,
    /// Further files that are the runtime's (the node agent's drop-in).
    pub owned_files: Vec<String>,
    /// Handlers left out of the OSC, with why (e.g. Firecracker, whose devmapper snapshotter
    /// the OSC cannot make conditional on the pool's existence).
    pub skipped: Vec<(String, String)>,
}

/// The containerd config version 2 path of a handler's table below `plugins`.
pub fn handler_path(name: &str) -> Vec<String> {
    [CRI_PLUGIN_V2, "containerd", "runtimes", name]
        .map(String::from)
        .to_vec()
}

/// A handler as an `op: add` plugin entry: the same keys the node agent writes.
pub fn plugin_add(handler: &Handler) -> Value {
    let mut values = serde_json::Map::new();
    values.insert("runtime_type".into(), json!(handler.runtime_type));
    if let Some(path) = &handler.runtime_path {
        values.insert("runtime_path".into(), json!(path));
    }
    if handler.privileged_without_host_devices {
        values.insert("privileged_without_host_devices".into(), json!(true));
    }
    if !handler.pod_annotations.is_empty() {
        values.insert("pod_annotations".into(), json!(handler.pod_annotations));
    }
    if !handler.container_annotations.is_empty() {
        values.insert(
            "container_annotations".into(),
            json!(handler.container_annotations),
        );
    }
    if let Some(snapshotter) = &handler.snapshotter {
        values.insert("snapshotter".into(), json!(snapshotter));
    }
    values.insert("options".into(), json!(handler.options));
    json!({"op": "add", "path": handler_path(&handler.name), "values": values})
}

/// A handler's `op: remove` plugin entry.
pub fn plugin_remove(name: &str) -> Value {
    json!({"op": "remove", "path": handler_path(name)})
}

/// What `plan` is as OSC entries, with its binaries read from `image` (the node image's
/// reference as the image vector gives it; a digest makes the files content-addressed).
/// `everything` is the runtime's plan that names every handler (its cleanup plan): the
/// entries own all of them.
pub fn install(
    plan: &NodePlan,
    everything: &NodePlan,
    image: &str,
) -> Result<RuntimeEntries, OscError> {
    let versioned = plan
        .binaries
        .versioned
        .as_ref()
        .ok_or_else(|| OscError::NotVersioned {
            runtime: plan.runtime.clone(),
        })?;
    let dir = versioned.dir();
    let mut entries = owned(plan.runtime.as_str(), everything, &versioned.target);
    for handler in &plan.handlers {
        if handler.written_only_if.is_empty() {
            entries.plugins.push(plugin_add(handler));
        } else {
            let needs: Vec<&str> = handler
                .written_only_if
                .iter()
                .map(|r| r.purpose.as_str())
                .collect();
            entries.skipped.push((
                handler.name.clone(),
                format!(
                    "needs {} before containerd may load it, which an OSC cannot wait for; use installation mode daemonset",
                    needs.join(", ")
                ),
            ));
        }
    }
    // Only what the image holds: a file the image lacks fails gardener-node-agent's whole
    // reconcile. Optional binaries count when the image vector recorded them.
    let recorded: BTreeSet<&str> = plan
        .binaries
        .pinned
        .values()
        .flat_map(|names| names.keys().map(String::as_str))
        .collect();
    let names = plan.binaries.names.iter().chain(
        plan.binaries
            .optional
            .iter()
            .filter(|n| recorded.contains(n.as_str())),
    );
    for name in names {
        entries.files.push(json!({
            "path": format!("{dir}/{name}"),
            "permissions": BINARY_PERMISSIONS,
            "content": {"imageRef": {
                "image": image,
                "filePathInImage": format!("{}/{name}", plan.binaries.source),
            }},
        }));
    }
    for file in &plan.files {
        entries.files.push(json!({
            "path": file.path,
            "permissions": FILE_PERMISSIONS,
            "content": {"inline": {"encoding": "", "data": file.content}},
        }));
    }
    // The node agent's drop-in, emptied: after a switch from installation mode daemonset it
    // would still define the handler (containerd 2.x merges imports over config.toml, so an
    // old release's drop-in would even win over the OSC's entry). A comment only: valid for
    // every containerd, and it replaces no plugin table on 1.x.
    entries.files.push(json!({
        "path": plan.drop_in,
        "permissions": FILE_PERMISSIONS,
        "content": {"inline": {"encoding": "", "data": DROP_IN_PLACEHOLDER}},
    }));
    entries.owned_files.push(plan.drop_in.clone());
    Ok(entries)
}

/// What the node agent's drop-in holds in installation mode `osc`.
pub const DROP_IN_PLACEHOLDER: &str = "# gardener-extension-runtime-sandbox: installation mode osc, the handlers are in config.toml\n";

impl RuntimeEntries {
    /// The version folder the entries' binaries go to, if any.
    fn version_dir(files: &[Value], owned_folder: &str) -> BTreeSet<String> {
        files
            .iter()
            .filter_map(|f| f["path"].as_str())
            .filter_map(|p| p.strip_prefix(owned_folder))
            .filter_map(|rest| rest.split_once('/').map(|(version, _)| version.to_string()))
            .collect()
    }

    /// Keeps the previous release's files from `old` (the OSC as stored before this write):
    /// gardener-node-agent deletes files no OSC lists, and a sandbox started by the previous
    /// release keeps calling that release's `runsc` (its shim runs from the old folder) until
    /// it ends, so the folder must outlive an upgrade. Exactly one previous release is kept:
    /// the one `old` installed, or, when `old` already had the current release, the one it
    /// kept. A pod that lives through two upgrades loses its release's files
    /// (docs/operations.md).
    pub fn retain_previous(&mut self, old: &Value) {
        if self.plugins.iter().all(|p| p["op"] != "add") {
            return;
        }
        let old_files: Vec<Value> = old
            .pointer("/spec/files")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|f| {
                f["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with(&self.owned_folder))
            })
            .cloned()
            .collect();
        let current = Self::version_dir(&self.files, &self.owned_folder);
        let previous: Vec<String> = Self::version_dir(&old_files, &self.owned_folder)
            .into_iter()
            .filter(|v| !current.contains(v))
            .collect();
        // Two earlier releases in `old` can only mean an upgrade kept one and installed the
        // other: keep the one the old handler entry ran.
        let keep = match previous.as_slice() {
            [] => return,
            [one] => one.clone(),
            several => {
                let running = old
                    .pointer("/spec/criConfig/containerd/plugins")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|p| p["op"] == "add")
                    .filter_map(|p| p["values"]["runtime_path"].as_str())
                    .find_map(|path| {
                        several
                            .iter()
                            .find(|v| path.starts_with(&format!("{}{v}/", self.owned_folder)))
                    });
                match running {
                    Some(v) => v.clone(),
                    None => return,
                }
            }
        };
        let prefix = format!("{}{keep}/", self.owned_folder);
        self.files.extend(
            old_files
                .into_iter()
                .filter(|f| f["path"].as_str().is_some_and(|p| p.starts_with(&prefix))),
        );
    }
}

/// `op: remove` entries for every handler of `everything` (the runtime's plan that names
/// them all), for a pool that no longer offers the runtime.
pub fn removal(everything: &NodePlan) -> Result<RuntimeEntries, OscError> {
    let versioned =
        everything
            .binaries
            .versioned
            .as_ref()
            .ok_or_else(|| OscError::NotVersioned {
                runtime: everything.runtime.clone(),
            })?;
    let mut entries = owned(everything.runtime.as_str(), everything, &versioned.target);
    entries.plugins = everything
        .handlers
        .iter()
        .map(|h| plugin_remove(&h.name))
        .collect();
    Ok(entries)
}

fn owned(runtime: &str, everything: &NodePlan, target: &str) -> RuntimeEntries {
    RuntimeEntries {
        runtime: runtime.to_string(),
        owned_handlers: everything.handlers.iter().map(|h| h.name.clone()).collect(),
        owned_folder: format!("{}/", target.trim_end_matches('/')),
        owned_files: vec![everything.drop_in.clone()],
        ..RuntimeEntries::default()
    }
}

/// Installation mode `daemonset` on a pool that was in mode `osc`: the node agent installs
/// the same release into the same folder, but gardener-node-agent deletes every file no OSC
/// lists any more, its binaries and `runsc.toml` among them (running sandboxes would lose
/// their release). So the files the stored OSC (`old`) listed in the runtime's folder stay
/// listed, with the same content the agent writes; the plugin entries and the drop-in
/// placeholder go (the agent writes its drop-in there). Nothing when `old` has none.
pub fn keep_after_switch(mut owned: RuntimeEntries, old: &Value) -> RuntimeEntries {
    owned.plugins.clear();
    owned.files = old
        .pointer("/spec/files")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|f| {
            f["path"]
                .as_str()
                .is_some_and(|p| p.starts_with(&owned.owned_folder))
        })
        .cloned()
        .collect();
    owned
}

/// Why a handler counts as not ready in mode `osc`, in one word.
pub const NOT_REPORTED: &str = "HandlerNotReported";
/// Why a handler the OSC cannot carry is not ready.
pub const NOT_IN_OSC: &str = "NotInstalledByOsc";
/// Why a handler whose host requirements nobody checked is not ready.
pub const HOST_NOT_VERIFIED: &str = "HostNotVerified";

/// The ready labels of a node in installation mode `osc`, from the handlers its kubelet
/// reports (`status.runtimeHandlers`: the handlers containerd has loaded, as CRI's status
/// lists them), each with the report its state annotation carries. A handler's own label is
/// on when the kubelet reports it; the plan's label when it reports every handler the OSC
/// carries. The label keys and the reports are the node agent's, so the ready label and the
/// `EveryNodeReady` condition mean the same in both modes. `version` is the release the OSC
/// installs.
pub fn node_readiness(
    plan: &NodePlan,
    reported: &BTreeSet<String>,
    version: Option<&str>,
) -> Vec<(String, crate::node_plan::NodeReport)> {
    use crate::node_plan::NodeReport;
    let missing = |h: &Handler| -> Option<NodeReport> {
        if !h.written_only_if.is_empty() {
            return Some(NodeReport::failed(
                NOT_IN_OSC,
                &format!(
                    "handler {} is not installed in installation mode osc (it needs a host check first); use mode daemonset",
                    h.name
                ),
            ));
        }
        // The node agent checks a handler's host requirements (KVM, vhost-vsock, ...) before
        // its label goes on; in this mode nothing on the node does, and a label must mean the
        // same in both modes: it stays off.
        if !h.requires.is_empty() {
            let needs: Vec<&str> = h.requires.iter().map(|r| r.purpose.as_str()).collect();
            return Some(NodeReport::failed(
                HOST_NOT_VERIFIED,
                &format!(
                    "handler {} needs {} on the host, which nothing checks in installation mode osc; use mode daemonset for it",
                    h.name,
                    needs.join(", ")
                ),
            ));
        }
        (!reported.contains(&h.name)).then(|| {
            NodeReport::failed(
                NOT_REPORTED,
                &format!(
                    "the kubelet does not report runtime handler {} (status.runtimeHandlers): gardener-node-agent has not applied the OperatingSystemConfig yet, or containerd is older than 2.0 and reports no handlers",
                    h.name
                ),
            )
        })
    };
    let with_version = |mut r: NodeReport| {
        r.version = version.map(str::to_string);
        r
    };
    let mut out = Vec::new();
    let carried: Vec<&Handler> = plan
        .handlers
        .iter()
        .filter(|h| h.written_only_if.is_empty())
        .collect();
    let first_missing = carried.iter().find_map(|h| missing(h));
    out.push((
        plan.ready_label.clone(),
        with_version(first_missing.unwrap_or_else(NodeReport::ready)),
    ));
    for h in &plan.handlers {
        if let Some(label) = &h.ready_label {
            out.push((
                label.clone(),
                with_version(missing(h).unwrap_or_else(NodeReport::ready)),
            ));
        }
    }
    out
}

/// Why an OSC is left alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Not containerd (or no `criConfig`): nothing of ours can run there.
    NotContainerd,
    /// No `criConfig.containerd` (a gardenlet older than v1.103): no plugin entries possible.
    NoContainerdSection,
    /// Already as wanted.
    UpToDate,
}

/// Puts `runtimes`' entries into `osc` (an OperatingSystemConfig as JSON): each runtime's
/// earlier entries (plugin entries of its handlers, files in its folder) are replaced by the
/// current ones, in the order given, after everybody else's. Same input, same output.
pub fn apply(osc: &mut Value, runtimes: &[RuntimeEntries]) -> Result<(), Skip> {
    if osc.pointer("/spec/criConfig/name").and_then(Value::as_str) != Some("containerd") {
        return Err(Skip::NotContainerd);
    }
    // gardenlet fills `criConfig.containerd` (with the sandbox image it requires) for every
    // containerd pool since Gardener v1.103, the release with plugin entries; we cannot
    // invent the sandbox image.
    if !osc
        .pointer("/spec/criConfig/containerd")
        .is_some_and(Value::is_object)
    {
        return Err(Skip::NoContainerdSection);
    }
    let owns_plugin = |entry: &Value| {
        let path: Vec<&str> = entry["path"]
            .as_array()
            .map(|p| p.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        runtimes.iter().any(|r| {
            r.owned_handlers.iter().any(|h| {
                path == handler_path(h)
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
            })
        })
    };
    let owns_file = |entry: &Value| {
        let path = entry["path"].as_str().unwrap_or_default();
        runtimes.iter().any(|r| {
            path.starts_with(&r.owned_folder)
                || r.owned_files.iter().any(|f| f == path)
                || r.files.iter().any(|f| f["path"].as_str() == Some(path))
        })
    };
    let before = osc.clone();
    // Everybody else's entries at `pointer`, then ours.
    let merged = |pointer: &str,
                  owned: &dyn Fn(&Value) -> bool,
                  ours: &dyn Fn(&RuntimeEntries) -> &[Value]| {
        osc.pointer(pointer)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|e| !owned(e))
            .cloned()
            .chain(runtimes.iter().flat_map(|r| ours(r).iter().cloned()))
            .collect::<Vec<Value>>()
    };
    let plugins = merged("/spec/criConfig/containerd/plugins", &owns_plugin, &|r| {
        &r.plugins
    });
    let files = merged("/spec/files", &owns_file, &|r| &r.files);
    let spec = &mut osc["spec"];
    let containerd = &mut spec["criConfig"]["containerd"];
    if plugins.is_empty() {
        if let Some(map) = containerd.as_object_mut() {
            map.remove("plugins");
        }
    } else {
        containerd["plugins"] = Value::Array(plugins);
    }
    if files.is_empty() {
        if let Some(map) = spec.as_object_mut() {
            map.remove("files");
        }
    } else {
        spec["files"] = Value::Array(files);
    }
    if *osc == before {
        Err(Skip::UpToDate)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuator::Runtime;
    use crate::actuator::RuntimeConfig as _;
    use crate::gvisor::GVisor;

    const IMAGE: &str = "registry.example/node-agent:v1.0.0-gvisor-20260905-160fafc42237";

    fn plans(flags: Value) -> (NodePlan, NodePlan) {
        let config =
            crate::gvisor::config::parse(Some(&json!({"apiVersion": "gvisor.os.extensions.gardener.cloud/v1alpha1", "kind": "GVisorConfiguration", "configFlags": flags}))).unwrap();
        let plan = config.node_plan(IMAGE);
        let everything = GVisor.cleanup_config().node_plan(IMAGE);
        (plan, everything)
    }

    fn osc() -> Value {
        json!({"spec": {"purpose": "reconcile",
            "criConfig": {"name": "containerd", "containerd": {"sandboxImage": "pause", "plugins": [
                {"path": ["io.containerd.grpc.v1.cri"], "values": {"x": "1"}}]}},
            "files": [{"path": "/etc/other", "content": {"inline": {"data": "o"}}}]}})
    }

    #[test]
    fn a_plan_becomes_plugin_entries_image_files_and_inline_files() {
        let (plan, everything) = plans(json!({"net-raw": "true"}));
        let entries = install(&plan, &everything, IMAGE).unwrap();
        assert_eq!(entries.plugins.len(), 1);
        let runsc = &entries.plugins[0];
        assert_eq!(runsc["op"], "add");
        assert_eq!(
            runsc["path"],
            json!([
                "io.containerd.grpc.v1.cri",
                "containerd",
                "runtimes",
                "runsc"
            ])
        );
        assert_eq!(runsc["values"]["runtime_type"], "io.containerd.runsc.v1");
        let dir = plan.binaries.versioned.as_ref().unwrap().dir();
        assert_eq!(
            runsc["values"]["options"]["ConfigPath"],
            format!("{dir}/runsc.toml")
        );
        let paths: Vec<&str> = entries
            .files
            .iter()
            .map(|f| f["path"].as_str().unwrap())
            .collect();
        assert_eq!(
            paths,
            [
                format!("{dir}/runsc"),
                format!("{dir}/containerd-shim-runsc-v1"),
                format!("{dir}/runsc.toml"),
                plan.drop_in.clone(),
            ]
        );
        assert_eq!(
            entries.files[3]["content"]["inline"]["data"],
            DROP_IN_PLACEHOLDER
        );
        assert_eq!(entries.files[0]["content"]["imageRef"]["image"], IMAGE);
        assert_eq!(
            entries.files[0]["content"]["imageRef"]["filePathInImage"],
            format!("{}/runsc", plan.binaries.source)
        );
        assert_eq!(entries.files[0]["permissions"], 0o755);
        assert!(
            entries.files[2]["content"]["inline"]["data"]
                .as_str()
                .unwrap()
                .contains("net-raw = \"true\"")
        );
    }

    #[test]
    fn optional_binaries_are_listed_only_when_the_image_vector_recorded_them() {
        let (mut plan, everything) = plans(json!({}));
        let sidecar = plan.binaries.optional[0].clone();
        plan.binaries.pinned.insert(
            "amd64".into(),
            [
                ("runsc".to_string(), "00".repeat(32)),
                (sidecar.clone(), "11".repeat(32)),
            ]
            .into_iter()
            .collect(),
        );
        let entries = install(&plan, &everything, IMAGE).unwrap();
        assert!(
            entries
                .files
                .iter()
                .any(|f| f["path"].as_str().unwrap().ends_with(&sidecar))
        );
        assert_eq!(entries.files.len(), 5);
    }

    #[test]
    fn apply_is_idempotent_keeps_everybody_else_and_replaces_its_earlier_entries() {
        let (plan, everything) = plans(json!({"net-raw": "true"}));
        let mut o = osc();
        let entries = install(&plan, &everything, IMAGE).unwrap();
        apply(&mut o, std::slice::from_ref(&entries)).unwrap();
        let once = o.clone();
        assert_eq!(
            apply(&mut o, std::slice::from_ref(&entries)),
            Err(Skip::UpToDate)
        );
        assert_eq!(o, once);
        assert_eq!(
            o["spec"]["criConfig"]["containerd"]["plugins"][0]["values"]["x"],
            "1"
        );
        assert_eq!(o["spec"]["files"][0]["path"], "/etc/other");
        assert_eq!(
            o["spec"]["criConfig"]["containerd"]["sandboxImage"],
            "pause"
        );

        // A new version (an upgrade) replaces the old folder's files and the entry.
        let next = "registry.example/node-agent:v1.0.1-gvisor-20261001-aaaaaaaaaaaa";
        let config = crate::gvisor::config::parse(None).unwrap();
        let upgraded = install(&config.node_plan(next), &everything, next).unwrap();
        apply(&mut o, std::slice::from_ref(&upgraded)).unwrap();
        let files = o["spec"]["files"].as_array().unwrap();
        assert_eq!(files.len(), 5, "{files:#?}");
        assert!(files[1..4].iter().all(|f| {
            f["path"]
                .as_str()
                .unwrap()
                .contains("/20261001-aaaaaaaaaaaa/")
        }));
        assert_eq!(
            o["spec"]["criConfig"]["containerd"]["plugins"]
                .as_array()
                .unwrap()
                .len(),
            2
        );

        // Removal: the handler's remove entry, no file of ours.
        apply(&mut o, &[removal(&everything).unwrap()]).unwrap();
        let plugins = o["spec"]["criConfig"]["containerd"]["plugins"]
            .as_array()
            .unwrap();
        assert_eq!(plugins.len(), 2);
        assert_eq!(plugins[1], plugin_remove("runsc"));
        assert_eq!(o["spec"]["files"].as_array().unwrap().len(), 1);

        // And nothing at all once the runtime is gone: gardenlet's OSC as it was.
        apply(
            &mut o,
            &[RuntimeEntries {
                plugins: vec![],
                ..removal(&everything).unwrap()
            }],
        )
        .unwrap();
        assert_eq!(o, osc());
    }

    #[test]
    fn an_upgrade_keeps_exactly_the_previous_release_s_files() {
        let (_, everything) = plans(json!({}));
        let config = crate::gvisor::config::parse(None).unwrap();
        let release = |v: &str| format!("registry.example/node-agent:v1-gvisor-{v}");
        let entries =
            |v: &str| install(&config.node_plan(&release(v)), &everything, &release(v)).unwrap();
        let dirs = |o: &Value| -> BTreeSet<String> {
            o["spec"]["files"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|f| {
                    f["path"]
                        .as_str()?
                        .strip_prefix("/opt/runtime-sandbox/gvisor/")
                })
                .map(|p| p.split_once('/').unwrap().0.to_string())
                .collect()
        };
        // Each write starts from gardenlet's OSC, and `old` is what we made of the last one.
        let write = |old: &Value, e: RuntimeEntries| {
            let mut e = e;
            e.retain_previous(old);
            let mut o = osc();
            apply(&mut o, &[e]).unwrap();
            o
        };
        let first = write(&osc(), entries("a"));
        assert_eq!(dirs(&first), BTreeSet::from(["a".to_string()]));
        let same = write(&first, entries("a"));
        assert_eq!(same, first, "no release to keep without an upgrade");
        let second = write(&first, entries("b"));
        assert_eq!(
            dirs(&second),
            BTreeSet::from(["a".to_string(), "b".to_string()])
        );
        // Kept across writes without an upgrade, the handler on the new release.
        let again = write(&second, entries("b"));
        assert_eq!(again, second);
        let plugin = &again["spec"]["criConfig"]["containerd"]["plugins"][1];
        assert!(
            plugin["values"]["runtime_path"]
                .as_str()
                .unwrap()
                .contains("/b/")
        );
        // The next upgrade drops the oldest.
        let third = write(&again, entries("c"));
        assert_eq!(
            dirs(&third),
            BTreeSet::from(["b".to_string(), "c".to_string()])
        );
        // A removal keeps nothing.
        let mut removed = removal(&everything).unwrap();
        removed.retain_previous(&third);
        assert!(removed.files.is_empty());
    }

    #[test]
    fn a_node_is_ready_when_its_kubelet_reports_every_handler_the_osc_carries() {
        let (plan, _) = plans(json!({}));
        let none = node_readiness(&plan, &BTreeSet::new(), Some("v1"));
        assert_eq!(none.len(), 1);
        assert_eq!(none[0].0, plan.ready_label);
        assert!(!none[0].1.ready);
        assert_eq!(none[0].1.reason.as_deref(), Some(NOT_REPORTED));
        assert!(none[0].1.message.as_deref().unwrap().contains("runsc"));
        let both = BTreeSet::from(["runc".to_string(), "runsc".to_string()]);
        let ready = node_readiness(&plan, &both, Some("v1"));
        assert!(ready[0].1.ready);
        assert_eq!(ready[0].1.version.as_deref(), Some("v1"));

        // Kata: a label per hypervisor; Firecracker is not carried by an OSC.
        let kata = crate::kata::Kata.cleanup_config().node_plan(IMAGE);
        let names: BTreeSet<String> = kata.handlers.iter().map(|h| h.name.clone()).collect();
        let states = node_readiness(&kata, &names, None);
        assert_eq!(
            states.len(),
            1 + kata
                .handlers
                .iter()
                .filter(|h| h.ready_label.is_some())
                .count()
        );
        for (label, report) in &states[1..] {
            let handler = kata
                .handlers
                .iter()
                .find(|h| h.ready_label.as_ref() == Some(label))
                .unwrap();
            assert!(!report.ready, "{label}: {report:?}");
            let expected = if handler.written_only_if.is_empty() {
                HOST_NOT_VERIFIED
            } else {
                NOT_IN_OSC
            };
            assert_eq!(report.reason.as_deref(), Some(expected), "{label}");
        }
        assert!(
            !states[0].1.ready,
            "Kata's hypervisors need host checks nobody makes in this mode"
        );
    }

    #[test]
    fn back_in_daemonset_mode_the_osc_keeps_listing_the_release_s_files_only() {
        let (plan, everything) = plans(json!({}));
        let mut o = osc();
        apply(&mut o, &[install(&plan, &everything, IMAGE).unwrap()]).unwrap();
        let stored = o.clone();
        // gardenlet's next OSC, in daemonset mode.
        let mut next = osc();
        let kept = keep_after_switch(removal(&everything).unwrap(), &stored);
        apply(&mut next, &[kept]).unwrap();
        let paths: Vec<&str> = next["spec"]["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap())
            .collect();
        let dir = plan.binaries.versioned.as_ref().unwrap().dir();
        assert_eq!(
            paths,
            [
                "/etc/other".to_string(),
                format!("{dir}/runsc"),
                format!("{dir}/containerd-shim-runsc-v1"),
                format!("{dir}/runsc.toml")
            ]
        );
        assert_eq!(
            next["spec"]["criConfig"]["containerd"]["plugins"]
                .as_array()
                .unwrap()
                .len(),
            1,
            "no plugin entry of ours"
        );
        // A pool that never was in osc mode: nothing.
        let mut plain = osc();
        let kept = keep_after_switch(removal(&everything).unwrap(), &osc());
        assert_eq!(apply(&mut plain, &[kept]), Err(Skip::UpToDate));
    }

    #[test]
    fn only_containerd_oscs_are_touched() {
        let (plan, everything) = plans(json!({}));
        let entries = install(&plan, &everything, IMAGE).unwrap();
        let mut o = json!({"spec": {"criConfig": {"name": "cri-o"}}});
        assert_eq!(
            apply(&mut o, std::slice::from_ref(&entries)),
            Err(Skip::NotContainerd)
        );
        let mut old_gardenlet = json!({"spec": {"criConfig": {"name": "containerd"}}});
        assert_eq!(
            apply(&mut old_gardenlet, std::slice::from_ref(&entries)),
            Err(Skip::NoContainerdSection)
        );
        let mut bare = json!({"spec": {"criConfig": {"name": "containerd", "containerd": {"sandboxImage": "p"}}}});
        apply(&mut bare, &[entries]).unwrap();
        assert_eq!(
            bare["spec"]["criConfig"]["containerd"]["plugins"][0]["op"],
            "add"
        );
    }

    #[test]
    fn modes_parse_and_print_as_operators_write_them() {
        for mode in [InstallationMode::DaemonSet, InstallationMode::Osc] {
            assert_eq!(mode.as_str().parse::<InstallationMode>(), Ok(mode));
        }
        assert!(
            "DaemonSet"
                .parse::<InstallationMode>()
                .unwrap_err()
                .contains("\"osc\"")
        );
        assert_eq!(InstallationMode::default(), InstallationMode::DaemonSet);
    }
}
