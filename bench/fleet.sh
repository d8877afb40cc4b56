#!/usr/bin/env bash
# bench/fleet.sh: how long `runbook fleet run` takes for N hubs at concurrency C, against one
# hub's time, when each hub's time is dominated by a copy that waits on a file server (a
# `sleep` stands for it: on a real cluster the copy runs in a pod, not on this machine).
# Target: N hubs at concurrency C take no more than 1.2 x ceil(N/C) x one hub's time.
#
# Run by hand, not by the tests:
#   cargo build --release && bench/fleet.sh
# Knobs: RUNBOOK_BIN (default target/release/runbook), BENCH_HUBS (12), BENCH_CONCURRENCY (4),
# BENCH_COPY_SECONDS (3), BENCH_STEPS (10 other steps per hub), BENCH_RUNS (3, the median is
# kept).
set -euo pipefail

bin=${RUNBOOK_BIN:-target/release/runbook}
hubs=${BENCH_HUBS:-12}
concurrency=${BENCH_CONCURRENCY:-4}
copy=${BENCH_COPY_SECONDS:-3}
steps=${BENCH_STEPS:-10}
runs=${BENCH_RUNS:-3}

if [[ ! -x $bin ]]; then
    echo "bench/fleet.sh: no runbook binary at $bin; build one (cargo build --release) or set RUNBOOK_BIN" >&2
    exit 2
fi
bin=$(realpath "$bin")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

{
    echo "runbook: 1"
    echo "name: fleet-bench"
    echo "params:"
    echo "  cluster: {required: true}"
    echo "  hub: {required: true}"
    echo "steps:"
    for i in $(seq 1 "$steps"); do
        echo "  - {id: step-$i, run: [\"true\"]}"
    done
    echo "  - {id: copy, run: [sleep, \"$copy\"]}"
    echo "  - {id: finish, run: [\"true\"]}"
} >"$work/playbook.yaml"
mkdir -p "$work/config/clusters/bench"
{
    echo "name: bench"
    echo "hubs:"
    for i in $(seq -w 1 "$hubs"); do
        echo "- name: hub-$i"
    done
} >"$work/config/clusters/bench/cluster.yaml"

# Seconds (with milliseconds) one command takes, each time with an empty state directory.
time_fleet() {
    local state=$work/state
    rm -rf "$state"
    local start end
    start=$(date +%s.%N)
    (cd "$work" && "$bin" -q --state-dir "$state" fleet run playbook.yaml --cluster bench "$@" >/dev/null 2>&1)
    end=$(date +%s.%N)
    echo "$end - $start" | bc
}

median() {
    sort -n | awk '{ values[NR] = $1 } END { print values[int((NR + 1) / 2)] }'
}

one=$(for _ in $(seq 1 "$runs"); do time_fleet --hub hub-01; done | median)
all=$(for _ in $(seq 1 "$runs"); do time_fleet --concurrency "$concurrency"; done | median)
rounds=$(((hubs + concurrency - 1) / concurrency))
limit=$(echo "1.2 * $rounds * $one" | bc)
ratio=$(echo "scale=3; $all / ($rounds * $one)" | bc)

echo "one hub:                          ${one}s"
echo "$hubs hubs at concurrency $concurrency:         ${all}s ($rounds rounds)"
echo "against $rounds x one hub:              ${ratio}x (target: at most 1.2x, ${limit}s)"
if (($(echo "$all <= $limit" | bc))); then
    echo "target met"
else
    echo "target missed" >&2
    exit 1
fi
