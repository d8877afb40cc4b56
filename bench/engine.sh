#!/usr/bin/env bash
# bench/engine.sh: how much the runbook engine itself costs, next to a plain shell script.
#
# Run on demand (it is not part of the test suite):
#
#     bench/engine.sh                      # builds with `cargo build --release` first
#     RUNBOOK_BIN=target/release/runbook bench/engine.sh     # use this binary, no build
#     TMPDIR=/dev/shm bench/engine.sh      # put the playbooks and state dirs on tmpfs
#
# It measures, each as the median of several runs:
#   1. `runbook validate` and `runbook plan` of a generated 500-step playbook (a mix of
#      `when:`, `check:` expressions, `env:` and templates such as "{{ workdir }}/x");
#   2. `runbook run` of N steps `run: [true]` against a bash script of N `/bin/true` lines
#      (overhead per step = (runbook - shell) / N), and `run` again when every step is
#      already done (a resume that only skips);
#   3. start-up: `runbook --version` and `runbook validate` of a 1-step playbook;
#   4. checks the targets: engine overhead per step < 2 ms (run, and resume), start-up
#      < 20 ms. Prints PASS/FAIL for each and exits 1 if any target is missed.
#
# Knobs (environment):
#   RUNBOOK_BIN          binary to measure (default: build, then target/release/runbook)
#   BENCH_STEPS          steps in the run benchmark (default 500)
#   BENCH_RUNS           runs per large measurement (default 5)
#   BENCH_STARTUP_RUNS   runs per start-up measurement (default 50)
#   BENCH_TIMER          auto | hyperfine | loop (default auto: hyperfine if installed,
#                        else a timing loop in python3 using posix_spawn)
#   BENCH_TMPFS          auto | 0: also time the run with the state dir on /dev/shm (a
#                        diagnostic row that shows what the journal's fsyncs cost)
#   BENCH_JSON           write the results to this JSON file as well
#
# The per-step numbers include the journal: every event is written, and the events that
# record a state (step_finished, approvals, ...) are fdatasync'd, one sync per step, so on a
# disk they mostly measure the fsync latency of the filesystem under $TMPDIR. The tmpfs row
# (and TMPDIR=/dev/shm) shows the engine without it. hyperfine (apt-get install hyperfine)
# is used when present; without it the timing loop gives the same medians.
#
# Exit status: 0 all targets met, 1 a target missed, 2 the benchmark itself failed.
# Everything goes in a temp dir (under $TMPDIR) that is removed at the end.

set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 0
fi

die() { echo "bench/engine.sh: $*" >&2; exit 2; }

command -v python3 >/dev/null || die "python3 is needed"

if [[ -n "${RUNBOOK_BIN:-}" ]]; then
    bin="$RUNBOOK_BIN"
    [[ "$bin" == /* ]] || bin="$PWD/$bin"
else
    echo "building: cargo build --release" >&2
    (cd "$root" && cargo build --release --quiet) || die "cargo build --release failed"
    target_dir="${CARGO_TARGET_DIR:-$root/target}"
    [[ "$target_dir" == /* ]] || target_dir="$root/$target_dir"
    bin="$target_dir/release/runbook"
fi
[[ -x "$bin" ]] || die "no executable at $bin"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/runbook-bench.XXXXXX")"
tmpfs_dir=""
cleanup() {
    rm -rf "$tmp"
    if [[ -n "$tmpfs_dir" ]]; then rm -rf "$tmpfs_dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A second scratch dir on tmpfs for the diagnostic row, unless the main one already is.
if [[ "${BENCH_TMPFS:-auto}" != 0 && -d /dev/shm && -w /dev/shm ]] \
    && [[ "$(stat -f -c %T /dev/shm 2>/dev/null)" == tmpfs ]] \
    && [[ "$(stat -f -c %T "$tmp" 2>/dev/null)" != tmpfs ]]; then
    tmpfs_dir="$(mktemp -d /dev/shm/runbook-bench.XXXXXX)"
fi

cat >"$tmp/harness.py" <<'PY'
"""Timing harness for bench/engine.sh; see the comments there."""
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

BIN = os.environ["BENCH_BIN"]
TMP = os.environ["BENCH_TMP"]
TMPFS = os.environ.get("BENCH_TMPFS_DIR") or None
STEPS = int(os.environ.get("BENCH_STEPS", "500"))
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
STARTUP_RUNS = int(os.environ.get("BENCH_STARTUP_RUNS", "50"))
BIG = 500  # steps of the validate/plan playbook, as the issue asks

TARGET_STEP_MS = 2.0
TARGET_STARTUP_MS = 20.0

timer = os.environ.get("BENCH_TIMER", "auto")
hyperfine = shutil.which("hyperfine")
if timer == "auto":
    timer = "hyperfine" if hyperfine else "loop"
if timer == "hyperfine" and not hyperfine:
    sys.exit("bench/engine.sh: BENCH_TIMER=hyperfine but hyperfine is not installed")
if timer not in ("hyperfine", "loop"):
    sys.exit(f"bench/engine.sh: BENCH_TIMER must be auto, hyperfine or loop, not {timer}")


class BenchError(Exception):
    pass


def path(*parts):
    return os.path.join(TMP, *parts)


def write(name, text):
    with open(path(name), "w") as f:
        f.write(text)
    return path(name)


def check_call(argv, what):
    """Runs once for real and fails loudly, so a broken binary is not timed as fast."""
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(
            f"{what}: `{' '.join(argv)}` exited {done.returncode}\n{done.stderr[-2000:]}"
        )
    return done


# ---------------------------------------------------------------- playbooks

def mixed_playbook(steps):
    """A playbook with params, vars, `when:`, `check:`, `env:` and templates."""
    out = [
        "runbook: 1",
        "name: bench-mixed",
        "description: Generated by bench/engine.sh.",
        "params:",
        "  workdir: {default: /tmp/runbook-bench-work, description: Scratch directory}",
        "  mode:    {default: full, pattern: '^(full|quick)$'}",
        "  n:       {type: int, default: 3}",
        "vars:",
        '  archive: "{{ workdir }}.tar"',
        '  target: "{{ workdir }}/{{ mode }}"',
        "steps:",
    ]
    for i in range(steps):
        out.append(f"  - id: step-{i:04d}")
        kind = i % 5
        if kind == 0:
            out.append(f"    name: Plain step {i}")
            out.append("    run: [true]")
        elif kind == 1:
            out.append(f'    run: [true, "{{{{ workdir }}}}/x-{i}"]')
            out.append("    when: \"{{ mode == 'full' }}\"")
        elif kind == 2:
            out.append('    run: [true, "{{ archive }}", "{{ target }}/x"]')
            out.append('    check: "{{ n > 3 and workdir != \'\' }}"')
        elif kind == 3:
            out.append("    run: [true]")
            out.append("    when: n < 2")  # false: skipped
            out.append('    env: {TARGET: "{{ workdir }}/x"}')
        else:
            out.append("    run:")
            out.append('      command: [true, "{{ workdir }}/x"]')
            out.append('      cwd: "/"')
            out.append(f'      env: {{STEP: "{i}", DIR: "{{{{ target }}}}"}}')
            out.append('    check: "{{ n == 5 }}"')
    return "\n".join(out) + "\n"


def true_playbook(name, steps):
    out = ["runbook: 1", f"name: {name}", "steps:"]
    for i in range(steps):
        out += [f"  - id: step-{i:04d}", "    run: [true]"]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- timing

def spawn_wait(argv, devnull):
    pid = os.posix_spawn(
        argv[0],
        argv,
        os.environ,
        file_actions=[
            (os.POSIX_SPAWN_DUP2, devnull, 0),
            (os.POSIX_SPAWN_DUP2, devnull, 1),
            (os.POSIX_SPAWN_DUP2, devnull, 2),
        ],
    )
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def measure(argv, runs, warmup=1, prepare=None):
    """Seconds per run of argv (stdout/stderr to /dev/null), `prepare` (a shell command)
    before each run and not timed. Returns the list of samples."""
    argv = [shutil.which(argv[0]) or argv[0]] + list(argv[1:])
    if timer == "hyperfine":
        report = path("hyperfine.json")
        cmd = [hyperfine, "-N", "--style", "none", "--runs", str(runs),
               "--warmup", str(warmup), "--export-json", report]
        if prepare:
            cmd += ["--prepare", f"bash {write('prepare.sh', prepare)}"]
        cmd.append(" ".join(shell_quote(a) for a in argv))
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if done.returncode != 0:
            raise BenchError(f"hyperfine failed for {argv}:\n{done.stderr[-2000:]}")
        with open(report) as f:
            return json.load(f)["results"][0]["times"]
    samples = []
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        for i in range(warmup + runs):
            if prepare:
                subprocess.run(["bash", "-c", prepare], check=True, stdin=subprocess.DEVNULL)
            start = time.perf_counter()
            rc = spawn_wait(argv, devnull)
            elapsed = time.perf_counter() - start
            if rc != 0:
                raise BenchError(f"`{' '.join(argv)}` exited {rc} while being timed")
            if i >= warmup:
                samples.append(elapsed)
    finally:
        os.close(devnull)
    return samples


def shell_quote(arg):
    if arg and all(c.isalnum() or c in "-_./=:@,+%" for c in arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"


results = {}


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


LOAD_BEFORE = loadavg()


def record(key, label, samples, steps=None):
    median = statistics.median(samples)
    results[key] = {
        "label": label,
        "median_s": median,
        "min_s": min(samples),
        "max_s": max(samples),
        "runs": len(samples),
        "steps": steps,
    }
    spread = f"{min(samples) * 1e3:.1f}-{max(samples) * 1e3:.1f}"
    print(f"  {label:<44} {median * 1e3:10.2f} ms   (min-max {spread} ms, {len(samples)} runs)",
          file=sys.stderr, flush=True)
    return median


def journal_events(state_dir):
    runs = os.path.join(state_dir, "runs")
    counts = {}
    for run in os.listdir(runs):
        with open(os.path.join(runs, run, "journal.jsonl")) as f:
            for line in f:
                event = json.loads(line)["event"]
                counts[event] = counts.get(event, 0) + 1
    return counts


# ---------------------------------------------------------------- the benchmarks

def main():
    os.environ.pop("RUNBOOK_STATE_DIR", None)
    state = path("state")
    sd = ["--state-dir", state]
    workdir = path("work")

    print(f"runbook engine benchmark: {BIN}", file=sys.stderr)
    print(f"  timer: {timer}; scratch: {TMP}; {os.cpu_count()} CPUs", file=sys.stderr)

    # 1. validate and plan of a 500-step mixed playbook.
    mixed = write("mixed.yaml", mixed_playbook(BIG))
    args = [mixed, "--var", f"workdir={workdir}"]
    out = check_call([BIN, *sd, "validate", *args], "validate of the mixed playbook")
    if f"{BIG} steps" not in out.stdout + out.stderr:
        raise BenchError(f"validate did not report {BIG} steps:\n{out.stdout}{out.stderr}")
    out = check_call([BIN, *sd, "plan", *args, "--format", "json"], "plan of the mixed playbook")
    decisions = {}
    for step in json.loads(out.stdout)["steps"]:
        decisions[step["decision"]] = decisions.get(step["decision"], 0) + 1
    print(f"  mixed playbook: {BIG} steps, plan decisions {decisions}", file=sys.stderr)
    record("validate_500", f"validate, {BIG}-step mixed playbook",
           measure([BIN, *sd, "validate", *args], RUNS * 2), BIG)
    record("plan_500", f"plan, {BIG}-step mixed playbook",
           measure([BIN, *sd, "plan", *args], RUNS * 2), BIG)

    # 2. run of N `true` steps against a shell script of N `/bin/true`.
    shell = write("true.sh", "#!/bin/bash\nset -e\n" + "/bin/true\n" * STEPS)
    record("shell_run", f"shell: bash script, {STEPS} x /bin/true",
           measure(["bash", shell], RUNS), STEPS)

    book = write("true.yaml", true_playbook("bench-true", STEPS))

    def run_rows(state_dir, key, label):
        run = [BIN, "--state-dir", state_dir, "run", book]
        shutil.rmtree(state_dir, ignore_errors=True)
        check_call(run, "run of the true playbook")
        events = journal_events(state_dir)
        if events.get("step_finished") != STEPS:
            raise BenchError(f"expected {STEPS} step_finished events, the journal has {events}")
        results.setdefault("journal_lines_per_step", sum(events.values()) / STEPS)
        print(f"  timing {label} ({RUNS} runs) ...", file=sys.stderr, flush=True)
        record(key, label, measure(run, RUNS, prepare=f"rm -rf '{state_dir}'"), STEPS)
        return run

    run = run_rows(state, "runbook_run", f"runbook run, {STEPS} x run: [true]")

    # Resume: every step done; restore the finished state before each run so the journal
    # does not grow from one timed run to the next.
    done_state = path("state-done")
    shutil.rmtree(done_state, ignore_errors=True)
    shutil.copytree(state, done_state)
    check_call(run, "resumed run")
    record("runbook_resume", f"runbook run again (resume, {STEPS} done)",
           measure(run, RUNS, prepare=f"rm -rf '{state}' && cp -a '{done_state}' '{state}'"),
           STEPS)

    if TMPFS:
        run_rows(os.path.join(TMPFS, "state"), "runbook_run_tmpfs",
                 "runbook run, state dir on tmpfs (diagnostic)")

    # 3. start-up.
    one = write("one.yaml", true_playbook("bench-one", 1))
    record("startup_true", "start-up: /bin/true (reference)",
           measure(["/bin/true"], STARTUP_RUNS, warmup=3))
    record("startup_version", "start-up: runbook --version",
           measure([BIN, "--version"], STARTUP_RUNS, warmup=3))
    record("startup_validate", "start-up: runbook validate (1 step)",
           measure([BIN, *sd, "validate", one], STARTUP_RUNS, warmup=3))

    return report()


def report():
    lines_per_step = results.pop("journal_lines_per_step")
    r = {k: v["median_s"] for k, v in results.items()}
    shell_total = r["shell_run"]
    shell_step = shell_total / STEPS
    overhead_ms = (r["runbook_run"] - shell_total) / STEPS * 1e3
    resume_ms = r["runbook_resume"] / STEPS * 1e3

    def ms(s):
        return f"{s * 1e3:.2f} ms"

    def per_step(key):
        steps = results[key]["steps"]
        return f"{results[key]['median_s'] / steps * 1e3:.3f} ms" if steps else ""

    rows = [
        ("validate_500", None),
        ("plan_500", None),
        ("shell_run", shell_total),
        ("runbook_run", shell_total),
        ("runbook_resume", shell_total),
        ("runbook_run_tmpfs", shell_total),
        ("startup_true", r["startup_true"]),
        ("startup_version", r["startup_true"]),
        ("startup_validate", r["startup_true"]),
    ]
    print()
    print(f"runbook engine benchmark ({os.cpu_count()} CPUs, timer: {timer}, "
          f"median of {RUNS} runs, start-up of {STARTUP_RUNS})")
    load_before, load_after = LOAD_BEFORE, loadavg()
    print(f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after")
    if max(load_before, load_after) > 0.5 * (os.cpu_count() or 1):
        print("warning: the machine was busy; the numbers are pessimistic (other processes "
              "compete for the CPUs and the disk's fsyncs)")
    print()
    print(f"| {'measurement':<44} | {'median':>11} | {'per step':>10} | {'vs shell':>8} |")
    print(f"|{'-' * 46}|{'-' * 13}|{'-' * 12}|{'-' * 10}|")
    for key, base in rows:
        if key not in results:
            continue
        ratio = f"{results[key]['median_s'] / base:.2f}x" if base else "-"
        print(f"| {results[key]['label']:<44} | {ms(results[key]['median_s']):>11} "
              f"| {per_step(key):>10} | {ratio:>8} |")
    print()
    print(f"shell cost per step: {shell_step * 1e3:.3f} ms (fork+exec of /bin/true from bash)")
    print(f"engine overhead per step = (runbook run - shell) / {STEPS} = {overhead_ms:.3f} ms")
    if overhead_ms < 0:
        print("  (negative: runbook starts a child more cheaply than bash forks one; the engine's "
              "own cost is within the noise)")
    print(f"  journal: {lines_per_step:.2f} lines per step, one of them (the state event) fdatasync'd")
    if "runbook_run_tmpfs" in results:
        tmpfs_ms = (r["runbook_run_tmpfs"] - shell_total) / STEPS * 1e3
        print(f"  same with the state dir on tmpfs: {tmpfs_ms:.3f} ms "
              f"(the difference, {overhead_ms - tmpfs_ms:.3f} ms, is mostly journal fsyncs)")
    print()

    checks = [
        ("engine overhead per step (run)", overhead_ms, TARGET_STEP_MS),
        ("per step of a resumed run (skips only)", resume_ms, TARGET_STEP_MS),
        ("start-up: runbook --version", r["startup_version"] * 1e3, TARGET_STARTUP_MS),
        ("start-up: runbook validate (1 step)", r["startup_validate"] * 1e3, TARGET_STARTUP_MS),
    ]
    failed = 0
    print("targets")
    for label, value, target in checks:
        ok = value < target
        failed += not ok
        print(f"  {'PASS' if ok else 'FAIL'}  {label:<42} {value:8.3f} ms  (target < {target:g} ms)")

    if os.environ.get("BENCH_JSON"):
        with open(os.environ["BENCH_JSON"], "w") as f:
            json.dump({
                "binary": BIN, "cpus": os.cpu_count(), "timer": timer, "steps": STEPS,
                "loadavg_before": LOAD_BEFORE, "loadavg_after": loadavg(),
                "results": results,
                "derived": {"shell_per_step_ms": shell_step * 1e3,
                            "journal_lines_per_step": lines_per_step,
                            "overhead_per_step_ms": overhead_ms,
                            "resume_per_step_ms": resume_ms},
                "checks": [{"name": l, "value_ms": v, "target_ms": t, "pass": v < t}
                           for l, v, t in checks],
            }, f, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        print(f"bench/engine.sh: {error}", file=sys.stderr)
        sys.exit(2)
PY

BENCH_BIN="$bin" BENCH_TMP="$tmp" BENCH_TMPFS_DIR="$tmpfs_dir" \
    python3 "$tmp/harness.py" </dev/null
