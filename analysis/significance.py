"""Are the differences real? 95 % intervals for the cells of Tables 2/3 and paired tests between experiments.

The unit of resampling is the **example**: each run's samples.jsonl is reduced to one value per example
(the mean over its N samples: pass@1 averaged over N for Table 2, the share of unclosed turns for
Table 3), so the N samples of one example always stay together, and the mean of those values is the
summary's score. One draw of example indices serves every run of a benchmark (`bootstrap_means`), so
the bootstrap distributions of two runs over the same examples are paired and their difference is the
paired bootstrap of the difference; the interval is the percentile interval. Two runs are compared by

- McNemar's exact test (statsmodels) when each example has one 0/1 sample in both runs (N = 1), else
- the paired bootstrap: p = 2 · min(P*(Δ ≤ 0), P*(Δ ≥ 0)), the smallest level whose percentile
  interval of Δ excludes 0.

"Best" is decided by one such test, top value against the runner-up, per column. The list of significant
pairs (compare.md) tests every pair of a table — all columns — and corrects for that many tests
(`significance.correction`, Holm by default): it is read as one list.

Only runs over the same examples with comparable settings are compared. A cell whose per-example mean
does not reproduce its summary (a corpus-level metric such as BLEU, or a samples.jsonl holding other
examples) gets no interval and no test; the reason is kept with the cell.

Random draws are fixed: benchmark b uses `numpy.random.default_rng([seed, crc32(b)])`, so a run's
interval does not depend on which other benchmarks were analysed.
"""

from __future__ import annotations

import math
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from analysis.collect import BASE, Collected
from core import jsonl

CORRECTIONS = ("holm", "bonferroni", "fdr_bh", "none")
TOLERANCE = 1e-6  # per-example mean vs the summary's value
MAX_ELEMENTS = 4_000_000  # bootstrap batch bound: resamples × examples draws in memory at once


@dataclass(frozen=True)
class Options:
    resamples: int = 2000
    level: float = 0.95
    seed: int = 0
    correction: str = "holm"

    @property
    def alpha(self) -> float:
        return 1.0 - self.level

    @classmethod
    def from_cfg(cls, cfg) -> "Options":
        opts = cls(int(cfg.resamples), float(cfg.level), int(cfg.seed), str(cfg.correction))
        if opts.resamples < 100:
            raise ValueError(f"significance.resamples={opts.resamples}: use at least 100 (2000 is the default)")
        if not 0.5 <= opts.level < 1:
            raise ValueError(f"significance.level={opts.level}: use a coverage in [0.5, 1), e.g. 0.95")
        if opts.correction not in CORRECTIONS:
            raise ValueError(f"significance.correction={opts.correction!r}: use one of {list(CORRECTIONS)}")
        return opts


# ---------------------------------------------------------------- per-example values from samples.jsonl
@dataclass(frozen=True)
class Examples:
    ids: tuple[str, ...]     # sorted example ids
    values: np.ndarray       # per example: the mean over its samples
    binary: bool             # one sample per example and every value 0 or 1 (McNemar applies)


def sample_score(record: dict) -> float | None:
    return record.get("score")


def sample_failure(record: dict) -> float | None:
    turns = record.get("turn_status") or []
    return turns.count("unclosed") / len(turns) if turns else None


def per_example(path: Path, n: int, measures: dict[str, Callable[[dict], float | None]]) -> dict[str, Examples]:
    """One `Examples` per measure from a samples.jsonl (samples k < n only: a resumed run with a smaller
    N keeps its extra samples on disk, the summary does not count them). Samples without a value
    (judge failures) are left out of their example's mean; examples without any value are left out."""
    values: dict[str, dict[str, list[float]]] = {m: defaultdict(list) for m in measures}
    for r in jsonl.read(path):
        if int(r.get("sample", 0)) >= n:
            continue
        for m, get in measures.items():
            v = get(r)
            if v is not None:
                values[m][str(r["example_id"])].append(float(v))
    out = {}
    for m, by_ex in values.items():
        ids = tuple(sorted(by_ex))
        means = np.array([sum(by_ex[i]) / len(by_ex[i]) for i in ids])
        binary = all(len(by_ex[i]) == 1 for i in ids) and bool(np.isin(means, (0.0, 1.0)).all())
        out[m] = Examples(ids, means, binary)
    return out


# ---------------------------------------------------------------- one column of Table 2 or 3
@dataclass
class Cell:
    value: float
    low: float = math.nan
    high: float = math.nan
    note: str = ""            # why there is no interval


@dataclass
class Column:
    benchmark: str
    cells: dict[str, Cell]
    best: list[str]           # bold: beats the runner-up by the paired test
    tied: list[str]           # the top value and every row the test cannot separate from it
    test: str                 # what decided: "best", "tied", "untested" (why), "" (fewer than 2 contenders)
    pairs: list[dict] = field(default_factory=list)   # every compared pair: a, b, diff, p, method (+ adjust())


def analyse(benchmark: str, values: dict[str, float], examples: dict[str, Examples | None], groups: dict[str, object],
            contenders: list[str], higher_is_better: bool, opts: Options) -> Column:
    """Intervals for every row of one column; the best among `contenders`; every pair that can be compared.

    values: row -> the summary's value; examples: row -> its per-example values (None: no samples.jsonl);
    groups: row -> comparability key (rows with different keys are never compared)."""
    cells = {r: Cell(v) for r, v in values.items() if not math.isnan(v)}
    usable: dict[tuple, list[str]] = defaultdict(list)   # (group, example ids) -> rows
    for r in cells:
        ex = examples.get(r)
        if ex is None:
            cells[r].note = "no samples.jsonl"
        elif len(ex.ids) < 2:
            cells[r].note = f"{len(ex.ids)} example(s) with a per-sample value"
        elif abs(float(ex.values.mean()) - cells[r].value) > TOLERANCE:
            cells[r].note = (f"the mean over its {len(ex.ids)} examples ({ex.values.mean():.4f}) is not the summary's "
                             "value: a corpus-level metric, or samples.jsonl holds other examples")
        else:
            usable[(groups[r], ex.ids)].append(r)

    rng = np.random.default_rng([opts.seed, zlib.crc32(benchmark.encode())])
    dist: dict[str, np.ndarray] = {}
    key_of: dict[str, tuple] = {}
    for key in sorted(usable, key=lambda k: sorted(usable[k])):
        rows = sorted(usable[key])
        means = bootstrap_means(np.stack([examples[r].values for r in rows]), opts.resamples, rng)
        low, high = np.quantile(means, [opts.alpha / 2, 1 - opts.alpha / 2], axis=1)
        for i, r in enumerate(rows):
            cells[r].low, cells[r].high = float(low[i]), float(high[i])
            dist[r], key_of[r] = means[i], key

    def compare(a: str, b: str) -> dict | None:
        if a not in dist or b not in dist or key_of[a] != key_of[b]:
            return None
        ea, eb = examples[a], examples[b]
        if ea.binary and eb.binary:
            x, y = ea.values.astype(bool), eb.values.astype(bool)
            table = [[int(np.sum(x & y)), int(np.sum(x & ~y))], [int(np.sum(~x & y)), int(np.sum(~x & ~y))]]
            p, method = float(mcnemar(table, exact=True).pvalue), "McNemar exact"
        else:
            d = dist[a] - dist[b]
            p, method = min(1.0, 2 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0)))), "paired bootstrap"
        return {"a": a, "b": b, "diff": cells[a].value - cells[b].value, "p": p, "method": method}

    # The best: the top value beats the runner-up by the paired test; otherwise every row the test
    # cannot separate from the top (untestable ones included: not shown to be worse) is tied.
    ranked = sorted((r for r in contenders if r in cells), key=lambda r: cells[r].value, reverse=higher_is_better)
    best, tied, test = [], [], ""
    if len(ranked) >= 2:
        top = ranked[0]
        first = compare(top, ranked[1])
        if first is None:
            test = f"untested, {_why_untested(cells, top, ranked[1])}"
        elif first["p"] < opts.alpha:
            best, test = [top], "best"
        else:
            test = "tied"
            tied = [top] + [r for r in ranked[1:] if (c := compare(top, r)) is None or c["p"] >= opts.alpha]

    pairs = [c for i, a in enumerate(sorted(dist)) for b in sorted(dist)[i + 1:] if (c := compare(a, b))]
    return Column(benchmark, cells, best, tied, test, pairs)


def bootstrap_means(matrix: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(runs × resamples): the mean of each row of `matrix` (runs × examples) over `resamples` resamples of
    the examples, one draw of example indices shared by every run.

    Written out rather than calling scipy.stats.bootstrap: a resample's mean is the examples' values
    weighted by how often each was drawn, so all runs of a benchmark take one matrix product per batch
    instead of gathering runs × resamples × examples values — several times faster at the paper's scale
    (bench/results/analysis_significance.md). It draws exactly as scipy.stats.bootstrap(paired=True) does
    (`rng.integers(0, n, (batch, n))`), and the tests check it gives scipy's percentile interval."""
    runs, n = matrix.shape
    out = np.empty((runs, resamples))
    step = max(1, MAX_ELEMENTS // n)
    for lo in range(0, resamples, step):
        b = min(step, resamples - lo)
        draws = rng.integers(0, n, (b, n))
        counts = np.bincount((draws + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n)
        out[:, lo:lo + b] = matrix @ counts.T / n
    return out


def adjust(columns: dict[str, Column], opts: Options) -> None:
    """Correct the p-values of every pair of one table (all its columns: compare.md lists them as one list)
    for the number of pairs tested; sets p_adjusted and significant."""
    pairs = [c for col in columns.values() for c in col.pairs]
    if not pairs:
        return
    ps = [c["p"] for c in pairs]
    adjusted = ps if opts.correction == "none" else multipletests(ps, alpha=opts.alpha, method=opts.correction)[1]
    for c, adj in zip(pairs, adjusted):
        c["p_adjusted"], c["significant"] = float(adj), bool(adj < opts.alpha)


def _why_untested(cells: dict[str, Cell], a: str, b: str) -> str:
    for r in (a, b):
        if cells[r].note:
            return f"{r}: {cells[r].note}"
    return f"{a} and {b} are not over the same examples"


def record(columns: dict[str, dict[str, Column]], opts: Options) -> dict:
    """significance.json: the options (seed included) and, per table and benchmark, what was marked and why."""
    return {**asdict(opts),
            "method": "percentile bootstrap over examples, one draw per benchmark shared by its runs; best vs "
                      "runner-up and pairs: McNemar exact (one 0/1 sample per example) or paired bootstrap; pairs "
                      "corrected over all pairs of a table",
            "rng": "numpy.random.default_rng([seed, zlib.crc32(benchmark)])",
            "best": {w: {b: {"best": c.best, "tied": c.tied, "test": c.test} for b, c in cols.items()}
                     for w, cols in columns.items()}}


def pairs_frame(columns: dict[str, Column], what: str) -> pd.DataFrame:
    """Every compared pair of every column, for significance.csv."""
    rows = [{"table": what, "benchmark": b, **p} for b, col in columns.items() for p in col.pairs]
    return pd.DataFrame(rows, columns=["table", "benchmark", "a", "b", "diff", "p", "method", "p_adjusted",
                                       "significant"])


# ---------------------------------------------------------------- Tables 2 and 3 of collected runs
def for_tables(data: Collected, opts: Options) -> dict[str, dict[str, Column]]:
    """{"score": Table 2's columns, "failure": Table 3's} from the runs' samples.jsonl. Fixture cells and
    cells not comparable with their column (allow_incomparable) get intervals but never compete for best."""
    measures = {"score": sample_score, "failure": sample_failure}
    examples = {}
    for key, run_dir in data.run_dirs.items():
        f = run_dir / "samples.jsonl"
        examples[key] = per_example(f, int(data.summaries[key]["settings"]["n"]), measures) if f.is_file() else {}
    out: dict[str, dict[str, Column]] = {}
    for measure, frame, higher in (("score", data.scores, True), ("failure", data.failures, False)):
        out[measure] = {}
        for b in frame.columns:
            rows = [r for r in frame.index if not pd.isna(frame.loc[r, b])]
            contenders = [r for r in rows if r != BASE and (r, b) not in data.fixture and (r, b) not in data.incomparable]
            out[measure][b] = analyse(b, {r: float(frame.loc[r, b]) for r in rows},
                                      {r: examples.get((r, b), {}).get(measure) for r in rows},
                                      {r: _group(data, r, b) for r in rows}, contenders, higher, opts)
        adjust(out[measure], opts)
    return out


def _group(data: Collected, row: str, benchmark: str) -> tuple:
    """Rows are compared only within one group: the base row alone; the experiments that share the column's
    setup, or one same differing setup (allow_incomparable); fixture runs only with fixture runs."""
    return row == BASE, data.incomparable.get((row, benchmark), ""), (row, benchmark) in data.fixture
