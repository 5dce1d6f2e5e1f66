//! What a sandboxed runtime needs on a node and in a shoot, as pure functions of the
//! ContainerRuntime, the Cluster and the providerConfig. No I/O lives here: the controller
//! and the node agent read, call these functions, and write.
//!
//! [`actuator`] is the seam to the controller (one [`actuator::Actuator`] per runtime, all in
//! [`actuator::ACTUATORS`]); [`node_plan`] the seam to the node agent. Each runtime has one
//! module ([`gvisor`], [`kata`]) that owns everything about it.

pub mod actuator;
pub mod admission;
pub mod gvisor;
pub mod image;
pub mod installation;
pub mod kata;
pub mod manifests;
pub mod node_label_policy;
pub mod node_plan;
pub mod osc;
pub mod provider_config;
pub mod quantity;
pub mod scheduling;

/// Label gardenlet puts on every node of a pool: which CRI the pool uses.
pub const CRI_NAME_LABEL: &str = "worker.gardener.cloud/cri-name";
/// The only CRI a sandboxed runtime supports.
pub const CRI_CONTAINERD: &str = "containerd";
