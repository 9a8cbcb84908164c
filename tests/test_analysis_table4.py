"""Table 4 of the paper, rerun on the paper's own Tables 1 and 3 (shipped in analysis/data/).

The reading that reproduces the most (conf/analysis.yaml defaults; found by `python -m analysis.reproduce`
over 3,072 readings, see docs/analysis.md): exclude experiment 7 (not 8 as Appendix D says), exp 10 = mean
of its two STEM components, exp 8 (no STEM data) coded X_m = X_p = X_l = 0, intercept, AICc counting
intercept and sigma^2, two-sided t-tests at 10/5/2.5 %. Regressing the failure rates (Table 3) it
reproduces the mean row (7/7) and the selected variables and stars of 6/7 benchmarks; the paper's R^2
row is reproduced (7/7) by the same reading's best-subset fit of the scores (Table 2). LiveCodeBench's
variables are not reproduced by any reading: asserted at the documented near tie.
"""

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from analysis import paper
from analysis.regression import Reading, best_subset, factors
from analysis.reproduce import compare, paper_fits, score

REPRODUCED = ["hellaswag", "mmlu_pro", "gpqa", "math500", "aime", "mt_bench"]
# R^2 of the selected failure-rate models themselves (paper's row: .44 .37 .35 .99 .77 .78 .33).
FAILURE_FIT_R2 = {"hellaswag": 0.98, "mmlu_pro": 0.89, "gpqa": 0.15, "math500": 0.99, "aime": 0.47,
                  "livecodebench": 0.94, "mt_bench": 0.45}


@pytest.fixture(scope="module")
def fits():
    return paper_fits(Reading())


@pytest.fixture(scope="module")
def score_fits():
    return paper_fits(dataclasses.replace(Reading(), target="score"))


@pytest.fixture(scope="module")
def table(fits, score_fits):
    return compare(fits, score_fits)


def test_mean_row_is_reproduced_and_names_the_excluded_experiment(fits):
    t4 = paper.table4()["benchmarks"]
    for b, ref in t4.items():
        assert round(fits[b].mean, 3) == pytest.approx(ref["mean"], abs=1e-9), b
        assert fits[b].n == 9 and "7" in fits[b].dropped
    # Appendix D's reading (exclude experiment 8) does not give the printed means.
    text = paper_fits(dataclasses.replace(Reading(), exclude=("8",)))
    assert sum(round(text[b].mean, 3) == ref["mean"] for b, ref in t4.items()) < 4


def test_selected_variables_and_stars_reproduced(fits, table):
    t4 = paper.table4()["benchmarks"]
    for b in REPRODUCED:
        want = {f for f, c in t4[b]["cells"].items() if c}
        assert set(fits[b].variables) == want, b
        for f in want:
            assert fits[b].stars[f] == t4[b]["cells"][f].count("*"), (b, f)
    assert fits["gpqa"].cell("length") == "+"          # the only sign the text kept
    assert score(table) == {"vars": 6, "stars": 6, "r2": 1, "mean": 7, "r2_score": 7}


def test_livecodebench_is_a_near_tie_not_a_rounding_artefact(fits):
    """LCB: paper selects {length} (**); we select {teacher, ppl, length}; {length} is second by 0.13 AICc
    and, fitted alone, gives exactly the paper's cell. Table 3's rounding does not explain the flip."""
    cands = fits["livecodebench"].candidates
    assert fits["livecodebench"].variables == ("teacher", "ppl", "length")
    assert cands.loc[1, "variables"] == ("length",)
    assert 0 < cands.loc[1, "aicc"] - cands.loc[0, "aicc"] < 0.2
    t3 = paper.table3()
    X, _ = factors(paper.table1(), Reading())
    ids = [i for i in X.index if i != "7"]
    y = t3.loc[ids, "livecodebench"].astype(float)
    alone = best_subset(y, X.loc[ids, ["length"]], Reading())
    assert alone.cell("length") == "+**" and round(alone.r2, 3) == 0.459
    rng = np.random.default_rng(0)
    for _ in range(200):   # every Table 3 value anywhere in its rounding interval
        jittered = y + rng.uniform(-0.0005, 0.0005, len(y))
        assert best_subset(jittered, X.loc[ids], Reading()).variables == ("teacher", "ppl", "length")


def test_r2_row_is_the_score_regressions(score_fits, fits):
    """The paper's R^2 row = R^2 of the same reading's best-subset fit of the scores (Table 2)."""
    for b, ref in paper.table4()["benchmarks"].items():
        assert round(score_fits[b].r2, 2) == ref["r2"], b
        assert round(fits[b].r2, 2) == FAILURE_FIT_R2[b], b      # the failure-rate models' own R^2


@pytest.mark.parametrize("bench", ["hellaswag", "mmlu_pro", "mt_bench"])
def test_printed_r2_cannot_carry_the_printed_stars(bench):
    """Why the R^2 row cannot come from the failure-rate models it sits under: with n=9 and an intercept,
    dropping one regressor raises RSS by at most TSS - RSS, so t^2 <= R^2/(1-R^2) * (n-p-1). At the
    printed R^2 that bound is below the weakest printed star for HS, MP (***) and MTB (**)."""
    ref = paper.table4()["benchmarks"][bench]
    p = sum(1 for c in ref["cells"].values() if c)
    stars = max(c.count("*") for c in ref["cells"].values())
    level = Reading().levels[stars - 1]
    df = 9 - p - 1
    t_max = math.sqrt(ref["r2"] / (1 - ref["r2"]) * df)
    assert 2 * st.t.sf(t_max, df) > level


def test_source_paper_prints_table4_beside_the_papers(tmp_path, capsys):
    """`python -m analysis source=paper regression.r2_target=score` (composed config, in process)."""
    from hydra import compose, initialize_config_dir

    from core.config import CONF
    from analysis.run import run

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="analysis", overrides=[
            "source=paper", "regression.r2_target=score", f"paths.root={tmp_path}",
            "logger.enabled=false", "plots=false"])
        result = run(cfg)
    assert result["table4_match"] == {"vars": 6, "stars": 6, "r2": 1, "mean": 7, "r2_score": 7}
    out = Path(result["output_dir"])
    t4 = pd.read_csv(out / "table4.csv", index_col=0, dtype=str)
    assert t4.loc["R2"].tolist() == ["0.44", "0.37", "0.35", "0.99", "0.77", "0.78", "0.33"]
    assert t4.loc["mean"].tolist() == ["0.003", "0.044", "0.150", "0.039", "0.294", "0.266", "0.174"]
    assert t4.loc["length", "GPQ"] == "+" and t4.loc["teacher", "MTB"] == "+**"
    side = (out / "table4_vs_paper.md").read_text()
    assert "| LCB | teacher ppl length | length | ✗ |" in side and "| AIME | length | length | ✓ |" in side
    assert "variables (paper)" in capsys.readouterr().out


def test_reading_search_ranks_the_best_reading_first():
    """`python -m analysis.reproduce` on a slice of its space: exclusion x target."""
    from analysis.reproduce import per_cell, search

    frame = search({"exclude": [("8",), ("7",)], "target": ["failure_rate", "score"]})
    top = frame.iloc[0]
    assert (top["exclude"], top["target"]) == ("('7',)", "failure_rate")
    assert (top["vars"], top["stars"], top["mean"], top["r2_of_score_fit"], top["total_r2_from_scores"]) == (6, 6, 7, 7, 26)
    cells = per_cell(frame).set_index("cell")
    assert cells.loc["LCB:vars", "readings"] == 0 and cells.loc["AIME:r2", "readings"] >= 1
