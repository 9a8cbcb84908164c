"""Loop-aware, budget-aware data (issue 14 §3, synth side): teacher traces that end in a loop are flagged
``looping_trace`` and dropped or kept by the policy; traces over ``synth.max_trace_tokens`` student tokens
are flagged ``over_budget``; stats.json has trace-length percentiles beside Table 1's mean; ``reflag``
applies the checks to records already on disk without losing any, even when killed.

Teachers are ``tests/fault_server.py`` (``[[out:loop]]``: a trace ending in 40 repetitions of a sentence
behind a step counter, Japanese for a Japanese prompt)."""

import json
import math
import os
import random
import signal
import string
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from core import jsonl, think
from fault_server import FaultServer
from synth import pipeline
from synth import stats as st
from synth.checks import TraceChecks
from synth.reflag import reflag_component

REPO = Path(__file__).resolve().parents[1]
FAST_RETRY = ["synth.retries.initial=0.01", "synth.retries.max=0.05", "synth.retries.jitter=0.01",
              "synth.retries.cooldown=0.05"]
LOOPS = {3: "[[out:loop]]", 6: "ステップごとに考えてください。[[out:loop]]"}  # prompt index -> directive


def write_prompts(path: Path, n: int, extra: dict[int, str]) -> Path:
    with open(path, "w") as f:
        for i in range(n):
            words = " ".join(["and then"] * (i % 7))  # traces of different lengths (the teacher echoes the prompt)
            f.write(json.dumps({"id": i, "instruction": f"Prompt {i}: {words} what is {i}? {extra.get(i, '')}".strip()})
                    + "\n")
    return path


def args(prompts: Path, url: str, *extra: str) -> list[str]:
    return ["experiment=chat_oss_en_ja", "synth.components=[chat_oss_en]", "~synth.sources.lmsys",
            f"+synth.sources.lmsys={{type: local, path: '{prompts}'}}", f"teacher.endpoints=[{url}]",
            "synth.progress=false", "model=tiny_qwen3", "synth.stats.ppl=false", *FAST_RETRY, *extra]


def compose_cfg(root: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("synth", overrides=[f"paths.root={root}", *overrides])


def dirs(cfg) -> tuple[Path, Path]:
    """(kept records, rejected records) of the component."""
    return Path(cfg.data.chat_oss_en.path), Path(cfg.synth.work_dir) / "chat_oss_en" / "rejected"


def by_source(directory: Path) -> dict[int, dict]:
    return {int(r["source"].split(":")[1]): r for r in jsonl.read_dir(directory)}


# ----------------------------------------------------------------------------------------------------
# generate: looping_trace, over_budget


@pytest.mark.parametrize("policy", ["drop", "keep"])
def test_looping_teacher_trace_flagged_policy_applied_counted_in_stats(tmp_path, tiny_student, policy):
    prompts = write_prompts(tmp_path / "p.jsonl", 14, LOOPS)
    with FaultServer() as fs:
        cfg = compose_cfg(tmp_path, *args(prompts, fs.url, "synth.limit=10", "synth.prompt_margin=0",
                                          "synth.prompt_extra=4", "synth.steps=[prompts,generate,stats]",
                                          f"synth.flag_policy.looping_trace={policy}"))
        out = pipeline.run(cfg)
    assert sorted(fs.injected.values()) == ["loop", "loop"]
    kept_dir, rej_dir = dirs(cfg)
    kept, rejected = by_source(kept_dir), by_source(rej_dir)
    looping = {i: r for i, r in {**kept, **rejected}.items() if r["flags"]}
    assert set(looping) == set(LOOPS)  # English and Japanese loops found, nothing else flagged
    assert all(r["flags"] == ["looping_trace"] and r["response"].endswith("42.") for r in looping.values())
    assert "ステップ40" in looping[6]["trace"]
    if policy == "drop":  # rejected and replaced by the next prompts
        assert set(rejected) == set(LOOPS) and sorted(kept) == [i for i in range(12) if i not in LOOPS]
        assert out["generate"]["chat_oss_en"]["rejected_flags"] == {"looping_trace": 2}
    else:
        assert not rejected and sorted(kept) == list(range(10))
    stats = json.loads((kept_dir / "stats.json").read_text())
    assert stats["flag_counts"] == {"looping_trace": 2} and stats["count"] == 10
    assert stats["rejected"] == (2 if policy == "drop" else 0)


def token_count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_over_budget_flags_traces_longer_than_the_budget_in_student_tokens(tmp_path, tiny_student, qwen3_tokenizer):
    prompts = write_prompts(tmp_path / "p.jsonl", 12, LOOPS)
    budget = 23
    with FaultServer() as fs:
        cfg = compose_cfg(tmp_path, *args(prompts, fs.url, "synth.limit=12", "synth.steps=[prompts,generate,stats]",
                                          f"synth.max_trace_tokens={budget}", "synth.flag_policy.looping_trace=keep"))
        pipeline.run(cfg)
    kept_dir, _ = dirs(cfg)
    recs = by_source(kept_dir)
    lengths = {i: token_count(qwen3_tokenizer, r["trace"]) for i, r in recs.items()}  # the trace alone
    over = {i for i, n in lengths.items() if n > budget}
    assert 2 < len(over) < len(recs) - 2  # a real mix around the budget
    assert {i for i, r in recs.items() if "over_budget" in r["flags"]} == over
    assert set(LOOPS) <= over and all(r["flags"][-1] == "over_budget" for i, r in recs.items() if i in LOOPS)
    stats = json.loads((kept_dir / "stats.json").read_text())
    assert stats["flag_counts"] == {"over_budget": len(over), "looping_trace": 2}
    assert stats["trace_tokens_p99"] == max(lengths.values()) and stats["trace_tokens_p50"] <= budget


# ----------------------------------------------------------------------------------------------------
# stats: percentiles


def nearest_rank(values: list[int], q: int) -> int:
    return sorted(values)[math.ceil(q / 100 * len(values)) - 1]


def test_trace_token_percentiles_are_exact_on_crafted_records(tmp_path, qwen3_tokenizer):
    out = tmp_path / "comp"
    order = [(37 * k) % 100 + 1 for k in range(100)]  # 1..100, shuffled, over two shards
    recs = [{"id": f"r{k}", "instruction": "q", "trace": " ".join(["step"] * k), "response": "ok " * (k % 5 + 1),
             "flags": []} for k in order]
    for name, part in (("a", recs[:60]), ("b", recs[60:] + recs[:3])):  # 3 duplicates: counted once
        out.mkdir(exist_ok=True)
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    assert [token_count(qwen3_tokenizer, r["trace"]) for r in recs] == order  # "step" is one token each
    s = st.component_stats("comp", out, tmp_path / "work", tokenizer=qwen3_tokenizer, token_batch=16)
    assert s["count"] == 100
    assert (s["trace_tokens_p50"], s["trace_tokens_p90"], s["trace_tokens_p99"]) == (50, 90, 99)
    assert s["mean_trace_tokens"] == 50.5
    full = [token_count(qwen3_tokenizer, think.format_assistant(r["trace"], r["response"])) for r in recs]
    assert s["mean_tokens"] == sum(full) / 100
    assert [s[f"tokens_p{q}"] for q in (50, 90, 99)] == [nearest_rank(full, q) for q in (50, 90, 99)]
    # without the trace (experiment 7's view): the response alone, no trace statistics
    s = st.component_stats("comp", out, tmp_path / "work", tokenizer=qwen3_tokenizer, keep_trace=False)
    responses = [token_count(qwen3_tokenizer, r["response"]) for r in recs]
    assert s["tokens_p90"] == nearest_rank(responses, 90) and s["trace_tokens_p50"] is None
    assert s["mean_trace_tokens"] is None


# ----------------------------------------------------------------------------------------------------
# reflag: records already on disk


def test_reflag_flags_records_on_disk_without_the_teacher_and_keeps_a_backup(tmp_path, tiny_student):
    prompts = write_prompts(tmp_path / "p.jsonl", 14, LOOPS)
    with FaultServer() as fs:  # records made before loop detection existed
        old = args(prompts, fs.url, "synth.limit=10", "synth.loops.enabled=false")
        pipeline.run(compose_cfg(tmp_path, *old, "synth.steps=[prompts,generate]"))
    kept_dir, rej_dir = dirs(compose_cfg(tmp_path, *old))
    shard = kept_dir / "part-00000-of-00001.jsonl"
    before = shard.read_bytes()
    assert not any(r["flags"] for r in jsonl.read(shard))
    # the server is gone: reflag never calls it
    cfg = compose_cfg(tmp_path, *old[:-1], "synth.steps=[reflag,stats]", "synth.flag_policy.looping_trace=drop")
    res = pipeline.run(cfg)["reflag"]["chat_oss_en"]
    assert (res["changed"], res["moved_to_rejected"], res["added"]) == (2, 2, {"looping_trace": 2})
    assert sorted(by_source(kept_dir)) == [i for i in range(10) if i not in LOOPS]
    assert sorted(by_source(rej_dir)) == sorted(LOOPS)
    assert all(r["flags"] == ["looping_trace"] for r in jsonl.read_dir(rej_dir))
    [backup] = res["backups"]
    assert Path(backup).read_bytes() == before  # the shard as it was
    stats = json.loads((kept_dir / "stats.json").read_text())
    assert stats["count"] == 8 and stats["rejected"] == 2 and stats["flag_counts"] == {"looping_trace": 2}
    # every record is still somewhere, unchanged but for its flags
    orig = {json.loads(x)["id"]: json.loads(x) for x in before.splitlines()}
    now = {r["id"]: r for r in [*jsonl.read_dir(kept_dir), *jsonl.read_dir(rej_dir)]}
    assert orig.keys() == now.keys()
    assert all({**orig[i], "flags": []} == {**now[i], "flags": []} for i in orig)
    # a rerun changes nothing and backs nothing up
    again = pipeline.run(compose_cfg(tmp_path, *old[:-1], "synth.steps=[reflag]",
                                     "synth.flag_policy.looping_trace=drop"))["reflag"]["chat_oss_en"]
    assert (again["changed"], again["moved_to_rejected"], again["backups"]) == (0, 0, [])
    # a budget set later: added where exceeded, cleared when raised; the loop flag is left as it is when off
    tight = pipeline.run(compose_cfg(tmp_path, *old, "synth.steps=[reflag]", "synth.max_trace_tokens=22"))
    n_over = tight["reflag"]["chat_oss_en"]["added"]["over_budget"]
    assert 0 < n_over < 8
    loose = pipeline.run(compose_cfg(tmp_path, *old, "synth.steps=[reflag]", "synth.max_trace_tokens=100000"))
    assert loose["reflag"]["chat_oss_en"]["cleared"] == {"over_budget": n_over}
    assert not any(r["flags"] for r in jsonl.read_dir(kept_dir))


def looping_records(n: int) -> list[dict]:
    """Triples whose trace is random words; every fifth ends in 30 repetitions of a sentence."""
    unit = "Step {i}: the sum is checked again and it still holds. "
    out = []
    for k in range(n):
        rng = random.Random(k)
        words = " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(120))
        trace = words + ("".join(unit.format(i=i) for i in range(30)) if k % 5 == 0 else "")
        out.append({"id": f"id{k:05d}", "component": "chat_oss_en", "domain": "chat", "source": f"lmsys:{k}",
                    "lang_input": "en", "lang_trace": "en", "teacher": "gpt-oss-120b", "instruction": f"q{k}",
                    "trace": trace, "response": "answer", "flags": []})
    return out


def reflag_args(root: Path) -> list[str]:
    return [f"paths.root={root}", "experiment=chat_oss_en_ja", "synth.components=[chat_oss_en]",
            "synth.steps=[reflag]", "synth.flag_policy.looping_trace=drop"]


def test_reflag_killed_midway_loses_nothing_and_the_rerun_equals_a_clean_run(tmp_path):
    recs = looping_records(4 * 400)
    for root in ("killed", "clean"):
        d = tmp_path / root / "data" / "triples" / "chat_oss_en"
        d.mkdir(parents=True)
        for s in range(8):
            (d / f"part-{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs[s::8]))
    killed = tmp_path / "killed" / "data" / "triples"
    backups = killed / "_synth" / "chat_oss_en" / "backup"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "synth", *reflag_args(tmp_path / "killed")], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    # kill it once the first shard is backed up: that shard being replaced, or the next one half-written
    while time.monotonic() < deadline and proc.poll() is None and not (backups.exists() and any(backups.iterdir())):
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    err = proc.communicate()[1].decode()
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    assert len(list(backups.iterdir())) < 8, err[-2000:]  # killed before the last shard was replaced

    def state(root: Path) -> tuple[dict, dict]:
        d = root / "data" / "triples"
        return ({r["id"]: r for r in jsonl.read_dir(d / "chat_oss_en")},
                {r["id"]: r for r in jsonl.read_dir(d / "_synth" / "chat_oss_en" / "rejected")})

    kept, rejected = state(tmp_path / "killed")
    assert kept.keys() | rejected.keys() == {r["id"] for r in recs}  # nothing lost
    assert all(kept[r["id"]]["trace"] == r["trace"] for r in recs if r["id"] in kept)
    for root in ("killed", "clean"):
        cfg = compose_cfg(tmp_path / root, *reflag_args(tmp_path / root)[1:])
        pipeline.run(cfg)
    assert state(tmp_path / "killed") == state(tmp_path / "clean")
    kept, rejected = state(tmp_path / "clean")
    assert len(rejected) == 320 and len(kept) == 1280
    assert all(r["flags"] == ["looping_trace"] for r in rejected.values())
    rej_lines = [r["id"] for r in jsonl.read_dir(killed / "_synth" / "chat_oss_en" / "rejected")]
    assert len(rej_lines) == len(set(rej_lines))  # no record moved twice
    assert not list((killed / "chat_oss_en").glob(".*reflag-tmp"))


def test_reflag_leaves_a_shard_that_changes_while_it_is_read(tmp_path):
    d, work = tmp_path / "comp", tmp_path / "work"
    d.mkdir()
    shard = d / "part-0.jsonl"
    shard.write_text("".join(json.dumps(r) + "\n" for r in looping_records(10)))
    before = shard.read_bytes()

    appended = []

    class WriterMeanwhile(TraceChecks):  # another process appends a record to the shard while it is read
        def flags(self, trace, response):
            if not appended:
                with open(shard, "a") as f:
                    f.write(json.dumps(looping_records(11)[-1]) + "\n")
                appended.append(True)
            return super().flags(trace, response)

    with pytest.raises(RuntimeError, match="changed while it was being re-flagged"):
        reflag_component(d, work, WriterMeanwhile(loops={}), {"looping_trace": "drop"})
    assert shard.read_bytes().startswith(before) and not (work / "backup").exists()
    assert not list(d.glob(".*reflag-tmp"))


# ----------------------------------------------------------------------------------------------------
# configuration, checked before anything runs


GEN = "synth.steps=[prompts,generate]"


@pytest.mark.parametrize("override, message", [
    (f"{GEN} synth.loops.tolerance=0.7", "synth.loops: tolerance=0.7"),
    (f"{GEN} synth.loops.min_repeats=1", "synth.loops: min_repeats=1"),
    (f"{GEN} +synth.loops.tolerence=0.3", "did you mean 'tolerance'"),
    (f"{GEN} synth.loops.enabled=maybe", "synth.loops"),
    (f"{GEN} synth.max_trace_tokens=0", "synth.max_trace_tokens=0"),
    (f"{GEN} synth.flag_policy.looping_trace=discard", "each flag's policy is one of ('drop', 'keep')"),
    (f"{GEN} +synth.flag_policy.loping_trace=drop", "did you mean 'looping_trace'"),
    (f"{GEN} synth.max_trace_tokens=4096", "counts student tokens: set model.tokenizer"),
    ("synth.steps=[reflag] synth.num_shards=2", "once all shards are done"),
    ("synth.steps=[reflag] synth.loops.enabled=false", "nothing to check"),
])
def test_bad_check_settings_are_errors_before_anything_runs(tmp_path, override, message):
    prompts = write_prompts(tmp_path / "p.jsonl", 4, {})
    base = [a for a in args(prompts, "http://127.0.0.1:9/v1") if a != "model=tiny_qwen3"]  # no student model
    cfg = compose_cfg(tmp_path, *base, *override.split())
    with pytest.raises(ValueError) as e:
        pipeline.run(cfg)
    assert message in str(e.value), str(e.value)
    assert not (tmp_path / "data").exists()
