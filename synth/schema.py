"""The keys a mixture component (``conf/data/*.yaml``), a teacher (``conf/teacher/*.yaml``) and the trace
checks (``synth.loops``, ``synth.max_trace_tokens``, ``synth.flag_policy``) may have.

Hydra composes YAML files without a schema, so a misspelt key (``reasoning_efort: high``) would be
silently ignored and the run would fall back to another value. :func:`check_component`,
:func:`check_teacher` and :func:`check_trace_checks` compare each node with the dataclasses below: an
unknown key is an error naming the key, where it is, the closest valid key and all valid keys; OmegaConf
then checks the types.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from core.config import CONF, check_known, check_schema, declared, positive_int
from core.loops import find_loop
from core.triple import FLAGS



@dataclass
class Component:
    """A mixture component (Table 1): what synth makes and train reads."""

    name: str
    domain: str                          # stem | chat
    lang_input: str                      # en | ja
    lang_trace: str | None
    teacher: str                         # a teacher config's ``name``, or ``fixture``
    reasoning_effort: str | None
    keep_trace: bool
    prompt_source: str                   # a synth.sources entry, ``<source>_ja``, or ``fixture``
    path: str                            # where the JSONL shards live
    hub_id: str | None = None            # or a dataset already in the triple schema


@dataclass
class Serve:
    """``teacher.serve``: the stage starts ``transformers serve`` on this local model for the run."""

    model: str
    device: str = "cpu"
    args: list[str] = field(default_factory=list)


@dataclass
class Endpoint:
    """One entry of ``teacher.endpoints`` when it is not a plain URL."""

    base_url: str
    weight: float = 1.0
    api_key_env: str | None = None


@dataclass
class Teacher:
    """An OpenAI-compatible teacher. ``timeout``: seconds per request (the only request timeout)."""

    name: str
    model: str
    endpoints: list[Any] = field(default_factory=list)   # URLs or Endpoint mappings
    api_key_env: str | None = None
    reasoning_effort: str | None = None
    expects_trace: bool = True
    elicit_trace: str | None = None
    system: str | None = None
    sampling: dict[str, Any] = field(default_factory=dict)
    extra_body: dict[str, Any] = field(default_factory=dict)
    timeout: float = 3600.0
    serve: Serve | None = None


@dataclass
class Loops:
    """``synth.loops``: whether traces are searched for a loop, and ``core.loops.find_loop``'s knobs."""

    enabled: bool
    min_repeats: float
    min_share: float
    min_tokens: int
    tolerance: float


POLICIES = ("drop", "keep")


# Sampling parameters of the OpenAI chat API and of vLLM's extension of it; anything else a server
# accepts goes in ``extra_body`` (so that a misspelt sampling key is caught, not silently ignored).
SAMPLING = ("temperature", "top_p", "top_k", "min_p", "max_tokens", "max_completion_tokens", "min_tokens",
            "presence_penalty", "frequency_penalty", "repetition_penalty", "length_penalty", "seed", "stop",
            "stop_token_ids", "n", "logit_bias", "logprobs", "top_logprobs", "ignore_eos", "skip_special_tokens")


def check_component(key: str, node: dict[str, Any]) -> None:
    """``node`` (resolved) is the component ``data.<key>``."""
    where = f"data.{key}" + (f" (conf/data/{key}.yaml)" if (CONF / "data" / f"{key}.yaml").exists() else "")
    check_schema(node, Component, where)


def check_teacher(node: dict[str, Any], file: str | None = None) -> None:
    """``node`` (resolved) is the selected teacher config; ``file`` its name under conf/teacher/."""
    at = f" (conf/teacher/{file}.yaml)" if file else ""
    check_known(node, [f.name for f in fields(Teacher)], "teacher" + at)
    check_known(node.get("sampling") or {}, SAMPLING, "teacher.sampling" + at,
             " Other request fields go in teacher.extra_body.")
    if isinstance(node.get("serve"), dict):
        check_schema(node["serve"], Serve, "teacher.serve" + at)
    for i, e in enumerate(node.get("endpoints") or []):
        if not isinstance(e, str):
            check_schema(e, Endpoint, f"teacher.endpoints[{i}]{at}")
    check_schema(node, Teacher, "teacher" + at)


def check_stage(synth: dict[str, Any]) -> None:
    """``synth`` (the node, as composed with the experiment) holds only keys conf/synth.yaml declares."""
    hint = " (fix the experiment file or the override that sets it)"
    check_known(synth, declared("synth.yaml", node="synth"), "synth", hint)
    check_known(synth.get("retries"), declared("synth.yaml", node="synth.retries"), "synth.retries", hint)


def check_trace_checks(loops: Any, budget: Any, policy: dict[str, Any] | None) -> None:
    """``synth.loops`` (keys, types, and the detector's own range checks), ``synth.max_trace_tokens``
    (``budget``: null or a positive number of tokens) and ``synth.flag_policy`` (known flags, drop or keep)."""
    check_schema(loops, Loops, "synth.loops")
    knobs = {k: v for k, v in loops.items() if k != "enabled"}
    try:
        find_loop("", **knobs)  # the detector checks its knobs before looking at the sequence
    except (TypeError, ValueError) as e:
        raise ValueError(f"synth.loops: {e}") from None
    if budget is not None and not positive_int(budget):
        raise ValueError(f"synth.max_trace_tokens={budget!r}: a number of student tokens ≥ 1, or null for no budget")
    policy = policy or {}
    check_known(policy, FLAGS, "synth.flag_policy", " (the quality flags of core.triple.FLAGS)")
    bad = {k: v for k, v in policy.items() if v not in POLICIES}
    if bad:
        raise ValueError(f"synth.flag_policy: {bad}: each flag's policy is one of {POLICIES}")
