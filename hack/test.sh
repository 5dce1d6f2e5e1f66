#!/usr/bin/env bash
# Runs one tier of tests (make test-unit|test-control-plane|test-node|test-system), or all.
#
#   hack/test.sh unit|control-plane|node|system|all [cargo options] [-- test binary options]
#
# The tiers are listed in hack/test-tiers. Each tier builds only the upstream tools its tests
# ask for (crates/testenv's Tool::path builds one when a test first needs it), and the run
# fails on a test target that hack/test-tiers does not list (or lists twice), so no test is
# silently left out of `make test`. The integration test binaries of the tiers are built first,
# then run TEST_JOBS at a time (default 3), each printing its output and time when it ends.
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

# build ARGS...: compiles the integration test targets named in ARGS without running them and
# appends "crate-dir<TAB>target<TAB>executable" for each to $binaries.
build() {
  echo "+ $CARGO test --no-run $*" >&2
  "$CARGO" test --no-run --message-format=json-render-diagnostics "$@" |
    python3 -c '
import json, os, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in m["target"]["kind"]:
        print(os.path.dirname(m["manifest_path"]), m["target"]["name"], m["executable"], sep="\t")
' >>"$binaries"
}

# in_table_order: sorts $binaries (in the order cargo finished them) by the order of the tiers
# being run and, within a tier, by hack/test-tiers' order: the longest first, so that the pool
# ends together and a long test never starts last.
in_table_order() {
  local sorted
  sorted=$(mktemp)
  table | awk -v tiers="${tiers[*]}" '
    BEGIN {n = split(tiers, t, " "); for (i = 1; i <= n; i++) rank[t[i]] = i}
    FILENAME == "-" {order[$1] = sprintf("%03d %04d", rank[$2], FNR); next}
    {n = split($1, d, "/"); key = d[n] "/" $2; print (key in order ? order[key] : "999 9999") "\t" $0}
  ' - FS='\t' "$binaries" | sort -s -t "$(printf '\t')" -k1,1 | cut -f2- >"$sorted"
  mv "$sorted" "$binaries"
}

# run_binaries JOBS: runs every test binary in $binaries, JOBS at a time, each in its crate's
# folder as `cargo test` would. Most integration tests wait on processes (API servers,
# containerd, a kubelet), not on the CPU, so running several at once shortens a tier without
# starving any. Each binary's output is printed whole when it ends (never interleaved), with
# its time; the tier fails if any failed, after all have run.
run_binaries() {
  local jobs=$1 logs n=0
  logs=$(mktemp -d)
  local -A names=() since=()
  # Waits for one binary to end and prints its output and time.
  wait_one() {
    local pid rc=0
    wait -n -p pid || rc=$?
    local name=${names[$pid]}
    echo "--- ${name/_//}: $([ "$rc" -eq 0 ] && echo passed || echo "FAILED (exit $rc)") in $((SECONDS - ${since[$pid]})) s" >&2
    cat "$logs/$name.log" >&2
    [ "$rc" -eq 0 ] || failed+=("${name/_//}")
    unset "names[$pid]"
  }
  local dir target exe name
  while IFS=$'\t' read -r dir target exe; do
    while [ "${#names[@]}" -ge "$jobs" ]; do wait_one; done
    name="$(basename "$dir")_$target"
    (cd "$dir" && CARGO=$CARGO exec "$exe" "${binary_args[@]}") >"$logs/$name.log" 2>&1 &
    names[$!]=$name
    since[$!]=$SECONDS
    n=$((n + 1))
    echo "--- started ${name/_//}" >&2
  done <"$binaries"
  while [ "${#names[@]}" -gt 0 ]; do wait_one; done
  rm -rf "$logs"
  echo "--- $n test binaries ran" >&2
}

run_tier() {
  local tier=$1
  echo "=== test tier $tier ===" >&2
  case $tier in
    unit)
      check_table
      # Every crate's own unit tests and doc tests, then the integration tests of the tier.
      run --workspace --locked --lib --bins "${cargo_args[@]}" -- "${binary_args[@]}"
      run --workspace --locked --doc "${cargo_args[@]}" -- "${binary_args[@]}"
      ;;
    control-plane) ;;
    node | system)
      [ "$(id -u)" -eq 0 ] ||
        die "the $tier tests run containerd and mount namespaces: run them as root (sudo -E make test-$tier)"
      ;;
    *) die "unknown tier '$tier' (unit, control-plane, node, system, all)" ;;
  esac
  # One cargo build per feature set with every target of the tier. --workspace (not -p) so
  # that dependencies get the features of the whole workspace, as in every other build,
  # instead of being compiled again with the features of one package's graph (the run order is
  # hack/test-tiers', in_table_order).
  local features targets
  while read -r features targets; do
    [ -n "$features" ] || continue
    if [ "$features" = - ]; then
      plain+=("$targets")
    else
      featured+=("$(package_of "${features%%/*}")/${features#*/}	$targets")
    fi
  done < <(table | awk -v t="$tier" '$2 == t {split($1, p, "/"); f = ($3 == "" ? "-" : p[1] "/" $3);
      if (!(f in a)) order[++n] = f; a[f] = a[f] " --test " p[2]}
    END {for (i = 1; i <= n; i++) print order[i] a[order[i]]}')
}

# Options before `--` go to cargo, after it to every test binary (a name filter, --nocapture).
cargo_args=() binary_args=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do cargo_args+=("$1"); shift; done
[ "${1:-}" = -- ] && shift
binary_args=("$@")

# Several binaries at once (TEST_JOBS, default 3): measured on 2 cores in docs/testing.md.
jobs=${TEST_JOBS:-3}
binaries=$(mktemp)
trap 'rm -f "$binaries"' EXIT
started=$SECONDS
# The longest tier's binaries enter the pool first, so the pool ends together; the unit
# tier's own tests (run by cargo as they are built) come first and fail fast.
if [ "$tier" = all ]; then tiers=(unit system node control-plane); else tiers=("$tier"); fi
plain=() featured=() failed=()
for t in "${tiers[@]}"; do run_tier "$t"; done

# Targets that need features (the crash test) are built and run first, one feature set at a
# time: the product binary they run (CARGO_BIN_EXE_*) is target/debug's, which the next build
# replaces. The plain build then puts back the binary we ship for every other test.
for f in "${featured[@]}"; do
  # shellcheck disable=SC2086
  build --workspace --locked --features "${f%%	*}" ${f#*	} "${cargo_args[@]}"
  run_binaries "$jobs"
  : >"$binaries"
done
# shellcheck disable=SC2086
[ "${#plain[@]}" -eq 0 ] || build --workspace --locked ${plain[*]} "${cargo_args[@]}"
in_table_order
built=$SECONDS
echo "=== built the test binaries in $((built - started)) s; running $(wc -l <"$binaries") of them, $jobs at a time ===" >&2
run_binaries "$jobs"
[ "${#failed[@]}" -eq 0 ] ||
  die "failed test binaries (after $((SECONDS - started)) s): ${failed[*]}"
echo "=== test tiers ${tiers[*]}: passed in $((SECONDS - started)) s (running $((SECONDS - built)) s) ===" >&2
