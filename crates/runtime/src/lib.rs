//! What a sandboxed runtime needs on a node and in a shoot, as pure functions of the
//! ContainerRuntime, the Cluster and the providerConfig. No I/O lives here: the controller
//! and the node agent read, call these functions, and write.

pub mod gvisor;
pub mod image;
pub mod manifests;

/// Label gardenlet puts on every node of a pool: which CRI the pool uses.
pub const CRI_NAME_LABEL: &str = "worker.gardener.cloud/cri-name";
/// The only CRI a sandboxed runtime supports.
pub const CRI_CONTAINERD: &str = "containerd";
