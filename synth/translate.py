"""En→Ja translation of instructions: its own step, cached and resumable like generation.

Code blocks, inline code and LaTeX are cut out before the text goes to the translator and put back
verbatim afterwards: each protected span becomes a placeholder ``[[Pn]]`` that the translator is told to
keep; a translation that loses, duplicates or invents a placeholder is retried, and after
``max_attempts`` the prompt is marked failed (never used with a broken span). The cache is append-only
JSONL keyed by the hash of the English text, under ``<work_dir>/translate/<translator key>/``, shared
by every component and shard that translates the same prompts; in memory only an index of it is kept,
and a bounded pool of workers pulls the texts (550k prompts are neither held nor scheduled at once).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import jsonl
from synth.client import RequestFailed, RequestRefused

log = logging.getLogger(__name__)

# Order matters: fenced blocks and display math first, so their insides are not matched again.
PROTECT = [
    r"```[\s\S]*?```",                       # fenced code
    r"~~~[\s\S]*?~~~",
    r"\$\$[\s\S]+?\$\$",                     # display math
    r"\\\[[\s\S]+?\\\]",
    r"\\begin\{(?P<env>[a-zA-Z*]+)\}[\s\S]*?\\end\{(?P=env)\}",   # LaTeX environments
    r"`[^`\n]+`",                            # inline code
    r"\\\([\s\S]+?\\\)",                     # inline math
    r"(?<![\\$\w])\$(?!\s)[^$\n]+?(?<![\s\\])\$(?!\w)",  # $…$ (not \$, not "$5 and $6")
]
_PROTECT_RE = re.compile("|".join(f"(?:{p})" for p in PROTECT))
_PH_RE = re.compile(r"\[\[P(\d+)\]\]")

DEFAULT_SYSTEM = (
    "You are a professional translator. Translate the user's text from English into natural Japanese. "
    "Output only the translation, with no preface or notes. Do not answer or solve it. Keep every "
    "placeholder of the form [[P0]], [[P1]], … exactly as written, in a sensible position."
)


def protect(text: str) -> tuple[str, list[str]]:
    """Replace code blocks / inline code / LaTeX with ``[[Pn]]``; return the masked text and the spans."""
    spans: list[str] = []
    # A literal "[[Pn]]" in the source would be confused with ours: mask it as a span too.
    pattern = re.compile(_PH_RE.pattern + "|" + _PROTECT_RE.pattern)

    def sub(m: re.Match) -> str:
        spans.append(m.group(0))
        return f"[[P{len(spans) - 1}]]"

    return pattern.sub(sub, text), spans


def restore(translated: str, spans: list[str]) -> str:
    """Put the spans back; raises ``ValueError`` unless every placeholder occurs exactly once."""
    found = [int(m.group(1)) for m in _PH_RE.finditer(translated)]
    if sorted(found) != list(range(len(spans))):
        missing = sorted(set(range(len(spans))) - set(found))
        extra = sorted(i for i in set(found) if found.count(i) > 1 or i >= len(spans))
        raise ValueError(f"placeholders not preserved (missing {missing}, duplicated/unknown {extra})")
    return _PH_RE.sub(lambda m: spans[int(m.group(1))], translated)


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def translator_key(cfg: Any) -> str:
    from omegaconf import OmegaConf

    c = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    ident = {k: c.get(k) for k in ("name", "model", "system", "sampling", "target_lang")}
    h = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', str(c.get('name') or c.get('model')))}-{h}"


@dataclass
class Translation:
    key: str
    src: str
    ja: str | None
    ok: bool
    attempts: int
    error: str | None = None

    def line(self) -> dict[str, Any]:
        """The cache line: key and ok first, so that opening the cache need not parse the texts."""
        return {"key": self.key, "ok": self.ok, "attempts": self.attempts, "error": self.error, "src": self.src,
                "ja": self.ja}


_KEY_OK = re.compile(rb'^\{"key": "([0-9a-f]+)", "ok": (true|false)')


def _key_ok(line: bytes) -> tuple[str, bool]:
    m = _KEY_OK.match(line)
    if m:
        return m.group(1).decode(), m.group(2) == b"true"
    d = json.loads(line)   # a line in another key order
    return d["key"], bool(d["ok"])


class TranslationCache:
    """Append-only cache: ``<dir>/part-<shard>.jsonl`` lines ``{key, ok, attempts, error, src, ja}``.

    In memory only an index ``key -> (file, byte offset, ok)`` (about 200 bytes an entry, whatever the
    texts' length); :meth:`get` reads the one line it needs. A successful entry wins over a failed one."""

    def __init__(self, directory: Path, shard_name: str = "part-00000", fsync: bool = False):
        self.dir = Path(directory)
        self.files: list[Path] = []
        self.index: dict[str, tuple[int, int, bool]] = {}
        self._readers: dict[int, Any] = {}
        self._writer: jsonl.ShardWriter | None = None
        self._shard_name, self._fsync = shard_name, fsync
        for shard in jsonl.shards(self.dir) if self.dir.exists() else ():
            jsonl.repair(shard)
            n = self._file_no(shard)
            offset = 0
            with open(shard, "rb") as f:
                for raw in f:
                    if raw.strip():
                        self._note(*_key_ok(raw), n, offset)
                    offset += len(raw)

    def _file_no(self, path: Path) -> int:
        if path not in self.files:
            self.files.append(path)
        return self.files.index(path)

    def _note(self, key: str, ok: bool, file_no: int, offset: int) -> None:
        prev = self.index.get(key)
        if prev is None or (ok and not prev[2]):
            self.index[key] = (file_no, offset, ok)

    def ok(self, text: str) -> bool | None:
        """Whether ``text`` was translated (True), tried and failed (False), or never tried (None)."""
        where = self.index.get(text_key(text))
        return None if where is None else where[2]

    def get(self, text: str) -> Translation | None:
        where = self.index.get(text_key(text))
        if where is None:
            return None
        file_no, offset, _ = where
        f = self._readers.get(file_no)
        if f is None:
            f = self._readers[file_no] = open(self.files[file_no], "rb")
        f.seek(offset)
        d = json.loads(f.readline())
        return Translation(**{k: d.get(k) for k in ("key", "src", "ja", "ok", "attempts", "error")})

    def put(self, t: Translation) -> None:
        if self._writer is None:
            self._writer = jsonl.ShardWriter(self.dir, self._shard_name, fsync=self._fsync)
        offset = self._writer.path.stat().st_size   # this process is the only writer of its shard file
        self._writer.write(t.line())
        self._note(t.key, t.ok, self._file_no(self._writer.path), offset)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for f in self._readers.values():
            f.close()
        self._readers.clear()


class Translator:
    """Translate with protection, verification and retries, through a :class:`synth.client.ChatClient`."""

    def __init__(self, client: Any, cache: TranslationCache, max_attempts: int = 3, system: str | None = None,
                 retry_failed: bool = False):
        self.client, self.cache = client, cache
        self.max_attempts, self.system = max_attempts, system or DEFAULT_SYSTEM
        self.retry_failed = retry_failed
        self._pending: dict[str, asyncio.Future] = {}

    def _done(self, text: str) -> bool:
        ok = self.cache.ok(text)
        return bool(ok) or (ok is False and not self.retry_failed)

    async def translate(self, text: str) -> Translation:
        if self._done(text):
            return self.cache.get(text)
        key = text_key(text)
        if key in self._pending:  # the same English text asked twice concurrently: one request
            return await self._pending[key]
        fut = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        try:
            t = await self._translate(text, key)
            self.cache.put(t)
            fut.set_result(t)
            return t
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # mark retrieved
            raise
        finally:
            self._pending.pop(key, None)

    async def _translate(self, text: str, key: str) -> Translation:
        masked, spans = protect(text)
        error = None
        for attempt in range(1, self.max_attempts + 1):
            try:
                reply = await self.client.chat(masked, system=self.system)
            except RequestRefused as exc:  # 400/413/422: this text cannot be translated there
                return Translation(key, text, None, False, attempt, str(exc))
            out = (reply.response or "").strip()
            if reply.finish_reason == "length":
                error = "translation truncated (finish_reason=length)"
                continue
            if not out:
                error = "empty translation"
                continue
            try:
                return Translation(key, text, restore(out, spans), True, attempt)
            except ValueError as e:
                error = str(e)
        log.warning("translation failed after %d attempts: %s", self.max_attempts, error)
        return Translation(key, text, None, False, self.max_attempts, error)

    async def translate_all(self, texts: Iterable[str], concurrency: int = 32) -> dict[str, int]:
        """Translate every text not yet in the cache, ``concurrency`` at a time, pulling texts from the
        iterable as workers free up (so a 550k-prompt pool is never held or scheduled at once). A text
        whose requests keep failing is counted failed and not cached (a rerun tries it again);
        :class:`FatalEndpointError` stops everything. Returns counts: translated, failed, cached."""
        counts = {"translated": 0, "failed": 0, "cached": 0}
        texts = iter(texts)

        async def worker() -> None:
            for t in texts:
                if self._done(t):
                    counts["cached"] += 1
                    continue
                try:
                    ok = (await self.translate(t)).ok
                except RequestFailed:
                    ok = False
                counts["translated" if ok else "failed"] += 1

        workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        return counts
