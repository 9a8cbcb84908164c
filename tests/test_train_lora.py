"""LoRA through peft on the tiny student: it learns, its adapter is saved with the run and round-trips,
the merged export equals base + adapter, and the evaluate stage scores the run directory."""

import json

import pytest
import torch
from hydra import compose, initialize_config_dir

from conftest import CONF, install_triples
from train import sft


def train(root, name, *overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[
            "experiment=demo_stem_en", "logger=none", f"paths.root={root}", f"output_dir={root / name}",
            "trainer/peft=lora", "trainer.peft.rank=8", "trainer.peft.alpha=16", "trainer.peft.dropout=0",
            "trainer.global_batch_size=4", "trainer.per_device_batch_size=4", "trainer.learning_rate=2e-2",
            *overrides])
    sft.run(cfg)
    return root / name


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_lora_learns_saves_its_adapter_and_is_evaluated(tmp_path, tiny_student):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evaluate import run as evaluate
    from test_evaluate_runner import compose_eval

    install_triples(tmp_path)
    out = train(tmp_path, "lora", "trainer.max_steps=12", "trainer.save_steps=12")
    state = json.loads((out / "checkpoint-12" / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    # 16 examples, 4 per step: three epochs over the same examples. (With its embeddings and norms frozen, the
    # randomly initialised tiny student cannot get far below ln(vocabulary) = 11.9: the drop is small but real.)
    epochs = [sum(losses[i:i + 4]) / 4 for i in (0, 4, 8)]
    assert len(losses) == 12 and epochs[0] > epochs[1] > epochs[2] and epochs[2] < epochs[0] - 0.15, losses
    # The run directory is the adapter (no full weights), with the tokenizer; the manifest says so.
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    assert not (out / "model.safetensors").exists()
    effective = json.loads((out / "manifest.json").read_text())["effective"]
    assert effective["peft"]["method"] == "lora" and effective["peft"]["rank"] == 8
    base = AutoModelForCausalLM.from_pretrained(tiny_student)
    assert 0 < effective["trainable_parameters"] < 0.1 * base.num_parameters()
    # Round trip: transformers' from_pretrained(<run>) = base + adapter through peft, and it is not the base.
    ids = AutoTokenizer.from_pretrained(out)("1 + 1 =", return_tensors="pt").input_ids
    loaded = AutoModelForCausalLM.from_pretrained(out)
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_student), out)
    assert torch.allclose(logits(loaded, ids), logits(peft_model, ids), atol=1e-5)
    assert not torch.allclose(logits(loaded, ids), logits(base, ids), atol=1e-3)
    # The evaluate stage scores the run (transformers backend).
    cfg = compose_eval(["model=tiny_qwen3", "benchmark=[math500]", "logger=none", f"paths.root={tmp_path}",
                        f"checkpoint={out}", "backend.name=transformers", "benchmark.math500.source=offline",
                        "benchmark.math500.limit=2", "benchmark.math500.n=1", "benchmark.math500.max_tokens=6"])
    summary = evaluate.run(cfg)["math500"]
    assert summary["n_records"] == 2 and summary["score"] is not None


def test_lora_merge_exports_plain_weights_equal_to_base_plus_adapter(tmp_path, tiny_student):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    install_triples(tmp_path)
    out = train(tmp_path, "merged", "trainer.max_steps=2", "trainer.save_steps=100", "trainer.peft.merge=true")
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").exists()
    ids = AutoTokenizer.from_pretrained(out)("1 + 1 =", return_tensors="pt").input_ids
    merged = AutoModelForCausalLM.from_pretrained(out)
    adapter = AutoModelForCausalLM.from_pretrained(out / "adapter")
    assert torch.allclose(logits(merged, ids), logits(adapter, ids), atol=1e-4)
    assert not torch.allclose(logits(merged, ids), logits(AutoModelForCausalLM.from_pretrained(tiny_student), ids),
                              atol=1e-4)


def test_qlora_is_refused_clearly_without_a_gpu_and_bitsandbytes(tmp_path):
    install_triples(tmp_path)
    with pytest.raises(sft.TrainError, match="trainer/peft=qlora .*bitsandbytes.*trainer/peft=lora"):
        train(tmp_path, "qlora", "trainer/peft=qlora")
    assert not (tmp_path / "qlora").exists()
