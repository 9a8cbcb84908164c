"""The synth stage against failing teachers, as a user runs it: ``python -m synth`` in a subprocess.

Teachers are ``tests/fault_server.py`` endpoints that require an API key and inject 429/500/timeouts/
garbled bodies/dropped connections (transient: retried) and truncated/unclosed/empty answers (permanent:
flagged). Issue 11's "Done when": every prompt exactly once after a SIGKILL and a rerun, flag counts equal
to what the servers injected, the key in no file, fail-fast (< 30 s) on a dead endpoint and a wrong key.
The 1 s latency throughput figure is bench/bench_synth.py's (bench/results/synth.md); here the latency is
short to keep the test quick.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from core import jsonl
from fault_server import FaultServer
from synth import pipeline
from synth.client import FatalEndpointError

REPO = Path(__file__).resolve().parents[1]
SECRET = "sk-fault-run-MUST-NOT-LEAK-5f1e2d"
FAST_RETRY = ["synth.retries.initial=0.01", "synth.retries.max=0.05", "synth.retries.jitter=0.01",
              "synth.retries.cooldown=0.05"]
# the permanent faults and the flags each one must raise (a truncated or unclosed answer has no response)
FLAGS = {"truncated": {"truncated", "empty_response"}, "unclosed": {"unclosed_think", "empty_response"},
         "empty": {"empty_response"}}


def dead_url() -> str:
    """A local port nobody listens on (bound, then closed): connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def write_prompts(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": i, "instruction": f"Question {i}: what is {i} plus {i}?"}) + "\n"
                            for i in range(n)))
    return path


def stage_args(prompts: Path, endpoints: list[str], *extra: str) -> list[str]:
    return ["experiment=chat_oss_en_ja", "synth.components=[chat_oss_en]", "~synth.sources.lmsys",
            f"+synth.sources.lmsys={{type: local, path: '{prompts}'}}", f"teacher.endpoints=[{','.join(endpoints)}]",
            "synth.steps=[prompts,generate]", "synth.progress=false", *extra]


def start_stage(root: Path, args: list[str], key: str | None = SECRET) -> subprocess.Popen:
    env = {**os.environ, "JAEN_DISTILL_ROOT": str(root), "PYTHONPATH": str(REPO)}
    env.pop("OPENAI_API_KEY", None)
    if key is not None:
        env["OPENAI_API_KEY"] = key
    return subprocess.Popen([sys.executable, "-m", "synth", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def files_containing(root: Path, needle: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


@pytest.mark.slow
def test_fault_run_sigkill_rerun_every_prompt_once_flags_exact_key_never_written(tmp_path):
    n = 256
    prompts = write_prompts(tmp_path / "prompts.jsonl", n)
    rates = dict(transient={"429": 0.05, "500": 0.05, "timeout": 0.02, "garbled": 0.04, "drop": 0.03},
                 permanent={"truncated": 0.04, "unclosed": 0.04, "empty": 0.04})
    root = tmp_path / "root"
    with FaultServer(latency=0.2, hang=5, api_key=SECRET, **rates) as a, \
            FaultServer(latency=0.2, hang=5, api_key=SECRET, **rates) as b:
        instructions = [json.loads(line)["instruction"] for line in prompts.read_text().splitlines()]
        planned = {q: a.permanent_fault(q) for q in instructions}
        bad = sum(k is not None for k in planned.values())
        assert 10 < bad < 60  # the rates give a real mix
        # exactly the 256 prompts are needed: every good one kept, every bad one rejected
        args = stage_args(prompts, [a.url, b.url, dead_url()], f"synth.limit={n - bad}", "synth.prompt_margin=0",
                          f"synth.prompt_extra={bad}", "synth.concurrency=16", "teacher.timeout=1",
                          "synth.retries.initial=0.05", "synth.retries.max=0.2", "synth.retries.jitter=0.05",
                          "synth.retries.cooldown=0.2", "synth.endpoint_down_after=1")
        shard = root / "data" / "triples" / "chat_oss_en" / "part-00000-of-00001.jsonl"
        first = start_stage(root, args)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and first.poll() is None and \
                (not shard.exists() or shard.read_bytes().count(b"\n") < 40):
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        out1, err1 = first.communicate()
        written = shard.read_bytes().count(b"\n")
        assert 40 <= written < n - bad, err1[-3000:]
        second = start_stage(root, args)
        out2, err2 = second.communicate(timeout=120)
        assert second.returncode == 0, err2[-3000:]
        injected = {**a.injected, **b.injected}
        outcomes = a.outcomes + b.outcomes
    kept = list(jsonl.read_dir(shard.parent))
    rejected = list(jsonl.read_dir(root / "data" / "triples" / "_synth" / "chat_oss_en" / "rejected"))
    records = kept + rejected
    # every prompt exactly once, across kept and rejected
    assert len(records) == n and len({r["id"] for r in records}) == n
    assert sorted(r["instruction"] for r in records) == sorted(instructions)
    # flags: exactly what the servers injected, on exactly those prompts
    assert injected == {q: k for q, k in planned.items() if k is not None}
    assert all(set(r["flags"]) == FLAGS[injected[r["instruction"]]] for r in rejected)
    assert Counter(f for r in records for f in r["flags"]) == Counter(f for k in injected.values() for f in FLAGS[k])
    assert all(not r["flags"] and r["trace"] and r["response"].endswith("42.") for r in kept)
    assert len(kept) == n - bad
    # every transient fault was injected at least once and retried to success
    assert all(outcomes[k] > 0 for k in rates["transient"]), outcomes
    # the dead endpoint was taken out, the two live ones did the work
    summary = json.loads((root / "data" / "triples" / "_synth" / "chat_oss_en" /
                          "run-part-00000-of-00001.json").read_text())
    assert [e["out"] for e in summary["endpoints"]] == [False, False, True]
    # the key: sent (no 401) and never written anywhere, nor printed
    assert outcomes["401"] == 0
    assert files_containing(tmp_path, SECRET) == []
    assert SECRET not in out1 + err1 + out2 + err2


@pytest.mark.slow
def test_dead_endpoint_and_wrong_key_fail_fast_naming_url_and_error(tmp_path):
    prompts = write_prompts(tmp_path / "prompts.jsonl", 200)
    dead = dead_url()
    with FaultServer(latency=0.05, api_key=SECRET) as fs:
        # default retries (1 s backoff doubling to 120 s): the breaker, not the retry budget, stops the run
        t0 = time.monotonic()
        runs = {"dead": start_stage(tmp_path / "dead", stage_args(prompts, [dead], "synth.limit=100")),
                "wrong_key": start_stage(tmp_path / "key", stage_args(prompts, [fs.url], "synth.limit=100"),
                                         key="sk-wrong-key-0000")}
        results = {}
        for name, proc in runs.items():
            out, err = proc.communicate(timeout=60)
            results[name] = (proc.returncode, time.monotonic() - t0, err)
    rc, seconds, err = results["dead"]
    assert rc != 0 and seconds < 30, (seconds, err[-2000:])
    assert dead in err and "can be reached" in err and "ConnectError" in err, err[-2000:]
    rc, seconds, err = results["wrong_key"]
    assert rc != 0 and seconds < 30, (seconds, err[-2000:])
    assert fs.url in err and "401" in err and "OPENAI_API_KEY" in err, err[-2000:]
    assert "sk-wrong-key-0000" not in err and fs.outcomes["401"] <= 16  # stopped at the first answers


# ----------------------------------------------------------------------------------------------------
# the same rules in-process (fast): breaker, consecutive failures, shortfall reasons


def compose_cfg(root: Path, prompts: Path, endpoints: list[str], *extra: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("synth", overrides=[f"paths.root={root}", *stage_args(prompts, endpoints), *FAST_RETRY,
                                           *extra])


def test_the_api_key_is_sent_and_written_nowhere(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    prompts = write_prompts(tmp_path / "p.jsonl", 8)
    with FaultServer(api_key=SECRET) as fs:
        out = pipeline.run(compose_cfg(tmp_path, prompts, [fs.url], "synth.limit=5"))["generate"]["chat_oss_en"]
    assert out["kept"] == 5 and fs.outcomes["401"] == 0 and fs.outcomes["ok"] == 5
    assert files_containing(tmp_path, SECRET) == []


def test_a_dead_endpoint_is_taken_out_and_the_live_one_finishes(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", 40)
    dead = dead_url()
    with FaultServer(latency=0.02) as fs:
        cfg = compose_cfg(tmp_path, prompts, [dead, fs.url], "synth.limit=30", "synth.concurrency=8",
                          "synth.endpoint_down_after=0.05")
        out = pipeline.run(cfg)["generate"]["chat_oss_en"]
    assert out["kept"] == 30 and out["failed"] == 0
    assert [(e["base_url"], e["out"]) for e in out["endpoints"]] == [(dead, True), (fs.url, False)]


def test_no_reachable_endpoint_stops_before_any_prompt_is_read(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", 40)
    a, b = dead_url(), dead_url()
    with pytest.raises(FatalEndpointError) as e:
        pipeline.run(compose_cfg(tmp_path, prompts, [a, b], "synth.limit=30"))
    msg = str(e.value)
    assert "can be reached" in msg and a in msg and b in msg and "ConnectError" in msg
    assert not (tmp_path / "data").exists()


def test_a_server_dying_mid_run_is_taken_out_and_the_run_stops_keeping_what_it_made(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", 200)
    fs = FaultServer(latency=0.02).start()

    def kill_after(n: int) -> None:
        while fs.requests < n:
            time.sleep(0.005)
        fs.stop()

    killer = threading.Thread(target=kill_after, args=(20,))
    killer.start()
    cfg = compose_cfg(tmp_path, prompts, [fs.url], "synth.limit=150", "synth.concurrency=2",
                      "synth.endpoint_down_after=0.2", "synth.retries.max_attempts=100")
    t0 = time.monotonic()
    with pytest.raises(FatalEndpointError) as e:
        pipeline.run(cfg)
    killer.join()
    assert time.monotonic() - t0 < 15
    msg = str(e.value)
    assert "is out" in msg and fs.url in msg and "endpoint_down_after" in msg
    kept = list(jsonl.read_dir(tmp_path / "data" / "triples" / "chat_oss_en"))
    assert 15 <= len(kept) <= 22   # what was answered before the server died stays, for the rerun


def test_k_prompts_failing_in_a_row_stop_the_run(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "instruction": f"q{i} [[fault:{','.join(['500'] * 9)}]]"}) + "\n"
                               for i in range(40)))
    with FaultServer() as fs:
        cfg = compose_cfg(tmp_path, prompts, [fs.url], "synth.limit=30", "synth.concurrency=2",
                          "synth.max_consecutive_failures=5")
        with pytest.raises(FatalEndpointError) as e:
            pipeline.run(cfg)
    msg = str(e.value)
    assert "prompts in a row got no answer" in msg and "HTTP 500" in msg and fs.url in msg
    assert "synth.max_consecutive_failures=5" in msg
    failed = list(jsonl.read_dir(tmp_path / "data" / "triples" / "_synth" / "chat_oss_en" / "failed"))
    assert len(failed) >= 5   # each failure was recorded before the stop
    assert fs.requests < 8 * 10  # stopped after a handful of prompts, not the whole pool


def test_shortfall_from_rejections_exits_nonzero_and_advises_the_margin(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "instruction": f"q{i}" + (" [[out:empty]]" if i % 2 else "")})
                               + "\n" for i in range(6)))
    with FaultServer() as fs:
        cfg = compose_cfg(tmp_path, prompts, [fs.url], "synth.limit=5", "synth.prompt_margin=0",
                          "synth.prompt_extra=1")
        with pytest.raises(pipeline.ShortfallError) as e:
            pipeline.run(cfg)
    msg = str(e.value)
    assert "chat_oss_en: kept 3 of 5" in msg and "3 rejected by the flag policy (empty_response: 3)" in msg
    assert "0 failed" in msg and "synth.prompt_margin" in msg and "flag_policy.empty_response=keep" in msg
    # the run summary was written before the error
    assert json.loads((tmp_path / "data" / "triples" / "_synth" / "chat_oss_en" /
                       "run-part-00000-of-00001.json").read_text())["kept"] == 3


def test_shortfall_from_failures_says_rerun_not_margin(tmp_path):
    prompts = tmp_path / "p.jsonl"
    fail = "[[fault:" + ",".join(["503"] * 9) + "]]"
    prompts.write_text("".join(json.dumps({"id": i, "instruction": f"q{i}" + (f" {fail}" if i in (1, 2) else "")})
                               + "\n" for i in range(6)))
    with FaultServer() as fs:
        cfg = compose_cfg(tmp_path, prompts, [fs.url], "synth.limit=4", "synth.prompt_margin=0",
                          "synth.prompt_extra=0")
        with pytest.raises(pipeline.ShortfallError) as e:
            pipeline.run(cfg)
    msg = str(e.value)
    assert "kept 2 of 4" in msg and "2 failed" in msg and "HTTP 503" in msg and "rerun" in msg
    assert "prompt_margin" not in msg
