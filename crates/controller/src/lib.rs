//! The seed-side controller: reconciles `ContainerRuntime` objects following the Gardener
//! extension contract and hands the runtime-specific rendering to the runtime's actuator
//! (`sandbox_runtime::actuator`).
//!
//! - [`contract`]: the contract's pure rules (which events count, which step, what status);
//! - [`event_filter`]: watch events to triggers; [`controller`]: the wiring;
//!   [`reconcile`]: one reconcile as read, decide, render, write;
//! - [`managedresource`]: writing and deleting ManagedResources and their Secrets;
//! - [`leader_election`], [`heartbeat`], [`metrics`]: what operators run it with.

mod cache;
pub mod conditions;
mod context;
pub mod contract;
pub mod controller;
mod event_filter;
mod health_check;
pub mod heartbeat;
pub mod leader_election;
pub mod managedresource;
pub mod metrics;
mod node_labels;
mod reconcile;
mod shared;
pub mod shoot_access;

pub use controller::{ControllerConfig, run};

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The providerConfig is unusable; only the shoot owner can fix it.
    #[error(transparent)]
    Configuration(#[from] sandbox_runtime::actuator::ConfigError),
    /// The Cluster of the namespace is missing or cannot be decoded.
    #[error("cluster {name}: {message}")]
    Cluster { name: String, message: String },
    /// A Kubernetes API call failed.
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    /// gardener-resource-manager did not finish (ManagedResources or the node cleanup) in time.
    #[error("{pending} after {seconds}s; {detail}")]
    Timeout {
        /// What has not happened yet.
        pending: String,
        seconds: u64,
        /// What the ManagedResource or gardener-resource-manager says.
        detail: String,
    },
    /// Another holder took the leader election Lease; the process must stop working.
    #[error("leadership of lease {lease} was lost to another holder")]
    LeadershipLost { lease: String },
    /// The Lease could not be renewed in time; another candidate may take over.
    #[error("could not renew lease {lease} within {seconds}s")]
    LeadershipNotRenewed { lease: String, seconds: u64 },
    /// The image vector is unusable (an operator's problem).
    #[error(transparent)]
    ImageVector(#[from] sandbox_runtime::image::ImageVectorError),
    /// The runtime cannot be delivered through an OperatingSystemConfig (a bug).
    #[error(transparent)]
    Osc(#[from] sandbox_runtime::osc::OscError),
    /// Rendering failed (a bug).
    #[error(transparent)]
    Render(#[from] sandbox_runtime::manifests::RenderError),
    /// A ManagedResource we need is still being deleted (gardener-resource-manager removes its
    /// objects from the shoot first); it is created again once it is gone.
    #[error(
        "managedresource {name} is still being deleted; it is created again once gardener-resource-manager has removed it"
    )]
    ManagedResourceDeleting { name: String },
    /// The object does not decode as a ContainerRuntime.
    #[error("invalid ContainerRuntime: {0}")]
    InvalidObject(String),
}

impl From<sandbox_runtime::actuator::ActuatorError> for Error {
    fn from(e: sandbox_runtime::actuator::ActuatorError) -> Self {
        match e {
            sandbox_runtime::actuator::ActuatorError::Configuration(e) => Error::Configuration(e),
            sandbox_runtime::actuator::ActuatorError::Render(e) => Error::Render(e),
            sandbox_runtime::actuator::ActuatorError::Osc(e) => Error::Osc(e),
        }
    }
}

impl Error {
    /// Gardener error codes for `lastError.codes`.
    pub fn codes(&self) -> Vec<&'static str> {
        match self {
            Error::Configuration(_) | Error::InvalidObject(_) => {
                vec![contract::ERR_CONFIGURATION_PROBLEM]
            }
            _ => Vec::new(),
        }
    }

    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Configuration(_) => "configuration",
            Error::Cluster { .. } => "cluster",
            Error::Kube { .. } => "kube",
            Error::Timeout { .. } => "timeout",
            Error::ManagedResourceDeleting { .. } => "managedresource_deleting",
            Error::LeadershipLost { .. } | Error::LeadershipNotRenewed { .. } => "leadership",
            Error::ImageVector(_) => "image_vector",
            Error::Render(_) | Error::Osc(_) => "render",
            Error::InvalidObject(_) => "invalid_object",
        }
    }
}

/// Wraps a kube error with what we were doing.
pub(crate) fn kube_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Kube { action, source }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
