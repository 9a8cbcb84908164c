"""Benchmark of the synth generation loop against a local fixed-latency OpenAI-compatible server.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_synth.py [--latency 0.1 --seconds 5 --out bench/results/synth.md]

The server (synth.fake_server) runs in its own process and answers every chat completion after exactly
``latency`` seconds. The client is the real stage code: synth.client.ChatClient (openai.AsyncOpenAI +
tenacity) driven by synth.generate.run_job, which parses each reply, builds the triple and appends it
to a JSONL shard. For 1, 8 and 64 concurrent requests it reports

* throughput as a fraction of ideal (ideal = concurrency / latency requests per second);
* client overhead per request = wall time per request at concurrency 1 minus the latency (the whole
  round trip outside the server's sleep: HTTP, JSON, parsing, writing), and the client process's CPU
  time per request.

Goals (issue 4): ≥ 90 % of ideal at 64 concurrent requests; ≤ 2 ms client overhead per request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synth import generate as gen  # noqa: E402
from synth.client import ChatClient  # noqa: E402
from synth.sources import Prompt  # noqa: E402


TRANSPORT = "direct"


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "fault_server.py"), "--latency", str(latency)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise SystemExit(f"fake server did not start: {url!r}")
    return proc, url


def run_once(url: str, concurrency: int, n: int, tmp: Path, tag: str) -> dict:
    prompts = [Prompt(id=f"b:{tag}:{i}", source="bench", instruction=f"Benchmark prompt {tag} {i}: what is {i}*{i}?")
               for i in range(n)]
    job = gen.Job(component=f"bench_{tag}", domain="chat", lang_input="en", lang_trace="en", teacher="fake",
                  reasoning_effort="medium", out_dir=tmp / tag, work_dir=tmp / "_w" / tag, target=n)
    teacher = {"name": "fake", "model": "fake", "endpoints": [url], "sampling": {"max_tokens": 256}}

    async def go():
        client = ChatClient(teacher, timeout=60, retries={"max_attempts": 3}, max_connections=concurrency * 2,
                            transport=TRANSPORT)
        try:
            # warm the connection pool so connection set-up is not billed to the first requests
            await asyncio.gather(*(client.chat("warm-up") for _ in range(min(concurrency, 8))))
            t0, c0 = time.perf_counter(), time.process_time()
            c = await gen.run_job(job, prompts, gen.api_producer(job, client), concurrency=concurrency,
                                  progress=False)
            return c, time.perf_counter() - t0, time.process_time() - c0
        finally:
            await client.aclose()

    c, wall, cpu = asyncio.run(go())
    assert c.kept == n, c
    return {"n": n, "wall": wall, "cpu": cpu}


def measure(latency: float, concurrencies: list[int], seconds: float, tmp: Path) -> list[dict]:
    proc, url = start_server(latency)
    rows = []
    try:
        for conc in concurrencies:
            ideal = conc / latency
            n = max(20, int(ideal * seconds))
            r = run_once(url, conc, n, tmp, f"l{latency}c{conc}")
            rps = r["n"] / r["wall"]
            rows.append({"latency": latency, "concurrency": conc, "n": n, "rps": rps, "ideal": ideal,
                         "frac": rps / ideal, "per_req_ms": 1000 * r["wall"] / n, "cpu_ms": 1000 * r["cpu"] / n})
    finally:
        proc.kill()
        proc.wait()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=float, nargs="*", default=[1.0, 0.1],
                    help="server latencies in seconds (real teacher requests take 10-100 s)")
    ap.add_argument("--seconds", type=float, default=5.0, help="target duration of each measurement")
    ap.add_argument("--concurrency", type=int, nargs="*", default=[1, 8, 64])
    ap.add_argument("--zero-n", type=int, default=500, help="requests of the zero-latency round-trip run")
    ap.add_argument("--transport", default="direct", choices=["direct", "openai"],
                    help="ChatClient transport (synth teacher config key `transport`)")
    ap.add_argument("--out", default=None, help="also write the markdown report here")
    a = ap.parse_args()
    global TRANSPORT
    TRANSPORT = a.transport
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows = [r for lat in a.latency for r in measure(lat, a.concurrency, a.seconds, tmp)]
        proc0, url0 = start_server(0.0)
        try:
            r0 = run_once(url0, 1, a.zero_n, tmp, "zero")
        finally:
            proc0.kill()
            proc0.wait()
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    lines = [
        f"## transport `{a.transport}` (`bench/bench_synth.py --transport {a.transport}`)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load average "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end. Server: synth.fake_server in its own process, "
        "answering every request after a fixed latency; client: the stage's ChatClient (openai.AsyncOpenAI "
        "+ tenacity, transport " + a.transport + ") driven by synth.generate.run_job (parse, triple, JSONL append).",
        "",
        "| latency | concurrent requests | requests | req/s | ideal req/s | fraction of ideal | wall ms/req | client CPU ms/req |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['latency'] * 1000:.0f} ms | {r['concurrency']} | {r['n']} | {r['rps']:.1f} | {r['ideal']:.1f} "
                     f"| {100 * r['frac']:.1f} % | {r['per_req_ms']:.2f} | {r['cpu_ms']:.2f} |")
    lines.append("")
    overhead = {r["latency"]: r["per_req_ms"] - r["latency"] * 1000 for r in rows if r["concurrency"] == 1}
    for lat, ov in overhead.items():
        lines.append(f"- Client overhead per request at {lat * 1000:.0f} ms latency, concurrency 1 (wall per request − "
                     f"latency): **{ov:.2f} ms**.")
    zero_wall, zero_cpu = 1000 * r0["wall"] / r0["n"], 1000 * r0["cpu"] / r0["n"]
    lines.append(f"- Zero-latency round trip, concurrency 1 ({r0['n']} requests): **{zero_wall:.2f} ms** wall per "
                 f"request (client + server + kernel), **{zero_cpu:.2f} ms** client CPU per request.")
    c64 = {r["latency"]: r for r in rows if r["concurrency"] == 64}
    if c64:
        lines.append("")
        for lat, r in c64.items():
            lines.append(f"- Goal ≥ 90 % of ideal at 64 concurrent, {lat * 1000:.0f} ms latency: "
                         f"{'met' if r['frac'] >= 0.9 else 'NOT met'} ({100 * r['frac']:.1f} %).")
        lines.append(f"- Goal ≤ 2 ms client overhead per request: client CPU {zero_cpu:.2f} ms → "
                     f"{'met' if zero_cpu <= 2.0 else 'NOT met'}; zero-latency wall {zero_wall:.2f} ms → "
                     f"{'met' if zero_wall <= 2.0 else 'NOT met'}.")
    report = "\n".join(lines) + "\n"
    print(report)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(report)


if __name__ == "__main__":
    main()
