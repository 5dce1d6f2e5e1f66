#!/usr/bin/env bash
# Replaces crates/cri/proto/api.proto with the CRI definition of the pinned Kubernetes release
# (k8s.io/cri-api at KUBERNETES_VERSION's staging version, from the Go module proxy). Run it
# after moving KUBERNETES_VERSION in hack/versions.env; crates/cri's pinned_proto test fails
# until then.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=versions.env
source "$ROOT/hack/versions.env"
version=${KUBERNETES_VERSION/#v1./v0.}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dir=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "k8s.io/cri-api@$version" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
[ -f "$dir/pkg/apis/runtime/v1/api.proto" ] || { echo "k8s.io/cri-api@$version has no pkg/apis/runtime/v1/api.proto" >&2; exit 1; }
out=$ROOT/crates/cri/proto/api.proto
{
  cat <<HEADER
// Kubernetes' Container Runtime Interface, runtime.v1: pkg/apis/runtime/v1/api.proto of the Go
// module k8s.io/cri-api at $version (the pinned Kubernetes release), unchanged below this
// header. Kept in the tree so the Rust build needs neither protoc nor the network;
// \`hack/update-cri-proto.sh\` replaces it from the Go module proxy when KUBERNETES_VERSION moves,
// and crates/cri's test \`pinned_proto\` fails while it is stale.
HEADER
  cat "$dir/pkg/apis/runtime/v1/api.proto"
} >"$out.tmp"
mv "$out.tmp" "$out"
echo "crates/cri/proto/api.proto: k8s.io/cri-api $version"
