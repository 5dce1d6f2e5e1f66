//! What gVisor needs on a node, as a [`NodePlan`]: the `runsc` handler, and gVisor as **one
//! versioned unit** per version, `/opt/runtime-sandbox/gvisor/<version>/` with `runsc`, the
//! shim, runsc's sidecars in `gvisor-bin/` and the shim's `runsc.toml` (whose `binary_name`
//! is that folder's runsc). The handler's `runtime_path` and `ConfigPath` name the folder, so
//! which gVisor a new sandbox gets changes in one step, when containerd loads the handler;
//! runsc looks its sidecars up next to its own real path, so it never meets another
//! release's (docs/gvisor-packaging.md). Sandboxes started earlier keep their version: the
//! shim keeps its options (the runsc path among them) in the sandbox's state, and the agent
//! removes an older folder only once no sandbox uses it.

use crate::node_plan::{
    self, Binaries, Handler, MinContainerd, NodePlan, PlanFile, PlanHead, Versioned,
    payload_version,
};

use super::{GVisorConfig, HANDLER, NODE_READY_LABEL, RUNTIME_TYPE};

/// The containerd shim of the `runsc` handler.
pub const SHIM_RUNTIME_TYPE: &str = "io.containerd.runsc.v1";
/// The shim's file name.
pub const SHIM: &str = "containerd-shim-runsc-v1";
/// Where the versions are installed on the host.
pub const INSTALL_DIR: &str = "/opt/runtime-sandbox/gvisor";
/// The shim's options (runsc's path and flags), in the version's folder.
pub const RUNSC_TOML_NAME: &str = "runsc.toml";
/// Where an unversioned install (the Go extension's, and ours before versioned installs)
/// kept the shim's options; removed once no sandbox may use it.
pub const LEGACY_RUNSC_TOML: &str = "/etc/containerd/runsc.toml";
/// Our drop-in, used when `config.toml` imports `conf.d`.
pub const DROP_IN: &str = "/etc/containerd/conf.d/runtime-sandbox-gvisor.toml";
/// The node-agent image's folder with gVisor's binaries and their checksums.
pub const IMAGE_DIR: &str = "/usr/local/lib/runtime-sandbox/gvisor";
/// gVisor's binaries every version has.
pub const BINARIES: [&str; 2] = ["runsc", SHIM];
/// runsc's sidecar folder, next to runsc (`runsc/gvisorbinaries`).
pub const SIDECAR_DIR: &str = "gvisor-bin";
/// runsc's sidecars (`gvisorbinaries.All`): installed when the image carries them. At the
/// pinned version runsc falls back to itself without them (`--sidecar-usage-policy=DEFAULT`);
/// none can be built from the Go module (docs/gvisor-packaging.md).
pub const SIDECARS: [&str; 4] = [
    "checkpointgofer",
    "gvisor-sentry-prewarmer",
    "gvisor_sentry",
    "runsc-metric-server",
];
/// The oldest containerd gVisor's current shim works with: 1.6 cannot read the shim's
/// bootstrap answer (proven by the scenario tests with Debian's containerd 1.6).
pub const MIN_CONTAINERD: &str = "1.7";

/// The gVisor version an image carries, as a folder name: the part of its tag after
/// `gvisor-` (our images are tagged `<release>-gvisor-<gVisor version>`), otherwise the whole
/// tag or digest as for any payload ([`payload_version`]).
pub fn gvisor_version(image: &str) -> String {
    let tag = payload_version(image);
    match tag.rsplit_once("gvisor-") {
        Some((_, version)) if !version.is_empty() && version != "." && version != ".." => {
            version.to_string()
        }
        _ => tag,
    }
}

/// The version folder of a pin of gVisor's Go module: a pseudo-version
/// `v0.0.0-<date>-<commit>` gives `<date>-<commit>` (as the image tag carries it).
pub fn pin_version(pin: &str) -> &str {
    pin.strip_prefix("v0.0.0-").unwrap_or(pin)
}

/// The folder of `version`.
pub fn version_dir(version: &str) -> String {
    format!("{INSTALL_DIR}/{version}")
}

/// The `runsc` handler of the version in `dir`.
pub fn handler(dir: &str) -> Handler {
    Handler {
        name: HANDLER.into(),
        runtime_type: SHIM_RUNTIME_TYPE.into(),
        runtime_path: Some(format!("{dir}/{SHIM}")),
        options: [
            (
                "TypeUrl".to_string(),
                format!("{SHIM_RUNTIME_TYPE}.options"),
            ),
            ("ConfigPath".to_string(), format!("{dir}/{RUNSC_TOML_NAME}")),
        ]
        .into(),
        ..Handler::default()
    }
}

/// The shim's options for the version in `dir`: its runsc, and `config`'s flags.
pub fn runsc_toml(config: &GVisorConfig, dir: &str) -> String {
    // `binary_name` first: plain keys come before the `[runsc_config]` table.
    let mut doc = toml_edit::DocumentMut::new();
    doc.insert("binary_name", toml_edit::value(format!("{dir}/runsc")));
    let mut flags = config.runsc_config();
    // Right after it, without a blank line (the bytes nodes already have: no needless rewrite).
    flags.decor_mut().set_prefix("");
    doc.insert("runsc_config", toml_edit::Item::Table(flags));
    doc.to_string()
}

/// gVisor of `image` (whose tag names the version) on a node, with `config`'s runsc flags.
pub fn node_plan(config: &GVisorConfig, image: &str) -> NodePlan {
    let versioned = Versioned {
        target: INSTALL_DIR.into(),
        version: gvisor_version(image),
        replaces_binaries: BINARIES.iter().map(|b| b.to_string()).collect(),
        replaces_files: vec![LEGACY_RUNSC_TOML.into()],
    };
    let dir = versioned.dir();
    let head = PlanHead {
        runtime: RUNTIME_TYPE,
        ready_label: NODE_READY_LABEL,
        drop_in: DROP_IN,
        min_containerd: MinContainerd {
            version: MIN_CONTAINERD.into(),
            reason: "gVisor's shim answers with the shim bootstrap protocol version 2".into(),
        },
    };
    let runsc_toml = PlanFile {
        path: format!("{dir}/{RUNSC_TOML_NAME}"),
        content: runsc_toml(config, &dir),
    };
    let binaries = Binaries {
        source: IMAGE_DIR.into(),
        checksums: node_plan::CHECKSUMS.into(),
        names: BINARIES.iter().map(|b| b.to_string()).collect(),
        optional: SIDECARS
            .iter()
            .map(|s| format!("{SIDECAR_DIR}/{s}"))
            .collect(),
        versioned: Some(versioned),
        pinned: Default::default(),
    };
    NodePlan::new(head, vec![handler(&dir)], vec![runsc_toml], binaries)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGE: &str = "r.io/node-agent:v0.2.0-gvisor-20260905035102-160fafc42237";

    #[test]
    fn the_plan_is_valid_and_the_handler_is_the_runtime_class_handler() {
        let plan = node_plan(&GVisorConfig::default(), IMAGE);
        plan.validate().unwrap();
        assert_eq!(plan.handlers[0].name, super::super::HANDLER);
        assert_eq!(plan.min_containerd(), (1, 7));
        assert_eq!(plan.version(), Some("20260905035102-160fafc42237"));
    }

    #[test]
    fn one_folder_per_version_holds_everything_a_sandbox_of_it_runs() {
        let plan = node_plan(&GVisorConfig::default(), IMAGE);
        let dir = "/opt/runtime-sandbox/gvisor/20260905035102-160fafc42237";
        let handler = &plan.handlers[0];
        assert_eq!(
            handler.runtime_path.as_deref(),
            Some(format!("{dir}/containerd-shim-runsc-v1").as_str())
        );
        assert_eq!(handler.options["ConfigPath"], format!("{dir}/runsc.toml"));
        assert_eq!(plan.files[0].path, format!("{dir}/runsc.toml"));
        assert_eq!(
            plan.files[0].content,
            format!("binary_name = \"{dir}/runsc\"\n[runsc_config]\n")
        );
        assert!(
            plan.binaries
                .optional
                .iter()
                .all(|s| s.starts_with("gvisor-bin/"))
        );
    }

    #[test]
    fn the_version_comes_from_the_image_tag() {
        assert_eq!(gvisor_version(IMAGE), "20260905035102-160fafc42237");
        assert_eq!(gvisor_version("r.io/node-agent:v9"), "v9");
        assert_eq!(
            gvisor_version("r.io/node-agent@sha256:0123456789abcdef0123"),
            "0123456789ab"
        );
        assert_eq!(gvisor_version("r.io/a:x-gvisor-.."), "x-gvisor-..");
        assert_eq!(gvisor_version("r.io/a:gvisor-$(x)"), "__x_");
    }
}
