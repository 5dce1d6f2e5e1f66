//! gVisor: what a pool with `type: gvisor` needs in the shoot. Names match the Go extension
//! `gardener-extension-runtime-gvisor`, so operators' habits and tooling keep working.

pub mod config;
mod installation;

pub use config::{ConfigError, GVisorConfig};
pub use installation::{InstallationInput, installation_objects};

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::node::v1::{RuntimeClass, Scheduling};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::manifests::{ObjectSet, RenderError};

/// The `spec.type` of a gVisor ContainerRuntime.
pub const RUNTIME_TYPE: &str = "gvisor";
/// The RuntimeClass offered in the shoot.
pub const RUNTIME_CLASS: &str = "gvisor";
/// The containerd runtime handler the RuntimeClass points at.
pub const HANDLER: &str = "runsc";
/// The node label gardenlet sets on pools that run gVisor.
pub const NODE_LABEL: &str = "containerruntime.worker.gardener.cloud/gvisor";
/// ServiceAccount of the node installer in the shoot.
pub const SERVICE_ACCOUNT: &str = "gvisor";
/// Namespace of everything we put into the shoot.
pub const SHOOT_NAMESPACE: &str = "kube-system";
/// The shared ManagedResource (RuntimeClass + ServiceAccount).
pub const MANAGED_RESOURCE: &str = "extension-runtime-gvisor";
/// Prefix of the per-pool ManagedResource (the node installer).
pub const INSTALLATION_MANAGED_RESOURCE_PREFIX: &str = "extension-runtime-gvisor-installation-";
/// The `origin` label value of our ManagedResources.
pub const ORIGIN: &str = "gardener-extension-runtime-gvisor";

/// Name of the per-pool ManagedResource.
pub fn installation_managed_resource(pool: &str) -> String {
    format!("{INSTALLATION_MANAGED_RESOURCE_PREFIX}{pool}")
}

/// Objects shared by all gVisor pools of a shoot: the RuntimeClass and the installer's
/// ServiceAccount.
pub fn shared_objects() -> Result<ObjectSet, RenderError> {
    let runtime_class = RuntimeClass {
        metadata: ObjectMeta {
            name: Some(RUNTIME_CLASS.into()),
            ..ObjectMeta::default()
        },
        handler: HANDLER.into(),
        scheduling: Some(Scheduling {
            node_selector: Some([(NODE_LABEL.to_string(), "true".to_string())].into()),
            tolerations: None,
        }),
        overhead: None,
    };
    let service_account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(SERVICE_ACCOUNT.into()),
            namespace: Some(SHOOT_NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    };
    let mut set = ObjectSet::default();
    set.add(&runtime_class)?;
    set.add(&service_account)?;
    Ok(set)
}
