"""The training mixture of an experiment (Table 1): which records of which component, how many.

An experiment names its components (``data.<name>`` from ``conf/data/``) and a count per domain; the
components of one domain share that count equally (``core.student.component_counts``). Each component's
records are checked against the triple schema, filtered (quality flags ``mixture.exclude_flags``; traces
longer than ``mixture.max_trace_tokens`` student tokens), sampled with a fixed seed, rendered as chat
messages (``core.student.messages``) and shuffled. The filters are per experiment and recorded in the
manifest, so "experiment 3 without looping or over-long traces" is an experiment of its own
(conf/experiment/stem_r1_en_1500k__clean.yaml).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from core import jsonl
from core.student import MixtureError, component_counts, messages, rendered_lengths
from core.triple import Triple


log = logging.getLogger(__name__)


def check_present(name: str, comp: DictConfig, experiment: str) -> None:
    """A local component must have shards (cheap: a directory listing, no record read)."""
    if comp.get("hub_id"):
        return
    path = Path(comp.path)
    if not jsonl.shards(path):
        raise MixtureError(
            f"component {name!r} has no data: no *.jsonl shards in {path}. Make it with "
            f"`python -m synth experiment={experiment}` (or point data.{name}.path / data.{name}.hub_id "
            f"at existing triples)."
        )


def load_component(name: str, comp: DictConfig, experiment: str) -> list[dict[str, Any]]:
    """All records of one component (local synthesized shards, or a hub dataset in the triple schema),
    each checked against the triple schema: a bad one is an error naming its file, position and id."""
    if comp.get("hub_id"):
        import datasets

        rows = datasets.load_dataset(comp.hub_id, split="train")
        return [checked(r, name, f"{comp.hub_id} row {i}") for i, r in enumerate(rows)]
    check_present(name, comp, experiment)
    return [checked(r, name, f"{shard} record {i}")
            for shard in jsonl.shards(Path(comp.path)) for i, r in enumerate(jsonl.read(shard), 1)]


def checked(record: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    try:
        Triple.from_dict(record)
        for key in ("instruction", "response"):
            if not isinstance(record[key], str):
                raise ValueError(f"record {record['id']}: {key} is {type(record[key]).__name__}, not text")
    except (AttributeError, TypeError, ValueError) as e:
        raise MixtureError(
            f"component {name!r}: {where} is not a triple ({e}). Every record needs the fields of "
            f"core/triple.py (id, instruction, trace, response, ...); fix the record or re-synthesize it."
        ) from None
    return record


@dataclass
class Manifest:
    """What went into training, per component; written next to the model."""

    experiment: str
    components: dict[str, dict[str, Any]] = field(default_factory=dict)
    record_ids: list[str] = field(default_factory=list)

    filters: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "n_records": len(self.record_ids), "filters": self.filters,
                "components": self.components}


def over_budget(records: list[dict[str, Any]], tokenizer, budget: int, batch: int = 256) -> set[str]:
    """Ids of the records whose trace is longer than ``budget`` student tokens (counted as synth's
    ``over_budget`` flag and Table 1 count them: ``core.student.rendered_lengths``)."""
    over = set()
    with_trace = [r for r in records if r.get("trace")]
    for i in range(0, len(with_trace), batch):
        chunk = with_trace[i:i + batch]
        lengths = rendered_lengths(tokenizer, [(r["trace"], r["response"]) for r in chunk])
        over.update(r["id"] for r, (_, n_trace) in zip(chunk, lengths) if n_trace > budget)
    return over


def build(cfg: DictConfig, tokenizer=None) -> tuple[list[dict[str, Any]], Manifest]:
    """Sample every component of the experiment and return shuffled chat examples + the manifest.
    ``tokenizer`` (the student's) is needed only for a trace budget (``mixture.max_trace_tokens``)."""
    counts = component_counts(cfg)
    mix = cfg.mixture
    excluded_flags = set(mix.exclude_flags)
    budget = mix.get("max_trace_tokens")
    if budget is not None and tokenizer is None:
        raise MixtureError("mixture.max_trace_tokens counts student tokens: build the mixture with its tokenizer")
    manifest = Manifest(experiment=cfg.experiment.name,
                        filters={"exclude_flags": sorted(excluded_flags), "max_trace_tokens": budget})
    examples: list[dict[str, Any]] = []
    for name, comp in cfg.data.items():
        records = load_component(name, comp, cfg.experiment.name)
        usable = [r for r in records if not excluded_flags.intersection(r.get("flags") or [])]
        if comp.keep_trace:
            usable = [r for r in usable if r.get("trace")]
        n_over = 0
        if budget is not None and comp.keep_trace:
            over = over_budget(usable, tokenizer, budget)
            usable = [r for r in usable if r["id"] not in over]
            n_over = len(over)
        want = counts[name]
        if len(usable) < want and mix.shortfall == "error":
            budget_note = f", {n_over} of them over mixture.max_trace_tokens={budget}" if budget is not None else ""
            raise MixtureError(
                f"component {name!r} has {len(usable)} usable records in {comp.path} "
                f"({len(records) - len(usable)} excluded by flags/missing trace{budget_note}) but the experiment "
                f"needs {want}. Synthesize more (`python -m synth experiment={cfg.experiment.name}`) or set "
                f"mixture.shortfall=use_all."
            )
        if len(usable) < want:
            log.warning("component %s: %d usable records, fewer than its share %d (mixture.shortfall=use_all)",
                        name, len(usable), want)
        # Seeded per component so adding a component never changes another one's sample.
        rng = random.Random(f"{mix.seed}:{name}")
        chosen = rng.sample(usable, min(want, len(usable)))
        manifest.components[name] = {
            "requested": want,
            "available": len(records),
            "excluded": len(records) - len(usable),
            "flag_counts": dict(Counter(f for r in records for f in (r.get("flags") or []))),
            "excluded_flags": dict(Counter(f for r in records for f in (r.get("flags") or []) if f in excluded_flags)),
            "over_trace_budget": n_over,
            "used": len(chosen),
            "keep_trace": bool(comp.keep_trace),
            "source": comp.get("hub_id") or str(comp.path),
        }
        examples += [
            {"id": r["id"], "component": name, "messages": messages(r, comp.keep_trace, mix.no_trace)}
            for r in chosen
        ]
    random.Random(mix.seed).shuffle(examples)
    manifest.record_ids = [e["id"] for e in examples]
    return examples, manifest
