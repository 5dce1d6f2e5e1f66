//! Types of the Gardener API objects this extension works with.
//!
//! They mirror Gardener's Go types closely enough that whatever we serialise passes the
//! CRD schemas Gardener ships (required fields are always present) and whatever gardenlet
//! writes decodes, including fields we do not know (they are ignored, never an error).

pub mod cluster;
pub mod containerruntime;
pub mod extension;
pub mod managedresource;
pub mod shoot;

pub use cluster::{Cluster, ClusterShoot, ClusterSpec, EmbeddedShoot};
pub use containerruntime::{ContainerRuntime, ContainerRuntimeSpec, WorkerPool};
pub use extension::{
    Condition, ExtensionStatus, LastError, LastOperation, LastOperationState, LastOperationType,
    NamedResourceReference,
};
pub use managedresource::{ManagedResource, ManagedResourceSpec, ManagedResourceStatus};
pub use shoot::{CloudProfile, Shoot};

/// Annotation gardenlet uses to ask an extension for an operation.
pub const OPERATION_ANNOTATION: &str = "gardener.cloud/operation";
/// Annotation gardenlet sets with each request, RFC3339.
pub const TIMESTAMP_ANNOTATION: &str = "gardener.cloud/timestamp";

impl Cluster {
    /// The embedded Shoot, decoded leniently.
    pub fn shoot(&self) -> Result<Shoot, serde_json::Error> {
        serde_json::from_value(self.spec.shoot.clone())
    }

    /// The embedded CloudProfile, decoded leniently.
    pub fn cloud_profile(&self) -> Result<CloudProfile, serde_json::Error> {
        serde_json::from_value(self.spec.cloud_profile.clone())
    }
}
