"""Reasoning vectors (spec/000, spec/001): θ = θ_target + w · (θ_reasoner − θ_base), no training.

`python -m train method=reasoning_vector vector.base=Qwen/Qwen2.5-32B vector.reasoner=simplescaling/s1-32B
vector.target=AXCXEPT/EZO-Qwen2.5-32B-Instruct vector.weight=0.5 output_dir=runs/vector/w0.5`

The merge reads top to bottom in three steps:

1. **open** the three checkpoints (local directories or hub ids) and read only their safetensors
   headers: names, shapes, dtypes, which file holds what;
2. **plan** every output tensor and check compatibility *before anything is written*: architecture,
   tensor names, shapes, the vocabulary policy (extended Japanese vocabularies) and tied embeddings;
3. **write** shard by shard into a temporary directory, streaming row-chunks of one tensor at a time
   through fp32 arithmetic, then rename the finished directory into place (nothing half-written).

Why hand-written rather than a library: mergekit does this kind of merge but is not a dependency
here, and `safetensors.torch.save_file` needs a whole shard in memory. The safetensors format is an
8-byte header length, a JSON header (dtype, shape, byte offsets) and the raw bytes, so we write it
directly: every output shape and dtype is known from the plan, the header goes first, and each chunk
is written as soon as it is computed. Reads go through `safe_open` one chunk at a time and the file is
closed right after, so mmapped pages never pile up: peak memory is the interpreter plus a few chunks,
independent of model and shard size (bench/results/vector.md).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

ROLES = ("base", "reasoner", "target")

# safetensors dtype names. Only the float ones take the vector; the others are copied from the target.
DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}
DTYPE_NAMES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}

# Output embedding → the input embeddings it can be tied to (transformers' `_tied_weights_keys` for
# these naming families; kept here so the merge never imports transformers). A tied checkpoint has no
# output-embedding tensor in its files: its lm_head *is* its embedding matrix.
TIED_NAMES = {
    "lm_head.weight": ("model.embed_tokens.weight", "transformer.wte.weight", "model.decoder.embed_tokens.weight"),
    "embed_out.weight": ("gpt_neox.embed_in.weight",),
}

# Config keys that must agree for the weights to mean the same thing (shapes alone cannot tell
# 8 heads × 16 from 16 heads × 8).
STRUCTURE_KEYS = (
    "model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "head_dim", "intermediate_size",
)

WEIGHT_FILES = re.compile(r".*\.(safetensors|bin|pt|pth|ckpt|h5|msgpack|gguf)$|.*\.index\.json$")
HUB_PATTERNS = ["*.safetensors", "*.json", "*.txt", "*.model", "*.jinja", "*.tiktoken"]


class VectorError(ValueError):
    """Bad input to the merge; the message names the input and the fix."""


# --------------------------------------------------------------------------------------------------
# 1. open: resolve a reference to a directory and read its safetensors headers
# --------------------------------------------------------------------------------------------------


@dataclass
class Tensor:
    file: Path
    dtype: str  # safetensors name, e.g. "BF16"
    shape: tuple[int, ...]


@dataclass
class Checkpoint:
    role: str
    ref: str  # what the user passed
    path: Path  # local directory
    config: dict
    tensors: dict[str, Tensor]

    @property
    def vocab_size(self) -> int | None:
        return self.config.get("vocab_size", self.config.get("text_config", {}).get("vocab_size"))


def resolve(ref: str, role: str) -> Path:
    """A local directory as is; the built-in tiny model by name; anything else as a hub repo id
    (`org/name` or `org/name@revision`), downloaded with `huggingface_hub.snapshot_download`."""
    from core.assets import resolve_model  # stdlib-only module: maps `tiny-qwen3` to its directory

    if not ref:
        raise VectorError(f"vector.{role} is not set: pass vector.{role}=<local dir or hub id>")
    ref = resolve_model(str(ref))
    p = Path(ref).expanduser()
    if p.is_dir():
        return p.resolve()
    if p.exists() or str(ref).startswith(("/", ".", "~")) or str(ref).count("/") != 1:
        raise VectorError(f"vector.{role}={ref!r} is not a model directory nor a hub id (org/name): "
                          "pass a directory with config.json and *.safetensors, or a repo id")
    repo, _, revision = str(ref).partition("@")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, revision=revision or None, allow_patterns=HUB_PATTERNS))
    except Exception as e:  # offline, gated, typo: say which input and what to do
        raise VectorError(f"vector.{role}={ref!r}: no such local directory and the hub download failed "
                          f"({type(e).__name__}: {e}). Pass a local path, fix the repo id, or set HF_TOKEN "
                          "/ unset HF_HUB_OFFLINE") from e


def open_checkpoint(ref: str, role: str, path: Path) -> Checkpoint:
    """Read the safetensors headers of the directory `ref` resolved to (`resolve`)."""
    if not (path / "config.json").exists():
        raise VectorError(f"vector.{role}={ref!r}: {path} has no config.json; pass a transformers model directory")
    config = json.loads((path / "config.json").read_text())
    files = sorted(path.glob("*.safetensors"))
    index = path / "model.safetensors.index.json"
    if index.exists():  # only the files the index names (a directory may hold stray shards)
        files = sorted({path / f for f in json.loads(index.read_text())["weight_map"].values()})
    if not files:
        raise VectorError(f"vector.{role}={ref!r}: no *.safetensors in {path}; convert the checkpoint with "
                          "`AutoModelForCausalLM.from_pretrained(p).save_pretrained(p2)` first")
    tensors: dict[str, Tensor] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as h:
            for name in h.keys():
                s = h.get_slice(name)
                if name in tensors:
                    raise VectorError(f"vector.{role}: tensor {name!r} is in both {tensors[name].file.name} "
                                      f"and {f.name}; the checkpoint is corrupt")
                tensors[name] = Tensor(f, s.get_dtype(), tuple(s.get_shape()))
    return Checkpoint(role, str(ref), path, config, tensors)


# --------------------------------------------------------------------------------------------------
# 2. plan: one entry per output tensor; every compatibility check happens here, before any write
# --------------------------------------------------------------------------------------------------


@dataclass
class Entry:
    name: str  # output tensor name
    shape: tuple[int, ...]
    dtype: str  # output dtype (safetensors name)
    target: str  # name of the tensor read from the target (differs from `name` when untying)
    delta: tuple[str, str] | None = None  # (reasoner name, base name) when the vector applies
    shared_rows: int | None = None  # vocabulary tensors: rows [0, shared_rows) take the vector
    why_copied: str | None = None  # reason the vector was not applied

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPES[self.dtype].itemsize


@dataclass
class Plan:
    entries: list[Entry]
    config: dict  # the output config.json
    report: dict = field(default_factory=dict)  # what the manifest records about the decisions


def _structure(ck: Checkpoint) -> dict:
    cfg = {**ck.config.get("text_config", {}), **ck.config}
    return {"architectures": cfg.get("architectures"), **{k: cfg.get(k) for k in STRUCTURE_KEYS}}


def _parse_layers(spec, n_layers: int | None) -> set[int] | None:
    """null → all layers; a list of ints; or a string such as "0-15,20"."""
    if spec is None:
        return None
    items = [s.strip() for s in str(spec).split(",")] if isinstance(spec, str) else list(spec)
    layers: set[int] = set()
    for item in items:
        m = re.fullmatch(r"(-?\d+)(?:-(\d+))?", str(item).strip())
        if not m:
            raise VectorError(f"vector.layers item {item!r} is not a layer index or range: "
                              "use e.g. [0,1,2] or '0-15,20'")
        lo, hi = int(m[1]), int(m[2] if m[2] is not None else m[1])
        layers.update(range(lo, hi + 1))
    if n_layers is not None and (bad := sorted(i for i in layers if not 0 <= i < n_layers)):
        raise VectorError(f"vector.layers has {bad} but the models have {n_layers} layers (0-{n_layers - 1})")
    return layers


def _compile(patterns, key: str) -> list[re.Pattern]:
    if patterns is None:
        return []
    if isinstance(patterns, str):
        patterns = [patterns]
    out = []
    for p in patterns:
        try:
            out.append(re.compile(str(p)))
        except re.error as e:
            raise VectorError(f"vector.{key} pattern {p!r} is not a valid regular expression: {e}") from e
    return out


def _tie_names(cks: list[Checkpoint]) -> tuple[str, str] | None:
    """(output embedding, input embedding) names if any checkpoint has such a pair."""
    names = set().union(*(ck.tensors for ck in cks))
    for out_name, in_names in TIED_NAMES.items():
        for in_name in in_names:
            if in_name in names:
                return out_name, in_name
    return None


def _token_ids(ck: Checkpoint) -> dict[int, str] | None:
    """id → token (added tokens included) from the checkpoint's tokenizer.json, or None."""
    f = ck.path / "tokenizer.json"
    if not f.exists():
        return None
    from tokenizers import Tokenizer  # Rust parser: ~10x faster than json on a 150k-token vocabulary

    try:
        vocab = Tokenizer.from_file(str(f)).get_vocab(with_added_tokens=True)
    except Exception as e:  # a tokenizer.json this tokenizers version cannot read: skip the check
        log.warning("reasoning vector: cannot read %s (%s)", f, e)
        return None
    return {i: t for t, i in vocab.items()}


def _check_shared_tokens(base: Checkpoint, others: list[Checkpoint], n: int) -> None:
    """shared_rows is only right if ids below n mean the same tokens (an extended vocabulary, not a
    rebuilt one). Checked when the tokenizers are on disk; otherwise it is an assumption (logged)."""
    b = _token_ids(base)
    for other in others:
        o = _token_ids(other) if b is not None else None
        if b is None or o is None:
            log.warning("reasoning vector: no tokenizer.json in vector.%s; cannot verify that token ids below %d "
                        "mean the same tokens in base and %s", "base" if b is None else other.role, n, other.role)
            continue
        for i in range(n):
            if i in b and i in o and b[i] != o[i]:
                raise VectorError(f"vector.vocab_policy=shared_rows needs token ids below {n} to mean the same "
                                  f"tokens in every model, but id {i} is {b[i]!r} in vector.base and {o[i]!r} in "
                                  f"vector.{other.role}: the vocabulary was rebuilt, not extended. Keep the "
                                  "target's embeddings with vector.exclude=[embed_tokens,lm_head]")


def plan_merge(base: Checkpoint, reasoner: Checkpoint, target: Checkpoint, *, weight: float,
               include=None, exclude=None, layers=None, layer_pattern=r"(?:^|\.)layers\.(\d+)\.",
               vocab_policy: str = "shared_rows", tied_policy: str = "keep_target",
               dtype: str = "target") -> Plan:
    cks = [base, reasoner, target]
    if vocab_policy not in ("shared_rows", "error"):
        raise VectorError(f"vector.vocab_policy={vocab_policy!r}: use shared_rows or error")
    if tied_policy not in ("keep_target", "untie"):
        raise VectorError(f"vector.tied_policy={tied_policy!r}: use keep_target or untie")
    if dtype != "target" and dtype not in DTYPE_NAMES:
        raise VectorError(f"vector.dtype={dtype!r}: use target, {', '.join(DTYPE_NAMES)}")

    # Architecture: the same model class and the same structure, vocabulary size aside.
    structures = {ck.role: _structure(ck) for ck in cks}
    for key in structures["base"]:
        values = {role: s[key] for role, s in structures.items() if s[key] is not None}  # absent = default
        if len({json.dumps(v) for v in values.values()}) > 1:
            raise VectorError(f"incompatible architectures: config {key!r} is " +
                              ", ".join(f"{r}={v!r}" for r, v in values.items()) +
                              ". A reasoning vector only transfers between models of one architecture "
                              "(the reasoner fine-tuned from the base, the target of the same family)")

    # Tied embeddings: a tied checkpoint's output embedding is read from its input embedding.
    tie = _tie_names(cks)
    tied = {ck.role: bool(tie) and tie[0] not in ck.tensors and tie[1] in ck.tensors for ck in cks}

    def source(ck: Checkpoint, name: str) -> str:
        return tie[1] if tie and name == tie[0] and tied[ck.role] else name

    # Tensor names: identical sets once tying is accounted for.
    def names(ck: Checkpoint) -> set[str]:
        return set(ck.tensors) | ({tie[0]} if tie and tied[ck.role] else set())

    for other in (reasoner, target):
        if names(other) != names(base):
            missing, extra = sorted(names(base) - names(other)), sorted(names(other) - names(base))
            more = lambda xs: " …" if len(xs) > 5 else ""  # noqa: E731
            raise VectorError(f"incompatible tensor names: vector.{other.role} lacks {missing[:5]}{more(missing)} "
                              f"and has {extra[:5]}{more(extra)} that vector.base does not ({other.ref} vs "
                              f"{base.ref}). Use checkpoints of one architecture")

    layer_set = _parse_layers(layers, structures["target"]["num_hidden_layers"])
    layer_re = re.compile(layer_pattern)
    inc, exc = _compile(include, "include"), _compile(exclude, "exclude")
    vocab = {ck.role: ck.vocab_size for ck in cks}
    shared_vocab = None

    entries = []
    out_tied = tied["target"] and not (tied_policy == "untie" and not (tied["base"] and tied["reasoner"]))
    for name in sorted(names(target)):
        if tie and name == tie[0] and out_tied:
            continue  # written once, as the input embedding
        shapes = {ck.role: ck.tensors[source(ck, name)].shape for ck in cks}
        dtypes = {ck.role: ck.tensors[source(ck, name)].dtype for ck in cks}
        t_dtype = dtypes["target"]
        for role, dt in dtypes.items():
            if dt not in DTYPES:
                raise VectorError(f"tensor {name!r} of vector.{role} has dtype {dt}: quantized checkpoints "
                                  "cannot take a vector; use the bf16/fp16/fp32 release")
        out_dtype = DTYPE_NAMES[dtype] if dtype != "target" and t_dtype in FLOAT_DTYPES else t_dtype
        e = Entry(name, shapes["target"], out_dtype, source(target, name))

        # Shapes: equal, or (vocabulary tensors only, under shared_rows) differing in the row count.
        if len(set(shapes.values())) > 1:
            desc = ", ".join(f"{r} {list(s)}" for r, s in shapes.items())
            is_vocab = (all(len(s) >= 1 and s[0] == vocab[r] for r, s in shapes.items())
                        and len({s[1:] for s in shapes.values()}) == 1)
            if not is_vocab:
                raise VectorError(f"incompatible shapes for tensor {name!r}: {desc}. "
                                  "The three models must share an architecture and size")
            if vocab_policy == "error":
                raise VectorError(f"vocabulary sizes differ for tensor {name!r}: {desc} (vocab_size " +
                                  ", ".join(f"{r}={v}" for r, v in vocab.items()) +
                                  "). Set vector.vocab_policy=shared_rows to apply the vector on the shared "
                                  "rows and keep the target's extra rows")
            e.shared_rows = min(s[0] for s in shapes.values())
            shared_vocab = e.shared_rows

        layer = layer_re.search(name)
        if not all(d in FLOAT_DTYPES for d in dtypes.values()):
            e.why_copied = "not a float tensor"
        elif weight == 0:
            e.why_copied = "weight is 0"
        elif inc and not any(p.search(name) for p in inc):
            e.why_copied = "not matched by vector.include"
        elif any(p.search(name) for p in exc):
            e.why_copied = "matched by vector.exclude"
        elif layer_set is not None and layer and int(layer[1]) not in layer_set:
            e.why_copied = "layer not in vector.layers"
        else:
            e.delta = (source(reasoner, name), source(base, name))
        entries.append(e)

    if any(e.shared_rows is not None and e.delta for e in entries):
        _check_shared_tokens(base, [reasoner, target], shared_vocab)

    report = {
        "tied": tied,
        "output_tied": bool(tie) and out_tied,
        "vocab_size": vocab,
        "shared_vocab_rows": shared_vocab,
        "layers": sorted(layer_set) if layer_set is not None else None,
        "applied": sum(e.delta is not None for e in entries),
        "copied": {},
        "dropped": [],
    }
    for e in entries:
        if e.why_copied:
            report["copied"][e.why_copied] = report["copied"].get(e.why_copied, 0) + 1
    if tie and out_tied and not (tied["base"] and tied["reasoner"]) and weight != 0:
        # The target ties lm_head to its embedding, the base/reasoner do not: Δlm_head has nowhere to go.
        report["dropped"].append(f"{tie[0]}: the target ties it to {tie[1]}; the reasoner−base difference "
                                 "of the output embedding is not applied (vector.tied_policy=untie writes it)")
        log.warning("reasoning vector: %s", report["dropped"][-1])
    if shared_vocab is not None:
        log.warning("reasoning vector: vocabulary sizes differ (%s); the vector applies to rows [0, %d), "
                    "the target's rows beyond are kept (token ids below %d must mean the same tokens in all "
                    "three models; checked against tokenizer.json where present)", vocab, shared_vocab, shared_vocab)

    config = dict(target.config)
    if tie and tied["target"] and not out_tied:
        config["tie_word_embeddings"] = False
    if dtype != "target":
        for key in ("dtype", "torch_dtype"):
            if key in config or key == "dtype":
                config[key] = dtype
    return Plan(entries, config, report)


# --------------------------------------------------------------------------------------------------
# 3. write: stream chunks through fp32 into hand-written safetensors shards, then rename into place
# --------------------------------------------------------------------------------------------------


def parse_size(size) -> int:
    """Bytes from 5000000, "5GB", "500MB" or "2GiB" (GB = 10⁹ as in transformers' max_shard_size)."""
    if isinstance(size, (int, float)):
        return int(size)
    m = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?i?B)?\s*", str(size), re.I)
    if not m:
        raise VectorError(f"vector.max_shard_size={size!r}: use bytes or a size such as 5GB / 500MB")
    unit = (m[2] or "B").upper()
    scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}[unit]
    return int(float(m[1]) * scale)


def _shards(entries: list[Entry], max_bytes: int) -> list[list[Entry]]:
    shards: list[list[Entry]] = [[]]
    size = 0
    for e in entries:
        if shards[-1] and size + e.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(e)
        size += e.nbytes
    return shards


def _read_rows(t: Tensor, name: str, lo: int, hi: int) -> torch.Tensor:
    """Rows [lo, hi) of one tensor; the file is closed right away so its mapped pages are released
    as soon as the returned tensor is freed."""
    with safe_open(str(t.file), framework="pt") as f:
        if not t.shape:
            return f.get_tensor(name)
        return f.get_slice(name)[lo:hi]


def _chunks(e: Entry, chunk_elements: int) -> list[tuple[int, int, bool]]:
    """(lo, hi, apply) row ranges of one output tensor; shared vocabulary rows and the target's
    extra rows are separate ranges."""
    rows = e.shape[0] if e.shape else 1
    per_row = math.prod(e.shape[1:]) if e.shape else 1
    step = max(1, chunk_elements // max(1, per_row))
    split = e.shared_rows if e.shared_rows is not None else rows
    ranges = [(lo, min(lo + step, split), e.delta is not None) for lo in range(0, split, step)]
    ranges += [(lo, min(lo + step, rows), False) for lo in range(split, rows, step)]
    return ranges


def _write_shard(path: Path, shard: list[Entry], cks: dict[str, Checkpoint], weight: float,
                 chunk_elements: int, bar) -> None:
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for e in shard:
        header[e.name] = {"dtype": e.dtype, "shape": list(e.shape), "data_offsets": [offset, offset + e.nbytes]}
        offset += e.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    t, r, b = cks["target"], cks["reasoner"], cks["base"]
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for e in shard:
            out_dtype = DTYPES[e.dtype]
            for lo, hi, apply in _chunks(e, chunk_elements):
                x = _read_rows(t.tensors[e.target], e.target, lo, hi)
                if apply:
                    rn, bn = e.delta
                    d = _read_rows(r.tensors[rn], rn, lo, hi).to(torch.float32, copy=True)
                    d.sub_(_read_rows(b.tensors[bn], bn, lo, hi))
                    d.mul_(weight).add_(x)  # θ_target + w·(θ_reasoner − θ_base), in fp32
                    x = d.to(out_dtype)
                elif x.dtype != out_dtype:
                    x = x.to(out_dtype)
                fh.write(x.contiguous().reshape(-1).view(torch.uint8).numpy())
                bar.update(x.numel() * x.element_size())
                del x
        if fh.tell() != 8 + len(raw) + offset:
            raise RuntimeError(f"{path.name}: wrote {fh.tell()} bytes, the header promises {8 + len(raw) + offset}")


def _copy_side_files(src: Path, dst: Path) -> list[str]:
    """The target's tokenizer, generation config, chat template, license…: every top-level file
    that is not weights (config.json is written from the plan)."""
    copied = []
    for f in sorted(src.iterdir()):
        if f.is_file() and not f.name.startswith(".") and not WEIGHT_FILES.match(f.name) \
                and f.name not in ("config.json", "manifest.json", "resolved_config.yaml"):
            shutil.copy2(f, dst / f.name)
            copied.append(f.name)
    return copied


# What a merge writes besides its shards and the target's side files (both listed in manifest.json).
MERGE_FILES = {"config.json", "manifest.json", "model.safetensors.index.json", "resolved_config.yaml"}


def _number(value, key: str, example: str) -> float:
    """A finite float from a YAML number or a command-line string; anything else names the key."""
    try:
        if isinstance(value, bool):  # float(True) is 1.0: almost surely a typo, not a weight
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise VectorError(f"vector.{key}={value!r} is not allowed: use a finite number, "
                          f"e.g. vector.{key}={example}")
    return number


def _check_no_overlap(out: Path, inputs: dict[str, Path]) -> None:
    """The output may never be an input, contain one or lie inside one (symlinks resolved): replacing
    it would delete the input, writing into it would change it."""
    for role, path in inputs.items():
        path = path.resolve()
        if out == path or out in path.parents or path in out.parents:
            how = "is" if out == path else "contains" if out in path.parents else "lies inside"
            raise VectorError(f"output_dir={str(out)!r} overlaps vector.{role}: it {how} {path}. The output may "
                              "never overlap an input model, overwrite or not; pick an output_dir outside "
                              "the three models")


def _check_replaceable(out: Path, overwrite: bool) -> None:
    """An existing non-empty output_dir is replaced only with overwrite, and only when it is a previous
    merge output — its manifest.json says method reasoning_vector — holding nothing but what that merge
    wrote (shards, side files, MERGE_FILES). Anything else there is someone's data."""
    if not out.exists():
        return
    if not out.is_dir():
        raise VectorError(f"output_dir={str(out)!r} is a file: pick a directory path for the merged model")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    if not overwrite:
        raise VectorError(f"output_dir={str(out)!r} exists and is not empty: pick another output_dir, or pass "
                          "vector.overwrite=true to replace a previous merge output")
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("method") != "reasoning_vector":
        raise VectorError(f"output_dir={str(out)!r} is not the output of a previous merge (no manifest.json with "
                          "method: reasoning_vector), so vector.overwrite=true does not replace it: pick "
                          "another output_dir")
    written = {*manifest.get("shards", []), *manifest.get("side_files", []), *MERGE_FILES}
    foreign = [e for e in entries if e not in written or not (out / e).is_file()]
    if foreign:
        raise VectorError(f"output_dir={str(out)!r} is a previous merge output but holds {foreign[:10]} that the "
                          "merge did not write; overwriting would delete them. Move them out or pick another "
                          "output_dir")


def merge(base: str, reasoner: str, target: str, output_dir: str | Path, weight: float = 0.5, *,
          include=None, exclude=None, layers=None, layer_pattern: str = r"(?:^|\.)layers\.(\d+)\.",
          vocab_policy: str = "shared_rows", tied_policy: str = "keep_target", dtype: str = "target",
          max_shard_size="5GB", chunk_mb: float = 4, overwrite: bool = False, progress: bool = True,
          resolved_config: str | None = None) -> dict:
    """Write θ_target + weight·(θ_reasoner − θ_base) to `output_dir`; return the manifest."""
    start = time.perf_counter()
    weight = _number(weight, "weight", "0.5")
    chunk_mb = _number(chunk_mb, "chunk_mb", "4")
    out = Path(output_dir).expanduser().resolve()
    paths = {role: resolve(ref, role) for role, ref in zip(ROLES, (base, reasoner, target))}
    _check_no_overlap(out, paths)
    _check_replaceable(out, overwrite)
    cks = {role: open_checkpoint(ref, role, paths[role]) for role, ref in zip(ROLES, (base, reasoner, target))}
    plan = plan_merge(cks["base"], cks["reasoner"], cks["target"], weight=weight, include=include,
                      exclude=exclude, layers=layers, layer_pattern=layer_pattern, vocab_policy=vocab_policy,
                      tied_policy=tied_policy, dtype=dtype)
    total = sum(e.nbytes for e in plan.entries)
    out.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out.parent).free
    if free < total * 1.05:
        raise VectorError(f"output_dir={str(out)!r}: the merged model needs {total / 1e9:.2f} GB and the disk "
                          f"has {free / 1e9:.2f} GB free; free space or pick another output_dir")

    shards = _shards(plan.entries, parse_size(max_shard_size))
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    chunk_elements = max(1, int(chunk_mb * 2**20 / 4))  # chunk_mb of fp32 per operand
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"reasoning vector w={weight:g}",
                  disable=not progress) as bar:
            for name, shard in zip(names, shards):
                _write_shard(tmp / name, shard, cks, weight, chunk_elements, bar)
        if len(shards) > 1:
            index = {"metadata": {"total_size": total},
                     "weight_map": {e.name: n for n, s in zip(names, shards) for e in s}}
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        side_files = _copy_side_files(cks["target"].path, tmp)
        (tmp / "config.json").write_text(json.dumps(plan.config, indent=2, sort_keys=True) + "\n")
        seconds = time.perf_counter() - start
        manifest = {
            "method": "reasoning_vector",
            "formula": "theta_target + weight * (theta_reasoner - theta_base)",
            "weight": weight,
            **{role: {"ref": ck.ref, "path": str(ck.path)} for role, ck in cks.items()},
            "include": list(include) if include is not None and not isinstance(include, str) else include,
            "exclude": list(exclude) if exclude is not None and not isinstance(exclude, str) else exclude,
            "vocab_policy": vocab_policy, "tied_policy": tied_policy, "dtype": dtype,
            "n_tensors": len(plan.entries), **plan.report,
            "shards": names, "bytes": total, "side_files": side_files,
            "seconds": round(seconds, 3), "output_dir": str(out),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        if resolved_config is not None:
            (tmp / "resolved_config.yaml").write_text(resolved_config)
        if out.exists():  # a previous merge output with overwrite, or an empty directory (checked above)
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("reasoning vector w=%g: %d tensors (%d with the vector), %.2f GB in %.1fs → %s",
             weight, len(plan.entries), plan.report["applied"], total / 1e9, seconds, out)
    return manifest


def run(cfg) -> dict:
    """Hydra entry (`python -m train method=reasoning_vector …`): merge with cfg.vector into cfg.output_dir."""
    from omegaconf import OmegaConf

    v = OmegaConf.to_container(cfg.vector, resolve=True)
    try:
        resolved = OmegaConf.to_yaml(cfg, resolve=True)
    except Exception:  # composed outside a Hydra app (hydra: resolvers unset): keep interpolations
        resolved = OmegaConf.to_yaml(cfg)
    manifest = merge(output_dir=cfg.output_dir, resolved_config=resolved, **v)
    return {"output_dir": manifest["output_dir"], "weight": manifest["weight"],
            "n_tensors": manifest["n_tensors"], "applied": manifest["applied"],
            "bytes": manifest["bytes"], "seconds": manifest["seconds"]}
