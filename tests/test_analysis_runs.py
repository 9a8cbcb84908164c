"""Tables and plots from a directory of small run outputs in the contract schema (docs/contracts.md).

The test writes synth `stats.json` per component and evaluate `summary.json` per (run, benchmark) for
seven real experiments of Table 1 (stem_oss_en, ...) plus a base model; experiment 8 (chat_oss_en_ja)
has no evaluation, so it must show as missing and be dropped from the regression with the reason.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from analysis.run import run

REPO = Path(__file__).resolve().parents[1]
LENGTH = {"stem_oss_en": 2300, "stem_oss_ja": 2100, "stem_r1_en": 9300, "stem_ossh_en": 7700,
          "chat_oss_en": 800, "chat_oss_ja": 1400}
PPL = {"stem_oss_en": 2.74, "stem_oss_ja": 2.40, "stem_r1_en": 2.00, "stem_ossh_en": 2.00,
       "chat_oss_en": 4.29, "chat_oss_ja": 2.48}
EXPERIMENTS = {  # name -> (paper id, STEM length used for the synthetic failure rates in k tokens)
    "stem_oss_en": (1, 2.3), "stem_oss_ja": (2, 2.1), "stem_r1_en": (4, 9.3),
    "stem_r1_en__chat_oss_ja": (5, 9.3), "stem_r1_en__chat_oss_en": (6, 9.3),
    "stem_ossh_en": (9, 7.7), "stem_r1_en_oss_ja__chat_oss_en_ja": (10, 5.7),
}
NOISE = [0.004, -0.003, 0.002, -0.004, 0.003, -0.002, 0.001]
# Names as the evaluate stage writes them (conf/benchmark/*.yaml); analysis maps them to the paper's columns.
BENCHMARKS = {"math500": "en", "gpqa_diamond": "en", "aime": "en", "mt_bench_ja": "ja"}
KEY = {"math500": "math500", "gpqa_diamond": "gpqa", "aime": "aime", "mt_bench_ja": "mt_bench_ja"}


def _summary(run_name, exp, paper_id, bench, score, failure):
    return {
        "benchmark": bench, "lang": BENCHMARKS[bench], "run_name": run_name, "experiment": exp,
        "paper_id": paper_id, "model": f"runs/train/{run_name}", "metric": "accuracy", "score": score,
        "score_stderr": 0.01, "strict_score": score - failure / 2, "failure_rate": failure,
        "no_think_rate": 0.0, "n_examples": 20, "n_samples": 1,
        "settings": {"temperature": 0.6, "top_p": 0.95, "max_tokens": 512, "n": 1},
        "source": "hub", "is_fixture": False,
    }


def make_runs(root: Path) -> dict:
    """stats.json for every component, summary.json for every experiment but chat_oss_en_ja, a base run."""
    for comp in LENGTH:
        d = root / "data" / "triples" / comp
        d.mkdir(parents=True)
        (d / "stats.json").write_text(json.dumps({
            "component": comp, "count": 64, "mean_tokens": LENGTH[comp], "ppl": PPL[comp],
            "tokenizer": "Qwen/Qwen3-8B", "ppl_model": "tiny", "flag_counts": {"truncated": 0}}))
    expected = {}
    for k, (exp, (pid, length)) in enumerate(EXPERIMENTS.items()):
        for j, bench in enumerate(BENCHMARKS):
            failure = round(0.02 + 0.04 * length + NOISE[(k + j) % len(NOISE)], 4)
            score = round(0.9 - failure, 4)
            d = root / "runs" / "eval" / exp / bench
            d.mkdir(parents=True)
            (d / "summary.json").write_text(json.dumps(_summary(exp, exp, pid, bench, score, failure)))
            expected[(str(pid), KEY[bench])] = (score, failure)
    for bench in BENCHMARKS:
        d = root / "runs" / "eval" / "base-model" / bench
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps(_summary("base-model", None, None, bench, 0.5, 0.0)))
    return expected


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis_runs")
    expected = make_runs(root)
    names = list(EXPERIMENTS) + ["chat_oss_en_ja"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="analysis", overrides=[
            f"paths.root={root}", f"experiments=[{','.join(names)}]", "base_run=base-model",
            "logger.mode=offline", "print_report=false",          # W&B on, offline (no key here)
            "regression.benchmarks=[math500,gpqa,aime,hellaswag]",
        ])
        result = run(cfg)
    return root, Path(result["output_dir"]), result, expected


def test_tables_contain_the_numbers(analysed):
    root, out, result, expected = analysed
    t2 = pd.read_csv(out / "table2.csv", dtype={"id": str}).set_index("id")
    t3 = pd.read_csv(out / "table3.csv", dtype={"id": str}).set_index("id")
    for (pid, bench), (score, failure) in expected.items():
        assert t2.loc[pid, bench] == pytest.approx(score)
        assert t3.loc[pid, bench] == pytest.approx(failure)
    assert list(t2.columns) == ["mt_bench_ja", "gpqa", "math500", "aime"]   # ja block, then en block
    assert t2.loc["B", "math500"] == pytest.approx(0.5) and "B" not in t3.index
    md = (out / "table3.md").read_text()
    best = min(expected[(p, "aime")][1] for p in ("1", "2", "4", "5", "6", "9", "10"))
    assert f"{best:.3f}" in md and "**0." not in md and "*0." not in md   # no samples.jsonl: nothing tested, nothing bold
    assert "AIME: untested, " in md and "no samples.jsonl" in md
    t1 = (out / "table1.md").read_text()
    assert "9.3k" in t1 and "2.74" in t1 and "OSS-h" in t1 and "| 500k |" in t1


def test_missing_experiment_is_missing_not_zero(analysed):
    root, out, result, expected = analysed
    t2 = pd.read_csv(out / "table2.csv", dtype={"id": str}).set_index("id")
    assert t2.loc["8"].isna().all()     # empty cells, not 0.0
    row8 = next(line for line in (out / "table2.md").read_text().splitlines() if line.startswith("| 8 |"))
    assert row8.count("—") == 4 and "0.000" not in row8
    assert "8" in result["missing"] and "evaluation results" in result["missing"]["8"][0]
    report = (out / "report.md").read_text()
    assert "Missing inputs" in report and "chat_oss_en_ja" in report


def test_regression_on_runs_says_what_it_dropped(analysed):
    root, out, result, expected = analysed
    t4 = result["table4"]
    assert set(t4) == {"math500", "gpqa", "aime"}            # hellaswag: no results at all
    for bench in t4:
        assert "length" in t4[bench]["variables"]             # the synthetic failure rate grows with length
        assert t4[bench]["n"] == 7
        assert "no failure_rate" in t4[bench]["dropped"]["8"]
    notes = " ".join(result["regression_notes"])
    assert "HS: skipped" in notes and "8 (no failure_rate for math500)" in notes
    assert (out / "table4.csv").is_file() and "length" in (out / "table4.md").read_text()
    terms = pd.read_csv(out / "table4_terms.csv")
    assert set(terms["benchmark"]) == {"math500", "gpqa", "aime"}


def test_plots_and_comparison_view(analysed):
    root, out, result, expected = analysed
    for name in ("score_vs_failure", "bars_score", "bars_failure", "failure_vs_length"):
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    compare = (out / "compare.md").read_text()
    assert "Experiment 1 (stem_oss_en) beside the paper" in compare
    assert "0.882" in compare and "0.014" in compare          # the paper's M500 score / failure rate of exp 1
    assert f"{expected[('1', 'math500')][0]:.3f}" in compare
    section = compare.split("Experiment 10 ")[1]
    assert "| stem_oss_ja | 2.1k | 2.1k | 2.40 | 2.40 |" in section          # Table 1 beside the paper's


def test_logged_to_wandb_offline(analysed):
    root, out, result, expected = analysed
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    media = [p.name for p in (runs[0] / "files" / "media").rglob("*") if p.is_file()]
    assert any(m.startswith("plots/score_vs_failure") or "score_vs_failure" in m for m in media), media
    assert any("table2" in m for m in media), media


def test_cli_one_experiment_beside_the_paper(analysed, tmp_path):
    """`python -m analysis experiment=...` through Hydra: the comparison view for that experiment."""
    root, out, result, expected = analysed
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "analysis", f"paths.root={root}", "experiment=stem_ossh_en",
         "logger.enabled=false", "plots=false", f"output_dir={tmp_path}/one"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Experiment 9 (stem_ossh_en) beside the paper" in proc.stdout
    assert "0.884" in proc.stdout                              # paper's M500 score of exp 9
    assert "skipped" in proc.stdout                            # one experiment: too few rows to regress
    assert (tmp_path / "one" / "compare.md").is_file()


def test_every_experiment_composes_with_the_analysis_config():
    """conf/analysis.yaml has `model:` in its defaults so experiments that override /model (demo) compose."""
    names = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
    assert "demo" in names and len(names) >= 11
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for name in names:
            cfg = compose(config_name="analysis", overrides=[f"experiment={name}"])
            assert cfg.experiment.name == name and cfg.data and cfg.source == "runs"


def test_trace_free_component_reads_its_own_stats_view(tmp_path):
    """Exp 7's chat component shares chat_oss_ja's directory; synth writes its view as stats.<name>.json."""
    from analysis.collect import table1_rows

    d = tmp_path / "chat_oss_ja"
    d.mkdir(parents=True)
    (d / "stats.json").write_text(json.dumps({"count": 100, "mean_tokens": 1400.0, "ppl": 2.48}))
    (d / "stats.chat_oss_ja_notrace.json").write_text(json.dumps({"count": 100, "mean_tokens": 1200.0, "ppl": None}))
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        cfg = compose(config_name="analysis", overrides=["experiment=stem_r1_en__chat_oss_ja_notrace"])
    _, rows, missing = table1_rows(cfg, tmp_path)
    chat = next(r for r in rows if r["component"] == "chat_oss_ja_notrace")
    assert chat["mean_tokens"] == 1200.0 and chat["count"] == 100_000 and chat["lang_trace"] is None
    assert missing == ["stats of stem_r1_en (run `python -m synth experiment=stem_r1_en__chat_oss_ja_notrace`)"]
