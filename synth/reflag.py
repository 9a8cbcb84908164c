"""Apply the trace checks (synth.checks: ``looping_trace``, ``over_budget``) to records already on disk,
without asking the teacher again: ``python -m synth experiment=… synth.steps=[reflag,stats]``.

For every kept record of a component the flags the configured checks own are decided anew from its trace
(set, or cleared when the check no longer fires; a check that is off leaves its flag alone; other flags
are never touched). A record whose new flags the policy drops moves to ``<work_dir>/rejected/`` (a later
``generate`` tops the component up from the pool, as after any rejection). Records already rejected stay
rejected.

Nothing is lost, whenever the process dies:

1. each shard is read once and written to a hidden ``.<shard>.reflag-tmp`` beside it (not ``*.jsonl``:
   no reader sees it; a rerun overwrites it); the records it drops are appended to the rejected shard
   first, skipping ids already there, so a kill and a rerun never duplicate one;
2. only when something changed: the temporary file is fsynced, the old shard is kept as a backup (a hard
   link, so no copy, in ``<work_dir>/backup/``; a copy across file systems), and the temporary file
   replaces the shard in one ``os.replace``. A shard is thus either the old one or the new one, never a
   mix; a record dropped before the kill is in both the old shard and ``rejected/`` (readers take the
   kept one), and the rerun finishes the move.

A shard that changes while it is read (a generate run writing it) is left as it is, and the step stops.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from core import jsonl
from synth.checks import TraceChecks

log = logging.getLogger(__name__)


def reflag_component(out_dir: Path, work_dir: Path, checks: TraceChecks, policy: dict[str, str]) -> dict[str, Any]:
    """Re-flag every shard of ``out_dir`` (the records of one component); counts of what changed."""
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    rejected = jsonl.ids_in(work_dir / "rejected")
    totals: dict[str, Any] = {"records": 0, "changed": 0, "moved_to_rejected": 0, "added": Counter(),
                              "cleared": Counter(), "rejected_by": Counter(), "shards_rewritten": 0,
                              "backups": []}
    for shard in jsonl.shards(out_dir):
        _reflag_shard(shard, work_dir, checks, policy, rejected, totals)
    for key in ("added", "cleared", "rejected_by"):
        totals[key] = dict(totals[key])
    return totals


def _reflag_shard(shard: Path, work_dir: Path, checks: TraceChecks, policy: dict[str, str], rejected: set[str],
                  totals: dict[str, Any]) -> None:
    before = shard.stat()
    tmp = shard.with_name(f".{shard.name}.reflag-tmp")
    changed = moved = 0
    rej = None  # the rejected shard, opened at the first record to move
    with open(tmp, "wb") as out, ExitStack() as stack:
        for rec in jsonl.read(shard):
            totals["records"] += 1
            old = rec.get("flags") or []
            new = checks.reflag(old, rec.get("trace"), rec.get("response") or "")
            if set(new) != set(old):
                changed += 1
                totals["added"].update(set(new) - set(old))
                totals["cleared"].update(set(old) - set(new))
                rec["flags"] = new
            drop_by = [f for f in new if f in checks.owned and policy.get(f, "drop") == "drop"]
            if drop_by:
                moved += 1
                totals["rejected_by"].update(drop_by)
                if rec["id"] not in rejected:  # else moved by a run killed before it replaced the shard
                    rej = rej or stack.enter_context(_append(work_dir / "rejected" / shard.name))
                    rej.write(_line(rec))
                    rejected.add(rec["id"])
                continue
            out.write(_line(rec))
        for f in (out, rej):  # on disk before the shard is replaced
            if f is not None:
                f.flush()
                os.fsync(f.fileno())
    if not (changed or moved):
        tmp.unlink()
        return
    now = shard.stat()
    if (now.st_size, now.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        tmp.unlink()
        raise RuntimeError(f"{shard} changed while it was being re-flagged (a generate run writing it?); it was "
                           "left as it is. Rerun synth.steps=[reflag] when no other run writes the component.")
    totals["backups"].append(str(_backup(shard, work_dir / "backup")))
    os.replace(tmp, shard)
    _fsync_dir(shard.parent)
    totals["changed"] += changed
    totals["moved_to_rejected"] += moved
    totals["shards_rewritten"] += 1
    log.info("reflag %s: %d records with new flags, %d moved to rejected/", shard, changed, moved)


def _line(rec: dict[str, Any]) -> bytes:
    return json.dumps(rec, ensure_ascii=False).encode("utf-8") + b"\n"  # as jsonl.ShardWriter writes it


def _append(path: Path):
    """``path`` opened for appending, a line torn by an earlier kill cut first (jsonl.repair)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    jsonl.repair(path)
    return open(path, "ab")


def _backup(shard: Path, backup_dir: Path) -> Path:
    """The shard as it is now, kept under ``backup_dir`` (a hard link: no copy; a copy across file systems)."""
    backup_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for n in range(1000):
        dst = backup_dir / (f"{shard.name}.before-reflag-{stamp}" + (f"-{n}" if n else ""))
        if dst.exists():
            continue
        try:
            os.link(shard, dst)
        except FileExistsError:
            continue
        except OSError:
            shutil.copy2(shard, dst)
            with open(dst, "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(backup_dir)
        return dst
    raise RuntimeError(f"no free backup name for {shard} in {backup_dir}")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
