//! The status every Gardener extension resource shares (Go: `extensionsv1alpha1.DefaultStatus`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

/// Status of an extension resource, as gardenlet reads it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionStatus {
    /// Conditions of the resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The last error of an operation, cleared on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
    /// The last operation performed on the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_operation: Option<LastOperation>,
    /// The generation the last successful operation worked on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Provider-specific output, kept raw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_status: Option<serde_json::Value>,
    /// State kept across control-plane migration, kept raw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<serde_json::Value>,
    /// Resources referenced by the state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<NamedResourceReference>,
}

/// What was last done to the resource and how it went (Go: `gardencorev1beta1.LastOperation`).
///
/// All five fields are required by the CRD schema, so all five are always serialised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastOperation {
    /// Human-readable description of the operation's state.
    pub description: String,
    /// When the operation's state last changed.
    pub last_update_time: Time,
    /// Progress in percent, 0 to 100.
    pub progress: i32,
    /// State of the operation.
    pub state: LastOperationState,
    /// Kind of operation.
    #[serde(rename = "type")]
    pub type_: LastOperationType,
}

/// State of a [`LastOperation`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LastOperationState {
    Processing,
    Succeeded,
    Error,
    Failed,
    Pending,
    Aborted,
    /// A state this version does not know; kept so decoding never fails.
    #[serde(other)]
    Unknown,
}

/// Kind of a [`LastOperation`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LastOperationType {
    Create,
    Reconcile,
    Delete,
    Migrate,
    Restore,
    /// A type this version does not know; kept so decoding never fails.
    #[serde(other)]
    Unknown,
}

/// The error of the last operation (Go: `gardencorev1beta1.LastError`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastError {
    /// Human-readable description of the error.
    pub description: String,
    /// ID of the task that failed, if any.
    #[serde(default, rename = "taskID", skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Well-known error codes, e.g. `ERR_CONFIGURATION_PROBLEM`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<String>,
    /// When the error was reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
}

/// A Gardener condition (Go: `gardencorev1beta1.Condition`); every field but `codes` is
/// required by the CRD schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub last_transition_time: Time,
    pub last_update_time: Time,
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<String>,
}

/// A named reference to a resource kept for migration (Go: `NamedResourceReference`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamedResourceReference {
    pub name: String,
    pub resource_ref: CrossVersionObjectReference,
}

/// Reference to an object by kind and name (Go: `autoscalingv1.CrossVersionObjectReference`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrossVersionObjectReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    pub kind: String,
    pub name: String,
}
