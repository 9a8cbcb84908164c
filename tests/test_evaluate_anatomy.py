"""Failure anatomy in the evaluate stage: every sample says why it failed (core.loops: loop | runaway |
truncated_answer | other), on token ids where the backend has them; summary.json counts the kinds and the
loop rate; other detector knobs re-analyse stored samples instead of regenerating them."""

import json
import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import EVAL_TARGET, ScriptedBackend
from core import jsonl
from core.assets import tiny_student_dir
from evaluate import run as runner
from evaluate.backends import Generation
from test_evaluate_runner import compose_eval

# A near loop: the same sentence behind a counter, long enough for the default knobs (min_tokens=128).
LOOP = "<think>" + "".join(f"Step {k}: so the sum of the divisors is still unknown, check it again. " for k in range(40))
RUNAWAY = "<think>196 = 2^2 * 7^2, so the divisors are 1, 2, 4, 7, 14, 28, 49, 98 and"  # cut by the budget


def thinking_model(root: Path) -> Path:
    """The tiny student with a chat template whose generation prompt opens ``<think>`` (as Qwen3-Thinking's
    does): a random 2-layer model never closes it, so every sample is a real unclosed one."""
    src, out = tiny_student_dir(), root / "tiny-thinking"
    out.mkdir()
    for f in src.iterdir():
        if f.name != "chat_template.jinja":
            os.symlink(f, out / f.name)
    template = (src / "chat_template.jinja").read_text()
    header = "{{- '<|im_start|>assistant\\n' }}"
    assert template.count(header) == 1
    (out / "chat_template.jinja").write_text(template.replace(header, "{{- '<|im_start|>assistant\\n<think>\\n' }}"))
    return out


def _cfg(tmp_path, *extra):
    cfg = compose_eval(["model=tiny_qwen3", "benchmark=[math500]", "logger=none", f"paths.root={tmp_path}",
                        "benchmark.math500.source=offline", "benchmark.math500.limit=2", *extra])
    OmegaConf.set_struct(cfg, False)
    cfg.output_dir = str(tmp_path / "eval")
    return cfg


def _evaluate(cfg, backend):
    return runner.evaluate_benchmark("math500", cfg.benchmark.math500, cfg, lambda: backend, EVAL_TARGET)


def _records(tmp_path):
    return {r["id"]: r for r in jsonl.read(tmp_path / "eval" / "math500" / "samples.jsonl")}


def test_every_kind_is_counted_per_sample_with_the_loop_rate(tmp_path):
    # MMATH offline ids 3 (answer 9) and 5 (answer 42), 3 samples each.
    texts = [
        LOOP,  # unclosed, the trace loops -> loop
        RUNAWAY,  # unclosed, budget hit, no loop -> runaway
        Generation("<think>hmm, 196", "stop", 4),  # unclosed, stopped on its own -> other
        Generation("<think>42 it is</think>\n\nThe answer is $\\boxed{4", "length", 9),  # closed, cut -> truncated
        "<think>ok</think>\n\n$\\boxed{42}$",  # closed -> no failure
        "The answer is $\\boxed{42}$.",  # no think block -> no failure
    ]
    s = _evaluate(_cfg(tmp_path, "benchmark.math500.n=3"), ScriptedBackend(texts))
    assert s["failure_kinds"] == {"loop": 1, "runaway": 1, "truncated_answer": 1, "other": 1}
    assert s["loop_rate"] == pytest.approx(1 / 6) and s["failure_rate"] == pytest.approx(3 / 6)
    recs = _records(tmp_path)
    assert [recs[f"{e}#{k}"]["failure_kind"] for e in ("3", "5") for k in range(3)] == [
        "loop", "runaway", "other", "truncated_answer", None, None]
    loop = recs["3#0"]["loop"]
    assert loop["unit"] == "char" and loop["repeats"] >= 3  # text: the scripted backend has no token ids
    trace = recs["3#0"]["answers"][0]  # the unclosed trace, where the loop was searched
    period = trace[loop["start"]: loop["start"] + loop["period"]]
    assert "check it again" in period and loop["start"] < trace.index("Step 3:")  # it loops from the start
    assert all(recs[i]["loop"] is None for i in recs if i != "3#0")
    summary = json.loads((tmp_path / "eval" / "math500" / "summary.json").read_text())
    assert summary["failure_kinds"] == s["failure_kinds"] and summary["loop_rate"] == s["loop_rate"]


def test_loops_are_found_on_token_ids_where_the_backend_has_them(tmp_path):
    texts = [
        # the text does not loop, its token ids do: the ids decide
        Generation(RUNAWAY, "length", 180, token_ids=[11, 12, 13, 14] * 45, prompt_ids=[1, 2]),
        # the text loops, its token ids do not: the ids decide
        Generation(LOOP, "length", 200, token_ids=list(range(1000, 1200)), prompt_ids=[1, 2]),
    ]
    s = _evaluate(_cfg(tmp_path, "benchmark.math500.n=1"), ScriptedBackend(texts))
    recs = _records(tmp_path)
    assert recs["3#0"]["failure_kind"] == "loop" and recs["5#0"]["failure_kind"] == "runaway"
    loop = recs["3#0"]["loop"]
    assert loop["unit"] == "token" and loop["period"] == 4 and loop["start"] < 4 and loop["repeats"] > 44  # ids' units
    assert s["failure_kinds"]["loop"] == 1 and s["loop_rate"] == 0.5
    assert "token_ids" not in json.dumps(recs)  # ids stay in memory, samples.jsonl stays lean


def test_other_knobs_reanalyse_the_stored_samples_without_generating(tmp_path):
    _evaluate(_cfg(tmp_path, "benchmark.math500.n=1"), ScriptedBackend([LOOP, RUNAWAY]))
    before = _records(tmp_path)
    assert before["3#0"]["failure_kind"] == "loop"
    settings = tmp_path / "eval" / "math500" / "settings.json"
    assert json.loads(settings.read_text())["anatomy"]["min_repeats"] == 3.0

    idle = ScriptedBackend([])  # plays nothing back: generating anything would fail
    s = _evaluate(_cfg(tmp_path, "benchmark.math500.n=1", "anatomy.min_repeats=100"), idle)
    assert idle.calls == [] and idle.force_calls == []
    after = _records(tmp_path)
    assert after["3#0"]["failure_kind"] == "runaway" and after["3#0"]["loop"] is None  # 40 periods < 100
    assert s["failure_kinds"] == {"loop": 0, "runaway": 2, "truncated_answer": 0, "other": 0} and s["loop_rate"] == 0
    assert json.loads(settings.read_text())["anatomy"]["min_repeats"] == 100
    for i in before:  # nothing else in the records changed
        assert {k: v for k, v in after[i].items() if k not in ("failure_kind", "loop")} == \
            {k: v for k, v in before[i].items() if k not in ("failure_kind", "loop")}

    s = _evaluate(_cfg(tmp_path, "benchmark.math500.n=1"), ScriptedBackend([]))  # back to the defaults
    assert _records(tmp_path)["3#0"]["failure_kind"] == "loop" and s["loop_rate"] == 0.5


@pytest.mark.parametrize("override,named", [("anatomy.tolerance=0.7", "tolerance"), ("anatomy.min_repeats=1", "min_repeats"),
                                            ("+anatomy.period=3", "period")])
def test_a_bad_knob_is_named_before_anything_runs(tmp_path, override, named):
    cfg = compose_eval(["model=tiny_qwen3", "benchmark=[math500]", "logger=none", f"paths.root={tmp_path}", override])
    with pytest.raises(ValueError, match=rf"anatomy.*{named}"):
        runner.run(cfg)
    assert not (tmp_path / "runs" / "eval").exists()


@pytest.fixture(scope="module")
def tiny_thinking(tmp_path_factory):
    return thinking_model(tmp_path_factory.mktemp("model"))


def _tiny_run(tmp_path, model, run_name, *extra):
    cfg = compose_eval(["benchmark=[math500]", "logger=none", f"paths.root={tmp_path}", f"checkpoint={model}",
                        f"run_name={run_name}", "backend.name=transformers", "benchmark.math500.source=offline",
                        "benchmark.math500.limit=2", "benchmark.math500.n=2", "benchmark.math500.max_tokens=24",
                        "policy.forced.max_tokens=4", *extra])
    summary = runner.run(cfg)["math500"]
    return summary, list(jsonl.read(tmp_path / "runs" / "eval" / run_name / "math500" / "samples.jsonl"))


def test_tiny_model_greedy_loops_on_token_ids(tmp_path, tiny_thinking):
    # Greedy decoding makes the random model repeat one token: a loop, found on its token ids.
    s, records = _tiny_run(tmp_path, tiny_thinking, "greedy", "benchmark.math500.temperature=0", "anatomy.min_tokens=8")
    assert all(r["status"] == "unclosed" and r["finish_reason"] == ["length"] for r in records)
    assert all(r["failure_kind"] == "loop" and r["loop"]["unit"] == "token" for r in records)
    assert all(r["loop"]["period"] * r["loop"]["repeats"] <= 24 for r in records)  # within the 24 generated tokens
    assert s["failure_kinds"] == {"loop": 4, "runaway": 0, "truncated_answer": 0, "other": 0} and s["loop_rate"] == 1.0


def test_tiny_model_sampled_runs_away(tmp_path, tiny_thinking):
    # Sampled at T=0.6 from 151k tokens it never repeats itself: the budget runs out while it "progresses".
    s, records = _tiny_run(tmp_path, tiny_thinking, "sampled", "anatomy.min_tokens=8")
    assert all(r["status"] == "unclosed" and r["failure_kind"] == "runaway" and r["loop"] is None for r in records)
    assert s["failure_kinds"] == {"loop": 0, "runaway": 4, "truncated_answer": 0, "other": 0} and s["loop_rate"] == 0.0
