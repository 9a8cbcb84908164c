"""SFT of the student on an experiment's mixture with TRL, readable top to bottom.

``run(cfg)``: cheap checks (nothing written on failure) → mixture → tokens (labels on the assistant turn
only) → TRL ``SFTTrainer`` (``trainer.batching``: Appendix C's steps with padding-free micro-batches by
default, padded to the context as Appendix C, or packed windows) → provenance when training starts →
final model (or LoRA adapter) and tokenizer in ``cfg.output_dir``. Rerunning the same command resumes
from the last complete checkpoint. Multi-GPU through ``accelerate launch`` / ``torchrun`` / Slurm
(submitit), DeepSpeed through ``trainer.deepspeed``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from transformers import TrainerCallback

from core import jsonl, student, think, wandb_mode
from core.assets import resolve_model
from core.config import CONF, check_known, declared, positive_int
from core.triple import FLAGS
from train import mixture

log = logging.getLogger(__name__)


class TrainError(ValueError):
    """Bad train input, found before anything is written: names the setting or file and the fix."""


def experiment_names() -> list[str]:
    conf = CONF / "experiment"
    return sorted(p.stem for p in conf.glob("*.yaml"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def gradient_accumulation(global_batch: int, per_device: int, world: int) -> int:
    """Derive gradient accumulation so that world × per-device × accumulation = the user's global batch."""
    per_step = per_device * world
    if global_batch % per_step:
        raise TrainError(
            f"trainer.global_batch_size={global_batch} is not divisible by world size {world} × "
            f"trainer.per_device_batch_size={per_device} = {per_step}; choose a per-device batch size and "
            f"a GPU count whose product divides it."
        )
    return global_batch // per_step


def export_slurm_distributed_env() -> None:
    """Inside a submitit Slurm task, expose RANK/WORLD_SIZE/MASTER_* so torch.distributed can start."""
    if "WORLD_SIZE" in os.environ or "SUBMITIT_EXECUTOR" not in os.environ:
        return
    import submitit

    submitit.helpers.TorchDistributedEnvironment().export()


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def tokenize_mixture(examples: list[dict[str, Any]], tokenizer, cfg: DictConfig):
    """Tokenize every example and apply the over-length policy: (dataset, counts, over-length ids)."""
    import datasets

    eos = student.end_of_turn(tokenizer)
    ds = datasets.Dataset.from_list(examples)
    # datasets would fingerprint the map by pickling the whole tokenizer (seconds, every run); the records
    # and the tokenizer's identity determine the result, so name the fingerprint from them instead.
    key = json.dumps([[e["id"] for e in examples], tokenizer.name_or_path, len(tokenizer), eos, cfg.mixture.no_trace])
    ds = ds.map(
        student.tokenize,
        fn_kwargs={"tokenizer": tokenizer, "eos": eos},
        remove_columns=["messages"],
        num_proc=cfg.mixture.num_proc,
        new_fingerprint=hashlib.sha256(key.encode()).hexdigest()[:16],
        desc="Tokenizing",
    )
    max_len = cfg.trainer.max_length
    lengths = lengths_of(ds).to_pylist()
    over_ids = [i for i, n in zip(ds["id"], lengths) if n > max_len]
    counts = {"overlength": len(over_ids), "policy": cfg.mixture.overlength}
    if over_ids:
        if cfg.mixture.overlength == "drop":
            ds = ds.select([i for i, n in enumerate(lengths) if n <= max_len])
        else:  # truncate (the value is checked in preflight)
            ds = ds.map(lambda e: {"input_ids": e["input_ids"][:max_len], "labels": e["labels"][:max_len]})
            ds = ds.filter(lambda e: any(x != -100 for x in e["labels"]), desc="Dropping prompt-only")
        log.warning("%d of %d records are longer than trainer.max_length=%d tokens (longest %d): %s "
                    "(mixture.overlength=%s); %d records remain", len(over_ids), len(lengths), max_len,
                    max(lengths), "dropped" if cfg.mixture.overlength == "drop" else "truncated",
                    cfg.mixture.overlength, len(ds))
    if len(ds) == 0:
        raise TrainError(
            f"nothing to train on: all {len(lengths)} records are longer than trainer.max_length={max_len} "
            f"tokens (shortest {min(lengths)}, median {sorted(lengths)[len(lengths) // 2]}, longest "
            f"{max(lengths)}) and mixture.overlength={cfg.mixture.overlength} leaves none. Raise "
            f"trainer.max_length (to at least {min(lengths)}), or set mixture.overlength=truncate when the "
            f"prompts fit."
        )
    return ds, counts, set(over_ids)


BATCHING = ("padding_free", "pad_to_context", "packed")


def lengths_of(dataset):
    """Token count of every record, computed in Arrow (the token lists never become Python objects)."""
    import pyarrow.compute as pc

    return pc.list_value_length(dataset.with_format("arrow")["input_ids"])


def dataset_facts(dataset) -> dict[str, int]:
    """Examples, tokens and trained tokens (labels != -100) of a tokenized mixture."""
    import pyarrow.compute as pc

    labels = pc.list_flatten(dataset.with_format("arrow")["labels"])
    return {"examples": len(dataset), "tokens": pc.sum(lengths_of(dataset)).as_py(),
            "trained_tokens": pc.sum(pc.not_equal(labels, -100)).as_py()}


def sft_config(cfg: DictConfig, output_dir: Path, liger_kernel: bool = False):
    """TRL's SFTConfig from our trainer config (Appendix C numbers live in conf/trainer/paper.yaml)."""
    from trl import SFTConfig

    t = cfg.trainer
    gpu = on_gpu()
    bf16 = gpu if t.bf16 == "auto" else bool(t.bf16)
    checkpointing = gpu if t.gradient_checkpointing == "auto" else bool(t.gradient_checkpointing)
    packed = t.batching == "packed"
    return SFTConfig(
        output_dir=str(output_dir),
        learning_rate=t.learning_rate,
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=gradient_accumulation(t.global_batch_size, t.per_device_batch_size, world_size()),
        # padding_free: tokenize_mixture already applied mixture.overlength (TRL refuses a max_length it
        # would not enforce without packing)
        max_length=None if t.batching == "padding_free" else t.max_length,
        packing=packed,
        packing_strategy="bfd",
        # A micro-batch of one example has no padding to remove: plain collation (TRL warns otherwise).
        padding_free=packed or (t.batching == "padding_free" and t.per_device_batch_size > 1),
        # Appendix C pads every sequence to the context length.
        pad_to_multiple_of=t.max_length if t.batching == "pad_to_context" else None,
        optim=t.optim,
        adam_beta1=t.adam_beta1,
        adam_beta2=t.adam_beta2,
        adam_epsilon=t.adam_epsilon,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        bf16=bf16,
        activation_checkpointing=checkpointing,
        # Liger's fused RMSNorm / SwiGLU / RoPE; TRL keeps its own fused LM head (chunked log-probs, the
        # 151k-vocabulary logits never materialised) instead of Liger's fused cross-entropy.
        use_liger_kernel=liger_kernel,
        deepspeed=deepspeed_config(t.deepspeed),
        logging_steps=t.logging_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        dataloader_num_workers=t.dataloader_num_workers,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to=["wandb"] if cfg.logger.enabled else [],
        run_name=cfg.experiment.name,
        use_cpu=not gpu,
    )


def deepspeed_config(value: str | None) -> str | None:
    """``trainer.deepspeed``: a JSON path, or the name of one shipped in conf/trainer/deepspeed (zero2, zero3)."""
    if not value or Path(value).is_file():
        return value
    shipped = CONF / "trainer" / "deepspeed" / f"{value}.json"
    if not shipped.is_file():
        names = sorted(p.stem for p in shipped.parent.glob("*.json"))
        raise TrainError(f"trainer.deepspeed={value!r} is neither a file nor one of the shipped configs {names}")
    return str(shipped)


def peak_gpu_memory_gib() -> float | None:
    """This process's peak allocated GPU memory (what the kernel options change), None on CPU."""
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def installed(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is not None


def kernels(cfg: DictConfig, gpu: bool, available=installed) -> dict[str, Any]:
    """``model.attn_implementation`` and ``trainer.liger_kernel`` with ``auto`` resolved: FlashAttention-2
    and Liger's kernels with a CUDA GPU in the padding_free and packed modes (where sequences are told apart
    by position ids, which FlashAttention's varlen kernel reads directly), plain sdpa and no Liger on CPU and
    in trainer=paper's reference run. An explicit choice that cannot run here is an error."""
    fast = gpu and cfg.trainer.batching != "pad_to_context"
    attn, liger = cfg.model.attn_implementation, cfg.trainer.liger_kernel
    if attn == "auto":
        attn = "flash_attention_2" if fast and available("flash_attn") else "sdpa"
        if fast and attn == "sdpa":
            log.warning("flash-attn is not installed: sdpa builds a block-diagonal mask per micro-batch "
                        "(quadratic in its tokens); pip install 'jaen-distill[gpu]' for FlashAttention-2")
    elif attn == "flash_attention_2" and not (gpu and available("flash_attn")):
        raise TrainError("model.attn_implementation=flash_attention_2 needs a CUDA GPU and the flash-attn package "
                         "(the gpu extra); use model.attn_implementation=auto or sdpa")
    if liger == "auto":
        liger = fast and available("liger_kernel")
    elif liger and not (gpu and available("liger_kernel")):
        raise TrainError("trainer.liger_kernel=true needs a CUDA GPU and the liger-kernel package (the gpu extra); "
                         "use trainer.liger_kernel=auto or false")
    return {"attn_implementation": attn, "liger_kernel": bool(liger)}


def load_model(cfg: DictConfig, path: str, attn: str):
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if on_gpu() and cfg.trainer.bf16 in ("auto", True) else torch.float32
    quantization = None
    if cfg.trainer.peft.method == "qlora":  # the QLoRA paper's recipe: NF4 weights, double quantization
        from transformers import BitsAndBytesConfig

        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                          bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn,
                                                quantization_config=quantization)


def peft_config(cfg: DictConfig):
    """peft's LoraConfig for ``trainer/peft=lora|qlora``; None for full fine-tuning (the paper)."""
    p = cfg.trainer.peft
    if not p.method:
        return None
    from peft import LoraConfig

    targets = p.target_modules if isinstance(p.target_modules, str) else list(p.target_modules)
    return LoraConfig(r=p.rank, lora_alpha=p.alpha, lora_dropout=p.dropout, target_modules=targets,
                      task_type="CAUSAL_LM")


def check_peft(cfg: DictConfig) -> None:
    method = cfg.trainer.peft.method
    if method not in (None, "lora", "qlora"):
        raise TrainError(f"trainer.peft.method={method!r}: use trainer/peft=none, trainer/peft=lora or "
                         f"trainer/peft=qlora")
    if method != "qlora":
        return
    if not (installed("bitsandbytes") and on_gpu()):
        raise TrainError("trainer/peft=qlora loads the base in 4 bits with bitsandbytes, which needs a CUDA GPU "
                         "and the bitsandbytes package (pip install bitsandbytes); here use trainer/peft=lora.")
    if cfg.trainer.deepspeed:
        raise TrainError("trainer/peft=qlora runs on one GPU: set trainer.deepspeed=null (or use trainer/peft=lora "
                         "with DeepSpeed).")


def save_final(trainer, tokenizer, cfg: DictConfig, output_dir: Path) -> None:
    """The model (full fine-tuning), or the adapter (LoRA), with the tokenizer, in ``output_dir``;
    ``trainer.peft.merge=true``: base + adapter merged into plain weights there, the adapter in ``adapter/``."""
    merge = bool(cfg.trainer.peft.method and cfg.trainer.peft.merge)
    adapter_dir = output_dir / "adapter" if merge else output_dir
    trainer.save_model(str(adapter_dir))
    if not trainer.is_world_process_zero():
        return
    tokenizer.save_pretrained(str(output_dir))
    if merge:
        tokenizer.save_pretrained(str(adapter_dir))  # the adapter directory loads on its own too
        import torch
        from peft import AutoPeftModelForCausalLM

        # Reloaded from the saved adapter so that it works the same after any parallelism (ZeRO-3 shards
        # the live model); a QLoRA base is loaded unquantized here, as merging into 4-bit weights loses them.
        dtype = torch.bfloat16 if trainer.args.bf16 else torch.float32
        merged = AutoPeftModelForCausalLM.from_pretrained(str(adapter_dir), dtype=dtype).merge_and_unload()
        merged.save_pretrained(str(output_dir))


def start_wandb(cfg: DictConfig) -> Any:
    """One W&B run per experiment; offline unless an API key is configured. Returns the run or None."""
    if not cfg.logger.enabled or int(os.environ.get("RANK", "0")) != 0:
        return None
    import wandb

    mode = wandb_mode.resolve(cfg.logger.mode)
    Path(cfg.logger.dir).mkdir(parents=True, exist_ok=True)
    return wandb.init(
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        group=cfg.logger.group,
        name=cfg.experiment.name,
        tags=[f"paper_id={cfg.experiment.paper_id}"],
        config=OmegaConf.to_container(cfg, resolve=True),
        dir=cfg.logger.dir,
        mode=mode,
        reinit="finish_previous",
    )


def preflight(cfg: DictConfig) -> dict[str, Any]:
    """Every cheap check, before anything is read in bulk, tokenized or written: the experiment, the option
    values, the batch arithmetic, the DeepSpeed config, the components' data and the model's config."""
    if cfg.get("experiment") is None:
        raise TrainError(
            "No experiment given. Choose one: python -m train experiment=<name>, where <name> is one of: "
            + ", ".join(experiment_names())
        )
    for key, allowed in {"mixture.overlength": ("drop", "truncate"), "mixture.no_trace": think.NO_TRACE_MODES,
                         "mixture.shortfall": ("error", "use_all"), "trainer.batching": BATCHING}.items():
        if OmegaConf.select(cfg, key) not in allowed:
            raise TrainError(f"{key}={OmegaConf.select(cfg, key)!r}: use one of {', '.join(allowed)}")
    trainer_files = [f"trainer/{p.name}" for p in (CONF / "trainer").glob("*.yaml")]
    try:  # an experiment file may set any of these: a misspelt key would be ignored without a word
        check_known(cfg.mixture, declared("train.yaml", node="mixture"), "mixture")
        check_known(cfg.trainer, declared(*trainer_files) | {"peft"}, "trainer")
    except ValueError as e:
        raise TrainError(f"{e} (fix the experiment file or the override that sets it)") from None
    if unknown := sorted(set(cfg.mixture.exclude_flags) - set(FLAGS)):
        raise TrainError(f"mixture.exclude_flags: unknown flag(s) {', '.join(unknown)}; known: {', '.join(FLAGS)}")
    budget = cfg.mixture.get("max_trace_tokens")
    if budget is not None and not positive_int(budget):
        raise TrainError(f"mixture.max_trace_tokens={budget!r}: a positive number of student tokens, or null for none")
    t = cfg.trainer
    gradient_accumulation(t.global_batch_size, t.per_device_batch_size, world_size())  # raises unless it divides
    deepspeed_config(t.deepspeed)
    check_peft(cfg)
    chosen = kernels(cfg, on_gpu())
    for name, comp in cfg.data.items():
        mixture.check_present(name, comp, cfg.experiment.name)
    return {"model": model_path(cfg), "tokenizer": load_tokenizer(cfg), "kernels": chosen}


def model_path(cfg: DictConfig) -> str:
    """``model.name_or_path`` resolved to something ``from_pretrained`` loads, or an error saying what to pass."""
    if OmegaConf.is_missing(cfg.model, "name_or_path") or not cfg.model.name_or_path:
        raise TrainError(
            "model.name_or_path is not set: pass the student to train, e.g. "
            "model.name_or_path=/path/to/swallow-qwen3-8b-base (the paper's student, Qwen3-8B-Base "
            "continued-pretrained on Japanese; a local directory or a hub id), model=qwen3_8b_base "
            "(Qwen/Qwen3-8B-Base), or model=tiny_qwen3 (the built-in 2-layer student for CPU runs)."
        )
    from transformers import AutoConfig

    path = resolve_model(cfg.model.name_or_path)
    try:  # reads config.json only (local, or the hub's small file): cheap
        AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise TrainError(unloadable("model.name_or_path", cfg.model.name_or_path, e)) from None
    return path


def load_tokenizer(cfg: DictConfig):
    from transformers import AutoTokenizer

    name = cfg.model.tokenizer or cfg.model.name_or_path
    try:
        return AutoTokenizer.from_pretrained(resolve_model(name))
    except (OSError, ValueError) as e:
        raise TrainError(unloadable("model.tokenizer", name, e)) from None


def unloadable(key: str, name: str, e: Exception) -> str:
    return (f"{key}={name!r} cannot be loaded ({type(e).__name__}: {str(e).strip().splitlines()[0]}). Pass a "
            f"local directory made by save_pretrained, or a hub id that is reachable (or cached, offline).")


def zero_stage(deepspeed: str | None) -> int | None:
    if not deepspeed:
        return None
    return json.loads(Path(deepspeed).read_text()).get("zero_optimization", {}).get("stage", 0)


def innermost(optimizer):
    """The torch optimizer inside accelerate's / DeepSpeed's wrappers (each keeps it as ``.optimizer``)."""
    while hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer
    return optimizer


def trainable_parameters(model) -> int:
    """Parameters the optimizer updates (DeepSpeed ZeRO-3 keeps each one's full size in ``ds_numel``)."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad)


def effective_settings(cfg: DictConfig, args, state, model, optimizer, dataloader, data: dict[str, int]) -> dict:
    """What this run really does, read from the objects training uses (not from our config's intent)."""
    steps = state.max_steps
    sequences = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    # Per epoch, like Trainer: a last partial accumulation still makes an optimizer step.
    steps_per_epoch = math.ceil(len(dataloader) / args.gradient_accumulation_steps)
    packed = cfg.trainer.batching == "packed"
    examples_per_step = data["examples"] / steps_per_epoch if packed else sequences
    computed = cfg.trainer.max_length * data["examples"] if cfg.trainer.batching == "pad_to_context" else data["tokens"]
    inner = innermost(optimizer)
    groups = inner.param_groups  # what the optimizer applies (its ``defaults`` are the class's, not ours)
    hyper = {k: (list(v) if isinstance(v, tuple) else v) for k, v in groups[0].items() if k in ("betas", "eps")}
    hyper["lr"] = groups[0].get("initial_lr", groups[0]["lr"])
    hyper["weight_decay"] = sorted({g["weight_decay"] for g in groups})  # per group (norms/biases often 0)
    return {
        "optimizer": str(getattr(args.optim, "value", args.optim)),
        "optimizer_class": type(inner).__name__,
        "optimizer_hyperparameters": hyper,
        "lr_scheduler": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        "warmup_steps": args.get_warmup_steps(steps),
        "max_grad_norm": args.max_grad_norm,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "mixed_precision": "bf16" if args.bf16 else "no",
        "attn_implementation": data["attn_implementation"],
        "liger_kernel": args.use_liger_kernel,
        "gradient_checkpointing": args.gradient_checkpointing,
        "zero_stage": zero_stage(args.deepspeed),
        "world_size": args.world_size,
        "batching": cfg.trainer.batching,
        "per_device_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "sequences_per_step": sequences,  # rows of the global batch: one example each, or one packed window
        "examples_per_step": round(examples_per_step, 2),
        # tokens the model computes on (padding included) and trains on (labels != -100), per step
        "tokens_per_step": round(computed / data["examples"] * examples_per_step),
        "trained_tokens_per_step": round(data["trained_tokens"] / data["examples"] * examples_per_step),
        "optimizer_steps": steps,
        "peft": OmegaConf.to_container(cfg.trainer.peft) if cfg.trainer.peft.method else None,
        "trainable_parameters": trainable_parameters(model),
        # What trainer=padding_free / paper take on the same data (differs only in packed mode).
        "optimizer_steps_at_global_batch_examples": steps if not packed or args.max_steps > 0 else
        math.ceil(data["examples"] / cfg.trainer.global_batch_size) * math.ceil(args.num_train_epochs),
    }


class Provenance(TrainerCallback):
    """Writes the run's provenance when training starts (a run that failed before never overwrites a
    finished run's), with the effective settings, and puts those in the W&B config too."""

    def __init__(self, cfg: DictConfig, output_dir: Path, summary: dict[str, Any], record_ids: list[str],
                 data: dict[str, int], wandb_run: Any):
        self.cfg, self.output_dir, self.summary, self.record_ids = cfg, output_dir, summary, record_ids
        self.data, self.wandb_run = data, wandb_run

    def on_train_begin(self, args, state, control, model=None, optimizer=None, train_dataloader=None, **kwargs):
        effective = effective_settings(self.cfg, args, state, model, optimizer, train_dataloader, self.data)
        log.info("effective settings: %s", effective)
        if self.cfg.trainer.batching == "packed" and args.max_steps <= 0:  # (max_steps fixes the count)
            unpacked, steps = effective["optimizer_steps_at_global_batch_examples"], effective["optimizer_steps"]
            log.warning(
                "trainer.batching=packed changes the experiment: each of the %d sequences of an optimizer step is "
                "a window of %.1f examples on average, so this run takes %d optimizer steps where %d examples per "
                "step (Appendix C) take %d: %.1fx fewer updates. Use the default trainer=padding_free for the paper's "
                "trajectory without padding.", effective["sequences_per_step"],
                effective["examples_per_step"] / effective["sequences_per_step"], steps,
                self.cfg.trainer.global_batch_size, unpacked, unpacked / steps)
        if self.wandb_run is not None:
            self.wandb_run.config.update({"effective": effective}, allow_val_change=True)
        if state.is_world_process_zero:
            out = self.output_dir
            out.mkdir(parents=True, exist_ok=True)
            jsonl.write_atomic(out / "resolved_config.yaml", OmegaConf.to_yaml(self.cfg, resolve=True))
            jsonl.write_atomic(out / "manifest.json", json.dumps({**self.summary, "effective": effective}, indent=2,
                                                                 ensure_ascii=False))
            jsonl.write_atomic(out / "manifest_ids.txt", "\n".join(self.record_ids) + "\n")


def checkpoint_problem(ckpt: Path) -> str | None:
    """None when a checkpoint can be resumed from: its trainer state, weights and optimizer state all present
    and readable (the trainer writes trainer_state.json last). Else what is missing or unreadable.

    Cheap: JSON, safetensors headers and the zip directory at the end of each torch file; a file cut by a
    kill fails all three. (Transformers writes checkpoints in place and resumes from the highest number,
    torn or not; no library offers this check.)"""
    import zipfile

    import safetensors

    try:
        state = json.loads((ckpt / "trainer_state.json").read_text())
    except (OSError, ValueError) as e:
        return f"trainer_state.json missing or unreadable ({type(e).__name__})"
    if state.get("global_step") != int(ckpt.name.split("-")[1]):
        return f"trainer_state.json is for step {state.get('global_step')}"
    weights = sorted(ckpt.glob("*.safetensors"))
    optimizer = [ckpt / "optimizer.pt"] if (ckpt / "optimizer.pt").exists() else \
        sorted(ckpt.glob("global_step*/*optim_states.pt"))  # DeepSpeed's per-rank shards
    if not weights:
        return "no weights (*.safetensors)"
    if not optimizer:
        return "no optimizer state (optimizer.pt or DeepSpeed's global_step*/*optim_states.pt)"
    for f in weights:
        try:
            with safetensors.safe_open(f, "pt"):
                pass
        except (OSError, safetensors.SafetensorError) as e:
            return f"{f.name} unreadable ({e})"
    for f in (f for f in ckpt.rglob("*") if f.suffix in (".pt", ".pth", ".bin")):
        try:
            zipfile.ZipFile(f).close()
        except (OSError, zipfile.BadZipFile) as e:
            return f"{f.relative_to(ckpt)} unreadable ({e})"
    return None


def resume_checkpoint(output_dir: Path, rank0: bool) -> str | None:
    """The newest complete ``checkpoint-N`` of ``output_dir``; newer torn ones (a kill during a save) are
    moved aside to ``checkpoint-N.torn`` by rank 0, with a warning, so that no later run picks them."""
    steps = sorted((int(p.name.split("-")[1]), p) for p in output_dir.glob("checkpoint-*")
                   if p.is_dir() and p.name.split("-")[1].isdigit())
    for _, ckpt in reversed(steps):
        problem = checkpoint_problem(ckpt)
        if problem is None:
            return str(ckpt)
        aside = ckpt.with_name(ckpt.name + ".torn")
        n = 1
        while aside.exists():
            aside, n = ckpt.with_name(f"{ckpt.name}.torn{n}"), n + 1
        if rank0:  # the other ranks skip it as well
            log.warning("%s is incomplete (%s), probably killed while saving: moved to %s; resuming from an "
                        "earlier checkpoint", ckpt, problem, aside.name)
            os.replace(ckpt, aside)
    return None


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train, or raise ``TrainError``/``MixtureError`` before anything is written."""
    checked = preflight(cfg)
    export_slurm_distributed_env()
    from trl import SFTTrainer

    tokenizer = checked["tokenizer"]
    examples, manifest = mixture.build(cfg, tokenizer)
    dataset, overlength, _ = tokenize_mixture(examples, tokenizer, cfg)
    manifest.record_ids = list(dataset["id"])  # after the over-length policy: exactly what is trained on
    summary = {**manifest.summary(), "overlength": overlength, "max_length": cfg.trainer.max_length}
    log.info("mixture: %d examples (%s)", len(dataset), {k: v["used"] for k, v in manifest.components.items()})

    output_dir = Path(cfg.output_dir)
    data = {**dataset_facts(dataset), "attn_implementation": checked["kernels"]["attn_implementation"]}
    # The training arguments first: under ZeRO-3 they register the DeepSpeed config that makes
    # from_pretrained partition the weights across ranks as it loads them (deepspeed.zero.Init), and
    # asking for their device sets up torch.distributed, which zero.Init needs (as HF's example scripts do).
    args = sft_config(cfg, output_dir, checked["kernels"]["liger_kernel"])
    log.info("device %s, world size %d, process %d", args.device, args.world_size, args.process_index)
    if zero_stage(args.deepspeed) == 3:
        import deepspeed

        # zero.Init partitions over DeepSpeed's own communicator, which accelerate starts only on GPU;
        # on an initialised torch.distributed (gloo on CPU) this wraps it, elsewhere it is a no-op.
        deepspeed.init_distributed()
    trainer = SFTTrainer(
        model=load_model(cfg, checked["model"], checked["kernels"]["attn_implementation"]),
        args=args,
        train_dataset=dataset.remove_columns(["id", "component"]),
        processing_class=tokenizer,
        peft_config=peft_config(cfg),
    )
    wandb_run = start_wandb(cfg)
    trainer.add_callback(Provenance(cfg, output_dir, summary, manifest.record_ids, data, wandb_run))
    last = resume_checkpoint(output_dir, trainer.is_world_process_zero())
    if last:
        log.info("resuming from %s", last)
    result = trainer.train(resume_from_checkpoint=last)
    save_final(trainer, tokenizer, cfg, output_dir)
    metrics = {
        "experiment": cfg.experiment.name,
        "paper_id": cfg.experiment.paper_id,
        "train_loss": result.training_loss,
        "global_step": trainer.state.global_step,
        "resumed_from": last,
        "n_examples": len(dataset),
        "output_dir": str(output_dir),
        "wandb_run_id": wandb_run.id if wandb_run is not None else None,
        "peak_gpu_memory_gib": peak_gpu_memory_gib(),
    }
    if trainer.is_world_process_zero():
        jsonl.write_atomic(output_dir / "train_metrics.json", json.dumps(metrics, indent=2))
    if wandb_run is not None:
        wandb_run.finish()
    return metrics
