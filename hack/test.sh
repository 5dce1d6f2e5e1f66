#!/usr/bin/env bash
# Runs one tier of tests (make test-unit|test-control-plane|test-node|test-system), or all.
#
#   hack/test.sh unit|control-plane|node|system|all [cargo test options after --]
#
# The tiers are listed in hack/test-tiers. Each tier builds only the upstream tools its tests
# ask for (crates/testenv's Tool::path builds one when a test first needs it), prints how long
# it took, and fails on a test target that hack/test-tiers does not list (or lists twice), so
# no test is silently left out of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO=${CARGO:-cargo}
tier=${1:?usage: hack/test.sh unit|control-plane|node|system|all}
shift
[ "${1:-}" = -- ] && shift

die() { echo "hack/test.sh: $*" >&2; exit 1; }

# The table without comments and blank lines: "crate/test tier [features]".
table() { sed -e 's/#.*//' -e '/^[[:space:]]*$/d' hack/test-tiers; }

check_table() {
  local listed missing twice
  listed=$(table | awk '{print $1}' | sort)
  twice=$(uniq -d <<<"$listed")
  [ -z "$twice" ] || die "hack/test-tiers lists these more than once: $twice"
  missing=$(comm -23 <(for f in crates/*/tests/*.rs; do
    f=${f#crates/}; echo "${f%%/*}/$(basename "$f" .rs)"; done | sort) <(echo "$listed"))
  [ -z "$missing" ] || die "test targets not in hack/test-tiers (add each to a tier): $missing"
  local gone
  gone=$(comm -13 <(for f in crates/*/tests/*.rs; do
    f=${f#crates/}; echo "${f%%/*}/$(basename "$f" .rs)"; done | sort) <(echo "$listed"))
  [ -z "$gone" ] || die "hack/test-tiers lists targets that do not exist: $gone"
}

package_of() { sed -n 's/^name = "\(.*\)"/\1/p' "crates/$1/Cargo.toml" | head -n1; }

run() {
  echo "+ $CARGO test $*" >&2
  "$CARGO" test "$@"
}

run_tier() {
  local tier=$1; shift
  local started=$SECONDS
  echo "=== test tier $tier ===" >&2
  case $tier in
    unit)
      check_table
      # Every crate's own unit tests and doc tests, then the integration tests of the tier.
      run --workspace --locked --lib --bins "$@"
      run --workspace --locked --doc "$@"
      ;;
    control-plane) ;;
    node | system)
      [ "$(id -u)" -eq 0 ] ||
        die "the $tier tests run containerd and mount namespaces: run them as root (sudo -E make test-$tier)"
      ;;
    *) die "unknown tier '$tier' (unit, control-plane, node, system, all)" ;;
  esac
  # One cargo invocation per feature set with every target of the tier. --workspace (not -p)
  # so that dependencies get the features of the whole workspace, as in every other build,
  # instead of being compiled again with the features of one package's graph.
  local invocations
  invocations=$(table | awk -v t="$tier" '$2 == t {split($1, p, "/"); f = ($3 == "" ? "-" : p[1] "/" $3); a[f] = a[f] " --test " p[2]}
    END {for (f in a) print f a[f]}' | sort)
  local features targets
  while read -r features targets; do
    [ -n "$features" ] || continue
    local args=(--workspace --locked)
    if [ "$features" != - ]; then
      local crate=${features%%/*}
      args+=(--features "$(package_of "$crate")/${features#*/}")
    fi
    # shellcheck disable=SC2206
    args+=($targets)
    run "${args[@]}" "$@"
  done <<<"$invocations"
  echo "=== test tier $tier: passed in $((SECONDS - started)) s ===" >&2
}

if [ "$tier" = all ]; then
  for t in unit control-plane node system; do run_tier "$t" "$@"; done
else
  run_tier "$tier" "$@"
fi
