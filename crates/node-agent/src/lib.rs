//! The node agent: applies a node plan (`sandbox_runtime::node_plan`) on a node: installs the
//! runtime's binaries and containerd configuration, verifies containerd loaded the handlers,
//! announces readiness with a node label, and uninstalls. It knows no runtime by name: every
//! handler, file, binary and path comes from the plan.
//!
//! [`containerd`] edits containerd's configuration (pure); [`files`] writes atomically with
//! backups; [`binaries`] installs checksum-verified binaries; [`host`] applies a plan's
//! configuration to a host root, with uninstall and rollback; [`cri`] asks containerd what it
//! loaded; [`restart`] restarts containerd through systemd; [`lock`] keeps two agents apart;
//! [`agent`] is one install or uninstall run; [`node`] the ready label; [`daemon`] the
//! DaemonSet's long-running process; [`fault`] the crash points of the crash-safety tests.

pub mod agent;
pub mod binaries;
pub mod capability;
pub mod containerd;
pub mod cri;
pub mod daemon;
pub mod fault;
pub mod files;
pub mod host;
pub mod lock;
pub mod node;
pub mod restart;
