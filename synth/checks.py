"""Checks on a teacher's trace beyond what the reply itself says: does it end in a loop, and is it longer
than a token budget?

- ``looping_trace``: ``core.loops.find_loop`` (the detector evaluate runs on student generations) finds a
  periodic tail in the trace. It runs on the trace's *text*: synth has no token ids of the trace, and the
  text keeps the flag independent of whether a tokenizer is loaded, so a record gets the same flag when it
  is made (synth.generate) and when records already on disk are flagged again (synth.reflag).
- ``over_budget``: the trace is longer than ``synth.max_trace_tokens`` tokens under the student tokenizer,
  counted by :func:`rendered_lengths`, the same counting as the Table 1 statistics (synth.stats).

Which of the two run is configured (``synth.loops.enabled``, ``synth.max_trace_tokens``); a check that
does not run neither sets nor clears its flag.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core import think
from core.loops import find_loop


def rendered_lengths(tokenizer: Any, pairs: Sequence[tuple[str | None, str]],
                     keep_trace: bool = True) -> list[tuple[int, int]]:
    """For each (trace, response): (tokens of the assistant turn the student learns, of them the tokens that
    start inside the trace).

    The turn is ``core.think.format_assistant(trace, response)`` (the bare response without ``keep_trace``),
    tokenized without special tokens: Table 1's count. The trace's tokens come from the same tokenization,
    through the fast tokenizer's character offsets, so the second count costs no second tokenization
    (bench/results/synth_checks.md); it equals tokenizing the trace alone but where a token spans its edge
    (the trace's last ``.`` and the newline after it are one Qwen3 token, counted as the trace's)."""
    if not pairs:
        return []
    texts = [think.format_assistant(t if keep_trace else None, r) for t, r in pairs]
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for text, (trace, _), offsets in zip(texts, pairs, enc["offset_mapping"]):
        n_trace = 0
        if keep_trace and trace:
            a = text.index(trace)  # format_assistant keeps the trace verbatim
            n_trace = bisect_left(offsets, a + len(trace), key=_start) - bisect_left(offsets, a, key=_start)
        out.append((len(offsets), n_trace))
    return out


def _start(span: tuple[int, int]) -> int:
    return span[0]


@dataclass(frozen=True)
class TraceChecks:
    loops: dict[str, Any] | None = None   # find_loop's knobs; None: traces are not searched for loops
    max_trace_tokens: int | None = None   # None: no budget
    tokenizer: Any = None                 # the student tokenizer (for the budget)

    def __post_init__(self) -> None:
        if self.max_trace_tokens is not None and self.tokenizer is None:
            raise ValueError("a trace budget (synth.max_trace_tokens) is counted in student tokens: give a tokenizer")

    @property
    def owned(self) -> tuple[str, ...]:
        """The flags these checks decide (set or clear)."""
        return (("looping_trace",) if self.loops is not None else ()) + \
            (("over_budget",) if self.max_trace_tokens is not None else ())

    def flags(self, trace: str | None, response: str) -> list[str]:
        """The flags a record's ``trace`` earns (a record without a trace earns none)."""
        out = []
        if trace and self.loops is not None and find_loop(trace, **self.loops) is not None:
            out.append("looping_trace")
        if trace and self.max_trace_tokens is not None and \
                rendered_lengths(self.tokenizer, [(trace, response)])[0][1] > self.max_trace_tokens:
            out.append("over_budget")
        return out

    def reflag(self, flags: Sequence[str], trace: str | None, response: str) -> list[str]:
        """``flags`` with the ones these checks own decided anew from the record; the others unchanged."""
        return [f for f in flags if f not in self.owned] + self.flags(trace, response)
