"""The one schema for an ⟨instruction, trace, response⟩ record, shared by synth, train and analysis."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any

DOMAINS = ("stem", "chat")
LANGS = ("en", "ja")
# Quality flags a record can carry; the synth stage counts them and a policy decides what is excluded.
# looping_trace: the trace ends in a loop (core.loops); over_budget: the trace is longer than
# synth.max_trace_tokens student tokens (synth.checks).
FLAGS = ("truncated", "unclosed_think", "empty_response", "missing_trace", "malformed", "looping_trace",
         "over_budget")


def record_id(source: str, prompt: str, *salt: str) -> str:
    """Stable id of a record: a hash of where the prompt came from and the prompt itself.

    ``salt`` separates records that share a prompt but differ in generation (teacher, effort, language).
    """
    h = hashlib.sha256("\x1f".join((source, prompt, *salt)).encode("utf-8"))
    return h.hexdigest()[:24]


@dataclass
class Triple:
    id: str
    component: str
    domain: str
    source: str
    lang_input: str
    lang_trace: str | None
    teacher: str
    instruction: str
    trace: str | None
    response: str
    reasoning_effort: str | None = None
    finish_reason: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.domain not in DOMAINS:
            raise ValueError(f"record {self.id}: domain {self.domain!r} is not one of {DOMAINS}")
        if self.lang_input not in LANGS:
            raise ValueError(f"record {self.id}: lang_input {self.lang_input!r} is not one of {LANGS}")
        unknown = set(self.flags) - set(FLAGS)
        if unknown:
            raise ValueError(f"record {self.id}: unknown flags {sorted(unknown)}; known: {FLAGS}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Triple":
        names = {f.name for f in fields(cls)}
        required = {"id", "component", "domain", "source", "lang_input", "lang_trace", "teacher",
                    "instruction", "trace", "response"}
        missing = required - d.keys()
        if missing:
            raise ValueError(f"record {d.get('id', '?')}: missing fields {sorted(missing)}")
        return cls(**{k: v for k, v in d.items() if k in names})
