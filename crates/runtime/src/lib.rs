//! What a sandboxed runtime needs on a node and in a shoot, as pure functions of the
//! ContainerRuntime, the Cluster and the providerConfig. No I/O lives here: the controller
//! and the node agent read, call these functions, and write.

pub mod gvisor;
