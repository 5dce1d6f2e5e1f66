//! gVisor: names that Gardener operators and shoot owners already rely on (they match the
//! Go extension `gardener-extension-runtime-gvisor`).

/// The `spec.type` of a gVisor ContainerRuntime.
pub const RUNTIME_TYPE: &str = "gvisor";
/// The RuntimeClass offered in the shoot.
pub const RUNTIME_CLASS: &str = "gvisor";
/// The containerd runtime handler the RuntimeClass points at.
pub const HANDLER: &str = "runsc";
/// The node label gardenlet sets on pools that run gVisor.
pub const NODE_LABEL: &str = "containerruntime.worker.gardener.cloud/gvisor";
