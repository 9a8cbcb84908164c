"""Gather what the other stages wrote (docs/contracts.md) into the frames the tables are made of.

- Table 1 rows come from each experiment's config (conf/experiment/<name>.yaml: its data components,
  teachers, languages, domain counts) and the synth statistics `${paths.data_dir}/<component>/stats.json`.
- Table 2/3 rows come from `${paths.output_dir}/eval/<run_name>/<benchmark>/summary.json`.

Rows are labelled by the paper's experiment id ("1".."10"; the experiment name when it has none, as
the demo) and "B" for the base model. Anything missing stays NaN (shown as "—"), never zero.

Every summary is checked before it is used: unreadable JSON stops the stage naming the file; one
lacking a key the tables need is left out and listed under missing inputs; runs of one benchmark
that differ in decoding settings or example count stop the stage (`allow_incomparable=true` shows
them marked instead); fixture runs (evaluate's small shipped files) are flagged for the tables.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from analysis import paper
from core.config import CONF
from core.student import component_counts

log = logging.getLogger(__name__)

BASE = "B"
# summary.json keys the tables cannot do without (docs/contracts.md); the fixture flag is `is_fixture`
# (evaluate/run.py), or `source: fixture` for summaries that predate it.
REQUIRED = ("score", "failure_rate", "n_examples", "settings")
SETTINGS = ("temperature", "top_p", "max_tokens", "n")


@dataclass
class Collected:
    names: dict[str, str]                    # row id -> experiment name ("B" -> base run name)
    table1: pd.DataFrame                     # long form, see analysis.paper.table1 (+ synth_count)
    scores: pd.DataFrame                     # index row id, columns benchmark keys
    failures: pd.DataFrame
    missing: dict[str, list[str]] = field(default_factory=dict)   # row id -> what was not found
    summaries: dict = field(default_factory=dict)                 # (row id, benchmark) -> summary.json
    run_dirs: dict = field(default_factory=dict)                  # (row id, benchmark) -> its eval directory
    fixture: set = field(default_factory=set)                     # (row id, benchmark) run on fixture data
    incomparable: dict = field(default_factory=dict)              # (row id, benchmark) -> how it differs
    notes: list[str] = field(default_factory=list)                # what the comparability check found

    def frame(self, key: str, rows=None) -> pd.DataFrame:
        """One summary key as a Table 2-shaped frame (rows: experiment ids, columns: benchmarks)."""
        rows = list(self.names) if rows is None else rows
        return _frame({r: {b: s.get(key) for (i, b), s in self.summaries.items() if i == r} for r in rows})


def from_paper() -> Collected:
    """The paper's own Tables 1-3 in the same shape as collected runs."""
    t1 = paper.table1()
    names = dict(zip(t1["id"], t1["experiment"]))
    return Collected(names={BASE: "base", **names}, table1=t1, scores=paper.table2(), failures=paper.table3())


# ---------------------------------------------------------------- experiment configs
def experiment_config(name: str) -> DictConfig:
    """Compose conf/analysis.yaml with `experiment=<name>` (inside a Hydra app or from plain Python)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import MissingConfigException

    try:
        if GlobalHydra.instance().is_initialized():
            return compose(config_name="analysis", overrides=[f"experiment={name}"])
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name="analysis", overrides=[f"experiment={name}"])
    except MissingConfigException as err:
        valid = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
        raise ValueError(f"experiment {name!r} has no config in conf/experiment/: use one of {valid}") from err


def teacher_label(teacher: str | None, effort: str | None) -> str:
    """The paper's teacher names: gpt-oss-120b medium -> OSS, high -> OSS-h; DeepSeek-R1-0528 -> R1."""
    t = (teacher or "").lower()
    if "gpt-oss" in t:
        return "OSS-h" if effort == "high" else "OSS"
    if "r1" in t:
        return "R1"
    return teacher or "—"


def _stats(data_dir: Path, comp_name: str, comp: DictConfig) -> dict | None:
    """Statistics of a component, in `<data_dir>/<component>/` or the directory its `path` names: synth's
    per-component view `stats.<component>.json` first (a trace-free component sharing another's directory,
    exp 7, has only that one), then the directory's `stats.json`."""
    raw = OmegaConf.to_container(comp, resolve=False).get("path") or ""
    for d in dict.fromkeys([comp_name, str(raw).rstrip("/").rsplit("/", 1)[-1]]):
        for f in (data_dir / d / f"stats.{comp_name}.json", data_dir / d / "stats.json"):
            if d and f.is_file():
                return json.loads(f.read_text())
    return None


def table1_rows(exp_cfg: DictConfig, data_dir: Path) -> tuple[str, list[dict], list[str]]:
    """Table 1 rows of one experiment: one per data component, statistics from its stats.json."""
    exp = exp_cfg.experiment
    row_id = str(exp.paper_id) if exp.get("paper_id") is not None else str(exp.name)
    comps = exp_cfg.get("data") or {}
    counts = component_counts(exp_cfg) if comps else {}
    rows, missing = [], []
    for comp_name, comp in comps.items():
        keep_trace = comp.get("keep_trace", True)
        stats = _stats(data_dir, comp_name, comp)
        if stats is None:
            missing.append(f"stats of {comp_name} (run `python -m synth experiment={exp.name}`)")
            stats = {}
        rows.append({
            "id": row_id, "experiment": str(exp.name), "component": comp_name, "domain": comp.domain,
            "teacher": teacher_label(comp.get("teacher"), comp.get("reasoning_effort")),
            "lang_input": comp.get("lang_input"),
            "lang_trace": comp.get("lang_trace") if keep_trace else None,
            "count": counts[comp_name],
            "mean_tokens": stats.get("mean_tokens"), "ppl": stats.get("ppl"), "synth_count": stats.get("count"),
        })
    return row_id, rows, missing


# ---------------------------------------------------------------- evaluation summaries
def read_summary(f: Path) -> dict:
    try:
        summary = json.loads(f.read_text())
    except ValueError as err:
        raise ValueError(f"{f} is not valid JSON ({err}): it is truncated or corrupt. Rerun `python -m evaluate` "
                         "for that run (it rebuilds summary.json from samples.jsonl) or delete the file") from err
    if not isinstance(summary, dict):
        raise ValueError(f"{f} holds a JSON {type(summary).__name__}, not a summary object; rerun `python -m "
                         "evaluate` for that run or delete the file")
    return summary


def lacking(summary: dict) -> list[str]:
    """The keys the tables need that a summary does not have."""
    keys = [k for k in REQUIRED if k not in summary]
    keys += [f"settings.{k}" for k in SETTINGS if "settings" in summary and k not in (summary["settings"] or {})]
    return keys + (["is_fixture"] if "is_fixture" not in summary and "source" not in summary else [])


def is_fixture(summary: dict) -> bool:
    return bool(summary.get("is_fixture")) or summary.get("source") == "fixture"


def read_summaries(run_dir: Path) -> dict[str, tuple[dict, Path]]:
    """benchmark key -> (summary.json, its path) of one evaluated model (`<output_dir>/eval/<run_name>/`)."""
    out = {}
    for f in sorted(run_dir.glob("*/summary.json")):
        summary = read_summary(f)
        name = summary.get("benchmark") or f.parent.name
        key = paper.canonical_benchmark(name) or name
        if key in out:
            log.warning("%s: two summaries for benchmark %s; keeping %s", run_dir, key, f)
        out[key] = (summary, f)
    return out


def _setup(summary: dict, base: bool) -> tuple:
    """What must agree for two runs to share a column. The base row's decoding is Appendix A's
    (T=0, N=1) by design, so it is held only to the same examples and budget."""
    settings = summary["settings"]
    if base:
        return (summary["n_examples"], settings["max_tokens"])
    return (summary["n_examples"], *(settings[k] for k in SETTINGS))


def _describe(summary: dict) -> str:
    return f"n_examples={summary['n_examples']}, " + ", ".join(f"{k}={summary['settings'][k]}" for k in SETTINGS)


def check_comparable(summaries: dict, allow: bool) -> tuple[dict, list[str]]:
    """Per benchmark, group the rows by `_setup`; the largest group of experiments is the column's
    reference (ties: the group of the first row). Returns {(row, benchmark): how it differs} and notes;
    raises, naming every difference, unless `allow`."""
    by_bench: dict[str, dict[str, dict]] = defaultdict(dict)
    for (row, b), s in summaries.items():
        by_bench[b][row] = s
    flagged, notes = {}, []
    for b, rows in by_bench.items():
        experiments = {r: s for r, s in rows.items() if r != BASE}
        if not experiments:
            continue
        counts = Counter(_setup(s, False) for s in experiments.values())
        ref = max(counts, key=lambda k: (counts[k], -list(counts).index(k)))
        ref_summary = next(s for s in experiments.values() if _setup(s, False) == ref)
        for r, s in rows.items():
            want = _setup(ref_summary, True) if r == BASE else ref
            if _setup(s, r == BASE) != want:
                flagged[(r, b)] = _describe(s)
        odd = [r for r in rows if (r, b) in flagged]
        if odd:
            notes.append(f"{paper.label(b)}: {', '.join(r for r in rows if r not in odd)} ran with "
                         f"{_describe(ref_summary)}; " + "; ".join(f"{r} with {flagged[(r, b)]}" for r in odd))
    if notes and not allow:
        raise ValueError("runs that are not comparable would share a column (different decoding settings or "
                         "example counts for the same benchmark; the base row B must match in examples and "
                         "max_tokens):\n  " + "\n  ".join(notes) + "\nEvaluate them alike, narrow "
                         "`experiments=`, or pass allow_incomparable=true to show them marked ≠ (never bold, "
                         "never tested against the others)")
    return flagged, notes


def collect(cfg: DictConfig) -> Collected:
    """Table 1-3 frames for cfg.experiments (or the one `experiment=` names) plus the base row."""
    data_dir = Path(cfg.paths.data_dir)
    eval_dir = Path(cfg.paths.output_dir) / "eval"
    names_wanted = [cfg.experiment.name] if OmegaConf.select(cfg, "experiment.name") else list(cfg.experiments)
    run_names = dict(cfg.get("run_names") or {})

    names, t1_rows, missing, summaries, run_dirs = {}, [], {}, {}, {}
    targets = [(str(n), run_names.get(n, n)) for n in names_wanted]
    if cfg.get("base_run"):
        targets.insert(0, (BASE, str(cfg.base_run)))
    for name, run_name in targets:
        if name == BASE:
            row_id, miss = BASE, []
        else:
            row_id, rows, miss = table1_rows(experiment_config(name), data_dir)
            t1_rows += rows
        names[row_id] = name if row_id != BASE else run_name
        found = read_summaries(eval_dir / run_name)
        if not found:
            miss.append(f"evaluation results under {eval_dir / run_name} (run `python -m evaluate` for it)")
        for b, (summary, f) in found.items():
            if keys := lacking(summary):
                miss.append(f"{f} lacks {keys} (written by an older evaluate? rerun `python -m evaluate` for it)")
                continue
            summaries[(row_id, b)] = summary
            run_dirs[(row_id, b)] = f.parent
        if miss:
            missing[row_id] = miss
            for m in miss:
                log.warning("%s (%s): missing %s", row_id, name, m)

    incomparable, notes = check_comparable(summaries, bool(cfg.get("allow_incomparable", False)))
    t1 = pd.DataFrame(t1_rows, columns=["id", "experiment", "component", "domain", "teacher", "lang_input",
                                        "lang_trace", "count", "mean_tokens", "ppl", "synth_count"])
    data = Collected(names=names, table1=t1, scores=pd.DataFrame(), failures=pd.DataFrame(), missing=missing,
                     summaries=summaries, run_dirs=run_dirs, incomparable=incomparable, notes=notes,
                     fixture={k for k, s in summaries.items() if is_fixture(s)})
    data.scores = data.frame("score")
    data.failures = data.frame("failure_rate", [r for r in names if r != BASE])
    return data


def _frame(rows: dict) -> pd.DataFrame:
    df = pd.DataFrame.from_dict(rows, orient="index")
    df = df.reindex(columns=paper.ordered(df.columns)).astype(float)
    df.index.name = "id"
    return df
