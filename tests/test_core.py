import json
import subprocess
import sys

import pytest

from core import jsonl, think
from core.triple import Triple, record_id


def test_parse_closed_unclosed_absent():
    p = think.parse("<think>\nstep 1\nstep 2\n</think>\n\nThe answer is 4.")
    assert (p.trace, p.response, p.status) == ("step 1\nstep 2", "The answer is 4.", "closed")
    # A generation prompt that already opened the block: the output has only the closing tag.
    p = think.parse("reasoning here\n</think>\n\nfinal", opened=True)
    assert (p.trace, p.response, p.status) == ("reasoning here", "final", "closed")
    p = think.parse("<think>\nBut maybe... But maybe... But maybe")
    assert p.status == "unclosed" and p.response == "" and p.trace.startswith("But maybe")
    assert think.parse("I keep thinking", opened=True).status == "unclosed"
    p = think.parse("Just an answer.")
    assert (p.trace, p.response, p.status) == ("", "Just an answer.", "absent")


def test_format_assistant_roundtrip_and_no_trace_modes():
    text = think.format_assistant("a\n\nb  ", "resp")
    assert text == "<think>\na\n\nb  \n</think>\n\nresp"
    assert think.parse(text).trace == "a\n\nb  "
    assert think.format_assistant(None, "resp") == "resp"
    assert think.format_assistant("", "resp", "empty_think") == "<think>\n\n</think>\n\nresp"
    with pytest.raises(ValueError, match="response_only"):
        think.format_assistant(None, "r", "bogus")


def test_split_teacher_message_reasoning_field_or_inline():
    p = think.split_teacher_message("The answer is 2.", reasoning="1+1=2")
    assert (p.trace, p.response, p.status) == ("1+1=2", "The answer is 2.", "closed")
    p = think.split_teacher_message("<think>1+1=2</think>\n\nThe answer is 2.")
    assert (p.trace, p.response) == ("1+1=2", "The answer is 2.")


def test_triple_schema_validates_and_ids_are_stable():
    rid = record_id("npt:math:17", "What is 1+1?", "gpt-oss-120b", "medium")
    assert rid == record_id("npt:math:17", "What is 1+1?", "gpt-oss-120b", "medium")
    assert rid != record_id("npt:math:17", "What is 1+1?", "gpt-oss-120b", "high")
    t = Triple(id=rid, component="c", domain="stem", source="s", lang_input="ja", lang_trace="en",
               teacher="t", instruction="i", trace="tr", response="r", flags=["truncated"])
    assert Triple.from_dict(json.loads(json.dumps(t.to_dict()))) == t
    with pytest.raises(ValueError, match="domain"):
        Triple(**{**t.to_dict(), "domain": "code"})
    with pytest.raises(ValueError, match="missing fields"):
        Triple.from_dict({"id": "x"})


def test_shards_repair_torn_line_after_sigkill(tmp_path):
    # A child appends forever; SIGKILL it mid-stream, then the writer reopens and repairs.
    code = (
        "import sys; from core.jsonl import ShardWriter\n"
        f"w = ShardWriter({str(tmp_path)!r}, fsync=False)\n"
        "i = 0\n"
        "while True:\n"
        "    w.write({'id': i, 'pad': 'x' * 5000}); i += 1\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    shard = tmp_path / "part-00000.jsonl"
    import time
    deadline = time.time() + 30
    while (not shard.exists() or shard.stat().st_size < 200_000) and time.time() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    # Simulate a torn tail regardless of where the kill landed.
    with open(shard, "ab") as f:
        f.write(b'{"id": 99999999, "pad": "xx')
    ids = [r["id"] for r in jsonl.read(shard)]
    assert ids == list(range(len(ids))) and len(ids) > 10
    with jsonl.ShardWriter(tmp_path) as w:
        w.write({"id": "after"})
    again = [r["id"] for r in jsonl.read_dir(tmp_path)]
    assert again == ids + ["after"]


def test_corrupt_middle_line_is_an_error(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"id": 1}\nnot json\n{"id": 3}\n')
    with pytest.raises(ValueError, match="a.jsonl:2"):
        list(jsonl.read(p))


def test_evaluate_is_ours_not_huggingface():
    import evaluate

    assert evaluate.__file__.startswith(str(__import__("pathlib").Path(__file__).resolve().parents[1]))


def test_tiny_student_uses_real_qwen3_tokenizer(tiny_student, qwen3_tokenizer):
    from transformers import AutoConfig, AutoTokenizer

    cfg = AutoConfig.from_pretrained(tiny_student)
    tok = AutoTokenizer.from_pretrained(tiny_student)
    assert cfg.model_type == "qwen3" and cfg.num_hidden_layers == 2
    assert tok.convert_tokens_to_ids("<think>") == 151667 and len(tok) == len(qwen3_tokenizer)
    assert "<|im_start|>assistant" in tok.apply_chat_template(
        [{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True)


def test_reader_and_repair_agree_on_what_a_torn_last_line_is(tmp_path):
    # Unterminated but parsable: torn (repair cuts it), so readers must not count it as done.
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'{"id": "x0"}\n{"id": "x1"}')
    assert [r["id"] for r in jsonl.read(p)] == ["x0"] and jsonl.ids_in(tmp_path) == {"x0"}
    with jsonl.ShardWriter(tmp_path, name="a") as w:
        w.write({"id": "y0"})
    assert [r["id"] for r in jsonl.read(p)] == ["x0", "y0"]
    # Terminated but garbled last line: skipped by the reader, cut by repair, never an error.
    p.write_bytes(b'{"id": "x0"}\n{"id": "x1", "pad": "\xe3\x81\n')
    assert [r["id"] for r in jsonl.read(p)] == ["x0"]
    assert jsonl.repair(p) > 0 and p.read_bytes() == b'{"id": "x0"}\n'


def test_one_line_errors_turn_bad_input_into_one_line_but_leave_bugs_their_traceback(monkeypatch):
    from core.cli import one_line_errors

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as e:
        with one_line_errors("synth", ValueError, LookupError):
            raise ValueError("prompts.jsonl:3: not JSON")
    assert e.value.code == "synth: prompts.jsonl:3: not JSON"
    for bug in (KeyError("response"), IndexError("list index out of range")):  # LookupError's subclasses
        with pytest.raises(type(bug)):
            with one_line_errors("synth", ValueError, LookupError):
                raise bug
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ValueError):
        with one_line_errors("synth", ValueError):
            raise ValueError("x")
