"""The synth stage on CPU: hub loaders on local files in the hub schema, translation, faults, resume.

Teachers here are ``tests/fault_server.py`` (a fixed-latency OpenAI-compatible HTTP server with
fault injection); the real ``transformers serve`` end-to-end test is in test_synth_server.py.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_dir

from core import jsonl
from core.triple import Triple
from synth import pipeline, sources
from synth.client import ChatClient, FatalEndpointError
from fault_server import FaultServer
from synth.translate import TranslationCache, Translator, protect, restore

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
FAST_RETRY = ["synth.retries.initial=0.01", "synth.retries.max=0.05", "synth.retries.jitter=0.01",
              "synth.retries.cooldown=0.05"]


def compose_cfg(root: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("synth", overrides=[f"paths.root={root}",
                                           "synth.progress=false", *overrides])


# ----------------------------------------------------------------------------------------------------
# local files in the hub schemas


NPT_README = """---
configs:
- config_name: default
  data_files:
  - split: chat
    path: data/chat-*
  - split: code
    path: data/code-*
  - split: math
    path: data/math-*
  - split: stem
    path: data/stem-*
---
# NPT-shaped local fixture
"""


def npt_row(split: str, i: int, generator: str = "DeepSeek-R1-0528", answer: str | None = None) -> dict:
    q = f"[{split} {i}] Solve problem number {i} of the {split} split."
    answer = answer if answer is not None else f"<think>\nReasoning about {split} {i}.\n</think>\n\nAnswer {i}."
    return {"uuid": f"{split}-{i}", "license": "CC BY 4.0", "generator": generator, "version": "v1",
            "category": split, "reasoning": "on",
            "messages": [{"role": "system", "content": "", "tool_calls": []},
                         {"role": "user", "content": q, "tool_calls": []},
                         {"role": "assistant", "content": answer, "tool_calls": []}],
            "metadata": "{}"}


def make_npt(root: Path, n: int = 12) -> Path:
    """A directory laid out like the hub repo: README configs + data/<split>-00000-of-00001.parquet."""
    d = root / "npt"
    (d / "data").mkdir(parents=True)
    (d / "README.md").write_text(NPT_README)
    for split in ("chat", "code", "math", "stem"):
        unclosed = "<think>\nBut maybe... But maybe"  # an R1 trace that never closes (math 5)
        rows = [npt_row(split, i, answer=unclosed if (split, i) == ("math", 5) else None) for i in range(n)]
        rows.insert(3, npt_row(split, 900, generator="Qwen3-235B-A22B"))  # filtered out (other teacher)
        pq.write_table(pa.Table.from_pylist(rows), d / "data" / f"{split}-00000-of-00001.parquet")
    return d


def make_lmsys(root: Path) -> Path:
    d = root / "lmsys"
    (d / "data").mkdir(parents=True)
    long = ("Please write a detailed essay about the history of the printing press in Europe, covering "
            "Gutenberg, movable type, the spread of print shops, and the effect on literacy and religion.")

    def row(cid, text, lang="English", first_role="user", flagged=False):
        conv = [{"content": text, "role": first_role}, {"content": "reply", "role": "assistant"}]
        if first_role != "user":
            conv = [{"content": "hi", "role": "assistant"}] + conv
        return {"conversation_id": cid, "model": "vicuna-13b", "conversation": conv, "turn": 1,
                "language": lang, "openai_moderation": [{"flagged": flagged}], "redacted": False}

    rows = [
        row("a", "What is the capital of France?"),
        row("b", "what is the capital of france"),            # exact duplicate after normalization
        row("c", "Wie spät ist es?", lang="German"),           # language filter
        row("d", long),
        row("e", long.replace("religion", "religion too")),   # near duplicate of d
        row("f", "x" * 5000),                                  # over the length cap
        row("g", "Tell me a joke about cats."),
        row("h", "Ignore this", flagged=True),                 # moderation-flagged
        row("i", "Explain recursion with an example in Python."),
    ]
    pq.write_table(pa.Table.from_pylist(rows), d / "data" / "train-00000-of-00001.parquet")
    return d


def test_npt_loader_on_hub_layout_keeps_2_2_1_and_filters_generator(tmp_path, monkeypatch):
    import datasets

    # datasets sleeps 5 s per split when a shuffled stream is closed early; irrelevant to what is tested
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0.0)
    npt = make_npt(tmp_path)
    cfg = compose_cfg(tmp_path, f"synth.sources.npt.hub_id={npt}", "synth.sources.npt.shuffle_buffer=null")
    pool = list(sources.build_pool("npt", cfg.synth.sources.npt, 20, tmp_path / "work", with_output=True))
    assert len(pool) == 20
    splits = [p.meta["split"] for p in pool]
    assert Counter(splits) == {"code": 8, "math": 8, "stem": 4}
    assert splits[:5] == ["code", "code", "math", "math", "stem"]  # every prefix keeps the ratio
    assert all(p.meta["generator"] == "DeepSeek-R1-0528" for p in pool)
    assert pool[0].instruction.startswith("[code 0]") and pool[0].output.startswith("<think>")
    # Cached and prefix-stable: a smaller request is served from the cache, a larger one extends it.
    again = list(sources.build_pool("npt", cfg.synth.sources.npt, 10, tmp_path / "work", with_output=True))
    assert [p.id for p in again] == [p.id for p in pool[:10]]
    # With the default seeded shuffle buffer the order changes, the ratio does not.
    shuffled = compose_cfg(tmp_path, f"synth.sources.npt.hub_id={npt}", "synth.sources.npt.shuffle_buffer=64").synth.sources.npt
    mixed = list(sources.build_pool("npt", shuffled, 20, tmp_path / "work"))
    assert Counter(p.meta["split"] for p in mixed) == {"code": 8, "math": 8, "stem": 4}
    assert [p.id for p in mixed] != [p.id for p in pool] and mixed[0].output is None


def test_lmsys_loader_first_turn_language_dedup_near_dup_length(tmp_path):
    lm = make_lmsys(tmp_path)
    cfg = compose_cfg(tmp_path, f"synth.sources.lmsys.hub_id={lm}", "synth.sources.lmsys.shuffle_buffer=null")
    got = list(sources.load_source("lmsys", cfg.synth.sources.lmsys))
    assert [p.id for p in got] == ["lmsys:a", "lmsys:d", "lmsys:g", "lmsys:i"]
    assert got[0].instruction == "What is the capital of France?"


def test_local_jsonl_and_parquet_sources(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"id": 1, "instruction": "one"}\n{"messages": [{"role": "user", "content": "two"}]}\n')
    got = list(sources.load_source("mine", {"type": "local", "path": str(tmp_path / "p.jsonl")}))
    assert [p.instruction for p in got] == ["one", "two"] and got[0].id == "mine:1"
    pq.write_table(pa.Table.from_pylist([{"instruction": "three"}]), tmp_path / "p.parquet")
    assert [p.instruction for p in sources.load_source("pq", {"type": "local", "path": str(tmp_path / "p.parquet")})] == ["three"]


# ----------------------------------------------------------------------------------------------------
# counts, plans, dry run


def test_component_counts_follow_table1_and_overrides(tmp_path):
    cfg = compose_cfg(tmp_path, "experiment=stem_r1_en_oss_ja__chat_oss_en_ja")
    assert pipeline.component_counts(cfg) == {"stem_r1_en": 250000, "stem_oss_ja": 250000,
                                              "chat_oss_en": 50000, "chat_oss_ja": 50000}
    plans = {p.name: p for p in pipeline.make_plans(cfg)}
    assert plans["stem_r1_en"].mode == "source" and plans["stem_oss_ja"].translate
    cfg = compose_cfg(tmp_path, "experiment=stem_r1_en_oss_ja__chat_oss_en_ja", "synth.limit=100",
                      "synth.counts={chat_oss_en: 7}", "synth.num_shards=3", "synth.shard_index=2")
    plans = {p.name: p for p in pipeline.make_plans(cfg)}
    assert plans["chat_oss_en"].count == 7 and plans["stem_r1_en"].count == 100
    assert plans["chat_oss_en"].target == 2 and plans["stem_r1_en"].target == 33
    assert sum(pipeline.shard_share(100, i, 3) for i in range(3)) == 100
    # The demo composes (its plain trainer block and model override included); a component whose data
    # ships as a fixture needs nothing.
    demo = pipeline.make_plans(compose_cfg(tmp_path, "experiment=demo"))
    assert demo and all((p.mode == "fixture") == (p.data["prompt_source"] == "fixture") for p in demo)
    fixture = compose_cfg(tmp_path, "experiment=demo", "data.stem_demo_en.prompt_source=fixture",
                          "data.stem_demo_en.teacher=fixture")
    assert {p.name: p.mode for p in pipeline.make_plans(fixture)}["stem_demo_en"] == "fixture"


def test_dry_run_summarizes_without_touching_sources(tmp_path, capsys):
    cfg = compose_cfg(tmp_path, "experiment=stem_r1_en__chat_oss_ja_notrace", "synth.dry_run=true")
    out = pipeline.run(cfg)
    comps = out["components"]
    assert comps["stem_r1_en"]["mode"] == "source" and comps["stem_r1_en"]["count"] == 500000
    assert comps["chat_oss_ja_notrace"]["remaining_max"] == 100000 and comps["chat_oss_ja_notrace"]["translate"]
    assert json.loads(capsys.readouterr().out)["components"].keys() == comps.keys()
    assert not (tmp_path / "data").exists()


def test_stats_without_a_base_model_or_with_the_wrong_teacher_fail_before_generating(tmp_path):
    cfg = compose_cfg(tmp_path, "experiment=stem_oss_en", "synth.limit=3")  # model.name_or_path is ???
    with pytest.raises(ValueError, match="model.name_or_path"):
        pipeline.run(cfg)
    cfg = compose_cfg(tmp_path, "experiment=stem_oss_en", "synth.limit=3", "teacher=deepseek_r1_0528",
                      "synth.steps=[prompts,generate]")
    with pytest.raises(ValueError, match="teacher=.DeepSeek-R1-0528. is selected"):
        pipeline.run(cfg)
    assert not (tmp_path / "data").exists()


# ----------------------------------------------------------------------------------------------------
# R1 component: NPT's own messages, split by core.think


def test_r1_component_splits_npt_messages_and_replaces_flagged(tmp_path):
    npt = make_npt(tmp_path)
    cfg = compose_cfg(tmp_path, "experiment=stem_r1_en", f"synth.sources.npt.hub_id={npt}",
                      "synth.sources.npt.shuffle_buffer=null", "synth.limit=14", "synth.steps=[prompts,generate]")
    out = pipeline.run(cfg)
    c = out["generate"]["stem_r1_en"]
    # math 5 is the 14th prompt (2:2:1 order); its unclosed trace is excluded and prompt 15 takes its place
    assert (c["kept"], c["rejected"], c["flags"]) == (14, 1, {"unclosed_think": 1, "empty_response": 1})
    recs = list(jsonl.read_dir(Path(cfg.data.stem_r1_en.path)))
    assert len(recs) == 14 and len({r["id"] for r in recs}) == 14
    t = Triple.from_dict(next(r for r in recs if r["source"] == "npt:code:code-0"))
    assert t.teacher == "DeepSeek-R1-0528" and t.trace == "Reasoning about code 0." and t.response == "Answer 0."
    assert "math:5" not in " ".join(r["source"] for r in recs)  # the unclosed one went to rejected/


# ----------------------------------------------------------------------------------------------------
# translation


def test_protect_restore_keeps_code_and_latex_verbatim():
    text = ("Compute $\\int_0^1 x^2\\,dx$ and explain `np.sum` below. It costs $5 and $6 today.\n"
            "```python\nimport numpy as np\nprint(np.sum([1, 2]))  # sum\n```\n"
            "Then show $$\\sum_{k=1}^{n} k = \\frac{n(n+1)}{2}$$ and \\(a^2+b^2=c^2\\) and\n"
            "\\begin{align}\nx &= 1 \\\\\ny &= 2\n\\end{align}\nand \\[E=mc^2\\]. Literal [[P0]] stays too.")
    masked, spans = protect(text)
    for s in ["$\\int_0^1 x^2\\,dx$", "`np.sum`", "```python\nimport numpy as np\nprint(np.sum([1, 2]))  # sum\n```",
              "$$\\sum_{k=1}^{n} k = \\frac{n(n+1)}{2}$$", "\\(a^2+b^2=c^2\\)",
              "\\begin{align}\nx &= 1 \\\\\ny &= 2\n\\end{align}", "\\[E=mc^2\\]", "[[P0]]"]:
        assert s in spans, s
    assert "$5 and $6" in masked  # prices are not math
    assert "numpy" not in masked and "frac" not in masked
    assert restore(masked, spans) == text
    with pytest.raises(ValueError, match="missing"):
        restore(masked.replace("[[P1]]", ""), spans)


def test_requests_in_flight_are_bounded_and_a_prompt_in_backoff_holds_no_slot():
    """``max_inflight=1``: A is refused (503), then waits 1 s before its retry; B asks meanwhile, in A's slot."""
    import asyncio

    async def go(fs):
        client = ChatClient({"name": "t", "model": "m", "endpoints": [fs.url]}, max_inflight=1,
                            retries={"max_attempts": 3, "initial": 1.0, "max": 1.0, "jitter": 0.0})
        peak, finished, t0 = 0, {}, time.monotonic()

        async def watch():
            nonlocal peak
            while True:
                peak = max(peak, fs.inflight)
                await asyncio.sleep(0.005)

        async def ask(q):
            await client.chat(q)
            finished[q[0]] = time.monotonic() - t0

        watcher = asyncio.create_task(watch())
        try:
            await asyncio.gather(ask("A [[fault:503]]"), ask("B"))
        finally:
            watcher.cancel()
            await client.aclose()
        return peak, finished

    with FaultServer(latency=0.2) as fs:
        peak, finished = asyncio.run(go(fs))
    assert peak == 1 and fs.requests == 3
    # B took the slot while A waited out its backoff (0.2 + 0.2 s); A retried after 1 s (0.2 + 1 + 0.2 s)
    assert finished["B"] < 0.9 < 1.3 < finished["A"], finished


def test_translator_preserves_spans_retries_lost_placeholders_and_caches(tmp_path):
    text = "Explain `x = y + 1` and prove $a+b=b+a$:\n```\nassert 1 + 1 == 2\n```"
    bad = "Fix this `bug()` please [[fault:dropph]]"  # the fake translator drops a placeholder on try 1

    async def go(cache):
        client = ChatClient({"name": "t", "model": "m", "endpoints": [fs.url]},
                            retries={"max_attempts": 2, "initial": 0.01, "max": 0.02})
        try:
            return await Translator(client, cache).translate_all([text, bad, text])
        finally:
            await client.aclose()

    import asyncio

    with FaultServer(translate=True) as fs:
        counts = asyncio.run(go(TranslationCache(tmp_path / "tr")))
        # the duplicate text was translated once (or found in the cache when its twin had finished)
        assert counts["translated"] + counts["cached"] == 3 and counts["failed"] == 0
        n = fs.requests
        assert n == 3  # text, bad (twice: its first translation lost a placeholder)
        cache = TranslationCache(tmp_path / "tr")
        res = [cache.get(t) for t in (text, bad)]
        assert all(r.ok for r in res)
        ja = res[0].ja
        assert ja.startswith("【訳】") and "Explain" not in ja
        for span in ("`x = y + 1`", "$a+b=b+a$", "```\nassert 1 + 1 == 2\n```"):
            assert span in ja
        assert res[1].attempts == 2 and "`bug()`" in res[1].ja
        again = asyncio.run(go(cache))  # resumed from the cache: no request
        assert fs.requests == n and again == {"translated": 0, "failed": 0, "cached": 3}


# ----------------------------------------------------------------------------------------------------
# faults, resume, shards


FAULTS = {1: "[[fault:429,500]]", 2: "[[fault:garbled]]", 3: "[[fault:drop]]", 4: "[[fault:timeout]]",
          5: "[[out:truncated]]", 6: "[[out:empty]]", 7: "[[out:notrace]]", 8: "[[out:400]]",
          9: "[[fault:503,429,drop]]"}


def write_prompts(path: Path, n: int, faults: dict[int, str] | None = None) -> Path:
    faults = faults or {}
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": i, "instruction": f"Prompt {i}: what is {i} times {i}? {faults.get(i, '')}".strip()}) + "\n")
    return path


def chat_cfg(root: Path, prompts: Path, url: str, *extra: str):
    return compose_cfg(root, "experiment=chat_oss_en_ja", "synth.components=[chat_oss_en]", "~synth.sources.lmsys",
                       f"+synth.sources.lmsys={{type: local, path: '{prompts}'}}",
                       f"teacher.endpoints=[{url}]", *FAST_RETRY, *extra)


@pytest.mark.parametrize("reasoning", ["field", "reasoning", "inline"])
def test_injected_faults_every_record_done_or_flagged_counts_exact(tmp_path, reasoning):
    prompts = write_prompts(tmp_path / "p.jsonl", 30, FAULTS)
    with FaultServer(latency=0.005, hang=3.0, reasoning=reasoning) as fs:
        cfg = chat_cfg(tmp_path, prompts, fs.url, "synth.limit=20", "teacher.timeout=0.5",
                       "synth.prompt_margin=0", "synth.prompt_extra=10", "synth.steps=[prompts,generate]")
        c = pipeline.run(cfg)["generate"]["chat_oss_en"]
    # 30 prompts, 20 wanted: 4 flagged (5 truncated, 6 empty, 7 notrace, 8 refused) are excluded and
    # replaced by the next 4 prompts; all transport faults were retried to success.
    expected_flags = {"truncated": 1, "empty_response": 2, "missing_trace": 1, "malformed": 1}
    if reasoning == "inline":  # a truncated inline trace is also an unclosed think block
        expected_flags["unclosed_think"] = 1
    assert (c["kept"], c["rejected"], c["flagged"], c["failed"], c["skipped"]) == (20, 4, 4, 0, 0)
    assert c["flags"] == expected_flags
    kept = [Triple.from_dict(r) for r in jsonl.read_dir(Path(cfg.data.chat_oss_en.path))]
    rejected = list(jsonl.read_dir(Path(cfg.synth.work_dir) / "chat_oss_en" / "rejected"))
    assert sorted(int(t.source.split(":")[1]) for t in kept) == [i for i in range(24) if i not in (5, 6, 7, 8)]
    assert sorted(int(r["source"].split(":")[1]) for r in rejected) == [5, 6, 7, 8]
    assert all(t.trace and t.trace.startswith("Let me think") and t.response.endswith("42.") for t in kept)
    assert all(t.reasoning_effort == "medium" and "(effort medium)" in t.trace for t in kept)
    assert fs.outcomes["429"] == 2 and fs.outcomes["timeout"] == 1 and fs.outcomes["drop"] == 2
    cfg.synth.dry_run = True
    row = pipeline.run(cfg)["components"]["chat_oss_en"]
    assert (row["already_kept_shard"], row["remaining_max"]) == (20, 0)


def test_flag_policy_keep_keeps_flagged_records_with_their_flags(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", 6, {1: "[[out:truncated]]"})
    with FaultServer() as fs:
        cfg = chat_cfg(tmp_path, prompts, fs.url, "synth.limit=4", "synth.steps=[prompts,generate]",
                       "synth.flag_policy.truncated=keep", "synth.flag_policy.empty_response=keep")
        c = pipeline.run(cfg)["generate"]["chat_oss_en"]
    assert (c["kept"], c["rejected"], c["flagged"]) == (4, 0, 1)
    recs = {r["source"]: r for r in jsonl.read_dir(Path(cfg.data.chat_oss_en.path))}
    assert recs["lmsys:1"]["flags"] == ["truncated", "empty_response"]


def test_401_fails_fast_without_retry_and_never_prints_the_key(tmp_path, monkeypatch):
    secret = "sk-test-THIS-MUST-NOT-LEAK-1234"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    prompts = write_prompts(tmp_path / "p.jsonl", 5)
    with FaultServer(api_key="the-right-key") as fs:
        cfg = chat_cfg(tmp_path, prompts, fs.url, "synth.limit=5", "synth.concurrency=1",
                       "synth.steps=[prompts,generate]")
        with pytest.raises(FatalEndpointError, match="401") as e:
            pipeline.run(cfg)
    # refused at the pre-flight GET /models, before any prompt was sent
    assert fs.outcomes["401"] == 1 and fs.requests == 0
    assert secret not in str(e.value) and "Incorrect API key" in str(e.value) and "$OPENAI_API_KEY" in str(e.value)


def test_endpoints_are_balanced(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", 40)
    with FaultServer(latency=0.02) as a, FaultServer(latency=0.02) as b:
        cfg = chat_cfg(tmp_path, prompts, a.url, f"teacher.endpoints=[{a.url},{b.url}]", "synth.limit=32",
                       "synth.concurrency=8", "synth.steps=[prompts,generate]")
        c = pipeline.run(cfg)["generate"]["chat_oss_en"]
    assert c["kept"] == 32 and a.requests + b.requests == 32 and abs(a.requests - b.requests) <= 4


def test_sigkill_mid_run_then_rerun_equals_clean_run(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", 60, {7: "[[out:empty]]", 33: "[[out:truncated]]"})
    n = 40
    with FaultServer(latency=0.08) as fs:
        args = ["experiment=chat_oss_en_ja", "synth.components=[chat_oss_en]", "~synth.sources.lmsys", f"+synth.sources.lmsys={{type: local, path: '{prompts}'}}",
                f"teacher.endpoints=[{fs.url}]", f"synth.limit={n}", "synth.concurrency=4",
                "synth.steps=[prompts,generate]", "synth.progress=false", *FAST_RETRY]
        killed = tmp_path / "killed"
        env = {**os.environ, "JAEN_DISTILL_ROOT": str(killed)}
        proc = subprocess.Popen([sys.executable, "-m", "synth", *args], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        shard = killed / "data" / "triples" / "chat_oss_en" / "part-00000-of-00001.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not shard.exists() or shard.read_bytes().count(b"\n") < 12):
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        written = shard.read_bytes().count(b"\n")
        assert 12 <= written < n, proc.stderr.read().decode()[-2000:]
        with open(shard, "ab") as f:  # a write torn by the kill
            f.write(b'{"id": "torn-rec')
        cfg_resume = compose_cfg(killed, *args[:1], *args[1:])
        pipeline.run(cfg_resume)
        cfg_clean = compose_cfg(tmp_path / "clean", *args)
        pipeline.run(cfg_clean)
    resumed = [r["id"] for r in jsonl.read(shard)]
    clean = [r["id"] for r in jsonl.read_dir(Path(cfg_clean.data.chat_oss_en.path))]
    assert len(resumed) == len(set(resumed)) == n
    assert set(resumed) == set(clean)
    assert b"torn-rec" not in shard.read_bytes()


def test_shards_then_merge_equal_single_run_without_duplicates(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", 40, {3: "[[out:empty]]"})
    with FaultServer() as fs:
        common = ("synth.limit=21", "synth.steps=[prompts,generate]")
        for i in range(3):
            pipeline.run(chat_cfg(tmp_path / "sharded", prompts, fs.url, *common, "synth.num_shards=3",
                                  f"synth.shard_index={i}"))
        single = chat_cfg(tmp_path / "single", prompts, fs.url, *common)
        pipeline.run(single)
    out = Path(tmp_path / "sharded" / "data" / "triples" / "chat_oss_en")
    assert len(jsonl.shards(out)) == 3
    # a duplicated shard (a job rerun somewhere else) is folded in and de-duplicated
    extra = tmp_path / "elsewhere"
    extra.mkdir()
    (extra / "copy.jsonl").write_bytes((out / "part-00001-of-00003.jsonl").read_bytes())
    merged_cfg = chat_cfg(tmp_path / "sharded", prompts, fs.url, "synth.limit=21", "synth.steps=[merge]",
                          f"synth.merge_from=[{extra}]")
    res = pipeline.run(merged_cfg)["merge"]["chat_oss_en"]
    assert res["records"] == 21 and res["duplicates"] == 7
    assert [p.name for p in jsonl.shards(out)] == ["merged-00000.jsonl"]
    ids = [r["id"] for r in jsonl.read_dir(out)]
    assert len(ids) == len(set(ids)) == 21
    assert set(ids) == {r["id"] for r in jsonl.read_dir(Path(single.data.chat_oss_en.path))}


# ----------------------------------------------------------------------------------------------------
# Table 1 statistics


def test_stats_count_mean_tokens_ppl_with_tiny_model(tmp_path, tiny_student):
    prompts = write_prompts(tmp_path / "p.jsonl", 8, {2: "[[out:truncated]]"})
    with FaultServer() as fs:
        cfg = chat_cfg(tmp_path, prompts, fs.url, "synth.limit=5", "model=tiny_qwen3",
                       "synth.steps=[prompts,generate,stats]", "synth.stats.batch_tokens=256")
        out = pipeline.run(cfg)
    st = json.loads((Path(cfg.data.chat_oss_en.path) / "stats.json").read_text())
    assert st == out["stats"]["chat_oss_en"]
    for k in ("component", "count", "mean_tokens", "ppl", "tokenizer", "ppl_model", "flag_counts"):
        assert k in st
    assert st["count"] == 5 and st["flag_counts"] == {"truncated": 1, "empty_response": 1}
    assert st["mean_tokens"] > 10 and 1 < st["ppl"] < 1e7 and st["ppl_records"] == 5
    assert st["tokenizer"] == "tiny-qwen3" and st["paper_id"] == 8 and st["experiment"] == "chat_oss_en_ja"


def test_stats_batched_equals_unbatched(tmp_path, tiny_student):
    from synth import stats as st

    tok = st.load_tokenizer("tiny-qwen3")
    model, _ = st.load_model("tiny-qwen3", "cpu")
    recs = [{"instruction": f"q{i}", "trace": "t " * (i + 1), "response": "r " * (3 * i + 1)} for i in range(6)]
    one = st.perplexity(model, tok, recs, batch_tokens=1)
    many = st.perplexity(model, tok, recs, batch_tokens=10_000)
    assert one["ppl_tokens"] == many["ppl_tokens"]
    assert abs(one["ppl"] - many["ppl"]) / one["ppl"] < 1e-4
