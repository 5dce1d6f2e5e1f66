#!/usr/bin/env bash
# Makes sure the machine has what the build and the tests need, installing what it can.
# Safe to run repeatedly; prints one line per missing thing it cannot fix.
#
#   hack/prereqs.sh demo   what `make demo` needs: Rust and Go (the build needs no protoc)
#   hack/prereqs.sh [test] what every test tier needs (`make test`, CI)
set -euo pipefail
mode=${1:-test}
case $mode in demo | test) ;; *) echo "usage: hack/prereqs.sh [demo|test]" >&2; exit 2 ;; esac

die() { echo "hack/prereqs.sh: $*" >&2; exit 1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

# Installed, not merely known to dpkg: a removed package keeps its configuration files and a
# "deinstall ... config-files" status that `dpkg -s` still answers.
installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }

apt_updated=
apt_install() {
  command -v apt-get >/dev/null || return 1
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq >/dev/null && apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

command -v cargo >/dev/null || die "Rust is not installed; install it with rustup (stable, 1.89 or newer) and retry"
command -v go >/dev/null ||
  die "Go is not installed; install Go 1.26+ (https://go.dev/doc/install) and retry"
[ "$mode" = demo ] && exit 0

if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
  echo "hack/prereqs.sh: not root and no sudo: checking only; the node and system tests need root" >&2
fi
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt >/dev/null 2>&1 ||
  die "rustfmt is missing; run 'rustup component add rustfmt'"
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy >/dev/null 2>&1 ||
  die "clippy is missing; run 'rustup component add clippy'"

# hack/claim-target.sh and the bench targets read cargo metadata with Python's json module.
if ! command -v python3 >/dev/null; then
  apt_install python3 || die "python3 is missing; install it ('apt-get install python3')"
fi

# Node tests: a real runsc sandbox needs a static busybox for its root file system.
if ! installed busybox-static; then
  apt_install busybox-static || die "busybox-static is missing; install it ('apt-get install busybox-static')"
fi

# Node tests: Debian's containerd 1.6 (config version 2) and runc run the test nodes' pods.
for pkg in containerd runc; do
  if ! installed "$pkg"; then
    apt_install "$pkg" || die "$pkg is missing; install it ('apt-get install $pkg')"
  fi
done

# The test shoot's node: the kubelet's pods get their network from Debian's CNI plugins
# (bridge, host-local, loopback, portmap); kubelet and containerd share a mount namespace
# entered with util-linux's nsenter.
if ! installed containernetworking-plugins; then
  apt_install containernetworking-plugins ||
    die "containernetworking-plugins is missing; install it ('apt-get install containernetworking-plugins')"
fi

# Kata's node tests: the payload they build takes QEMU from Debian (the hypervisor binary the
# shim's configuration must name); the guest kernel and image are Kata's own (docs/kata.md).
if ! installed qemu-system-x86 && [ "$(uname -m)" = x86_64 ]; then
  apt_install qemu-system-x86 ||
    die "qemu-system-x86 is missing; install it ('apt-get install --no-install-recommends qemu-system-x86')"
fi

# Node agent tests: a real D-Bus system bus for the systemd restarter.
if ! command -v dbus-daemon >/dev/null; then
  apt_install dbus-daemon || die "dbus-daemon is missing; install it ('apt-get install dbus-daemon')"
fi

# make bench: GNU time reports the node agent's peak RSS from the kernel's rusage.
if [ ! -x /usr/bin/time ]; then
  apt_install time || die "GNU time is missing; install it ('apt-get install time')"
fi

# Multi-architecture images: the product binary for linux/arm64 (Debian's cross toolchain links
# it, see .cargo/config.toml) and qemu-user to prove the arm64 binaries run.
if ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
  rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1 ||
    die "the Rust target aarch64-unknown-linux-gnu is missing; run 'rustup target add aarch64-unknown-linux-gnu'"
fi
for pkg in gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static; do
  if ! installed "$pkg"; then
    apt_install "$pkg" || die "$pkg is missing; install it ('apt-get install $pkg')"
  fi
done
