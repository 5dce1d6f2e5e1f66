#!/usr/bin/env bash
# Makes a shared Cargo target directory safe for this clone.
#
# Cargo fingerprints this workspace's own crates by paths relative to the workspace root, so
# artifacts built from another clone of the same commit look fresh here although what they
# compiled in (env!("CARGO_MANIFEST_DIR"), file!() for snapshot and fixture paths) names the
# other clone, which may be gone: tests then fail with "No such file or directory". When the
# target directory was last used from another path, rebuild our own crates (dependencies stay).
set -euo pipefail
cd "$(dirname "$0")/.."

target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
owner=$target/.workspace-root
if [ -d "$target" ] && [ "$(cat "$owner" 2>/dev/null || true)" != "$PWD" ]; then
  echo "target directory $target was last used from $(cat "$owner" 2>/dev/null || echo "an unknown clone"); rebuilding this workspace's crates"
  for package in $(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(" ".join(p["name"] for p in json.load(sys.stdin)["packages"]))'); do
    cargo clean --quiet -p "$package"
    cargo clean --quiet --release -p "$package"
  done
fi
mkdir -p "$target"
echo "$PWD" > "$owner"
