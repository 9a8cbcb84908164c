"""The train stage's default batching against what a user would run instead, on the same data and work.

Four ways to train one epoch over the same tokenized records (labels on the assistant turn only):
- ``default``: this project's ``trainer=padding_free`` through the real train code (``sft.tokenize_mixture``,
  ``sft.sft_config``, the provenance callback): Appendix C's optimizer steps, each micro-batch collated
  padding-free;
- ``trl_packing``: plain ``trl.SFTTrainer`` with ``packing=True`` (best-fit-decreasing windows, TRL's
  defaults): the same tokens in far fewer optimizer steps;
- ``trl_pad_longest``: plain ``trl.SFTTrainer`` without packing: each micro-batch padded to its longest;
- ``paper``: ``trainer=paper``, every sequence padded to the context (Appendix C).

Length mix shaped like Table 1, scaled to the tiny student: each component's mean trace+response length as a
fraction of the paper's 32,768 context (OSS 2.3k, R1 9.3k, OSS-h 7.7k, chat 0.8k / 1.4k) applied to a
512-token context, lognormal spread. Each round runs every mode once, the order rotated by one between
rounds; a mode's figure is its median over rounds. Timed: ``trainer.train()`` only (model loading and
tokenization are the same for every mode), wall time and this process's CPU time. "Trained tokens" are
labels != -100, the same number in every mode.

Goals: default ≥ 0.95× the best plain-TRL mode, and ≥ 3× paper, in trained tokens per second.

Run: OMP_NUM_THREADS=1 .venv/bin/python bench/bench_packing.py [rounds, default 3]   (writes bench/results/packing.md)
"""

from __future__ import annotations

import datetime
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hydra import compose, initialize_config_dir  # noqa: E402

from core import student  # noqa: E402
from core.assets import tiny_student_dir  # noqa: E402
from train import sft  # noqa: E402

CONTEXT = 512
PAPER_CONTEXT = 32768
MICRO_BATCH = 8  # per-device examples of the default and pad-to-longest; the knob that sets tokens per forward
GLOBAL_BATCH = 16  # examples per optimizer step (Appendix C: 64)
PACKED_MICRO_BATCH = 2  # windows per micro-batch of trl_packing (~ the default's tokens per forward)
# (mean tokens in the paper, share of records): Table 1's components.
MIX = [(2300, 0.25), (9300, 0.35), (7700, 0.1), (800, 0.15), (1400, 0.15)]
N_RECORDS = 64
WORDS = "the answer is so we check again but maybe consider another case thus".split()
MODES = ("default", "trl_packing", "trl_pad_longest", "paper")


def records(rng: random.Random) -> list[dict]:
    out = []
    for i in range(N_RECORDS):
        mean, _ = rng.choices(MIX, weights=[w for _, w in MIX])[0]
        target = int(min(CONTEXT - 40, max(16, rng.lognormvariate(0, 0.5) * mean * CONTEXT / PAPER_CONTEXT)))
        trace = " ".join(rng.choice(WORDS) for _ in range(target))
        out.append({"id": f"r{i}", "instruction": f"Question {i}?", "trace": trace, "response": "Answer."})
    return out


def train_cfg(tmp: Path, mode: str):
    trainer = {"default": ["trainer=padding_free", f"trainer.per_device_batch_size={MICRO_BATCH}"],
               "paper": ["trainer=paper", "trainer.per_device_batch_size=1"]}[mode]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[
            "experiment=demo_stem_en", "logger=none", *trainer, f"trainer.max_length={CONTEXT}",
            f"trainer.global_batch_size={GLOBAL_BATCH}", "trainer.deepspeed=null", "trainer.num_train_epochs=1",
            "trainer.learning_rate=1e-3", "trainer.save_steps=100000", "trainer.logging_steps=100000",
            "trainer.dataloader_num_workers=0", f"output_dir={tmp / mode}", f"paths.root={tmp}"])


def plain_trl_config(tmp: Path, mode: str):
    """What a user of plain TRL writes: TRL's defaults, our batch sizes and learning rate."""
    from trl import SFTConfig

    per_device = PACKED_MICRO_BATCH if mode == "trl_packing" else MICRO_BATCH
    return SFTConfig(output_dir=str(tmp / mode), packing=mode == "trl_packing", max_length=CONTEXT,
                     per_device_train_batch_size=per_device,
                     gradient_accumulation_steps=1 if mode == "trl_packing" else GLOBAL_BATCH // MICRO_BATCH,
                     learning_rate=1e-3, num_train_epochs=1, save_strategy="no", logging_steps=100000,
                     report_to=[], use_cpu=True, seed=42, dataloader_num_workers=0)


def measure(mode: str, dataset, tok, tmp: Path) -> dict:
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    model = AutoModelForCausalLM.from_pretrained(tiny_student_dir(), attn_implementation="sdpa")
    columns = dataset.remove_columns(["id", "component"])
    if mode in ("default", "paper"):
        cfg = train_cfg(tmp, mode)
        trainer = SFTTrainer(model=model, args=sft.sft_config(cfg, tmp / mode), train_dataset=columns,
                             processing_class=tok)
        facts = {**sft.dataset_facts(dataset), "attn_implementation": "sdpa"}
        trainer.add_callback(sft.Provenance(cfg, tmp / mode, {}, list(dataset["id"]), facts, None))
    else:
        trainer = SFTTrainer(model=model, args=plain_trl_config(tmp, mode), train_dataset=columns,
                             processing_class=tok)
    rows = len(trainer.train_dataset)  # examples, or packed windows
    batches = list(trainer.get_train_dataloader())
    computed = sum(b["input_ids"].numel() for b in batches)  # what the model computes on, padding included
    trained = sum(int((b["labels"] != -100).sum()) for b in batches)
    wall, cpu = time.perf_counter(), time.process_time()
    trainer.train()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"mode": mode, "steps": trainer.state.global_step, "rows": rows, "computed": computed, "trained": trained,
            "wall": wall, "cpu": cpu}


def main(rounds: int) -> None:
    from transformers import AutoTokenizer

    recs = records(random.Random(0))
    tok = AutoTokenizer.from_pretrained(tiny_student_dir())
    examples = [{"id": r["id"], "component": "bench", "messages": student.messages(r, True, "response_only")}
                for r in recs]
    load_start = os.getloadavg()[0]
    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        dataset, _, _ = sft.tokenize_mixture(examples, tok, train_cfg(tmp, "default"))
        for r in range(rounds):
            order = MODES[r % len(MODES):] + MODES[:r % len(MODES)]
            for mode in order:
                runs[mode].append(measure(mode, dataset, tok, tmp))
                print(runs[mode][-1], flush=True)
    load_end = os.getloadavg()[0]
    trained = {runs[m][0]["trained"] for m in MODES}
    assert len(trained) == 1, f"modes trained different tokens: { {m: runs[m][0]['trained'] for m in MODES} }"
    (n_trained,) = trained
    med = {m: {k: statistics.median(x[k] for x in runs[m]) for k in ("wall", "cpu")} for m in MODES}
    rate = {m: {k: n_trained / med[m][k] for k in ("wall", "cpu")} for m in MODES}
    best_trl = max(("trl_packing", "trl_pad_longest"), key=lambda m: rate[m]["cpu"])
    windows = runs["trl_packing"][0]["rows"]
    rows = "\n".join(
        f"| {m} | {runs[m][0]['steps']} | {n_trained} | {runs[m][0]['computed']} | "
        f"{n_trained / runs[m][0]['computed']:.1%} | {med[m]['cpu']:.1f} | {med[m]['wall']:.1f} | "
        f"{rate[m]['cpu']:.0f} | {rate[m]['wall']:.0f} | "
        f"{', '.join(format(x['cpu'], '.1f') for x in runs[m])} |" for m in MODES)

    def ratio(a: str, b: str) -> str:
        return f"**{rate[a]['cpu'] / rate[b]['cpu']:.2f}×** CPU time, {rate[a]['wall'] / rate[b]['wall']:.2f}× wall time"

    report = f"""# Default batching vs plain TRL vs the paper's padding: SFT throughput

Recorded {datetime.date.today()} on {platform.machine()} ({os.cpu_count()} cores, shared with other jobs: load
average {load_start:.1f} at the start, {load_end:.1f} at the end), torch CPU, one thread, tiny Qwen3 student
(2 layers, hidden 64, the real 151k-token Qwen3 vocabulary), {N_RECORDS} records with Table 1's length mix scaled
to a {CONTEXT}-token context, one epoch, {rounds} rounds with the order rotated, medians.
Command: `OMP_NUM_THREADS=1 .venv/bin/python bench/bench_packing.py {rounds}`

| mode | optimizer steps | trained tokens (labels ≠ −100) | computed tokens | trained / computed | CPU s | wall s | trained tok/s (CPU) | trained tok/s (wall) | CPU s per round |
|---|---|---|---|---|---|---|---|---|---|
{rows}

- default ({GLOBAL_BATCH} examples per step, micro-batches of {MICRO_BATCH} collated padding-free) vs the best plain-TRL mode
  ({best_trl}): {ratio("default", best_trl)} (goal ≥ 0.95×).
- default vs trl_packing: {ratio("default", "trl_packing")}; vs trl_pad_longest: {ratio("default", "trl_pad_longest")}.
- default vs paper (every sequence padded to {CONTEXT}): {ratio("default", "paper")} (goal ≥ 3×).

The modes do the same work in tokens (every one trains the same {n_trained} tokens once), not in optimizer
steps: trl_packing packs ~{N_RECORDS / windows:.1f} examples into each of its {windows} windows of up to {CONTEXT} tokens and
takes {runs['trl_packing'][0]['steps']} optimizer steps of {PACKED_MICRO_BATCH} windows, where the default and the paper take
{runs['default'][0]['steps']} steps of {GLOBAL_BATCH} examples (a different trajectory; at the paper's scale, 64 windows of ~14 examples
per step, far fewer steps). The default computes no padding (trained / computed is below 100% only by the
prompt tokens), as trl_packing: both compute exactly the same tokens, so what separates them is the number
of forward passes and optimizer steps ({runs['default'][0]['steps']} vs {runs['trl_packing'][0]['steps']} AdamW updates of the tiny model's 9.8M parameters,
most of them its 151k × 64 embedding), not faster forwards. Pad-to-longest computes the padding of each
micro-batch; the paper every padded position. CPU time is this process's (one thread), less sensitive than wall time to the other jobs
on the machine; the ratios are the figures to quote, not the absolute seconds.
"""
    out = REPO / "bench" / "results" / "packing.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(report)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
