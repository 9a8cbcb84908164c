"""Synth's inputs checked before anything runs: component and teacher keys, the request timeout, the
prompt-pool cache against its source file, malformed prompt files, the stats step's model."""

import json
import os
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from core import jsonl
from fault_server import FaultServer
from synth import pipeline, sources

REPO = Path(__file__).resolve().parents[1]


def compose_cfg(root: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("synth", overrides=[f"paths.root={root}", "synth.progress=false", *overrides])


def local_chat(prompts: Path, url: str = "http://127.0.0.1:9/v1") -> list[str]:
    return ["experiment=chat_oss_en_ja", "synth.components=[chat_oss_en]", "~synth.sources.lmsys",
            f"+synth.sources.lmsys={{type: local, path: '{prompts}'}}", f"teacher.endpoints=[{url}]",
            "synth.steps=[prompts,generate]"]


# ----------------------------------------------------------------------------------------------------
# unknown keys


@pytest.mark.parametrize("override, where, key, valid", [
    ("+data.stem_oss_en.reasoning_efort=high", "data.stem_oss_en", "reasoning_efort", "reasoning_effort"),
    ("+teacher.timout=5", "teacher", "timout", "timeout"),
    ("+teacher.sampling.temprature=0.5", "teacher.sampling", "temprature", "temperature"),
    ("+teacher.serve.devise=cpu", "teacher.serve", "devise", "device"),
    # what an experiment file sets under synth: (the demo's once set the removed synth.timeout, ignored)
    ("+synth.timeout=300", "synth", "timeout", "concurrency"),
    ("+synth.retries.max_atempts=3", "synth.retries", "max_atempts", "max_attempts"),
])
def test_unknown_component_or_teacher_key_is_an_error_naming_it_before_anything_runs(tmp_path, override, where, key,
                                                                                     valid):
    cfg = compose_cfg(tmp_path, "experiment=stem_oss_en", "synth.limit=3", "synth.steps=[prompts,generate]",
                      "teacher=local_demo" if "serve" in override else "teacher=gpt_oss_120b_medium",
                      "synth.strict_teacher=false", override)
    with pytest.raises(ValueError) as e:
        pipeline.run(cfg)
    msg = str(e.value)
    assert f"unknown key '{key}'" in msg and where in msg and valid in msg, msg
    assert not (tmp_path / "data").exists()


def test_component_file_is_named_in_the_error(tmp_path):
    cfg = compose_cfg(tmp_path, "experiment=stem_oss_en", "+data.stem_oss_en.reasoning_efort=high")
    with pytest.raises(ValueError, match=r"conf/data/stem_oss_en\.yaml") as e:
        pipeline.validate(cfg)
    assert "did you mean 'reasoning_effort'" in str(e.value)


def test_every_shipped_component_and_teacher_config_passes_the_schema(tmp_path):
    for exp in sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")):
        pipeline.validate(compose_cfg(tmp_path, f"experiment={exp}"))
    for teacher in sorted(p.stem for p in (REPO / "conf" / "teacher").glob("*.yaml")):
        pipeline.validate(compose_cfg(tmp_path, "experiment=stem_oss_en", f"teacher={teacher}"))


# ----------------------------------------------------------------------------------------------------
# the request timeout: teacher.timeout


def test_teacher_timeout_is_the_request_timeout(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": 0, "instruction": "slow [[fault:timeout]]"}) + "\n")
    with FaultServer(hang=20) as fs:
        cfg = compose_cfg(tmp_path, *local_chat(prompts, fs.url), "synth.limit=1", "synth.prompt_extra=0",
                          "teacher.timeout=0.5", "synth.retries.initial=0.01", "synth.retries.max=0.02")
        cfg.synth.steps = ["prompts"]
        pipeline.run(cfg)                 # the pool first (loading `datasets` takes seconds), then time the request
        cfg.synth.steps = ["generate"]
        t0 = time.monotonic()
        out = pipeline.run(cfg)["generate"]["chat_oss_en"]
        took = time.monotonic() - t0
    assert out["kept"] == 1 and fs.outcomes["timeout"] == 1
    assert took < 3, f"the hung request waited {took:.1f} s, not teacher.timeout=0.5"


def test_translator_timeout_defaults_to_the_teachers(tmp_path):
    cfg = compose_cfg(tmp_path, "experiment=stem_oss_ja", "teacher.timeout=7")
    assert cfg.synth.translator.timeout == 7


# ----------------------------------------------------------------------------------------------------
# the prompt pool follows its source file


def test_fixing_a_prompt_file_in_place_rebuilds_its_pool(tmp_path):
    prompts = tmp_path / "p.jsonl"
    rows = [{"id": i, "instruction": f"question {i} with a typo"} for i in range(4)]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    src_cfg = {"type": "local", "path": str(prompts)}
    first = [p.instruction for p in sources.build_pool("mine", src_cfg, 4, tmp_path / "work")]
    assert first[0] == "question 0 with a typo"
    # the same size and, on a coarse clock, possibly the same mtime: only the content differs
    st = prompts.stat()
    prompts.write_text("".join(json.dumps(r).replace("typo", "TYPO") + "\n" for r in rows))
    os.utime(prompts, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert prompts.stat().st_size == st.st_size
    again = [p.instruction for p in sources.build_pool("mine", src_cfg, 4, tmp_path / "work")]
    assert again == [f"question {i} with a TYPO" for i in range(4)]
    # untouched: served from the cache (the pool file is not rewritten)
    pool = sources.pool_path(tmp_path / "work", "mine", src_cfg, False)
    mtime = pool.stat().st_mtime_ns
    time.sleep(0.01)
    sources.build_pool("mine", src_cfg, 4, tmp_path / "work")
    assert pool.stat().st_mtime_ns == mtime


# ----------------------------------------------------------------------------------------------------
# malformed inputs


def test_malformed_prompt_file_names_the_file_and_line(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": 1, "instruction": "fine"}\n{"id": 2, "instruction": "fine too"}\n'
                       '{"id": 3, "instruction": "broken\n{"id": 4, "instruction": "fine"}\n')
    with pytest.raises(ValueError) as e:
        list(sources.load_source("mine", {"type": "local", "path": str(prompts)}))
    assert f"{prompts}:3" in str(e.value) and "not valid JSON" in str(e.value)
    cfg = compose_cfg(tmp_path, *local_chat(prompts), "synth.limit=2", "synth.steps=[prompts]")
    with pytest.raises(ValueError, match=f"{prompts}:3"):
        pipeline.run(cfg)


def test_stats_with_a_missing_model_path_fails_before_generating(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"instruction": "q"}) + "\n")
    cfg = compose_cfg(tmp_path, *local_chat(prompts), "synth.steps=[prompts,generate,stats]",
                      f"model.name_or_path={tmp_path / 'no-such-model'}")
    with pytest.raises(ValueError) as e:
        pipeline.run(cfg)
    assert "model.name_or_path" in str(e.value) and "no-such-model" in str(e.value)
    assert not (tmp_path / "data").exists()


def test_stats_alone_on_components_without_records_is_an_error(tmp_path):
    cfg = compose_cfg(tmp_path, "experiment=chat_oss_en_ja", "model=tiny_qwen3", "synth.steps=[stats]")
    with pytest.raises(ValueError) as e:
        pipeline.run(cfg)
    assert "no records" in str(e.value) and "chat_oss_en" in str(e.value) and "synth.steps" in str(e.value)


def test_stats_of_an_experiment_on_the_default_model_names_the_override(tmp_path):
    d = tmp_path / "data" / "triples" / "chat_oss_en"
    with jsonl.ShardWriter(d, fsync=False) as w:
        w.write({"id": "x", "instruction": "q", "trace": "t", "response": "r", "flags": []})
    cfg = compose_cfg(tmp_path, "experiment=chat_oss_en_ja", "synth.components=[chat_oss_en]", "synth.steps=[stats]")
    with pytest.raises(ValueError) as e:
        pipeline.run(cfg)
    assert "model.name_or_path=" in str(e.value) and "synth.stats.ppl=false" in str(e.value)
