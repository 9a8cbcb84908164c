"""Failure anatomy: does the tail of a generation loop, and why did a sample fail?

``find_loop`` finds a periodic tail — the last part of a trace repeating one unit (a token, a phrase,
whole paragraphs) exactly or nearly: counters that increment ("Step 17: …", "Step 18: …") and small
edits still count. It runs on token ids (unit ``token``) or on text (unit ``char``: Japanese has no
spaces, so text is never split on whitespace). ``failure_kind`` turns that into why a sample failed.
evaluate runs both on student generations (token ids where the backend returns them), synth on
teacher traces (text).

How (written by hand: no library finds a near-periodic tail with edits — suffix-array and
autocorrelation tools find exact repeats, and gzip-ratio heuristics neither say where a loop starts
nor tell a loop from a table; see bench/results/loops.md). All steps are numpy passes, O(n log n):

1. Units: token ids as given, or the code points of text. Every n-gram (3 tokens / 6 chars) is hashed
   and the (hash, position) pairs sorted once: "where else does this n-gram occur?" is then a binary
   search, vectorised over all positions.
2. Candidate periods: the most frequent distances from the last n-grams to their previous occurrence,
   and to any of their last 8 occurrences — in a loop of period p every n-gram occurred p units
   earlier, even one that also recurs inside the period.
3. A unit is *repeated* for period p when it lies in an n-gram that also occurs p ± a small shift
   earlier (the shift absorbs a few inserted or deleted units). A counter's digit or an edited word
   is then the only unrepeated unit; a table whose numbers change in every row is mostly unrepeated.
4. The loop is the suffix maximising ``#repeated·tolerance − #unrepeated·(1 − tolerance)``: it
   reaches back as long as the unrepeated share stays under ``tolerance`` and stops where
   non-repeating text begins, instead of averaging it in. The periodic tail starts one period
   before its first repeated unit.
5. It counts when it spans ``min_repeats`` periods, ``min_share`` of the sequence and ``min_tokens``
   tokens; of several candidates the best-scoring tail wins (multiples of a period found are skipped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import get_args

import numpy as np

from core.think import Status

FAILURE_KINDS = ("loop", "runaway", "truncated_answer", "other")
STATUSES = get_args(Status)  # what core.think.parse says of a think block

_NGRAM = {"token": 3, "char": 6}  # n-gram length per unit: long enough that chance matches are rare
# Units inserted or deleted in one period that still leave it "the same period" (plus 1/32 of the period).
_SHIFT = {"token": 3, "char": 12}
_CANDIDATES = 4  # periods checked from each of two counts
_CHAIN = 8  # earlier occurrences of an n-gram looked at to find candidate periods
_MIN_PROBE = 64  # n-grams looked at, at least, to find candidate periods
_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier of the rolling hash


@dataclass(frozen=True)
class Loop:
    period: int  # length of the repeating unit, in `unit`s
    start: int  # index (in `unit`s of the analysed sequence) where the periodic tail begins
    repeats: float  # how many periods the tail spans
    unit: str  # "token" (token ids given) or "char" (text given)


def find_loop(seq: Sequence[int] | str, *, min_repeats: float = 3.0, min_share: float = 0.05,
              min_tokens: int = 128, tolerance: float = 0.25) -> Loop | None:
    """The periodic tail of ``seq`` (token ids or text), or None when its tail does not repeat.

    - ``min_repeats``: the tail must span at least this many periods (≥ 2);
    - ``min_share``: and at least this share of the whole sequence (0 ≤ min_share ≤ 1);
    - ``min_tokens``: and at least this many tokens (text: UTF-8 bytes / 4, about one Qwen3 token in
      English and in Japanese), so a short table or list ending a short text is not a loop;
    - ``tolerance``: the share of the tail's positions that may differ from one period earlier
      (counters, small edits), 0 < tolerance < 0.5.
    """
    if not min_repeats >= 2:
        raise ValueError(f"min_repeats={min_repeats!r}: a loop repeats at least twice; use a value ≥ 2")
    if not 0 <= min_share <= 1:
        raise ValueError(f"min_share={min_share!r}: a share of the sequence, use a value in [0, 1]")
    if not min_tokens >= 0:
        raise ValueError(f"min_tokens={min_tokens!r}: a length in tokens, use a value ≥ 0")
    if not 0 < tolerance < 0.5:
        raise ValueError(f"tolerance={tolerance!r}: use a share in (0, 0.5) (more would accept non-repeating text)")
    units, unit = _units(seq)
    n, k = len(units), _NGRAM[unit]
    if n < k + 2:
        return None
    grams = _Ngrams(units, k)
    found: list[tuple[float, Loop]] = []
    for p in sorted(_candidate_periods(grams, n, min_repeats, min_share)):
        shift = min(p // 4, _SHIFT[unit] + p // 32)
        if any(abs(p - round(p / loop.period) * loop.period) <= shift for _, loop in found):
            continue  # about a multiple of a period found (a counter's digits can make it score higher)
        # The tail must hold (min_repeats − 1) periods of repeats and min_share of the sequence, so that
        # last stretch must be repeated as a whole: reject a candidate there before scoring everything.
        probe = int(min(n, max(_MIN_PROBE, (min_repeats - 1) * p, min_share * n - p)))
        if grams.repeated(p, shift, n - probe).mean() <= 1 - tolerance:
            continue
        start, score = _tail_score(grams.repeated(p, shift, 0), tolerance)
        begin = max(0, start - p)  # the first period is the one the later ones repeat
        repeats = (n - begin) / p
        long_enough = n - begin >= min_share * n and _tokens(units[begin:], unit) >= min_tokens
        if score > 0 and repeats >= min_repeats and long_enough:
            found.append((score, Loop(period=p, start=begin, repeats=round(repeats, 2), unit=unit)))
    return max(found, key=lambda f: f[0])[1] if found else None


def failure_kind(status: str, finish_reason: str | None, seq: Sequence[int] | str | None,
                 **knobs) -> tuple[str | None, Loop | None]:
    """Why a sample failed (None when it did not), and the loop found (``knobs`` go to ``find_loop``).

    - unclosed think block: ``loop`` when its trace ends in a loop, else ``runaway`` when the budget ran
      out (``finish_reason == "length"``), else ``other`` (stopped unclosed without looping);
    - closed think block but the budget ran out in the response: ``truncated_answer``;
    - anything else: None.
    """
    if status not in STATUSES:
        raise ValueError(f"status={status!r}: expected one of {STATUSES} (core.think.parse's status)")
    if status == "unclosed":
        loop = find_loop(seq, **knobs) if seq is not None else None
        if loop is not None:
            return "loop", loop
        return ("runaway" if finish_reason == "length" else "other"), None
    if status == "closed" and finish_reason == "length":
        return "truncated_answer", None
    return None, None


def _units(seq: Sequence[int] | str) -> tuple[np.ndarray, str]:
    """The units as uint64 (token ids, or the code points of text) and the unit's name."""
    if isinstance(seq, str):
        return np.frombuffer(seq.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64), "char"
    ids = np.asarray(seq)
    if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
        raise TypeError(f"find_loop takes text or a flat sequence of token ids, not {ids.dtype} of shape {ids.shape}")
    return ids.astype(np.uint64), "token"


def _tokens(units: np.ndarray, unit: str) -> float:
    """Length in tokens; for text, UTF-8 bytes / 4 (Qwen3: ~3.8 bytes a token in English, ~3.9 in Japanese)."""
    if unit == "token":
        return len(units)
    return float(len(units) + (units >= 0x80).sum() + (units >= 0x800).sum() + (units >= 0x10000).sum()) / 4


class _Ngrams:
    """The hashed n-grams of a sequence, sorted once so that "does this n-gram also occur between positions
    a and b?" is one binary search (numpy, vectorised over positions)."""

    def __init__(self, units: np.ndarray, k: int):
        m = len(units) - k + 1
        h = np.zeros(m, dtype=np.uint64)
        for j in range(k):  # uint64 arithmetic wraps: a polynomial hash modulo 2**64
            h = h * _MULT + units[j:j + m] + np.uint64(1)
        h *= _MULT
        h ^= h >> np.uint64(29)
        self.m, self.k = m, k
        bits = np.uint64(max(1, m.bit_length()))
        self.low = (np.uint64(1) << bits) - np.uint64(1)  # low bits: a position; high bits: the hash
        self.hash = h & ~self.low
        self.keys = np.sort(self.hash | np.arange(m, dtype=np.uint64))  # by hash, then by position

    def earlier(self, at: np.ndarray, depth: int) -> list[np.ndarray]:
        """Distances from each position of ``at`` to the 1st, 2nd, … ``depth``-th earlier occurrence of its
        n-gram (each array holds the positions that have one): the keys just before a position's own key."""
        rank = np.searchsorted(self.keys, self.hash[at] | at.astype(np.uint64))
        out = []
        for t in range(1, depth + 1):
            before = self.keys[np.maximum(rank - t, 0)]
            keep = (rank >= t) & ((before & ~self.low) == self.hash[at])
            at, rank = at[keep], rank[keep]  # a group is contiguous: past its first key, nothing earlier
            if not at.size:
                break
            out.append(at - (before[keep] & self.low).astype(np.int64))
        return out

    def repeated(self, p: int, shift: int, lo: int) -> np.ndarray:
        """For units lo..n−1: does the unit lie in an n-gram that also occurs p ± shift units earlier?"""
        at = np.arange(max(lo - self.k + 1, p + shift), self.m, dtype=np.uint64)
        # Query (hash, position − p − shift), sorted (a sorted search is cache-friendly); the first key at or
        # after it is the earliest occurrence from there on — a hit when it lies within 2·shift.
        q = np.sort(self.hash[at] | (at - np.uint64(p + shift)))
        j = np.searchsorted(self.keys, q)
        found = self.keys[np.minimum(j, self.m - 1)]
        same = (j < self.m) & ((found & ~self.low) == (q & ~self.low))
        ok = same & ((found & self.low) <= (q & self.low) + np.uint64(2 * shift))
        starts = ((q[ok] & self.low) + np.uint64(p + shift)).astype(np.int64) - lo  # relative to unit lo
        # n-gram i covers units i..i+k−1: a unit is repeated when one of the k n-grams over it is.
        size = self.m + self.k - 1 - lo
        cover = np.bincount(np.maximum(starts, 0), minlength=size + 1)
        cover -= np.bincount(starts + self.k, minlength=size + 1)
        return np.cumsum(cover[:size]) > 0


def _candidate_periods(grams: _Ngrams, n: int, min_repeats: float, min_share: float) -> set[int]:
    """The most frequent distances from the last n-grams to their previous occurrence, and to any of their
    last _CHAIN occurrences: in a loop every n-gram occurs one period back, also when it occurs within
    the period too (then only the second count shows the period)."""
    probe = int(min(grams.m, max(_MIN_PROBE, min_share * n)))
    dists = [d[d <= n / min_repeats] for d in grams.earlier(np.arange(grams.m - probe, grams.m), _CHAIN)]
    if not dists or not dists[0].size:
        return set()
    return _most_frequent(dists[0]) | _most_frequent(np.concatenate(dists))


def _most_frequent(values: np.ndarray) -> set[int]:
    values, counts = np.unique(values, return_counts=True)
    return {int(v) for v in values[np.argsort(-counts, kind="stable")[:_CANDIDATES]]}


def _tail_score(hit: np.ndarray, tolerance: float) -> tuple[int, float]:
    """(start, score) of the suffix of ``hit`` maximising #hit·tolerance − #miss·(1 − tolerance)."""
    suffix = np.cumsum(np.where(hit, tolerance, tolerance - 1.0)[::-1])[::-1]
    i = int(np.argmax(suffix))
    return i, float(suffix[i])
