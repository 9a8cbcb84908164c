"""Why samples failed, and the three answer policies (issue 14 §1, §2), on crafted run directories in the
contract schema: failure_kinds / loop_rate / forced_score in summary.json."""

from pathlib import Path

import pandas as pd
import pytest

from analysis.run import run
from tests.test_analysis_checks import analysis_cfg, sample, write_run


def _samples(n_loop: int, n_runaway: int, n_trunc: int, n_other: int, n_ok: int, forced_right: int) -> list:
    """One sample per example. Unclosed samples (loop/runaway/other) score 1 under the paper policy when
    their trace holds the answer (every other one here); `forced_right` of them answer right when forced."""
    out, unclosed = [], 0
    for kind, n in (("loop", n_loop), ("runaway", n_runaway), ("other", n_other)):
        for _ in range(n):
            out.append([sample(float(unclosed % 2 == 0), kind, forced=float(unclosed < forced_right))])
            unclosed += 1
    out += [[sample(0.0, "truncated_answer")] for _ in range(n_trunc)]
    out += [[sample(1.0)] for _ in range(n_ok)]
    return out


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    root = tmp_path_factory.mktemp("anatomy")
    write_run(root, "stem_oss_en", "math500", _samples(20, 5, 3, 2, 70, forced_right=12), forced=True)
    write_run(root, "stem_r1_en", "math500", _samples(40, 10, 0, 0, 50, forced_right=0))          # forced not run
    write_run(root, "stem_oss_en", "aime", _samples(2, 1, 0, 0, 97, forced_right=3), forced=True)
    write_run(root, "stem_r1_en", "aime", _samples(6, 0, 0, 0, 94, forced_right=0), anatomy=False)  # older evaluate
    result = run(analysis_cfg(root, ["stem_oss_en", "stem_r1_en"], "plots=true"))
    return root, Path(result["output_dir"]), result


def test_why_samples_failed_table(analysed):
    root, out, result = analysed
    md = (out / "failure_kinds.md").read_text()
    rows = {line.split(" | ")[0][2:]: line for line in md.splitlines() if line.startswith("| ") and "ID" not in line}
    assert rows["1"] == "| 1 | 0.200 (20/5/3/2) | 0.020 (2/1/0/0) |"             # M500, AIME
    assert rows["4"] == "| 4 | 0.400 (40/10/0/0) | — |"                          # AIME of 4: no anatomy, not 0
    long = pd.read_csv(out / "failure_kinds.csv", dtype={"id": str})
    one = long[(long["id"] == "1") & (long["benchmark"] == "math500")].iloc[0]
    assert (one["loop"], one["runaway"], one["truncated_answer"], one["other"], one["n_records"]) == (20, 5, 3, 2, 100)
    assert one["loop_rate"] == pytest.approx(0.2) and one["failure_rate"] == pytest.approx(0.27)
    assert "Why samples failed" in (out / "report.md").read_text()


def test_failure_kinds_plot(analysed):
    root, out, result = analysed
    png = out / "failure_kinds.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert result["images"]["failure_kinds"] == str(png)


def test_comparison_view_shows_the_anatomy_beside_table_3(analysed):
    root, out, result = analysed
    block = (out / "compare.md").read_text().split("**Experiment 1 (stem_oss_en) beside the paper**")[1]
    block = block.split("**Experiment")[0]
    failure = block.index("failure rate (paper)")
    anatomy = block.index("why its samples failed")
    assert failure < anatomy
    lines = block[anatomy:].splitlines()
    assert next(line for line in lines if line.startswith("| loop |")) == "| loop | 20 | 2 |"      # M500, AIME
    assert next(line for line in lines if line.startswith("| loop rate |")) == "| loop rate | 0.200 | 0.020 |"


def test_three_policies_side_by_side_and_the_score_lost(analysed):
    root, out, result = analysed
    long = pd.read_csv(out / "policies.csv", dtype={"id": str}).set_index(["id", "benchmark"])
    one = long.loc[("1", "math500")]
    # 27 unclosed of 100 (3 truncated answers score 0 everywhere): 14 right by the trace (paper), all wrong
    # (strict), 12 right when forced; 70 closed and right.
    assert one["score"] == pytest.approx(0.84) and one["strict_score"] == pytest.approx(0.70)
    assert one["forced_score"] == pytest.approx(0.82) and one["lost"] == pytest.approx(0.12)
    assert one["forced_path"] == "continue"
    four = long.loc[("4", "math500")]
    assert pd.isna(four["forced_score"]) and pd.isna(four["lost"])            # not run: missing, not 0
    md = (out / "policies.md").read_text()
    assert "0.840 / 0.700 / 0.820" in md and "0.750 / 0.500 / —" in md
    lost = md.split("**Score lost to unclosed thinking**")[1]
    row4 = next(line for line in lost.splitlines() if line.startswith("| 4 |"))
    assert row4 == "| 4 | — | — |" and "0.120" in lost and "forcing ran through continue" in lost
