"""Intervals and paired tests of Tables 2/3 at the paper's scale: 16 benchmarks × 11 runs × 2,000 resamples.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_analysis_significance.py [--resamples 2000 --out bench/results/analysis_significance.md]

Ours (`analysis.significance.analyse` + `adjust`): per benchmark one draw of example indices for all runs,
turned into per-example weights and one matrix product per batch (`bootstrap_means`), so every pair's
paired difference comes from the same draws; then McNemar or the paired-bootstrap p for every pair and
the Holm correction over each table.
What a user would write instead: one `scipy.stats.bootstrap` per cell for its interval and one paired
`scipy.stats.bootstrap` per pair of runs for the difference (both with method="percentile"; scipy's
default BCa needs a jackknife that is quadratic in the number of examples and is far slower still).

Benchmark sizes are the real ones (examples × N samples per example of conf/benchmark/*.yaml); the values
are random 0/1 outcomes, averaged over N per example. Timing covers both tables (score and failure rate).
A third row reads the same data from samples.jsonl files first (records of ~400 bytes; real records
carry the generated text and take proportionally longer to parse).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from analysis.significance import (  # noqa: E402
    Examples, Options, adjust, analyse, per_example, sample_failure, sample_score)

# benchmark -> (examples, samples per example): Table 5 / conf/benchmark/*.yaml
SIZES = {
    "mt_bench_ja": (80, 5), "m_ifeval_ja": (500, 1), "jamc_qa": (2309, 1), "wmt20_en_ja": (1000, 1),
    "wmt20_ja_en": (993, 1), "mmlu_prox_ja": (11759, 1), "gpqa_ja": (198, 1), "math100_ja": (100, 16),
    "jhumaneval": (164, 10), "mt_bench": (80, 5), "hellaswag": (10042, 1), "mmlu_pro": (12032, 1),
    "gpqa": (198, 16), "math500": (500, 1), "aime": (60, 16), "livecodebench": (268, 10),
}
RUNS = [str(i) for i in range(1, 12)]


def data(seed: int = 0) -> dict[str, np.ndarray]:
    """benchmark -> (runs × examples × N) 0/1 outcomes, each run with its own accuracy."""
    rng = np.random.default_rng(seed)
    return {b: (rng.random((len(RUNS), e, n)) < rng.uniform(0.3, 0.8, (len(RUNS), 1, 1))).astype(float)
            for b, (e, n) in SIZES.items()}


def ours(outcomes: dict[str, np.ndarray], opts: Options) -> int:
    pairs = 0
    for table in ("score", "failure"):
        columns = {}
        for b, x in outcomes.items():
            per = x.mean(axis=2)
            ids = tuple(f"ex{i}" for i in range(per.shape[1]))
            ex = {r: Examples(ids, per[k], x.shape[2] == 1) for k, r in enumerate(RUNS)}
            columns[b] = analyse(b, {r: float(per[k].mean()) for k, r in enumerate(RUNS)}, ex, dict.fromkeys(RUNS, 0),
                                 RUNS, table == "score", opts)
        adjust(columns, opts)
        pairs += sum(len(c.pairs) for c in columns.values())
    return pairs


def per_call(outcomes: dict[str, np.ndarray], opts: Options) -> int:
    rng = np.random.default_rng(opts.seed)
    pairs = 0
    for x in outcomes.values():
        for _table in ("score", "failure"):
            per = x.mean(axis=2)
            for k in range(len(RUNS)):
                stats.bootstrap((per[k],), np.mean, n_resamples=opts.resamples, method="percentile", rng=rng)
            for a, b in combinations(range(len(RUNS)), 2):
                res = stats.bootstrap((per[a], per[b]), lambda u, v, axis=-1: u.mean(axis) - v.mean(axis),
                                      paired=True, n_resamples=opts.resamples, method="percentile", rng=rng)
                d = res.bootstrap_distribution
                pairs += min(1.0, 2 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0)))) >= 0  # p, as ours
    return pairs


def from_files(outcomes: dict[str, np.ndarray], opts: Options, root: Path) -> tuple[int, tuple[float, float]]:
    """Write every run's samples.jsonl, then time reading them back and analysing."""
    for b, x in outcomes.items():
        for k, r in enumerate(RUNS):
            d = root / r / b
            d.mkdir(parents=True, exist_ok=True)
            with open(d / "samples.jsonl", "w") as f:
                for i in range(x.shape[1]):
                    for s in range(x.shape[2]):
                        status = "unclosed" if x[k, i, s] == 0 and s % 3 == 0 else "closed"
                        f.write(json.dumps({"id": f"ex{i}#{s}", "example_id": f"ex{i}", "sample": s, "benchmark": b,
                                            "score": float(x[k, i, s]), "strict_score": float(x[k, i, s]),
                                            "status": status, "turn_status": [status], "output": ["x" * 200],
                                            "finish_reason": ["stop"], "n_tokens": [100]}) + "\n")
    t = _clock()
    columns: dict[str, dict] = {"score": {}, "failure": {}}
    for b, (_, n) in SIZES.items():
        ex = {r: per_example(root / r / b / "samples.jsonl", n, {"score": sample_score, "failure": sample_failure})
              for r in RUNS}
        for table, higher in (("score", True), ("failure", False)):
            values = {r: float(ex[r][table].values.mean()) for r in RUNS}
            columns[table][b] = analyse(b, values, {r: ex[r][table] for r in RUNS}, dict.fromkeys(RUNS, 0), RUNS,
                                        higher, opts)
    for cols in columns.values():
        adjust(cols, opts)
    return sum(len(c.pairs) for cols in columns.values() for c in cols.values()), _clock(t)


def _clock(start=None):
    now = (time.perf_counter(), time.process_time())
    return now if start is None else (now[0] - start[0], now[1] - start[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "analysis_significance.md")
    args = ap.parse_args()
    opts = Options(resamples=args.resamples)
    outcomes = data()
    rows = {}
    for name, fn in (("per-call scipy.stats.bootstrap (cell by cell, pair by pair)", per_call),
                     ("ours: one paired bootstrap per benchmark (analysis.significance)", ours),
                     ("per-call scipy.stats.bootstrap (again, order rotated)", per_call)):
        t = _clock()
        pairs = fn(outcomes, opts)
        rows[name] = (pairs, *_clock(t))
        print(name, rows[name], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        pairs, (wall, cpu) = from_files(outcomes, opts, Path(tmp))
    rows["ours, reading 11 × 16 samples.jsonl first"] = (pairs, wall, cpu)
    print(rows)
    n_records = sum(e * n for e, n in SIZES.values()) * len(RUNS)
    load = os.getloadavg()
    lines = [
        "# Intervals and significance of Tables 2/3 (analysis stage)", "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs visible, Python {platform.python_version()}; "
        f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (shared machine)",
        f"- command: `OMP_NUM_THREADS=1 .venv/bin/python bench/bench_analysis_significance.py --resamples {args.resamples}`",
        f"- data: 16 benchmarks at their real sizes ({sum(e for e, _ in SIZES.values()):,} examples, "
        f"{n_records:,} sample records over 11 runs), 11 runs, {args.resamples:,} resamples, both tables", "",
        "| method | pairs tested | wall s | CPU s |", "|---|---:|---:|---:|",
        *[f"| {k} | {p} | {w:.1f} | {c:.1f} |" for k, (p, w, c) in rows.items()], "",
        "Goal (issue 14): 16 benchmarks × 11 runs × 2,000 resamples in seconds. Each benchmark draws its",
        "example indices once for all runs and turns them into per-example weights: one matrix product per",
        "batch (≤ 4M draws in memory) gives every run's resampled mean, and every pair's paired difference",
        "comes from the same draws at no extra cost. The per-call baseline resamples every cell and every",
        "pair on its own.",
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
