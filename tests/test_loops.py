"""core.loops: the loop detector on crafted traces (token ids and text, English and Japanese) and on real
non-repeating text shipped by installed packages; failure_kind for every status × finish_reason."""

import argparse
import dataclasses
import json
import math
import random
from importlib.metadata import distribution
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

from core.loops import FAILURE_KINDS, Loop, failure_kind, find_loop
from evaluate.tasks.mt_bench import package_dir


# ---------------------------------------------------------------- real text from installed packages
def mt_bench_answers(lang: str) -> list[str]:
    """GPT-4's MT-Bench reference answers (flexeval's copy): real multi-paragraph prose, code and math."""
    data = package_dir("flexeval", "flexeval") / "core" / "chat_dataset" / "chatbot_bench_datasets"
    path = data / f"mt-{lang}-ref-gpt4.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [t for r in rows for t in r["choices"][0]["turns"]]


def mmath_problems(lang: str) -> list[str]:
    return [r["question"] for r in json.loads((files("mmath") / "mmath" / f"{lang}.json").read_text(encoding="utf-8"))]


def numpy_license() -> str:
    return next(f for f in distribution("numpy").files if f.name == "LICENSE.txt").read_text(encoding="utf-8")


REAL_TEXTS = {
    "en MT-Bench answers": lambda: "\n\n".join(mt_bench_answers("en")),
    "ja MT-Bench answers": lambda: "\n\n".join(mt_bench_answers("ja")),
    "en math problems": lambda: "\n\n".join(mmath_problems("en")[:150]),
    "ja math problems": lambda: "\n\n".join(mmath_problems("ja")[:150]),
    "numpy license (bundled licenses)": numpy_license,
    "python source (argparse, json.decoder)": lambda: Path(argparse.__file__).read_text(encoding="utf-8")
    + (files("json") / "decoder.py").read_text(encoding="utf-8"),
}

EN_PARAGRAPH = (
    "Let me reconsider the second case. If x is even, then x = 2k for some integer k, and substituting\n"
    "gives 4k^2 + 2k = 2k(2k + 1), which is always even. So the expression is even in this case too.\n"
)
JA_PARAGRAPH = (
    "待って、もう一度確認します。xが偶数なら x = 2k と書けるので、代入すると 2k(2k+1) となり、これは常に偶数です。\n"
)


def periodic_from(seq, loop: Loop) -> bool:
    """The reported tail really repeats with the reported period (exact cycles)."""
    tail = seq[loop.start:]
    return list(tail[loop.period:]) == list(tail[:len(tail) - loop.period])


# ---------------------------------------------------------------- exact cycles
@pytest.mark.parametrize("period", [1, 2, 3, 7, 50, 400, 2000])
def test_exact_cycle_on_token_ids_reports_period_start_and_repeats(period):
    rng = random.Random(period)
    prefix = [rng.randrange(151_000) for _ in range(4_000)]
    unit = [rng.randrange(151_000) for _ in range(period)]
    ids = prefix + (unit * (28_000 // period + 1))[:28_000]
    loop = find_loop(ids)
    assert loop is not None and loop.unit == "token"
    assert loop.period == period
    assert loop.start == len(prefix)
    assert loop.repeats == pytest.approx(28_000 / period, abs=0.01)
    assert periodic_from(ids, loop)


@pytest.mark.parametrize("lang,unit", [("en", EN_PARAGRAPH), ("en", "the "), ("en", "Wait, no.\n"),
                                       ("ja", JA_PARAGRAPH), ("ja", "です"), ("ja", "もう一度。")])
def test_exact_cycle_in_text_english_and_japanese(lang, unit):
    prefix = "\n\n".join(mt_bench_answers(lang)[:6]) + "\n\n"
    text = prefix + unit * max(40, 2_000 // len(unit))
    loop = find_loop(text)
    assert loop is not None and loop.unit == "char"
    assert loop.period == len(unit)
    assert len(prefix) - len(unit) <= loop.start <= len(prefix)  # a rotation of the unit may begin a little earlier
    assert loop.repeats == pytest.approx((len(text) - loop.start) / len(unit), abs=0.01)
    assert periodic_from(text, loop)


def test_long_multi_paragraph_period_as_text_and_qwen3_token_ids(qwen3_tokenizer):
    """A period of ~2,000 tokens (several paragraphs of real prose) repeated to fill a 32k-token budget."""
    answers = mt_bench_answers("en")
    unit = "\n\n".join(answers[40:46])
    prefix = "\n\n".join(answers[:40]) + "\n\n"
    unit_ids = qwen3_tokenizer.encode(unit + "\n\n")
    assert 1_800 < len(unit_ids) < 2_200
    prefix_ids = qwen3_tokenizer.encode(prefix)
    ids = prefix_ids + (unit_ids * 40)[:32_000 - len(prefix_ids)]
    loop = find_loop(ids)
    assert loop is not None and loop.period == len(unit_ids) and periodic_from(ids, loop)
    assert len(prefix_ids) - 2 <= loop.start <= len(prefix_ids)  # the prefix ends in "\n\n" like the unit
    text = qwen3_tokenizer.decode(ids)
    loop = find_loop(text)
    assert loop is not None and loop.period == len(unit) + 2 and len(prefix) - 3 <= loop.start <= len(prefix)


def test_period_whose_every_phrase_also_occurs_inside_it(qwen3_tokenizer):
    """The unit says the same 8 sentences 5 times in 5 orders: every n-gram was last seen inside the period,
    only its 5th earlier occurrence is one period back."""
    sentences = [t.strip() for t in EN_PARAGRAPH.replace("\n", " ").split(". ")] + [
        "Now compute the remainder modulo 7", "The remainder is 3 in every case", "Check k = 0 and k = 1 by hand"]
    orders = [random.Random(i).sample(sentences, len(sentences)) for i in range(5)]
    unit = "".join(". ".join(o) + ".\n" for o in orders)
    prefix = "\n\n".join(mt_bench_answers("en")[:20]) + "\n\n"
    for seq, unit_len, prefix_len in ((prefix + unit * 8, len(unit), len(prefix)),
                                      (qwen3_tokenizer.encode(prefix) + qwen3_tokenizer.encode(unit) * 8,
                                       len(qwen3_tokenizer.encode(unit)), len(qwen3_tokenizer.encode(prefix)))):
        loop = find_loop(seq)
        assert loop is not None and loop.period == unit_len and periodic_from(seq, loop)
        assert prefix_len - 3 <= loop.start <= prefix_len


# ---------------------------------------------------------------- near-cycles
COUNTER_LINES = {
    "en": "Step {i}: we add 3 to the running total and compare it with the target value again.\n",
    "ja": "ステップ{i}：合計に3を足して、もう一度目標の値と比べます。\n",
}


def test_counter_reports_its_period_not_a_multiple():
    """At 10 periods back only the tens digit differs, so a multiple matches better: still the line's period."""
    prefix = "\n\n".join(mt_bench_answers("en")[:8]) + "\n\n"
    lines = [f"Step {i}: check.\n" for i in range(100, 900)]
    loop = find_loop(prefix + "".join(lines))
    assert loop is not None and loop.period == len(lines[0]) and abs(loop.start - len(prefix)) <= len(lines[0])


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_near_cycle_with_incrementing_counter_text_and_tokens(lang, qwen3_tokenizer):
    """"Step 7: …", "Step 8: …" … "Step 140: …": the counter changes every period and grows a digit twice."""
    prefix = "\n\n".join(mt_bench_answers(lang)[:8]) + "\n\n"
    lines = [COUNTER_LINES[lang].format(i=i) for i in range(7, 141)]
    text = prefix + "".join(lines)
    loop = find_loop(text)
    assert loop is not None
    assert abs(loop.start - len(prefix)) <= len(lines[0])
    assert len(lines[0]) <= loop.period <= len(lines[-1])
    assert loop.repeats == pytest.approx(len(lines), rel=0.05)

    ids = qwen3_tokenizer.encode(text)
    n_prefix = len(qwen3_tokenizer.encode(prefix))
    line_tokens = [len(qwen3_tokenizer.encode(line)) for line in lines]
    loop = find_loop(ids)
    assert loop is not None and loop.unit == "token"
    assert abs(loop.start - n_prefix) <= line_tokens[0] + 1
    assert min(line_tokens) <= loop.period <= max(line_tokens)
    assert loop.repeats == pytest.approx(len(lines), rel=0.05)


def test_same_sentence_with_changing_numbers_is_a_loop():
    prefix = "\n\n".join(mmath_problems("en")[:5]) + "\n\n"
    lines = [f"x_{n} = {n * n % 97}, then we check whether it is a root of the polynomial.\n" for n in range(1, 300)]
    loop = find_loop(prefix + "".join(lines))
    assert loop is not None and abs(loop.start - len(prefix)) <= len(lines[0])
    assert len(lines[0]) <= loop.period <= len(lines[-1])


@pytest.mark.parametrize("lang,paragraph", [("en", EN_PARAGRAPH), ("ja", JA_PARAGRAPH)])
def test_near_cycle_with_small_edits(lang, paragraph):
    """Each repetition changes a word or two (a value, a filler) — still the same paragraph looping."""
    rng = random.Random(0)
    fillers = {"en": ["So", "Thus", "Hence", "Hmm", "Wait"],
               "ja": ["つまり", "よって", "うーん", "待って"]}[lang]
    prefix = "\n\n".join(mt_bench_answers(lang)[:6]) + "\n\n"
    reps = []
    for _ in range(30):
        reps.append(f"{rng.choice(fillers)}, {paragraph.replace('2k', rng.choice(['2k', '2m', '2n']))}")
    text = prefix + "".join(reps)
    loop = find_loop(text)
    assert loop is not None
    assert abs(loop.start - len(prefix)) <= 2 * len(reps[0])
    assert loop.period == pytest.approx(len(reps[0]), abs=6)


# ---------------------------------------------------------------- not loops
@pytest.mark.parametrize("name", list(REAL_TEXTS))
def test_long_real_text_is_not_a_loop(name, qwen3_tokenizer):
    text = REAL_TEXTS[name]()
    assert len(text) > 20_000
    assert find_loop(text) is None
    assert find_loop(qwen3_tokenizer.encode(text)) is None


def test_progressing_lists_and_repeated_phrases_are_not_loops(qwen3_tokenizer):
    sentences = [s.strip() for t in mt_bench_answers("en") for s in t.split(". ") if len(s) > 40][:200]
    numbered = "".join(f"{i}. {s}.\n" for i, s in enumerate(sentences, 1))  # same format, new content
    # A table of values: its layout repeats every row, but ~40 % of each row is new numbers.
    table = "".join(f"| {n} | {n * n} | {math.sqrt(n):.4f} | {math.log(n):.4f} |\n" for n in range(1, 300))
    wait = "".join(f"Wait, let me double-check this step. {s}.\n\n" for s in sentences)  # a phrase every paragraph
    for text in (numbered, table, wait):
        assert find_loop(text) is None, text[-300:]
        assert find_loop(qwen3_tokenizer.encode(text)) is None, text[-300:]


# ---------------------------------------------------------------- knobs and inputs
def test_knobs_decide_what_counts():
    rng = random.Random(1)
    prefix = [rng.randrange(151_000) for _ in range(3_000)]
    unit = [rng.randrange(151_000) for _ in range(100)]
    four = prefix + unit * 4  # 400 tokens, 4 repeats, 12 % of the sequence
    assert find_loop(four).repeats == 4
    assert find_loop(four, min_repeats=5) is None
    assert find_loop(four, min_share=0.2) is None
    assert find_loop(four, min_tokens=500) is None
    short = prefix + unit[:10] * 6  # 60 tokens
    assert find_loop(short) is None  # under min_tokens=128
    assert find_loop(short, min_tokens=32, min_share=0.01).period == 10

    # Every repetition differs from the previous one in ~12 % of its tokens.
    edited = list(prefix)
    for _ in range(40):
        edited += [t if rng.random() > 0.06 else rng.randrange(151_000) for t in unit]
    assert find_loop(edited).period == 100
    assert find_loop(edited, tolerance=0.05) is None


@pytest.mark.parametrize("knobs", [{"min_repeats": 1}, {"min_share": 1.5}, {"min_tokens": -1},
                                   {"tolerance": 0}, {"tolerance": 0.5}])
def test_bad_knobs_are_refused(knobs):
    with pytest.raises(ValueError, match=next(iter(knobs))):
        find_loop("abc" * 100, **knobs)


def test_inputs():
    assert find_loop("") is None and find_loop([]) is None and find_loop("aaa") is None
    assert find_loop(np.array([5, 6, 7] * 100)).period == 3
    assert find_loop(tuple([5, 6, 7] * 100)).period == 3
    with pytest.raises(TypeError, match="token ids"):
        find_loop([[1, 2], [3, 4]])
    with pytest.raises(TypeError, match="token ids"):
        find_loop([0.5, 1.5] * 100)
    loop = find_loop("ab" * 1_000)
    assert dataclasses.asdict(loop).keys() == {"period", "start", "repeats", "unit"}  # samples.jsonl's `loop`


# ---------------------------------------------------------------- failure_kind
LOOPING = "Some progress first. " + "Let me check the sum again: 3 + 4 = 7.\n" * 60
PROGRESSING = "\n\n".join(mmath_problems("en")[:40])

EXPECTED = [  # (status, finish_reason, trace, kind) — the contract in docs/contracts.md
    *[("unclosed", fr, LOOPING, "loop") for fr in ("length", "stop", None)],
    ("unclosed", "length", PROGRESSING, "runaway"),
    ("unclosed", "length", None, "runaway"),
    *[("unclosed", fr, t, "other") for fr in ("stop", None) for t in (PROGRESSING, None)],
    *[("closed", "length", t, "truncated_answer") for t in (LOOPING, PROGRESSING, None)],
    *[("closed", fr, t, None) for fr in ("stop", None) for t in (LOOPING, PROGRESSING, None)],
    *[("absent", fr, t, None) for fr in ("length", "stop", None) for t in (LOOPING, PROGRESSING, None)],
]


@pytest.mark.parametrize("status,finish_reason,trace,kind", EXPECTED, ids=[
    f"{s}-{fr}-{'none' if t is None else 'looping' if t is LOOPING else 'progressing'}" for s, fr, t, _ in EXPECTED])
def test_failure_kind_for_every_status_and_finish_reason(status, finish_reason, trace, kind, qwen3_tokenizer):
    assert kind is None or kind in FAILURE_KINDS
    assert failure_kind(status, finish_reason, trace)[0] == kind
    ids = None if trace is None else qwen3_tokenizer.encode(trace)
    assert failure_kind(status, finish_reason, ids)[0] == kind


def test_failure_kind_passes_knobs_and_refuses_unknown_status():
    assert failure_kind("unclosed", "length", LOOPING, min_repeats=1_000) == ("runaway", None)
    kind, loop = failure_kind("unclosed", "length", LOOPING)
    assert kind == "loop" and loop == find_loop(LOOPING)
    with pytest.raises(ValueError, match="status"):
        failure_kind("open", "length", LOOPING)
