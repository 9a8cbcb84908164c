"""The analysis stage, top to bottom: collect -> Tables 1-3 (intervals, significance) -> failure anatomy and
answer policies -> Table 4 regression -> comparison -> plots -> report.

Everything lands in `cfg.output_dir` (default `${paths.output_dir}/analysis/<source>/`):
table1.md/.csv, table2.md/.csv (scores), table3.md/.csv (failure rates), table{2,3}_cells.csv (intervals and
marks), failure_kinds.md/.csv, policies.md/.csv, significance.csv/.json, table4.md/.csv (+ table4_terms.csv
with every coefficient and p-value), table4_vs_paper.md/.csv (source=paper), compare.md (runs beside
the paper's rows, significant pairs), *.png, and report.md which strings them together. Nothing is
written before every input has been read and checked. Returns a dict of the key numbers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from analysis import collect, paper, plots, reproduce, significance, tables
from analysis.regression import TABLE4_ROWS, Fit, Reading, factors, long_table, regress, table4
from core import wandb_mode

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    if cfg.source not in ("runs", "paper"):
        raise ValueError(f"source={cfg.source!r} is unknown: use source=runs (your runs) or source=paper")
    opts = significance.Options.from_cfg(cfg.significance)
    reading = Reading.from_cfg(cfg.regression)
    out = Path(cfg.output_dir)
    data = collect.from_paper() if cfg.source == "paper" else collect.collect(cfg)
    runs = cfg.source == "runs"
    columns = significance.for_tables(data, opts) if runs and cfg.significance.enabled else None
    out.mkdir(parents=True, exist_ok=True)
    title = "the paper's own Tables 1-3" if cfg.source == "paper" else f"runs under {cfg.paths.output_dir}"
    sections: list[str] = [f"# Analysis of {title}"]
    result: dict = {"source": cfg.source, "output_dir": str(out), "experiments": data.names, "missing": data.missing}

    # ---- Tables 1-3, with intervals and tested "best" for runs
    md, csv = tables.table1(data.table1)
    _write(out, "table1", md, csv, index=False)
    sections.append(md)
    marks = tables.cell_marks(data)
    for name, frame, higher, what, title in (
            ("table2", data.scores, True, "score", "Table 2: benchmark scores"),
            ("table3", data.failures, False, "failure", "Table 3: failure rates (unclosed </think>)")):
        cols = columns[what] if columns is not None else ({} if runs else None)
        md, csv = tables.results_table(frame, higher, title, cols, marks, opts.level)
        _write(out, name, md, csv)
        if cols:
            tables.cells_frame(cols, marks).to_csv(out / f"{name}_cells.csv", index=False)
        sections.append(md)
    if columns is not None:
        pairs = pd.concat([significance.pairs_frame(columns[w], w) for w in ("score", "failure")], ignore_index=True)
        pairs.to_csv(out / "significance.csv", index=False)
        record = significance.record(columns, opts)
        (out / "significance.json").write_text(json.dumps(record, indent=2) + "\n")
        result["significance"] = {**dataclasses.asdict(opts),
                                  "best": {w: {b: c["best"] for b, c in cols.items()} for w, cols in record["best"].items()}}

    # ---- why samples failed, and the three answer policies (issue 14; runs only)
    anatomy = tables.failure_kinds(data) if runs else None
    if anatomy:
        md, long = anatomy
        _write(out, "failure_kinds", md, long, index=False)
        sections.append(md)
    if runs:
        md, long = tables.policies(data)
        if md:
            _write(out, "policies", md, long, index=False)
            sections.append(md)
    if data.notes:
        sections.append("**Not comparable, shown anyway** (allow_incomparable=true; cells marked ≠, never bold or "
                        "tested against their column)\n\n" + "\n".join(f"- {n}" for n in data.notes))
    if data.missing:
        sections.append("**Missing inputs** (shown as — above, never as 0)\n\n" + "\n".join(
            f"- {i} ({data.names.get(i, i)}): {m}" for i, ms in data.missing.items() for m in ms))

    # ---- Table 4
    fits: dict[str, Fit] = {}
    r2_fits: dict[str, Fit] | None = None
    if cfg.regression.enabled:
        benchmarks = list(cfg.regression.benchmarks)
        fits, notes = _regression(data, reading, benchmarks)
        if reading.r2_target and reading.r2_target != reading.target:
            r2_fits, r2_notes = _regression(data, dataclasses.replace(reading, target=reading.r2_target), benchmarks)
            notes += [f"R² row from the {reading.r2_target} fit (regression.r2_target): {n}" for n in r2_notes]
        result["table4"] = {b: {"variables": list(f.variables), "cells": {k: f.cell(k) for k in TABLE4_ROWS},
                                "r2": f.r2, "mean": f.mean, "n": f.n, "used": f.used, "dropped": f.dropped,
                                "r2_row": r2_fits[b].r2 if r2_fits and b in r2_fits else f.r2}
                            for b, f in fits.items()}
        result["regression_notes"] = notes
        text = f"**Table 4: factor regression** ({reading.target}; reading: {reading.describe()})\n\n"
        if fits:
            t4 = table4(fits, paper.label, r2_fits)
            t4.index.name = ""
            _write(out, "table4", text + tables.markdown(t4), t4)
            long_table(fits).to_csv(out / "table4_terms.csv", index=False)
            text += tables.markdown(t4)
        else:
            text += "No benchmark could be regressed (see the notes)."
        sections.append(text + ("\n\n" + "\n".join(f"- {n}" for n in notes) if notes else ""))

    # ---- beside the paper
    if cfg.source == "paper" and fits:
        score_fits = r2_fits if reading.r2_target == "score" else reproduce.paper_fits(
            dataclasses.replace(reading, target="score"))
        cmp = reproduce.compare(fits, score_fits if reading.target == "failure_rate" else None)
        cmp.to_csv(out / "table4_vs_paper.csv", index=False)
        md = _table4_vs_paper(cmp)
        (out / "table4_vs_paper.md").write_text(md + "\n")
        sections.append(md)
        result["table4_match"] = reproduce.score(cmp)
    elif runs:
        md = "\n\n".join(filter(None, [_comparison_view(data, anatomy[1] if anatomy else None),
                                       tables.significant_pairs(columns, opts) if columns is not None else ""]))
        if md:
            (out / "compare.md").write_text(md + "\n")
            sections.append(md)

    # ---- plots
    images = {}
    if cfg.plots:
        images["score_vs_failure"] = plots.score_vs_failure(data.scores, data.failures, out / "score_vs_failure.png")
        images["bars_score"] = plots.bars(data.scores, out / "bars_score.png", "score")
        images["bars_failure"] = plots.bars(data.failures, out / "bars_failure.png", "failure rate")
        # X_l as the regression codes it, but experiments without STEM data are left off the plot.
        stem_only = dataclasses.replace(reading, no_stem="drop")
        lengths = factors(data.table1, stem_only)[0]["length"] if not data.table1.empty else pd.Series(dtype=float)
        images["failure_vs_length"] = plots.failure_vs_length(data.failures, lengths, out / "failure_vs_length.png")
        if anatomy:
            images["failure_kinds"] = plots.failure_kinds(anatomy[1], tables.KINDS, out / "failure_kinds.png")
        sections.append("\n".join(f"![{k}]({p.name})" for k, p in images.items()))
    result["images"] = {k: str(p) for k, p in images.items()}

    report = "\n\n".join(sections) + "\n"
    (out / "report.md").write_text(report)
    result["report"] = str(out / "report.md")
    if cfg.get("print_report", True):
        print(report)
    _log_wandb(cfg, out, images)
    return result


def _write(out: Path, name: str, md: str, csv: pd.DataFrame, index: bool = True) -> None:
    (out / f"{name}.md").write_text(md + "\n")
    csv.to_csv(out / f"{name}.csv", index=index)


def _regression(data: collect.Collected, reading: Reading, benchmarks: list[str]) -> tuple[dict, list[str]]:
    """One fit per benchmark that has results; the notes say what was dropped or skipped and why."""
    targets = data.failures if reading.target == "failure_rate" else data.scores.drop(index=[collect.BASE], errors="ignore")
    fits, notes = {}, []
    for b in benchmarks:
        if b not in targets.columns or targets[b].isna().all():
            notes.append(f"{paper.label(b)}: skipped, no experiment has a {reading.target} for it")
            continue
        try:
            fits.update(regress(targets, data.table1, reading, [b]))
        except ValueError as err:
            notes.append(f"{paper.label(b)}: skipped, {err}")
            continue
        if fits[b].dropped:
            notes.append(f"{paper.label(b)}: n={fits[b].n}, dropped rows " + "; ".join(
                f"{i} ({why})" for i, why in fits[b].dropped.items()))
    for n in notes:
        log.info("regression: %s", n)
    return fits, notes


def _table4_vs_paper(cmp: pd.DataFrame) -> str:
    ok = lambda v: "✓" if v else "✗"  # noqa: E731
    rows = pd.DataFrame({
        "benchmark": cmp["benchmark"],
        "variables (ours)": cmp["vars"], "variables (paper)": cmp["vars_paper"], "vars": cmp["vars_match"].map(ok),
        "cells (ours)": cmp["cells"], "cells (paper)": cmp["cells_paper"], "stars": cmp["stars_match"].map(ok),
        "R² (ours)": cmp["r2"].map(lambda v: f"{v:.3f}"), "R² (paper)": cmp["r2_paper"].map(lambda v: f"{v:.2f}"),
        "R²": cmp["r2_match"].map(ok),
        **({"R² (ours, score fit)": cmp["r2_score"].map(lambda v: f"{v:.3f}"), "R² score": cmp["r2_score_match"].map(ok)}
           if "r2_score" in cmp else {}),
        "mean (ours)": cmp["mean"].map(lambda v: f"{v:.4f}"), "mean (paper)": cmp["mean_paper"].map(lambda v: f"{v:.3f}"),
        "mean": cmp["mean_match"].map(ok),
    })
    s = reproduce.score(cmp)
    paper_t4 = pd.DataFrame({
        paper.label(b): {"mean": f"{r['mean']:.3f}", "R2": f"{r['r2']:.2f}", **r["cells"]}
        for b, r in paper.table4()["benchmarks"].items()
    }).reindex(["mean", "R2", *TABLE4_ROWS])
    paper_t4.index.name = ""
    return (
        "**The paper's Table 4** (as printed; signs were lost in the text except GPQ's +)\n\n"
        + tables.markdown(paper_t4)
        + f"\n\n**Ours beside the paper's** (matches of 7: {', '.join(f'{k} {v}' for k, v in s.items())}; "
        "R² = the selected failure-rate model's own R²; R² score = the R² of the same reading's best-subset fit "
        "of the scores (Table 2), which is what the paper's R² row reproduces)\n\n" + tables.markdown(rows, index=False)
    )


def _comparison_view(data: collect.Collected, anatomy: pd.DataFrame | None) -> str:
    """Each collected experiment that has a paper id, its scores and failure rates beside the paper's,
    and beside its failure rates (Table 3) why its samples failed."""
    parts = []
    for row_id, name in data.names.items():
        blocks = [tables.comparison(data.scores, paper.table2(), row_id, "score"),
                  tables.comparison(data.failures, paper.table3(), row_id, "failure rate")]
        texts = [tables.comparison_markdown(b) for b in blocks if b is not None]
        kinds = tables.failure_kinds_of(anatomy, row_id) if anatomy is not None and blocks[1] is not None else None
        if kinds is not None:
            texts.append("why its samples failed (samples per kind; loop rate = share of all samples)\n\n"
                         + tables.markdown(kinds))
        data_stats = tables.table1_comparison(data.table1, paper.table1(), row_id)
        if data_stats is not None:
            texts.append(tables.table1_comparison_markdown(data_stats))
        if texts:
            parts.append(f"**Experiment {row_id} ({name}) beside the paper**\n\n" + "\n\n".join(texts))
    return "\n\n".join(parts)


def _log_wandb(cfg: DictConfig, out: Path, images: dict) -> None:
    if not OmegaConf.select(cfg, "logger.enabled", default=False):
        return
    import wandb

    mode = wandb_mode.resolve(OmegaConf.select(cfg, "logger.mode", default="auto"))
    run = wandb.init(
        project=OmegaConf.select(cfg, "logger.project", default="jaen-distill"),
        entity=OmegaConf.select(cfg, "logger.entity", default=None),
        group=OmegaConf.select(cfg, "sweep_name", default=None) or "analysis",
        name=f"analysis-{cfg.source}", job_type="analysis", mode=mode, dir=str(out),
        config={"source": cfg.source, "regression": OmegaConf.to_container(cfg.regression, resolve=True)},
    )
    payload = {f"plots/{k}": wandb.Image(str(p)) for k, p in images.items()}
    for name in ("table2", "table3", "failure_kinds", "policies", "table4", "table4_vs_paper"):
        f = out / f"{name}.csv"
        if f.is_file():
            payload[f"tables/{name}"] = wandb.Table(dataframe=pd.read_csv(f, dtype=str).fillna(""))
    run.log(payload)
    run.finish()
