"""What ``python -m synth experiment=…`` does with the composed config: plan, then the steps
``prompts → translate → generate → stats`` (and ``merge`` at the end of a sharded run).

Per component of the experiment (``data.<name>`` from ``conf/data/``):

- **count** = the experiment's ``domain_counts[domain]`` split equally among that domain's components
  (Table 1 rule; core.student.component_counts, an error when it does not divide), unless ``synth.counts.<name>`` overrides it; capped by
  ``synth.limit``. This shard's share is ``count // num_shards`` (+1 for the first ``count % num_shards``).
- **prompts**: the first ``ceil(count·(1+prompt_margin)) + prompt_extra`` prompts of the source, cached
  (``<work_dir>/pools``); this shard takes every ``num_shards``-th prompt starting at ``shard_index``.
- **translate** (``*_ja`` sources): En→Ja of this shard's prompts, cached (``<work_dir>/translate``).
- **generate**: the teacher (``mode: api``), or the source's own answers (``mode: source``: the R1
  component, NPT rows written by DeepSeek-R1-0528), until the shard's count of kept records is reached.
- **reflag** (not a default step): the trace checks (``synth.loops``, ``synth.max_trace_tokens``) on records
  already on disk, without asking the teacher again (synth.reflag).
- **stats**: ``stats.json`` in the component directory (Table 1 columns; docs/contracts.md).

Every record made by **generate** goes through the same trace checks (synth.checks): a trace ending in a
loop is flagged ``looping_trace``, one longer than ``synth.max_trace_tokens`` student tokens ``over_budget``.

Components whose ``prompt_source`` is ``fixture`` already have their data at their path: nothing to make.
Components that share a ``path`` (``chat_oss_ja`` and ``chat_oss_ja_notrace``) are generated once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from core import jsonl
from core.student import component_counts  # the Table 1 rule, shared with the train stage
from synth import generate as gen
from synth import plain, schema
from synth import sources as src
from synth.checks import TraceChecks

log = logging.getLogger(__name__)

STEPS = ("prompts", "translate", "generate", "merge", "reflag", "stats")  # run in this order


class ShortfallError(RuntimeError):
    """Components kept fewer records than their target: the message says why, per component, and the fix."""


@dataclass
class Plan:
    name: str                      # component name
    data: dict[str, Any]           # its data/*.yaml config
    dir_name: str                  # the directory its records live in (data key ``path``)
    out_dir: Path
    work_dir: Path
    count: int                     # total records of the component (all shards)
    target: int                    # this shard's share
    pool_size: int
    mode: str                      # api | source | fixture | shared
    source: str                    # base prompt source (npt, lmsys, …)
    translate: bool
    teacher: str
    shares_with: str | None = None
    notes: list[str] = field(default_factory=list)


def shard_share(count: int, shard_index: int, num_shards: int) -> int:
    q, r = divmod(count, num_shards)
    return q + (1 if shard_index < r else 0)


def shard_name(s: DictConfig) -> str:
    return f"part-{int(s.shard_index):05d}-of-{int(s.num_shards):05d}"


def make_plans(cfg: DictConfig) -> list[Plan]:
    s = cfg.synth
    if not 0 <= int(s.shard_index) < int(s.num_shards):
        raise ValueError(f"synth.shard_index={s.shard_index} must be in [0, synth.num_shards={s.num_shards})")
    data = plain(cfg.get("data")) or {}
    if not data:
        raise SystemExit("no components: pick an experiment, e.g. `python -m synth experiment=stem_oss_en`")
    only = list(s.components) if s.get("components") else None
    if only:
        unknown = set(only) - set(data)
        if unknown:
            raise ValueError(f"synth.components {sorted(unknown)} are not in the experiment ({sorted(data)})")
    counts = component_counts(cfg)
    overrides = plain(s.get("counts")) or {}
    work_root = Path(s.work_dir)
    source_teachers = plain(s.get("source_teachers")) or {}
    plans: list[Plan] = []
    by_path: dict[str, Plan] = {}
    for name, d in data.items():
        if only and name not in only:
            continue
        count = int(overrides.get(name, counts[name]))
        if s.get("limit") is not None:
            count = min(count, int(s.limit))
        base, translate = src.base_source(d["prompt_source"])
        out_dir = Path(d["path"])
        dir_name = out_dir.name
        target = shard_share(count, int(s.shard_index), int(s.num_shards))
        pool_size = math.ceil(count * (1 + float(s.prompt_margin))) + int(s.prompt_extra) if count else 0
        if d["prompt_source"] == "fixture" or d.get("teacher") == "fixture":
            mode = "fixture"
        elif source_teachers.get(d["teacher"]) == base:
            if translate:
                raise ValueError(f"{name}: {d['teacher']} answers exist only for the English {base} prompts")
            mode = "source"
        else:
            mode = "api"
        p = Plan(name=name, data=d, dir_name=dir_name, out_dir=out_dir, work_dir=work_root / dir_name,
                 count=count, target=target, pool_size=pool_size, mode=mode, source=base, translate=translate,
                 teacher=d["teacher"])
        if mode == "fixture":
            p.notes.append("prompt_source: fixture, its triples already exist: nothing to generate")
        prev = by_path.get(str(out_dir))
        if prev is not None and mode != "fixture":
            same = all(prev.data.get(k) == d.get(k) for k in ("teacher", "reasoning_effort", "prompt_source",
                                                               "lang_input", "domain"))
            if not same:
                raise ValueError(f"{name} and {prev.name} share path {out_dir} but differ in generation settings")
            prev.count = max(prev.count, count)
            prev.target = max(prev.target, target)
            prev.pool_size = max(prev.pool_size, pool_size)
            p.mode, p.shares_with = "shared", prev.name
            p.notes.append(f"same records as {prev.name} (shared path)")
        else:
            by_path[str(out_dir)] = p
        plans.append(p)
    return plans


def teacher_for(cfg: DictConfig, plan: Plan) -> DictConfig:
    t = cfg.teacher
    if t.name != plan.teacher:
        msg = (f"{plan.name} is made by teacher {plan.teacher!r} but teacher={t.name!r} is selected; pass the "
               f"matching teacher=… (conf/teacher/), or synth.strict_teacher=false to use {t.name!r} anyway "
               f"(records then name {t.name!r} as their teacher)")
        if cfg.synth.strict_teacher:
            raise ValueError(msg)
        log.warning(msg)
    return t


def make_job(cfg: DictConfig, plan: Plan, teacher_name: str, translator_name: str | None,
             checks: TraceChecks | None = None) -> gen.Job:
    d = plan.data
    expects = bool(cfg.teacher.get("expects_trace", True)) if plan.mode == "api" else True
    effort = d.get("reasoning_effort")
    if effort is None and plan.mode == "api":  # the teacher config's effort is the fallback
        effort = cfg.teacher.get("reasoning_effort")
    return gen.Job(component=plan.dir_name, domain=d["domain"], lang_input=d["lang_input"],
                   lang_trace=d.get("lang_trace"), teacher=teacher_name, reasoning_effort=effort,
                   out_dir=plan.out_dir, work_dir=plan.work_dir, target=plan.target, mode=plan.mode,
                   expects_trace=expects, translator=translator_name, shard_name=shard_name(cfg.synth),
                   elicit_trace=cfg.teacher.get("elicit_trace") if plan.mode == "api" else None,
                   checks=checks or TraceChecks())


def source_cfg(cfg: DictConfig, name: str) -> DictConfig:
    srcs = cfg.synth.sources
    if name not in srcs:
        raise ValueError(f"prompt source {name!r} is not configured (synth.sources: {list(srcs)}); add "
                         f"synth.sources.{name}={{type: local, path: …}} for a local file")
    return srcs[name]


def pools(cfg: DictConfig, plans: list[Plan]) -> dict[tuple[str, bool], src.PoolView]:
    """Build (or reuse) every pool the plans need, each once at the largest size asked for."""
    need: dict[tuple[str, bool], int] = {}
    for p in plans:
        if p.mode in ("api", "source") and p.pool_size:
            key = (p.source, p.mode == "source")
            need[key] = max(need.get(key, 0), p.pool_size)
    out = {}
    for (name, with_output), n in need.items():
        out[(name, with_output)] = src.build_pool(name, source_cfg(cfg, name), n, Path(cfg.synth.work_dir),
                                                  with_output=with_output)
        log.info("pool %s%s: %d prompts", name, " (+answers)" if with_output else "", out[(name, with_output)].available)
    return out


def shard_slice(pool: src.PoolView, plan: Plan, s: DictConfig) -> src.PoolView:
    """This shard's prompts of the plan: every num_shards-th of the pool's first pool_size, from shard_index."""
    return pool.slice(plan.pool_size, int(s.shard_index), int(s.num_shards))


# Prompts in progress per request slot (synth.concurrency): the client holds a slot only while a request is
# in flight, so a prompt waiting out a retry backoff leaves its slot to another prompt.
PROMPTS_PER_SLOT = 2


def translator_parts(cfg: DictConfig):
    from synth.client import ChatClient
    from synth.translate import TranslationCache, Translator, translator_key

    tcfg = cfg.synth.translator
    key = translator_key(tcfg)
    cache = TranslationCache(Path(cfg.synth.work_dir) / "translate" / key, shard_name(cfg.synth))
    client = ChatClient(tcfg, retries=cfg.synth.retries, down_after=float(cfg.synth.endpoint_down_after),
                        max_inflight=int(cfg.synth.concurrency))
    tr = Translator(client, cache, max_attempts=int(tcfg.get("max_attempts", 3)), system=tcfg.get("system"),
                    retry_failed=bool(tcfg.get("retry_failed", False)))
    return tr, client, cache, key


async def check_endpoints(cfg: DictConfig, plans: list[Plan]) -> None:
    """Every endpoint the run will call answers (synth.client.ChatClient.check), before any prompt is read."""
    from synth.client import ChatClient

    configs = [cfg.teacher] + ([cfg.synth.translator] if any(p.translate for p in plans if p.mode == "api") else [])
    for c in configs:
        client = ChatClient(c, retries=cfg.synth.retries)
        try:
            await client.check()
        finally:
            await client.aclose()


async def _translate_step(cfg: DictConfig, plans: list[Plan], pool_map, progress: dict[str, tuple]) -> dict[str, Any]:
    todo = [p for p in plans if p.translate and p.mode == "api" and progress[p.name][1]]
    if not todo:
        return {}
    texts = (q.instruction for p in todo for q in shard_slice(pool_map[(p.source, False)], p, cfg.synth))
    tr, client, cache, key = translator_parts(cfg)
    try:
        counts = await tr.translate_all(texts, concurrency=PROMPTS_PER_SLOT * int(cfg.synth.concurrency))
    finally:
        cache.close()
        await client.aclose()
    log.info("translate (translator %s): %s", key, counts)
    return {"translator": key, **counts}


async def _generate_step(cfg: DictConfig, plans: list[Plan], pool_map, checks: TraceChecks,
                         progress: dict[str, tuple]) -> dict[str, Any]:
    from synth.client import ChatClient

    s = cfg.synth
    policy = plain(s.flag_policy) or {}
    results: dict[str, Any] = {}
    short: list[str] = []
    for p in plans:
        if p.mode not in ("api", "source"):
            continue
        if p.mode == "api" and not progress[p.name][1]:  # finished: no teacher call (a served one was not started)
            results[p.name] = gen.Counters(target=p.target, already=progress[p.name][0]).to_dict()
            continue
        if p.mode == "source":
            job = make_job(cfg, p, p.teacher, None, checks)
            produce = gen.source_producer(job)
            client = tr_client = cache = None
        else:
            t = teacher_for(cfg, p)
            tr = tr_client = cache = tkey = None
            if p.translate:
                tr, tr_client, cache, tkey = translator_parts(cfg)
            job = make_job(cfg, p, str(t.name), tkey, checks)
            client = ChatClient(t, retries=s.retries, down_after=float(s.endpoint_down_after),
                                max_inflight=int(s.concurrency))
            produce = gen.api_producer(job, client, tr)
        pool = pool_map[(p.source, p.mode == "source")]
        prompts = shard_slice(pool, p, s)
        try:
            c = await gen.run_job(job, prompts, produce, policy=policy,
                                  concurrency=PROMPTS_PER_SLOT * int(s.concurrency),
                                  max_consecutive_failures=s.max_consecutive_failures if client else None,
                                  progress=bool(s.progress), fsync=bool(s.fsync))
        finally:
            if client is not None:
                await client.aclose()
            if tr_client is not None:
                await tr_client.aclose()
            if cache is not None:
                cache.close()
        results[p.name] = c.to_dict()
        if client is not None:
            results[p.name]["endpoints"] = client.stats()
        run_file = p.work_dir / f"run-{shard_name(s)}.json"
        run_file.parent.mkdir(parents=True, exist_ok=True)
        run_file.write_text(json.dumps(results[p.name], indent=1, default=str))
        log.info("%s: %s", p.name, {k: v for k, v in results[p.name].items() if k != "endpoints"})
        why = c.shortfall()
        if why is not None:
            if pool.available < p.pool_size:
                why += (f"; the source {p.source!r} has only {pool.available} prompts (the pool asked for "
                        f"{p.pool_size}): a larger margin cannot help, add prompts to the source")
            short.append(f"{p.name}: {why}")
    if short:
        raise ShortfallError("fewer records than asked (the run summaries are in "
                             f"{Path(s.work_dir)}/<component>/run-{shard_name(s)}.json):\n" + "\n".join(short))
    return results


def stats_step(cfg: DictConfig, plans: list[Plan]) -> dict[str, Any]:
    from synth import stats as st

    s = cfg.synth
    if int(s.num_shards) > 1:
        log.info("stats: skipped in a sharded run; run `synth.steps=[merge,stats]` once all shards are done")
        return {}
    todo = [p for p in plans if p.mode != "fixture" or s.stats.get("fixture", False)]
    empty = [p for p in todo if not jsonl.shards(p.out_dir)]
    if empty:
        raise ValueError("stats: no records for " + ", ".join(f"{p.name} ({p.out_dir})" for p in empty)
                         + ": make them first, e.g. synth.steps=[prompts,translate,generate,stats]")
    if not todo:
        return {}
    model_name = None if OmegaConf.is_missing(cfg.model, "name_or_path") else cfg.model.name_or_path
    tok_name = tokenizer_name(cfg)
    tokenizer = st.load_tokenizer(tok_name)
    model = None
    if s.stats.ppl:
        model, device = st.load_model(model_name, s.stats.device, s.stats.dtype)
    out = {}
    for p in todo:
        keep_trace = bool(p.data.get("keep_trace", True))
        stats = st.component_stats(p.name, p.out_dir, p.work_dir, keep_trace=keep_trace, tokenizer=tokenizer,
                                   tokenizer_name=str(tok_name), model=model, model_name=str(model_name),
                                   ppl_samples=s.stats.ppl_samples, seed=int(s.seed),
                                   batch_tokens=int(s.stats.batch_tokens), max_length=int(s.stats.max_length))
        stats.update(paper_id=cfg.experiment.get("paper_id"), experiment=cfg.experiment.get("name"),
                     domain=p.data["domain"], teacher=p.teacher, reasoning_effort=p.data.get("reasoning_effort"),
                     lang_trace=p.data.get("lang_trace") if keep_trace else None, target=p.count)
        # stats.json belongs to the component that owns the directory (name == dir, or the one keeping the
        # trace); every component also gets stats.<name>.json, so a shared dir keeps both views.
        if p.name == p.dir_name or (keep_trace and not (p.out_dir / "stats.json").exists()):
            st.write_stats(p.out_dir / "stats.json", stats)
        st.write_stats(p.out_dir / f"stats.{p.name}.json", stats)
        out[p.name] = stats
        log.info("stats %s: count=%d mean_tokens=%s ppl=%s flags=%s", p.name, stats["count"],
                 None if stats["mean_tokens"] is None else round(stats["mean_tokens"], 1), stats["ppl"],
                 stats["flag_counts"])
    return out


def tokenizer_name(cfg: DictConfig) -> str | None:
    """The student tokenizer: ``model.tokenizer``, else the base model's own (``model.name_or_path``)."""
    model_name = None if OmegaConf.is_missing(cfg.model, "name_or_path") else cfg.model.name_or_path
    return cfg.model.get("tokenizer") or model_name


def trace_checks(cfg: DictConfig) -> TraceChecks:
    """The checks every trace goes through (``synth.loops``, ``synth.max_trace_tokens``); the student
    tokenizer is loaded only for a budget."""
    s = cfg.synth
    loops = plain(s.loops)
    knobs = {k: v for k, v in loops.items() if k != "enabled"} if loops["enabled"] else None
    budget = s.get("max_trace_tokens")
    if budget is None:
        return TraceChecks(loops=knobs)
    from synth.stats import load_tokenizer

    return TraceChecks(loops=knobs, max_trace_tokens=int(budget), tokenizer=load_tokenizer(tokenizer_name(cfg)))


def reflag_step(cfg: DictConfig, plans: list[Plan], checks: TraceChecks) -> dict[str, Any]:
    """The trace checks on every record already kept, without regenerating it (synth.reflag)."""
    from synth.reflag import reflag_component

    policy = plain(cfg.synth.flag_policy) or {}
    todo = [p for p in plans if p.mode in ("api", "source")]  # a shared directory once; fixtures are not ours
    empty = [p for p in todo if not jsonl.shards(p.out_dir)]
    if empty:
        raise ValueError("reflag: no records for " + ", ".join(f"{p.name} ({p.out_dir})" for p in empty)
                         + ": make them first, e.g. synth.steps=[prompts,translate,generate,stats]")
    out = {}
    for p in todo:
        out[p.name] = reflag_component(p.out_dir, p.work_dir, checks, policy)
        kept = len(jsonl.ids_in(p.out_dir))
        log.info("reflag %s: %s", p.name, {k: v for k, v in out[p.name].items() if k != "backups"})
        if kept < p.count:
            log.warning("reflag %s: %d records kept, fewer than its count %d: rerun with synth.steps=[generate,stats] "
                        "to top it up from the pool", p.name, kept, p.count)
    return out


def shard_progress(cfg: DictConfig, p: Plan, kept: set[str] | None = None) -> tuple[int | None, int]:
    """(records of this shard already kept, at most how many are left to make) from the cached prompt pool,
    without loading any source; (None, target) while the pool is not built yet."""
    s = cfg.synth
    pool_file = src.pool_path(Path(s.work_dir), p.source, source_cfg(cfg, p.source), p.mode == "source")
    info = src.pool_info(pool_file)
    if info is None:
        return None, p.target
    from synth.translate import translator_key

    kept = jsonl.ids_in(p.out_dir) if kept is None else kept
    tkey = translator_key(cfg.synth.translator) if p.translate else None
    job = make_job(cfg, p, p.teacher if p.mode == "source" else str(cfg.teacher.name), tkey)
    done = len({job.rid(q) for q in shard_slice(src.PoolView(pool_file, info["n"]), p, s)} & kept)
    return done, max(0, p.target - done)


def dry_run(cfg: DictConfig, plans: list[Plan]) -> dict[str, Any]:
    """What would be generated, without loading any source or calling any endpoint."""
    s = cfg.synth
    rows = {}
    for p in plans:
        row: dict[str, Any] = {"mode": p.mode, "source": p.data.get("prompt_source"), "teacher": p.teacher,
                               "reasoning_effort": p.data.get("reasoning_effort"), "lang_input": p.data["lang_input"],
                               "count": p.count, "shard_target": p.target, "pool_size": p.pool_size,
                               "out_dir": str(p.out_dir), "notes": p.notes}
        if p.mode in ("api", "source"):
            kept = jsonl.ids_in(p.out_dir)
            row["already_kept_all_shards"] = len(kept)
            pool_file = src.pool_path(Path(s.work_dir), p.source, source_cfg(cfg, p.source), p.mode == "source")
            info = src.pool_info(pool_file)
            row["pool_cached"] = info
            if p.mode == "api":
                row["endpoints"] = [e if isinstance(e, str) else e.get("base_url")
                                    for e in (plain(cfg.teacher.get("endpoints")) or [])]
                row["translate"] = p.translate
                if cfg.teacher.name != p.teacher:
                    row["notes"] = p.notes + [f"teacher mismatch: selected {cfg.teacher.name!r}"]
            row["already_kept_shard"], row["remaining_max"] = shard_progress(cfg, p, kept)
        rows[p.name] = row
    summary = {"experiment": cfg.experiment.get("name") if cfg.get("experiment") else None,
               "shard": f"{s.shard_index}/{s.num_shards}", "steps": list(s.steps), "components": rows}
    print(json.dumps(summary, indent=1, ensure_ascii=False, default=str))
    return summary


@contextmanager
def local_teacher(cfg: DictConfig) -> Iterator[None]:
    """``teacher.serve: {model, device}`` starts ``transformers serve`` on that local model for the
    duration (core.serve.local_server) and points the teacher, and the translator, at it."""
    serve = cfg.teacher.get("serve")
    if not serve:
        yield
        return
    from core.serve import local_server

    log_path = Path(cfg.synth.work_dir) / "serve" / f"{shard_name(cfg.synth)}.log"
    with local_server(serve.model, device=serve.get("device", "cpu"), log_path=log_path,
                      extra_args=list(serve.get("args") or [])) as url:
        log.info("teacher served locally: %s at %s (log %s)", url.model, url, url.log_path)
        cfg.teacher.endpoints = [str(url)]
        cfg.teacher.model = url.model
        cfg.synth.translator.endpoints = [str(url)]
        cfg.synth.translator.model = url.model
        yield


def teacher_file() -> str | None:
    """The conf/teacher/ file of the selected teacher (when run through Hydra's entry point)."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.choices.get("teacher") if HydraConfig.initialized() else None


def validate(cfg: DictConfig) -> None:
    """Components and the teacher against their schema (synth.schema): an unknown key or a bad type is
    an error naming it, before anything runs."""
    for key, node in (plain(cfg.get("data")) or {}).items():
        schema.check_component(key, node)
    schema.check_teacher(plain(cfg.teacher), teacher_file())
    s = cfg.synth
    schema.check_stage(plain(s))
    schema.check_trace_checks(plain(s.get("loops")), s.get("max_trace_tokens"), plain(s.get("flag_policy")))


def looks_like_missing_path(name: str | None) -> bool:
    """A local path (absolute, ./ or ~) that does not exist; hub ids are left to the loader."""
    return bool(name) and str(name).startswith(("/", ".", "~")) and not Path(str(name)).expanduser().exists()


def check_stats_inputs(cfg: DictConfig, plans: list[Plan]) -> None:
    """The stats step's model and tokenizer, checked before anything is generated."""
    s = cfg.synth
    if not any(p.mode != "fixture" or s.stats.get("fixture", False) for p in plans):
        return
    no_model = OmegaConf.is_missing(cfg.model, "name_or_path")
    if no_model and (s.stats.ppl or not cfg.model.get("tokenizer")):
        raise ValueError("the stats step needs the student's base model for its tokenizer and PPL: "
                         "model.name_or_path=/path/to/swallow-qwen3-8b-base (or model=qwen3_8b_base); or "
                         "synth.stats.ppl=false model.tokenizer=…; or leave stats out: "
                         "synth.steps=[prompts,translate,generate]")
    for key in ("name_or_path", "tokenizer"):
        value = None if key == "name_or_path" and no_model else cfg.model.get(key)
        if looks_like_missing_path(value):
            raise ValueError(f"model.{key}={value} does not exist (the stats step loads the student's "
                             f"{'tokenizer' if key == 'tokenizer' else 'tokenizer and base model'} from it): fix "
                             f"the path, or leave stats out: synth.steps=[prompts,translate,generate]")


def check_checks_inputs(cfg: DictConfig, steps: list[str]) -> None:
    """The trace checks' needs, before anything runs: the student tokenizer for a budget; reflag only when
    no shard is being written (it rewrites the component's shards)."""
    s = cfg.synth
    checking = [x for x in ("generate", "reflag") if x in steps]
    if checking and s.get("max_trace_tokens") is not None:
        name = tokenizer_name(cfg)
        if not name:
            raise ValueError(f"synth.max_trace_tokens={s.max_trace_tokens} counts student tokens: set "
                             "model.tokenizer=… or model.name_or_path=… (or synth.max_trace_tokens=null)")
        if looks_like_missing_path(name):
            raise ValueError(f"the student tokenizer {name} does not exist (synth.max_trace_tokens counts its "
                             "tokens): fix model.tokenizer / model.name_or_path")
    if "reflag" in steps:
        if int(s.num_shards) > 1:
            raise ValueError("synth.steps=[reflag] rewrites every shard of a component: run it once all shards "
                             "are done, without synth.num_shards (e.g. synth.steps=[merge,reflag,stats])")
        if not s.loops.enabled and s.get("max_trace_tokens") is None:
            raise ValueError("reflag: nothing to check (synth.loops.enabled=false and synth.max_trace_tokens=null)")


def run(cfg: DictConfig) -> dict[str, Any]:
    s = cfg.synth
    validate(cfg)
    plans = make_plans(cfg)
    if s.dry_run:
        return dry_run(cfg, plans)
    steps = list(s.steps)
    unknown = set(steps) - set(STEPS)
    if unknown:
        raise ValueError(f"unknown synth.steps {sorted(unknown)}; known: {STEPS}")
    check_checks_inputs(cfg, steps)
    if "stats" in steps:
        check_stats_inputs(cfg, plans)
    if any(x in steps for x in ("translate", "generate")):
        for p in plans:
            if p.mode == "api":
                teacher_for(cfg, p)  # a teacher mismatch stops the run before anything is generated
    out: dict[str, Any] = {"plans": {p.name: {"mode": p.mode, "count": p.count, "shard_target": p.target}
                                     for p in plans}}
    for p in plans:
        if p.notes:
            log.info("%s: %s", p.name, "; ".join(p.notes))
    calls = [x for x in ("translate", "generate") if x in steps]
    needs_teacher = any(p.mode == "api" for p in plans) and calls
    if needs_teacher and not cfg.teacher.get("serve"):
        asyncio.run(check_endpoints(cfg, plans))  # a dead URL or a refused key stops here, in seconds
    pool_map = None
    if any(x in steps for x in ("prompts", "translate", "generate")):
        pool_map = pools(cfg, plans)
        out["pools"] = {f"{k[0]}{'+answers' if k[1] else ''}": v.available for k, v in pool_map.items()}
    # records left to make per teacher component: a finished one calls no teacher, and a local teacher is
    # started only while some component has records left (a finished rerun starts none)
    progress = {p.name: shard_progress(cfg, p) for p in plans if p.mode == "api"} if needs_teacher else {}
    needs_server = any(left for _, left in progress.values())
    checks = trace_checks(cfg) if any(x in steps for x in ("generate", "reflag")) else None
    with local_teacher(cfg) if needs_server else nullcontext():
        if "translate" in steps:
            out["translate"] = asyncio.run(_translate_step(cfg, plans, pool_map, progress))
        if "generate" in steps:
            out["generate"] = asyncio.run(_generate_step(cfg, plans, pool_map, checks, progress))
    # after every shard has finished: one de-duplicated set of shards per component
    if "merge" in steps:
        from synth.merge import merge_component

        out["merge"] = {p.name: merge_component(p.out_dir, extra=[Path(x) for x in (s.get("merge_from") or [])])
                        for p in plans if p.mode in ("api", "source")}
    if "reflag" in steps:
        out["reflag"] = reflag_step(cfg, plans, checks)
    if "stats" in steps:
        out["stats"] = stats_step(cfg, plans)
    return out
