"""Table 1 statistics of a component: count, mean tokens of trace+response under the student tokenizer,
and PPL of trace+response under the base (pre-SFT) model, batched on CPU or GPU; beside the mean, the
50th/90th/99th percentiles of those tokens and of the trace's tokens among them.

The text measured is what the student learns: ``core.think.format_assistant(trace, response)`` (the
think-tagged trace, then the response; the bare response for a component with ``keep_trace: false``).
Trace tokens are the tokens of that same tokenization that hold a character of the trace
(``core.student.rendered_lengths``, as the ``over_budget`` flag counts them); a record without a trace has 0.
Percentiles are exact (nearest rank: the smallest length that at least that share of the records does not
exceed), from every length kept in a 4-byte array — 2.2 MB per column for a 550k-record component.
PPL is corpus-level, ``exp(Σ NLL / Σ tokens)`` over those tokens, conditioned on the chat-formatted
instruction, over a seeded random sample of ``ppl_samples`` records (all when null).
"""

from __future__ import annotations

import json
import logging
import math
import random
from array import array
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core import jsonl
from core.student import end_of_turn, messages, rendered_lengths, tokenize

log = logging.getLogger(__name__)


def perplexity(model: Any, tokenizer: Any, records: Sequence[dict[str, Any]], keep_trace: bool = True,
               batch_tokens: int = 16384, max_length: int = 32768, device: str | None = None) -> dict[str, Any]:
    """Corpus PPL of the assistant text given the prompt; sequences sorted by length and packed into
    batches of at most ``batch_tokens`` padded tokens; longer than ``max_length`` is cut on the right."""
    import torch

    device = device or next(model.parameters()).device
    items = []
    eot = end_of_turn(tokenizer)
    for r in records:
        # exactly the tokens the student trains on (core.student renders and tokenizes them)
        t = tokenize({"messages": messages(r, keep_trace, "response_only")}, tokenizer, eot)
        ids = t["input_ids"][:max_length]
        n_prompt = min(t["labels"].count(-100), len(ids))
        if len(ids) - n_prompt > 0:
            items.append((ids, n_prompt))
    items.sort(key=lambda x: len(x[0]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    nll, ntok, per_record = 0.0, 0, []
    i = 0
    model.eval()
    while i < len(items):
        j = i + 1
        while j < len(items) and len(items[j][0]) * (j - i + 1) <= batch_tokens:
            j += 1
        chunk = items[i:j]
        width = len(chunk[-1][0])
        input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        attn = torch.zeros((len(chunk), width), dtype=torch.long)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        for k, (ids, n_prompt) in enumerate(chunk):
            input_ids[k, :len(ids)] = torch.tensor(ids)
            attn[k, :len(ids)] = 1
            labels[k, n_prompt:len(ids)] = torch.tensor(ids[n_prompt:])
        input_ids, attn, labels = input_ids.to(device), attn.to(device), labels.to(device)
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=attn).logits.float()
        shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
        loss = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)),
                                                 shift_labels.reshape(-1), ignore_index=-100, reduction="none")
        loss = loss.view(shift_labels.shape)
        mask = shift_labels != -100
        for k in range(len(chunk)):
            s, n = float(loss[k][mask[k]].sum()), int(mask[k].sum())
            nll, ntok = nll + s, ntok + n
            per_record.append(math.exp(s / n) if n else float("nan"))
        i = j
    return {"ppl": math.exp(nll / ntok) if ntok else None, "ppl_tokens": ntok,
            "ppl_mean_of_records": sum(per_record) / len(per_record) if per_record else None,
            "ppl_records": len(per_record)}


def load_model(name_or_path: str, device: str = "auto", dtype: str = "auto"):
    import torch
    from transformers import AutoModelForCausalLM

    from core.assets import resolve_model

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(resolve_model(name_or_path), dtype=torch_dtype)
    return model.to(device), device


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    from core.assets import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model(name_or_path))


def component_stats(component: str, out_dir: Path, work_dir: Path, *, keep_trace: bool = True,
                    tokenizer: Any = None, tokenizer_name: str | None = None, model: Any = None,
                    model_name: str | None = None, ppl_samples: int | None = 2000, seed: int = 42,
                    batch_tokens: int = 16384, max_length: int = 32768, token_batch: int = 512) -> dict[str, Any]:
    """The stats.json dict of one component (contract in docs/contracts.md, extra keys allowed).

    One streaming pass over the shards (first record of each id): counts, flags, token lengths in batches
    (trace+response and the trace alone, one int each per record), and a seeded reservoir sample of
    ``ppl_samples`` records for the PPL.
    """
    seen: set[str] = set()
    flag_counts: Counter = Counter()
    teachers: Counter = Counter()
    langs: Counter = Counter()
    count = with_trace = 0
    batch: list[tuple[str | None, str]] = []  # (trace, response)
    lengths, trace_lengths = array("I"), array("I")  # tokens per record: 4 bytes each
    rng = random.Random(seed)
    sample: list[dict[str, Any]] = []
    k = int(ppl_samples) if ppl_samples else None

    def flush() -> None:
        if batch and tokenizer is not None:
            for n, n_trace in rendered_lengths(tokenizer, batch, keep_trace):
                lengths.append(n)
                if keep_trace:
                    trace_lengths.append(n_trace)
        batch.clear()

    for rec in jsonl.read_dir(out_dir) if Path(out_dir).exists() else ():
        if rec["id"] in seen:
            continue
        seen.add(rec["id"])
        count += 1
        flag_counts.update(rec.get("flags") or [])
        teachers[rec.get("teacher")] += 1
        langs[rec.get("lang_input")] += 1
        with_trace += bool(rec.get("trace"))
        batch.append((rec.get("trace"), rec.get("response") or ""))
        if len(batch) >= token_batch:
            flush()
        slim = {"instruction": rec.get("instruction") or "", "trace": rec.get("trace"),
                "response": rec.get("response") or ""}
        if k is None or len(sample) < k:
            sample.append(slim)
        else:
            j = rng.randrange(count)
            if j < k:
                sample[j] = slim
    flush()
    rejected = 0
    rej_dir = Path(work_dir) / "rejected"
    for rec in jsonl.read_dir(rej_dir) if rej_dir.exists() else ():
        if rec["id"] in seen:
            continue
        seen.add(rec["id"])
        rejected += 1
        flag_counts.update(rec.get("flags") or [])
    out: dict[str, Any] = {
        "component": component, "count": count, "mean_tokens": None, "ppl": None,
        "tokenizer": tokenizer_name, "ppl_model": model_name if (model is not None and keep_trace) else None,
        "flag_counts": dict(flag_counts), "rejected": rejected, "keep_trace": keep_trace,
        "with_trace": with_trace, "teachers": dict(teachers), "lang_input": dict(langs),
    }
    out.update(length_stats("tokens", lengths))
    out.update(length_stats("trace_tokens", trace_lengths))
    if model is not None and keep_trace and sample:
        out.update(perplexity(model, tokenizer, sample, keep_trace, batch_tokens, max_length))
        out["ppl_samples"] = len(sample)
    return out


PERCENTILES = (50, 90, 99)


def length_stats(name: str, lengths: array) -> dict[str, float | int | None]:
    """``mean_<name>`` and ``<name>_p50/p90/p99`` of token lengths (all None when there are none).
    Percentiles by nearest rank (``inverted_cdf``): a length some record has."""
    out: dict[str, float | int | None] = {f"mean_{name}": sum(lengths) / len(lengths) if lengths else None}
    values = np.percentile(np.asarray(lengths), PERCENTILES, method="inverted_cdf") if lengths else [None] * 3
    out.update({f"{name}_p{q}": None if v is None else int(v) for q, v in zip(PERCENTILES, values)})
    return out


def write_stats(path: Path, stats: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    jsonl.write_atomic(path, json.dumps(stats, indent=1, ensure_ascii=False))
