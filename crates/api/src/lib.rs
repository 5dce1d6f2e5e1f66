//! Types of the Gardener API objects this extension works with.
//!
//! They mirror Gardener's Go types closely enough that whatever we serialise passes the
//! CRD schemas Gardener ships (required fields are always present) and whatever gardenlet
//! writes decodes, including fields we do not know (they are ignored, never an error).

pub mod cluster;
pub mod containerruntime;
pub mod extension;

pub use cluster::{Cluster, ClusterSpec};
pub use containerruntime::{ContainerRuntime, ContainerRuntimeSpec, WorkerPool};
pub use extension::{
    Condition, ExtensionStatus, LastError, LastOperation, LastOperationState, LastOperationType,
    NamedResourceReference,
};

/// API group of Gardener's extension resources.
pub const EXTENSIONS_GROUP: &str = "extensions.gardener.cloud";
/// API version of Gardener's extension resources.
pub const EXTENSIONS_VERSION: &str = "v1alpha1";
