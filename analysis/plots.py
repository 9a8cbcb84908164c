"""Plots (PNG, matplotlib's Agg backend, no display needed).

- score_vs_failure.png: one panel per benchmark, score against failure rate, a point per experiment.
- bars_score.png / bars_failure.png: per-experiment bars, grouped by benchmark, Japanese and English panels.
- failure_vs_length.png: English failure rate against the mean length of the STEM data (X_l).
- failure_kinds.png: one panel per benchmark, a stacked bar per experiment: the share of its samples
  that failed by looping, by running out of budget, with a truncated answer, or otherwise.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import paper  # noqa: E402


def score_vs_failure(scores: pd.DataFrame, failures: pd.DataFrame, path: Path) -> Path:
    cols = [c for c in paper.ordered(failures.columns) if c in scores.columns]
    ncol = min(4, max(1, len(cols)))
    nrow = max(1, math.ceil(len(cols) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.8 * nrow), squeeze=False)
    for ax, col in zip(axes.flat, cols):
        ids = [i for i in failures.index if i in scores.index]
        x = failures.loc[ids, col].astype(float)
        y = scores.loc[ids, col].astype(float)
        ok = x.notna() & y.notna()
        ax.scatter(x[ok], y[ok], s=18)
        for i in x[ok].index:
            ax.annotate(str(i), (x[i], y[i]), fontsize=7, xytext=(2, 2), textcoords="offset points")
        ax.set_title(f"{paper.label(col)} ({paper.lang(col) or '?'})", fontsize=9)
        ax.set_xlabel("failure rate", fontsize=8)
        ax.set_ylabel("score", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(cols):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bars(df: pd.DataFrame, path: Path, ylabel: str) -> Path:
    """Grouped bars: benchmarks on the x axis, one bar per experiment; ja panel above en panel."""
    langs = [lg for lg in ("ja", "en") if any(paper.lang(c) == lg for c in df.columns)]
    others = [c for c in df.columns if paper.lang(c) is None]
    panels = [(lg, [c for c in paper.ordered(df.columns) if paper.lang(c) == lg]) for lg in langs]
    if others:
        panels.append(("other", others))
    if not panels:
        panels = [("", [])]
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 3.2 * len(panels)), squeeze=False)
    ids = list(df.index)
    width = 0.8 / max(1, len(ids))
    for ax, (lg, cols) in zip(axes[:, 0], panels):
        x = np.arange(len(cols))
        for j, i in enumerate(ids):
            vals = df.loc[i, cols].astype(float).to_numpy() if cols else np.array([])
            ax.bar(x + j * width - 0.4 + width / 2, vals, width, label=str(i))  # NaN draws no bar
            for xi, v in zip(x, vals):
                if np.isnan(v):  # missing: a marker at the baseline, not a zero bar
                    ax.text(xi + j * width - 0.4 + width / 2, 0, "×", ha="center", va="bottom", fontsize=6)
        ax.set_xticks(x, [paper.label(c) for c in cols], fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_title({"ja": "Japanese", "en": "English"}.get(lg, lg), fontsize=9)
    axes[0, 0].legend(title="experiment", fontsize=7, ncol=min(11, len(ids)), loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def failure_vs_length(failures: pd.DataFrame, lengths: pd.Series, path: Path) -> Path:
    """English failure rates against the STEM data's mean length (thousands of tokens)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    cols = [c for c in paper.ordered(failures.columns) if paper.lang(c) == "en"] or list(failures.columns)
    ids = [i for i in failures.index if i in lengths.index and not pd.isna(lengths[i])]
    for col in cols:
        y = failures.loc[ids, col].astype(float)
        ok = y.notna()
        ax.plot(lengths[ids][ok], y[ok], "o", label=paper.label(col), alpha=0.8)
    for i in ids:
        ax.annotate(str(i), (lengths[i], float(np.nanmax(failures.loc[i, cols].astype(float).to_numpy()))
                             if failures.loc[i, cols].notna().any() else 0.0), fontsize=7)
    ax.set_xlabel("mean trace+response length of STEM data (k tokens)")
    ax.set_ylabel("failure rate (unclosed </think>)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def failure_kinds(long: pd.DataFrame, kinds: tuple[str, ...], path: Path) -> Path:
    """Stacked shares of samples per failure kind (`long`: tables.failure_kinds' CSV frame)."""
    cols = paper.ordered(dict.fromkeys(long["benchmark"]))
    ncol = min(4, max(1, len(cols)))
    nrow = max(1, math.ceil(len(cols) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.8 * nrow), squeeze=False)
    colors = dict(zip(kinds, ("tab:red", "tab:orange", "tab:purple", "tab:gray")))
    for ax, col in zip(axes.flat, cols):
        rows = long[long["benchmark"] == col]
        x = np.arange(len(rows))
        bottom = np.zeros(len(rows))
        n = pd.to_numeric(rows["n_records"], errors="coerce").to_numpy(float)
        for kind in kinds:
            share = pd.to_numeric(rows[kind], errors="coerce").to_numpy(float) / n
            share = np.nan_to_num(share)  # a kind the summary does not count: no segment
            ax.bar(x, share, 0.7, bottom=bottom, color=colors.get(kind), label=kind.replace("_", " "))
            bottom += share
        ax.set_xticks(x, [str(i) for i in rows["id"]], fontsize=7)
        ax.set_title(f"{paper.label(col)} ({paper.lang(col) or '?'})", fontsize=9)
        ax.set_ylabel("share of samples", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(cols):]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
