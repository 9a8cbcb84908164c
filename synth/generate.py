"""The generation loop of one component shard: bounded concurrency, flags, policy, resume, progress.

Records are appended to ``<component path>/part-<shard>-of-<num_shards>.jsonl`` (kept) and
``<work dir>/rejected/…`` (flagged and excluded by the policy), one flushed line each, keyed by a
stable record id. A restarted run reads both, repairs a torn last line, skips every finished id and
generates only what is missing, so the union after a kill equals a clean run's ids. Prompts are
scheduled in pool order and only as many as are needed to reach the shard's target of kept records,
so the kept set is always the shortest prefix of the pool that reaches the target.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import jsonl, think
from core.triple import Triple, record_id
from synth.checks import TraceChecks
from synth.client import FatalEndpointError, Reply, RequestRefused
from synth.schema import POLICIES
from synth.sources import Prompt

log = logging.getLogger(__name__)


@dataclass
class Job:
    """What one component shard makes. ``mode``: ``api`` (teacher call) or ``source`` (the source's own
    assistant message, split by ``core.think``: the R1 component)."""

    component: str
    domain: str
    lang_input: str
    lang_trace: str | None
    teacher: str
    reasoning_effort: str | None
    out_dir: Path
    work_dir: Path
    target: int
    mode: str = "api"
    expects_trace: bool = True
    translator: str | None = None        # set for lang_input=ja: part of the record id
    elicit_trace: str | None = None      # non-reasoning teacher: ask for the reasoning first (teacher config)
    shard_name: str = "part-00000-of-00001"
    checks: TraceChecks = field(default_factory=TraceChecks)  # loop and budget checks of the trace

    def rid(self, prompt: Prompt) -> str:
        salt = [self.teacher, self.reasoning_effort or "", self.lang_input]
        if self.lang_input != "en":
            salt.append(self.translator or "")
        return record_id(prompt.id, prompt.instruction, *salt)


@dataclass
class Outcome:
    triple: Triple | None = None
    error: str | None = None      # failure after retries: nothing written, not "done"
    refused: bool = False         # the triple records a request the server refused (flag malformed)


@dataclass
class Counters:
    target: int = 0
    already: int = 0              # kept by earlier runs
    already_rejected: int = 0     # rejected by earlier runs (their prompts are not asked again)
    kept: int = 0
    rejected: int = 0
    flagged: int = 0
    failed: int = 0
    skipped: int = 0              # e.g. translation failed
    flags: Counter = field(default_factory=Counter)
    rejected_flags: Counter = field(default_factory=Counter)
    completion_tokens: int = 0
    seconds: float = 0.0
    exhausted: bool = False       # every prompt of the shard's pool was used
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["flags"] = dict(self.flags)
        d["rejected_flags"] = dict(self.rejected_flags)
        return d

    def shortfall(self) -> str | None:
        """Why fewer records than the target were kept, with what to do; None when the target was met."""
        have = self.already + self.kept
        if have >= self.target:
            return None
        why = (f"kept {have} of {self.target} (this run: {self.kept}); every prompt of the pool was used: "
               f"{self.failed} failed after retries, {self.rejected} rejected by the flag policy "
               f"({', '.join(f'{k}: {v}' for k, v in sorted(self.rejected_flags.items())) or 'none'}), "
               f"{self.already_rejected} rejected by earlier runs, {self.skipped} skipped (translation failed)")
        fixes = []
        if self.failed:
            fixes.append(f"rerun the same command to retry the {self.failed} failed prompts (last error: "
                         f"{self.last_error})")
        if have + self.failed < self.target:
            keep = " or ".join(f"synth.flag_policy.{k}=keep" for k in sorted(self.rejected_flags))
            fixes.append("raise synth.prompt_margin / synth.prompt_extra for more replacement prompts"
                         + (f", or keep those records ({keep})" if keep else ""))
        return why + ". Fix: " + "; ".join(fixes)


def flags_for(reply: Reply, expects_trace: bool) -> list[str]:
    flags = []
    if reply.finish_reason == "length":
        flags.append("truncated")
    if reply.status == "unclosed":
        flags.append("unclosed_think")
    if not (reply.response or "").strip():
        flags.append("empty_response")
    if expects_trace and not (reply.trace or "").strip():
        flags.append("missing_trace")
    return flags


def make_triple(job: Job, prompt: Prompt, instruction: str, reply: Reply) -> Triple:
    flags = flags_for(reply, job.expects_trace) + job.checks.flags(reply.trace, reply.response or "")
    return Triple(
        id=job.rid(prompt), component=job.component, domain=job.domain, source=prompt.id,
        lang_input=job.lang_input, lang_trace=job.lang_trace, teacher=job.teacher, instruction=instruction,
        trace=reply.trace or None, response=reply.response or "", reasoning_effort=job.reasoning_effort,
        finish_reason=reply.finish_reason, usage=dict(reply.usage), flags=list(dict.fromkeys(flags)),
    )


def malformed_triple(job: Job, prompt: Prompt, instruction: str, message: str) -> Triple:
    """A request the server refuses (400/413/422): recorded with flag ``malformed`` and the server's
    message as response, so it is counted and never retried silently."""
    return Triple(id=job.rid(prompt), component=job.component, domain=job.domain, source=prompt.id,
                  lang_input=job.lang_input, lang_trace=job.lang_trace, teacher=job.teacher,
                  instruction=instruction, trace=None, response=f"[request refused] {message}",
                  reasoning_effort=job.reasoning_effort, finish_reason="error", flags=["malformed"])


def source_reply(output: str | None) -> Reply:
    """The source's own assistant message (NPT's R1 answer) as a reply: split by ``core.think``."""
    parsed = think.parse(output or "")
    return Reply(trace=parsed.trace if parsed.status != "absent" else None, response=parsed.response,
                 status=parsed.status, finish_reason=None, reasoning_source="inline")


def done_ids(job: Job) -> tuple[set[str], set[str]]:
    """Ids already kept (in the component dir) and already rejected (in the work dir)."""
    kept = jsonl.ids_in(job.out_dir)
    return kept, jsonl.ids_in(job.work_dir / "rejected") - kept


def is_dropped(triple: Triple, policy: dict[str, str]) -> bool:
    return any(policy.get(f, "drop") == "drop" for f in triple.flags)


class Progress:
    """tqdm bar: done / flagged / failed / completion tokens per second / ETA."""

    def __init__(self, job: Job, total: int, enabled: bool):
        self.bar = None
        if enabled and total > 0:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=job.component, unit="rec", file=sys.stderr, mininterval=1.0,
                            dynamic_ncols=True)

    def update(self, c: Counters, kept_now: int, t0: float) -> None:
        if self.bar is None:
            return
        if kept_now:
            self.bar.update(kept_now)
        rate = c.completion_tokens / max(time.monotonic() - t0, 1e-9)
        self.bar.set_postfix_str(f"done={c.kept} flagged={c.flagged} failed={c.failed} tok/s={rate:,.0f}",
                                 refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


async def run_job(
    job: Job,
    prompts: Iterable[Prompt],
    produce: Callable[[Prompt], Awaitable[Outcome]],
    *,
    policy: dict[str, str] | None = None,
    concurrency: int = 64,
    max_consecutive_failures: int | None = None,
    progress: bool = True,
    fsync: bool = False,
) -> Counters:
    """Generate until ``job.target`` records are kept (or the prompts run out: ``Counters.shortfall``
    says why). ``prompts`` is iterated twice (a list, or a lazy :class:`synth.sources.PoolView`).
    ``max_consecutive_failures`` prompts in a row without an answer (failed after retries, or refused
    by the server) stop the run with :class:`FatalEndpointError`."""
    policy = dict(policy or {})
    bad = {k: v for k, v in policy.items() if v not in POLICIES}
    if bad:
        raise ValueError(f"flag policy values must be one of {POLICIES}: {bad}")
    kept_ids, rejected_ids = done_ids(job)
    c = Counters(target=job.target)
    for p in prompts:                                                # first pass: ids only
        i = job.rid(p)
        c.already += i in kept_ids
        c.already_rejected += i in rejected_ids
    need = job.target - c.already
    todo = ((p, i) for p in prompts for i in (job.rid(p),)           # second pass: lazy
            if i not in kept_ids and i not in rejected_ids)
    if need <= 0:
        return c

    kept_w = jsonl.ShardWriter(job.out_dir, job.shard_name, fsync=fsync)
    rej_w = jsonl.ShardWriter(job.work_dir / "rejected", job.shard_name, fsync=fsync)
    fail_w = jsonl.ShardWriter(job.work_dir / "failed", job.shard_name, fsync=fsync)
    bar = Progress(job, need, progress)
    t0 = time.monotonic()
    inflight: set[asyncio.Task] = set()
    done_q: asyncio.Queue = asyncio.Queue()  # finished tasks, O(1) per completion (asyncio.wait is O(in-flight))
    in_a_row = 0                              # prompts without an answer since the last answer
    try:
        while True:
            while not c.exhausted and len(inflight) < concurrency and c.kept + len(inflight) < need:
                nxt = next(todo, None)
                if nxt is None:
                    c.exhausted = True
                    break
                task = asyncio.ensure_future(produce(nxt[0]))
                task.prompt = nxt[0]  # type: ignore[attr-defined]
                task.add_done_callback(done_q.put_nowait)
                inflight.add(task)
            if not inflight:
                break
            finished = [await done_q.get()]
            while not done_q.empty():
                finished.append(done_q.get_nowait())
            kept_now = 0
            for task in finished:
                inflight.discard(task)
                out: Outcome = task.result()  # FatalEndpointError propagates from here
                no_answer = out.error is not None or out.refused
                in_a_row = in_a_row + 1 if no_answer else 0
                if no_answer:
                    c.last_error = out.error or out.triple.response
                if out.triple is None:
                    if out.error is not None:
                        c.failed += 1
                        fail_w.write({"source": task.prompt.id, "error": out.error})  # type: ignore[attr-defined]
                    else:
                        c.skipped += 1
                    continue
                t = out.triple
                c.completion_tokens += int(t.usage.get("completion_tokens", 0))
                if t.flags:
                    c.flagged += 1
                    c.flags.update(t.flags)
                if is_dropped(t, policy):
                    rej_w.write(dict(t.__dict__))
                    c.rejected += 1
                    c.rejected_flags.update(f for f in t.flags if policy.get(f, "drop") == "drop")
                else:
                    kept_w.write(dict(t.__dict__))
                    c.kept += 1
                    kept_now += 1
            bar.update(c, kept_now, t0)
            if max_consecutive_failures and in_a_row >= max_consecutive_failures:
                raise FatalEndpointError(
                    f"{job.component}: the last {in_a_row} prompts in a row got no answer "
                    f"(synth.max_consecutive_failures={max_consecutive_failures}); last error: {c.last_error}. "
                    "Fix the endpoint or the request settings, then rerun: finished records are kept.")
    except BaseException:
        for task in inflight:
            task.cancel()
        await asyncio.gather(*inflight, return_exceptions=True)
        raise
    finally:
        bar.close()
        kept_w.close()
        rej_w.close()
        fail_w.close()
        c.seconds = time.monotonic() - t0
    return c


def api_producer(job: Job, client: Any, translator: Any = None) -> Callable[[Prompt], Awaitable[Outcome]]:
    """Translate (if the job's input is Japanese), then ask the teacher; errors become outcomes
    (:class:`FatalEndpointError` propagates: the run stops)."""

    async def produce(prompt: Prompt) -> Outcome:
        instruction = prompt.instruction
        if translator is not None:
            try:
                tr = await translator.translate(prompt.instruction)
            except FatalEndpointError:
                raise
            except Exception as exc:  # translator unreachable after retries: not done, a rerun retries
                return Outcome(error=f"translation: {exc}")
            if not tr.ok:
                return Outcome()  # skipped: counted, the next prompt takes its place
            instruction = tr.ja
        try:
            reply = await client.chat(instruction, reasoning_effort=job.reasoning_effort)
            if job.elicit_trace:
                thought = await client.chat(job.elicit_trace.format(instruction=instruction))
                reply = elicited(thought, reply)
        except FatalEndpointError:
            raise
        except RequestRefused as exc:
            return Outcome(triple=malformed_triple(job, prompt, instruction, str(exc)), refused=True)
        except Exception as exc:  # retries exhausted
            return Outcome(error=str(exc))
        return Outcome(triple=make_triple(job, prompt, instruction, reply))

    return produce


def elicited(thought: Reply, answer: Reply) -> Reply:
    """A non-reasoning teacher's two answers as one reply: the step-by-step reasoning it wrote when asked
    for it becomes the trace, its plain answer the response (truncation of either is flagged)."""
    truncated = "length" in (thought.finish_reason, answer.finish_reason)
    usage = {k: thought.usage.get(k, 0) + answer.usage.get(k, 0) for k in thought.usage.keys() | answer.usage.keys()}
    return Reply(trace=thought.response or None, response=answer.response, status="closed",
                 finish_reason="length" if truncated else answer.finish_reason, usage=usage,
                 reasoning_source="elicited", endpoint=answer.endpoint, attempts=thought.attempts + answer.attempts)


def source_producer(job: Job) -> Callable[[Prompt], Awaitable[Outcome]]:
    async def produce(prompt: Prompt) -> Outcome:
        if prompt.output is None:
            return Outcome(error="source row has no assistant message")
        return Outcome(triple=make_triple(job, prompt, prompt.instruction, source_reply(prompt.output)))

    return produce
