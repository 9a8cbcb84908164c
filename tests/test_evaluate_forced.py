"""The forced answer policy (budget forcing): a generation that ended with the think block open gets
"</think>" + an answer cue and a small extra budget; that answer is graded (`forced`, `forced_score`) beside
the paper policy (the headline `score`, unchanged) and the strict one. In process (transformers: the token
sequence continued), through a real local OpenAI-compatible server's completions endpoint, and against small
stdlib servers for what `transformers serve` lacks (no completions endpoint; vLLM's /tokenize)."""

import json

import pytest
import torch
from omegaconf import OmegaConf

from conftest import EVAL_TARGET, ScriptedBackend
from core import jsonl
from evaluate import backends
from evaluate import run as runner
from evaluate.backends import FORCED_CLOSE, Generation, Settings
from json_server import JsonServer
from test_evaluate_anatomy import thinking_model
from test_evaluate_runner import compose_eval


def _cfg(tmp_path, *extra, bench="math500", source="offline"):
    cfg = compose_eval(["model=tiny_qwen3", f"benchmark=[{bench}]", "logger=none", f"paths.root={tmp_path}",
                        f"benchmark.{bench}.source={source}", f"benchmark.{bench}.limit=2", *extra])
    OmegaConf.set_struct(cfg, False)
    cfg.output_dir = str(tmp_path / "eval")
    return cfg


def _evaluate(cfg, backend, bench="math500"):
    return runner.evaluate_benchmark(bench, cfg.benchmark[bench], cfg, lambda: backend, EVAL_TARGET)


def _records(tmp_path, bench="math500"):
    return {r["id"]: r for r in jsonl.read(tmp_path / "eval" / bench / "samples.jsonl")}


# MMATH offline ids 3 (answer 9) and 5 (answer 42), 2 samples each.
TEXTS = [
    "<think>196 = 2^2 7^2 so (2+1)(2+1)</think>\n\nTherefore, the final answer is: $\\boxed{9}$.",  # closed, right
    "<think>the divisors of 196: 1, 2, 4, 7, maybe 8",  # unclosed, no answer in the trace
    "<think>so it is \\boxed{42}, let me double-check by",  # unclosed, right in the trace
    "<think>hmm</think>\n\nTherefore, the final answer is: $\\boxed{41}$.",  # closed, wrong
]


def test_forced_answers_are_graded_and_no_paper_number_changes(tmp_path):
    backend = ScriptedBackend(TEXTS, forced=[" $\\boxed{9}$", " $\\boxed{42}$"])
    s = _evaluate(_cfg(tmp_path, "benchmark.math500.n=2"), backend)
    assert s["score"] == pytest.approx(0.5)  # paper: ex 3 (1 + 0)/2, ex 5 (1 + 0)/2
    assert s["strict_score"] == pytest.approx(0.25)  # ex 3 (1 + 0)/2, ex 5 (0 + 0)/2
    assert s["forced_score"] == pytest.approx(0.75)  # ex 3 (1 + 1)/2, ex 5 (1 + 0)/2
    assert s["forced_score_stderr"] == pytest.approx(0.25)  # std of (1.0, 0.5) / sqrt(2)
    assert s["forced_path"] == "continue" and s["forced_note"] is None and s["seed"] == 0

    (convs, gens, cue, settings), = backend.force_calls  # one call, for the two unclosed samples only
    assert cue == "Final answer:" and settings.max_tokens == 1024 and settings.temperature == 0.6
    assert [g.text for g in gens] == [TEXTS[1], TEXTS[2]]
    assert all(c[-1]["role"] == "user" for c in convs)  # the conversation before the answer: the trace continues
    assert settings.seed != backend.settings[0].seed  # a random stream of its own
    recs = _records(tmp_path)
    assert recs["3#1"]["forced"] == {"text": "Final answer: $\\boxed{9}$", "answer": "9", "correct": 1.0,
                                     "path": "continue"}
    assert recs["5#0"]["forced"]["correct"] == 1.0 and recs["5#0"]["score"] == 1.0  # the trace was right too
    assert recs["3#0"]["forced"] is None and recs["5#1"]["forced"] is None  # closed: nothing forced
    summary = json.loads((tmp_path / "eval" / "math500" / "summary.json").read_text())
    for key in ("forced_score", "forced_score_stderr", "forced_path", "seed", "failure_kinds", "loop_rate"):
        assert summary[key] == s[key]

    off = tmp_path / "off"
    plain = ScriptedBackend(TEXTS)
    t = _evaluate(_cfg(off, "benchmark.math500.n=2", "policy.forced.enabled=false"), plain)
    assert plain.force_calls == [] and t["forced_score"] is None and t["forced_path"] is None
    assert "policy.forced.enabled=false" in t["forced_note"]
    assert (t["score"], t["strict_score"], t["failure_rate"]) == (s["score"], s["strict_score"], s["failure_rate"])
    strip = lambda r: {k: v for k, v in r.items() if k != "forced"}  # noqa: E731
    assert {i: strip(r) for i, r in _records(off).items()} == {i: strip(r) for i, r in recs.items()}


def test_the_cue_is_in_the_benchmarks_language_and_configurable(tmp_path):
    backend = ScriptedBackend(["<think>考え中", "<think>まだ"], forced=["\\boxed{1}", ""])
    s = _evaluate(_cfg(tmp_path, "benchmark=[math100_ja]", "benchmark.math100_ja.n=1", "policy.forced.max_tokens=64",
                       bench="math100_ja"), backend, bench="math100_ja")
    (_, _, cue, settings), = backend.force_calls
    assert cue == "最終的な答え：" and settings.max_tokens == 64 and s["forced_score"] is not None
    assert [r["forced"]["text"] for r in _records(tmp_path, "math100_ja").values()] == ["最終的な答え：\\boxed{1}", "最終的な答え："]

    backend = ScriptedBackend(["<think>x"])
    _evaluate(_cfg(tmp_path / "b", "benchmark.math500.n=1", "benchmark.math500.limit=1", "policy.forced.cue.en=Answer:"),
              backend)
    assert backend.force_calls[0][2] == "Answer:"


def test_a_rerun_neither_regenerates_nor_reforces(tmp_path):
    first = _evaluate(_cfg(tmp_path, "benchmark.math500.n=2"), ScriptedBackend(TEXTS, forced=[" 9", " 42"]))
    idle = ScriptedBackend([])
    again = _evaluate(_cfg(tmp_path, "benchmark.math500.n=2"), idle)
    assert idle.calls == [] and idle.force_calls == []
    assert {k: again[k] for k in ("score", "strict_score", "forced_score", "forced_path", "failure_kinds")} == \
        {k: first[k] for k in ("score", "strict_score", "forced_score", "forced_path", "failure_kinds")}
    # forcing otherwise changes what the stored samples would hold: refused, never mixed
    with pytest.raises(ValueError, match=r"policy\.forced.*overwrite=true"):
        _evaluate(_cfg(tmp_path, "benchmark.math500.n=2", "policy.forced.max_tokens=16"), ScriptedBackend([]))
    with pytest.raises(ValueError, match=r"policy\.forced.*overwrite=true"):
        _evaluate(_cfg(tmp_path, "benchmark.math500.n=2", "policy.forced.enabled=false"), ScriptedBackend([]))


def test_samples_made_without_forcing_resume_only_without_it(tmp_path):
    _evaluate(_cfg(tmp_path, "benchmark.math500.n=2", "policy.forced.enabled=false"), ScriptedBackend(TEXTS))
    with pytest.raises(ValueError, match=r"policy\.forced \(was null.*overwrite=true.*policy\.forced\.enabled=false"):
        _evaluate(_cfg(tmp_path, "benchmark.math500.n=2"), ScriptedBackend([]))
    idle = ScriptedBackend([])
    s = _evaluate(_cfg(tmp_path, "benchmark.math500.n=2", "policy.forced.enabled=false"), idle)
    assert idle.calls == [] and s["forced_score"] is None and s["score"] == pytest.approx(0.5)


@pytest.mark.parametrize("bench,output,why", [
    ("wmt20_en_ja", "<think>翻訳を考える", "aggregated"),  # corpus BLEU
    ("m_ifeval_ja", "<think>指示を確認する", "aggregated"),  # instruction-level accuracy
])
def test_forced_is_null_where_a_sample_has_no_grade_of_its_own(tmp_path, bench, output, why):
    backend = ScriptedBackend([output, output])
    s = _evaluate(_cfg(tmp_path, f"benchmark.{bench}.n=1", bench=bench, source="fixture"), backend, bench=bench)
    assert backend.force_calls == [] and s["forced_score"] is None and s["forced_path"] is None
    assert s["forced_note"].startswith("not applicable") and why in s["forced_note"]
    assert s["failure_rate"] == 1.0 and s["failure_kinds"]["runaway"] == 2  # the anatomy is there all the same
    assert all(r["forced"] is None for r in _records(tmp_path, bench).values())


def test_forced_is_null_for_multi_turn_samples(tmp_path):
    import sys
    import types

    from evaluate.tasks import Example, Verdict

    task = types.ModuleType("evaluate.tasks._two_turn_forced")
    task.load = lambda cfg: [Example("q1", ["first?", "second?"], reference=None)]
    task.score = lambda ex, answers, cfg: Verdict(1.0)
    sys.modules[task.__name__] = task
    cfg = _cfg(tmp_path, "benchmark.math500.n=1")
    cfg.benchmark.math500.module = "_two_turn_forced"
    backend = ScriptedBackend(["<think>t", "<think>u"])
    try:
        s = _evaluate(cfg, backend)
    finally:
        del sys.modules[task.__name__]
    assert backend.force_calls == [] and s["forced_score"] is None and "multi-turn" in s["forced_note"]


def test_forced_sequence_makes_room_by_dropping_the_end_of_the_trace():
    prompt, trace, tail = list(range(10)), list(range(100, 200)), [7, 8, 9]
    assert backends.forced_sequence(prompt, trace, tail, 20, 1000) == prompt + trace + tail  # fits
    seq = backends.forced_sequence(prompt, trace, tail, 20, 100)  # 10 + 100 + 3 + 20 > 100
    assert seq == prompt + trace[:67] + tail and len(seq) + 20 == 100
    assert backends.without_stop_token([5, 6, 2], "stop") == [5, 6] and backends.without_stop_token([5, 6], "length") == [5, 6]
    assert backends.after_close("</think>\n\nThe answer is 9") == "\n\nThe answer is 9"


# ---------------------------------------------------------------- the tiny model, in process
@pytest.fixture(scope="module")
def tiny_thinking(tmp_path_factory):
    return thinking_model(tmp_path_factory.mktemp("model"))


def test_transformers_force_continues_the_token_sequence(tiny_thinking):
    b = backends.TransformersBackend(str(tiny_thinking), OmegaConf.create({"batch_size": 2}))
    conv = [{"role": "user", "content": "What is 2+2?"}]
    g, = b.generate([conv], Settings(0.6, 0.95, 12, 0))
    assert g.opened and g.finish_reason == "length" and len(g.token_ids) == 12
    assert g.prompt_ids == b.tokenizer(b.render(conv), add_special_tokens=False).input_ids
    seen = []  # what the model is fed: the first call is the whole sequence (then one token per step)
    hook = b.model.get_input_embeddings().register_forward_hook(lambda module, args, output: seen.append(args[0]))
    out, = b.force([conv], [g], "Final answer:", Settings(0.6, 0.95, 5, 7))
    hook.remove()
    ids = g.prompt_ids + g.token_ids + b.tokenizer("\n</think>\n\nFinal answer:", add_special_tokens=False).input_ids
    assert seen[0].tolist() == [ids]
    torch.manual_seed(7)  # the same draws: the continuation of exactly this sequence
    with torch.no_grad():
        row = b.model.generate(torch.tensor([ids]), do_sample=True, temperature=0.6, top_p=0.95, top_k=0,
                               max_new_tokens=5, pad_token_id=b.tokenizer.pad_token_id)
    assert out == "Final answer:" + b.tokenizer.decode(row[0, len(ids):], skip_special_tokens=True)


def _tiny_run(tmp_path, model, run_name, *extra):
    cfg = compose_eval(["benchmark=[math500]", "logger=none", f"paths.root={tmp_path}", f"checkpoint={model}",
                        f"run_name={run_name}", "benchmark.math500.source=offline", "benchmark.math500.limit=2",
                        "benchmark.math500.n=2", "benchmark.math500.max_tokens=16", "policy.forced.max_tokens=6", *extra])
    summary = runner.run(cfg)["math500"]
    return summary, list(jsonl.read(tmp_path / "runs" / "eval" / run_name / "math500" / "samples.jsonl"))


def test_tiny_model_unclosed_samples_are_forced_and_the_paper_run_is_unchanged(tmp_path, tiny_thinking):
    s, records = _tiny_run(tmp_path, tiny_thinking, "forced", "backend.name=transformers")
    assert all(r["status"] == "unclosed" for r in records) and len(records) == 4
    for r in records:
        assert r["forced"]["path"] == "continue" and r["forced"]["text"].startswith("Final answer:")
        assert len(r["forced"]["text"]) > len("Final answer:") and r["forced"]["correct"] in (0.0, 1.0)
    grades = {}
    for r in records:
        grades.setdefault(r["example_id"], []).append(r["forced"]["correct"])
    assert s["forced_score"] == pytest.approx(sum(sum(v) / len(v) for v in grades.values()) / len(grades))
    assert s["forced_path"] == "continue" and s["strict_score"] == 0.0

    t, plain = _tiny_run(tmp_path, tiny_thinking, "plain", "backend.name=transformers", "policy.forced.enabled=false")
    assert [r["output"] for r in plain] == [r["output"] for r in records]  # forcing changed no generation
    assert (t["score"], t["strict_score"]) == (s["score"], s["strict_score"]) and t["forced_score"] is None


# ---------------------------------------------------------------- OpenAI-compatible servers
def test_a_real_local_server_forces_through_its_completions_endpoint(tmp_path, tiny_thinking):
    """`transformers serve` has /v1/completions: the rendered prompt + the trace + "</think>" + cue go there."""
    from core.serve import local_server

    with local_server(tiny_thinking, device="cpu", log_path=tmp_path / "serve.log", threads=1) as url:
        s, records = _tiny_run(tmp_path, tiny_thinking, "served", "backend.name=openai", f"backend.base_url={url}",
                               f"backend.served_model={url.model}", "backend.think_opened=true",
                               "backend.concurrency=2")
        b = backends.build(compose_eval(["backend.name=openai", f"backend.base_url={url}"]), url.model, forcing=True)
        conv = [{"role": "user", "content": "What is 2+2?"}]
        prompt = b._forced_prompt(conv, Generation("<think>\nfour, or", "length", 4, True), FORCED_CLOSE + "Final answer:", 6)
    assert b.tokenizer is not None  # the model's own template, rendered locally
    render = b.tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    assert render.endswith("<think>\n") and prompt == render + "four, or\n</think>\n\nFinal answer:"
    assert all(r["status"] == "unclosed" and r["forced"]["path"] == "completions" for r in records)
    assert all(r["forced"]["text"].startswith("Final answer:") for r in records)
    assert s["forced_path"] == "completions" and s["forced_score"] is not None


def _server(routes):
    """``routes`` maps a path to ``body -> (status, json)``; any other path is not found."""
    return JsonServer(lambda path, body: routes.get(path, lambda b: (404, {"detail": "Not Found"}))(body))


def _chat(body, reasoning="I keep dividing 196 by"):
    """vLLM's answer when the budget ran out inside the think block: the trace in `reasoning_content`."""
    message = {"role": "assistant", "content": "", "reasoning_content": reasoning}
    return 200, {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "message": message, "finish_reason": "length"}],
                 "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}


def _completion(body, text=" $\\boxed{9}$"):
    return 200, {"id": "t", "object": "text_completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
                 "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}


def _openai_cfg(tmp_path, url, *extra):
    return compose_eval(["model=tiny_qwen3", "benchmark=[math500]", "logger=none", f"paths.root={tmp_path}",
                         "run_name=r", "benchmark.math500.source=offline", "benchmark.math500.limit=1",
                         "benchmark.math500.n=1", "backend.name=openai", f"backend.base_url={url}",
                         "backend.max_retries=0", *extra])


def test_a_chat_only_server_fails_before_anything_runs_unless_forcing_is_off(tmp_path):
    server = _server({"/v1/chat/completions": _chat})
    try:
        with pytest.raises(LookupError, match=r"no completions endpoint.*policy\.forced\.enabled=false"):
            runner.run(_openai_cfg(tmp_path, server.url))
        assert not (tmp_path / "runs" / "eval").exists()
        assert [p for p, _ in server.seen] == ["/v1/chat/completions", "/v1/completions"]  # the two 1-token checks
        s = runner.run(_openai_cfg(tmp_path, server.url, "policy.forced.enabled=false"))["math500"]
    finally:
        server.close()
    assert s["failure_rate"] == 1.0 and s["forced_score"] is None and "enabled=false" in s["forced_note"]


def test_without_a_local_tokenizer_the_servers_tokenize_endpoint_renders_the_prompt(tmp_path, qwen3_tokenizer):
    """vLLM serve's /tokenize applies the chat template; the completions endpoint then gets token ids."""
    tok = qwen3_tokenizer

    def tokenize(body):
        if "messages" in body:
            text = tok.apply_chat_template(body["messages"], tokenize=False, add_generation_prompt=True)
            return 200, {"tokens": tok(text, add_special_tokens=False).input_ids}
        return 200, {"tokens": tok(body["prompt"], add_special_tokens=body.get("add_special_tokens", True)).input_ids}

    server = _server({"/v1/chat/completions": _chat, "/v1/completions": _completion, "/tokenize": tokenize})
    try:
        cfg = _openai_cfg(tmp_path, server.url, "backend.served_model=org/not-here")
        backend = backends.build(cfg, "org/not-here", forcing=True)  # no such tokenizer offline
        assert backend.tokenizer is None
        OmegaConf.set_struct(cfg, False)
        cfg.output_dir = str(tmp_path / "eval")
        s = runner.evaluate_benchmark("math500", cfg.benchmark.math500, cfg, lambda: backend, EVAL_TARGET)
    finally:
        server.close()
    record, = _records(tmp_path).values()
    prompt_ids = tok(tok.apply_chat_template([{"role": "user", "content": record["prompt"][0]}], tokenize=False,
                                             add_generation_prompt=True), add_special_tokens=False).input_ids
    trace_ids = tok("<think>\nI keep dividing 196 by", add_special_tokens=False).input_ids
    tail_ids = tok("\n</think>\n\nFinal answer:", add_special_tokens=False).input_ids
    sent = [b for p, b in server.seen if p == "/v1/completions"][-1]
    assert sent["prompt"] == prompt_ids + trace_ids + tail_ids and sent["max_tokens"] == 1024
    assert record["status"] == "unclosed" and record["failure_kind"] == "runaway"
    assert record["forced"] == {"text": "Final answer: $\\boxed{9}$", "answer": "9", "correct": 1.0, "path": "completions"}
    assert s["forced_score"] == 1.0 and s["score"] == 0.0 and s["forced_path"] == "completions"


def test_a_server_refusing_the_forced_sequence_is_named_with_the_fix(tmp_path):
    def short_context(body):  # accepts the 1-token check, refuses anything longer, as a short --max-model-len does
        if len(body["prompt"]) > 40:
            return 400, {"error": {"message": "maximum context length is 64 tokens", "type": "BadRequestError"}}
        return _completion(body)

    server = _server({"/v1/chat/completions": _chat, "/v1/completions": short_context})
    try:
        with pytest.raises(ValueError, match=r"refused a forced continuation.*backend\.max_model_len=32768.*"
                                             r"policy\.forced\.enabled=false"):
            runner.run(_openai_cfg(tmp_path, server.url))
    finally:
        server.close()
