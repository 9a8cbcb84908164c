"""Are the differences real (issue 14 §4)? Intervals over examples, a tested "best", significant pairs,
fixed seeds — on crafted run directories in the contract schema."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.run import run
from analysis.significance import Options, analyse, per_example, sample_score
from tests.test_analysis_checks import analysis_cfg, binary, sample, write_run

EXPERIMENTS = ["stem_oss_en", "stem_oss_ja", "stem_r1_en"]    # rows 1, 2, 4


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    root = tmp_path_factory.mktemp("significance")
    # M500, N=1: 1 = 0.90, 4 = 0.86 (1 right on 8 more, never worse: McNemar p = 2^-7), 2 = 0.60.
    write_run(root, "stem_oss_en", "math500", binary(200, range(180)))
    write_run(root, "stem_r1_en", "math500", binary(200, range(172)))
    write_run(root, "stem_oss_ja", "math500", binary(200, range(120)))
    # GPQ, N=1: 1 = 0.500, 4 = 0.495 (2 against 1 discordant: tied), 2 = 0.30 (separated from 1).
    write_run(root, "stem_oss_en", "gpqa_diamond", binary(200, range(100)))
    write_run(root, "stem_r1_en", "gpqa_diamond", binary(200, range(2, 101)))
    write_run(root, "stem_oss_ja", "gpqa_diamond", binary(200, range(60)))
    result = run(analysis_cfg(root, EXPERIMENTS))
    return root, Path(result["output_dir"]), result


def test_every_cell_carries_its_interval(analysed):
    root, out, result = analysed
    cells = pd.read_csv(out / "table2_cells.csv", dtype={"id": str}).set_index(["id", "benchmark"])
    for (row, bench), c in cells.iterrows():
        assert c.low <= c.value <= c.high and c.high - c.low > 0, (row, bench)
        se = math.sqrt(c.value * (1 - c.value) / 200)              # binomial, N=1
        assert c.high - c.low == pytest.approx(2 * 1.96 * se, rel=0.15), (row, bench)
    md = (out / "table2.md").read_text()
    lo, hi = cells.loc[("1", "math500"), ["low", "high"]]
    assert f"0.900 ({lo:.3f}–{hi:.3f})" in md and "95% bootstrap interval over examples" in md
    assert (out / "table3_cells.csv").is_file()


def test_best_is_bold_only_when_it_beats_the_runner_up_else_ties_are_marked(analysed):
    root, out, result = analysed
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in (out / "table2.md").read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| ID")}
    gpq, m500 = 1, 2                                                 # ja block first; here: GPQ, M500
    assert rows["1"][m500].startswith("**0.900") and not rows["4"][m500].startswith("*")
    assert rows["1"][gpq].startswith("*0.500") and not rows["1"][gpq].startswith("**")   # tied, not bold
    assert rows["4"][gpq].startswith("*0.495") and not rows["2"][gpq].startswith("*")    # 2 is separated
    assert result["significance"]["best"]["score"] == {"gpqa": [], "math500": ["1"]}
    sig = json.loads((out / "significance.json").read_text())
    assert sig["best"]["score"]["gpqa"] == {"best": [], "tied": ["1", "4"], "test": "tied"}


def test_mcnemar_for_one_sample_per_example_matches_the_exact_binomial(analysed):
    root, out, result = analysed
    pairs = pd.read_csv(out / "significance.csv", dtype={"a": str, "b": str})
    m = pairs[(pairs["table"] == "score") & (pairs["benchmark"] == "math500")].set_index(["a", "b"])
    assert m.loc[("1", "4"), "method"] == "McNemar exact"
    assert m.loc[("1", "4"), "p"] == pytest.approx(stats.binomtest(0, 8, 0.5).pvalue)   # 8 discordant, all for 1
    assert m.loc[("1", "2"), "p"] == pytest.approx(stats.binomtest(0, 60, 0.5).pvalue)
    # Holm over every pair of the table (3 in M500, 3 in GPQ): sorted p times 6, 5, …, 1, kept monotone.
    table = pairs[pairs["table"] == "score"].sort_values("p")
    want = np.maximum.accumulate(table["p"].to_numpy() * np.arange(6, 0, -1)).clip(max=1)
    assert table["p_adjusted"].to_numpy() == pytest.approx(want)
    assert list(table["significant"]) == list(want < 0.05)


def test_bootstrap_means_is_scipys_paired_percentile_bootstrap():
    """The hand-written weighted-mean bootstrap draws as scipy.stats.bootstrap(paired=True) does: same
    generator, same interval for every run."""
    from analysis.significance import bootstrap_means

    matrix = np.random.default_rng(5).random((4, 300)).round()
    means = bootstrap_means(matrix, 999, np.random.default_rng(11))
    res = stats.bootstrap((matrix,), np.mean, n_resamples=999, paired=True, vectorized=True, axis=-1,
                          method="percentile", rng=np.random.default_rng(11))
    np.testing.assert_allclose(np.quantile(means, [0.025, 0.975], axis=1),
                               [res.confidence_interval.low, res.confidence_interval.high], rtol=1e-12)
    np.testing.assert_allclose(means, res.bootstrap_distribution, rtol=1e-12)


def test_compare_md_lists_the_significant_pairs_and_the_seed(analysed):
    root, out, result = analysed
    compare = (out / "compare.md").read_text()
    section = compare.split("**Which differences are real**")[1]
    m500 = next(line for line in section.splitlines() if line.startswith("- M500"))
    assert "1 > 4 (Δ 0.040" in m500 and "1 > 2 (Δ 0.300" in m500 and "4 > 2" in m500 and "(3 pair(s) tested)" in m500
    gpq = next(line for line in section.splitlines() if line.startswith("- GPQ"))
    assert "1 > 2" in gpq and "4 > 2" in gpq and "1 > 4" not in gpq and "4 > 1" not in gpq
    assert "2,000 resamples over examples, seed 0" in section and "holm-adjusted" in section
    assert json.loads((out / "significance.json").read_text())["seed"] == 0


def test_fixed_seed_reproduces_and_another_seed_is_recorded(analysed, tmp_path):
    root, out, result = analysed
    again = run(analysis_cfg(root, EXPERIMENTS, f"output_dir={tmp_path}/again"))
    a = pd.read_csv(out / "table2_cells.csv")
    assert a.equals(pd.read_csv(Path(again["output_dir"]) / "table2_cells.csv"))
    other = run(analysis_cfg(root, EXPERIMENTS, f"output_dir={tmp_path}/seed7", "significance.seed=7"))
    b = pd.read_csv(Path(other["output_dir"]) / "table2_cells.csv")
    assert not a[["low", "high"]].equals(b[["low", "high"]]) and a["value"].equals(b["value"])  # other draws
    assert json.loads((Path(other["output_dir"]) / "significance.json").read_text())["seed"] == 7


def _examples(tmp_path: Path, name: str, examples: list[list[dict]]):
    d = write_run(tmp_path, name, "aime", examples)
    return per_example(d / "samples.jsonl", len(examples[0]), {"score": sample_score})["score"]


def test_the_samples_of_one_example_stay_together(tmp_path):
    """Four identical samples per example carry the information of one: the interval must be the one of a
    single sample per example (resampling samples one by one would halve it)."""
    correct = set(range(0, 100, 2))
    four = _examples(tmp_path, "four", [[sample(float(i in correct))] * 4 for i in range(100)])
    one = _examples(tmp_path, "one", binary(100, correct))
    assert np.array_equal(four.values, one.values) and not four.binary and one.binary
    opts = Options()
    cells = {name: analyse("aime", {"x": 0.5}, {"x": ex}, {"x": 0}, ["x"], True, opts).cells["x"]
             for name, ex in (("four", four), ("one", one))}
    assert (cells["four"].low, cells["four"].high) == (cells["one"].low, cells["one"].high)
    assert cells["four"].high - cells["four"].low == pytest.approx(2 * 1.96 * 0.05, rel=0.15)


def test_paired_bootstrap_sees_a_consistent_difference_that_the_intervals_hide(tmp_path):
    """N=2 (not 0/1 per example): a run better by half a point on 20 of 100 examples and equal elsewhere.
    The intervals overlap; the paired test over the same examples separates them."""
    rng = np.random.default_rng(3)
    base = rng.integers(0, 2, (100, 2)).astype(float)
    better = base.copy()
    better[:20] = 1.0
    better[:20, 1] = np.where(base[:20].sum(1) == 2, 1.0, better[:20, 1])
    a = _examples(tmp_path, "a", [[sample(v) for v in row] for row in better])
    b = _examples(tmp_path, "b", [[sample(v) for v in row] for row in base])
    values = {"a": float(a.values.mean()), "b": float(b.values.mean())}
    col = analyse("aime", values, {"a": a, "b": b}, {"a": 0, "b": 0}, ["a", "b"], True, Options())
    assert col.cells["a"].low < col.cells["b"].high                  # the intervals overlap
    assert col.best == ["a"] and col.pairs[0]["method"] == "paired bootstrap" and col.pairs[0]["p"] < 0.01


def test_a_corpus_level_metric_gets_no_interval_and_no_best(tmp_path):
    ex = _examples(tmp_path, "bleu", binary(50, range(25)))
    col = analyse("wmt20_en_ja", {"x": 0.31, "y": 0.29}, {"x": ex, "y": None}, {"x": 0, "y": 0}, ["x", "y"], True,
                  Options())
    assert math.isnan(col.cells["x"].low) and "corpus-level metric" in col.cells["x"].note
    assert col.cells["y"].note == "no samples.jsonl" and col.best == col.tied == [] and col.test.startswith("untested")


def test_bad_options_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="significance.correction='bh'"):
        run(analysis_cfg(tmp_path, EXPERIMENTS, "significance.correction=bh"))
    with pytest.raises(ValueError, match="significance.resamples=10"):
        run(analysis_cfg(tmp_path, EXPERIMENTS, "significance.resamples=10"))
