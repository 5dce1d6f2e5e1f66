//! The seed-side controller: reconciles `ContainerRuntime` objects following the Gardener
//! extension contract and hands the runtime-specific work to an actuator built on
//! `sandbox-runtime`.
//!
//! - [`contract`]: the contract's pure rules (which events count, which operation, what
//!   status to write);
//! - [`managedresource`]: writing and deleting ManagedResources and their Secrets;
//! - [`gvisor`]: the gVisor actuator;
//! - [`reconciler`]: the reconcile loop that ties them together.

pub mod contract;
pub mod gvisor;
pub mod managedresource;
pub mod operations;
pub mod reconciler;

pub use reconciler::{ControllerConfig, run};

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The providerConfig is unusable; only the shoot owner can fix it.
    #[error(transparent)]
    Configuration(#[from] sandbox_runtime::gvisor::ConfigError),
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
    /// ManagedResources did not go away in time.
    #[error("{0}")]
    Timeout(String),
    /// Leadership was lost; the process must stop working.
    #[error("{0}")]
    Leadership(String),
    /// The image vector is unusable (an operator's problem).
    #[error(transparent)]
    ImageVector(#[from] sandbox_runtime::image::ImageVectorError),
    /// Rendering failed (a bug).
    #[error(transparent)]
    Render(#[from] sandbox_runtime::manifests::RenderError),
    /// The object does not decode as a ContainerRuntime.
    #[error("invalid ContainerRuntime: {0}")]
    InvalidObject(String),
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
            Error::Timeout(_) => "timeout",
            Error::Leadership(_) => "leadership",
            Error::ImageVector(_) => "image_vector",
            Error::Render(_) => "render",
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
