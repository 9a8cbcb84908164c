"""Generation backends: vLLM (GPU), any OpenAI-compatible server, in-process transformers (CPU).

All three take a flat list of conversations (OpenAI-style message lists) and return one
:class:`Generation` per conversation, so the runner and the results schema do not depend on the
backend. N samples of one prompt are N copies of its conversation (vLLM shares their prefix cache).

``opened`` records whether the rendered generation prompt already ended with ``<think>`` (templates
that force thinking do this); ``core.think.parse(text, opened=...)`` needs it to tell an unclosed
trace from a plain answer.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from core.think import CLOSE, OPEN


@dataclass
class Generation:
    text: str  # raw completion, think block included
    finish_reason: str  # stop | length
    n_tokens: int | None = None  # completion tokens
    opened: bool = False  # the prompt already opened <think>


@dataclass
class Settings:
    temperature: float
    top_p: float
    max_tokens: int
    seed: int = 0
    greedy_override: bool = False  # decoding=base: T=0 even where an example carries its own temperature


def prompt_opens_think(rendered_prompt: str) -> bool:
    return rendered_prompt.rstrip().endswith(OPEN)


NAMES = ("auto", "vllm", "openai", "transformers")


def adapter_base(model: str) -> str | None:
    """The base model of a LoRA adapter directory (``adapter_config.json``, as peft saves it); None otherwise."""
    config = Path(model) / "adapter_config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text(encoding="utf-8"))["base_model_name_or_path"]


def build(cfg, model: str):
    """The backend named by ``cfg.backend.name`` (auto = vllm when it and a GPU are there, else transformers)."""
    name = cfg.backend.name
    if name == "auto":
        name = "vllm" if _vllm_usable() else "transformers"
    if name == "transformers":
        return TransformersBackend(model, cfg.backend)
    if name == "openai":
        return OpenAIBackend(model, cfg.backend)
    if name == "vllm":
        return VLLMBackend(model, cfg.backend)
    raise ValueError(f"unknown backend.name={name!r}; use {'|'.join(NAMES)}")


def _vllm_usable() -> bool:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


class TransformersBackend:
    """In-process ``model.generate`` in left-padded batches; what the CPU tests and the demo use.

    A LoRA adapter directory loads as its base model plus the adapter (transformers does this itself when
    peft is installed); its tokenizer is the adapter's own if it saved one, else the base model's.
    """

    def __init__(self, model: str, bcfg):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = "transformers"
        base = adapter_base(model)
        own_tokenizer = base is None or (Path(model) / "tokenizer_config.json").is_file()
        self.tokenizer = AutoTokenizer.from_pretrained(model if own_tokenizer else base, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = getattr(torch, bcfg.get("dtype") or "float32")
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).eval()
        self.batch_size = int(bcfg.get("batch_size", 8))
        self.max_model_len = int(bcfg.get("max_model_len", 32768))
        self.template_kwargs = dict(bcfg.get("chat_template_kwargs") or {})

    def render(self, conv: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(
            conv, tokenize=False, add_generation_prompt=True, **self.template_kwargs
        )

    def generate(self, convs: list[list[dict]], settings: Settings) -> list[Generation]:
        import torch

        torch.manual_seed(settings.seed)
        prompts = [self.render(c) for c in convs]
        out: list[Generation] = []
        eos = set(_as_list(self.model.generation_config.eos_token_id)) | {self.tokenizer.eos_token_id}
        for start in tqdm(range(0, len(prompts), self.batch_size), desc="generate", leave=False):
            batch = prompts[start : start + self.batch_size]
            enc = self.tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
            max_new = max(1, min(settings.max_tokens, self.max_model_len - enc.input_ids.shape[1]))
            sampling = settings.temperature > 0
            kwargs = dict(do_sample=sampling, max_new_tokens=max_new, pad_token_id=self.tokenizer.pad_token_id)
            if sampling:
                kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=0)
            with torch.no_grad():
                seqs = self.model.generate(**enc, **kwargs)
            for prompt, row in zip(batch, seqs[:, enc.input_ids.shape[1] :]):
                ids = row.tolist()
                n = next((i + 1 for i, t in enumerate(ids) if t in eos), None)
                finish = "stop" if n is not None else "length"
                ids = ids[:n] if n is not None else ids
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                out.append(Generation(text, finish, len(ids), prompt_opens_think(prompt)))
        return out


def _as_list(x) -> list:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


class OpenAIBackend:
    """Any OpenAI-compatible chat endpoint (vLLM serve, transformers serve, a hosted API).

    Concurrency with a thread pool; retries with exponential backoff on 429/5xx/timeouts/connection
    errors are the ``openai`` client's own (``max_retries``), not hand-written. The API key is read
    from the environment variable named by ``api_key_env`` and never logged.

    Servers with a reasoning parser return the trace in ``reasoning_content`` (or ``reasoning``) and
    only the answer in ``content``. The text is rebuilt as ``<think>\\n{reasoning}\\n</think>\\n\\n{content}``;
    when the content is empty and generation stopped at the length limit, the parser never saw
    ``</think>`` and the text is rebuilt unclosed (``<think>\\n{reasoning}``).
    """

    def __init__(self, model: str, bcfg):
        import openai

        self.name = "openai"
        base_url = bcfg.get("base_url") or os.environ.get("OPENAI_BASE_URL")
        self.key_env = bcfg.get("api_key_env") or "OPENAI_API_KEY"
        self.max_retries = int(bcfg.get("max_retries", 5))
        self.timeout = float(bcfg.get("timeout", 3600))
        self.client = openai.OpenAI(
            base_url=base_url,
            api_key=os.environ.get(self.key_env) or "EMPTY",
            max_retries=self.max_retries,
            timeout=self.timeout,
        )
        self.url = str(self.client.base_url)
        self.model = bcfg.get("served_model") or model
        self.concurrency = int(bcfg.get("concurrency", 16))
        self.think_opened = bool(bcfg.get("think_opened", False))
        self.extra_body = dict(bcfg.get("extra_body") or {})

    def _one(self, conv: list[dict], settings: Settings) -> Generation:
        resp = self.client.chat.completions.create(
            model=self.model,
            messages=conv,
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_tokens=settings.max_tokens,
            extra_body=self.extra_body or None,
        )
        choice = resp.choices[0]
        msg = choice.message
        content = msg.content or ""
        reasoning = getattr(msg, "reasoning_content", None) or getattr(msg, "reasoning", None)
        if reasoning is None and msg.model_extra:
            reasoning = msg.model_extra.get("reasoning_content") or msg.model_extra.get("reasoning")
        finish = choice.finish_reason or "stop"
        text = rebuild_text(content, reasoning, finish)
        n_tokens = resp.usage.completion_tokens if resp.usage else None
        return Generation(text, "length" if finish == "length" else "stop", n_tokens, self.think_opened)

    def generate(self, convs: list[list[dict]], settings: Settings) -> list[Generation]:
        """Every conversation, or an error naming the server and the fix once the client's retries are spent
        (the requests still queued are cancelled: a dead server fails the run in seconds, not per request)."""
        import openai

        pool = ThreadPoolExecutor(self.concurrency)
        try:
            futures = [pool.submit(self._one, c, settings) for c in convs]
            return [f.result() for f in tqdm(futures, desc="generate", leave=False)]
        except openai.APIConnectionError as e:  # refused, unreachable, or timed out (APITimeoutError)
            raise ConnectionError(
                f"no answer from the OpenAI-compatible server at {self.url} ({type(e).__name__}: {e}; "
                f"{self.max_retries} retries, timeout {self.timeout:g} s). Start the server, or point "
                f"backend.base_url (or $OPENAI_BASE_URL) at a running one"
            ) from e
        except openai.AuthenticationError as e:
            raise PermissionError(
                f"the server at {self.url} refused the API key (401: {e}); put the right key in the variable "
                f"${self.key_env}, or name another variable with backend.api_key_env"
            ) from e
        except openai.NotFoundError as e:
            raise LookupError(
                f"the server at {self.url} does not serve model {self.model!r} (404: {e}); set backend.served_model "
                f"to a name it lists at {self.url.rstrip('/')}/models, or fix backend.base_url"
            ) from e
        finally:
            pool.shutdown(cancel_futures=True)


def rebuild_text(content: str, reasoning: str | None, finish_reason: str) -> str:
    """One raw text from a server's split message, so ``core.think.parse`` sees what the model wrote.

    A reasoning parser moves the trace into ``reasoning_content``; if generation stopped at the length
    limit with no content, the model never closed ``</think>`` and the text is rebuilt unclosed.
    """
    if not reasoning:
        return content
    if content.strip() or finish_reason != "length":
        return f"{OPEN}\n{reasoning}\n{CLOSE}\n\n{content}"
    return f"{OPEN}\n{reasoning}"


class VLLMBackend:
    """Offline vLLM (``pip install -e '.[gpu]'``): tensor parallel, 32,768-token context.

    Each request gets ``max_tokens`` clipped to what the context leaves after its prompt, so long
    prompts never fail the whole batch.
    """

    def __init__(self, model: str, bcfg):
        if adapter_base(model) is not None:
            raise ValueError(
                f"{model} is a LoRA adapter, which backend.name=vllm does not load; use backend.name=transformers, "
                "or merge the adapter into its base (peft's merge_and_unload) and evaluate the merged model"
            )
        try:
            from vllm import LLM
        except ImportError as e:  # lazily: vLLM is only in the [gpu] extra
            raise ImportError("backend.name=vllm needs vLLM: pip install -e '.[gpu]' (or use backend.name=transformers|openai)") from e
        self.name = "vllm"
        self.max_model_len = int(bcfg.get("max_model_len", 32768))
        self.llm = LLM(
            model=model,
            tensor_parallel_size=int(bcfg.get("tensor_parallel_size", 1)),
            max_model_len=self.max_model_len,
            gpu_memory_utilization=float(bcfg.get("gpu_memory_utilization", 0.9)),
            dtype=bcfg.get("dtype") or "auto",
            seed=int(bcfg.get("seed", 0)),
            enable_prefix_caching=True,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.template_kwargs = dict(bcfg.get("chat_template_kwargs") or {})

    def generate(self, convs: list[list[dict]], settings: Settings) -> list[Generation]:
        from vllm import SamplingParams

        prompts = [
            self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True, **self.template_kwargs)
            for c in convs
        ]
        token_ids = [self.tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
        params = [
            SamplingParams(
                temperature=settings.temperature,
                top_p=settings.top_p if settings.temperature > 0 else 1.0,
                max_tokens=max(1, min(settings.max_tokens, self.max_model_len - len(ids))),
                seed=settings.seed + i,
            )
            for i, ids in enumerate(token_ids)
        ]
        outs = self.llm.generate([{"prompt_token_ids": ids} for ids in token_ids], params, use_tqdm=True)
        result = []
        for prompt, o in zip(prompts, outs):
            c = o.outputs[0]
            result.append(Generation(c.text, "length" if c.finish_reason == "length" else "stop", len(c.token_ids), prompt_opens_think(prompt)))
        return result


def close(backend: Any) -> None:
    """Free GPU memory between benchmarks of a multirun in one process."""
    for attr in ("llm", "model"):
        if hasattr(backend, attr):
            delattr(backend, attr)
