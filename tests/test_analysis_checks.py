"""Analysis refuses what it cannot honestly show (issue 11): a truncated summary.json names the file; a
summary lacking keys is a missing input; runs of one benchmark with different settings or example
counts are not put in one column unless allow_incomparable=true (then marked ≠); fixture cells are
marked † and never bold.

Also the builder of crafted run directories in the contract schema (docs/contracts.md, CONTRACT of
issue 14) that the other analysis tests use: samples.jsonl with one record per example × sample, and
the summary.json that evaluate computes from them (paper score = mean over examples of the mean over
samples; strict = unclosed is wrong; failure rate = share of unclosed turns; failure kinds, loop rate,
forced score).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from analysis.run import run

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {"temperature": 0.6, "top_p": 0.95, "max_tokens": 512, "n": 1}
KINDS = ("loop", "runaway", "truncated_answer", "other")


def sample(score: float, kind: str | None = None, forced: float | None = None) -> dict:
    """One sample: its paper-policy score and failure kind (loop/runaway/other = unclosed think block)."""
    unclosed = kind in ("loop", "runaway", "other")
    return {"score": score, "kind": kind, "unclosed": unclosed, "forced": forced}


def write_run(root: Path, run_name: str, bench: str, examples: list[list[dict]], *, settings=None,
              fixture: bool = False, forced: bool = False, anatomy: bool = True, drop=()) -> Path:
    """examples[i] = the samples of example i. `forced`: the run used the forced policy. `drop`: summary keys
    left out (an older or broken evaluate)."""
    settings = {**SETTINGS, **(settings or {}), "n": max(len(s) for s in examples)}
    d = root / "runs" / "eval" / run_name / bench
    d.mkdir(parents=True, exist_ok=True)
    records = []
    for i, samples in enumerate(examples):
        for k, s in enumerate(samples):
            status = "unclosed" if s["unclosed"] else "closed"
            f = None
            if forced and s["unclosed"]:
                f = {"text": "</think> The answer is 1.", "answer": "1", "correct": s["forced"]}
            records.append({
                "id": f"ex{i}#{k}", "example_id": f"ex{i}", "sample": k, "benchmark": bench,
                "prompt": [f"question {i}"], "output": ["…"], "turn_status": [status], "status": status,
                "answers": ["1"], "extracted": "1", "reference": "1", "score": s["score"],
                "strict_score": 0.0 if s["unclosed"] else s["score"], "detail": {}, "meta": {},
                "finish_reason": ["length" if s["kind"] in ("runaway", "truncated_answer", "loop") else "stop"],
                "n_tokens": [10], "opened": [False], "failure_kind": s["kind"],
                "loop": {"period": 3, "start": 40, "repeats": 5.0, "unit": "token"} if s["kind"] == "loop" else None,
                "forced": f,
            })
    (d / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    def mean_over_examples(value) -> float:
        per = [sum(value(r) for r in records if r["example_id"] == f"ex{i}") / len(examples[i])
               for i in range(len(examples))]
        return sum(per) / len(per)

    summary = {
        "benchmark": bench, "lang": "en", "run_name": run_name, "experiment": run_name, "paper_id": None,
        "model": f"runs/train/{run_name}", "metric": "accuracy",
        "score": mean_over_examples(lambda r: r["score"]), "score_stderr": 0.01,
        "strict_score": mean_over_examples(lambda r: r["strict_score"]), "strict_score_stderr": 0.01,
        "failure_rate": sum(r["status"] == "unclosed" for r in records) / len(records), "no_think_rate": 0.0,
        "n_examples": len(examples), "n_samples": settings["n"], "n_records": len(records), "settings": settings,
        "source": "fixture" if fixture else "hub", "is_fixture": fixture, "seed": 0,
        "forced_score": (mean_over_examples(lambda r: r["forced"]["correct"] if r["forced"] else r["score"])
                         if forced else None),
        "forced_score_stderr": 0.01 if forced else None, "forced_path": "continue" if forced else None,
    }
    if anatomy:
        summary["failure_kinds"] = {k: sum(r["failure_kind"] == k for r in records) for k in KINDS}
        summary["loop_rate"] = summary["failure_kinds"]["loop"] / len(records)
    for key in drop:
        summary.pop(key)
    (d / "summary.json").write_text(json.dumps(summary))
    return d


def binary(n: int, correct) -> list[list[dict]]:
    """n examples with one sample each, correct on the example indices in `correct`."""
    return [[sample(1.0 if i in correct else 0.0)] for i in range(n)]


def analysis_cfg(root: Path, experiments: list[str], *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="analysis", overrides=[
            f"paths.root={root}", f"experiments=[{','.join(experiments)}]", "logger.enabled=false",
            "print_report=false", "regression.enabled=false", "plots=false", *overrides])


# ---------------------------------------------------------------- issue 11
BENCH = "math500"
GOOD = range(150)          # exp 1: 0.75 on 200 examples


def test_a_truncated_summary_names_the_file_and_writes_nothing(tmp_path):
    write_run(tmp_path, "stem_oss_en", BENCH, binary(200, GOOD))
    bad = write_run(tmp_path, "stem_oss_ja", BENCH, binary(200, range(100))) / "summary.json"
    bad.write_text(bad.read_text()[:40])
    cfg = analysis_cfg(tmp_path, ["stem_oss_en", "stem_oss_ja"])
    with pytest.raises(ValueError, match=rf"{bad} is not valid JSON .*truncated or corrupt.*python -m evaluate"):
        run(cfg)
    assert not Path(cfg.output_dir).exists()


def test_a_summary_lacking_keys_is_a_missing_input(tmp_path):
    write_run(tmp_path, "stem_oss_en", BENCH, binary(200, GOOD))
    write_run(tmp_path, "stem_oss_ja", BENCH, binary(200, range(100)), drop=("settings",))
    write_run(tmp_path, "stem_oss_ja", "gpqa_diamond", binary(200, range(100)), drop=("is_fixture", "source"))
    result = run(analysis_cfg(tmp_path, ["stem_oss_en", "stem_oss_ja"]))
    out = Path(result["output_dir"])
    t2 = pd.read_csv(out / "table2.csv", dtype={"id": str}).set_index("id")
    assert t2.loc["1", BENCH] == 0.75 and pd.isna(t2.loc["2", BENCH])        # not used, not 0
    missing = " ".join(result["missing"]["2"])
    assert "math500/summary.json lacks ['settings']" in missing and "gpqa_diamond/summary.json lacks ['is_fixture']" in missing
    assert "Missing inputs" in (out / "report.md").read_text() and "lacks ['settings']" in (out / "report.md").read_text()


@pytest.mark.parametrize("change", [{"settings": {"max_tokens": 1024}}, {"n_examples": 150}])
def test_incomparable_runs_are_refused_unless_allowed_then_marked(tmp_path, change):
    write_run(tmp_path, "stem_oss_en", BENCH, binary(200, GOOD))
    write_run(tmp_path, "stem_r1_en", BENCH, binary(200, range(140)))
    n = change.get("n_examples", 200)
    write_run(tmp_path, "stem_oss_ja", BENCH, binary(n, range(n)), settings=change.get("settings"))  # the top value
    cfg = analysis_cfg(tmp_path, ["stem_oss_en", "stem_oss_ja", "stem_r1_en"])
    what = "max_tokens=1024" if "settings" in change else "n_examples=150"
    with pytest.raises(ValueError, match=rf"(?s)not comparable.*M500: 1, 4 ran with n_examples=200, .*max_tokens=512.*"
                                         rf"2 with .*{what}.*allow_incomparable=true"):
        run(cfg)
    assert not Path(cfg.output_dir).exists()

    result = run(analysis_cfg(tmp_path, ["stem_oss_en", "stem_oss_ja", "stem_r1_en"], "allow_incomparable=true"))
    out = Path(result["output_dir"])
    md = (out / "table2.md").read_text()
    row2 = next(line for line in md.splitlines() if line.startswith("| 2 |"))
    assert "1.000" in row2 and "≠" in row2 and "**" not in row2            # the top value, marked, not bold
    row1 = next(line for line in md.splitlines() if line.startswith("| 1 |"))
    assert row1.count("**") == 2                                             # 0.75 vs 0.70: McNemar p = 2^-9
    cells = pd.read_csv(out / "table2_cells.csv", dtype={"id": str}).set_index("id")
    assert bool(cells.loc["2", "incomparable"]) and cells.loc["1", "mark"] == "best"
    assert "Not comparable, shown anyway" in (out / "report.md").read_text()
    pairs = pd.read_csv(out / "significance.csv", dtype={"a": str, "b": str})
    assert set(zip(pairs["a"], pairs["b"])) == {("1", "4")}                  # 2 is never tested against them


def test_the_base_row_may_decode_greedily_but_must_share_examples_and_budget(tmp_path):
    write_run(tmp_path, "stem_oss_en", BENCH, binary(200, GOOD))
    write_run(tmp_path, "base-model", BENCH, binary(200, range(60)), settings={"temperature": 0.0, "top_p": 1.0})
    result = run(analysis_cfg(tmp_path, ["stem_oss_en"], "base_run=base-model"))
    assert pd.read_csv(Path(result["output_dir"]) / "table2.csv", dtype={"id": str}).set_index("id").loc["B", BENCH] == 0.3
    write_run(tmp_path, "base-model", BENCH, binary(200, range(60)), settings={"temperature": 0.0, "max_tokens": 64})
    with pytest.raises(ValueError, match=r"M500: 1 ran with .*; B with .*max_tokens=64"):
        run(analysis_cfg(tmp_path, ["stem_oss_en"], "base_run=base-model"))


def test_fixture_cells_are_marked_and_never_bold(tmp_path):
    write_run(tmp_path, "stem_oss_en", BENCH, binary(200, GOOD))
    write_run(tmp_path, "stem_r1_en", BENCH, binary(200, range(100)))
    write_run(tmp_path, "stem_oss_ja", BENCH, binary(200, range(200)), fixture=True)    # perfect, but a fixture
    result = run(analysis_cfg(tmp_path, ["stem_oss_en", "stem_oss_ja", "stem_r1_en"]))
    out = Path(result["output_dir"])
    rows = {line.split(" | ")[0]: line for line in (out / "table2.md").read_text().splitlines() if line.startswith("| ")}
    assert "†" in rows["| 2"] and "*" not in rows["| 2"] and "†" not in rows["| 1"]
    assert rows["| 1"].count("**") == 2                                      # the real best is bold
    assert "† = fixture data" in (out / "table2.md").read_text()
    assert pd.read_csv(out / "table2.csv", dtype=str).set_index("id").loc["best", BENCH] == "1"
