//! What gVisor needs on a node, as a [`NodePlan`]: the `runsc` handler, `runsc.toml`, the
//! binaries from the node-agent image, and the oldest containerd its shim works with.

use crate::node_plan::{self, Binaries, Handler, MinContainerd, NodePlan, PlanFile};

use super::{GVisorConfig, HANDLER, NODE_READY_LABEL, RUNTIME_TYPE};

/// The containerd shim of the `runsc` handler.
pub const SHIM_RUNTIME_TYPE: &str = "io.containerd.runsc.v1";
/// runsc's flags for containerd-shim-runsc-v1.
pub const RUNSC_TOML: &str = "/etc/containerd/runsc.toml";
/// Our drop-in, used when `config.toml` imports `conf.d`.
pub const DROP_IN: &str = "/etc/containerd/conf.d/runtime-sandbox-gvisor.toml";
/// The host lock of gVisor's node agents.
pub const LOCK: &str = "/run/runtime-sandbox/gvisor.lock";
/// The node-agent image's folder with gVisor's binaries and their checksums.
pub const IMAGE_DIR: &str = "/usr/local/lib/runtime-sandbox/gvisor";
/// The checksums file in [`IMAGE_DIR`] (`sha256sum` format).
pub const CHECKSUMS: &str = "SHA256SUMS";
/// gVisor's binaries, copied into `spec.binaryPath`.
pub const BINARIES: [&str; 2] = ["runsc", "containerd-shim-runsc-v1"];
/// The oldest containerd gVisor's current shim works with: 1.6 cannot read the shim's
/// bootstrap answer (proven by the scenario tests with Debian's containerd 1.6).
pub const MIN_CONTAINERD: &str = "1.7";

/// The `runsc` handler, configured by [`RUNSC_TOML`].
pub fn handler() -> Handler {
    Handler {
        name: HANDLER.into(),
        runtime_type: SHIM_RUNTIME_TYPE.into(),
        options: [
            (
                "TypeUrl".to_string(),
                format!("{SHIM_RUNTIME_TYPE}.options"),
            ),
            ("ConfigPath".to_string(), RUNSC_TOML.to_string()),
        ]
        .into(),
        ..Handler::default()
    }
}

/// gVisor on a node with `config`'s runsc flags.
pub fn node_plan(config: &GVisorConfig) -> NodePlan {
    NodePlan {
        api_version: node_plan::API_VERSION.into(),
        kind: node_plan::KIND.into(),
        runtime: RUNTIME_TYPE.into(),
        handlers: vec![handler()],
        files: vec![PlanFile {
            path: RUNSC_TOML.into(),
            content: config.runsc_toml(),
        }],
        binaries: Binaries {
            source: IMAGE_DIR.into(),
            checksums: CHECKSUMS.into(),
            names: BINARIES.iter().map(|b| b.to_string()).collect(),
            optional: Vec::new(),
            versioned: None,
        },
        drop_in: DROP_IN.into(),
        lock: LOCK.into(),
        ready_label: NODE_READY_LABEL.into(),
        min_containerd: MinContainerd {
            version: MIN_CONTAINERD.into(),
            reason: "gVisor's shim answers with the shim bootstrap protocol version 2".into(),
        },
        containerd_imports: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_is_valid_and_the_handler_is_the_runtime_class_handler() {
        let plan = node_plan(&GVisorConfig::default());
        plan.validate().unwrap();
        assert_eq!(plan.handlers[0].name, super::super::HANDLER);
        assert_eq!(plan.min_containerd(), (1, 7));
    }
}
