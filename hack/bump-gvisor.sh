#!/usr/bin/env bash
# Moves the gVisor pin to the newest version the Go module proxy serves (make bump-gvisor).
#
#   hack/bump-gvisor.sh [--no-test] [VERSION]
#
# 1. Asks the proxy for gvisor.dev/gvisor@latest (gVisor publishes its Go module on the "go"
#    branch as pseudo-versions), or takes VERSION.
# 2. In hack/versions.env: the current pin becomes GVISOR_PREVIOUS_VERSION (the node tests
#    upgrade a node with a running gVisor pod from it) and VERSION becomes GVISOR_VERSION, each
#    with the module's go.sum hash (GVISOR_SUM, GVISOR_PREVIOUS_SUM), which hack/tools.sh checks
#    before it builds.
# 3. The node-agent image's tag in crates/runtime/images.yaml carries the new version (it names
#    the version folder on the nodes), and the README's pin table follows.
# 4. Builds runsc and the shim of both pins (amd64, and arm64 for the image) and runs the node
#    tier, which installs, upgrades under a running pod from the previous pin, and uninstalls
#    against real containerd 1.7 and 2.4 (skip with --no-test).
# The image's SHA256SUMS are computed from the built binaries by `make image`; the agent
# verifies every file against them before it installs anything.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "hack/bump-gvisor.sh: $*" >&2; exit 1; }
test=true
if [ "${1:-}" = --no-test ]; then test=false; shift; fi
command -v go >/dev/null || die "needs Go (the module proxy is asked through it)"

# shellcheck disable=SC1091
. hack/versions.env
current=$GVISOR_VERSION
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Outside any module: `go list -m` and `go mod download` answer from the proxy.
new=${1:-$(cd "$work" && GO111MODULE=on GOFLAGS=-mod=mod go list -m -f '{{.Version}}' gvisor.dev/gvisor@latest)}
[ -n "$new" ] || die "the proxy named no version"
sum_of() { (cd "$work" && GO111MODULE=on go mod download -json "gvisor.dev/gvisor@$1" | sed -n 's/.*"Sum": "\(.*\)",*/\1/p'); }
if [ "$new" = "$current" ]; then
  echo "gVisor is at the newest version the proxy serves: $current"
  exit 0
fi
echo "gVisor: $current -> $new"
new_sum=$(sum_of "$new")
current_sum=$(sum_of "$current")
[ -n "$new_sum" ] && [ -n "$current_sum" ] || die "no go.sum hash for $new or $current"

folder() { echo "${1#v0.0.0-}"; }
sed -i \
  -e "s|^GVISOR_PREVIOUS_VERSION=.*|GVISOR_PREVIOUS_VERSION=$current|" \
  -e "s|^GVISOR_PREVIOUS_SUM=.*|GVISOR_PREVIOUS_SUM=$current_sum|" \
  -e "s|^GVISOR_VERSION=.*|GVISOR_VERSION=$new|" \
  -e "s|^GVISOR_SUM=.*|GVISOR_SUM=$new_sum|" \
  hack/versions.env
sed -i "s|-gvisor-$(folder "$current")|-gvisor-$(folder "$new")|" crates/runtime/images.yaml
# The README's table has a row per pin: current -> new, previous -> current.
sed -i -e "s|$current|@@new@@|g" -e "s|$GVISOR_PREVIOUS_VERSION|$current|g" -e "s|@@new@@|$new|g" README.md
grep -q "gvisor-$(folder "$new")" crates/runtime/images.yaml || die "crates/runtime/images.yaml has no gVisor tag to move"

hack/tools.sh ensure gvisor
hack/tools.sh ensure gvisor-arm64
hack/tools.sh ensure gvisor-previous
"$(hack/tools.sh path gvisor)/runsc" --version
if $test; then
  cargo test --locked -p sandbox-runtime --lib image
  hack/test.sh node
fi
echo "bumped gVisor to $new; review 'git diff' (docs/operations.md: what to check) and commit"
