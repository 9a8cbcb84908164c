"""Test rig: tiny real models, the real Qwen3 tokenizer, triples in the real schema. Nothing downloads."""

import os

# Before torch is imported anywhere: on 2 cores, thread contention slows torch many times.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ.pop("WANDB_API_KEY", None)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from core import jsonl  # noqa: E402
from core.assets import qwen3_tokenizer_dir, tiny_student_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
# Triples in the real schema, laid out as the synth stage writes them (<data_dir>/<component>/*.jsonl).
TRIPLES = REPO / "tests" / "fixtures" / "triples"


@pytest.fixture(scope="session")
def tokenizer_dir() -> Path:
    return qwen3_tokenizer_dir()


@pytest.fixture(scope="session")
def qwen3_tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_student() -> Path:
    """A 2-layer Qwen3 with the real Qwen3 tokenizer and chat template, saved with save_pretrained."""
    return tiny_student_dir()


@pytest.fixture()
def demo_triples() -> list[dict]:
    """The demo experiment's components as triples in the real schema (STEM en/ja, chat en/ja)."""
    return [r for d in sorted(TRIPLES.iterdir()) for r in jsonl.read_dir(d)]


def install_triples(root: Path) -> Path:
    """Put the fixture triples where ``paths.root=root`` makes the train stage look for them."""
    import shutil

    data_dir = root / "data" / "triples"
    shutil.copytree(TRIPLES, data_dir, dirs_exist_ok=True)
    return data_dir


# The evaluate stage's target of a run, as the runner builds it (tests that call the runner directly).
EVAL_TARGET = {"model": "m", "run_name": "r", "experiment": None, "paper_id": None}


class ScriptedBackend:
    """A generation backend that plays back fixed completions in order: the model under test is replaced,
    not the runner or the scorer. A completion that opened ``<think>`` and never closed it stopped at the
    length limit; ``opened`` says the prompt already opened the block. An item may also be a whole
    ``evaluate.backends.Generation`` (its own finish reason, token ids…), played back as it is.

    Forcing (``force``) plays back ``forced`` in order: what the model writes after the cue (nothing once
    they run out). Records calls and settings (``calls``/``settings``; ``force_calls``: (conversations,
    generations, cue, settings))."""

    name = "scripted"
    forced_path = "continue"

    def __init__(self, texts, opened=False, forced=()):
        self.texts = list(texts)
        self.opened = opened
        self.forced = list(forced)
        self.calls = []
        self.settings = []
        self.force_calls = []

    def generate(self, convs, settings):
        from evaluate.backends import Generation

        self.calls.append(convs)
        self.settings.append(settings)
        out = []
        for _ in convs:
            item = self.texts.pop(0)
            if isinstance(item, Generation):
                out.append(item)
                continue
            finish = "stop" if "</think>" in item or "<think>" not in item else "length"
            out.append(Generation(item, finish, 5, self.opened))
        return out

    def force(self, convs, gens, cue, settings):
        self.force_calls.append((convs, gens, cue, settings))
        return [cue + (self.forced.pop(0) if self.forced else "") for _ in convs]
