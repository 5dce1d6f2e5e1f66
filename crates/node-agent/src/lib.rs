//! The node agent: installs a sandboxed runtime's binaries and containerd configuration on
//! a node, verifies containerd loaded the handler, announces readiness, and uninstalls.
//! Filled by the node-agent issue; the crate exists so the layout reads as the architecture.
