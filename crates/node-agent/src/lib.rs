//! The node agent: installs a sandboxed runtime's binaries and containerd configuration on
//! a node, verifies containerd loaded the handler, announces readiness, and uninstalls.
//!
//! Built so far: [`containerd`], the pure editing of containerd's configuration; [`files`],
//! atomic writes with backups; [`binaries`], checksum-verified installation of the runtime's
//! binaries; [`host`], applying the configuration to a host root, with uninstall and
//! rollback. Restarting containerd, CRI verification, node labels and the `node-agent`
//! subcommand are the node-agent issue's remaining work.

pub mod agent;
pub mod binaries;
pub mod containerd;
pub mod cri;
pub mod daemon;
pub mod files;
pub mod host;
pub mod lock;
pub mod node;
pub mod restart;
