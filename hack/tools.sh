#!/usr/bin/env bash
# Builds (or finds in the cache) the pinned upstream programs our tests run for real.
#
#   hack/tools.sh ensure [kube-apiserver|etcd|kubernetes-node|gardener-crds|gvisor|gvisor-arm64|gvisor-previous|containerd|containerd17|gvisor-extension|gardener|kata|control-plane|all]
#   hack/tools.sh path   <tool>                                     print the cached path
#   hack/tools.sh env                                               print SANDBOX_* variables
#
# Everything is built from the Go module proxy (no GitHub downloads) into
# $SANDBOX_TOOLS_DIR (default: <repo>/.cache/tools), one folder per tool and version,
# so a changed pin in hack/versions.env builds anew and an unchanged pin costs nothing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=versions.env
source "$ROOT/hack/versions.env"
TOOLS_DIR=${SANDBOX_TOOLS_DIR:-$ROOT/.cache/tools}

die() { echo "hack/tools.sh: $*" >&2; exit 1; }

need_go() {
  command -v go >/dev/null 2>&1 ||
    die "Go is not installed; install Go 1.26+ (https://go.dev/doc/install or 'apt-get install golang') and retry"
}

# Run a Go command quietly; on failure keep its log and print one line saying where.
run_go() {
  local what=$1 log=$2; shift 2
  # Go builds are silent for minutes: say every 30 s that this one is still going.
  local started=$SECONDS ticker
  ( while sleep 30; do echo "  ... $what: $((SECONDS - started)) s" >&2; done ) &
  ticker=$!
  local rc=0
  "$@" >"$log" 2>&1 || rc=$?
  kill "$ticker" 2>/dev/null; wait "$ticker" 2>/dev/null || true
  if [ "$rc" -ne 0 ]; then
    local hint
    hint=$(grep -m1 -E 'GOPROXY|proxy\.golang\.org|dial tcp|no such host|403 Forbidden|404 Not Found|connection refused|i/o timeout' "$log" || true)
    if [ -n "$hint" ]; then
      die "$what failed: the Go module proxy could not be reached or refused a module ($hint); full log: $log"
    fi
    die "$what failed (last line: $(tail -n1 "$log")); full log: $log"
  fi
}

# Go 1.27+ turns encoding/json/v2 on by default, which makes Kubernetes' vendored
# kube-openapi serve broken OpenAPI (kubernetes/kube-openapi#616): switch it off there.
go_experiment() {
  local minor
  minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
  if [ "${minor:-0}" -ge 25 ] 2>/dev/null; then echo "nojsonv2"; fi
}

# publish DIR WORK FILE...: moves the built FILEs from WORK into the cache folder DIR in one
# rename, so an interrupted build never leaves a half-filled folder that looks complete.
publish() {
  local dir=$1 work=$2; shift 2
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  for file in "$@"; do mv "$work/$file" "$dir.tmp/"; done
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  rm -rf "$work"
}

# kubernetes_module WORK PKG... [-- EDIT...]: a Go module in WORK that requires
# k8s.io/kubernetes at KUBERNETES_VERSION, with its staging modules mapped to their published
# releases (as a dependency, k8s.io/kubernetes' own replaces of ./staging/... do not apply), a
# tools.go importing the PKGs and the `go mod edit` arguments EDIT, then tidied.
kubernetes_module() {
  local work=$1; shift
  local pkgs=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do pkgs+=("$1"); shift; done
  [ "${1:-}" = -- ] && shift
  local staging=${KUBERNETES_VERSION/#v1./v0.}
  run_go "go mod init" "$work/log" go mod init sandbox.local/kubernetes-build
  run_go "downloading k8s.io/kubernetes@$KUBERNETES_VERSION" "$work/log" \
    go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION"
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  local args=(-require "k8s.io/kubernetes@$KUBERNETES_VERSION")
  while read -r mod; do
    args+=(-replace "$mod=$mod@$staging")
  done < <(sed -n -E 's#^[[:space:]]*(k8s\.io/[a-z0-9-]+) => \./staging/.*#\1#p' "$gomod")
  go mod edit "${args[@]}" "$@"
  { printf 'package main\n\nimport (\n'; for pkg in "${pkgs[@]}"; do printf '\t_ "%s"\n' "$pkg"; done; printf ')\n'; } >tools.go
  run_go "resolving Kubernetes dependencies" "$work/log" go mod tidy
}

# The version flags every Kubernetes binary reports (kubelet's version is what the node shows).
kubernetes_ldflags() {
  echo "-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${KUBERNETES_VERSION#v1.}"
}

build_kube_apiserver() {
  local dir=$TOOLS_DIR/kube-apiserver-$KUBERNETES_VERSION
  [ -x "$dir/kube-apiserver" ] && return 0
  need_go
  echo "building kube-apiserver $KUBERNETES_VERSION from the Go module proxy (takes several minutes once)..." >&2
  local work; work=$(mktemp -d)
  mkdir -p "$TOOLS_DIR"
  (
    cd "$work"
    kubernetes_module "$work" k8s.io/kubernetes/cmd/kube-apiserver/app
    GOEXPERIMENT=$(go_experiment) CGO_ENABLED=0 run_go "building kube-apiserver" "$work/log" \
      go build -trimpath -ldflags "$(kubernetes_ldflags)" -o "$work/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
  )
  publish "$dir" "$work" kube-apiserver
}

# What a test shoot adds to kube-apiserver: kube-controller-manager, kube-scheduler and the
# kubelet. `make demo` needs only kube-apiserver (build_kube_apiserver, a module of
# Kubernetes alone); everything else from Kubernetes, Gardener and etcd comes from the one
# shared module (build_shared).
build_kubernetes_node() { build_shared kubernetes-node; }

# The etcd binary's main: a one-liner around etcdmain in the server module.
etcd_main() {
  printf 'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n'
}

# shared_module WORK: the one Go module that Kubernetes' programs, Gardener's, Helm (at the
# version Gardener's go.mod requires, HELM_VERSION, checked here so a Gardener bump that moves
# Helm is noticed) and etcd are built from, whatever subset a build asks for. One dependency
# graph means the Go build cache compiles each package they share (client-go, apiserver, api,
# grpc, otel, the etcd client) once, not once per program family: Gardener GARDENER_VERSION
# requires k8s.io/* at exactly Kubernetes' staging versions, and the rest resolves to the
# newest any of them requires (minimal version selection), as it would in Gardener's own build.
shared_module() {
  local work=$1 mod=github.com/gardener/gardener
  mkdir -p "$work/etcd"
  etcd_main >"$work/etcd/main.go"
  # Gardener's go.mod replaces its API module with ./pkg/apis, which does not apply to a
  # dependency (it would resolve an older pkg/apis): require the same release of it.
  kubernetes_module "$work" \
    k8s.io/kubernetes/cmd/kube-apiserver/app k8s.io/kubernetes/cmd/kube-controller-manager/app \
    k8s.io/kubernetes/cmd/kube-scheduler/app k8s.io/kubernetes/cmd/kubelet/app \
    "$mod/cmd/gardener-apiserver/app" "$mod/cmd/gardener-resource-manager/app" \
    "$mod/cmd/gardener-node-agent/app" helm.sh/helm/v4/pkg/cmd \
    -- -require "$mod@$GARDENER_VERSION" -require "$mod/pkg/apis@$GARDENER_VERSION" \
    -require "helm.sh/helm/v4@$HELM_VERSION" -require "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  local helm etcd
  helm=$(go list -m -f '{{.Version}}' helm.sh/helm/v4)
  [ "$helm" = "$HELM_VERSION" ] ||
    die "Gardener $GARDENER_VERSION resolves helm.sh/helm/v4 $helm, but hack/versions.env pins HELM_VERSION=$HELM_VERSION: update the pin"
  etcd=$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
  [ "$etcd" = "$ETCD_VERSION" ] ||
    die "the shared module resolves go.etcd.io/etcd/server/v3 $etcd, not the pinned ETCD_VERSION=$ETCD_VERSION"
}

# Gardener's programs report k8s.io/component-base's version (hack/get-build-ld-flags.sh in
# Gardener); gardener-node-agent reads its configuration file by it (config-<version>.yaml).
gardener_ldflags() {
  local major=${GARDENER_VERSION#v}; major=${major%%.*}
  local minor=${GARDENER_VERSION#v*.}; minor=${minor%%.*}
  echo "-s -w -X k8s.io/component-base/version.gitVersion=$GARDENER_VERSION -X k8s.io/component-base/version.gitMajor=$major -X k8s.io/component-base/version.gitMinor=$minor -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION"
}

# The programs of each cache folder that build_shared fills.
shared_group() {
  case $1 in
    kube-apiserver) echo kube-apiserver ;;
    etcd) echo etcd ;;
    kubernetes-node) echo kube-controller-manager kube-scheduler kubelet ;;
    gardener) echo gardener-apiserver gardener-resource-manager gardener-node-agent helm ;;
    *) die "build_shared: unknown group '$1'" ;;
  esac
}

# The folder a shared group is published to, and whether it is complete.
shared_dir() {
  case $1 in
    kube-apiserver | etcd) dirname "$(tool_path "$1")" ;;
    *) tool_path "$1" ;;
  esac
}
shared_complete() {
  local dir program
  dir=$(shared_dir "$1")
  for program in $(shared_group "$1"); do [ -x "$dir/$program" ] || return 1; done
}

# build_shared GROUP...: the missing ones of the given groups (kube-apiserver, etcd,
# kubernetes-node, gardener) in one `go build` from the shared module: the links run side by
# side and every package is compiled once. Each group is published to its own cache folder.
build_shared() {
  local group want=()
  for group in "$@"; do shared_complete "$group" || want+=("$group"); done
  [ "${#want[@]}" -gt 0 ] || return 0
  need_go
  local programs=() program pkgs=() mod=github.com/gardener/gardener
  for group in "${want[@]}"; do
    for program in $(shared_group "$group"); do
      programs+=("$program")
      case $program in
        kube-*) pkgs+=("k8s.io/kubernetes/cmd/$program") ;;
        kubelet) pkgs+=(k8s.io/kubernetes/cmd/kubelet) ;;
        gardener-*) pkgs+=("$mod/cmd/$program") ;;
        helm) pkgs+=(helm.sh/helm/v4/cmd/helm) ;;
        etcd) pkgs+=(./etcd) ;;
      esac
    done
  done
  echo "building ${programs[*]} (Kubernetes $KUBERNETES_VERSION, Gardener $GARDENER_VERSION, Helm $HELM_VERSION, etcd $ETCD_VERSION) from the Go module proxy in one go build (takes several minutes once)..." >&2
  local work; work=$(mktemp -d)
  mkdir -p "$TOOLS_DIR"
  (
    cd "$work"
    shared_module "$work"
    mkdir -p "$work/bin"
    # Each program family keeps its own version flags (a pattern per family; -ldflags
    # applies to the main packages it matches).
    GOEXPERIMENT=$(go_experiment) CGO_ENABLED=0 run_go "building ${programs[*]}" "$work/log" \
      go build -trimpath \
      -ldflags "k8s.io/kubernetes/cmd/...=$(kubernetes_ldflags)" \
      -ldflags "$mod/cmd/...=$(gardener_ldflags)" \
      -ldflags "helm.sh/helm/v4/cmd/helm=$(gardener_ldflags)" \
      -ldflags "sandbox.local/kubernetes-build/etcd=-s -w" \
      -o "$work/bin/" "${pkgs[@]}"
  )
  for group in "${want[@]}"; do
    local out="$work/out-$group"
    mkdir -p "$out"
    for program in $(shared_group "$group"); do mv "$work/bin/$program" "$out/"; done
    # shellcheck disable=SC2046
    publish "$(shared_dir "$group")" "$out" $(shared_group "$group")
  done
  rm -rf "$work"
}

build_etcd() {
  local dir=$TOOLS_DIR/etcd-$ETCD_VERSION
  [ -x "$dir/etcd" ] && return 0
  need_go
  echo "building etcd $ETCD_VERSION from the Go module proxy..." >&2
  local work; work=$(mktemp -d)
  mkdir -p "$TOOLS_DIR"
  (
    cd "$work"
    run_go "go mod init" "$work/log" go mod init sandbox.local/etcd-build
    etcd_main >main.go
    go mod edit -require "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    run_go "resolving etcd dependencies" "$work/log" go mod tidy
    CGO_ENABLED=0 run_go "building etcd" "$work/log" go build -trimpath -ldflags "-s -w" -o "$work/etcd" .
  )
  publish "$dir" "$work" etcd
}

# build_gvisor_for GOARCH DIR [VERSION]: runsc and containerd-shim-runsc-v1 of VERSION (the
# pin by default) for one architecture, in one `go build` (they share most packages). amd64 for
# the host's tests, arm64 for the images. The build label is the version (Bazel sets it to the
# release; without it runsc reports VERSION_MISSING, and sidecars compare it with their own to
# refuse another release's runsc).
build_gvisor_for() {
  local arch=$1 dir=$2 version=${3:-$GVISOR_VERSION} sum=${4:-$GVISOR_SUM}
  [ -x "$dir/runsc" ] && [ -x "$dir/containerd-shim-runsc-v1" ] && return 0
  need_go
  echo "building runsc and containerd-shim-runsc-v1 ($version, linux/$arch) from the Go module proxy..." >&2
  local work; work=$(mktemp -d)
  mkdir -p "$TOOLS_DIR"
  (
    cd "$work"
    run_go "go mod init" "$work/log" go mod init sandbox.local/gvisor-build
    run_go "resolving gVisor dependencies" "$work/log" \
      go get "gvisor.dev/gvisor/runsc@$version" "gvisor.dev/gvisor/shim@$version"
    # The pinned module content, as hack/versions.env records it (go also checks the sumdb).
    grep -qF "gvisor.dev/gvisor $version $sum" go.sum ||
      die "gvisor.dev/gvisor $version is not the pinned content ($sum): $(grep "gvisor.dev/gvisor $version " go.sum)"
    mkdir -p "$work/bin"
    GOOS=linux GOARCH=$arch CGO_ENABLED=0 run_go "building runsc and containerd-shim-runsc-v1 (linux/$arch)" "$work/log" \
      go build -trimpath -ldflags "-X gvisor.dev/gvisor/runsc/version.version=$version" \
      -o "$work/bin/" gvisor.dev/gvisor/runsc gvisor.dev/gvisor/shim
    mv "$work/bin/runsc" "$work/runsc"
    mv "$work/bin/shim" "$work/containerd-shim-runsc-v1"
  )
  publish "$dir" "$work" runsc containerd-shim-runsc-v1
}

# The host's architecture, as Go spells it: the gVisor the tests run on this machine.
host_goarch() {
  case $(uname -m) in
    x86_64) echo amd64 ;;
    aarch64 | arm64) echo arm64 ;;
    *) die "unsupported machine architecture $(uname -m)" ;;
  esac
}

build_gvisor() { build_gvisor_for "$(host_goarch)" "$(tool_path gvisor)"; }
build_gvisor_arm64() { build_gvisor_for arm64 "$(tool_path gvisor-arm64)"; }
# The pin before GVISOR_VERSION, for the node tests that upgrade a node with a running gVisor
# pod from it (host architecture only).
build_gvisor_previous() { build_gvisor_for "$(host_goarch)" "$(tool_path gvisor-previous)" "$GVISOR_PREVIOUS_VERSION" "$GVISOR_PREVIOUS_SUM"; }

# build_containerd_release VERSION MODULE: containerd, ctr and the runc shim of one release,
# static and without btrfs (no C headers needed; the tests use overlayfs).
build_containerd_release() {
  local version=$1 mod=$2
  local dir=$TOOLS_DIR/containerd-$version
  [ -x "$dir/containerd" ] && [ -x "$dir/ctr" ] && [ -x "$dir/containerd-shim-runc-v2" ] && return 0
  need_go
  echo "building containerd $version from the Go module proxy..." >&2
  local work; work=$(mktemp -d)
  mkdir -p "$TOOLS_DIR"
  (
    cd "$work"
    run_go "go mod init" "$work/log" go mod init "sandbox.local/containerd-$version-build"
    run_go "resolving containerd $version dependencies" "$work/log" \
      go get "$mod/cmd/containerd@$version" "$mod/cmd/ctr@$version" "$mod/cmd/containerd-shim-runc-v2@$version"
    local ldflags="-s -w -X $mod/version.Version=$version"
    # One `go build` of the three: the links run side by side.
    mkdir -p "$work/bin"
    CGO_ENABLED=0 run_go "building containerd, ctr and containerd-shim-runc-v2 $version" "$work/log" go build -trimpath \
      -tags no_btrfs -ldflags "$ldflags" -o "$work/bin/" "$mod/cmd/containerd" "$mod/cmd/ctr" "$mod/cmd/containerd-shim-runc-v2"
    mv "$work"/bin/* "$work/"
  )
  publish "$dir" "$work" containerd ctr containerd-shim-runc-v2
}

build_gvisor_extension() {
  local dir=$TOOLS_DIR/gardener-extension-runtime-gvisor-$GVISOR_EXTENSION_VERSION
  [ -x "$dir/gardener-extension-runtime-gvisor" ] && return 0
  need_go
  echo "building the Go gVisor extension $GVISOR_EXTENSION_VERSION from the Go module proxy..." >&2
  local work; work=$(mktemp -d)
  mkdir -p "$TOOLS_DIR"
  local mod=github.com/gardener/gardener-extension-runtime-gvisor
  (
    cd "$work"
    run_go "go mod init" "$work/log" go mod init sandbox.local/gvisor-extension-build
    # As a dependency its own go.sum does not apply: require it, import its command's
    # package, and let tidy resolve the rest.
    go mod edit -require "$mod@$GVISOR_EXTENSION_VERSION"
    printf 'package main\n\nimport _ "%s/cmd/gardener-extension-runtime-gvisor/app"\n' "$mod" >tools.go
    run_go "resolving the Go gVisor extension's dependencies" "$work/log" go mod tidy
    CGO_ENABLED=0 run_go "building the Go gVisor extension" "$work/log" go build -trimpath \
      -ldflags "-s -w" -o "$work/gardener-extension-runtime-gvisor" "$mod/cmd/gardener-extension-runtime-gvisor"
  )
  publish "$dir" "$work" gardener-extension-runtime-gvisor
}

# The CNCF distribution registry (`registry serve <config>`), for the OSC install tests.
build_registry() {
  local dir
  dir=$(tool_path registry)
  [ -x "$dir/registry" ] && return 0
  need_go
  echo "building the distribution registry $DISTRIBUTION_VERSION from the Go module proxy..." >&2
  local work; work=$(mktemp -d)
  mkdir -p "$TOOLS_DIR"
  local mod=github.com/distribution/distribution/v3
  (
    cd "$work"
    run_go "go mod init" "$work/log" go mod init sandbox.local/registry-build
    run_go "resolving the registry's dependencies" "$work/log" go get "$mod/cmd/registry@$DISTRIBUTION_VERSION"
    CGO_ENABLED=0 run_go "building the registry" "$work/log" go build -trimpath \
      -ldflags "-s -w -X $mod/version.version=$DISTRIBUTION_VERSION" -o "$work/registry" "$mod/cmd/registry"
  )
  publish "$dir" "$work" registry
}

# Gardener's own programs and the Helm it renders charts with: gardener-apiserver (the garden's
# API for ControllerRegistration, ControllerDeployment, Shoot), gardener-resource-manager,
# gardener-node-agent (owner of a Gardener node's containerd configuration) and helm, from the
# shared module (build_shared).
build_gardener() { build_shared gardener; }

# Kata's shim, built as the main module from its own go.mod and go.sum (its config-settings.go
# is generated from the .in template first, with the values Kata's Makefile puts there).
# CGO_ENABLED=0 is enough for the shim (kata-runtime would need cgo; we do not build it).
build_kata() {
  local dir
  dir=$(tool_path kata)
  [ -x "$dir/containerd-shim-kata-v2" ] && return 0
  need_go
  echo "building containerd-shim-kata-v2 ($KATA_RUNTIME_VERSION) from the Go module proxy..." >&2
  local work; work=$(mktemp -d)
  mkdir -p "$TOOLS_DIR"
  local mod=github.com/kata-containers/kata-containers/src/runtime
  (
    cd "$work"
    run_go "downloading $mod@$KATA_RUNTIME_VERSION" "$work/log" \
      env GOFLAGS=-mod=mod go mod download -json "$mod@$KATA_RUNTIME_VERSION"
    local src
    src=$(sed -n 's/.*"Dir": "\(.*\)".*/\1/p' "$work/log")
    [ -d "$src" ] || die "the Kata runtime module was downloaded but its folder was not found (see $work/log)"
    cp -r "$src" "$work/src" && chmod -R u+w "$work/src"
    local commit=${KATA_RUNTIME_VERSION##*-}
    sed -e 's|@RUNTIME_NAME@|containerd-shim-kata-v2|' -e 's|@PROJECT_NAME@|Kata Containers|' \
      -e 's|@PROJECT_TYPE@|kata|' -e 's|@PROJECT_URL@|https://github.com/kata-containers|' \
      -e 's|@PROJECT_ORG@|kata-containers|' -e 's|@PKGRUNDIR@|/run/kata-containers|' \
      -e "s|@COMMIT@|$commit|" -e "s|@VERSION@|$KATA_VERSION_NAME|" \
      -e 's|@CONFIG_PATH@|/opt/kata/share/defaults/kata-containers/configuration.toml|' \
      -e 's|@SYSCONFIG@|/etc/kata-containers/configuration.toml|' \
      "$work/src/pkg/katautils/config-settings.go.in" >"$work/src/pkg/katautils/config-settings.go"
    cd "$work/src"
    CGO_ENABLED=0 run_go "building containerd-shim-kata-v2" "$work/log" \
      go build -trimpath -ldflags "-s -w" -o "$work/containerd-shim-kata-v2" ./cmd/containerd-shim-kata-v2
  )
  rm -rf "$work/src"
  publish "$dir" "$work" containerd-shim-kata-v2
}

build_containerd() { build_containerd_release "$CONTAINERD_VERSION" github.com/containerd/containerd/v2; }
build_containerd17() { build_containerd_release "$CONTAINERD17_VERSION" github.com/containerd/containerd; }

fetch_gardener_crds() {
  local dir
  dir=$(tool_path gardener-crds)
  [ -f "$dir/.complete" ] && return 0
  need_go
  echo "fetching Gardener $GARDENER_VERSION CRDs from the Go module proxy..." >&2
  local work; work=$(mktemp -d)
  local src
  (cd "$work" && run_go "downloading github.com/gardener/gardener@$GARDENER_VERSION" "$work/log" \
    env GOFLAGS=-mod=mod go mod download -json "github.com/gardener/gardener@$GARDENER_VERSION")
  src=$(sed -n 's/.*"Dir": "\(.*\)".*/\1/p' "$work/log")
  [ -d "$src" ] || die "the Gardener module was downloaded but its folder was not found (see $work/log)"
  mkdir -p "$work/crds"
  cp "$src"/pkg/component/extensions/crds/assets/crd-*.yaml "$work/crds/"
  cp "$src"/pkg/component/gardener/resourcemanager/assets/crd-resources.gardener.cloud_managedresources.yaml "$work/crds/"
  # A seed has VPA (the chart ships one); the garden runtime cluster has gardener-operator's
  # Extension (example/extension.yaml is validated against it).
  cp "$src"/example/seed-crds/10-crd-autoscaling.k8s.io_verticalpodautoscalers.yaml "$work/crds/crd-autoscaling.k8s.io_verticalpodautoscalers.yaml"
  cp "$src"/example/operator/10-crd-operator.gardener.cloud_extensions.yaml "$work/crds/crd-operator.gardener.cloud_extensions.yaml"
  chmod u+w "$work/crds"/*.yaml
  touch "$work/crds/.complete"
  (cd "$work/crds" && publish "$dir" "$work/crds" .complete ./*.yaml)
  rm -rf "$work"
}

tool_path() {
  case $1 in
    kube-apiserver) echo "$TOOLS_DIR/kube-apiserver-$KUBERNETES_VERSION/kube-apiserver" ;;
    etcd) echo "$TOOLS_DIR/etcd-$ETCD_VERSION/etcd" ;;
    kubernetes-node) echo "$TOOLS_DIR/kubernetes-node-$KUBERNETES_VERSION" ;;
    # "-2": the set of CRDs taken from the module grew (VPA, operator Extension).
    gardener-crds) echo "$TOOLS_DIR/gardener-crds-$GARDENER_VERSION-2" ;;
    gvisor) echo "$TOOLS_DIR/gvisor-$GVISOR_VERSION" ;;
    gvisor-arm64) echo "$TOOLS_DIR/gvisor-$GVISOR_VERSION-arm64" ;;
    gvisor-previous) echo "$TOOLS_DIR/gvisor-$GVISOR_PREVIOUS_VERSION" ;;
    containerd) echo "$TOOLS_DIR/containerd-$CONTAINERD_VERSION" ;;
    containerd17) echo "$TOOLS_DIR/containerd-$CONTAINERD17_VERSION" ;;
    gvisor-extension) echo "$TOOLS_DIR/gardener-extension-runtime-gvisor-$GVISOR_EXTENSION_VERSION" ;;
    gardener) echo "$TOOLS_DIR/gardener-$GARDENER_VERSION-helm-$HELM_VERSION-3" ;;
    kata) echo "$TOOLS_DIR/kata-shim-$KATA_RUNTIME_VERSION" ;;
    registry) echo "$TOOLS_DIR/registry-$DISTRIBUTION_VERSION" ;;
    *) die "unknown tool '$1' (known: kube-apiserver, etcd, kubernetes-node, gardener-crds, gvisor, gvisor-arm64, gvisor-previous, containerd, containerd17, gvisor-extension, gardener, kata, registry)" ;;
  esac
}

ensure() {
  case ${1:-all} in
    kube-apiserver) build_kube_apiserver ;;
    etcd) build_etcd ;;
    kubernetes-node) build_kubernetes_node ;;
    gardener-crds) fetch_gardener_crds ;;
    gvisor) build_gvisor ;;
    gvisor-arm64) build_gvisor_arm64 ;;
    gvisor-previous) build_gvisor_previous ;;
    containerd) build_containerd ;;
    containerd17) build_containerd17 ;;
    gvisor-extension) build_gvisor_extension ;;
    gardener) build_gardener ;;
    kata) build_kata ;;
    registry) build_registry ;;
    # What a control plane needs (make demo, make control-plane): nothing for nodes.
    control-plane) fetch_gardener_crds; build_etcd; build_kube_apiserver ;;
    all) fetch_gardener_crds; build_shared kube-apiserver etcd gardener kubernetes-node; build_gvisor; build_gvisor_arm64; build_gvisor_previous; build_containerd; build_containerd17; build_gvisor_extension; build_kata; build_registry ;;
    *) die "unknown tool '$1' (known: kube-apiserver, etcd, kubernetes-node, gardener-crds, gvisor, gvisor-arm64, gvisor-previous, containerd, containerd17, gvisor-extension, gardener, kata, registry, all)" ;;
  esac
}

case ${1:-} in
  ensure)
    # Tests build tools lazily, and test binaries may ask at the same time: one build at a time.
    mkdir -p "$TOOLS_DIR"
    exec 9>"$TOOLS_DIR/.lock"
    flock 9
    ensure "${2:-all}"
    ;;
  path) tool_path "${2:?tool name}" ;;
  env)
    echo "SANDBOX_KUBE_APISERVER=$(tool_path kube-apiserver)"
    echo "SANDBOX_ETCD=$(tool_path etcd)"
    echo "SANDBOX_GARDENER_CRDS=$(tool_path gardener-crds)"
    echo "SANDBOX_GVISOR=$(tool_path gvisor)"
    echo "SANDBOX_GVISOR_ARM64=$(tool_path gvisor-arm64)"
    echo "SANDBOX_GVISOR_PREVIOUS=$(tool_path gvisor-previous)"
    echo "SANDBOX_CONTAINERD2=$(tool_path containerd)"
    echo "SANDBOX_CONTAINERD17=$(tool_path containerd17)"
    echo "SANDBOX_GVISOR_EXTENSION=$(tool_path gvisor-extension)"
    echo "SANDBOX_GARDENER=$(tool_path gardener)"
    echo "SANDBOX_KUBERNETES_NODE=$(tool_path kubernetes-node)"
    echo "SANDBOX_KATA=$(tool_path kata)"
    echo "SANDBOX_REGISTRY=$(tool_path registry)"
    ;;
  *) die "usage: hack/tools.sh ensure [tool|all] | path <tool> | env" ;;
esac
