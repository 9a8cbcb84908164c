"""The evaluate stage on bad input: every failure is an error that names the input and the fix, comes
before anything is written, and leaves no run directory behind. Resume refuses samples made otherwise."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import EVAL_TARGET, REPO, ScriptedBackend
from json_server import JsonServer, error
from core import jsonl
from evaluate import run as runner
from test_evaluate_runner import compose_eval


def _cfg(tmp_path, *extra, bench="math500", source="offline"):
    """A full evaluate config whose run directory is ``<tmp_path>/runs/eval/r``. Its backend (vLLM, absent
    here) cannot be built unless a test names another: a run that gets as far as generating fails at once."""
    backend = [] if any(e.startswith("backend.name=") for e in extra) else ["backend.name=vllm"]
    return compose_eval(["model=tiny_qwen3", f"benchmark=[{bench}]", "logger=none", f"paths.root={tmp_path}",
                         "run_name=r", f"benchmark.{bench}.source={source}", f"benchmark.{bench}.n=1", *backend, *extra])


def _no_run_dir(tmp_path):
    assert not (tmp_path / "runs" / "eval").exists(), list((tmp_path / "runs").rglob("*"))


# ---------------------------------------------------------------- 1. limit
@pytest.mark.parametrize("override,named", [("benchmark.math500.limit=0", "benchmark.math500.limit=0"),
                                            ("benchmark.math500.limit=-3", "benchmark.math500.limit=-3"),
                                            ("all.limit=0", "all.limit=0"), ("all.limit=-1", "all.limit=-1")])
def test_limit_zero_or_negative_is_an_error(tmp_path, override, named):
    with pytest.raises(ValueError, match=rf"{named}.*null") as e:
        runner.run(_cfg(tmp_path, override))
    assert "positive" in str(e.value)
    _no_run_dir(tmp_path)


def test_limit_null_is_every_example(tmp_path):
    cfg = _cfg(tmp_path, "benchmark.mmlu_pro.limit=null", bench="mmlu_pro", source="fixture")
    OmegaConf.set_struct(cfg, False)
    cfg.output_dir = str(tmp_path / "eval")
    n_rows = len((REPO / "evaluate" / "data" / "mmlu_pro_fixture.jsonl").read_text().splitlines())
    backend = ScriptedBackend(["Answer: A"] * n_rows)
    s = runner.evaluate_benchmark("mmlu_pro", cfg.benchmark.mmlu_pro, cfg, lambda: backend, EVAL_TARGET)
    assert s["n_examples"] == n_rows > 1


# ---------------------------------------------------------------- 3. benchmark names and keys
def test_unknown_benchmark_lists_the_valid_names(tmp_path):
    for arg in ("benchmark=[math500,math5000]", "benchmark=math5000"):
        p = subprocess.run([sys.executable, "-m", "evaluate", arg, "logger=none", f"paths.root={tmp_path}"],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
        assert p.returncode != 0
        err = p.stderr
        assert "math5000" in err and "aime_ja" in err and "mmlu_prox_ja" in err and "math500" in err, err
    _no_run_dir(tmp_path)


def test_misspelt_benchmark_key_is_named_with_the_valid_keys(tmp_path):
    with pytest.raises(ValueError, match=r"temprature") as e:
        runner.run(_cfg(tmp_path, "+benchmark.math500.temprature=0.3"))
    assert "temperature" in str(e.value) and "conf/benchmark/math500.yaml" in str(e.value)
    _no_run_dir(tmp_path)


def test_a_benchmark_value_of_the_wrong_type_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"benchmark\.math500\.n"):
        runner.run(_cfg(tmp_path, "benchmark.math500.n=abc"))
    _no_run_dir(tmp_path)


def test_every_shipped_benchmark_config_passes_the_key_check():
    cfg = compose_eval(["benchmark=[" + ",".join(p.stem for p in sorted((REPO / "conf" / "benchmark").glob("*.yaml"))) + "]"])
    for name in cfg.benchmark:
        runner.check_benchmark(name, cfg.benchmark[name])


# ---------------------------------------------------------------- 4. checkpoints
def test_nonexistent_checkpoint_fails_before_any_run_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint=.*nowhere/model"):
        runner.run(_cfg(tmp_path, f"checkpoint={tmp_path}/nowhere/model", "run_name=null"))
    _no_run_dir(tmp_path)


def test_train_output_without_a_model_is_refused(tmp_path):
    out = tmp_path / "runs" / "train" / "demo"
    (out / "checkpoint-10").mkdir(parents=True)
    (out / "manifest.json").write_text("{}")
    cfg = compose_eval(["experiment=demo", "benchmark=[math500]", f"paths.root={tmp_path}", "logger=none", "backend.name=vllm"])
    with pytest.raises(FileNotFoundError, match=r"holds no model") as e:
        runner.run(cfg)
    assert "config.json" in str(e.value) and "adapter_config.json" in str(e.value)
    assert "checkpoint-10" in str(e.value)  # what is there, and how to evaluate it
    _no_run_dir(tmp_path)


def test_a_model_directory_and_a_hub_id_are_accepted(tmp_path, tiny_student):
    assert runner.resolve_target(_cfg(tmp_path, f"checkpoint={tiny_student}"))[0] == str(tiny_student)
    assert runner.resolve_target(_cfg(tmp_path, "checkpoint=Qwen/Qwen3-8B"))[0] == "Qwen/Qwen3-8B"


@pytest.fixture(scope="module")
def lora_adapter(tmp_path_factory, tiny_student):
    """A LoRA adapter on the tiny student as peft saves it (adapter_config.json + adapter_model.safetensors,
    no tokenizer), with non-zero weights so that it changes the model's output."""
    import peft
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("lora") / "adapter"
    base = AutoModelForCausalLM.from_pretrained(tiny_student)
    config = peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft.get_peft_model(base, config).save_pretrained(out)
    assert not (out / "config.json").exists() and (out / "adapter_model.safetensors").exists()
    return out


def test_transformers_backend_loads_a_lora_adapter_as_base_plus_adapter(tmp_path, lora_adapter, tiny_student):
    import torch
    from transformers import AutoModelForCausalLM

    from evaluate import backends

    cfg = _cfg(tmp_path, f"checkpoint={lora_adapter}", "backend.name=transformers")
    model, _, _ = runner.resolve_target(cfg)
    backend = backends.build(cfg, model)
    lora = [n for n, _ in backend.model.named_parameters() if "lora_" in n]
    assert lora, "the adapter's weights are not in the model"
    ids = backend.tokenizer("hello", return_tensors="pt").input_ids
    base = AutoModelForCausalLM.from_pretrained(tiny_student).eval()
    with torch.no_grad():
        assert not torch.allclose(backend.model(ids).logits, base(ids).logits)
    out = backend.generate([[{"role": "user", "content": "1+1?"}]], backends.Settings(0.0, 1.0, 3))
    assert len(out) == 1 and out[0].n_tokens <= 3


def test_vllm_refuses_a_lora_adapter_with_the_fix(tmp_path, lora_adapter):
    from evaluate import backends

    cfg = _cfg(tmp_path, f"checkpoint={lora_adapter}", "backend.name=vllm")
    with pytest.raises(ValueError, match=r"backend\.name=transformers"):
        backends.build(cfg, str(lora_adapter))


# ---------------------------------------------------------------- 5. servers and the hub
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_names_the_url_and_leaves_nothing(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    cfg = _cfg(tmp_path, "benchmark.math500.limit=2", "backend.name=openai", f"backend.base_url={url}",
               "backend.max_retries=0", "backend.concurrency=2")
    with pytest.raises(ConnectionError, match=rf"{url}.*backend\.base_url"):
        runner.run(cfg)
    _no_run_dir(tmp_path)


def test_aime_hub_error_gives_the_offline_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from evaluate.tasks import aime

    cfg = compose_eval(["benchmark=[aime]", f"benchmark.aime.hub_sources=[{{hub_id: '{tmp_path}/no-such-aime', split: train, year: 2024}}]"])
    with pytest.raises(RuntimeError, match=r"no-such-aime.*benchmark\.aime\.source=offline.*all\.source=local"):
        aime.load(cfg.benchmark.aime)


def test_an_empty_source_is_an_error(tmp_path):
    empty = tmp_path / "rows.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"no examples.*rows\.jsonl"):
        runner.run(_cfg(tmp_path, f"benchmark.math500.source={empty}"))
    _no_run_dir(tmp_path)


# ---------------------------------------------------------------- 2. resume keyed on a fingerprint
def _rows(path: Path, problems: dict[str, str]) -> Path:
    path.write_text("".join(json.dumps({"problem": p, "answer": a}) + "\n" for p, a in problems.items()))
    return path


def _bench(tmp_path, source, *extra):
    cfg = _cfg(tmp_path, f"benchmark.math500.source={source}", *extra)
    OmegaConf.set_struct(cfg, False)
    cfg.output_dir = str(tmp_path / "eval")
    return cfg


def _evaluate(cfg, texts, target=EVAL_TARGET):
    backend = ScriptedBackend(texts)
    s = runner.evaluate_benchmark("math500", cfg.benchmark.math500, cfg, lambda: backend, target)
    return s, backend


def test_resume_refuses_another_source_file(tmp_path):
    a = _rows(tmp_path / "a.jsonl", {"1+1?": "2", "2+2?": "4"})
    _evaluate(_bench(tmp_path, a), ["\\boxed{2}", "\\boxed{4}"])
    b = _rows(tmp_path / "b.jsonl", {"3+3?": "6", "4+4?": "8"})  # same ids (row index), other problems
    with pytest.raises(ValueError, match=r"run_name=.*overwrite=true") as e:
        _evaluate(_bench(tmp_path, b), ["\\boxed{6}", "\\boxed{8}"])
    assert "'0'" in str(e.value)  # the changed example is named
    same = _rows(tmp_path / "copy.jsonl", {"1+1?": "2", "2+2?": "4"})  # the same content elsewhere resumes
    s, backend = _evaluate(_bench(tmp_path, same), [])
    assert backend.calls == [] and s["score"] == 1.0


def test_resume_refuses_another_prompt_template(tmp_path):
    a = _rows(tmp_path / "a.jsonl", {"1+1?": "2"})
    _evaluate(_bench(tmp_path, a), ["\\boxed{2}"])
    with pytest.raises(ValueError, match=r"prompt_template.*run_name=.*overwrite=true"):
        _evaluate(_bench(tmp_path, a, "benchmark.math500.prompt_template='Q: {problem}'"), ["\\boxed{2}"])


def test_resume_refuses_another_chat_template_setting(tmp_path):
    a = _rows(tmp_path / "a.jsonl", {"1+1?": "2"})
    _evaluate(_bench(tmp_path, a), ["\\boxed{2}"])
    with pytest.raises(ValueError, match=r"chat_template_kwargs"):
        _evaluate(_bench(tmp_path, a, "+backend.chat_template_kwargs.enable_thinking=false"), ["\\boxed{2}"])


def test_resume_refuses_a_retrained_model_at_the_same_path_but_follows_a_moved_one(tmp_path, tiny_student):
    a = _rows(tmp_path / "a.jsonl", {"1+1?": "2"})
    model = tmp_path / "model"
    shutil.copytree(tiny_student, model)
    target = {**EVAL_TARGET, "model": str(model)}
    _evaluate(_bench(tmp_path, a), ["\\boxed{2}"], target)
    moved = tmp_path / "moved"
    os.replace(model, moved)
    s, backend = _evaluate(_bench(tmp_path, a), [], {**target, "model": str(moved)})
    assert backend.calls == []
    weights = moved / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # a retrain rewrites the weights
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model.*run_name=.*overwrite=true"):
        _evaluate(_bench(tmp_path, a), ["\\boxed{2}"], {**target, "model": str(moved)})


def test_overwrite_replaces_only_once_new_samples_exist(tmp_path):
    a = _rows(tmp_path / "a.jsonl", {"1+1?": "2"})
    _evaluate(_bench(tmp_path, a), ["\\boxed{2}"])
    samples = tmp_path / "eval" / "math500" / "samples.jsonl"
    before = samples.read_bytes()

    class Down:
        def generate(self, convs, settings):
            raise ConnectionError("server down")

    cfg = _bench(tmp_path, a, "overwrite=true", "benchmark.math500.prompt_template='Q: {problem}'")
    with pytest.raises(ConnectionError):
        runner.evaluate_benchmark("math500", cfg.benchmark.math500, cfg, lambda: Down(), EVAL_TARGET)
    assert samples.read_bytes() == before  # a failed overwrite run destroyed nothing
    s, _ = _evaluate(cfg, ["\\boxed{3}"])
    assert s["score"] == 0.0 and [r["prompt"] for r in jsonl.read(samples)] == [["Q: 1+1?"]]


@pytest.mark.parametrize("status,error_type,named", [(401, PermissionError, r"backend\.api_key_env"),
                                                     (404, LookupError, r"backend\.served_model")])
def test_a_server_refusing_the_key_or_the_model_is_named(tmp_path, status, error_type, named):
    """A real local HTTP server answering every request with ``status``, as an OpenAI-compatible one does."""
    with JsonServer(lambda path, body: (status, error("refused"))) as server:
        cfg = _cfg(tmp_path, "benchmark.math500.limit=1", "backend.name=openai", f"backend.base_url={server.url}",
                   "backend.max_retries=0")
        with pytest.raises(error_type, match=rf"{server.url}.*{named}"):
            runner.run(cfg)
    _no_run_dir(tmp_path)
