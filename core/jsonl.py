"""Append-only JSONL shards that survive a crash.

Writers append one complete line per record and flush it; readers skip (and ``repair`` truncates) a
torn last line left by a process killed mid-write, so a restarted job loses nothing it had finished
and duplicates nothing. Written by hand because no library offers crash-safe append + repair of
JSON Lines; ``datasets`` reads the finished shards.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any


_BLOCK = 1 << 16


def write_atomic(path: Path, text: str) -> None:
    """Write ``path`` through a temporary file and a rename: a reader (a resumed run, analysis) sees the old
    file or the new one, whole, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _last_line_start(f: Any, size: int) -> int:
    """Offset of the first byte after the last newline before ``size - 1`` (0 when there is none),
    reading backwards one block at a time: only the last line is ever read."""
    end = size - 1
    while end > 0:
        start = max(0, end - _BLOCK)
        f.seek(start)
        block = f.read(end - start)
        i = block.rfind(b"\n")
        if i >= 0:
            return start + i + 1
        end = start
    return 0


def repair(path: Path) -> int:
    """Cut a torn (unterminated or unparsable) last line off ``path``; return the bytes removed. Reads
    the tail only (the last line), so restarting on a shard of any size costs what its last line does."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(size - 1)
        terminated = f.read(1) == b"\n"
        start = _last_line_start(f, size)
        if terminated:
            # A complete-looking last line can still be garbage if a write was cut inside a multi-byte char.
            f.seek(start)
            try:
                json.loads(f.read(size - start))
                return 0
            except ValueError:
                pass
        f.truncate(start)
    return size - start


def _lines(path: Path) -> Iterator[tuple[bytes, bool]]:
    """(line, is_last) for the non-empty lines of ``path``, one line in memory at a time."""
    with open(path, "rb") as f:
        prev = None
        for line in f:
            if not line.strip():
                continue
            if prev is not None:
                yield prev, False
            prev = line
        if prev is not None:
            yield prev, True


def _corrupt(path: Path, i: int) -> ValueError:
    return ValueError(f"{path}:{i + 1}: corrupt JSON line (not the last one; fix or delete the shard)")


def read(path: Path) -> Iterator[dict[str, Any]]:
    """Records of one shard, streamed. The last line is skipped when it is torn (unterminated or
    unparsable, a writer killed mid-write: exactly what ``repair`` cuts); a corrupt line elsewhere is an
    error."""
    for i, (line, last) in enumerate(_lines(Path(path))):
        if last and not line.endswith(b"\n"):
            return
        try:
            yield json.loads(line)
        except ValueError:
            if last:
                return
            raise _corrupt(path, i) from None


_ID = re.compile(rb'^\{"id": "([^"\\]*)"')  # how ShardWriter (json.dumps) starts every Triple line


def ids(path: Path) -> Iterator[str]:
    """Record ids of one shard without parsing whole records (fast path on the ``{"id": "…"`` prefix)."""
    for i, (line, last) in enumerate(_lines(Path(path))):
        if last and not line.endswith(b"\n"):
            return
        m = _ID.match(line)
        if m:
            yield m.group(1).decode("utf-8")
            continue
        try:
            yield json.loads(line)["id"]
        except ValueError:
            if last:
                return
            raise _corrupt(path, i) from None


def ids_in(directory: Path) -> set[str]:
    """Ids of every record in the shards of ``directory`` (empty when it does not exist)."""
    return {i for shard in shards(directory) for i in ids(shard)}


def shards(directory: Path) -> list[Path]:
    return sorted(Path(directory).glob("*.jsonl"))


def read_dir(directory: Path) -> Iterator[dict[str, Any]]:
    for shard in shards(directory):
        yield from read(shard)


class ShardWriter:
    """Appends records to ``directory/<name>.jsonl``, one flushed (and fsynced) line each."""

    def __init__(self, directory: Path, name: str = "part-00000", fsync: bool = True):
        self.path = Path(directory) / f"{name}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair(self.path)
        self._f = open(self.path, "ab")
        self._fsync = fsync

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")
        self._f.flush()
        if self._fsync:
            os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
