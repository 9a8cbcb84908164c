"""Generation backends: vLLM (GPU), any OpenAI-compatible server, in-process transformers (CPU).

All three take a flat list of conversations (OpenAI-style message lists) and return one
:class:`Generation` per conversation, so the runner and the results schema do not depend on the
backend. N samples of one prompt are N copies of its conversation (vLLM shares their prefix cache).

``opened`` records whether the rendered generation prompt already ended with ``<think>`` (templates
that force thinking do this); ``core.think.parse(text, opened=...)`` needs it to tell an unclosed
trace from a plain answer.

Budget forcing (the ``forced`` answer policy): ``force(convs, gens, cue, settings)`` takes generations
that ended with the think block open and returns, for each, the response after a forced ``</think>``:
the in-process backends continue the token sequence (prompt ids + generated ids + the ids of
``"\n</think>\n\n" + cue``; vLLM lets its engine force ``</think>`` instead where the installed version
has ``SamplingParams.thinking_token_budget``), an OpenAI-compatible server continues the rendered prompt
through its completions endpoint. ``forced_path`` names the mechanism. When prompt, trace and the answer
budget do not fit in ``max_model_len``, the last tokens of the trace are dropped to make room.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from tqdm import tqdm

from core.think import CLOSE, OPEN


@dataclass
class Generation:
    text: str  # raw completion, think block included
    finish_reason: str  # stop | length
    n_tokens: int | None = None  # completion tokens
    opened: bool = False  # the prompt already opened <think>
    # In-process backends only, kept in memory (never written): the completion's token ids without its stop
    # token (the loop detector reads them) and the prompt's, to continue the sequence when forcing.
    token_ids: Sequence[int] | None = None
    prompt_ids: Sequence[int] | None = None


@dataclass
class Settings:
    temperature: float
    top_p: float
    max_tokens: int
    seed: int = 0
    greedy_override: bool = False  # decoding=base: T=0 even where an example carries its own temperature


def prompt_opens_think(rendered_prompt: str) -> bool:
    return rendered_prompt.rstrip().endswith(OPEN)


FORCED_CLOSE = f"\n{CLOSE}\n\n"  # how a forced answer closes the trace (as core.think.format_assistant does)


def forced_sequence(prompt_ids: Sequence[int], gen_ids: Sequence[int], tail_ids: Sequence[int], max_tokens: int,
                    max_model_len: int) -> list[int]:
    """The token sequence a forced answer continues: prompt + generated trace + tail (closing tag and cue).
    When it and ``max_tokens`` more would not fit in ``max_model_len`` (a trace that filled the context),
    the last tokens of the trace are dropped to make room: the answer is forced that much earlier."""
    keep = max(0, max_model_len - len(prompt_ids) - len(tail_ids) - max_tokens)
    return [*prompt_ids, *gen_ids[:keep], *tail_ids]


NAMES = ("auto", "vllm", "openai", "transformers")


def adapter_base(model: str) -> str | None:
    """The base model of a LoRA adapter directory (``adapter_config.json``, as peft saves it); None otherwise."""
    config = Path(model) / "adapter_config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text(encoding="utf-8"))["base_model_name_or_path"]


def build(cfg, model: str, forcing: bool = False):
    """The backend named by ``cfg.backend.name`` (auto = vllm when it and a GPU are there, else transformers).
    ``forcing``: some selected benchmark will force answers (``policy.forced``), so the backend checks it
    can, before anything is generated."""
    name = cfg.backend.name
    if name == "auto":
        name = "vllm" if _vllm_usable() else "transformers"
    if name == "transformers":
        return TransformersBackend(model, cfg.backend)
    if name == "openai":
        return OpenAIBackend(model, cfg.backend, forcing=forcing)
    if name == "vllm":
        use_budget = forcing and bool(OmegaConf.select(cfg, "policy.forced.vllm_thinking_budget", default=True))
        return VLLMBackend(model, cfg.backend, thinking_budget=use_budget)
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

    forced_path = "continue"

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
        self.eos = set(_as_list(self.model.generation_config.eos_token_id)) | {self.tokenizer.eos_token_id}

    def render(self, conv: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(
            conv, tokenize=False, add_generation_prompt=True, **self.template_kwargs
        )

    def generate(self, convs: list[list[dict]], settings: Settings) -> list[Generation]:
        prompts = [self.render(c) for c in convs]
        ids = [self.tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
        out = []
        for prompt, prompt_ids, (gen, finish, n) in zip(prompts, ids, self._continue(ids, settings)):
            text = self.tokenizer.decode(gen, skip_special_tokens=True)
            out.append(Generation(text, finish, n, prompt_opens_think(prompt), token_ids=gen, prompt_ids=prompt_ids))
        return out

    def force(self, convs: list[list[dict]], gens: list[Generation], cue: str, settings: Settings) -> list[str]:
        """The response after a forced ``</think>`` + cue, continuing each generation's own token sequence."""
        tail = self.tokenizer(FORCED_CLOSE + cue, add_special_tokens=False).input_ids
        seqs = [forced_sequence(g.prompt_ids, g.token_ids, tail, settings.max_tokens, self.max_model_len) for g in gens]
        return [cue + self.tokenizer.decode(gen, skip_special_tokens=True) for gen, _, _ in self._continue(seqs, settings)]

    def _continue(self, seqs: list[list[int]], settings: Settings) -> list[tuple[list[int], str, int]]:
        """Sample a continuation of each token sequence: (its ids without the stop token, stop|length, tokens
        generated counting the stop token)."""
        import torch

        torch.manual_seed(settings.seed)
        out = []
        for start in tqdm(range(0, len(seqs), self.batch_size), desc="generate", leave=False):
            batch = self.tokenizer.pad({"input_ids": seqs[start : start + self.batch_size]}, return_tensors="pt")
            width = batch["input_ids"].shape[1]
            max_new = max(1, min(settings.max_tokens, self.max_model_len - width))
            sampling = settings.temperature > 0
            kwargs = dict(do_sample=sampling, max_new_tokens=max_new, pad_token_id=self.tokenizer.pad_token_id)
            if sampling:
                kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=0)
            with torch.no_grad():
                rows = self.model.generate(**batch, **kwargs)
            for row in rows[:, width:]:
                ids = row.tolist()
                n = next((i + 1 for i, t in enumerate(ids) if t in self.eos), None)
                out.append((ids[: n - 1], "stop", n) if n is not None else (ids, "length", len(ids)))
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

    Forcing (``forcing=True``) cannot go through the chat endpoint, which always starts a new assistant
    turn: it sends the rendered prompt + the trace + ``</think>`` + cue to the **completions** endpoint.
    The prompt is rendered with the model's chat template, locally (the tokenizer of ``backend.tokenizer``,
    else of the model) or, when that does not load, by the server's ``/tokenize`` endpoint (vLLM serve),
    which then gets the sequence as token ids. Both, and the completions endpoint, are checked when the
    backend is built; a server without them fails the run before anything is generated.
    """

    forced_path = "completions"

    def __init__(self, model: str, bcfg, forcing: bool = False):
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
        self.max_model_len = int(bcfg.get("max_model_len", 32768))
        self.template_kwargs = {**(bcfg.get("chat_template_kwargs") or {}),
                                **self.extra_body.get("chat_template_kwargs", {})}
        self.tokenizer = None  # the local tokenizer that renders prompts for forcing; None: the server's /tokenize
        if forcing:
            self._check_forcing(bcfg.get("tokenizer") or model)

    # ---- chat generation
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
        return self._all([(self._one, c, settings) for c in convs])

    def _all(self, calls: list[tuple], endpoint: str = "chat") -> list:
        pool = ThreadPoolExecutor(self.concurrency)
        try:
            with self._named_errors(endpoint):
                futures = [pool.submit(*call) for call in calls]
                return [f.result() for f in tqdm(futures, desc="generate", leave=False)]
        finally:
            pool.shutdown(cancel_futures=True)

    @contextmanager
    def _named_errors(self, endpoint: str = "chat") -> Iterator[None]:
        import openai

        try:
            yield
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
        except openai.APIStatusError as e:
            if endpoint == "completions" and e.status_code in (404, 405, 501):
                raise LookupError(
                    f"the server at {self.url} has no completions endpoint ({self.url.rstrip('/')}/completions answered "
                    f"{e.status_code}), which the forced answer policy needs: a chat endpoint always starts a new "
                    "assistant turn and cannot continue an unclosed trace. Serve the model with vLLM or transformers "
                    "serve (both have it), or evaluate without forcing: policy.forced.enabled=false"
                ) from e
            if endpoint == "completions" and e.status_code == 400:
                raise ValueError(
                    f"the server at {self.url} refused a forced continuation (400: {e}). The sequence sent is cut to "
                    f"fit backend.max_model_len={self.max_model_len} tokens with policy.forced.max_tokens after it: "
                    "serve the model with a context that long (vLLM: --max-model-len), set backend.max_model_len to "
                    "the server's, or evaluate without forcing: policy.forced.enabled=false"
                ) from e
            if isinstance(e, openai.NotFoundError):
                raise LookupError(
                    f"the server at {self.url} does not serve model {self.model!r} (404: {e}); set backend.served_model "
                    f"to a name it lists at {self.url.rstrip('/')}/models, or fix backend.base_url"
                ) from e
            raise

    # ---- forcing through the completions endpoint
    def _check_forcing(self, tokenizer: str) -> None:
        """A way to render the prompt (a local tokenizer, else the server's /tokenize) and a completions
        endpoint, checked with a 1-token chat completion and a 1-token completion; else an error naming the fix."""
        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        except (OSError, ValueError) as local_error:
            try:
                self._server_tokens({"messages": [{"role": "user", "content": "1+1?"}], "add_generation_prompt": True})
            except Exception as server_error:
                raise ValueError(
                    f"policy.forced needs the model's chat template to continue a trace through the completions "
                    f"endpoint: no tokenizer loads from {tokenizer!r} ({type(local_error).__name__}) and the server "
                    f"at {self.url} has no /tokenize endpoint ({server_error}). Set backend.tokenizer=/path/to/model "
                    "(or a hub id in the local cache), or evaluate without forcing: policy.forced.enabled=false"
                ) from server_error
        with self._named_errors("chat"):  # first: a server that refuses the key or the model is named as such
            self.client.chat.completions.create(model=self.model, messages=[{"role": "user", "content": "1+1?"}],
                                                max_tokens=1)
        with self._named_errors("completions"):
            self.client.completions.create(model=self.model, prompt="1+1=", max_tokens=1)

    def _server_tokens(self, body: dict) -> list[int]:
        """Token ids from the server's ``/tokenize`` (vLLM serve: messages with the chat template, or a prompt)."""
        root = self.url.rstrip("/").removesuffix("/v1")  # vLLM serves it beside /v1, not under it
        return list(self.client.post(f"{root}/tokenize", body={"model": self.model, **body}, cast_to=object)["tokens"])

    def _forced_prompt(self, conv: list[dict], gen: Generation, tail: str, max_tokens: int) -> str | list[int]:
        """Rendered prompt + trace + tail, as text (local template) or token ids (the server's /tokenize).
        The chat endpoint returned text: its tokens are re-tokenized here, exact up to the joins."""
        if self.tokenizer is not None:
            prompt = self.tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True,
                                                        **self.template_kwargs)
            ids = lambda text: self.tokenizer(text, add_special_tokens=False).input_ids  # noqa: E731
            prompt_ids = ids(prompt)
        else:
            prompt_ids = self._server_tokens({"messages": conv, "add_generation_prompt": True,
                                              "chat_template_kwargs": self.template_kwargs})
            ids = lambda text: self._server_tokens({"prompt": text, "add_special_tokens": False})  # noqa: E731
            prompt = None
        trace = gen.text
        if (gen.opened or (prompt is not None and prompt_opens_think(prompt))) and trace.startswith(OPEN):
            trace = trace[len(OPEN):].lstrip("\n")  # the reasoning parser's rebuilt <think>: the prompt holds it
        seq = forced_sequence(prompt_ids, ids(trace), ids(tail), max_tokens, self.max_model_len)
        return self.tokenizer.decode(seq) if self.tokenizer is not None else seq

    def _complete(self, prompt: str | list[int], settings: Settings) -> str:
        resp = self.client.completions.create(model=self.model, prompt=prompt, temperature=settings.temperature,
                                              top_p=settings.top_p, max_tokens=settings.max_tokens)
        return resp.choices[0].text or ""

    def force(self, convs: list[list[dict]], gens: list[Generation], cue: str, settings: Settings) -> list[str]:
        # Prompts are built here, one by one (a tokenizer is not safe to share between threads), then completed
        # concurrently.
        prompts = [self._forced_prompt(c, g, FORCED_CLOSE + cue, settings.max_tokens) for c, g in zip(convs, gens)]
        return [cue + text for text in self._all([(self._complete, p, settings) for p in prompts], "completions")]


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

    Forcing continues each unclosed generation's token sequence (``{"prompt_token_ids": …}``). With
    ``thinking_budget`` and an installed vLLM whose ``SamplingParams`` has ``thinking_token_budget`` (its
    thinking-budget feature, docs "Reasoning Outputs"), the engine is built with a ``ReasoningConfig``
    (``<think>`` … ``</think>``) and each forced request is the sequence with the think block still open and
    ``thinking_token_budget=0``: vLLM itself forces ``</think>`` and the model answers on its own (no cue: the
    forced end string is one per engine, not per language). Otherwise we append ``</think>`` and the cue.
    Requests carrying no budget (every paper-policy generation) are not touched by it.
    """

    def __init__(self, model: str, bcfg, thinking_budget: bool = False):
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
        reasoning = vllm_reasoning_config() if thinking_budget else None
        self.forced_path = "vllm_thinking_budget" if reasoning is not None else "continue"
        self.llm = LLM(
            model=model,
            tensor_parallel_size=int(bcfg.get("tensor_parallel_size", 1)),
            max_model_len=self.max_model_len,
            gpu_memory_utilization=float(bcfg.get("gpu_memory_utilization", 0.9)),
            dtype=bcfg.get("dtype") or "auto",
            seed=int(bcfg.get("seed", 0)),
            enable_prefix_caching=True,
            **({"reasoning_config": reasoning} if reasoning is not None else {}),
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.template_kwargs = dict(bcfg.get("chat_template_kwargs") or {})

    def generate(self, convs: list[list[dict]], settings: Settings) -> list[Generation]:
        prompts = [
            self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True, **self.template_kwargs)
            for c in convs
        ]
        token_ids = [self.tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
        outs = self._sample(token_ids, settings)
        result = []
        for prompt, ids, o in zip(prompts, token_ids, outs):
            c = o.outputs[0]
            finish = "length" if c.finish_reason == "length" else "stop"
            result.append(Generation(c.text, finish, len(c.token_ids), prompt_opens_think(prompt),
                                     token_ids=without_stop_token(c.token_ids, finish), prompt_ids=ids))
        return result

    def force(self, convs: list[list[dict]], gens: list[Generation], cue: str, settings: Settings) -> list[str]:
        if self.forced_path == "vllm_thinking_budget":
            room = self.tokenizer(FORCED_CLOSE, add_special_tokens=False).input_ids  # what vLLM forces, and more
            seqs = [forced_sequence(g.prompt_ids, g.token_ids, [], settings.max_tokens + len(room), self.max_model_len)
                    for g in gens]
            return [after_close(o.outputs[0].text) for o in self._sample(seqs, settings, thinking_token_budget=0)]
        tail = self.tokenizer(FORCED_CLOSE + cue, add_special_tokens=False).input_ids
        seqs = [forced_sequence(g.prompt_ids, g.token_ids, tail, settings.max_tokens, self.max_model_len) for g in gens]
        return [cue + o.outputs[0].text for o in self._sample(seqs, settings)]

    def _sample(self, seqs: list[list[int]], settings: Settings, **budget):
        from vllm import SamplingParams

        params = [
            SamplingParams(
                temperature=settings.temperature,
                top_p=settings.top_p if settings.temperature > 0 else 1.0,
                max_tokens=max(1, min(settings.max_tokens, self.max_model_len - len(ids))),
                seed=settings.seed + i,
                **budget,
            )
            for i, ids in enumerate(seqs)
        ]
        return self.llm.generate([{"prompt_token_ids": ids} for ids in seqs], params, use_tqdm=True)


def vllm_reasoning_config():
    """vLLM's ``ReasoningConfig`` for ``<think>`` … ``</think>`` when the installed vLLM has the thinking budget
    (``SamplingParams.thinking_token_budget``); None when it has not."""
    from vllm import SamplingParams

    try:
        from vllm.config import ReasoningConfig
    except ImportError:
        return None
    if "thinking_token_budget" not in getattr(SamplingParams, "__struct_fields__", ()):
        return None
    return ReasoningConfig(reasoning_start_str=OPEN, reasoning_end_str=CLOSE)


def without_stop_token(ids: Sequence[int], finish_reason: str) -> Sequence[int]:
    """A completion's token ids without the stop token that ended it (vLLM keeps the EOS id in ``token_ids``):
    the trace a forced answer continues must not hold an end-of-turn token."""
    return ids[:-1] if finish_reason == "stop" and len(ids) else ids  # no copy of a 32k-token trace


def after_close(text: str) -> str:
    """The response after a forced ``</think>`` (vLLM's thinking budget puts it at the start of the output)."""
    return text.split(CLOSE, 1)[1] if CLOSE in text else text


def close(backend: Any) -> None:
    """Free GPU memory between benchmarks of a multirun in one process."""
    for attr in ("llm", "model"):
        if hasattr(backend, attr):
            delattr(backend, attr)
