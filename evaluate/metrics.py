"""Statistics over sample records: scores under the three answer policies, failure and no-think rates,
failure kinds.

Score = per example the mean over its N samples (pass@1 averaged over N; plain accuracy when N=1),
then the mean over examples. Its standard error is the sample standard deviation of the per-example
means over sqrt(#examples): the repeats of one example are not independent, so they are averaged
first (the usual clustered estimate; with N=1 it is the plain binomial standard error).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable

from core.loops import FAILURE_KINDS


def mean_stderr(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    var = sum((v - m) ** 2 for v in values) / (len(values) - 1)
    return m, math.sqrt(var / len(values))


def per_example_mean(records: Iterable[dict], key: str) -> tuple[float | None, float | None]:
    """Mean over examples of the mean over samples of ``record[key]``, ± standard error."""
    by_ex: dict[str, list[float]] = defaultdict(list)
    for r in records:
        if r.get(key) is None:
            raise ValueError(f"record {r['id']} has no per-sample {key!r}; the task must define aggregate()")
        by_ex[r["example_id"]].append(float(r[key]))
    return mean_stderr([sum(v) / len(v) for v in by_ex.values()])


def turn_rates(records: list[dict]) -> dict[str, float | None]:
    """Failure rate (unclosed ``</think>``) and no-think rate over all generated turns."""
    statuses = [s for r in records for s in r["turn_status"]]
    if not statuses:
        return {"failure_rate": None, "no_think_rate": None}
    return {
        "failure_rate": statuses.count("unclosed") / len(statuses),
        "no_think_rate": statuses.count("absent") / len(statuses),
    }


def anatomy(records: list[dict]) -> dict:
    """``failure_kinds``: samples per kind (every kind, 0 when none); ``loop_rate``: looping samples / all."""
    counts = Counter(r["failure_kind"] for r in records)
    return {"failure_kinds": {k: counts[k] for k in FAILURE_KINDS},
            "loop_rate": counts["loop"] / len(records) if records else None}


def forced_score(records: list[dict]) -> tuple[float | None, float | None]:
    """The score under the forced policy: an unclosed sample graded on its forced answer, every other sample
    as usual; per example the mean over its samples, then the mean over examples ± standard error."""
    grades = []
    for r in records:
        if r["status"] == "unclosed" and not r.get("forced"):
            raise ValueError(f"record {r['id']} is unclosed but has no forced answer; rerun with overwrite=true")
        grade = r["forced"]["correct"] if r.get("forced") else r["score"]
        grades.append({"id": r["id"], "example_id": r["example_id"], "grade": grade})
    return per_example_mean(grades, "grade")


def strict_view(record: dict) -> dict:
    """The record as the strict policy sees it: answers of unclosed turns are empty, their score 0."""
    r = dict(record)
    r["answers"] = ["" if s == "unclosed" else a for s, a in zip(record["turn_status"], record["answers"])]
    r["score"] = record["strict_score"]
    return r


def strict_score(score: float | None, turn_status: list[str], turn_scores: list[float] | None) -> float | None:
    """Strict policy for one sample: per-turn scores zeroed on unclosed turns, else 0 if any turn is unclosed."""
    if score is None:
        return None
    if turn_scores is not None:
        kept = [0.0 if s == "unclosed" else float(v) for s, v in zip(turn_status, turn_scores)]
        return sum(kept) / len(kept)
    return 0.0 if "unclosed" in turn_status else float(score)


def pass_at_k(records: Iterable[dict], k: int) -> float | None:
    """Unbiased pass@k (Chen et al., 2021) averaged over examples: 1 - C(n-c, k) / C(n, k) per example."""
    by_ex: dict[str, list[float]] = defaultdict(list)
    for r in records:
        by_ex[r["example_id"]].append(float(r["score"] or 0.0))
    vals = []
    for scores in by_ex.values():
        n, c = len(scores), sum(1 for v in scores if v >= 1.0)
        if n < k:
            return None
        vals.append(1.0 if n - c < k else 1.0 - math.comb(n - c, k) / math.comb(n, k))
    return sum(vals) / len(vals) if vals else None


def by_category(records: Iterable[dict], key: str = "score") -> dict[str, float]:
    """Mean per ``meta.category`` (MMLU-Pro subjects, JamC-QA categories, …); empty when none is set."""
    groups: dict[str, list[float]] = defaultdict(list)
    for r in records:
        cat = (r.get("meta") or {}).get("category")
        if cat is not None and r.get(key) is not None:
            groups[str(cat)].append(float(r[key]))
    return {c: sum(v) / len(v) for c, v in sorted(groups.items())}
