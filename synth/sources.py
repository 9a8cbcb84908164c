"""Prompt sources: NPT (code:math:stem 2:2:1), LMSYS-Chat-1M (first user turn, filtered, de-duplicated),
any local JSONL/Parquet, and the shipped fixture.

Every loader goes through ``datasets.load_dataset`` (streaming), so a hub id and a local directory laid
out like the hub repository (README.md with the same ``configs`` block, ``data/<split>-*.parquet``) take
the same code path; tests use the latter. A loader yields :class:`Prompt` in a deterministic order, so
the first N prompts of a source never change when more are asked for (pools are prefix-stable), and
the pool of a source is cached as JSONL under the work dir.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import re
import time
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from synth import plain


log = logging.getLogger(__name__)


@dataclass
class Prompt:
    id: str                      # stable id of the prompt in its source, e.g. "npt:math:<uuid>"
    source: str                  # source name (npt, lmsys, a local source's name)
    instruction: str             # the (English, or as-given) instruction
    meta: dict[str, Any] = field(default_factory=dict)
    output: str | None = None    # the source's own assistant message (NPT: the R1 answer), when kept

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Prompt":
        return cls(id=d["id"], source=d["source"], instruction=d["instruction"], meta=d.get("meta") or {},
                   output=d.get("output"))


# ----------------------------------------------------------------------------------------------------
# helpers


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    """``cfg.get`` for a dict or a DictConfig (None counts as missing)."""
    if cfg is None:
        return default
    v = cfg.get(key, default)
    return default if v is None else v


def _load(hub_id: str, split: str, streaming: bool = True, data_files: Any = None, name: str | None = None):
    """``datasets.load_dataset`` on a hub id or a local dir/file (same call either way)."""
    import datasets

    kwargs: dict[str, Any] = {"split": split, "streaming": streaming}
    if data_files is not None:
        kwargs["data_files"] = plain(data_files)
    if name is not None:
        kwargs["name"] = name
    return datasets.load_dataset(hub_id, **kwargs)


def _shuffled(ds, seed: int | None, buffer: int | None):
    if seed is None or not buffer:
        return ds
    return ds.shuffle(seed=seed, buffer_size=int(buffer))


def first_user_turn(messages: Iterable[dict[str, Any]] | None) -> str | None:
    for m in messages or ():
        if m.get("role") == "user":
            return m.get("content")
    return None


def last_assistant_turn(messages: Iterable[dict[str, Any]] | None) -> str | None:
    out = None
    for m in messages or ():
        if m.get("role") == "assistant":
            out = m.get("content")
    return out


def ratio_pattern(ratios: dict[str, int]) -> list[str]:
    """``{code: 2, math: 2, stem: 1}`` -> ``[code, code, math, math, stem]``: one period of the interleave."""
    return [name for name, k in ratios.items() for _ in range(int(k))]


def interleave(streams: dict[str, Iterator[Prompt]], ratios: dict[str, int]) -> Iterator[Prompt]:
    """Round-robin by the ratio pattern, so any prefix holds the ratio (up to one period); a split that
    runs dry is dropped and the others go on in their own ratio."""
    pattern = ratio_pattern(ratios)
    live = {k: iter(v) for k, v in streams.items()}
    while live:
        for name in pattern:
            if name not in live:
                continue
            try:
                yield next(live[name])
            except StopIteration:
                del live[name]
        pattern = [p for p in pattern if p in live]


# ----------------------------------------------------------------------------------------------------
# NPT: nvidia/Nemotron-Post-Training-Dataset-v1


def npt_rows(cfg: Any, split: str, with_output: bool) -> Iterator[Prompt]:
    """Rows of one NPT split: the first user turn, filtered to the configured generators/reasoning."""
    ds = _load(_get(cfg, "hub_id"), split, data_files=_get(cfg, "data_files"), name=_get(cfg, "config_name"))
    ds = _shuffled(ds, _get(cfg, "seed"), _get(cfg, "shuffle_buffer"))
    generators = set(_get(cfg, "generators") or ())
    reasoning = _get(cfg, "reasoning")
    max_chars = _get(cfg, "max_chars")
    for row in ds:
        if generators and row.get("generator") not in generators:
            continue
        if reasoning is not None and row.get("reasoning") != reasoning:
            continue
        msgs = row.get("messages")
        text = first_user_turn(msgs)
        if not text or not text.strip():
            continue
        if max_chars and len(text) > int(max_chars):
            continue
        uid = row.get("uuid") or hashlib.sha256(text.encode()).hexdigest()[:24]
        yield Prompt(id=f"npt:{split}:{uid}", source="npt", instruction=text,
                     meta={"split": split, "generator": row.get("generator"), "category": row.get("category")},
                     output=last_assistant_turn(msgs) if with_output else None)


def load_npt(cfg: Any, with_output: bool = False) -> Iterator[Prompt]:
    ratios = {k: int(v) for k, v in plain(_get(cfg, "splits")).items()}
    streams = {split: npt_rows(cfg, split, with_output) for split in ratios}
    return _dedup_exact(interleave(streams, ratios))


# ----------------------------------------------------------------------------------------------------
# LMSYS-Chat-1M


_WS = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)


def normalize(text: str) -> str:
    """Casefolded, NFKC, punctuation dropped, whitespace collapsed: equal after this = exact duplicate."""
    t = unicodedata.normalize("NFKC", text).casefold()
    t = _PUNCT.sub(" ", t)
    return _WS.sub(" ", t).strip()


class MinHashLSH:
    """Near-duplicate detector: MinHash over word 5-shingles (character 5-grams for text without spaces),
    banded LSH. Jaccard ≳ threshold ≈ (1/bands)^(1/rows) collide. numpy only; a few µs per prompt."""

    def __init__(self, num_perm: int = 64, bands: int = 16, shingle: int = 5, seed: int = 1):
        import numpy as np

        if num_perm % bands:
            raise ValueError("num_perm must be a multiple of bands")
        self.np = np
        self.bands, self.rows, self.k = bands, num_perm // bands, shingle
        rng = np.random.default_rng(seed)
        self.prime = np.uint64((1 << 61) - 1)
        self.a = rng.integers(1, (1 << 61) - 1, num_perm, dtype=np.uint64)
        self.b = rng.integers(0, (1 << 61) - 1, num_perm, dtype=np.uint64)
        self.tables: list[set[int]] = [set() for _ in range(bands)]

    def _shingles(self, norm: str) -> list[str]:
        words = norm.split()
        if len(words) >= self.k * 2:
            return [" ".join(words[i:i + self.k]) for i in range(len(words) - self.k + 1)]
        s = norm.replace(" ", "")
        if len(s) <= self.k:
            return [s]
        return [s[i:i + self.k] for i in range(len(s) - self.k + 1)]

    def signature(self, norm: str):
        np = self.np
        hs = np.fromiter((int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") >> 3
                          for s in set(self._shingles(norm))), dtype=np.uint64)
        with np.errstate(over="ignore"):
            m = (hs[:, None] * self.a[None, :] + self.b[None, :]) % self.prime
        return m.min(axis=0)

    def seen_or_add(self, norm: str) -> bool:
        sig = self.signature(norm)
        keys = [hash(sig[i * self.rows:(i + 1) * self.rows].tobytes()) for i in range(self.bands)]
        dup = any(k in t for k, t in zip(keys, self.tables))
        if not dup:
            for k, t in zip(keys, self.tables):
                t.add(k)
        return dup


def _dedup_exact(prompts: Iterator[Prompt]) -> Iterator[Prompt]:
    seen: set[bytes] = set()
    for p in prompts:
        h = hashlib.blake2b(normalize(p.instruction).encode(), digest_size=12).digest()
        if h in seen:
            continue
        seen.add(h)
        yield p


def load_lmsys(cfg: Any) -> Iterator[Prompt]:
    """First user turn of each conversation, in the configured languages, length-capped, without exact
    (normalized) and near (MinHash) duplicates, optionally without moderation-flagged/redacted ones."""
    ds = _load(_get(cfg, "hub_id"), _get(cfg, "split", "train"), data_files=_get(cfg, "data_files"))
    ds = _shuffled(ds, _get(cfg, "seed"), _get(cfg, "shuffle_buffer"))
    languages = set(_get(cfg, "languages") or ())
    min_chars, max_chars = int(_get(cfg, "min_chars", 1)), _get(cfg, "max_chars")
    drop_redacted, drop_flagged = bool(_get(cfg, "drop_redacted", False)), bool(_get(cfg, "drop_moderated", False))
    near = MinHashLSH(**plain(_get(cfg, "near_dup", {}) or {})) if _get(cfg, "near_dup") is not None else None
    seen: set[bytes] = set()
    stats = {"rows": 0, "language": 0, "length": 0, "exact_dup": 0, "near_dup": 0, "other": 0}
    for row in ds:
        stats["rows"] += 1
        if languages and row.get("language") not in languages:
            stats["language"] += 1
            continue
        if drop_redacted and row.get("redacted"):
            stats["other"] += 1
            continue
        conv = row.get("conversation") or []
        if drop_flagged:
            mod = row.get("openai_moderation") or []
            if mod and isinstance(mod[0], dict) and mod[0].get("flagged"):
                stats["other"] += 1
                continue
        text = conv[0].get("content") if conv and conv[0].get("role") == "user" else None
        if not text or len(text.strip()) < min_chars or (max_chars and len(text) > int(max_chars)):
            stats["length"] += 1
            continue
        norm = normalize(text)
        h = hashlib.blake2b(norm.encode(), digest_size=12).digest()
        if h in seen:
            stats["exact_dup"] += 1
            continue
        seen.add(h)
        if near is not None and near.seen_or_add(norm):
            stats["near_dup"] += 1
            continue
        yield Prompt(id=f"lmsys:{row.get('conversation_id')}", source="lmsys", instruction=text,
                     meta={"language": row.get("language"), "model": row.get("model")})
    log.info("lmsys filter: %s", stats)


# ----------------------------------------------------------------------------------------------------
# local JSONL / Parquet and the fixture


def load_local(cfg: Any, name: str) -> Iterator[Prompt]:
    """A local JSONL/JSON/Parquet file or directory; the instruction is ``field`` (default ``instruction``),
    or the first user turn of ``messages``/``conversation``. A malformed JSON line is an error naming the
    file and the line."""
    path = Path(str(_get(cfg, "path"))).expanduser()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*")
                                                 if p.suffix in (".jsonl", ".json", ".parquet"))
    if not files:
        raise FileNotFoundError(f"prompt source {name!r}: no .jsonl/.json/.parquet under {path}")
    fmt = "parquet" if files[0].suffix == ".parquet" else "json"
    ds = _load(fmt, "train", data_files=[str(f) for f in files])
    fld = _get(cfg, "field", "instruction")
    id_field = _get(cfg, "id_field", "id")
    empty = 0
    try:
        for i, row in enumerate(ds):
            text = row.get(fld)
            if text is None:
                text = first_user_turn(row.get("messages") or row.get("conversation"))
            if not text or not str(text).strip():
                empty += 1
                continue
            rid = row.get(id_field) if id_field else None
            rid = rid if rid is not None else hashlib.sha256(str(text).encode()).hexdigest()[:16]
            yield Prompt(id=f"{name}:{rid}", source=name, instruction=str(text), meta={"row": i},
                         output=row.get("output"))
    except Exception:
        bad = first_bad_line(files)
        if bad is None:
            raise
        raise ValueError(f"{bad}; fix or remove that line (prompt source {name!r})") from None
    if empty:
        log.warning("prompt source %s: %d rows without a %r field or a user turn were skipped", name, empty, fld)


def first_bad_line(files: list[Path]) -> str | None:
    """``<file>:<1-based line>: not valid JSON (…)`` for the first JSON Lines file with a broken line."""
    for f in files:
        if f.suffix == ".parquet":
            continue
        with open(f, "rb") as fh:
            if f.suffix == ".json":
                try:
                    json.load(fh)
                    continue
                except ValueError:
                    fh.seek(0)   # not one JSON document: JSON Lines under a .json name
            for i, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        json.loads(line)
                    except ValueError as e:
                        return f"{f}:{i}: not valid JSON ({e})"
    return None


def load_source(name: str, cfg: Any, with_output: bool = False) -> Iterator[Prompt]:
    kind = _get(cfg, "type", name)
    if kind == "npt":
        return load_npt(cfg, with_output=with_output)
    if kind == "lmsys":
        return load_lmsys(cfg)
    if kind == "local":
        return load_local(cfg, name)
    raise ValueError(f"prompt source {name!r}: unknown type {kind!r} (npt | lmsys | local)")


def base_source(prompt_source: str) -> tuple[str, bool]:
    """``npt_ja`` -> (``npt``, True): the ``_ja`` suffix means the source's prompts translated to Japanese."""
    if prompt_source.endswith("_ja"):
        return prompt_source[: -len("_ja")], True
    return prompt_source, False


# ----------------------------------------------------------------------------------------------------
# pools: the first N prompts of a source, cached


def source_key(name: str, cfg: Any, with_output: bool) -> str:
    blob = json.dumps({"name": name, "cfg": plain(cfg), "out": with_output}, sort_keys=True, default=str)
    return f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}" + ("-out" if with_output else "")


def pool_path(work_dir: Path, name: str, cfg: Any, with_output: bool) -> Path:
    return Path(work_dir) / "pools" / f"{source_key(name, cfg, with_output)}.jsonl"


class PoolView:
    """A lazy, re-iterable view of a cached pool file: prompts ``start, start+step, …`` among the first
    ``limit`` lines. Nothing is held in memory (a pool with R1 answers is tens of GB at full size)."""

    def __init__(self, path: Path, limit: int, start: int = 0, step: int = 1):
        self.path, self.limit, self.start, self.step = Path(path), int(limit), int(start), int(step)
        info = pool_info(self.path) or {}
        self.available = min(self.limit, int(info.get("n", 0)))

    def slice(self, limit: int, start: int = 0, step: int = 1) -> "PoolView":
        """A sub-view: every ``step``-th of this view's first ``limit`` lines from ``start`` (this view
        must be a plain prefix)."""
        assert self.start == 0 and self.step == 1
        return PoolView(self.path, min(limit, self.limit), start, step)

    def __iter__(self) -> Iterator[Prompt]:
        with open(self.path, "rb") as f:
            for i, line in enumerate(f):
                if i >= self.limit:
                    return
                if i >= self.start and (i - self.start) % self.step == 0:
                    yield Prompt.from_dict(json.loads(line))

    def __len__(self) -> int:
        if self.available <= self.start:
            return 0
        return (self.available - self.start + self.step - 1) // self.step


def pool_info(path: Path) -> dict[str, Any] | None:
    meta = Path(path).with_suffix(".meta.json")
    return json.loads(meta.read_text()) if meta.exists() else None


def source_files(cfg: Any) -> list[Path]:
    """The local files a source reads: a local source's ``path``, or a hub source's ``hub_id`` when it is
    a local directory (dot-files skipped). Empty for a hub id (its files are the hub's)."""
    target = _get(cfg, "path") if _get(cfg, "type") == "local" else _get(cfg, "hub_id")
    p = Path(str(target)).expanduser() if target is not None else None
    if p is None or not p.exists():
        return []
    if p.is_file():
        return [p]
    return sorted(f for f in p.rglob("*") if f.is_file() and not any(x.startswith(".") for x in f.relative_to(p).parts))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


HASH_LIMIT = 1 << 30   # larger files (a local mirror of a hub dataset) are compared by size and mtime only


def fingerprint(files: list[Path]) -> dict[str, list]:
    """``{path: [size, mtime_ns, sha256 or None]}`` of the source's files."""
    out = {}
    for f in files:
        st = f.stat()
        out[str(f)] = [st.st_size, st.st_mtime_ns, _sha256(f) if st.st_size <= HASH_LIMIT else None]
    return out


def same_files(recorded: dict[str, list], files: list[Path], taken_at: float) -> bool:
    """Do ``files`` still hold what ``recorded`` (a :func:`fingerprint` taken at ``taken_at``) says? Size
    and mtime decide, except for a file modified within 2 s of the fingerprint (a timestamp too coarse to
    tell two writes apart, as git's "racy" entries) or whose mtime changed: then its hash decides (for
    files over ``HASH_LIMIT``, the mtime)."""
    if sorted(recorded) != sorted(map(str, files)):
        return False
    for f in files:
        size, mtime_ns, digest = recorded[str(f)]
        st = f.stat()
        if st.st_size != size:
            return False
        racy = st.st_mtime_ns >= (taken_at - 2) * 1e9
        if digest is None and st.st_mtime_ns != mtime_ns:
            return False
        if digest is not None and (st.st_mtime_ns != mtime_ns or racy) and _sha256(f) != digest:
            return False
    return True


def build_pool(name: str, cfg: Any, n: int, work_dir: Path, with_output: bool = False) -> PoolView:
    """The first ``n`` prompts of a source, cached at ``work_dir/pools/<key>.jsonl`` (its ``.meta.json``
    is written last: without it the pool is incomplete). A cached pool that is large enough (or holds the
    whole source) and whose source files are unchanged (:func:`same_files`) is reused; otherwise it is
    rebuilt (prefix-stable). Streamed to disk, never held."""
    path = pool_path(work_dir, name, cfg, with_output)
    files = source_files(cfg)
    info = pool_info(path) if path.exists() else None
    if info is not None and (info["n"] >= n or info.get("exhausted")):
        if same_files(info.get("files") or {}, files, float(info.get("fingerprinted_at", 0))):
            return PoolView(path, n)
        log.warning("prompt source %s changed since its pool was built: rebuilding the pool", name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    path.with_suffix(".meta.json").unlink(missing_ok=True)
    fingerprinted_at, prints = time.time(), fingerprint(files)   # before reading: a later edit is seen
    count, splits = 0, {}
    with open(tmp, "w", encoding="utf-8") as f:
        for p in itertools.islice(load_source(name, cfg, with_output=with_output), n):
            f.write(json.dumps(p.to_dict(), ensure_ascii=False) + "\n")
            count += 1
            if "split" in p.meta:
                splits[p.meta["split"]] = splits.get(p.meta["split"], 0) + 1
    os.replace(tmp, path)
    meta = {"source": name, "n": count, "requested": n, "exhausted": count < n, "files": prints,
            "fingerprinted_at": fingerprinted_at}
    if splits:
        meta["splits"] = splits
    path.with_suffix(".meta.json").write_text(json.dumps(meta, indent=1))
    if count < n:
        log.warning("prompt source %s has only %d prompts (asked for %d)", name, count, n)
    return PoolView(path, n)
