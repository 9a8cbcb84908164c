"""The evaluate runner: both policies, failure / no-think rates, resume, config composition, e2e."""

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from core import jsonl
from evaluate import run as runner
from conftest import EVAL_TARGET, ScriptedBackend

CONF = Path(__file__).resolve().parents[1] / "conf"


def compose_eval(overrides):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("evaluate", overrides=overrides, return_hydra_config=False)


def _cfg(tmp_path, *extra):
    cfg = compose_eval(
        ["model=tiny_qwen3", "benchmark=[math500]", "logger=none", f"paths.root={tmp_path}",
         "benchmark.math500.source=offline", "benchmark.math500.limit=2", "benchmark.math500.n=2", *extra]
    )
    OmegaConf.set_struct(cfg, False)
    cfg.output_dir = str(tmp_path / "eval")
    return cfg


def test_policies_and_rates_exact(tmp_path):
    # MMATH offline ids 3 (answer 9) and 5 (answer 42); 2 samples each.
    texts = [
        "<think>196 = 2^2 7^2 so (2+1)(2+1)</think>\n\nTherefore, the final answer is: $\\boxed{9}$.",  # closed, right
        "<think>divisors... so the answer is \\boxed{9}",  # unclosed, right in the trace
        "The answer is $\\boxed{42}$.",  # no think, right
        "<think>hmm</think>\n\nTherefore, the final answer is: $\\boxed{41}$.",  # closed, wrong
    ]
    cfg = _cfg(tmp_path)
    backend = ScriptedBackend(texts)
    s = runner.evaluate_benchmark("math500", cfg.benchmark.math500, cfg, lambda: backend, EVAL_TARGET)
    # per example: ex 3 -> (1 + 1)/2 = 1.0 ; ex 5 -> (1 + 0)/2 = 0.5  => 0.75
    assert s["score"] == pytest.approx(0.75)
    # strict: ex 3 -> (1 + 0)/2 = 0.5 ; ex 5 -> 0.5 => 0.5
    assert s["strict_score"] == pytest.approx(0.5)
    assert s["failure_rate"] == pytest.approx(0.25)
    assert s["no_think_rate"] == pytest.approx(0.25)
    assert s["score_stderr"] == pytest.approx(0.25)  # std of (1.0, 0.5) / sqrt(2)
    assert s["n_examples"] == 2 and s["n_samples"] == 2 and s["n_records"] == 4
    recs = {r["id"]: r for r in jsonl.read(tmp_path / "eval" / "math500" / "samples.jsonl")}
    assert recs["3#1"]["status"] == "unclosed" and recs["3#1"]["answers"] == ["divisors... so the answer is \\boxed{9}"]
    assert recs["3#1"]["score"] == 1.0 and recs["3#1"]["strict_score"] == 0.0
    assert recs["5#0"]["status"] == "absent" and recs["5#1"]["extracted"] == "41"
    summary = json.loads((tmp_path / "eval" / "math500" / "summary.json").read_text())
    for key in ("benchmark", "lang", "run_name", "experiment", "paper_id", "model", "metric", "score", "score_stderr",
                "strict_score", "failure_rate", "no_think_rate", "n_examples", "n_samples", "settings"):
        assert key in summary
    assert set(summary["settings"]) == {"temperature", "top_p", "max_tokens", "n"}


def test_opened_prompt_makes_tagless_text_unclosed(tmp_path):
    cfg = _cfg(tmp_path, "benchmark.math500.n=1")
    backend = ScriptedBackend(["so the answer is \\boxed{9}", "x</think>\n\n\\boxed{42}"], opened=True)
    s = runner.evaluate_benchmark("math500", cfg.benchmark.math500, cfg, lambda: backend, EVAL_TARGET)
    assert s["failure_rate"] == 0.5 and s["no_think_rate"] == 0.0
    assert s["score"] == 1.0 and s["strict_score"] == 0.5


def test_resume_skips_finished_samples(tmp_path):
    cfg = _cfg(tmp_path, "benchmark.math500.n=1", "benchmark.math500.limit=1")
    first = ScriptedBackend(["\\boxed{9}"])
    runner.evaluate_benchmark("math500", cfg.benchmark.math500, cfg, lambda: first, EVAL_TARGET)
    cfg.benchmark.math500.limit = 2  # one more example: only it is generated
    second = ScriptedBackend(["\\boxed{42}"])
    s = runner.evaluate_benchmark("math500", cfg.benchmark.math500, cfg, lambda: second, EVAL_TARGET)
    assert sum(len(c) for c in second.calls) == 1 and s["n_records"] == 2 and s["score"] == 1.0
    cfg.benchmark.math500.temperature = 0.0  # a changed setting must not mix with old samples
    with pytest.raises(ValueError, match="overwrite=true"):
        runner.evaluate_benchmark("math500", cfg.benchmark.math500, cfg, lambda: second, EVAL_TARGET)


def test_base_decoding_is_greedy_single_sample():
    cfg = compose_eval(["benchmark=[math500]", "decoding=base"])
    s = runner.settings_of(cfg.benchmark.math500, cfg.decoding)
    assert s["temperature"] == 0.0 and s["n"] == 1
    s = runner.settings_of(cfg.benchmark.math500, "paper")
    assert s["temperature"] == 0.6 and s["top_p"] == 0.95 and s["max_tokens"] == 32768


def test_demo_experiment_composes_and_targets_its_checkpoint(tmp_path):
    cfg = compose_eval(["experiment=demo", "benchmark=[math500]", f"paths.root={tmp_path}"])
    assert "max_length" in cfg.trainer and cfg.model.name_or_path == "smollm2-135m-instruct"  # plain trainer block tolerated
    with pytest.raises(FileNotFoundError, match="python -m train experiment=demo"):
        runner.resolve_target(cfg)
    out = tmp_path / "runs" / "train" / "demo"
    out.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="holds no model"):  # a train output without a model in it
        runner.resolve_target(cfg)
    (out / "config.json").write_text("{}")
    (out / "model.safetensors").write_bytes(b"")
    model, run_name, exp = runner.resolve_target(cfg)
    assert model == str(tmp_path / "runs" / "train" / "demo") and run_name == "demo" and exp == "demo"


def test_import_evaluate_is_ours():
    import evaluate

    assert Path(evaluate.__file__).resolve().parent == Path(runner.__file__).resolve().parent


def test_server_reasoning_fields_rebuild_the_think_block():
    from core.think import parse
    from evaluate.backends import rebuild_text

    assert parse(rebuild_text("42", "thinking", "stop")).status == "closed"
    assert parse(rebuild_text("", "thinking that ran out", "length")).status == "unclosed"
    assert parse(rebuild_text("<think>x</think>\n\n42", None, "stop")).response == "42"
    assert parse(rebuild_text("plain", None, "stop")).status == "absent"


def test_all_shortcuts_apply_to_every_benchmark():
    cfg = compose_eval(["benchmark=[math500,gpqa_diamond]", "all.source=local", "all.limit=3", "all.n=2"])
    m = runner.with_shortcuts(cfg.benchmark.math500, cfg.all)
    g = runner.with_shortcuts(cfg.benchmark.gpqa_diamond, cfg.all)
    assert (m.source, g.source) == ("offline", "fixture") and m.limit == g.limit == 3 and g.n == 2
    assert runner.with_shortcuts(cfg.benchmark.math500, compose_eval([]).all).source == "hub"


def test_wandb_logging_offline(tmp_path):
    cfg = _cfg(tmp_path, "benchmark.math500.n=1", "benchmark.math500.limit=2", "logger=wandb", "logger.mode=offline")
    backend = ScriptedBackend(["\\boxed{9}", "\\boxed{41}"])
    run = runner._start_wandb(cfg, EVAL_TARGET)
    s = runner.evaluate_benchmark("math500", cfg.benchmark.math500, cfg, lambda: backend, EVAL_TARGET)
    runner._log_wandb(run, "math500", s, tmp_path / "eval" / "math500" / "samples.jsonl", 10)
    assert run.summary["math500/score"] == 0.5 and run.summary["math500/failure_rate"] == 0.0
    run.finish()
    assert list((tmp_path / "eval" / "wandb").glob("offline-run-*/run-*.wandb"))


def test_vllm_backend_is_lazy_and_names_the_fix():
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    from evaluate import backends

    cfg = compose_eval(["benchmark=[math500]", "backend.name=vllm"])
    with pytest.raises(ImportError, match=r"pip install -e '\.\[gpu\]'"):
        backends.build(cfg, "tiny-qwen3")
    cfg = compose_eval(["benchmark=[math500]"])
    assert cfg.backend.name == "auto" and not backends._vllm_usable()


def test_pass_at_k_and_categories():
    from evaluate import metrics

    recs = [{"example_id": "a", "score": 1.0, "meta": {"category": "x"}}, {"example_id": "a", "score": 0.0, "meta": {"category": "x"}},
            {"example_id": "b", "score": 0.0, "meta": {"category": "y"}}, {"example_id": "b", "score": 0.0, "meta": {"category": "y"}}]
    assert metrics.pass_at_k(recs, 1) == pytest.approx(0.25)  # (1/2 + 0) / 2
    assert metrics.pass_at_k(recs, 2) == pytest.approx(0.5)  # (1 + 0) / 2
    assert metrics.pass_at_k(recs, 3) is None
    assert metrics.by_category(recs) == {"x": 0.5, "y": 0.0}


def test_multi_turn_history_carries_the_paper_policy_answer(tmp_path):
    """Turn 2 is asked after the model's own turn-1 answer (response, or the trace when unclosed)."""
    import sys
    import types

    from evaluate.tasks import Example, Verdict

    task = types.ModuleType("evaluate.tasks._two_turn_probe")
    task.load = lambda cfg: [Example("q1", ["first?", "second?"], reference=None)]
    task.score = lambda ex, answers, cfg: Verdict(1.0 if answers == ["A1 and more", "trace two"] else 0.0,
                                                  detail={"turn_scores": [1.0, 1.0]})
    sys.modules[task.__name__] = task
    cfg = _cfg(tmp_path, "benchmark.math500.n=1")
    cfg.benchmark.math500.module = "_two_turn_probe"
    cfg.benchmark.math500.history_max_chars = 2
    backend = ScriptedBackend(["<think>t</think>\n\nA1 and more", "<think>trace two"])
    try:
        s = runner.evaluate_benchmark("math500", cfg.benchmark.math500, cfg, lambda: backend, EVAL_TARGET)
    finally:
        del sys.modules[task.__name__]
    turn2 = backend.calls[1][0]
    assert [m["role"] for m in turn2] == ["user", "assistant", "user"] and turn2[1]["content"] == "A1"
    assert s["failure_rate"] == 0.5 and s["score"] == 1.0  # answers: the response, then the unclosed trace
    assert s["strict_score"] == 0.5  # per-turn strict policy: only the unclosed turn 2 is zeroed


# Table 5 of the paper, copied literally: lang, metric, N, T, P (None = "T は既定値": per category).
TABLE5 = {
    "mt_bench_ja": ("ja", "judge", 5, None, None),
    "m_ifeval_ja": ("ja", "accuracy", 1, 0.6, 0.95),
    "jamc_qa": ("ja", "accuracy", 1, 0.6, 0.95),
    "wmt20_en_ja": ("ja", "bleu", 1, 0.6, 0.95),
    "wmt20_ja_en": ("ja", "bleu", 1, 0.6, 0.95),
    "mmlu_prox_ja": ("ja", "accuracy", 1, 0.6, 0.95),
    "gpqa_ja": ("ja", "accuracy", 1, 0.6, 0.95),
    "math100_ja": ("ja", "accuracy", 16, 0.6, 0.95),
    "jhumaneval": ("ja", "pass@1", 10, 0.2, 0.95),
    "mt_bench_en": ("en", "judge", 5, None, None),
    "hellaswag": ("en", "accuracy", 1, 0.6, 0.95),
    "mmlu_pro": ("en", "accuracy", 1, 0.6, 0.95),
    "gpqa_diamond": ("en", "accuracy", 16, 0.6, 0.95),
    "math500": ("en", "accuracy", 1, 0.6, 0.95),
    "aime": ("en", "accuracy", 16, 0.6, 0.95),
    "livecodebench": ("en", "pass@1", 10, 0.6, 0.95),
}
# Appendix A: the Base model runs at T=0, N=1 "except MT-Bench, JHumanEval, LiveCodeBench".
BASE_KEEPS_SAMPLING = {"mt_bench_ja", "mt_bench_en", "jhumaneval", "livecodebench"}


def test_default_benchmarks_are_table5_with_its_settings():
    cfg = compose_eval([])
    assert set(cfg.benchmark) == set(TABLE5)
    for name, (lang, metric, n, t, p) in TABLE5.items():
        b = cfg.benchmark[name]
        assert (b.name, b.lang, b.metric, b.n) == (name, lang, metric, n), name
        if t is not None:
            assert (b.temperature, b.top_p) == (t, p), name
        assert b.max_tokens == 32768, name  # the paper's 32,768-token context
        base = runner.settings_of(b, "base")
        if name in BASE_KEEPS_SAMPLING:
            assert base["n"] == n and not base["greedy_override"], name
        else:
            assert (base["n"], base["temperature"]) == (1, 0.0), name


def test_every_experiment_composes_with_the_evaluate_config():
    for path in sorted((CONF / "experiment").glob("*.yaml")):
        cfg = compose_eval([f"experiment={path.stem}"])
        assert cfg.experiment.name == path.stem and len(cfg.benchmark) == 16


def test_a_scoring_error_is_a_counted_failed_sample(tmp_path, monkeypatch):
    from evaluate.tasks import math500

    real = math500.score

    def flaky(example, answers, cfg):
        if "boom" in answers[0]:
            raise ValueError("unparsable")
        return real(example, answers, cfg)

    monkeypatch.setattr(math500, "score", flaky)
    cfg = _cfg(tmp_path, "benchmark.math500.n=1")
    s = runner.evaluate_benchmark("math500", cfg.benchmark.math500, cfg, lambda: ScriptedBackend(["boom", "\\boxed{42}"]), EVAL_TARGET)
    assert s["n_records"] == 2 and s["n_scoring_errors"] == 1 and s["score"] == 0.5
