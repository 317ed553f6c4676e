#!/usr/bin/env bash
# An A/B of the whole service under load: two release builds, their runs of
# `sosvault load` alternating (so a slow minute of the machine falls on both),
# each run's output kept, and one table of the figures docs/BENCHMARKS.md
# weighs a change by (the 10% rule): mean and range of each.
#
#   scripts/ab-load.sh BEFORE_DIR AFTER_DIR
#
# Each DIR holds a release build's `sosvault`, `sosvault-server` and
# `sosvault-trustee` (the load generator starts the services it finds beside
# itself). To make one of a commit:
#
#   git worktree add /tmp/ab-before <commit>
#   (cd /tmp/ab-before && cargo build --release --locked --workspace --bins)
#   mkdir -p /tmp/bin-before && cp /tmp/ab-before/target/release/sosvault{,-server,-trustee} /tmp/bin-before/
#
# Knobs (environment): RUNS per build and backend (3), BACKENDS ("sqlite
# postgres"; postgres runs on the throwaway cluster of `.ci/postgres`, a
# fresh database each run), NODES for postgres (1), STUDENTS (20000), STEADY
# seconds (20), BURST (1000), OUT (target/ab-load), LOAD_ARGS (more
# arguments for `sosvault load`), TABLE_ONLY (set: no runs, the table of
# the outputs already in OUT). Run nothing else meanwhile: the figures
# are a 2-core machine's.

set -euo pipefail

cd "$(dirname "$0")/.."
if [[ $# -ne 2 ]]; then
    sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
BUILDS=(before after)
declare -A BIN=([before]=$1 [after]=$2)
for b in "${BUILDS[@]}"; do
    for exe in sosvault sosvault-server sosvault-trustee; do
        if [[ ! -x ${BIN[$b]}/$exe ]]; then
            echo "ab-load: ${BIN[$b]}/$exe is missing: build the release binaries first (see the top of $0)" >&2
            exit 2
        fi
    done
done
RUNS=${RUNS:-3}
BACKENDS=${BACKENDS:-sqlite postgres}
NODES=${NODES:-1}
STUDENTS=${STUDENTS:-20000}
STEADY=${STEADY:-20}
BURST=${BURST:-1000}
OUT=${OUT:-target/ab-load}
mkdir -p "$OUT"

psql_bin() {
    local p
    for p in /usr/lib/postgresql/*/bin/psql; do
        [[ -x $p ]] && { echo "$p"; return; }
    done
    command -v psql || { echo "ab-load: no psql (apt-get install postgresql)" >&2; exit 2; }
}

# One run of build $1 on backend $2, numbered $3: its output in $OUT.
run() {
    local build=$1 backend=$2 n=$3
    local out="$OUT/$backend-$build-$n.txt"
    local args=(load --students "$STUDENTS" --steady-secs "$STEADY" --burst "$BURST")
    # shellcheck disable=SC2206 # LOAD_ARGS is split on purpose
    args+=(${LOAD_ARGS:-})
    local env=()
    if [[ $backend == postgres ]]; then
        local url db
        url=$(bash .ci/postgres start)
        db="ab_load_${n}_$$"
        "$(psql_bin)" "$url" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
        env=(SOSVAULT_LOAD_DATABASE_URL="${url%/*}/$db")
        args+=(--nodes "$NODES")
    fi
    echo "[$(date -u +%H:%M:%S)] $backend $build run $n -> $out" >&2
    env "${env[@]}" "${BIN[$build]}/sosvault" "${args[@]}" >"$out" 2>&1 || {
        echo "ab-load: the run failed; its output: $out" >&2
        exit 1
    }
    if [[ $backend == postgres ]]; then
        "$(psql_bin)" "$url" -qc "DROP DATABASE IF EXISTS $db" >/dev/null || true
    fi
}

for n in $(seq 1 "$RUNS"); do
    [[ -n ${TABLE_ONLY:-} ]] && break
    for backend in $BACKENDS; do
        for build in "${BUILDS[@]}"; do
            run "$build" "$backend" "$n"
        done
    done
done

# The figures of one run's output, one `name<TAB>value` a line: the p99s,
# the burst's median 202 (stop 24's open question) and the bare endpoint's
# p99s measured in the same run (the floor issue 17's 5x is counted from).
figures() {
    sed -nE \
        -e 's/^  enrollment: ([0-9.]+)\/s.*/enrollment per second\t\1/p' \
        -e 's/^  (steady|burst): (panic -> [a-z0-9 ]*[a-z0-9]) +[0-9]+ +[0-9.]+ +([0-9.]+) .*/\1 \2, p99 ms\t\3/p' \
        -e 's/^  burst: all [0-9]+ assigned within ([0-9]+) ms.*/burst all assigned, ms\t\1/p' \
        "$1"
    sed -nE \
        -e 's/^  burst: panic -> 202 +[0-9]+ +([0-9.]+) .*/burst panic -> 202, p50 ms\t\1/p' \
        -e 's/^  (steady|burst): bare axum \(floor\) +[0-9]+ +[0-9.]+ +([0-9.]+) .*/\1 floor, p99 ms\t\2/p' \
        "$1"
}

echo
echo "$RUNS runs each, mean (min-max); outputs in $OUT"
for backend in $BACKENDS; do
    echo
    echo "$backend:"
    for build in "${BUILDS[@]}"; do
        for n in $(seq 1 "$RUNS"); do
            figures "$OUT/$backend-$build-$n.txt" | sed "s/^/$build\t/"
        done
    done | awk -F'\t' '
        {
            key = $2; b = $1; v = $3 + 0
            if (!(key in seen)) { seen[key] = 1; order[++k] = key }
            sum[b, key] += v; cnt[b, key]++
            if (!((b, key) in lo) || v < lo[b, key]) lo[b, key] = v
            if (!((b, key) in hi) || v > hi[b, key]) hi[b, key] = v
        }
        END {
            printf "  %-40s %24s %24s %8s\n", "", "before", "after", "change"
            for (i = 1; i <= k; i++) {
                key = order[i]
                if (cnt["before", key] == 0 || cnt["after", key] == 0) continue
                mb = sum["before", key] / cnt["before", key]
                ma = sum["after", key] / cnt["after", key]
                change = mb == 0 ? 0 : (ma - mb) / mb * 100
                printf "  %-40s %8.2f (%6.2f-%6.2f) %8.2f (%6.2f-%6.2f) %+7.1f%%\n", key, mb, lo["before", key], hi["before", key], ma, lo["after", key], hi["after", key], change
            }
        }'
done
