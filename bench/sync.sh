#!/usr/bin/env bash
# bench/sync.sh: the `sync` action against the tools people use today, on the same trees.
#
# Run on demand (it is not part of the test suite):
#
#     bench/sync.sh                          # builds with `cargo build --release` first
#     RUNBOOK_BIN=target/release/runbook bench/sync.sh
#     BENCH_FILES=200000 bench/sync.sh       # the issue's size (slow on 2 cores)
#     TMPDIR=/dev/shm bench/sync.sh          # trees on tmpfs
#
# For each tree (skewed: one home with half the bytes and 200 small homes; uniform: 200
# equal homes) and each pass it times, one after the other on the same source:
#   rsync      a single `rsync -a --delete SRC/ DST/`
#   parallel   `ls SRC | parallel -j4 rsync -a --delete SRC/{} DST/` (xargs -P4 when GNU
#              parallel is missing), what the runbooks do today
#   sync       `runbook run` of a playbook with `sync: {jobs: 4, delete: true}`
# Passes: the initial copy into an empty destination; a pass with nothing changed; a final
# pass after rewriting BENCH_CHANGE_PCT % of the files (appending to them). The passes
# after the first run the same step again (`run --from copy`), as a resumed final copy does,
# so its journal knows when the previous pass started.
#
# Prints seconds and the ratios sync/rsync and sync/parallel (lower is better).
#
# IMPORTANT: this measures the local disk (or tmpfs), where metadata costs nothing and
# parallelism barely helps (see shared/NOTES.md: tmpfs initial copy 2.68 s single, 4.11 s
# `ls|parallel`, 2.64 s sharded). It says little about NFS, where every stat is a round trip
# and the concurrent walks are what makes the final pass short. A FUSE passthrough that adds
# 300 us per metadata operation (NOTES, "Emulating NFS latency") is the next step for this
# benchmark; it is not written yet.
#
# Knobs (environment):
#   RUNBOOK_BIN        binary to measure (default: build, then target/release/runbook)
#   BENCH_FILES        files per tree (default 20000)
#   BENCH_BYTES_MB     total size of a tree in MiB (default 400)
#   BENCH_CHANGE_PCT   percentage of files changed before the final pass (default 2)
#   BENCH_JOBS         workers for `sync` and `parallel` (default 4)
#   BENCH_TREES        trees to run (default "skewed uniform")
#
# Exit status: 0 done, 2 the benchmark itself failed. Everything goes in a temp dir under
# $TMPDIR that is removed at the end.

set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
files="${BENCH_FILES:-20000}"
total_mb="${BENCH_BYTES_MB:-400}"
change_pct="${BENCH_CHANGE_PCT:-2}"
jobs="${BENCH_JOBS:-4}"
trees="${BENCH_TREES:-skewed uniform}"

die() { echo "bench/sync.sh: $*" >&2; exit 2; }
command -v rsync >/dev/null || die "rsync is not installed (apt-get install rsync)"
command -v python3 >/dev/null || die "python3 is needed to generate the trees"
if command -v parallel >/dev/null && parallel --version 2>/dev/null | grep -q GNU; then
    par_kind="parallel"
else
    par_kind="xargs -P$jobs"
fi

if [[ -n "${RUNBOOK_BIN:-}" ]]; then
    RUNBOOK_BIN="$(cd "$(dirname "$RUNBOOK_BIN")" && pwd)/$(basename "$RUNBOOK_BIN")"
else
    (cd "$here" && cargo build --release --quiet) || die "cargo build --release failed"
    RUNBOOK_BIN="$here/target/release/runbook"
fi
[[ -x "$RUNBOOK_BIN" ]] || die "no runbook binary at $RUNBOOK_BIN"

work="$(mktemp -d "${TMPDIR:-/tmp}/bench-sync.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# generate TREE KIND: 200 homes of small files; `skewed` adds one home with half the bytes
# (a few big files and many medium ones), `uniform` spreads the bytes evenly.
generate() {
    python3 - "$1" "$2" "$files" "$total_mb" <<'PY'
import os, sys, random
root, kind, files, total_mb = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
random.seed(42)
total = total_mb << 20
homes = 200
chunk = os.urandom(1 << 20)
def write(path, size):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        while size > 0:
            n = min(size, len(chunk))
            f.write(chunk[:n]); size -= n
small_files = files if kind == "uniform" else files * 9 // 10
small_bytes = total if kind == "uniform" else total // 2
per_file = max(1, small_bytes // max(1, small_files))
for i in range(small_files):
    home = i % homes
    write(f"{root}/home{home:03d}/work/d{(i // homes) % 20:02d}/f{i}.dat", per_file)
    if i < homes:
        write(f"{root}/home{home:03d}/.bashrc", 100)
if kind == "skewed":
    big = total // 2
    hog_files = files - small_files
    for j in range(4):
        write(f"{root}/hog/datasets/big{j}.bin", big // 8)
    per = max(1, (big // 2) // max(1, hog_files))
    for j in range(hog_files):
        write(f"{root}/hog/cache/c{j % 50:02d}/m{j}.bin", per)
PY
}

# change ROOT PCT: append to PCT % of the files.
change() {
    python3 - "$1" "$2" <<'PY'
import os, sys, random
root, pct = sys.argv[1], float(sys.argv[2])
random.seed(7)
paths = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
for p in random.sample(paths, max(1, int(len(paths) * pct / 100))):
    with open(p, "ab") as f:
        f.write(b"changed\n")
PY
}

now() { date +%s.%N; }
# Each timing starts with no dirty pages and ends when its writes are on disk, so that one
# tool does not pay for the writeback of the one before it.
flush() { command sync; }
seconds() { python3 -c "print(f'{$2 - $1:.2f}')"; }

time_rsync() { flush; local t0; t0=$(now); rsync -a --delete "$1/" "$2/"; flush; seconds "$t0" "$(now)"; }
time_parallel() {
    flush
    local t0; t0=$(now)
    mkdir -p "$2"
    if [[ "$par_kind" == parallel ]]; then
        (cd "$1" && ls | parallel -j"$jobs" rsync -a --delete "$1/{}" "$2/")
    else
        (cd "$1" && ls | xargs -P"$jobs" -I{} rsync -a --delete "$1/{}" "$2/")
    fi
    flush
    seconds "$t0" "$(now)"
}
time_sync() {
    local dir="$1" t0; shift
    flush
    t0=$(now)
    (cd "$dir" && "$RUNBOOK_BIN" --quiet run playbook.yaml "$@" >/dev/null 2>"$dir/last.log") \
        || { cat "$dir/last.log" >&2; die "runbook failed"; }
    flush
    seconds "$t0" "$(now)"
}
ratio() { python3 -c "print(f'{$1 / max($2, 0.001):.2f}x')"; }

printf '%s\n' "sync benchmark: $files files, $total_mb MiB per tree, $jobs workers, $par_kind, $(nproc) cores, under ${TMPDIR:-/tmp} (local disk: see the header)"
printf '%-8s %-22s %9s %9s %9s %14s %14s\n' tree pass rsync parallel sync sync/rsync sync/parallel
for kind in $trees; do
    src="$work/$kind/src"
    generate "$src" "$kind"
    # Change times older than the first pass's start (the final pass's ctime rule).
    sleep 2
    for tool in rsync parallel sync; do mkdir -p "$work/$kind/$tool"; done
    cat > "$work/$kind/sync/playbook.yaml" <<EOF
runbook: 1
name: bench
steps:
  - id: copy
    sync: {from: "$src", to: "$work/$kind/sync/dst", jobs: $jobs, delete: true}
EOF
    for pass in initial unchanged "changed-$change_pct%"; do
        if [[ "$pass" == changed-* ]]; then change "$src" "$change_pct"; fi
        a=$(time_rsync "$src" "$work/$kind/rsync/dst")
        b=$(time_parallel "$src" "$work/$kind/parallel/dst")
        if [[ "$pass" == initial ]]; then
            c=$(time_sync "$work/$kind/sync")
        else
            c=$(time_sync "$work/$kind/sync" --from copy)
        fi
        printf '%-8s %-22s %9s %9s %9s %14s %14s\n' "$kind" "$pass" "$a" "$b" "$c" \
            "$(ratio "$c" "$a")" "$(ratio "$c" "$b")"
    done
    # Every tool made the same tree.
    if ! out=$(rsync -anic --delete "$src/" "$work/$kind/sync/dst/") || [[ -n "$out" ]]; then
        die "the sync destination differs from the source: $out"
    fi
    rm -rf "$work/$kind"
done
