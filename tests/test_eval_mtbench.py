"""MT-Bench: verdict parsing, judge failures, offline data, and two end-to-end runs through the runner.

- Recorded judge outputs (gpt-4o-style explanations with ``Rating: [[x]]``, malformed verdicts, a retry
  that succeeds, one that never does) are served over real HTTP by a replay server in the OpenAI chat
  format, so the real ``openai`` client, retry loop, parser and aggregation run unchanged.
- A REAL local OpenAI-compatible server (``transformers serve`` on the tiny random student) acts as both
  the model under test and the judge: its verdicts are unreadable, and every one must end as a counted
  judge failure, never as a score.
"""

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from core import jsonl
from evaluate import metrics
from evaluate import run as runner
from evaluate.judge import JudgeClient, Judgment, parse_rating
from evaluate.tasks import mt_bench
from conftest import EVAL_TARGET, ScriptedBackend
from json_server import JsonServer, chat_completion, error

ROOT = Path(__file__).resolve().parents[1]
RECORDED = json.loads((ROOT / "tests" / "fixtures" / "eval_mtbench_outputs.json").read_text(encoding="utf-8"))


# ---------------------------------------------------------------- the verdict parser
@pytest.mark.parametrize("text,rating", [
    ("The answer is helpful.\n\nRating: [[7]]", 7.0),
    ("[[7]]", 7.0),
    ("Rating: [[7.5]]", 7.5),
    ("Overall solid. [[10]]", 10.0),
    ("Rating: [8]", 8.0),           # FastChat's single-bracket backup
    ("Rating: 6", 6.0),             # and its "Rating: x" backup
    ("[[ 9 ]]", 9.0),
])
def test_parse_rating_reads_verdicts(text, rating):
    assert parse_rating(text) == rating


@pytest.mark.parametrize("text", ["", "Rating: [[rating]]", "I cannot judge this.", "[[0]]", "Rating: [[11]]",
                                  "Score: seven out of ten", "[[A]]"])
def test_parse_rating_rejects_malformed_verdicts(text):
    assert parse_rating(text) is None


def test_missing_api_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("MY_JUDGE_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="MY_JUDGE_KEY"):
        JudgeClient(api_key_env="MY_JUDGE_KEY")


def test_verdict_scales_to_0_1_and_strict_zeroes_unclosed_turns():
    ex = mt_bench.Example(id="81", turns=["q1", "q2"], meta={"category": "writing", "temperature": 0.7})
    v = mt_bench.verdict_from_judgments(ex, [Judgment(8.0, "Rating: [[8]]", 1), Judgment(6.5, "[[6.5]]", 2)], "j")
    assert v.score == pytest.approx(0.725) and v.detail["turn_scores"] == [0.8, 0.65] and v.extracted == "8 / 6.5"
    assert metrics.strict_score(v.score, ["unclosed", "closed"], v.detail["turn_scores"]) == pytest.approx(0.325)
    failed = mt_bench.verdict_from_judgments(ex, [Judgment(8.0, "[[8]]", 1), Judgment(None, "??", 3)], "j")
    assert failed.score is None and failed.detail["judge_failures"] == 1 and "turn_scores" not in failed.detail


# ---------------------------------------------------------------- offline data and prompts
def test_offline_questions_references_and_category_temperatures():
    for lang in ("ja", "en"):
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("evaluate", overrides=[f"benchmark=[mt_bench_{lang}]"]).benchmark[f"mt_bench_{lang}"]
        examples = mt_bench.load(cfg)
        assert len(examples) == 80 and all(len(ex.turns) == 2 for ex in examples)
        assert sum(ex.reference is not None for ex in examples) == 30  # math, reasoning, coding
        temps = {ex.meta["category"]: ex.meta["temperature"] for ex in examples}
        assert temps == {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
                         "reasoning": 0.0, "stem": 0.1, "humanities": 0.1}
        assert cfg.n == 5 and cfg.judge.model == "gpt-4o-2024-08-06" and cfg.base_greedy is False


def test_judge_prompts_reference_and_japanese_note():
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=["benchmark=[mt_bench_ja]"]).benchmark.mt_bench_ja
    examples = {ex.meta["category"]: ex for ex in mt_bench.load(cfg)}
    prompts = mt_bench.judge_prompts()
    math = examples["math"]
    m1 = mt_bench.judge_messages(math, ["ANS1", "ANS2"], 0, prompts, cfg.judge.language_note)
    assert math.reference[0] in m1[1]["content"] and "ANS1" in m1[1]["content"]
    assert "Japanese" in m1[1]["content"] and m1[1]["content"].index("Japanese") < m1[1]["content"].index("[[rating]]")
    m2 = mt_bench.judge_messages(math, ["ANS1", "ANS2"], 1, prompts, cfg.judge.language_note)
    assert "second question" in m2[0]["content"] and "Japanese" in m2[0]["content"]
    assert math.reference[1] in m2[1]["content"] and "ANS2" in m2[1]["content"]
    w = mt_bench.judge_messages(examples["writing"], ["ANS1"], 0, prompts, None)
    assert "Reference" not in w[1]["content"] and "Japanese" not in w[1]["content"]


# ---------------------------------------------------------------- replayed judge over HTTP
class ReplayJudge:
    """An OpenAI-compatible /v1/chat/completions endpoint replaying recorded judge answers.

    The recording to play is chosen by the judged answer (a marker string in it) and the turn; repeated
    requests for the same answer get the next recorded attempt.
    """

    def __init__(self, judges):
        self.judges = judges
        self.requests: list[list[dict]] = []
        self.served: dict[int, int] = {}
        self.server = JsonServer(self.respond)
        self.url = self.server.url

    def respond(self, path, body):
        if body["model"] == "no-such-model":  # what a real endpoint answers for an unknown model
            return 404, error("model not found")
        return 200, chat_completion(self.answer(body["messages"]), model=body["model"])

    def answer(self, messages):
        user = messages[-1]["content"]
        turn = 2 if "Conversation with User" in user else 1
        judged = user.split("### Assistant A:\n")[-1] if turn == 2 else user.split("[The Start of Assistant's Answer]")[-1]
        self.requests.append(messages)  # JsonServer answers one request at a time
        for k, j in enumerate(self.judges):
            if j["turn"] == turn and j["match"] in judged:
                n = self.served.get(k, 0)
                self.served[k] = n + 1
                return j["replies"][min(n, len(j["replies"]) - 1)]
        raise AssertionError(f"no recording for turn {turn}: {judged[:80]!r}")

    def close(self):
        self.server.close()


def _compose(tmp_path, bench, *extra):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=["model=tiny_qwen3", f"benchmark=[{bench}]", "logger=none",
                                              f"paths.root={tmp_path}", *extra])
    OmegaConf.set_struct(cfg, False)
    return cfg


def test_recorded_judge_through_the_runner(tmp_path):
    # Two questions in the hub schema (a local file): 81 writing (no reference), 111 math (reference).
    rows = {r["question_id"]: r for r in mt_bench.offline_rows("en", "gpt4")}
    path = tmp_path / "mt_bench_rows.jsonl"
    path.write_text("".join(json.dumps(rows[q]) + "\n" for q in (81, 111)), encoding="utf-8")
    judge = ReplayJudge(RECORDED["judges"])
    try:
        cfg = _compose(tmp_path, "mt_bench_en", f"benchmark.mt_bench_en.source={path}", "benchmark.mt_bench_en.n=1",
                       f"benchmark.mt_bench_en.judge.base_url={judge.url}", "benchmark.mt_bench_en.judge.model=replay")
        cfg.output_dir = str(tmp_path / "eval")
        backend = ScriptedBackend(RECORDED["model_outputs"])
        s = runner.evaluate_benchmark("mt_bench_en", cfg.benchmark.mt_bench_en, cfg, lambda: backend, EVAL_TARGET)
    finally:
        judge.close()

    # generated at the category temperatures: writing 0.7, math 0.0 (one backend call per temperature)
    assert [st.temperature for st in backend.settings] == [0.7, 0.0, 0.7, 0.0]
    recs = {r["example_id"]: r for r in jsonl.read(tmp_path / "eval" / "mt_bench_en" / "samples.jsonl")}
    w, m = recs["81"], recs["111"]
    assert w["detail"]["ratings"] == [8.0, 7.0] and w["score"] == pytest.approx(0.75)
    assert w["detail"]["judge_attempts"] == [1, 1] and w["turn_status"] == ["closed", "absent"]
    # math: turn 1 unclosed, so its TRACE was judged (paper policy), after one malformed verdict;
    # turn 2 never got a readable verdict in 3 attempts: a judge failure, not a score.
    assert m["turn_status"] == ["unclosed", "closed"]
    assert m["detail"]["ratings"] == [4.5, None] and m["detail"]["judge_attempts"] == [2, 3]
    assert m["score"] is None and m["strict_score"] is None and m["detail"]["judge_failures"] == 1
    assert all("no [[rating]]" in e for e in m["detail"]["judge_errors"][1])
    trace_requests = [q for q in judge.requests if "MATH-TRACE-T1" in q[-1]["content"] and "Conversation" not in q[-1]["content"]]
    assert len(trace_requests) == 2
    assert "Shoelace" in trace_requests[0][-1]["content"] and "<think>" not in trace_requests[0][-1]["content"]
    assert rows[111]["reference"][0][:60] in trace_requests[0][-1]["content"]  # single-math-v1 with reference

    assert s["score"] == pytest.approx(0.75) and s["strict_score"] == pytest.approx(0.75)  # failures excluded
    assert s["extra"]["n_judge_failures"] == 1 and s["extra"]["judge_failure_rate"] == pytest.approx(0.25)
    assert s["extra"]["n_judged_samples"] == 1 and s["extra"]["turn_scores"] == {"turn_1": 0.8, "turn_2": 0.7}
    assert s["failure_rate"] == pytest.approx(0.25) and s["metric"] == "judge"


def test_real_local_judge_server_failures_are_counted(tmp_path, tiny_student):
    """The tiny random model as model under test AND judge over a real `transformers serve`."""
    from core.serve import local_server

    with local_server(tiny_student, device="cpu", log_path=tmp_path / "serve.log", threads=1) as url:
        cfg = _compose(
            tmp_path, "mt_bench_ja", "benchmark.mt_bench_ja.limit=2", "benchmark.mt_bench_ja.n=1",
            "benchmark.mt_bench_ja.max_tokens=8", "backend.name=openai", f"backend.base_url={url}",
            f"backend.served_model={url.model}", f"benchmark.mt_bench_ja.judge.base_url={url}",
            f"benchmark.mt_bench_ja.judge.model={url.model}", "benchmark.mt_bench_ja.judge.max_tokens=8",
            "benchmark.mt_bench_ja.judge.max_attempts=2", "benchmark.mt_bench_ja.judge.api_key_env=NO_SUCH_KEY_VAR",
        )
        out = runner.run(cfg)
    s = out["mt_bench_ja"]
    recs = list(jsonl.read(Path(cfg.output_dir) / "mt_bench_ja" / "samples.jsonl"))
    assert len(recs) == 2 and all(len(r["output"]) == 2 for r in recs)
    ratings = [x for r in recs for x in r["detail"]["ratings"]]
    judgments = [t for r in recs for t in r["detail"]["judgments"]]
    # every verdict the tiny model wrote is either readable or a counted failure, never silently scored
    assert [parse_rating(t) for t in judgments] == ratings
    n_fail = sum(x is None for x in ratings)
    assert n_fail > 0 and s["extra"]["n_judge_failures"] == n_fail
    assert s["extra"]["judge_failure_rate"] == pytest.approx(n_fail / 4)
    for r in recs:
        failed = any(x is None for x in r["detail"]["ratings"])
        assert (r["score"] is None) == failed
        assert all(a == 2 for a, x in zip(r["detail"]["judge_attempts"], r["detail"]["ratings"]) if x is None)
    assert (s["score"] is None) == (n_fail == 4)


def test_wrong_judge_model_stops_instead_of_counting_failures():
    judge = ReplayJudge(RECORDED["judges"])
    try:
        client = JudgeClient(model="no-such-model", base_url=judge.url, api_key_env="NO_SUCH_KEY_VAR", max_retries=0)
        with pytest.raises(RuntimeError, match="judge.model"):
            client.judge([{"role": "user", "content": "[The Start of Assistant's Answer]HAWAII-BLOG-T1"}])
        ok = JudgeClient(model="replay", base_url=judge.url, api_key_env="NO_SUCH_KEY_VAR")
        j = ok.judge([{"role": "user", "content": "[The Start of Assistant's Answer]HAWAII-BLOG-T1"}])
        assert j.rating == 8.0 and j.attempts == 1 and not j.failed
    finally:
        judge.close()
