"""Extraction and scoring of every benchmark on real-looking model outputs with expected verdicts."""

import importlib
import json
from functools import lru_cache
from pathlib import Path

import pytest

from evaluate.extract import extract_choice
from evaluate.run import paper_answer
from test_evaluate_runner import compose_eval

CASES = json.loads((Path(__file__).parent / "fixtures" / "evaluate" / "verdicts.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def benchmark(name: str, source: str):
    cfg = compose_eval([f"benchmark=[{name}]", f"benchmark.{name}.source={source}"]).benchmark[name]
    module = importlib.import_module(f"evaluate.tasks.{cfg.module}")
    return cfg, module, {ex.id: ex for ex in module.load(cfg)}


@pytest.mark.parametrize("case", CASES, ids=[f"{c['benchmark']}-{c['case']}" for c in CASES])
def test_verdict(case):
    cfg, module, examples = benchmark(case["benchmark"], case["source"])
    ex = examples[case["example_id"]]
    answer, status = paper_answer(case["output"])
    verdict = module.score(ex, [answer], cfg)
    assert verdict.score == case["score"], (case["case"], verdict)
    strict = 0.0 if status == "unclosed" else verdict.score
    assert strict == case["strict_score"]
    if case["extracted"] is not None:
        assert verdict.extracted == case["extracted"]


def test_every_benchmark_has_cases():
    names = {c["benchmark"] for c in CASES}
    assert names >= {"math500", "aime", "math100_ja", "gpqa_diamond", "gpqa_ja", "mmlu_pro", "mmlu_prox_ja",
                     "hellaswag", "jamc_qa", "humaneval", "jhumaneval", "livecodebench"}
    assert {c["score"] for c in CASES} == {0, 1} and any(c["strict_score"] != c["score"] for c in CASES)


@pytest.mark.parametrize(
    "text,letter",
    [
        ("Answer: C", "C"), ("**Answer: (C)**", "C"), ("The answer is **B**.", "B"), ("答え：Ｃ", "C"),
        ("正解は **A** です。", "A"), ("\\boxed{G}", "G"), ("Answer: A\nwait, no.\nAnswer: B", "B"),
        ("I'd go with (B).", "B"), ("よって、答えはCです", "C"), ("選択肢Bが正しい", "B"), ("Answer: $D$", "D"),
        ("**D**", "D"), ("最終的な答え: (Ｄ)", "D"), ("Answer: Cytochrome c... the correct choice is D", "D"),
        ("Answer: Photon", None), ("Answer: K", None), ("I am not sure.", None),
    ],
)
def test_choice_letter_extraction(text, letter):
    assert extract_choice(text, "ABCDEFGHIJ") == letter


def _as_hub_dir(tmp_path, name, split):
    """A local directory in the hub's layout (``<split>.jsonl``), loaded by the real hub code path."""
    rows = [json.loads(line) for line in (Path(__file__).parents[1] / "evaluate" / "data" / name).read_text().splitlines()]
    d = tmp_path / name.replace(".jsonl", "")
    d.mkdir()
    (d / f"{split}.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    return d


@pytest.mark.parametrize("name,fixture,split", [("mmlu_pro", "mmlu_pro_fixture.jsonl", "test"),
                                                ("hellaswag", "hellaswag_fixture.jsonl", "validation"),
                                                ("jamc_qa", "jamc_qa_fixture.jsonl", "test")])
def test_hub_loader_reads_the_hub_schema(tmp_path, name, fixture, split):
    d = _as_hub_dir(tmp_path, fixture, split)
    cfg = compose_eval([f"benchmark=[{name}]", f"benchmark.{name}.hub_id={d}", f"benchmark.{name}.hub_config=null"])
    module = importlib.import_module(f"evaluate.tasks.{name}")
    hub = module.load(cfg.benchmark[name])
    _, _, fixture_examples = benchmark(name, "fixture")
    assert [ex.id for ex in hub] == list(fixture_examples) and hub[0].turns == fixture_examples[hub[0].id].turns


def test_livecodebench_hub_data_files(tmp_path):
    d = _as_hub_dir(tmp_path, "livecodebench_fixture.jsonl", "test5")
    cfg = compose_eval(["benchmark=[livecodebench]", f"benchmark.livecodebench.hub_id={d}",
                        "benchmark.livecodebench.hub_data_files=[test5.jsonl]"]).benchmark.livecodebench
    examples = importlib.import_module("evaluate.tasks.livecodebench").load(cfg)
    assert len(examples) == 3 and len(examples[0].private["tests"]) == 3  # public + decoded private tests


def test_aime_hub_sources(tmp_path):
    d = tmp_path / "aime24"
    d.mkdir()
    (d / "train.jsonl").write_text(json.dumps({"id": 60, "problem": "What is 1+1?", "answer": "2", "year": "2024"}))
    cfg = compose_eval(["benchmark=[aime]", f"benchmark.aime.hub_sources=[{{hub_id: '{d}', split: train, year: 2024}}]"])
    examples = importlib.import_module("evaluate.tasks.aime").load(cfg.benchmark.aime)
    assert [(ex.id, ex.reference) for ex in examples] == [("2024-0", "2")]


# Truncated traces (the paper policy scores the trace of an unclosed think block): a letter merely
# MENTIONED after the stated answer, or in a conditional or a question, is not the answer.
@pytest.mark.parametrize(
    "text,letter",
    [
        # English: the answer is stated, then the trace runs on into other options and is cut off
        ("Gluons carry the strong force, so the answer is C. Now, Option D is about weak bosons, which", "C"),
        ("The answer is (B).\n\nLet me double-check the others:\n**D)** is a distractor because (D) ignores", "B"),
        ("Answer: A\n\nChecking choice D: D would require", "A"),
        ("So the correct answer is C. But option D says the carrier is massive; D is wrong since", "C"),
        ("If the answer is D, the mass would be zero. It is not, so the answer is B. Hmm, what if the answer is D?", "B"),
        ("The answer is B. Let me verify whether the answer is D by", "B"),
        ("I think option B is correct. Option D is the W boson and", "B"),
        # only mentions, no stated answer: nothing to extract
        ("Let me look at each option. (A) is wrong. (B) is also wrong. Option (C) seems plausible but (D)", None),
        ("**A)** quarks\n**B)** gluons\n**C)** photons\n**D)** W bosons\nLet me think about which", None),
        # a restated final answer still wins over an earlier one
        ("the answer is C. Wait, that ignores charge. Actually, the answer is D.", "D"),
        # Japanese: 答え / 正解 / 回答 / 解答, then discussion of another option
        ("光子が媒介するので、答えはCです。次に選択肢Dについて考えると、Dは弱い力の", "C"),
        ("よって正解は (B)。念のため選択肢Dも確認すると、Dは", "B"),
        ("答え：Ａ\n\n選択肢Ｃの説明：Ｃは誤り。選択肢Ｄは", "A"),
        ("もし答えがDならば質量はゼロになる。したがって答えはBである。答えはDかどうか再確認すると", "B"),
        ("選択肢Bが正しい。選択肢Dは弱い力を媒介する粒子で", "B"),
        ("解答: C\n\nなお、(D) は", "C"),
        ("各選択肢を検討する。(A)は誤り。(B)も誤り。選択肢(C)は", None),
    ],
)
def test_choice_in_truncated_traces(text, letter):
    assert extract_choice(text, "ABCD") == letter
