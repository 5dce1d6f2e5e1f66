//! Kubernetes' Container Runtime Interface (`runtime.v1`) as tonic client types, generated at
//! build time from `proto/api.proto` (k8s.io/cri-api at the pinned Kubernetes release) by
//! protox, so that no system `protoc` is needed.

/// CRI `runtime.v1`: messages and the `RuntimeService`/`ImageService` clients.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}
