"""The train stage on the tiny student: Table 1 configs, rendering, labels, packing, overfit, resume, sweeps."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONF, REPO, install_triples
from core import student, think
from train import mixture, sft

# Table 1 of the paper, typed in: (domain, teacher, I/O language, trace language or None, count).
TABLE1 = {
    1: [("stem", "OSS", "en", "en", 500_000)],
    2: [("stem", "OSS", "ja", "en", 500_000)],
    3: [("stem", "R1", "en", "en", 1_500_000)],
    4: [("stem", "R1", "en", "en", 500_000)],
    5: [("stem", "R1", "en", "en", 500_000), ("chat", "OSS", "ja", "en", 100_000)],
    6: [("stem", "R1", "en", "en", 500_000), ("chat", "OSS", "en", "en", 100_000)],
    7: [("stem", "R1", "en", "en", 500_000), ("chat", "OSS", "ja", None, 100_000)],
    8: [("chat", "OSS", "en", "en", 50_000), ("chat", "OSS", "ja", "en", 50_000)],
    9: [("stem", "OSS-h", "en", "en", 500_000)],
    10: [("stem", "R1", "en", "en", 250_000), ("stem", "OSS", "ja", "en", 250_000),
         ("chat", "OSS", "en", "en", 50_000), ("chat", "OSS", "ja", "en", 50_000)],
}


def teacher_label(comp) -> str:
    if comp.teacher == "DeepSeek-R1-0528":
        return "R1"
    assert comp.teacher == "gpt-oss-120b", comp.teacher
    return {"medium": "OSS", "high": "OSS-h"}[comp.reasoning_effort]


def compose_train(*overrides: str, root: Path | None = None):
    extra = []
    if root:
        install_triples(root)
        extra = [f"paths.root={root}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[*overrides, *extra])


def paper_experiments():
    return sorted(p.stem for p in (CONF / "experiment").glob("*.yaml") if not p.stem.startswith("demo"))


def test_every_experiment_composes_and_equals_table1():
    seen = {}
    for name in paper_experiments():
        cfg = compose_train(f"experiment={name}")
        counts = student.component_counts(cfg)
        rows = [
            (c.domain, teacher_label(c), c.lang_input, c.lang_trace if c.keep_trace else None, counts[n])
            for n, c in cfg.data.items()
        ]
        assert cfg.experiment.name == name
        if cfg.experiment.get("derived_from"):  # not in the paper: same data as its Table 1 row, filtered
            assert cfg.experiment.paper_id is None and rows == TABLE1[cfg.experiment.derived_from], name
            continue
        seen[cfg.experiment.paper_id] = rows
    assert seen == TABLE1
    assert compose_train("experiment=stem_oss_en").experiment.paper_id == 1


def test_unknown_experiment_lists_valid_names():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as e:
        compose_train("experiment=stem_oss_fr")
    assert "stem_oss_en" in str(e.value) and "stem_r1_en_oss_ja__chat_oss_en_ja" in str(e.value)


def test_missing_component_data_names_component_path_and_command(tmp_path):
    cfg = compose_train("experiment=stem_r1_en__chat_oss_ja", root=tmp_path)
    with pytest.raises(mixture.MixtureError) as e:
        mixture.build(cfg)
    msg = str(e.value)
    assert "'stem_r1_en'" in msg and str(tmp_path / "data" / "triples" / "stem_r1_en") in msg
    assert "python -m synth experiment=stem_r1_en__chat_oss_ja" in msg


def test_gradient_accumulation_is_derived_and_checked():
    assert sft.gradient_accumulation(64, 1, 8) == 8
    assert sft.gradient_accumulation(64, 2, 16) == 2
    with pytest.raises(ValueError, match="not divisible by world size 3"):
        sft.gradient_accumulation(64, 1, 3)


def test_rendered_text_keeps_trace_verbatim_and_labels_only_assistant(demo_triples, qwen3_tokenizer):
    tok = qwen3_tokenizer
    rec = dict(demo_triples[0], trace="Step 1:  keep  spacing.\n\nStep 2: 1+1=2\n")
    ex = {"messages": student.messages(rec, keep_trace=True, no_trace="response_only")}
    eos = student.end_of_turn(tok)
    assert eos == "<|im_end|>\n"
    out = student.tokenize(ex, tok, eos)
    text = tok.decode(out["input_ids"])
    assert rec["trace"] in text and "<think>\n" + rec["trace"] + "\n</think>\n\n" + rec["response"] in text
    first = next(i for i, x in enumerate(out["labels"]) if x != -100)
    assert all(x == -100 for x in out["labels"][:first])
    assert out["labels"][first:] == out["input_ids"][first:]
    assert tok.decode(out["input_ids"][:first]).endswith("<|im_start|>assistant\n")
    assert tok.decode(out["input_ids"][first:]) == think.format_assistant(rec["trace"], rec["response"]) + eos
    # For a trace without edge newlines this is exactly what Qwen3's own template renders.
    plain = dict(rec, trace="1+1=2")
    ex = {"messages": student.messages(plain, keep_trace=True, no_trace="response_only")}
    full = tok.apply_chat_template(ex["messages"], tokenize=False)
    assert tok.decode(student.tokenize(ex, tok, eos)["input_ids"]) == full


@pytest.mark.parametrize("mode,expect", [("response_only", "{r}"), ("empty_think", "<think>\n\n</think>\n\n{r}")])
def test_no_trace_rendering_modes(demo_triples, qwen3_tokenizer, mode, expect):
    rec = demo_triples[0]
    ex = {"messages": student.messages(rec, keep_trace=False, no_trace=mode)}
    out = student.tokenize(ex, qwen3_tokenizer, "<|im_end|>\n")
    learned = [t for t in out["labels"] if t != -100]
    assert qwen3_tokenizer.decode(learned) == expect.format(r=rec["response"]) + "<|im_end|>\n"
    assert rec["trace"] not in qwen3_tokenizer.decode(out["input_ids"])


def test_mixture_is_seeded_split_equally_and_manifested(tmp_path, demo_triples):
    cfg = compose_train("experiment=demo", root=tmp_path)
    ex1, man1 = mixture.build(cfg)
    ex2, man2 = mixture.build(cfg)
    assert [e["id"] for e in ex1] == [e["id"] for e in ex2]
    assert {k: v["used"] for k, v in man1.components.items()} == {"stem_demo_en": 6, "stem_demo_ja": 6,
                                                                  "chat_demo_en": 6, "chat_demo_ja": 6}
    cfg.mixture.seed = 7
    assert [e["id"] for e in mixture.build(cfg)[0]] != [e["id"] for e in ex1]
    # A flagged record is excluded and counted; a shortfall is an error that says how to fix it.
    d = tmp_path / "flagged"
    stem_en = [r for r in demo_triples if r["component"] == "stem_demo_en"][:6]
    rows = [dict(r, flags=["truncated"]) if i == 0 else r for i, r in enumerate(stem_en)]
    d.mkdir()
    (d / "part-00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg.data.stem_demo_en.path = str(d)
    cfg.mixture.exclude_flags = ["truncated"]
    cfg.mixture.shortfall = "error"
    with pytest.raises(mixture.MixtureError, match="5 usable records.*mixture.shortfall=use_all"):
        mixture.build(cfg)
    cfg.mixture.shortfall = "use_all"
    _, man = mixture.build(cfg)
    assert man.components["stem_demo_en"]["used"] == 5
    assert man.components["stem_demo_en"]["excluded_flags"] == {"truncated": 1}


def test_trace_budget_and_loop_flag_filter_per_experiment_and_are_manifested(tmp_path, demo_triples, qwen3_tokenizer):
    # exp 3 without looping or over-long traces: the derived experiment lists the flags and a budget.
    clean = compose_train("experiment=stem_r1_en_1500k__clean")
    assert {"looping_trace", "over_budget"} <= set(clean.mixture.exclude_flags)
    assert clean.mixture.max_trace_tokens == 16384 and clean.experiment.derived_from == 3
    assert compose_train("experiment=stem_r1_en_1500k").mixture.max_trace_tokens is None  # the paper's: no budget

    cfg = compose_train("experiment=demo", "mixture.shortfall=use_all", root=tmp_path)
    rows = [r for r in demo_triples if r["component"] == "stem_demo_en"][:6]
    lengths = [n for _, n in student.rendered_lengths(qwen3_tokenizer, [(r["trace"], r["response"]) for r in rows])]
    budget = sorted(lengths)[2]  # the three shortest traces fit
    rows[0] = dict(rows[0], flags=["looping_trace"])
    d = tmp_path / "flagged"
    d.mkdir()
    (d / "part-00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg.data.stem_demo_en.path = str(d)
    _, kept = mixture.build(cfg)  # the default keeps looping traces and has no budget
    assert kept.components["stem_demo_en"]["used"] == 6
    assert kept.components["stem_demo_en"]["flag_counts"] == {"looping_trace": 1}
    assert kept.components["stem_demo_en"]["excluded_flags"] == {}

    cfg.mixture.exclude_flags = [*cfg.mixture.exclude_flags, "looping_trace"]
    cfg.mixture.max_trace_tokens = budget
    with pytest.raises(mixture.MixtureError, match="with its tokenizer"):
        mixture.build(cfg)
    examples, man = mixture.build(cfg, qwen3_tokenizer)
    within = {r["id"] for r, n in zip(rows, lengths) if n <= budget} - {rows[0]["id"]}
    comp = man.components["stem_demo_en"]
    assert {e["id"] for e in examples if e["component"] == "stem_demo_en"} == within
    assert comp["used"] == len(within) and comp["excluded_flags"] == {"looping_trace": 1}
    assert comp["over_trace_budget"] == sum(n > budget for r, n in zip(rows[1:], lengths[1:]))
    assert man.summary()["filters"] == {"exclude_flags": sorted(cfg.mixture.exclude_flags), "max_trace_tokens": budget}


def _trainer(cfg, tokenizer, dataset, model):
    from trl import SFTTrainer

    return SFTTrainer(model=model, args=sft.sft_config(cfg, Path(cfg.output_dir)), train_dataset=dataset,
                      processing_class=tokenizer)


def _sum_nll(model, batches):
    total, n = 0.0, 0
    with torch.no_grad():
        for b in batches:
            labels = b["labels"]
            tokens = int((labels[:, 1:] != -100).sum())
            out = model(**{k: v for k, v in b.items() if k != "seq_lengths"})
            total += out.loss.item() * tokens
            n += tokens
    return total / n, n


def test_every_batching_gives_the_same_loss_and_only_paper_computes_padding(tmp_path, tiny_student):
    """Same records, same weights: padding-free micro-batches (default), windows packed best-fit-decreasing,
    and Appendix C's padding to the context."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_student)
    model = AutoModelForCausalLM.from_pretrained(tiny_student, attn_implementation="sdpa")
    losses = {}
    for batching in ("padding_free", "packed", "pad_to_context"):
        cfg = compose_train("experiment=demo", "logger=none", "trainer.max_length=256",
                            "trainer.global_batch_size=4", "trainer.per_device_batch_size=4",
                            f"trainer.batching={batching}", f"output_dir={tmp_path / batching}", root=tmp_path)
        examples, _ = mixture.build(cfg)
        ds, _, _ = sft.tokenize_mixture(examples[:8], tok, cfg)
        trainer = _trainer(cfg, tok, ds.remove_columns(["id", "component"]), model)
        batches = list(trainer.get_train_dataloader())
        if batching == "pad_to_context":
            assert all(b["input_ids"].shape == (4, 256) for b in batches)  # every sequence padded to context
        else:  # one row of real tokens, sequences told apart by their position ids
            assert all(b["input_ids"].shape[0] == 1 and "position_ids" in b for b in batches)
            assert sum(b["input_ids"].numel() for b in batches) == sum(len(x) for x in ds["input_ids"])
        losses[batching] = _sum_nll(model, batches)
    (free, n1), (packed, n2), (padded, n3) = losses["padding_free"], losses["packed"], losses["pad_to_context"]
    assert n1 == n2 == n3 > 100
    assert abs(free - padded) / padded <= 1e-4 and abs(packed - padded) / padded <= 1e-4


def test_tiny_model_overfits_tiny_dataset(tmp_path):
    cfg = compose_train(
        "experiment=demo_stem_en", "logger=none", "experiment.domain_counts.stem=4",
        "trainer.learning_rate=2e-2", "trainer.max_steps=10", "trainer.global_batch_size=4",
        "trainer.per_device_batch_size=4", "trainer.save_steps=1000", "trainer.logging_steps=1",
        f"output_dir={tmp_path / 'out'}", root=tmp_path)
    metrics = sft.run(cfg)
    state = json.loads((tmp_path / "out" / "checkpoint-10" / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert len(losses) == 10 and metrics["global_step"] == 10
    assert losses[-1] <= 0.5 * losses[0], losses
    out = tmp_path / "out"
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(out)
    assert AutoTokenizer.from_pretrained(out).convert_tokens_to_ids("<think>") == 151667
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["components"]["stem_demo_en"]["used"] == 4 and manifest["n_records"] == 4
    eff = manifest["effective"]  # what the run did, read from the trainer's own objects
    assert eff["optimizer"] == "adamw_torch_fused" and eff["optimizer_class"] == "AdamW"
    assert eff["optimizer_hyperparameters"] == {"lr": 2e-2, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": [0.0]}
    assert eff["lr_scheduler"] == "constant"
    assert eff["dtype"] == "float32" and eff["mixed_precision"] == "no" and eff["zero_stage"] is None
    assert eff["world_size"] == 1 and eff["optimizer_steps"] == 10 and eff["sequences_per_step"] == 4
    assert eff["gradient_accumulation_steps"] * eff["per_device_batch_size"] == 4
    assert 0 < eff["trained_tokens_per_step"] < eff["tokens_per_step"]
    assert len((out / "manifest_ids.txt").read_text().split()) == 4
    assert OmegaConf.load(out / "resolved_config.yaml").experiment.name == "demo_stem_en"


def _train_cmd(*overrides):
    return [sys.executable, "-m", "train", *overrides]


def _env(tmp_path):
    install_triples(tmp_path)
    return {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "JAEN_DISTILL_ROOT": str(tmp_path)}


def test_kill_and_resume_continues_from_checkpoint(tmp_path):
    out = tmp_path / "run"
    cmd = _train_cmd("experiment=demo_stem_en", "logger=none", "trainer.max_steps=6", "trainer.save_steps=2",
                     "trainer.save_total_limit=10", f"output_dir={out}")
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while not (out / "checkpoint-2" / "trainer_state.json").exists():
        assert proc.poll() is None and time.time() < deadline, "training ended before the kill"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "train_metrics.json").exists()
    done = subprocess.run(cmd, cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "train_metrics.json").read_text())
    resumed = int(Path(metrics["resumed_from"]).name.split("-")[1])
    assert resumed >= 2 and metrics["global_step"] == 6
    state = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())
    logged = [h["step"] for h in state["log_history"] if "loss" in h]
    assert logged == list(range(1, 7))  # no step repeated, none skipped


def test_multirun_over_two_experiments_gives_two_runs_and_two_wandb_dirs(tmp_path):
    done = subprocess.run(
        _train_cmd("-m", "experiment=demo,demo_stem_en", "model=tiny_qwen3", "trainer.max_steps=2",
                   "trainer.save_steps=100", "trainer.gradient_checkpointing=false", "+sweep_name=smoke"),
        cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = tmp_path / "runs"
    for name in ("demo", "demo_stem_en"):
        metrics = json.loads((runs / "train" / name / "train_metrics.json").read_text())
        assert metrics["global_step"] == 2 and metrics["experiment"] == name
    wandb_runs = sorted((runs / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 2
    ids = {json.loads((runs / "train" / n / "train_metrics.json").read_text())["wandb_run_id"]
           for n in ("demo", "demo_stem_en")}
    assert {d.name.rsplit("-", 1)[1] for d in wandb_runs} == ids and len(ids) == 2
    assert all(any(d.glob("run-*.wandb")) for d in wandb_runs)
    for d in wandb_runs:  # the effective settings are in the W&B config (the run's record holds the keys)
        record = next(d.glob("run-*.wandb")).read_bytes()
        assert all(k in record for k in (b"effective", b"optimizer_steps", b"gradient_accumulation_steps"))


def test_synth_and_analysis_do_not_import_train():
    code = ("import sys, synth.pipeline, synth.stats, analysis.collect; "
            "print(sorted(m for m in sys.modules if m == 'train' or m.startswith('train.')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr[-2000:]


@pytest.mark.parametrize("policy", ["drop", "truncate"])
def test_overlength_records_follow_the_policy_and_are_counted(tmp_path, qwen3_tokenizer, policy):
    cfg = compose_train("experiment=demo", "trainer.max_length=64", f"mixture.overlength={policy}", root=tmp_path)
    examples, _ = mixture.build(cfg)
    lengths = [len(student.tokenize(e, qwen3_tokenizer, "<|im_end|>\n")["input_ids"]) for e in examples]
    over = sum(n > 64 for n in lengths)
    assert 0 < over < len(examples)
    ds, counts, over_ids = sft.tokenize_mixture(examples, qwen3_tokenizer, cfg)
    assert counts == {"overlength": over, "policy": policy} and len(over_ids) == over
    assert max(len(x) for x in ds["input_ids"]) <= 64
    if policy == "drop":
        assert len(ds) == len(examples) - over
    else:  # truncated to the context; a record whose prompt alone fills it has nothing to learn and goes
        assert len(ds) == len(examples) - sum(1 for e, n in zip(examples, lengths) if n > 64 and all(
            x == -100 for x in student.tokenize(e, qwen3_tokenizer, "<|im_end|>\n")["labels"][:64]))
