"""Benchmarks of the synth stage: request throughput against a fixed-latency server, and restart memory.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_synth.py [--out bench/results/synth.md]
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_synth.py --restart [--out …]

**Throughput.** The server (tests/fault_server.py, no faults, an API key required) runs in its own
process and answers every chat completion after exactly ``latency`` seconds. Two clients do the same
work through the stage's generation loop (synth.generate.run_job: schedule, parse the reply, build the
triple, append it to a JSONL shard), in one run, their order rotated per setting:

* ``stage``: synth.client.ChatClient (one openai.AsyncOpenAI per endpoint, tenacity retries, breaker);
* ``plain``: what a user would write instead: one openai.AsyncOpenAI, ``chat.completions.create``.

For 1, 8 and 64 concurrent requests: throughput as a fraction of ideal (concurrency / latency), and
client CPU time per request; plus a zero-latency round trip at concurrency 1. The load average of the
machine is recorded with every row (the project's machine is shared).
Goals (issue 11): ≥ 90 % of ideal at 64 concurrent requests with 1 s latency; ≤ 2 ms client CPU per request.

**The fault run** (``--fault-run``): ``python -m synth`` as a user runs it (a subprocess, default
concurrency 64, default retries), against two key-checking fault servers with 1 s latency, on N prompts:
once with no faults and once with issue 11's fault mix (the rates of tests/test_synth_faults.py: 429, 500,
timeouts, garbled bodies and dropped connections, retried; truncated, unclosed and empty answers, flagged).
From the stage's run summary (generation seconds) and the servers' counts, sampled every 50 ms: the share
of the 64 request slots that held a request in the steady state (the servers' requests being answered,
from the first request until 90 % of the prompts have their final answer; a timed-out request is
answered when the client gives up on it, at ``teacher.timeout``), how long the last 10 % took (the
slowest prompts' retry backoff), and prompts per second over the whole run as a fraction of the
fault-free ideal (concurrency / latency).

**Restart memory** (``--restart``): a fresh process opens a component directory of N done records the
way a rerun does (core.jsonl.repair via the shard writer, the done ids) and a translation cache of N
entries; peak RSS above the bare interpreter-with-imports, for N = 50k and 500k. Beside it the old
repair, which read the whole shard (``Path.read_bytes``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

KEY_ENV = "BENCH_SYNTH_KEY"
TEACHER = {"name": "fake", "model": "fake", "endpoints": [], "api_key_env": KEY_ENV, "sampling": {"max_tokens": 256},
           "timeout": 60}


def load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


# ----------------------------------------------------------------------------------------------------
# throughput


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "fault_server.py"), "--latency", str(latency),
                             "--api-key-env", KEY_ENV], cwd=REPO, stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise SystemExit(f"fault server did not start: {url!r}")
    return proc, url


class PlainClient:
    """The plain openai client doing the same work: ``chat.completions.create``, then the same parsing."""

    def __init__(self, url: str):
        import openai

        self.client = openai.AsyncOpenAI(base_url=url, api_key=os.environ[KEY_ENV], max_retries=0, timeout=60)

    async def chat(self, instruction: str, reasoning_effort: str | None = None, **_):
        from synth.client import parse_reply

        effort = {"reasoning_effort": reasoning_effort} if reasoning_effort else {}
        r = await self.client.chat.completions.create(model="fake", messages=[{"role": "user", "content": instruction}],
                                                      max_tokens=256, **effort)
        return parse_reply(r.model_dump())

    async def aclose(self) -> None:
        await self.client.close()


def run_once(url: str, which: str, concurrency: int, n: int, tmp: Path, tag: str) -> dict:
    from synth import generate as gen
    from synth.client import ChatClient
    from synth.sources import Prompt

    prompts = [Prompt(id=f"b:{tag}:{i}", source="bench", instruction=f"Benchmark prompt {tag} {i}: what is {i}*{i}?")
               for i in range(n)]
    job = gen.Job(component=f"bench_{tag}", domain="chat", lang_input="en", lang_trace="en", teacher="fake",
                  reasoning_effort="medium", out_dir=tmp / tag, work_dir=tmp / "_w" / tag, target=n)

    async def go():
        client = ChatClient({**TEACHER, "endpoints": [url]}, retries={"max_attempts": 3}) if which == "stage" \
            else PlainClient(url)
        try:
            # open every connection first, so that connection set-up is not billed to the measurement
            await asyncio.gather(*(client.chat(f"warm-up {i}") for i in range(concurrency)))
            t0, c0 = time.perf_counter(), time.process_time()
            c = await gen.run_job(job, prompts, gen.api_producer(job, client), concurrency=concurrency,
                                  progress=False)
            return c, time.perf_counter() - t0, time.process_time() - c0
        finally:
            await client.aclose()

    c, wall, cpu = asyncio.run(go())
    assert c.kept == n, c
    return {"n": n, "wall": wall, "cpu": cpu}


def throughput(latencies: list[float], concurrencies: list[int], seconds: float, zero_n: int) -> list[str]:
    rows, order = [], ["stage", "plain"]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for lat in latencies + [0.0]:
            proc, url = start_server(lat)
            try:
                for conc in (concurrencies if lat else [1]):
                    n = max(20, int(conc / lat * seconds)) if lat else zero_n
                    for which in order:
                        before = load()
                        r = run_once(url, which, conc, n, tmp, f"{which}-l{lat}c{conc}")
                        rows.append({"client": which, "latency": lat, "concurrency": conc, "load": before, **r})
                    order.reverse()   # rotate who goes first
            finally:
                proc.kill()
                proc.wait()
    lines = ["| client | latency | concurrent | requests | req/s | fraction of ideal | client CPU ms/req | load avg before (1/5/15 min) |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        r["frac"] = r["n"] / r["wall"] * r["latency"] / r["concurrency"]
        r["cpu_ms"] = 1000 * r["cpu"] / r["n"]
        frac = f"{100 * r['frac']:.1f} %" if r["latency"] else "—"
        lines.append(f"| {r['client']} | {r['latency'] * 1000:.0f} ms | {r['concurrency']} | {r['n']} | "
                     f"{r['n'] / r['wall']:.1f} | {frac} | {r['cpu_ms']:.2f} | {r['load']} |")
    goal = {r["client"]: r["frac"] for r in rows if r["latency"] == 1.0 and r["concurrency"] == 64}
    if goal:
        lines += ["", f"- Goal ≥ 90 % of ideal at 64 concurrent requests, 1 s latency: stage {100 * goal['stage']:.1f} % "
                      f"(plain {100 * goal['plain']:.1f} %) → {'met' if goal['stage'] >= 0.9 else 'NOT met'}."]
    cpu = {r["client"]: r["cpu_ms"] for r in rows if r["latency"] == 0}
    lines.append(f"- Goal ≤ 2 ms client CPU per request (zero-latency round trip, as before): stage {cpu['stage']:.2f} ms "
                 f"(plain {cpu['plain']:.2f} ms) → {'met' if cpu['stage'] <= 2.0 else 'NOT met'}.")
    return lines


# ----------------------------------------------------------------------------------------------------
# the fault run: the whole stage, as a user runs it

FAULTS = dict(transient={"429": 0.05, "500": 0.05, "timeout": 0.02, "garbled": 0.04, "drop": 0.03},
              permanent={"truncated": 0.04, "unclosed": 0.04, "empty": 0.04})


def fault_run(n: int, latency: float, timeout: float) -> list[str]:
    import json
    import statistics
    import threading

    sys.path.insert(0, str(REPO / "tests"))
    from fault_server import PERMANENT, FaultServer

    key = os.environ[KEY_ENV]
    slots = 64  # synth.concurrency's default
    lines = ["| faults | prompts | kept | rejected (flagged) | attempts | generation s | steady s | request slots busy "
             "(steady) | the last 10 % s | prompts/s (all) | fraction of fault-free ideal (all) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, rates in (("none", {}), ("issue 11 mix", FAULTS)):
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            (d / "p.jsonl").write_text("".join(f'{{"id": {i}, "instruction": "Question {i}: what is {i} plus {i}?"}}\n'
                                               for i in range(n)))
            # a timed-out request is answered (500) when the client gives up on it: it holds its slot that long
            # on both sides
            hang = max(timeout - latency, 0.0)
            with FaultServer(latency=latency, hang=hang, api_key=key, **rates) as a, \
                    FaultServer(latency=latency, hang=hang, api_key=key, **rates) as b:
                bad = sum(a.permanent_fault(f"Question {i}: what is {i} plus {i}?") is not None for i in range(n))
                args = ["experiment=chat_oss_en_ja", "synth.components=[chat_oss_en]", "~synth.sources.lmsys",
                        f"+synth.sources.lmsys={{type: local, path: '{d / 'p.jsonl'}'}}",
                        f"teacher.endpoints=[{a.url},{b.url}]", f"teacher.api_key_env={KEY_ENV}",
                        f"teacher.timeout={timeout}", "synth.steps=[prompts,generate]", "synth.progress=false",
                        f"synth.limit={n - bad}", "synth.prompt_margin=0", f"synth.prompt_extra={bad}"]
                # the servers' view every 50 ms: requests being answered, and prompts given their final answer
                # (a good one or a permanent fault: each prompt gets exactly one)
                seen, stop = [], threading.Event()

                def sample():
                    while not stop.wait(0.05):
                        final = sum(s.outcomes[k] for s in (a, b) for k in ("ok", *PERMANENT))
                        seen.append((time.monotonic(), a.inflight + b.inflight, final))

                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                done = subprocess.run([sys.executable, "-m", "synth", *args], cwd=REPO, capture_output=True, text=True,
                                      env={**os.environ, "JAEN_DISTILL_ROOT": str(d), "PYTHONPATH": str(REPO)})
                stop.set()
                sampler.join()
                if done.returncode != 0:
                    raise SystemExit(f"python -m synth failed ({label}):\n{done.stderr[-3000:]}")
                attempts = a.requests + b.requests
            run = json.loads(next((d / "data" / "triples" / "_synth" / "chat_oss_en").glob("run-*.json")).read_text())
        secs = run["seconds"]
        # Steady state: from the first request until 90 % of the prompts have their final answer; then the run
        # drains, waiting on the slowest prompts' retries, whose backoff sets how long.
        first = next(i for i, x in enumerate(seen) if x[1] > 0)
        last = next(i for i, x in enumerate(seen) if x[2] >= 0.9 * n)
        steady = seen[last][0] - seen[first][0]
        busy = statistics.mean(x[1] for x in seen[first:last + 1]) / slots
        lines.append(f"| {label} | {n} | {run['kept']} | {run['rejected']} | {attempts} | {secs:.1f} | {steady:.1f} | "
                     f"{100 * busy:.1f} % | {secs - steady:.1f} | {n / secs:.1f} | {100 * n * latency / (slots * secs):.1f} % |")
    return lines


# ----------------------------------------------------------------------------------------------------
# restart memory


def _restart_child(kind: str, directory: str) -> None:
    """In a fresh process: peak RSS (KiB) of one restart operation above the imports."""
    from core import jsonl
    from synth import generate as gen
    from synth.translate import TranslationCache

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    d = Path(directory)
    if kind == "stage":
        job = gen.Job(component="c", domain="chat", lang_input="en", lang_trace="en", teacher="t", reasoning_effort=None,
                      out_dir=d / "out", work_dir=d / "work", target=1)
        jsonl.ShardWriter(d / "out", "part-0", fsync=False).close()   # repair on open
        kept, _ = gen.done_ids(job)
        assert kept
    elif kind == "old-repair":
        data = (d / "out" / "part-0.jsonl").read_bytes()   # what repair() did before: the whole shard
        assert data.endswith(b"\n")
    else:
        assert TranslationCache(d / "tr").index
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)


def restart(sizes: list[int], trace: int) -> list[str]:
    from core import jsonl
    from synth.translate import Translation, text_key

    lines = ["| done records | shard size | restart (repair + done ids) | old repair (whole shard) "
             "| translation cache of as many entries |", "|---:|---:|---:|---:|---:|"]
    for n in sizes:
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            with jsonl.ShardWriter(d / "out", "part-0", fsync=False) as w:
                for i in range(n):
                    w.write({"id": f"{i:024x}", "instruction": f"q{i}", "trace": "t" * trace, "response": "r"})
            with jsonl.ShardWriter(d / "tr", "part-0", fsync=False) as w:
                for i in range(n):
                    src = f"Prompt {i}: " + "e" * trace
                    w.write(Translation(text_key(src), src, f"訳 {i} " + "j" * trace, True, 1).line())
            mb = {}
            for kind in ("stage", "old-repair", "translation"):
                out = subprocess.run([sys.executable, __file__, "--restart-child", kind, str(d)], check=True,
                                     capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
                mb[kind] = int(out.stdout.split()[-1]) / 1024
            size = (d / "out" / "part-0.jsonl").stat().st_size / 1e6
        lines.append(f"| {n:,} | {size:,.0f} MB | +{mb['stage']:.0f} MB | +{mb['old-repair']:.0f} MB | "
                     f"+{mb['translation']:.0f} MB |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=float, nargs="*", default=[1.0, 0.1])
    ap.add_argument("--seconds", type=float, default=5.0, help="target duration of each measurement")
    ap.add_argument("--concurrency", type=int, nargs="*", default=[1, 8, 64])
    ap.add_argument("--zero-n", type=int, default=500, help="requests of the zero-latency round trip")
    ap.add_argument("--restart", action="store_true", help="measure restart memory instead")
    ap.add_argument("--fault-run", type=int, metavar="N", help="time `python -m synth` on N prompts, with and "
                    "without faults, instead")
    ap.add_argument("--sizes", type=int, nargs="*", default=[50_000, 500_000])
    ap.add_argument("--trace", type=int, default=200, help="trace/text bytes per record in --restart")
    ap.add_argument("--restart-child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help="append the markdown table to this file")
    a = ap.parse_args()
    if a.restart_child:
        _restart_child(*a.restart_child)
        return
    os.environ.setdefault(KEY_ENV, "sk-bench-key")
    head = (f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
            f"load average at the start {load()}.")
    if a.fault_run:
        body = fault_run(a.fault_run, a.latency[0] if a.latency else 1.0, timeout=2.0)
        title = f"## The fault run (`bench/bench_synth.py --fault-run {a.fault_run}`), {a.latency[0]:g} s latency"
    elif a.restart:
        body = restart(a.sizes, a.trace)
        title = f"## Restart memory (`bench/bench_synth.py --restart`, {a.trace}-byte traces)"
    else:
        body = throughput(a.latency, a.concurrency, a.seconds, a.zero_n)
        title = "## Throughput (`bench/bench_synth.py`)"
    report = "\n".join([title, "", head + f" At the end: {load()}.", "", *body]) + "\n"
    print(report)
    if a.out:
        with open(a.out, "a") as f:
            f.write("\n" + report)


if __name__ == "__main__":
    main()
