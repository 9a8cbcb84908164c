"""Batching modes on the tiny student: the default keeps Appendix C's trajectory without padding; packing
is opt-in and says how many optimizer steps it removes."""

import json
import logging
from pathlib import Path

from hydra import compose, initialize_config_dir

from conftest import CONF, install_triples
from train import sft


def run(root: Path, name: str, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["logger=none", f"paths.root={root}", f"output_dir={root / name}",
                                          *overrides])
    sft.run(cfg)
    out = root / name
    step = max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    state = json.loads((out / f"checkpoint-{step}" / "trainer_state.json").read_text())
    return {"losses": [h["loss"] for h in state["log_history"] if "loss" in h],
            "effective": json.loads((out / "manifest.json").read_text())["effective"]}


def test_default_follows_the_paper_trajectory_without_padding(tmp_path):
    """10 optimizer steps of 2 examples: a padding-free micro-batch of 2 (no accumulation) vs Appendix C's
    micro-batches of 1 padded to the context (accumulation 2): the same loss at every step."""
    install_triples(tmp_path)
    common = ["experiment=demo_stem_en", "trainer.max_length=128", "trainer.global_batch_size=2",
              "trainer.max_steps=10", "trainer.save_steps=10", "trainer.logging_steps=1",
              "trainer.learning_rate=1e-3"]
    paper = run(tmp_path, "paper", "trainer=paper", "trainer.per_device_batch_size=1", "trainer.deepspeed=null",
                *common)
    default = run(tmp_path, "default", "trainer.per_device_batch_size=2", *common)
    assert len(paper["losses"]) == len(default["losses"]) == 10
    assert paper["losses"][-1] < paper["losses"][0]  # it trains
    for a, b in zip(default["losses"], paper["losses"]):
        assert abs(a - b) / b <= 1e-4, (default["losses"], paper["losses"])
    p, d = paper["effective"], default["effective"]
    assert (p["gradient_accumulation_steps"], d["gradient_accumulation_steps"]) == (2, 1)
    assert p["examples_per_step"] == d["examples_per_step"] == 2 and p["optimizer_steps"] == d["optimizer_steps"]
    assert p["trained_tokens_per_step"] == d["trained_tokens_per_step"]
    assert p["tokens_per_step"] == 2 * 128 > d["tokens_per_step"]  # the default computes no padding


def test_packed_mode_says_how_many_optimizer_steps_it_removes(tmp_path, caplog):
    install_triples(tmp_path)
    with caplog.at_level(logging.WARNING, logger="train.sft"):
        packed = run(tmp_path, "packed", "experiment=demo", "model=tiny_qwen3", "trainer.batching=packed",
                     "trainer.num_train_epochs=1", "trainer.save_steps=1000", "trainer.gradient_checkpointing=false")
    e = packed["effective"]
    assert e["optimizer_steps_at_global_batch_examples"] == 12  # 24 examples, 2 per step, 1 epoch
    assert e["optimizer_steps"] < 12 and e["examples_per_step"] > e["sequences_per_step"]
    said = [r.getMessage() for r in caplog.records if "changes the experiment" in r.getMessage()]
    assert len(said) == 1 and f"takes {e['optimizer_steps']} optimizer steps" in said[0] and "take 12" in said[0]


def test_gpu_kernels_are_on_by_default_on_gpu_in_the_fast_modes_and_off_on_cpu(tmp_path):
    """Composition of model.attn_implementation and trainer.liger_kernel (auto) for every trainer setting."""
    import pytest

    def chosen(trainer, gpu, have, *overrides):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("train", overrides=["experiment=stem_oss_en", f"trainer={trainer}", *overrides])
        k = sft.kernels(cfg, gpu, available=lambda package: have)
        return k["attn_implementation"], k["liger_kernel"]

    fast = ("flash_attention_2", True)
    plain = ("sdpa", False)
    assert chosen("padding_free", True, True) == fast and chosen("packed", True, True) == fast
    assert chosen("paper", True, True) == plain  # the reference run stays plain
    for trainer in ("padding_free", "packed", "paper", "cpu_tiny"):
        assert chosen(trainer, False, True) == plain  # CPU
        assert chosen(trainer, True, False) == plain  # GPU without the gpu extra
    assert chosen("paper", True, True, "model.attn_implementation=flash_attention_2",
                  "trainer.liger_kernel=true") == fast  # explicit choices are honoured
    with pytest.raises(sft.TrainError, match="flash_attention_2 needs a CUDA GPU"):
        chosen("padding_free", False, True, "model.attn_implementation=flash_attention_2")
    with pytest.raises(sft.TrainError, match="liger_kernel=true needs a CUDA GPU"):
        chosen("padding_free", True, False, "trainer.liger_kernel=true")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=demo"])
    # what kernels() chose reaches TRL's own option
    assert [sft.sft_config(cfg, tmp_path, liger_kernel=on).use_liger_kernel for on in (False, True)] == [False, True]
