//! The node agent: installs a sandboxed runtime's binaries and containerd configuration on
//! a node, verifies containerd loaded the handler, announces readiness, and uninstalls.
//!
//! Built so far: [`containerd`], the pure editing of containerd's configuration. The I/O
//! around it (atomic writes, restarts, CRI verification, node labels) is the node-agent
//! issue's remaining work.

pub mod containerd;
