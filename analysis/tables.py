"""Tables 1-3, the failure anatomy, the answer policies (and the comparison view) as Markdown and CSV.

Tables 2/3: one row per experiment (Base model "B" first when present), the Japanese block of
benchmarks then the English block, in the paper's column order. For runs, every cell carries its 95 %
bootstrap interval and "best" is bold only where a paired test separates it from the runner-up;
otherwise the cells tied with the top are italic (analysis/significance.py). The paper's own tables
(source=paper) bold the best value, as the paper does. Fixture cells are marked †, cells not
comparable with their column ≠; neither is ever bold. The CSV carries the numbers and a final `best`
row naming the bold experiment per column; `<table>_cells.csv` has every interval and mark. Missing
values are "—" in Markdown and empty in CSV, never zero.
"""

from __future__ import annotations

import math

import pandas as pd

from analysis import paper
from analysis.collect import BASE, Collected
from analysis.significance import Column
from core.loops import FAILURE_KINDS as KINDS  # in the order shown

MISSING = "—"
FIXTURE, INCOMPARABLE = "†", "≠"


def _fmt(x, digits: int = 3) -> str:
    return MISSING if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _sort_ids(ids) -> list[str]:
    return sorted(ids, key=lambda i: (i != BASE, not str(i).isdigit(), int(i) if str(i).isdigit() else 0, str(i)))


def markdown(df: pd.DataFrame, index: bool = True) -> str:
    """A GitHub Markdown table (no extra dependency)."""
    cols = ([df.index.name or ""] if index else []) + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, row in df.iterrows():
        cells = ([str(idx)] if index else []) + [str(v) for v in row.tolist()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def best_ids(df: pd.DataFrame, higher_is_better: bool) -> dict[str, list[str]]:
    """Per column, the experiment row(s) with the best value (Base excluded, NaN ignored)."""
    body = df.drop(index=[BASE], errors="ignore")
    out = {}
    for col in body.columns:
        s = body[col].dropna().round(6)
        if not s.empty:
            best = s.max() if higher_is_better else s.min()
            out[col] = [str(i) for i in s.index[s == best]]
    return out


def results_table(df: pd.DataFrame, higher_is_better: bool, title: str, columns: dict[str, Column] | None = None,
                  marks: dict | None = None, level: float = 0.95) -> tuple[str, pd.DataFrame]:
    """Table 2 (scores, higher_is_better) or Table 3 (failure rates): Markdown text and CSV frame.

    columns: the significance analysis per benchmark (None: bold the best value, for the paper's own
    tables); marks: (row, benchmark) -> FIXTURE / INCOMPARABLE."""
    df = df.reindex(index=_sort_ids(df.index), columns=paper.ordered(df.columns))
    marks = marks or {}
    if columns is None:
        best, tied = best_ids(df, higher_is_better), {}
    else:
        best = {b: c.best for b, c in columns.items()}
        tied = {b: c.tied for b, c in columns.items()}
    shown = pd.DataFrame(index=df.index, columns=[paper.label(c) for c in df.columns], dtype=object)
    shown.index.name = "ID"
    for col in df.columns:
        for i in df.index:
            v = _fmt(df.loc[i, col])
            cell = columns[col].cells.get(i) if columns and col in columns else None
            if cell is not None and not math.isnan(cell.low):
                v += f" ({cell.low:.3f}–{cell.high:.3f})"
            v += marks.get((i, col), "")
            shown.loc[i, paper.label(col)] = (f"**{v}**" if i in best.get(col, []) else
                                              f"*{v}*" if i in tied.get(col, []) else v)
    arrow = "↑" if higher_is_better else "↓"
    blocks = []
    for lang, name in (("ja", "Japanese"), ("en", "English")):
        labels = [paper.label(c) for c in df.columns if paper.lang(c) == lang]
        if labels:
            blocks.append(f"{arrow} {name}: {labels[0]} … {labels[-1]}")
    others = [paper.label(c) for c in df.columns if paper.lang(c) is None]
    if others:
        blocks.append(f"other: {', '.join(others)}")
    if columns is None:
        legend = "best in bold"
    elif not columns:
        legend = "significance.enabled=false: no intervals, no best marked"
    else:
        pct = f"{round((1 - level) * 100, 2):g} %"
        legend = (f"(low–high) = {level:.0%} bootstrap interval over examples; **bold** = best, beats the runner-up "
                  f"in a paired test at {pct}; *italic* = tied for best (no paired test at {pct} separates it from the "
                  f"top value); {FIXTURE} = fixture data, {INCOMPARABLE} = not comparable with its column, neither "
                  "ever bold")
    md = f"**{title}** ({' · '.join(blocks)}; {legend}; {MISSING} = missing)\n\n" + markdown(shown)
    untested = [f"{paper.label(b)}: {c.test}" for b, c in (columns or {}).items() if c.test.startswith("untested")]
    if untested:
        md += "\n\nNo best marked where the top two cannot be tested: " + "; ".join(untested)
    csv = df.astype(object)
    csv.index.name = "id"
    csv.loc["best"] = [" ".join(best.get(c, [])) for c in df.columns]
    return md, csv


def cells_frame(columns: dict[str, Column], marks: dict) -> pd.DataFrame:
    """Every cell of Table 2 or 3 with its interval and marks (table2_cells.csv / table3_cells.csv)."""
    rows = [{"id": r, "benchmark": b, "value": c.value, "low": c.low, "high": c.high,
             "mark": "best" if r in col.best else "tied" if r in col.tied else "",
             "fixture": marks.get((r, b)) == FIXTURE, "incomparable": marks.get((r, b)) == INCOMPARABLE,
             "note": c.note} for b, col in columns.items() for r, c in col.cells.items()]
    return pd.DataFrame(rows, columns=["id", "benchmark", "value", "low", "high", "mark", "fixture",
                                       "incomparable", "note"])


def cell_marks(data: Collected) -> dict:
    """(row, benchmark) -> FIXTURE or INCOMPARABLE (incomparable wins: it says more)."""
    return {**{k: FIXTURE for k in data.fixture}, **{k: INCOMPARABLE for k in data.incomparable}}


def _wide(long: pd.DataFrame, text) -> pd.DataFrame:
    """Rows: experiment ids; columns: the paper's labels; cells: text(row of `long`)."""
    ids, cols = _sort_ids(dict.fromkeys(long["id"])), paper.ordered(dict.fromkeys(long["benchmark"]))
    shown = pd.DataFrame(MISSING, index=ids, columns=[paper.label(c) for c in cols], dtype=object)
    shown.index.name = "ID"
    for r in long.itertuples(index=False):
        shown.loc[r.id, paper.label(r.benchmark)] = text(r)
    return shown


def failure_kinds(data: Collected) -> tuple[str, pd.DataFrame] | None:
    """Why samples failed (summary.json `failure_kinds`, `loop_rate`): per benchmark × experiment the
    loop rate and the count of samples of each kind. None when no summary has them."""
    rows = []
    for (r, b), s in data.summaries.items():
        kinds = s.get("failure_kinds")
        if isinstance(kinds, dict):
            n = s.get("n_records") or s["n_examples"] * s["settings"]["n"]
            rows.append({"id": r, "benchmark": b, "n_records": n, **{k: kinds.get(k) for k in KINDS},
                         "loop_rate": s.get("loop_rate"), "failure_rate": s.get("failure_rate")})
    if not rows:
        return None
    long = pd.DataFrame(rows).sort_values(["benchmark", "id"], key=_sort_key, kind="stable")
    counts = lambda r: "/".join(_count_plain(getattr(r, k)) for k in KINDS)  # noqa: E731
    shown = _wide(long, lambda r: f"{_fmt(r.loop_rate)} ({counts(r)})")
    md = ("**Why samples failed** (per benchmark × experiment: loop rate = share of all samples whose thinking "
          "ended in a loop; in brackets the number of samples per failure kind, loop/runaway/truncated answer/"
          f"other; beside Table 3's failure rate; {MISSING} = the summary has no failure anatomy)\n\n" + markdown(shown))
    return md, long.reset_index(drop=True)


def policies(data: Collected) -> tuple[str, pd.DataFrame]:
    """The three answer policies side by side and the score lost to unclosed thinking (forced − strict)."""
    rows = []
    for (r, b), s in data.summaries.items():
        strict, forced = s.get("strict_score"), s.get("forced_score")
        lost = forced - strict if forced is not None and strict is not None else None
        rows.append({"id": r, "benchmark": b, "score": s.get("score"), "strict_score": strict, "forced_score": forced,
                     "lost": lost, "forced_path": s.get("forced_path")})
    long = pd.DataFrame(rows, columns=["id", "benchmark", "score", "strict_score", "forced_score", "lost", "forced_path"])
    long = long.sort_values(["benchmark", "id"], key=_sort_key, kind="stable").reset_index(drop=True)
    if long.empty:
        return "", long
    three = _wide(long, lambda r: f"{_fmt(r.score)} / {_fmt(r.strict_score)} / {_fmt(r.forced_score)}")
    lost = _wide(long, lambda r: _fmt(r.lost))
    paths = sorted({str(p) for p in long["forced_path"].dropna()})
    md = ("**Answer policies** (paper / strict / forced. paper = the headline score of Table 2: an unclosed sample is "
          "graded on its trace; strict = an unclosed sample is wrong; forced = an unclosed sample is graded on the "
          f"answer the model gives after the closing tag and an answer cue; {MISSING} = not run or not in the "
          "summary, never 0)\n\n" + markdown(three)
          + "\n\n**Score lost to unclosed thinking** (forced − strict: what budget forcing recovers of the samples "
          f"that never closed </think>; {MISSING} = forcing not run)" + (f"; forcing ran through {', '.join(paths)}"
                                                                          if paths else "") + "\n\n" + markdown(lost))
    return md, long


def _count_plain(x) -> str:
    return MISSING if x is None or (isinstance(x, float) and math.isnan(x)) else str(int(x))


def _sort_key(col: pd.Series) -> pd.Series:
    if col.name == "id":
        order = {i: n for n, i in enumerate(_sort_ids(dict.fromkeys(col)))}
    else:
        order = {b: n for n, b in enumerate(paper.ordered(dict.fromkeys(col)))}
    return col.map(order)


def _count(x) -> str:
    """Table 1's example counts: 500k, 1,500k (small demo counts as they are)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return MISSING
    return f"{x / 1000:,.0f}k" if x >= 1000 and x % 1000 == 0 else f"{int(x):,}"


def _tokens(x) -> str:
    """Table 1's lengths: 2.3k, 0.8k."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return MISSING
    return f"{x / 1000:.1f}k"


def table1(t1: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """Table 1: one line per mixture component, the experiment id on its first line."""
    t1 = t1.copy()
    order = {i: n for n, i in enumerate(_sort_ids(dict.fromkeys(t1["id"].astype(str))))}
    t1["_o"] = t1["id"].astype(str).map(order)
    t1 = t1.sort_values("_o", kind="stable").drop(columns="_o")
    rows, last = [], None
    for r in t1.itertuples():
        rows.append({
            "ID": r.id if r.id != last else "", "experiment": r.experiment if r.id != last else "",
            "domain": "STEM" if r.domain == "stem" else str(r.domain).capitalize(), "teacher": r.teacher,
            "I/O": str(r.lang_input).capitalize(),
            "Trace": str(r.lang_trace).capitalize() if isinstance(r.lang_trace, str) and r.lang_trace else MISSING,
            "count": _count(r.count), "length": _tokens(r.mean_tokens), "PPL": _fmt(r.ppl, 2),
        })
        last = r.id
    md = ("**Table 1** (length: mean tokens of trace+response; PPL: of trace+response under the base model; "
          f"{MISSING} = missing)\n\n" + markdown(pd.DataFrame(rows), index=False))
    return md, t1


def comparison(ours: pd.DataFrame, reference: pd.DataFrame, row_id: str, what: str) -> pd.DataFrame | None:
    """One experiment's results beside the paper's row for it: ours, paper, ours - paper."""
    if row_id not in reference.index or row_id not in ours.index:
        return None
    cols = paper.ordered(set(ours.columns) | set(reference.columns))
    a = ours.reindex(columns=cols).loc[row_id].astype(float)
    b = reference.reindex(columns=cols).loc[row_id].astype(float)
    out = pd.DataFrame({f"{what} (ours)": a, f"{what} (paper)": b, "Δ": a - b}).T
    out.columns = [paper.label(c) for c in cols]
    return out


def table1_comparison(ours: pd.DataFrame, reference: pd.DataFrame, row_id: str) -> pd.DataFrame | None:
    """One experiment's data statistics (Table 1) beside the paper's, per mixture component."""
    a = ours[ours["id"].astype(str) == row_id].set_index("component")
    b = reference[reference["id"].astype(str) == row_id].set_index("component")
    if a.empty or b.empty:
        return None
    rows = {}
    for comp in dict.fromkeys(list(b.index) + list(a.index)):
        get = lambda df, col: float(df.loc[comp, col]) if comp in df.index and pd.notna(df.loc[comp, col]) else math.nan  # noqa: E731
        rows[comp] = {"length (ours)": get(a, "mean_tokens"), "length (paper)": get(b, "mean_tokens"),
                      "PPL (ours)": get(a, "ppl"), "PPL (paper)": get(b, "ppl")}
    out = pd.DataFrame(rows).T
    out.index.name = "component"
    return out


def table1_comparison_markdown(frame: pd.DataFrame) -> str:
    shown = frame.copy().astype(object)
    for col in frame.columns:
        shown[col] = [(_tokens(v) if col.startswith("length") else _fmt(v, 2)) for v in frame[col]]
    return markdown(shown)


def comparison_markdown(frame: pd.DataFrame) -> str:
    return markdown(frame.map(lambda v: _fmt(v) if not isinstance(v, str) else v))


def failure_kinds_of(long: pd.DataFrame, row_id: str) -> pd.DataFrame | None:
    """One experiment's failure anatomy for the comparison view: a row per kind and the loop rate."""
    mine = long[long["id"] == row_id]
    if mine.empty:
        return None
    mine = mine.set_index("benchmark").reindex(paper.ordered(mine["benchmark"]))
    out = pd.DataFrame({k.replace("_", " "): mine[k].map(_count_plain) for k in KINDS}).T
    out.loc["loop rate"] = mine["loop_rate"].map(_fmt)
    out.columns = [paper.label(c) for c in mine.index]
    return out


def significant_pairs(columns: dict[str, dict[str, Column]], opts) -> str:
    """compare.md section: per benchmark, which experiment pairs differ significantly (Tables 2 and 3)."""
    correction = "no correction" if opts.correction == "none" else f"{opts.correction}-adjusted over every pair of the table"
    lines = [f"**Which differences are real** (paired tests over the same examples: McNemar exact when every example "
             f"has one 0/1 sample, else a paired bootstrap; p {correction}, significant below "
             f"{round(opts.alpha * 100, 2):g} %; bootstrap: {opts.resamples:,} resamples over examples, seed "
             f"{opts.seed})"]
    for what, name in (("score", "Table 2 (scores)"), ("failure", "Table 3 (failure rates; higher = worse)")):
        lines.append(f"\n{name}:")
        for b in paper.ordered(columns.get(what, {})):
            pairs = columns[what][b].pairs
            hits = [p for p in pairs if p["significant"]]
            text = ", ".join(f"{p['a'] if p['diff'] > 0 else p['b']} > {p['b'] if p['diff'] > 0 else p['a']} "
                             f"(Δ {abs(p['diff']):.3f}, p={p['p_adjusted']:.3g}, {p['method']})" for p in hits)
            if pairs:
                lines.append(f"- {paper.label(b)}: " + (text or "no pair differs") + f" ({len(pairs)} pair(s) tested)")
            else:
                lines.append(f"- {paper.label(b)}: nothing to compare (needs two comparable runs with samples.jsonl)")
    return "\n".join(lines)
