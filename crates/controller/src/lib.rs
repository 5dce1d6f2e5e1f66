//! The seed-side controller: reconciles `ContainerRuntime` objects following the Gardener
//! extension contract (docs/gardener-contract in the shared docs) and hands the
//! runtime-specific work to an actuator built on `sandbox-runtime`.

/// Annotation gardenlet uses to ask for an operation.
pub const OPERATION_ANNOTATION: &str = "gardener.cloud/operation";
/// Finalizer the extension puts on ContainerRuntime objects.
pub const FINALIZER: &str = "extensions.gardener.cloud/containerruntime";
