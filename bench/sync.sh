#!/usr/bin/env bash
# bench/sync.sh: the `sync` action against the tools people use today, on the same trees,
# on the local disk and behind emulated NFS latency.
#
# Run on demand, as root (it is not part of the test suite):
#
#     bench/sync.sh                          # the comparison (builds both binaries first;
#                                            # about an hour on a busy 2-core machine)
#     bench/sync.sh plan-memory              # peak memory of planning a 1M-file tree
#     BENCH_FILES=200000 BENCH_RUNS=1 bench/sync.sh      # the issue's size (~35 min a tree)
#     BENCH_SETUPS=local BENCH_TREES=skewed bench/sync.sh
#     RUNBOOK_BIN=target/release/runbook bench/sync.sh   # this binary, no build
#     BENCH_SETUPS=fuse BENCH_DST=fuse BENCH_TOOLS="rsync sync trust" bench/sync.sh
#                                            # both trees behind latency, as NFS to NFS
#
# `copy` (the default mode) compares, in one run on the same trees:
#   rsync      a single `rsync -a --delete SRC/ DST/`
#   parallel   `ls SRC | parallel -j4 rsync -a --delete SRC/{} DST/`, what the runbooks
#              do today (`xargs -P4` if GNU parallel cannot be installed)
#   fpsync     `fpsync -n 4` (package fpart); the passes after the first add `-E`, its
#              directory mode, the only one that deletes (its man page's final pass)
#   rclone     `rclone sync --transfers 4 --checkers 32` (package rclone); it keeps no
#              directory times, permissions or owners (see the metadata column)
#   sync       `runbook run` of a playbook with `sync: {jobs: 4, delete: true}`; the passes
#              after the first run the step again (`run --from copy`), so its journal knows
#              when the previous pass started (the change-time rule of the final pass)
#   walk-first `sync` that compares the whole trees before it copies
#              (`RUNBOOK_SYNC_WALK_FIRST=1`), as every pass did before passes copied while
#              they walk: the difference is what the overlap of walk and copy brings
#   auto       the same with `jobs: auto` (4 to 32 workers, tuned while it copies); the
#              counts it went through in run 1 are printed after each table ("4>8>16")
#   trust      `sync` with `trust_destination: true`: the passes after the first take the
#              destination's listings from the manifest the pass before left, instead of
#              walking it (with the destination on the local disk it saves little: put it
#              behind latency too with BENCH_DST=fuse); behind latency, its final and
#              nothing-changed passes are compared with their bound (below)
#   parallel-N `ls SRC | parallel -jN rsync ...` for N = 8, 16, 32: the hand-tuned counts a
#              person reaches after hours, which `auto` should match without the hours
# on trees (skewed: one directory with half the bytes but a tenth of the files, and 200
# small homes; hog: one directory with half the bytes and half the files, the home that
# keeps one `ls | parallel` worker busy long after the others are done; uniform: 200 equal
# homes) and three passes: the initial copy into an empty destination, a pass
# with nothing changed, and a final pass after changing BENCH_CHANGE_PCT % of the files
# (40% appended to, 40% rewritten with their size and mtime kept, as `cp -p` or `tar x`
# leave them, 10% deleted, and as many new files as deleted ones).
#
# Setups (where the source is; the destinations are on the local disk, on a tmpfs, or
# behind latencyfs as well: BENCH_DST):
#   local      the source on the disk under $TMPDIR, where metadata costs nothing
#   fuse       the same source through bench/latencyfs, a FUSE passthrough that makes every
#              metadata operation (lookup, getattr, open, readdir, ...) take BENCH_DELAY_US
#              (default 300 µs) as an NFS round trip does; data reads are not delayed. Each
#              timed command gets a fresh mount, so none inherits another's kernel caches.
#              Before the runs, the effective added latency is measured: a cold `lstat`
#              through a 0 µs mount and through the delayed one, the difference printed.
#   fuse:N     the same with N µs (`fuse:0`: FUSE's own cost, the baseline to compare the
#              delayed numbers with rather than the bare disk)
#
# Prints, per setup and tree, the median seconds over BENCH_RUNS runs (the tool order
# rotates between runs), then the ratios the issue's targets use, from the same run:
#   - skewed and hog trees, initial copy: auto / parallel <= 0.5 and auto no slower than the
#     best of parallel and parallel-N; fixed sync / parallel <= 1.0
#   - skewed and hog trees, initial copy: sync / parallel <= 0.7, next to how busy
#     `ls | parallel`'s workers were (from its --joblog: its rsyncs' total time / (jobs x
#     its wall time)); the idle part is what a better split of the big home can win back
#   - behind latency, final and nothing-changed passes: sync / rsync <= 0.3 and
#     sync / rclone <= 1.0; trust / bound <= 1.3, the bound being the metadata requests
#     latencyfs served to the trust pass in run 1 (the source's, plus the destination's with
#     BENCH_DST=fuse) x the delay / N, N the most threads the pass's walk used (from its
#     journal; 16 when none is journaled) but no more than latencyfs's 16 request threads
#     (the time the pass must take if every request it makes overlaps N-1 others)
# and, after the first run's final pass, what each destination still gets wrong: files
# whose contents differ from the source (`rsync -nc`: the size-and-mtime-kept changes
# that a quick check misses) and all itemized differences (`rsync -ni`: times, modes).
#
# `plan-memory` generates a tree of BENCH_PLAN_FILES (1,000,000) files and measures the
# peak RSS (`/usr/bin/time -v`) of `runbook plan` of a sync step from it into an empty
# destination (every file is planned), against the 200 MB target (200 * 10^6 bytes), and
# with BENCH_PLAN_FINAL=1 that of a final pass against a full copy (both trees walked).
#
# Knobs (environment):
#   RUNBOOK_BIN        binary to measure (default: `cargo build --release`, then use it;
#                      builds go to cargo's target directory: CARGO_TARGET_DIR is honoured)
#   BENCH_FILES        files per tree (default 20000; the issue says about 200k)
#   BENCH_BYTES_MB     total size of a tree in MiB (default 400)
#   BENCH_CHANGE_PCT   percentage of files changed before the final pass (default 0.5)
#   BENCH_JOBS         workers for sync, parallel, fpsync and rclone (default 4)
#   BENCH_RUNS         runs per setup and tree; medians are printed (default 3)
#   BENCH_TREES        trees (default "skewed uniform"; also "hog")
#   BENCH_PASSES       passes (default "initial unchanged final"; e.g. "initial")
#   BENCH_SETUPS       setups (default "local fuse"; e.g. "local fuse:0 fuse")
#   BENCH_TOOLS        tools (default "rsync parallel parallel-8 parallel-16 parallel-32
#                      fpsync rclone sync auto trust")
#   BENCH_DELAY_US     latency per metadata operation behind FUSE (default 300)
#   BENCH_FUSE_ARGS    more latencyfs flags, e.g. "--readdirplus" or "--file-ttl 1"
#   BENCH_DST          where the destinations are: `disk` (default, under $TMPDIR) or
#                      `tmpfs` (a tmpfs mounted for the run: on a VM whose disk is shared,
#                      writing and deleting 200k files makes the disk's timings vary by 5x
#                      from run to run; a tmpfs leaves what the tools themselves cost), or
#                      `fuse` (on the disk) and `fuse-tmpfs` (on a tmpfs) seen through a
#                      writable latencyfs mount with the source's delay and BENCH_FUSE_ARGS,
#                      as when both trees are on NFS (the old server and the new one): in
#                      the fuse:N setups each timed command gets a fresh mount of its
#                      destination's parent (the `sync` manifest lies beside the destination,
#                      so it is behind the latency too), and its requests count in the
#                      trust bound; the local setup keeps its destinations as they are, no
#                      FUSE, as it keeps its source
#   BENCH_INSTALL      1 (default): apt-get install missing packages; 0: skip the tool
#   BENCH_TSV          also append every timing to this file (setup tree pass tool run s)
#   BENCH_PLAN_FILES   files in the plan-memory tree (default 1000000)
#   BENCH_PLAN_TREE    plan-memory: use this existing tree instead of generating one
#                      (BENCH_PLAN_FINAL=1 changes files in it)
#   BENCH_PLAN_FINAL   plan-memory: 1 also copies the tree with `runbook run` (its peak
#                      RSS printed too), changes BENCH_CHANGE_PCT % of it and measures the
#                      final pass's plan (default 0)
#
# Exit status: 0 done (targets missed are reported, not failed), 2 the benchmark itself
# failed. Everything goes in a temp dir under $TMPDIR, removed at the end; the FUSE mounts
# are unmounted on exit, on failure and on Ctrl-C.

set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mode="${1:-copy}"
if [[ "$mode" == -h || "$mode" == --help ]]; then
    sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 0
fi
[[ "$mode" == copy || "$mode" == plan-memory ]] \
    || { echo "usage: bench/sync.sh [copy|plan-memory|--help]" >&2; exit 2; }

files="${BENCH_FILES:-20000}"
total_mb="${BENCH_BYTES_MB:-400}"
change_pct="${BENCH_CHANGE_PCT:-0.5}"
jobs="${BENCH_JOBS:-4}"
runs="${BENCH_RUNS:-3}"
trees="${BENCH_TREES:-skewed uniform}"
setups="${BENCH_SETUPS:-local fuse}"
tools="${BENCH_TOOLS:-rsync parallel parallel-8 parallel-16 parallel-32 fpsync rclone sync walk-first auto trust}"
delay_us="${BENCH_DELAY_US:-300}"
fuse_args="${BENCH_FUSE_ARGS:-}"
install="${BENCH_INSTALL:-1}"
dst_kind="${BENCH_DST:-disk}"
plan_files="${BENCH_PLAN_FILES:-1000000}"

die() { echo "bench/sync.sh: $*" >&2; exit 2; }
note() { echo "note: $*"; }

# ensure COMMAND PACKAGE: true if COMMAND is there, installing PACKAGE with apt-get first
# when it is not (as root, unless BENCH_INSTALL=0).
apt_updated=
ensure() {
    command -v "$1" >/dev/null && return 0
    if [[ "$install" != 1 || $EUID -ne 0 ]] || ! command -v apt-get >/dev/null; then
        return 1
    fi
    echo "installing the Debian package $2 (for $1) with apt-get ..."
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null 2>&1; then
        if [[ -z "$apt_updated" ]]; then
            apt_updated=1
            apt-get update -q >/dev/null 2>&1 || true
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null 2>&1 || true
        fi
    fi
    command -v "$1" >/dev/null
}

ensure python3 python3 || die "python3 is needed to generate the trees"
ensure rsync rsync || die "rsync is not installed and could not be (apt-get install rsync)"

# Where cargo puts what it builds (CARGO_TARGET_DIR or a config may move it from target/).
target_dir() {
    (cd "$here" && cargo metadata --format-version 1 --no-deps) \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}

if [[ -n "${RUNBOOK_BIN:-}" ]]; then
    RUNBOOK_BIN="$(cd "$(dirname "$RUNBOOK_BIN")" && pwd)/$(basename "$RUNBOOK_BIN")"
else
    (cd "$here" && cargo build --release --quiet) || die "cargo build --release failed"
    RUNBOOK_BIN="$(target_dir)/release/runbook"
fi
[[ -x "$RUNBOOK_BIN" ]] || die "no runbook binary at $RUNBOOK_BIN"

work="$(mktemp -d "${TMPDIR:-/tmp}/bench-sync.XXXXXX")"
# A copy: a build in the same tree during the run would replace the binary under us.
cp "$RUNBOOK_BIN" "$work/runbook"
RUNBOOK_BIN="$work/runbook"
mnt="$work/mnt"
mkdir "$mnt"
# The destinations, on the disk or a tmpfs (BENCH_DST), and where a tool sees its
# destination's parent when BENCH_DST=fuse puts it behind latencyfs.
dst_root="$work/dst"
mkdir "$dst_root"
dst_mnt="$work/dst-mnt"
mkdir "$dst_mnt"
fuse_pid=
dst_fuse_pid=
# stop_latencyfs POINT PID: unmounts POINT and waits for its latencyfs, PID, to exit.
stop_latencyfs() {
    [[ -n "$2" ]] || return 0
    if mountpoint -q "$1"; then
        umount "$1" 2>/dev/null || umount -l "$1" 2>/dev/null || kill -TERM "$2" 2>/dev/null || true
    fi
    wait "$2" 2>/dev/null || true
}
unmount() { stop_latencyfs "$mnt" "$fuse_pid"; fuse_pid=; }
unmount_destination() { stop_latencyfs "$dst_mnt" "$dst_fuse_pid"; dst_fuse_pid=; }
cleanup() {
    unmount
    unmount_destination
    if mountpoint -q "$dst_root" 2>/dev/null; then umount "$dst_root" || umount -l "$dst_root" || true; fi
    if mountpoint -q "$mnt" 2>/dev/null || mountpoint -q "$dst_mnt" 2>/dev/null; then
        echo "bench/sync.sh: $mnt or $dst_mnt is still mounted; left $work in place" >&2
    else
        rm -rf --one-file-system "$work"
    fi
}
trap cleanup EXIT
# A signal ends the script through `exit`, so the EXIT trap unmounts (a closed output pipe
# too: `bench/sync.sh | head` would otherwise leave the temp dir behind).
trap 'exit 130' INT TERM HUP
trap 'exit 141' PIPE
# dst_fuse: 1 when the destinations of the fuse:N setups are behind latencyfs.
dst_fuse=0
case "$dst_kind" in
    disk) ;;
    fuse) dst_fuse=1 ;;
    tmpfs|fuse-tmpfs)
        [[ "$dst_kind" == fuse-tmpfs ]] && dst_fuse=1
        mount -t tmpfs -o "size=$(( $(awk '/MemAvailable/ {print $2}' /proc/meminfo) * 3 / 4 ))k" \
            bench-dst "$dst_root" || die "cannot mount a tmpfs on $dst_root (BENCH_DST=$dst_kind needs root)" ;;
    *) die "BENCH_DST is disk, tmpfs, fuse or fuse-tmpfs, not $dst_kind" ;;
esac

now() { date +%s.%N; }
# children_cpu VAR: sets VAR to the CPU seconds (user + system) this shell's finished
# children have used so far, from bash's `times` (its second line: "0m1.250s 0m0.310s").
# `times` runs in this shell: in a pipe or $(...) it would count a forked subshell's
# children, none.
children_cpu() {
    times > "$work/times"
    printf -v "$1" '%s' "$(tail -1 "$work/times" | awk '{
        for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); total += t[1] * 60 + t[2] }
        printf "%.2f", total }')"
}
# process_cpu PID: the CPU seconds a running process has used (utime + stime of /proc/PID/stat).
process_cpu() {
    awk -v hz="$(getconf CLK_TCK)" '{
        sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat" 2>/dev/null
}
# Each timing starts with no dirty pages and ends when its writes are on disk, so that one
# tool does not pay for the writeback of the one before it.
flush() { command sync; }
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }
# median_of KEY: the median of the times recorded under KEY.
median_of() { local -a values; read -ra values <<< "${times[$1]}"; median "${values[@]}"; }
# balance_median KEY: the median of the balances recorded under KEY (nothing if none).
balance_median() {
    local -a values
    read -ra values <<< "${balance_of[$1]:-}"
    [[ ${#values[@]} -eq 0 ]] || median "${values[@]}"
}
median() { python3 -c 'import statistics, sys; print(f"{statistics.median(map(float, sys.argv[1:])):.2f}")' "$@"; }
ratio() { python3 -c "print(f'{$1 / max($2, 0.001):.2f}')"; }

# ---------------------------------------------------------------------------------------
# The trees.

# generate ROOT KIND FILES: 200 homes of small files (and a dotfile each); `skewed` puts
# half the bytes and a tenth of the files in one more directory (four big files and many
# medium ones), `hog` half the bytes and half the files.
generate() {
    python3 - "$1" "$2" "$3" "$total_mb" <<'PY'
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
small_files = {"uniform": files, "skewed": files * 9 // 10, "hog": files // 2}[kind]
small_bytes = total if kind == "uniform" else total // 2
per_file = max(1, small_bytes // max(1, small_files))
for i in range(small_files):
    home = i % homes
    write(f"{root}/home{home:03d}/work/d{(i // homes) % 20:02d}/f{i}.dat", per_file)
    if i < homes:
        write(f"{root}/home{home:03d}/.bashrc", 100)
if kind in ("skewed", "hog"):
    big = total // 2
    hog_files = files - small_files
    for j in range(4):
        write(f"{root}/hog/datasets/big{j}.bin", big // 8)
    per = max(1, (big // 2) // max(1, hog_files))
    for j in range(hog_files):
        write(f"{root}/hog/cache/c{j % 50:02d}/m{j}.bin", per)
PY
}

# change ROOT PCT SEED KEPT: changes PCT % of the files: 40% appended to, 40% rewritten
# with size and mtime kept (listed in the file KEPT), 10% deleted, as many created.
change() {
    python3 - "$@" <<'PY'
import os, sys, random
root, pct, seed, kept_list = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rng = random.Random(seed)
paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
chosen = rng.sample(paths, max(10, round(len(paths) * pct / 100)))
n = len(chosen)
appended, kept, deleted = chosen[: n * 4 // 10], chosen[n * 4 // 10 : n * 8 // 10], chosen[n * 8 // 10 :]
for p in appended:
    with open(p, "ab") as f:
        f.write(b"changed\n")
for p in kept:
    st = os.stat(p)
    with open(p, "r+b") as f:
        head = f.read(16)
        f.seek(0)
        f.write(bytes((b + 1) % 256 for b in head))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
for i, p in enumerate(deleted):
    os.unlink(p)
    with open(f"{p}.new{seed}", "wb") as f:
        f.write(os.urandom(100))
with open(kept_list, "w") as f:
    f.write("".join(os.path.relpath(p, root) + "\n" for p in kept))
print(f"{len(appended)} appended, {len(kept)} rewritten with size and mtime kept, "
      f"{len(deleted)} deleted, {len(deleted)} created")
PY
}

# ---------------------------------------------------------------------------------------
# plan-memory

if [[ "$mode" == plan-memory ]]; then
    [[ -x /usr/bin/time ]] || ensure /usr/bin/time time || die "GNU time (package time) is needed"
    if [[ -n "${BENCH_PLAN_TREE:-}" ]]; then
        tree="$(cd "$BENCH_PLAN_TREE" && pwd)"
        count=$(find "$tree" -type f | wc -l)
        echo "planning an existing tree: $tree ($count files)"
    else
        tree="$work/tree"
        echo "generating $plan_files files (200 homes and one big directory) under $work ..."
        t0=$(now)
        python3 - "$tree" "$plan_files" <<'PY'
import os, sys
root, files = sys.argv[1], int(sys.argv[2])
made = set()
for i in range(files):
    # 90% in 200 homes (20 directories each), 10% in one directory of 100 subdirectories.
    d = (f"{root}/home{i % 200:03d}/work/d{(i // 200) % 20:02d}" if i % 10
         else f"{root}/hog/cache/c{(i // 10) % 100:02d}")
    if d not in made:
        os.makedirs(d, exist_ok=True); made.add(d)
    with open(f"{d}/f{i}.dat", "wb") as f:
        f.write(b"x" * (i % 97))
PY
        count="$plan_files"
        echo "generated in $(elapsed "$t0" "$(now)") s"
    fi
    mkdir -p "$work/plan"
    cat > "$work/plan/playbook.yaml" <<EOF
runbook: 1
name: bench-plan
steps:
  - id: copy
    sync: {from: "$tree", to: "$work/plan/dst", jobs: $jobs, delete: true}
EOF
    # measure_plan WHAT: peak RSS and time of `runbook plan` of the step, against the target.
    measure_plan() {
        flush
        t0=$(now)
        (cd "$work/plan" && /usr/bin/time -v "$RUNBOOK_BIN" plan playbook.yaml \
            >"$work/plan/out.log" 2>"$work/plan/time.log") \
            || { cat "$work/plan/out.log" "$work/plan/time.log" >&2; die "runbook plan failed"; }
        took=$(elapsed "$t0" "$(now)")
        kib=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/plan/time.log")
        grep -m1 -o -e 'copy [0-9]* entries[^;]*' -e 'nothing to copy' "$work/plan/out.log" || true
        python3 - "$1" "$count" "$kib" "$took" <<'PY'
import sys
what, count, kib, took = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
peak = kib * 1024
verdict = "met" if peak < 200e6 else "MISSED"
print(f"planning {what} of {count:,} files: peak RSS {peak / 1e6:.0f} MB ({kib / 1024:.0f} MiB), "
      f"{peak / count:.0f} bytes per file, {took:.1f} s; target < 200 MB: {verdict}")
PY
    }
    measure_plan "the initial copy (empty destination)"
    if [[ "${BENCH_PLAN_FINAL:-0}" == 1 ]]; then
        # The copy through `runbook run`, so that its journal holds the pass's start (the
        # final pass's change-time rule) and its own peak is measured as well.
        echo "copying the tree with runbook run (the initial copy) ..."
        # Files changed within the clock allowance (1 s) of a pass's start count as changed.
        sleep 2
        t0=$(now)
        (cd "$work/plan" && /usr/bin/time -v "$RUNBOOK_BIN" --quiet run playbook.yaml \
            >"$work/plan/run.log" 2>&1) || { cat "$work/plan/run.log" >&2; die "runbook run failed"; }
        kib=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/plan/run.log")
        echo "the initial copy of $count files: peak RSS $((kib * 1024 / 1000000)) MB of runbook" \
            "itself (rsync workers not counted), $(elapsed "$t0" "$(now)") s"
        echo "changing $change_pct% of the files: $(change "$tree" "$change_pct" 1 "$work/plan/kept.txt")"
        # The final copy as the migration playbook has it: a step that continues the first.
        cat >> "$work/plan/playbook.yaml" <<EOF
  - id: final
    sync: {from: "$tree", to: "$work/plan/dst", jobs: $jobs, delete: true, after: copy}
EOF
        measure_plan "a final pass (both trees walked)"
    fi
    exit 0
fi

# ---------------------------------------------------------------------------------------
# copy: which tools and setups can run here.

selected=()
par_kind="parallel -j$jobs"
for tool in $tools; do
    case "$tool" in
        rsync|sync|walk-first|auto|trust) selected+=("$tool") ;;
        parallel|parallel-[0-9]*)
            if ensure parallel parallel && parallel --version 2>/dev/null | grep -q GNU; then
                par_kind="parallel -j$jobs"
            else
                par_kind="xargs -P$jobs"
                note "GNU parallel is missing: the parallel columns run ls | xargs -PN rsync"
            fi
            selected+=("$tool") ;;
        fpsync)
            if ensure fpsync fpart; then selected+=(fpsync)
            else note "fpsync (package fpart) is not installed and could not be: skipped"; fi ;;
        rclone)
            if ensure rclone rclone; then selected+=(rclone)
            else note "rclone is not installed and could not be: skipped"; fi ;;
        *) die "unknown tool $tool (BENCH_TOOLS: rsync parallel parallel-N fpsync rclone sync walk-first auto trust)" ;;
    esac
done
[[ ${#selected[@]} -gt 0 ]] || die "no tool to measure"

setup_list=()
for setup in $setups; do
    case "$setup" in
        local) setup_list+=(local) ;;
        fuse|fuse:[0-9]*)
            if [[ $EUID -ne 0 || ! -c /dev/fuse ]]; then
                note "the $setup setup needs root and /dev/fuse: skipped"
                continue
            fi
            ensure mountpoint util-linux || die "mountpoint (util-linux) is needed"
            (cd "$here" && cargo build --release --locked --quiet -p latencyfs) \
                || die "cannot build bench/latencyfs (cargo build --release -p latencyfs)"
            latencyfs="$(target_dir)/release/latencyfs"
            [[ "$setup" == fuse ]] && setup="fuse:$delay_us"
            setup_list+=("$setup") ;;
        *) die "unknown setup $setup (BENCH_SETUPS: local, fuse, fuse:MICROSECONDS)" ;;
    esac
done

# serve PID_VAR BACKING POINT LOG DELAY [FLAG...]: serves BACKING at POINT through latencyfs,
# DELAY µs per metadata operation, in the background, its pid in the variable PID_VAR.
serve() {
    local pid_var="$1" backing="$2" point="$3" log="$4" delay="$5"
    shift 5
    # shellcheck disable=SC2086 # BENCH_FUSE_ARGS holds several flags
    "$latencyfs" "$backing" "$point" --delay-us "$delay" $fuse_args "$@" >"$log" 2>&1 &
    printf -v "$pid_var" '%s' "$!"
    for _ in $(seq 200); do
        mountpoint -q "$point" && return 0
        kill -0 "${!pid_var}" 2>/dev/null || break
        sleep 0.05
    done
    cat "$log" >&2
    die "latencyfs did not mount $backing on $point"
}
# mount_source BACKING LOG DELAY: BACKING, read-only, at $mnt.
mount_source() { serve fuse_pid "$1" "$mnt" "$2" "$3"; }
# mount_destination BACKING LOG DELAY: BACKING, writable, at $dst_mnt.
mount_destination() { serve dst_fuse_pid "$1" "$dst_mnt" "$2" "$3" --writable; }

# delayed_requests LOG: the requests a mount delayed, from the line latencyfs prints when it
# is unmounted ("served lookup 20412, ..., read 812 (20415 delayed)").
delayed_requests() {
    local n
    n=$(sed -n 's/.*served .*(\([0-9]*\) delayed)$/\1/p' "$1" | tail -1)
    [[ -n "$n" ]] || { cat "$1" >&2; die "no request counts in $1"; }
    echo "$n"
}

# seen_destination SETUP DST_DIR: where the tools of SETUP copy into: DST_DIR/dst, seen
# through $dst_mnt when BENCH_DST=fuse puts it behind latencyfs.
seen_destination() {
    if [[ "$1" == fuse:* && $dst_fuse == 1 ]]; then echo "$dst_mnt/dst"; else echo "$2/dst"; fi
}

# calibrate DELAY: a cold lstat of 4000 names through a 0 µs mount and a DELAY µs one.
calibrate() {
    local delay="$1" dir="$work/calibration" per0 perd
    python3 -c "
import os; os.makedirs('$dir/names', exist_ok=True)
for i in range(4000): open(f'$dir/names/n{i}', 'w').close()"
    local stat_loop="
import os, time
names = sorted(os.listdir('$mnt/names'))
t = time.perf_counter()
for n in names: os.lstat('$mnt/names/' + n)
print(f'{(time.perf_counter() - t) / len(names) * 1e6:.0f}')"
    mount_source "$dir" "$work/calibration.log" 0
    per0=$(python3 -c "$stat_loop")
    unmount
    mount_source "$dir" "$work/calibration.log" "$delay"
    perd=$(python3 -c "$stat_loop")
    head -1 "$work/calibration.log"
    unmount
    echo "calibration: a cold lstat takes $per0 µs through a 0 µs mount and $perd µs through the" \
        "$delay µs one: $((perd - per0)) µs added per lookup"
}

# ---------------------------------------------------------------------------------------
# Running one tool.

# run_tool TOOL PASS SRC DST DIR: one pass of TOOL from SRC into DST (DIR: its scratch).
run_tool() {
    local tool="$1" pass="$2" src="$3" dst="$4" dir="$5"
    case "$tool" in
        rsync) rsync -a --delete "$src/" "$dst/" ;;
        parallel|parallel-*)
            mkdir -p "$dst"
            local n="$jobs"
            [[ "$tool" == parallel-* ]] && n="${tool#parallel-}"
            # shellcheck disable=SC2011,SC2012 # `ls`, as the runbooks people use do
            if [[ "$par_kind" == parallel* ]]; then
                (cd "$src" && ls | parallel -j"$n" --joblog "$dir/$pass.joblog" \
                    rsync -a --delete "$src/{}" "$dst/")
            else
                (cd "$src" && ls | xargs -P"$n" -I{} rsync -a --delete "$src/{}" "$dst/")
            fi ;;
        fpsync)
            mkdir -p "$dst"
            local mode_flag=()
            [[ "$pass" == initial ]] || mode_flag=(-E)
            fpsync -n "$jobs" "${mode_flag[@]}" -t "$dir/fpsync" "$src/" "$dst/" ;;
        rclone)
            rclone sync --config /dev/null -q --transfers "$jobs" --checkers 32 "$src" "$dst" ;;
        sync|auto|walk-first|trust)
            local again=() walk_first=0
            [[ "$pass" == initial ]] || again=(--from copy)
            [[ "$tool" == walk-first ]] && walk_first=1
            (cd "$dir" && RUNBOOK_SYNC_WALK_FIRST="$walk_first" \
                "$RUNBOOK_BIN" --quiet run playbook.yaml "${again[@]}") ;;
    esac
}

has() { [[ " ${selected[*]} " == *" $1 "* ]]; }

# walk_threads DIR: the most threads the walk of the last pass journaled under DIR used
# (its `compared` note's `walk_threads`, tuned from 16); empty when none is journaled.
walk_threads() {
    python3 - "$1" <<'PY'
import glob, json, os, sys
most = ""
for journal in sorted(glob.glob(os.path.join(sys.argv[1], ".runbook/runs/*/journal.jsonl")),
                      key=os.path.getmtime):
    for line in open(journal):
        data = json.loads(line).get("data") or {}
        if data.get("sync") == "compared" and data.get("walk_threads"):
            most = max(data["walk_threads"])
print(most)
PY
}

# chosen DIR: the worker counts `jobs: auto` went through in the last pass journaled under
# DIR ("4>8>16"; "4" when it kept its start), from the journal's `workers` notes.
chosen() {
    python3 - "$1" <<'PY'
import glob, json, os, sys
counts, pass_of = [], None
for journal in sorted(glob.glob(os.path.join(sys.argv[1], ".runbook/runs/*/journal.jsonl")),
                      key=os.path.getmtime):
    for line in open(journal):
        event = json.loads(line)
        data = event.get("data") or {}
        if event.get("event") != "step_note":
            continue
        if data.get("sync") == "pass":
            counts, pass_of = [], data.get("pass")
        elif data.get("sync") == "workers" and data.get("pass") == pass_of:
            counts = counts or [data["from"]]
            counts.append(data["to"])
print(">".join(map(str, counts)) or "4")
PY
}

# balance JOBLOG: how much of the time GNU parallel's workers were busy, from its --joblog:
# its rsyncs' total run time / ($jobs x its wall time). 1.00: every worker copied until the
# end; 0.60: 40% of the worker time went idle waiting for the slowest home, the time that
# splitting that home frees (less where the workers compete for CPU or disk). Empty without
# a joblog (xargs).
balance() {
    [[ -s "$1" ]] || return 0
    awk -F'\t' -v jobs="$jobs" 'NR > 1 {
            busy += $4; end = $3 + $4
            if (first == "" || $3 < first) first = $3
            if (end > last) last = end
        }
        END { if (last > first) printf "%.2f", busy / jobs / (last - first) }' "$1"
}

# time_tool SETUP TOOL PASS BACKING DST_DIR DIR: one pass of TOOL from BACKING (through
# latencyfs in the fuse:N setups) into DST_DIR/dst (through a writable latencyfs mount of
# DST_DIR as well, with BENCH_DST=fuse); DIR: its scratch. Sets `took` (seconds),
# `requests` and `dst_requests` (what the source's and the destination's mounts delayed;
# empty without a mount), `walk_threads` (the most threads the walk of runbook's last
# pass used, from its journal; empty for the other tools), `cpu` (the CPU seconds the tool's
# processes used) and `fuse_cpu` (those of the source's latencyfs meanwhile; empty without).
time_tool() {
    local setup="$1" tool="$2" pass="$3" backing="$4" dst_dir="$5" dir="$6" src dst t0 status=0
    local log="$dir/$pass.log"
    src="$backing"
    dst="$(seen_destination "$setup" "$dst_dir")"
    if [[ "$setup" == fuse:* ]]; then
        mount_source "$backing" "$dir/$pass.fuse.log" "${setup#fuse:}"
        src="$mnt"
        if [[ $dst_fuse == 1 ]]; then
            mount_destination "$dst_dir" "$dir/$pass.dst-fuse.log" "${setup#fuse:}"
        fi
    fi
    flush
    local cpu0 cpu1 fuse_cpu0=
    children_cpu cpu0
    [[ -n "$fuse_pid" ]] && fuse_cpu0=$(process_cpu "$fuse_pid")
    t0=$(now)
    run_tool "$tool" "$pass" "$src" "$dst" "$dir" >"$log" 2>&1 || status=$?
    took=$(elapsed "$t0" "$(now)")
    children_cpu cpu1
    cpu=$(elapsed "$cpu0" "$cpu1")
    fuse_cpu=
    [[ -n "$fuse_cpu0" ]] && fuse_cpu=$(elapsed "$fuse_cpu0" "$(process_cpu "$fuse_pid")")
    flush
    requests=
    dst_requests=
    if [[ "$setup" == fuse:* ]]; then
        unmount
        requests=$(delayed_requests "$dir/$pass.fuse.log")
        if [[ $dst_fuse == 1 ]]; then
            unmount_destination
            dst_requests=$(delayed_requests "$dir/$pass.dst-fuse.log")
        fi
    fi
    walk_threads=$(walk_threads "$dir")
    if [[ $status -ne 0 ]]; then
        tail -20 "$log" >&2
        die "$tool failed (exit $status) in the $pass pass ($setup, $dst_dir)"
    fi
}

# differences SRC DST: "C/M": files whose contents differ or are missing or extra (C), all
# itemized differences (M).
differences() {
    local contents meta
    contents=$(rsync -rnc --delete --out-format='%i %n' "$1/" "$2/" | awk '
        $1 == "*deleting" { if ($2 !~ /\/$/) n++; next }
        substr($1, 2, 1) != "d" { n++ }
        END { print n + 0 }')
    meta=$(rsync -anic --delete "$1/" "$2/" | wc -l)
    echo "$contents/$meta"
}

# ---------------------------------------------------------------------------------------
# The runs.

declare -A times requests_of dst_requests_of walk_threads_of cpu_of stale balance_of chose_of
[[ -n "${BENCH_TSV:-}" ]] && : >> "$BENCH_TSV"
read -ra passes <<< "${BENCH_PASSES:-initial unchanged final}"
echo "sync benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -r)," \
    "trees under ${TMPDIR:-/tmp}: $files files and $total_mb MiB per tree, $change_pct% changed" \
    "before the final pass, $jobs workers, $runs run(s), $(rsync --version | head -1 | awk '{print "rsync", $3}')," \
    "destinations on $dst_kind"
for setup in "${setup_list[@]}"; do
    if [[ "$setup" == fuse:* && "${setup#fuse:}" != 0 ]]; then calibrate "${setup#fuse:}"; fi
done

for kind in $trees; do
    src="$work/$kind/src"
    echo "generating the $kind tree ..."
    generate "$src" "$kind" "$files"
    # Change times well before the first pass's start (the final pass's ctime rule).
    sleep 2
    for setup in "${setup_list[@]}"; do
        seen_from="$src"
        [[ "$setup" == fuse:* ]] && seen_from="$mnt"
        for run in $(seq "$runs"); do
            # Rotate the order, so that no tool is always the one that warms the caches.
            order=("${selected[@]:$(( (run - 1) % ${#selected[@]} ))}" \
                "${selected[@]:0:$(( (run - 1) % ${#selected[@]} ))}")
            for tool in "${selected[@]}"; do
                rm -rf "${work:?}/$kind/$tool" "${dst_root:?}/$kind/$tool"
                mkdir -p "$work/$kind/$tool" "$dst_root/$kind/$tool"
            done
            for tool in sync walk-first auto trust; do
                has "$tool" || continue
                step_jobs="$jobs"
                [[ "$tool" == auto ]] && step_jobs=auto
                trust=false
                [[ "$tool" == trust ]] && trust=true
                cat > "$work/$kind/$tool/playbook.yaml" <<EOF
runbook: 1
name: bench
steps:
  - id: copy
    sync: {from: "$seen_from", to: "$(seen_destination "$setup" "$dst_root/$kind/$tool")", jobs: $step_jobs, delete: true, trust_destination: $trust}
EOF
            done
            # Whatever an earlier run changed is older than this run's first pass by more
            # than the change-time rule's allowance for clock skew (1 s).
            sleep 1.2
            for pass in "${passes[@]}"; do
                if [[ "$pass" == final ]]; then
                    echo "  $setup, $kind, run $run: $(change "$src" "$change_pct" "$run" "$work/$kind/kept.txt")"
                fi
                line="  $setup, $kind, run $run, $pass:"
                for tool in "${order[@]}"; do
                    time_tool "$setup" "$tool" "$pass" "$src" "$dst_root/$kind/$tool" "$work/$kind/$tool"
                    times[$setup,$kind,$pass,$tool]+="$took "
                    [[ "$tool" == parallel ]] \
                        && balance_of[$setup,$kind,$pass]+="$(balance "$work/$kind/parallel/$pass.joblog") "
                    if [[ $run -eq 1 ]]; then
                        requests_of[$setup,$kind,$pass,$tool]="$requests"
                        dst_requests_of[$setup,$kind,$pass,$tool]="$dst_requests"
                        walk_threads_of[$setup,$kind,$pass,$tool]="$walk_threads"
                        cpu_of[$setup,$kind,$pass,$tool]="$cpu${fuse_cpu:++$fuse_cpu}"
                    fi
                    [[ $run -eq 1 && "$tool" == auto ]] \
                        && chose_of[$setup,$kind,$pass]="$(chosen "$work/$kind/auto")"
                    [[ -n "${BENCH_TSV:-}" ]] && printf '%s\t%s\t%s\t%s\t%s\t%s\n' \
                        "$setup" "$kind" "$pass" "$tool" "$run" "$took" >> "$BENCH_TSV"
                    line+=" $tool ${took}s"
                done
                echo "$line"
            done
            if [[ $run -eq 1 && " ${passes[*]} " == *" final "* ]]; then
                for tool in "${selected[@]}"; do
                    stale[$setup,$kind,$tool]=$(differences "$src" "$dst_root/$kind/$tool/dst")
                done
                kept=$(wc -l < "$work/$kind/kept.txt")
            fi
        done

        # The table of this setup and tree.
        if [[ "$setup" == fuse:* ]]; then
            where="source behind latencyfs, ${setup#fuse:} µs per metadata operation${fuse_args:+ ($fuse_args)}"
            [[ $dst_fuse == 1 ]] && where="source and destinations behind latencyfs, ${setup#fuse:} µs per metadata operation${fuse_args:+ ($fuse_args)}"
        else
            where="source on the local disk"
        fi
        echo
        echo "== $kind tree, $where: median seconds of $runs run(s) =="
        header=$(printf '%-10s' pass)
        for tool in "${selected[@]}"; do header+=$(printf ' %9s' "$tool"); done
        for tool in "${selected[@]}"; do
            [[ "$tool" == sync ]] || header+=$(printf ' %14s' "sync/$tool")
        done
        echo "$header"
        for pass in "${passes[@]}"; do
            row=$(printf '%-10s' "$pass")
            declare -A med=()
            for tool in "${selected[@]}"; do
                # shellcheck disable=SC2086
                med[$tool]=$(median_of "$setup,$kind,$pass,$tool")
                row+=$(printf ' %9s' "${med[$tool]}")
            done
            if [[ -n "${med[sync]:-}" ]]; then
                for tool in "${selected[@]}"; do
                    [[ "$tool" == sync ]] || row+=$(printf ' %14s' "$(ratio "${med[sync]}" "${med[$tool]}")x")
                done
            fi
            echo "$row"
            unset med
        done
        if [[ "$setup" == fuse:* ]]; then
            row="metadata requests latencyfs delayed in run 1 ($(IFS=/; echo "${passes[*]}"))"
            [[ $dst_fuse == 1 ]] && row+=", source+destination"
            row+=":"
            for tool in "${selected[@]}"; do
                counts=()
                for pass in "${passes[@]}"; do
                    counts+=("${requests_of[$setup,$kind,$pass,$tool]}${dst_requests_of[$setup,$kind,$pass,$tool]:++${dst_requests_of[$setup,$kind,$pass,$tool]}}")
                done
                row+=" $tool $(IFS=/; echo "${counts[*]}")"
            done
            echo "$row"
        fi
        row="CPU seconds in run 1 ($(IFS=/; echo "${passes[*]}"))"
        [[ "$setup" == fuse:* ]] && row+=", the tool's processes+latencyfs's"
        row+=", against $(nproc) cores x the wall time:"
        for tool in "${selected[@]}"; do
            counts=()
            for pass in "${passes[@]}"; do counts+=("${cpu_of[$setup,$kind,$pass,$tool]}"); done
            row+=" $tool $(IFS=/; echo "${counts[*]}")"
        done
        echo "$row"
        if has auto; then
            row="jobs: auto's worker counts in run 1 ($(IFS=/; echo "${passes[*]}")):"
            for pass in "${passes[@]}"; do row+=" ${chose_of[$setup,$kind,$pass]:-?}"; done
            echo "$row"
        fi
        if has parallel && [[ -n "$(balance_median "$setup,$kind,initial")" ]]; then
            echo "parallel's workers were busy during its initial copy (median): $(balance_median "$setup,$kind,initial")" \
                "(its rsyncs' total time / ($jobs x its wall time); 1.00: none idled)"
        fi
        if [[ " ${passes[*]} " == *" final "* ]]; then
            row="after run 1's final pass ($kept files rewritten with size and mtime kept), files that differ from the source / itemized differences:"
            for tool in "${selected[@]}"; do row+=" $tool ${stale[$setup,$kind,$tool]}"; done
            echo "$row"
        fi
        echo
    done
    rm -rf "${work:?}/$kind" "${dst_root:?}/$kind"
done

# ---------------------------------------------------------------------------------------
# The issue's targets, as ratios of medians from this run.

verdict() { python3 -c "print('met' if $1 <= $2 else 'MISSED')"; }
echo "targets (ratios of medians from this run):"
if has sync; then
    for setup in "${setup_list[@]}"; do
        for kind in $trees; do
            s=$(median_of "$setup,$kind,initial,sync")
            if [[ "$kind" == skewed || "$kind" == hog ]] && has parallel; then
                r=$(ratio "$s" "$(median_of "$setup,$kind,initial,parallel")")
                bound=$(balance_median "$setup,$kind,initial")
                echo "  $setup, $kind, initial copy: sync/parallel ${r}x (target <= 0.7x): $(verdict "$r" 0.7)${bound:+ (parallel workers busy: $bound)}"
            fi
            if [[ "$kind" == skewed || "$kind" == hog ]] && has parallel; then
                p4=$(median_of "$setup,$kind,initial,parallel")
                r=$(ratio "$s" "$p4")
                echo "  $setup, $kind, initial copy: fixed sync/parallel ${r}x (target <= 1.0x): $(verdict "$r" 1.0)"
                if has auto; then
                    a=$(median_of "$setup,$kind,initial,auto")
                    r=$(ratio "$a" "$p4")
                    echo "  $setup, $kind, initial copy: auto/parallel ${r}x (target <= 0.5x): $(verdict "$r" 0.5)"
                    best="$p4" best_tool=parallel
                    for tool in "${selected[@]}"; do
                        [[ "$tool" == parallel-* ]] || continue
                        m=$(median_of "$setup,$kind,initial,$tool")
                        if python3 -c "import sys; sys.exit(0 if $m < $best else 1)"; then
                            best="$m" best_tool="$tool"
                        fi
                    done
                    r=$(ratio "$a" "$best")
                    echo "  $setup, $kind, initial copy: auto/best of parallel-N ($best_tool) ${r}x (target <= 1.0x): $(verdict "$r" 1.0); auto went ${chose_of[$setup,$kind,initial]:-?}"
                fi
            fi
            # The final-pass targets are about latency: any delayed mount.
            [[ "$setup" == fuse:* && "${setup#fuse:}" != 0 ]] || continue
            for pass in final unchanged; do
                [[ " ${passes[*]} " == *" $pass "* ]] || continue
                s=$(median_of "$setup,$kind,$pass,sync")
                text="  $setup, $kind, $pass pass:"
                if has rsync; then
                    r=$(ratio "$s" "$(median_of "$setup,$kind,$pass,rsync")")
                    text+=" sync/rsync ${r}x (<= 0.3x): $(verdict "$r" 0.3);"
                fi
                if has rclone; then
                    r=$(ratio "$s" "$(median_of "$setup,$kind,$pass,rclone")")
                    text+=" sync/rclone ${r}x (<= 1.0x): $(verdict "$r" 1.0)"
                fi
                echo "$text"
                if has trust && [[ -n "${requests_of[$setup,$kind,$pass,trust]:-}" ]]; then
                    n_src="${requests_of[$setup,$kind,$pass,trust]}"
                    n_dst="${dst_requests_of[$setup,$kind,$pass,trust]:-}"
                    n=$((n_src + ${n_dst:-0}))
                    what="$n requests"
                    [[ -n "$n_dst" ]] && what="$n requests ($n_src source + $n_dst destination)"
                    # The walk's concurrency: the most threads the pass's walk used (its
                    # journal), but no more than latencyfs's 16 request threads, which
                    # serve no more at once; else 16 (an older runbook, untuned).
                    walked="${walk_threads_of[$setup,$kind,$pass,trust]:-}"
                    if [[ -n "$walked" ]]; then
                        threads=$(( walked < 16 ? walked : 16 ))
                        threads_from="the walk used up to $walked, latencyfs serves 16"
                    else
                        threads=16
                        threads_from="no walk threads journaled: the default"
                    fi
                    bound=$(python3 -c "print(f'{$n * ${setup#fuse:} / 1e6 / $threads:.2f}')")
                    t=$(median_of "$setup,$kind,$pass,trust")
                    r=$(ratio "$t" "$bound")
                    echo "  $setup, $kind, $pass pass: trust ${t}s, bound ${bound}s ($what x ${setup#fuse:} µs / $threads threads, $threads_from): trust/bound ${r}x (<= 1.3x): $(verdict "$r" 1.3)"
                fi
            done
        done
    done
fi
if has rclone; then
    note "rclone keeps no directory times, permissions or owners: its itemized differences count them"
fi
