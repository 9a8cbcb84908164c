"""The evaluate stage, top to bottom: check, pick the model, then per benchmark generate → parse → score → summarize.

Before anything runs, every cheap thing is checked (``check_config``: benchmark keys and values, the
``all.*`` shortcuts, the backend; ``resolve_target``: the model exists and is one), so a typo fails in a
second with an error naming it, and leaves no run directory behind. Then for each benchmark in
``cfg.benchmark`` (one config each, ``conf/benchmark/<name>.yaml``):

1. import ``evaluate.tasks.<module>`` and ``load`` its examples (cut to ``limit``);
2. skip samples already in ``samples.jsonl`` when they were made the same way (``fingerprint``: model,
   decoding, prompt rendering, scoring keys; ``example_hash``: each example's content); samples made
   otherwise are refused, never mixed (another ``run_name``, or ``overwrite=true``);
3. generate the missing samples chunk by chunk, turn by turn (turn k+1 sees the model's turn-k answer);
   nothing is written before the first chunk is done, so a run that fails early leaves nothing;
4. parse every generation with ``core.think.parse`` (closed | unclosed | absent), pick the paper-policy
   answer (response if closed, else the trace); say why a failed sample failed (``core.loops``: loop,
   runaway, truncated_answer, other; on token ids where the backend has them); force an answer from every
   generation that ended with the think block open (``policy.forced``); let the task ``score`` the
   paper-policy and the forced answers, and append the records;
5. write ``summary.json``: paper, strict and forced scores ± standard error, failure and no-think rates,
   failure kinds and loop rate.

Output layout (docs/contracts.md): ``${paths.output_dir}/eval/<run_name>/<benchmark>/samples.jsonl``
and ``summary.json``; ``settings.json`` beside them holds the fingerprint of what made the samples.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from huggingface_hub.utils import HFValidationError, validate_repo_id
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from core import jsonl, wandb_mode
from core.assets import resolve_model
from core.config import check_schema, positive_int
from core.loops import failure_kind, find_loop
from core.think import parse
from evaluate import backends, metrics
from evaluate.sandbox import SandboxUnavailable
from evaluate.tasks import BenchmarkConfig, Example, Verdict

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- checks before anything runs
def check_config(cfg: DictConfig) -> None:
    """Everything cheap, before a model, a dataset or a file is touched; each error names the input and the fix."""
    if not cfg.benchmark:
        raise ValueError("no benchmark selected; e.g. benchmark=[math500,aime]")
    if cfg.backend.name not in backends.NAMES:
        raise ValueError(f"backend.name={cfg.backend.name!r}; use {'|'.join(backends.NAMES)}")
    _positive("chunk_size", cfg.chunk_size, "number of samples")
    every = cfg.get("all") or {}
    for key, what in (("limit", "number of examples"), ("n", "number of samples"), ("max_tokens", "number of tokens")):
        if every.get(key) is not None:
            _positive(f"all.{key}", every[key], f"{what}, or null to keep each benchmark's own")
    knobs = anatomy_knobs(cfg)
    try:
        find_loop("", **knobs)  # checks the values before anything runs
    except (TypeError, ValueError) as e:
        raise ValueError(f"anatomy: {e} (keys: min_repeats, min_share, min_tokens, tolerance)") from e
    forced = cfg.policy.forced
    if not isinstance(forced.enabled, bool):
        raise ValueError(f"policy.forced.enabled={forced.enabled!r}: use true or false")
    _positive("policy.forced.max_tokens", forced.max_tokens, "number of tokens")
    for name in cfg.benchmark:
        bcfg = with_shortcuts(cfg.benchmark[name], every)
        check_benchmark(name, bcfg)
        settings_of(bcfg, cfg.decoding)
        if forced.enabled and not isinstance(forced.cue.get(bcfg.lang), str):
            raise ValueError(f"policy.forced.cue.{bcfg.lang} is not set: benchmark {name} is in {bcfg.lang!r}; "
                             f"add the answer cue for it, e.g. policy.forced.cue.{bcfg.lang}='Answer:'")


def check_benchmark(name: str, bcfg: DictConfig) -> None:
    """One benchmark's config against :class:`~evaluate.tasks.BenchmarkConfig`: known keys, their types,
    sane values, and a task module that imports."""
    typed = check_schema(bcfg, BenchmarkConfig, f"benchmark.{name}",
                         f" (fix conf/benchmark/{name}.yaml or its override)")
    _positive(f"benchmark.{name}.n", typed.n, "number of samples per example")
    _positive(f"benchmark.{name}.max_tokens", typed.max_tokens, "number of tokens")
    if typed.limit is not None:
        _positive(f"benchmark.{name}.limit", typed.limit, "number of examples, or null for all of them")
    if typed.temperature < 0 or not 0 < typed.top_p <= 1:
        raise ValueError(f"benchmark.{name}: temperature={typed.temperature}, top_p={typed.top_p}; "
                         "need temperature >= 0 and 0 < top_p <= 1")
    task_module(name, bcfg)


def _positive(key: str, value: Any, what: str) -> None:
    if not positive_int(value):
        raise ValueError(f"{key}={value}: must be a positive {what}")


def task_module(name: str, bcfg: DictConfig):
    try:
        return importlib.import_module(f"evaluate.tasks.{bcfg.module}")
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(f"benchmark {name}: module: {bcfg.module} names no evaluate/tasks/{bcfg.module}.py "
                                  f"(fix conf/benchmark/{name}.yaml)") from e


# ---------------------------------------------------------------- what to evaluate
def resolve_target(cfg: DictConfig) -> tuple[str, str, str | None]:
    """(model path or hub id, run name, experiment name): checkpoint= > experiment= > model.name_or_path.
    The model must exist: a directory holding a model or a LoRA adapter, or a hub id."""
    exp = OmegaConf.select(cfg, "experiment.name")
    if cfg.get("checkpoint"):
        model, given = str(cfg.checkpoint), f"checkpoint={cfg.checkpoint}"
    elif exp:
        model, given = str(Path(cfg.paths.output_dir) / "train" / exp), f"experiment={exp}"
        if not Path(model).exists():
            raise FileNotFoundError(
                f"experiment {exp!r} has no trained model at {model}; train it first "
                f"(python -m train experiment={exp}) or evaluate another one with checkpoint=/path/to/model"
            )
    elif OmegaConf.is_missing(cfg.model, "name_or_path"):
        raise ValueError("nothing to evaluate: set checkpoint=/path/to/model (or a hub id), experiment=NAME "
                         "(the model python -m train wrote for it), or model.name_or_path=...")
    else:
        model, given = str(cfg.model.name_or_path), f"model.name_or_path={cfg.model.name_or_path}"
    run_name = cfg.get("run_name") or exp or _name_from_model(model)
    model = resolve_model(model)
    check_model(model, given, exp)
    return model, run_name, exp


def check_model(model: str, given: str, experiment: str | None = None) -> None:
    """``model`` is a hub id, or a directory with a model (config.json + weights) or a LoRA adapter
    (adapter_config.json + adapter weights, whose base is checked in turn); else an error naming ``given``."""
    path = Path(model)
    if not path.exists():
        if _is_hub_id(model):
            return  # the backend (or the server) loads it; its own error says why if it cannot
        raise FileNotFoundError(f"{given}: no such directory, and not a hub id (org/name); point it at a model "
                                "directory (config.json + weights) or a hub id")
    if path.is_dir() and (path / "config.json").is_file() and _any(path, "*.safetensors", "pytorch_model*.bin"):
        return
    base = backends.adapter_base(model)
    if base is not None and _any(path, "adapter_model.safetensors", "adapter_model.bin"):
        return check_model(base, f"{given}: the base model of its LoRA adapter ({base}, adapter_config.json's "
                                 "base_model_name_or_path)")
    inside = sorted(p.name + "/" * p.is_dir() for p in path.iterdir()) if path.is_dir() else []
    hint = f" Has python -m train experiment={experiment} finished?" if experiment else ""
    if checkpoints := sorted((n.rstrip("/") for n in inside if n.startswith("checkpoint-")), key=lambda n: (len(n), n)):
        hint += f" To evaluate its last intermediate checkpoint: checkpoint={path / checkpoints[-1]}"
    raise FileNotFoundError(
        f"{given}: {path} holds no model (a model is config.json with *.safetensors or pytorch_model*.bin "
        "weights; a LoRA adapter is adapter_config.json with adapter_model.safetensors). "
        f"It holds: {', '.join(inside[:12]) or 'nothing'}.{hint}"
    )


def _any(path: Path, *patterns: str) -> bool:
    return any(f.is_file() for pattern in patterns for f in path.glob(pattern))


def _is_hub_id(name: str) -> bool:
    if name.startswith(("/", ".", "~")):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _name_from_model(model: str) -> str:
    parts = [p for p in Path(model).parts if p not in ("/", "")]
    return "--".join(parts[-2:]) if not Path(model).exists() else parts[-1]


# ---------------------------------------------------------------- settings
def settings_of(bcfg: DictConfig, decoding: str) -> dict[str, Any]:
    """Table 5 settings of a benchmark; ``decoding=base`` is Appendix A's Base-model setting (T=0, N=1)."""
    s = {
        "n": int(bcfg.n),
        "temperature": float(bcfg.temperature),
        "top_p": float(bcfg.top_p),
        "max_tokens": int(bcfg.max_tokens),
    }
    s["greedy_override"] = decoding == "base" and bool(bcfg.get("base_greedy", True))
    if s["greedy_override"]:
        s.update(n=1, temperature=0.0, top_p=1.0)
    elif decoding not in ("paper", "base"):
        raise ValueError(f"decoding={decoding!r}; use paper (Table 5) or base (T=0, N=1 for the Base model)")
    return s


def with_shortcuts(bcfg: DictConfig, every: DictConfig | None) -> DictConfig:
    """The benchmark's config with the non-null ``all.*`` shortcuts applied (``source=local``: the
    package's offline copy where one exists, else the project's fixture)."""
    if not every:
        return bcfg
    changes = {k: v for k, v in every.items() if v is not None}
    if changes.get("source") == "local":
        changes["source"] = "fixture" if bcfg.get("fixture") else "offline"
    return OmegaConf.merge(bcfg, changes) if changes else bcfg


def anatomy_knobs(cfg: DictConfig) -> dict[str, Any]:
    """The loop detector's knobs (``core.loops.find_loop``) as plain values."""
    return OmegaConf.to_container(cfg.anatomy, resolve=True)


def forced_policy(cfg: DictConfig, bcfg: DictConfig, module,
                  examples: list[Example] | None = None) -> tuple[dict | None, str | None]:
    """(how answers are forced for this benchmark, None) or (None, why they are not).

    Forcing needs a sample graded on its own answer: a benchmark whose score is computed over the whole
    corpus or another unit (``aggregate``: BLEU, M-IFEval's instruction-level accuracy, MT-Bench's judge)
    or whose samples are conversations (a forced answer would change what later turns see) gets none."""
    forced = cfg.policy.forced
    if not forced.enabled:
        return None, "disabled (policy.forced.enabled=false)"
    if hasattr(module, "aggregate"):
        return None, (f"not applicable: {bcfg.metric} is aggregated over the benchmark (evaluate.tasks.{bcfg.module}"
                      ".aggregate), not a mean of per-sample grades a forced answer could replace")
    if examples and any(len(ex.turns) > 1 for ex in examples):
        return None, "not applicable: multi-turn samples (a forced answer would change what the next turn sees)"
    policy = {"max_tokens": int(forced.max_tokens), "cue": str(forced.cue[bcfg.lang]),
              "vllm_thinking_budget": bool(forced.vllm_thinking_budget)}
    return policy, None


FORCED_SEED = 1_000_003  # added to a chunk's seed for its forced answers

# ---------------------------------------------------------------- what determines a sample (resume)
# Benchmark keys that do not: how many (raising limit or n extends a run), where the examples come from
# (their content is in each record's example_hash), where a judge is served and how fast. The decoding keys
# enter as the effective settings (decoding=base changes them).
_FREE_KEYS = {"limit", "n", "years", "source", "fixture", "hub_id", "hub_config", "split", "hub_data_files",
              "hub_sources", "base_url", "api_key_env", "score_workers", "concurrency", "timeout", "max_retries",
              "temperature", "top_p", "max_tokens", "base_greedy"}
# Backend keys that do: how the prompt is rendered, how long the answer may run, how it is read.
_BACKEND_KEYS = ("chat_template_kwargs", "extra_body", "think_opened", "max_model_len")
# The files that make a model directory what it is (weights, config, tokenizer, chat template).
_MODEL_FILES = ("config.json", "generation_config.json", "adapter_config.json", "*.safetensors", "*.bin",
                "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def fingerprint(bcfg: DictConfig, cfg: DictConfig, target: dict, settings: dict, forced: dict | None = None) -> dict:
    """What determines a sample besides its example: the model, the effective decoding settings, the backend
    keys that shape prompt and answer, every benchmark key that shapes the prompt or the score, and how
    answers are forced (``forced_policy``; None where none are). Plain JSON values, as ``settings.json``
    keeps them. The loop detector's knobs are not in it: they change no generation, and a rerun with other
    knobs re-analyses the stored samples (``reanalyse``)."""
    backend = OmegaConf.to_container(cfg.backend, resolve=True)
    bench = OmegaConf.to_container(bcfg, resolve=True)
    fp = {
        "model": model_identity(target["model"]),
        **{k: v for k, v in settings.items() if k != "n"},
        **{f"backend.{k}": backend.get(k) for k in _BACKEND_KEYS},
        **{k: _without(v, _FREE_KEYS) for k, v in bench.items() if k not in _FREE_KEYS},
        "policy.forced": forced,
    }
    return json.loads(json.dumps(fp))


def _without(value: Any, keys: set[str]) -> Any:
    return {k: _without(v, keys) for k, v in value.items() if k not in keys} if isinstance(value, dict) else value


def model_identity(model: str) -> str | dict[str, str]:
    """What a model is, not where it is: a hub id is its name; a directory is, per model file, its size and a
    hash of its first and last MiB. A retrain at the same path changes it, a copy or a move does not; hashing
    whole 16 GB checkpoints would cost minutes on a cluster file system, every run."""
    path = Path(model)
    if not path.is_dir():
        return model
    files = sorted({f for pattern in _MODEL_FILES for f in path.glob(pattern) if f.is_file()})
    return {f.name: _sampled_digest(f) for f in files}


def _sampled_digest(path: Path, span: int = 1 << 20) -> str:
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(span))
        if size > span:
            f.seek(max(span, size - span))
            h.update(f.read(span))
    return f"{size}:{h.hexdigest()[:16]}"


def example_hash(ex: Example) -> str:
    """The content of an example that its samples and their scores depend on (prompt turns, system prompt,
    reference, meta, hidden tests): another source file or prompt template changes it."""
    blob = json.dumps([ex.turns, ex.system, ex.reference, ex.meta, ex.private], sort_keys=True,
                      ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _resume(out_dir: Path, fp: dict, hashes: dict[str, str], run_name: str) -> tuple[set[str], dict | None]:
    """Ids of the samples already made the same way, and the anatomy knobs their failure kinds were found
    with; an error when the directory holds samples made otherwise (a run never mixes them)."""
    samples = out_dir / "samples.jsonl"
    if not samples.exists():
        return set(), None
    fix = f"keep both with another run_name= (e.g. run_name={run_name}-2), or replace them with overwrite=true"
    marker = out_dir / "settings.json"
    old = json.loads(marker.read_text(encoding="utf-8")) if marker.exists() else {}
    knobs = old.pop("anatomy", None)
    if "model" not in old:
        raise ValueError(f"{out_dir} holds samples without the fingerprint of what made them (written by an "
                         f"older version, or not by evaluate); {fix}")
    if changed := [k for k in sorted(set(old) | set(fp)) if old.get(k) != fp.get(k)]:
        what = "; ".join(f"{k} (was {_short(old.get(k))}, now {_short(fp.get(k))})" for k in changed)
        if changed == ["policy.forced"] and old.get("policy.forced") is None:
            fix += ", or resume them without forced answers: policy.forced.enabled=false"
        raise ValueError(f"{out_dir} holds samples made with another {what}; {fix}")
    done, stale = set(), set()
    for r in jsonl.read(samples):
        h = hashes.get(r["example_id"])
        if h is None:
            continue  # an example not selected now (a lower limit): kept, not used
        if r.get("example_hash") == h:
            done.add(r["id"])
        else:
            stale.add(r["example_id"])
    if stale:
        raise ValueError(f"{out_dir} holds samples of {len(stale)} examples whose content (prompt, reference or "
                         f"data) is different now, e.g. {sorted(stale)[:3]}: another source file? {fix}")
    return done, knobs


def reanalyse(out_dir: Path, fp: dict, knobs: dict) -> int:
    """Find the failure kind of every stored sample again with other anatomy knobs, on its stored text (token
    ids are not stored, so a loop is then found in ``char`` units), and rewrite ``samples.jsonl`` and
    ``settings.json`` atomically. Returns the number of samples."""
    path = out_dir / "samples.jsonl"
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for r in jsonl.read(path):
            traces = [parse(text, opened).trace for text, opened in zip(r["output"], r["opened"])]
            r["failure_kind"], r["loop"] = sample_anatomy(r["turn_status"], r["finish_reason"], traces, knobs)
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    _write_json(out_dir / "settings.json", {**fp, "anatomy": knobs})
    return n


def sample_anatomy(turn_status: list[str], finish_reasons: list[str], seqs: list,
                   knobs: dict) -> tuple[str | None, dict | None]:
    """(failure kind, loop) of one sample from its turns (``core.loops``): the kind of its first unclosed turn
    (``loop`` with where and how it loops, ``runaway`` or ``other``), else ``truncated_answer`` when a closed
    turn ran out of budget, else (None, None). ``seqs``: each turn's token ids, or its trace text."""
    truncated = False
    for status, finish, seq in zip(turn_status, finish_reasons, seqs):
        kind, loop = failure_kind(status, finish, seq, **knobs)
        if status == "unclosed":
            return kind, (dataclasses.asdict(loop) if loop else None)
        truncated = truncated or kind == "truncated_answer"
    return ("truncated_answer" if truncated else None), None


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


# ---------------------------------------------------------------- one benchmark
def evaluate_benchmark(name: str, bcfg: DictConfig, cfg: DictConfig, get_backend, target: dict) -> dict:
    module = task_module(name, bcfg)
    examples = load_examples(name, module, bcfg)
    settings = settings_of(bcfg, cfg.decoding)
    out_dir = Path(cfg.output_dir) / name
    samples_path = out_dir / "samples.jsonl"
    forced, forced_note = forced_policy(cfg, bcfg, module, examples)
    knobs = anatomy_knobs(cfg)
    fp = fingerprint(bcfg, cfg, target, settings, forced)
    hashes = {ex.id: example_hash(ex) for ex in examples}
    overwrite = bool(cfg.get("overwrite"))
    done, stored_knobs = (set(), None) if overwrite else _resume(out_dir, fp, hashes, target["run_name"])
    if samples_path.exists() and not overwrite and stored_knobs != knobs:
        n = reanalyse(out_dir, fp, knobs)
        log.info("%s: failure kinds of the %d stored samples found again with anatomy=%s (was %s)", name, n, knobs,
                 stored_knobs)
    todo = [(ex, k) for ex in examples for k in range(settings["n"]) if f"{ex.id}#{k}" not in done]
    log.info("%s: %d examples x %d samples, %d to generate", name, len(examples), settings["n"], len(todo))

    t0 = time.time()
    if todo:
        backend = get_backend()
        gen_settings = backends.Settings(settings["temperature"], settings["top_p"], settings["max_tokens"], int(cfg.seed),
                                         greedy_override=settings["greedy_override"])
        chunk = int(cfg.chunk_size)
        writer = None  # opened with the first results: a run that fails before them leaves nothing behind
        bar = tqdm(total=len(todo), desc=f"{name} samples", unit="sample")
        try:
            for start in range(0, len(todo), chunk):
                part = todo[start : start + chunk]
                gen_settings.seed = int(cfg.seed) + start + len(done)  # fresh samples after a resume
                records = _generate_and_score(part, module, bcfg, backend, gen_settings, name, hashes, knobs, forced)
                if writer is None:
                    writer = _open_samples(out_dir, {**fp, "anatomy": knobs}, fresh=overwrite)
                for record in records:
                    writer.write(record)
                bar.update(len(part))
        finally:
            bar.close()
            if writer is not None:
                writer.close()

    wanted = {f"{ex.id}#{k}" for ex in examples for k in range(settings["n"])}
    by_id = {r["id"]: r for r in jsonl.read(samples_path) if r["id"] in wanted} if samples_path.exists() else {}
    records = list(by_id.values())
    summary = summarize(records, module, bcfg, settings, target)
    summary.update(forced_summary(records, forced_note), seed=int(cfg.seed))
    summary["elapsed_s"] = round(time.time() - t0, 2)
    _write_json(out_dir / "summary.json", summary)
    return summary


def load_examples(name: str, module, bcfg: DictConfig) -> list[Example]:
    """The benchmark's examples, cut to ``limit``; none at all, or an id twice, is an error."""
    examples: list[Example] = module.load(bcfg)
    if not examples:
        raise ValueError(f"benchmark {name}: no examples in source={bcfg.get('source', 'hub')}; "
                         "point it at rows in the hub's schema, or pick another source")
    if bcfg.get("limit") is not None:
        examples = examples[: int(bcfg.limit)]
    ids = [ex.id for ex in examples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"benchmark {name}: example id {dup!r} occurs twice; ids must be unique (fix its load())")
    return examples


def _open_samples(out_dir: Path, marker: dict, fresh: bool) -> jsonl.ShardWriter:
    """The samples file, with the fingerprint of what makes them (and the anatomy knobs) beside it. ``fresh``
    (overwrite=true) removes the previous samples and summary first: only now, once new samples exist to
    replace them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if fresh:
        for old in ("samples.jsonl", "summary.json"):
            (out_dir / old).unlink(missing_ok=True)
    _write_json(out_dir / "settings.json", marker)
    return jsonl.ShardWriter(out_dir, "samples", fsync=False)


def _write_json(path: Path, data: dict) -> None:
    jsonl.write_atomic(path, json.dumps(data, ensure_ascii=False, indent=2))


def paper_answer(text: str, opened: bool = False) -> tuple[str, str]:
    """(answer text, closed|unclosed|absent): the response when ``</think>`` closed, else the trace
    (the paper extracts the answers of unclosed samples from the reasoning); no think block: the text."""
    p = parse(text, opened=opened)
    return (p.trace if p.status == "unclosed" else p.response), p.status


def _generate_and_score(part, module, bcfg, backend, gen_settings, bench_name, hashes, knobs, forced) -> list[dict]:
    """Generate every turn of each (example, sample) in ``part``, find why failed samples failed, force answers
    from the unclosed ones (``forced``: ``forced_policy``, None = not here), then score each sample."""
    convs = []
    for ex, _ in part:
        convs.append([{"role": "system", "content": ex.system}] if ex.system else [])
    gens: list[list[backends.Generation]] = [[] for _ in part]
    answers: list[list[str]] = [[] for _ in part]
    statuses: list[list[str]] = [[] for _ in part]
    n_turns = max(len(ex.turns) for ex, _ in part)
    for turn in range(n_turns):
        active = [i for i, (ex, _) in enumerate(part) if turn < len(ex.turns)]
        for i in active:
            ex = part[i][0]
            user = module.next_turn(ex, turn, convs[i]) if hasattr(module, "next_turn") else ex.turns[turn]
            convs[i].append({"role": "user", "content": user})
        outs = _by_temperature(lambda cs, s: backend.generate([list(c) for c in cs], s), [convs[i] for i in active],
                               [part[i][0] for i in active], gen_settings)
        for i, g in zip(active, outs):
            answer, status = paper_answer(g.text, g.opened)
            gens[i].append(g)
            answers[i].append(answer)
            statuses[i].append(status)
            limit = bcfg.get("history_max_chars")  # e.g. swallow's MT-Bench keeps 8,192 chars of turn 1
            convs[i].append({"role": "assistant", "content": answer[:limit] if limit else answer})

    # Why each failed sample failed: on the completion's token ids where the backend has them, else on the text
    # of its trace (which is an unclosed turn's paper-policy answer; only unclosed turns are searched for loops).
    seqs = [[g.token_ids if g.token_ids is not None else a for g, a in zip(gens[i], answers[i])] for i in range(len(part))]
    anatomy = [sample_anatomy(statuses[i], [g.finish_reason for g in gens[i]], seqs[i], knobs) for i in range(len(part))]

    # Budget forcing: the unclosed single-turn samples get "</think>" + cue and a few more tokens to answer.
    responses: dict[int, str] = {}
    if forced is not None:
        unclosed = [i for i in range(len(part)) if statuses[i] == ["unclosed"]]
        if unclosed:
            def force(pairs, s):  # pairs: the conversation before the answer, and the unclosed generation
                return backend.force([c for c, _ in pairs], [g for _, g in pairs], forced["cue"], s)

            pairs = [(convs[i][:-1], gens[i][0]) for i in unclosed]
            # A random stream of its own: with the chunk's seed the forced answer would replay the trace's draws.
            settings = dataclasses.replace(gen_settings, max_tokens=forced["max_tokens"],
                                           seed=gen_settings.seed + FORCED_SEED)
            responses = dict(zip(unclosed, _by_temperature(force, pairs, [part[i][0] for i in unclosed], settings)))

    # Scoring runs in threads when the task asks for it (code execution waits on sandbox processes);
    # math-verify's timeouts use signals, so everything else scores in the main thread.
    def score_one(job: tuple[int, list[str]]) -> Verdict:
        i, graded = job
        try:
            return module.score(part[i][0], graded, bcfg)
        except SandboxUnavailable:
            raise
        except Exception as e:  # one odd output must not lose the chunk's generations; counted in the summary
            log.warning("%s: scoring %s#%d failed: %r", bench_name, part[i][0].id, part[i][1], e)
            return Verdict(0.0, None, {"scoring_error": repr(e)[:500]})

    jobs = [(i, answers[i]) for i in range(len(part))] + [(i, [r.strip()]) for i, r in responses.items()]
    workers = int(bcfg.get("score_workers") or 1)
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            graded = list(pool.map(score_one, jobs))
    else:
        graded = [score_one(job) for job in jobs]
    verdicts, forced_verdicts = graded[: len(part)], dict(zip(responses, graded[len(part) :]))

    records = []
    for i, (ex, k) in enumerate(part):
        v = verdicts[i]
        turn_scores = v.detail.get("turn_scores") if isinstance(v.detail, dict) else None
        st = statuses[i]
        status = "unclosed" if "unclosed" in st else ("absent" if all(s == "absent" for s in st) else "closed")
        fv = forced_verdicts.get(i)
        records.append(
            {
                "id": f"{ex.id}#{k}",
                "example_id": ex.id,
                "sample": k,
                "benchmark": bench_name,
                "example_hash": hashes[ex.id],
                "prompt": [m["content"] for m in convs[i] if m["role"] == "user"],
                "output": [g.text for g in gens[i]],
                "turn_status": st,
                "status": status,
                "answers": answers[i],
                "extracted": v.extracted,
                "reference": ex.reference,
                "score": v.score,
                "strict_score": metrics.strict_score(v.score, st, turn_scores),
                "failure_kind": anatomy[i][0],
                "loop": anatomy[i][1],
                "forced": None if fv is None else {"text": responses[i], "answer": fv.extracted, "correct": fv.score,
                                                   "path": backend.forced_path},
                "detail": v.detail,
                "meta": ex.meta,
                "finish_reason": [g.finish_reason for g in gens[i]],
                "n_tokens": [g.n_tokens for g in gens[i]],
                "opened": [g.opened for g in gens[i]],
            }
        )
    return records


def _by_temperature(call, items: list, examples: list[Example], settings: backends.Settings) -> list:
    """``call(items, settings)`` once per distinct temperature, results in the order of ``items``:
    ``Example.meta["temperature"]`` overrides the benchmark's (MT-Bench's per-category temperatures), unless
    ``settings.greedy_override`` forces T=0."""
    groups: dict[float, list[int]] = {}
    for i, ex in enumerate(examples):
        t = settings.temperature
        if not settings.greedy_override and ex.meta.get("temperature") is not None:
            t = float(ex.meta["temperature"])
        groups.setdefault(t, []).append(i)
    out: list = [None] * len(items)
    for t, idx in groups.items():
        for i, result in zip(idx, call([items[i] for i in idx], dataclasses.replace(settings, temperature=t))):
            out[i] = result
    return out


def summarize(records: list[dict], module, bcfg: DictConfig, settings: dict, target: dict) -> dict:
    if hasattr(module, "aggregate"):
        paper = module.aggregate(records, bcfg)
        strict = module.aggregate([metrics.strict_view(r) for r in records], bcfg)
    else:
        m, se = metrics.per_example_mean(records, "score")
        sm, sse = metrics.per_example_mean(records, "strict_score")
        paper, strict = {"score": m, "score_stderr": se}, {"score": sm, "score_stderr": sse}
    extra = {k: v for k, v in paper.items() if k not in ("score", "score_stderr")}
    if bcfg.metric == "pass@1" and settings["n"] > 1 and records:
        extra[f"pass@{settings['n']}"] = metrics.pass_at_k(records, settings["n"])
    if not hasattr(module, "aggregate") and (cats := metrics.by_category(records)):
        extra["by_category"] = cats
    source = str(bcfg.get("source", "hub"))
    return {
        "benchmark": bcfg.name,
        "lang": bcfg.lang,
        "run_name": target["run_name"],
        "experiment": target["experiment"],
        "paper_id": target["paper_id"],
        "model": target["model"],
        "metric": bcfg.metric,
        "score": paper["score"],
        "score_stderr": paper.get("score_stderr"),
        "strict_score": strict["score"],
        "strict_score_stderr": strict.get("score_stderr"),
        **metrics.turn_rates(records),
        **metrics.anatomy(records),
        "n_examples": len({r["example_id"] for r in records}),
        "n_samples": settings["n"],
        "n_records": len(records),
        "n_scoring_errors": sum(1 for r in records if isinstance(r.get("detail"), dict) and "scoring_error" in r["detail"]),
        "settings": {k: settings[k] for k in ("temperature", "top_p", "max_tokens", "n")},
        "source": source,
        "is_fixture": source == "fixture",
        "extra": extra,
    }


def forced_summary(records: list[dict], note: str | None) -> dict:
    """The forced policy's summary keys; ``note`` says why it did not run (None: it did)."""
    if note is not None:
        return {"forced_score": None, "forced_score_stderr": None, "forced_path": None, "forced_note": note}
    score, stderr = metrics.forced_score(records)
    paths = sorted({r["forced"]["path"] for r in records if r.get("forced")})  # several: a run resumed elsewhere
    return {"forced_score": score, "forced_score_stderr": stderr, "forced_path": "+".join(paths) or None,
            "forced_note": None}


# ---------------------------------------------------------------- the stage
def run(cfg: DictConfig) -> dict:
    check_config(cfg)
    model, run_name, exp = resolve_target(cfg)
    target = {
        "model": model,
        "run_name": run_name,
        "experiment": exp,
        "paper_id": OmegaConf.select(cfg, "experiment.paper_id"),
    }
    if not cfg.get("output_dir"):
        cfg.output_dir = str(Path(cfg.paths.output_dir) / "eval" / run_name)

    backend = None
    # The backend checks it can force answers (a server's completions endpoint) if any benchmark will ask it to.
    forcing = any(forced_policy(cfg, bcfg, task_module(name, bcfg))[0] is not None
                  for name, bcfg in ((n, with_shortcuts(cfg.benchmark[n], cfg.get("all"))) for n in cfg.benchmark))

    def get_backend():  # built once, only if something is left to generate
        nonlocal backend
        if backend is None:
            backend = backends.build(cfg, model, forcing=forcing)
        return backend

    wandb_run = None
    results = {}
    for name in cfg.benchmark:
        summary = evaluate_benchmark(name, with_shortcuts(cfg.benchmark[name], cfg.get("all")), cfg, get_backend, target)
        results[name] = summary
        log.info("%s: score %s ± %s (strict %s, forced %s), failure rate %s, loop rate %s", name, summary["score"],
                 summary["score_stderr"], summary["strict_score"], summary["forced_score"], summary["failure_rate"],
                 summary["loop_rate"])
        if wandb_run is None:  # started with the first result: a run that fails before it leaves no W&B files
            wandb_run = _start_wandb(cfg, target)
        if wandb_run is not None:
            _log_wandb(wandb_run, name, summary, Path(cfg.output_dir) / name / "samples.jsonl",
                       int(cfg.logger.get("table_rows", 200)))
    if wandb_run is not None:
        wandb_run.finish()
    if backend is not None:
        backends.close(backend)
    return results


# ---------------------------------------------------------------- W&B
def _start_wandb(cfg: DictConfig, target: dict):
    if not cfg.get("logger") or not cfg.logger.get("enabled"):
        return None
    import wandb

    mode = wandb_mode.resolve(cfg.logger.get("mode", "auto"))
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    return wandb.init(
        project=cfg.logger.get("project", "jaen-distill"),
        entity=cfg.logger.get("entity"),
        group=OmegaConf.select(cfg, "sweep_name") or target["experiment"] or "eval",
        name=f"eval-{target['run_name']}",
        job_type="evaluate",
        mode=mode,
        dir=str(cfg.output_dir),
        config={"target": target, "benchmark": OmegaConf.to_container(cfg.benchmark, resolve=True), "decoding": cfg.decoding},
        tags=[f"paper_id={target['paper_id']}"] if target["paper_id"] is not None else None,
    )


def _log_wandb(run, name: str, summary: dict, samples_path: Path, max_rows: int) -> None:
    import wandb

    keys = ("score", "score_stderr", "strict_score", "forced_score", "failure_rate", "no_think_rate", "loop_rate")
    run.summary.update({f"{name}/{k}": summary[k] for k in keys})
    cols = ["id", "status", "failure_kind", "score", "strict_score", "extracted", "reference", "prompt", "output"]
    table = wandb.Table(columns=cols)
    for i, r in enumerate(jsonl.read(samples_path)):
        if i >= max_rows:
            break
        table.add_data(*[json.dumps(r[c], ensure_ascii=False) if isinstance(r[c], (list, dict)) else r[c] for c in cols])
    run.log({f"{name}/samples": table, **{f"{name}/{k}": summary[k] for k in keys if summary[k] is not None}})
