//! The CRI definition we compile is the pinned Kubernetes release's: below its header,
//! `proto/api.proto` equals `pkg/apis/runtime/v1/api.proto` of the Go module k8s.io/cri-api at
//! the staging version of `KUBERNETES_VERSION` (hack/versions.env), read from the Go module
//! proxy. After a Kubernetes bump this fails until `hack/update-cri-proto.sh` has run.

use std::path::Path;
use std::process::Command;

#[test]
fn proto_matches_pinned_kubernetes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let versions = std::fs::read_to_string(root.join("hack/versions.env")).unwrap();
    let kubernetes = versions
        .lines()
        .find_map(|l| l.strip_prefix("KUBERNETES_VERSION="))
        .expect("KUBERNETES_VERSION in hack/versions.env");
    let staging = kubernetes.replacen("v1.", "v0.", 1);
    let work = std::env::temp_dir();
    let output = Command::new("go")
        .args(["mod", "download", "-json"])
        .arg(format!("k8s.io/cri-api@{staging}"))
        .env("GOFLAGS", "-mod=mod")
        .current_dir(&work)
        .output()
        .expect("Go is a prerequisite of the tests (README)");
    assert!(
        output.status.success(),
        "go mod download k8s.io/cri-api@{staging}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let dir = Path::new(
        info["Dir"]
            .as_str()
            .expect("Dir in go mod download's answer"),
    );
    let upstream = std::fs::read_to_string(dir.join("pkg/apis/runtime/v1/api.proto")).unwrap();
    let ours = std::fs::read_to_string(root.join("crates/cri/proto/api.proto")).unwrap();
    let body = ours
        .split_once("\n/*\n")
        .map(|(_, rest)| format!("/*\n{rest}"))
        .expect("our header, then the upstream file from its licence comment on");
    assert!(
        body == upstream,
        "crates/cri/proto/api.proto is not k8s.io/cri-api {staging}'s; run hack/update-cri-proto.sh"
    );
    assert!(
        ours.contains(&format!("k8s.io/cri-api at {staging} ")),
        "the header names another version; run hack/update-cri-proto.sh"
    );
}
