"""core.serve against a real `transformers serve` process, and the synth stage end to end through it.

The server starts ONCE per test session (module-scoped fixture below) on the tiny student, so the whole
file costs one model load; requests use a handful of new tokens.
"""

import json

import openai
import pytest

from core.serve import ServerError, local_server


@pytest.fixture(scope="module")
def tiny_server(tiny_student, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with local_server(tiny_student, device="cpu", log_path=log, threads=1) as url:
        yield url
    # Stopped: nothing listens any more.
    import urllib.request

    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{url.port}/health", timeout=2)


def test_local_server_answers_chat_completions(tiny_server):
    assert tiny_server.startswith("http://127.0.0.1:") and tiny_server.endswith("/v1")
    client = openai.OpenAI(base_url=tiny_server, api_key="local")
    r = client.chat.completions.create(model=tiny_server.model, max_tokens=4, temperature=0,
                                       messages=[{"role": "user", "content": "What is 1+1?"}])
    assert r.choices[0].finish_reason in ("length", "stop")
    assert r.usage.completion_tokens <= 4 and r.usage.prompt_tokens > 0
    # The server is pinned to its one model: another name is a 400, not a silent substitution.
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="some/other-model", max_tokens=2,
                                       messages=[{"role": "user", "content": "x"}])
    assert tiny_server.log_path.exists()


def test_local_server_reports_death_with_log_tail(tiny_student, tmp_path):
    # A flag the CLI rejects: the process exits at once (without loading a model) and the error says why.
    with pytest.raises(ServerError, match="exited with code") as e:
        with local_server(tiny_student, device="cpu", log_path=tmp_path / "bad.log", startup_timeout=120,
                          extra_args=["--no-such-flag"]):
            pass
    assert "no-such-flag" in str(e.value) and str(tmp_path / "bad.log") in str(e.value)
    with pytest.raises(FileNotFoundError):
        with local_server(tmp_path / "missing"):
            pass


# ----------------------------------------------------------------------------------------------------
# the synth stage end to end through the real server


def test_synth_stage_end_to_end_against_transformers_serve(tiny_server, tmp_path):
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from core import jsonl
    from core.triple import Triple
    from synth import pipeline

    repo = Path(__file__).resolve().parents[1]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "instruction": f"Say hello number {i}."}) + "\n" for i in range(6)))
    with initialize_config_dir(config_dir=str(repo / "conf"), version_base="1.3"):
        cfg = compose("synth", overrides=[
            f"paths.root={tmp_path}", "synth.progress=false",
            "experiment=chat_oss_en_ja", "synth.components=[chat_oss_en]", "synth.limit=3",
            "~synth.sources.lmsys", f"+synth.sources.lmsys={{type: local, path: '{prompts}'}}",
            "teacher=local_demo", "teacher.serve=null", f"teacher.endpoints=[{tiny_server}]",
            f"teacher.model='{tiny_server.model}'", "teacher.elicit_trace=null", "teacher.expects_trace=false",
            "teacher.sampling.max_tokens=4", "synth.strict_teacher=false", "synth.concurrency=3",
            # a random 2-layer model never stops within 4 tokens: keep (and count) what it says
            "synth.flag_policy.truncated=keep", "synth.flag_policy.empty_response=keep",
            "model=tiny_qwen3", "synth.steps=[prompts,generate,stats]",
        ])
    out = pipeline.run(cfg)
    gen = out["generate"]["chat_oss_en"]
    assert gen["kept"] == 3 and gen["failed"] == 0
    recs = [Triple.from_dict(r) for r in jsonl.read_dir(Path(cfg.data.chat_oss_en.path))]
    assert len(recs) == 3 and {r.teacher for r in recs} == {"local-demo"}
    assert all(r.finish_reason == "length" and "truncated" in r.flags and r.usage["completion_tokens"] == 4
               for r in recs)
    assert {r.instruction for r in recs} == {f"Say hello number {i}." for i in range(3)}
    st = json.loads((Path(cfg.data.chat_oss_en.path) / "stats.json").read_text())
    assert st["count"] == 3 and st["flag_counts"]["truncated"] == 3 and st["mean_tokens"] is not None
    assert st["ppl_model"] == "tiny-qwen3" and st["tokenizer"] == "tiny-qwen3"


def test_teacher_serve_starts_and_stops_its_own_local_server(tmp_path):
    """``teacher.serve`` (conf/teacher/local_demo.yaml): the stage runs transformers serve itself."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from core import jsonl
    from synth import pipeline

    repo = Path(__file__).resolve().parents[1]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"instruction": f"Count to {i}."}) + "\n" for i in range(3)))
    with initialize_config_dir(config_dir=str(repo / "conf"), version_base="1.3"):
        cfg = compose("synth", overrides=[
            f"paths.root={tmp_path}", "synth.progress=false",
            "experiment=chat_oss_en_ja", "synth.components=[chat_oss_en]", "synth.limit=2",
            "~synth.sources.lmsys", f"+synth.sources.lmsys={{type: local, path: '{prompts}'}}",
            "teacher=local_demo", "teacher.serve.model=tiny-qwen3", "teacher.sampling.max_tokens=2",
            "synth.strict_teacher=false", "synth.flag_policy.truncated=keep", "synth.flag_policy.empty_response=keep",
            "synth.flag_policy.missing_trace=keep", "synth.steps=[prompts,generate]",
        ])
    out = pipeline.run(cfg)
    assert out["generate"]["chat_oss_en"]["kept"] == 2
    assert len(list(jsonl.read_dir(Path(cfg.data.chat_oss_en.path)))) == 2
    log = (Path(cfg.synth.work_dir) / "serve" / "part-00000-of-00001.log").read_text()
    assert "transformers serve" in log and "tiny-qwen3" in log
    # local_demo elicits the trace of a non-reasoning teacher: two requests per record.
    assert log.count("POST /v1/chat/completions") == 4, log[-2000:]
    # A rerun with nothing left to make starts no server (the demo's second run took 40 s more for it).
    log_file = Path(cfg.synth.work_dir) / "serve" / "part-00000-of-00001.log"
    log_file.unlink()
    again = pipeline.run(cfg)
    assert again["generate"]["chat_oss_en"]["kept"] == 0 and not log_file.exists()
