"""Checks on a teacher's trace beyond what the reply itself says: does it end in a loop, and is it longer
than a token budget?

- ``looping_trace``: ``core.loops.find_loop`` (the detector evaluate runs on student generations) finds a
  periodic tail in the trace. It runs on the trace's *text*: synth has no token ids of the trace, and the
  text keeps the flag independent of whether a tokenizer is loaded, so a record gets the same flag when it
  is made (synth.generate) and when records already on disk are flagged again (synth.reflag).
- ``over_budget``: the trace is longer than ``synth.max_trace_tokens`` tokens under the student tokenizer,
  counted by ``core.student.rendered_lengths``, the same counting as the Table 1 statistics (synth.stats).

Which of the two run is configured (``synth.loops.enabled``, ``synth.max_trace_tokens``); a check that
does not run neither sets nor clears its flag.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.loops import find_loop
from core.student import rendered_lengths


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
