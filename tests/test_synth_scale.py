"""Restart and translation memory do not grow with the size of what is already done.

At full scale a shard holds 500k records (GBs) and the translation cache 550k texts: a restart must
read only the tail of a shard to repair it, and the cache only an index of its entries; translation
runs a bounded number of coroutines. RSS at 50k vs 500k records is bench/bench_synth.py --restart.
"""

import asyncio
import json
import tracemalloc
from pathlib import Path

import pytest

from core import jsonl
from fault_server import FaultServer
from synth import generate as gen
from synth.client import ChatClient
from synth.translate import Translation, TranslationCache, Translator, text_key


def peak_bytes(fn):
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def write_shard(path: Path, n: int, size: int) -> None:
    with jsonl.ShardWriter(path.parent, path.stem, fsync=False) as w:
        for i in range(n):
            w.write({"id": f"r{i:08d}", "trace": "x" * size, "response": "y"})


def test_repair_reads_only_the_tail(tmp_path):
    shard = tmp_path / "part.jsonl"
    write_shard(shard, 2000, 10_000)                      # 20 MB
    size = shard.stat().st_size
    with open(shard, "ab") as f:
        f.write(b'{"id": "torn", "trace": "' + b"z" * 50_000)  # torn by a kill, larger than one read block
    cut, peak = peak_bytes(lambda: jsonl.repair(shard))
    assert cut == 50_000 + len(b'{"id": "torn", "trace": "') and shard.stat().st_size == size
    assert peak < 1_000_000, f"repair of a 20 MB shard allocated {peak / 1e6:.1f} MB"
    # a complete-looking but garbled last line (cut inside a multi-byte character) is cut too
    with open(shard, "ab") as f:
        f.write('{"id": "bad", "trace": "日本'.encode()[:-1] + b"\n")
    assert jsonl.repair(shard) > 0 and shard.stat().st_size == size
    assert jsonl.repair(shard) == 0                       # a sound shard is left as it is
    last = json.loads(shard.read_bytes().splitlines()[-1])
    assert last["id"] == "r00001999"


@pytest.mark.parametrize("lines", [[b"\n"], [b'{"id": "a"}\n', b'{"id": "b"'], [b'{"id": "a"}'], [b"garbage\n"]])
def test_repair_small_files(tmp_path, lines):
    p = tmp_path / "s.jsonl"
    p.write_bytes(b"".join(lines))
    jsonl.repair(p)
    assert p.read_bytes() in (b"", b"\n", b'{"id": "a"}\n')
    assert [r["id"] for r in jsonl.read(p)] in ([], ["a"])


def test_restart_memory_does_not_grow_with_record_size(tmp_path):
    job = lambda d: gen.Job(component="c", domain="chat", lang_input="en", lang_trace="en", teacher="t",
                            reasoning_effort=None, out_dir=d / "out", work_dir=d / "work", target=10)
    small, large = tmp_path / "small", tmp_path / "large"
    write_shard(small / "out" / "part-0.jsonl", 2000, 10)
    write_shard(large / "out" / "part-0.jsonl", 2000, 10_000)
    (_, _), p_small = peak_bytes(lambda: gen.done_ids(job(small)))
    (kept, _), p_large = peak_bytes(lambda: gen.done_ids(job(large)))
    assert len(kept) == 2000
    assert p_large < p_small + 200_000, (p_small, p_large)


def test_translation_cache_holds_an_index_not_the_texts(tmp_path):
    d = tmp_path / "tr"
    with jsonl.ShardWriter(d, "part-0", fsync=False) as w:
        for i in range(2000):
            src = f"text {i} " + "e" * 5000
            w.write(Translation(text_key(src), src, f"訳 {i} " + "j" * 5000, True, 1).line())
    cache, peak = peak_bytes(lambda: TranslationCache(d))
    assert peak < 2_000_000, f"opening a 20 MB cache allocated {peak / 1e6:.1f} MB"
    hit = cache.get("text 7 " + "e" * 5000)
    assert hit.ok and hit.ja == "訳 7 " + "j" * 5000
    assert cache.get("never translated") is None
    cache.close()


def test_translation_runs_a_bounded_number_of_coroutines(tmp_path):
    texts = (f"Sentence number {i}." for i in range(600))   # an iterator: consumed as workers free up
    peak = 0

    async def go():
        nonlocal peak
        client = ChatClient({"name": "t", "model": "m", "endpoints": [fs.url]}, retries={"max_attempts": 2})
        cache = TranslationCache(tmp_path / "tr")
        watching = True

        async def watch():
            nonlocal peak
            while watching:
                peak = max(peak, len(asyncio.all_tasks()))
                await asyncio.sleep(0.001)

        w = asyncio.create_task(watch())
        try:
            return await Translator(client, cache).translate_all(texts, concurrency=8)
        finally:
            watching = False
            await w
            cache.close()
            await client.aclose()

    with FaultServer(translate=True, latency=0.002) as fs:
        counts = asyncio.run(go())
    assert counts == {"translated": 600, "failed": 0, "cached": 0}
    # 8 workers, this test's two tasks, and a helper task or two the HTTP client runs per request in flight:
    # bounded by the concurrency, not by the 600 texts
    assert peak <= 3 * 8 + 2, peak
    assert len(TranslationCache(tmp_path / "tr").index) == 600
