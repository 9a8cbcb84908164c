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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core import think
from core.loops import find_loop


def rendered_lengths(tokenizer: Any, pairs: Sequence[tuple[str | None, str]],
                     keep_trace: bool = True) -> list[tuple[int, int]]:
    """For each (trace, response): (tokens of the assistant turn the student learns, of them the tokens that
    hold a character of the trace).

    The turn is ``core.think.format_assistant(trace, response)`` (the bare response without ``keep_trace``),
    tokenized without special tokens: Table 1's count. The trace's tokens come from the same tokenization
    (``BatchEncoding.char_to_token``: the tokens holding its first and last characters), so the second count
    costs no second tokenization and no offset lists (bench/results/synth_checks.md). It equals tokenizing
    the trace alone but where a token spans one of the trace's edges (Qwen3 makes the trace's last ``.`` and
    the newline after it one token, counted as the trace's): 1 or 2 tokens more or fewer on a few % of
    records."""
    if not pairs:
        return []
    texts = [think.format_assistant(t if keep_trace else None, r) for t, r in pairs]
    enc = tokenizer(texts, add_special_tokens=False, return_attention_mask=False)
    out = []
    for i, (text, (trace, _)) in enumerate(zip(texts, pairs)):
        n_trace = 0
        if keep_trace and trace:
            a = text.index(trace, len(think.OPEN))  # format_assistant keeps the trace verbatim after the tag
            first, last = enc.char_to_token(i, a), enc.char_to_token(i, a + len(trace) - 1)
            if first is None or last is None:  # a character no token holds (a normalizer dropped it)
                n_trace = len(tokenizer(trace, add_special_tokens=False)["input_ids"])
            else:
                n_trace = last - first + 1
        out.append((len(enc["input_ids"][i]), n_trace))
    return out


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
