"""An OpenAI-compatible chat client over one or several endpoints: balancing, retries, a circuit breaker,
answer parsing.

One ``openai.AsyncOpenAI`` per endpoint (its own retries off; its API key, headers, connection pool and
error types), called through its public ``post("/chat/completions", body=…, cast_to=str)`` (the SDK's way
to send a request body as given): sampling and ``extra_body`` go in the body as configured (vLLM's own
parameters included), and the body that comes back is parsed here, so a garbled 200 is a retryable error
and the reasoning fields servers add (``reasoning_content``, ``reasoning``) are read as sent. (The typed
``chat.completions.create`` costs ~0.3 ms more CPU per request in request validation; bench_synth.py.)

- **Retries** (tenacity): 429 / 5xx / 408 / timeouts / dropped connections / garbled bodies, exponential
  backoff with jitter, ``max_attempts`` in all. Any other 4xx (400, 413, 422, …) is never retried
  (:class:`RequestRefused`); 401/403/404 stop the run (:class:`FatalEndpointError`): retrying cannot fix a
  key, a URL or a model name.
- **Balancing**: the endpoint with the fewest in-flight requests per unit of weight, skipping one that
  just failed at the transport level (``cooldown``) while another is available.
- **Circuit breaker**: an endpoint whose requests fail at the transport level (refused, reset, timed
  out) with no success for ``down_after`` seconds is taken out for the run; when every endpoint is out,
  the next request raises :class:`FatalEndpointError` naming each URL and its last error.

API keys are read from the environment variable the config names and never appear in messages or logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import openai
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from core import think
from synth import plain

log = logging.getLogger(__name__)

FATAL_STATUS = {401, 403, 404}      # configuration errors: the whole run stops with the server's message
CONNECT_TIMEOUT = 10.0              # seconds to open a connection (a loaded vLLM server still accepts at once)


class FatalEndpointError(RuntimeError):
    """The run cannot go on: an endpoint refused the configuration (401/403/404), every endpoint is out,
    or too many prompts in a row failed. The message names the URL(s) and the error."""


class RequestRefused(RuntimeError):
    """A 4xx other than 401/403/404/408/429 (400, 413, 422, …): the server refuses this request (e.g. a prompt
    over the context); not retried."""


class RequestFailed(RuntimeError):
    """A request still failing after every retry (transport errors, 429, 5xx, garbled bodies)."""


class GarbledResponse(RuntimeError):
    """A 200 whose body is not a chat completion (broken JSON, no choices)."""


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, (openai.APIConnectionError, GarbledResponse)):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 429) or exc.status_code >= 500
    return False


def describe(exc: BaseException) -> str:
    """The server's message, or the transport error and its cause; never request headers (the key)."""
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, (str, dict)) else None
        msg = body.get("message") or body.get("detail") or body if isinstance(body, dict) else body or exc.message
        return f"HTTP {exc.status_code}: {str(msg)[:500]}"
    cause = exc.__cause__ or exc.__context__
    why = f" ({type(cause).__name__}: {str(cause)[:200]})" if cause is not None and str(cause) else ""
    return f"{type(exc).__name__}: {str(exc)[:300]}{why}"


@dataclass
class Endpoint:
    base_url: str
    client: openai.AsyncOpenAI
    key_env: str | None              # the variable the key came from (named in 401 messages, never read out)
    weight: float = 1.0
    inflight: int = 0
    cooldown_until: float = 0.0
    failing_since: float | None = None   # first transport failure since the last success
    out: bool = False                    # taken out by the circuit breaker
    last_error: str = ""
    requests: int = 0
    errors: int = 0


@dataclass
class Reply:
    trace: str | None
    response: str
    status: str                 # closed | unclosed | absent (core.think)
    finish_reason: str | None
    usage: dict[str, int] = field(default_factory=dict)
    reasoning_source: str = "none"   # field | inline | elicited | none
    endpoint: str = ""
    attempts: int = 1


def _usage(u: dict[str, Any] | None) -> dict[str, int]:
    if not u:
        return {}
    out = {k: int(u[k]) for k in ("prompt_tokens", "completion_tokens") if u.get(k) is not None}
    rt = (u.get("completion_tokens_details") or {}).get("reasoning_tokens")
    if rt is not None:
        out["reasoning_tokens"] = int(rt)
    return out


def parse_reply(resp: dict[str, Any]) -> Reply:
    """Trace and response of a chat completion (the JSON body as a dict): the trace from a separate
    reasoning field (``reasoning_content`` as vLLM/transformers serve, or ``reasoning`` as newer
    vLLM/OpenRouter) or from inline ``<think>`` in the content (R1-style)."""
    if not isinstance(resp, dict):
        raise GarbledResponse(f"completion is not a JSON object: {str(resp)[:80]!r}")
    choices = resp.get("choices")
    if not choices or not isinstance(choices[0], dict):
        raise GarbledResponse("completion without choices")
    choice = choices[0]
    msg = choice.get("message")
    if not isinstance(msg, dict):
        raise GarbledResponse("completion without a message")
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, str):
        reasoning = json.dumps(reasoning, ensure_ascii=False)
    content = msg.get("content") or ""
    parsed = think.split_teacher_message(content, reasoning)
    source = "field" if reasoning else ("inline" if parsed.status != "absent" else "none")
    return Reply(trace=parsed.trace if parsed.status != "absent" else None, response=parsed.response,
                 status=parsed.status, finish_reason=choice.get("finish_reason"), usage=_usage(resp.get("usage")),
                 reasoning_source=source)


class ChatClient:
    """Chat completions against the endpoint list of a teacher (or translator) config. The request
    timeout is the config's ``timeout`` (seconds; 3600 when unset). ``max_inflight`` bounds the requests
    in flight (all endpoints together); a call waiting out a retry backoff holds none."""

    def __init__(self, cfg: Any, retries: Any = None, down_after: float = 10.0, max_inflight: int | None = None):
        cfg = plain(cfg)
        self.model = cfg["model"]
        retries = plain(retries) or {}
        self.max_attempts = int(retries.get("max_attempts", 6))
        self.wait = wait_exponential_jitter(multiplier=float(retries.get("initial", 1.0)),
                                            max=float(retries.get("max", 60.0)),
                                            jitter=float(retries.get("jitter", 1.0)))
        self.cooldown = float(retries.get("cooldown", 5.0))
        self.down_after = float(down_after)
        seconds = float(cfg.get("timeout") or 3600)
        timeout = openai.Timeout(seconds, connect=min(seconds, CONNECT_TIMEOUT))
        endpoints = cfg.get("endpoints") or []
        if not endpoints:
            raise ValueError(f"teacher {cfg.get('name')!r}: no endpoints configured (teacher.endpoints=[...])")
        self.endpoints: list[Endpoint] = []
        for e in endpoints:
            e = {"base_url": e} if isinstance(e, str) else dict(e)
            key_env = e.get("api_key_env") or cfg.get("api_key_env")
            key = (os.environ.get(key_env) if key_env else None) or "EMPTY"
            client = openai.AsyncOpenAI(base_url=e["base_url"], api_key=key, max_retries=0, timeout=timeout)
            self.endpoints.append(Endpoint(e["base_url"], client, key_env, float(e.get("weight", 1.0))))
        self.body = {k: v for k, v in (cfg.get("sampling") or {}).items() if v is not None}
        self.body.update(cfg.get("extra_body") or {})
        self.system = cfg.get("system")
        self.slots = asyncio.Semaphore(max_inflight) if max_inflight else contextlib.nullcontext()
        self._rr = 0

    def pick(self) -> Endpoint:
        live = [e for e in self.endpoints if not e.out]
        if not live:
            raise FatalEndpointError(
                f"every endpoint of {self.model} is out (failing at the transport level with no success for "
                f"synth.endpoint_down_after={self.down_after:g} s): "
                + "; ".join(f"{e.base_url}: {e.last_error}" for e in self.endpoints)
                + ". Check that the servers are up and the URLs (teacher.endpoints) are right, then rerun: "
                  "finished records are kept.")
        now = time.monotonic()
        live = [e for e in live if e.cooldown_until <= now] or live
        self._rr += 1
        n = len(live)
        # fewest in-flight per weight; ties broken round-robin so equal endpoints alternate
        return min((live[(self._rr + i) % n] for i in range(n)), key=lambda e: e.inflight / e.weight)

    def messages(self, instruction: str, system: str | None = None) -> list[dict[str, str]]:
        system = system if system is not None else self.system
        msgs = [{"role": "system", "content": system}] if system else []
        return msgs + [{"role": "user", "content": instruction}]

    def _transport_failure(self, ep: Endpoint) -> None:
        now = time.monotonic()
        ep.cooldown_until = now + self.cooldown
        if ep.failing_since is None:
            ep.failing_since = now
            log.warning("%s: %s (retrying; taken out if it keeps failing for %g s)", ep.base_url, ep.last_error,
                        self.down_after)
        elif not ep.out and now - ep.failing_since >= self.down_after:
            ep.out = True
            log.error("%s taken out: failing for %.0f s, last error %s", ep.base_url, now - ep.failing_since,
                      ep.last_error)

    def _refused(self, ep: Endpoint) -> FatalEndpointError:
        if not ep.key_env:
            key = "none sent: teacher.api_key_env is null"
        else:
            key = f"read from ${ep.key_env}" + ("" if os.environ.get(ep.key_env) else ", which is unset")
        return FatalEndpointError(f"{ep.base_url} answered {ep.last_error}: check the URL (teacher.endpoints), "
                                  f"the model name ({self.model!r}) and the API key ({key})")

    async def check(self) -> None:
        """Before a run, every endpoint is asked ``GET /models``: a refused key (401/403) stops at once, and
        so does a run where no endpoint can be reached (each URL named with its error); one unreachable
        endpoint among others is left to the circuit breaker. Any other answer counts as reachable."""

        async def probe(ep: Endpoint) -> bool:
            try:
                await ep.client.with_options(timeout=CONNECT_TIMEOUT).models.list()
            except openai.APIConnectionError as exc:
                ep.last_error = describe(exc)
                log.warning("%s cannot be reached: %s", ep.base_url, ep.last_error)
                return False
            except openai.APIStatusError as exc:
                if exc.status_code in (401, 403):
                    ep.last_error = describe(exc)
                    raise self._refused(ep) from None
            return True

        if not any(await asyncio.gather(*(probe(ep) for ep in self.endpoints))):
            raise FatalEndpointError(f"no endpoint of {self.model} can be reached: "
                                     + "; ".join(f"{e.base_url}: {e.last_error}" for e in self.endpoints)
                                     + ". Check that the servers are up and the URLs (teacher.endpoints) are right.")

    async def _once(self, messages: list[dict[str, str]], reasoning_effort: str | None,
                    overrides: dict[str, Any] | None, tried: list[str]) -> Reply:
        async with self.slots:  # released while tenacity waits before the next attempt
            ep = self.pick()
            tried.append(ep.base_url)
            ep.inflight += 1
            ep.requests += 1
            try:
                body = {"model": self.model, "messages": messages, **self.body, **(overrides or {})}
                if reasoning_effort:
                    body["reasoning_effort"] = reasoning_effort
                text = await ep.client.post("/chat/completions", body=body, cast_to=str)
                try:
                    data = json.loads(text)
                except ValueError as exc:
                    raise GarbledResponse(f"non-JSON body ({exc}): {text[:80]!r}") from None
                reply = parse_reply(data)
            except Exception as exc:
                ep.errors += 1
                ep.last_error = describe(exc)
                if isinstance(exc, openai.APIStatusError) and exc.status_code in FATAL_STATUS:
                    raise self._refused(ep) from None
                if isinstance(exc, openai.APIConnectionError):   # refused, reset, timed out
                    self._transport_failure(ep)
                raise
            finally:
                ep.inflight -= 1
            ep.failing_since = None
            reply.endpoint = ep.base_url
            return reply

    async def chat(self, instruction: str, reasoning_effort: str | None = None, system: str | None = None,
                   overrides: dict[str, Any] | None = None) -> Reply:
        """One chat completion with retries. Raises :class:`FatalEndpointError` (stop the run),
        :class:`RequestRefused` (any other 4xx) or :class:`RequestFailed` (retries exhausted)."""
        messages = self.messages(instruction, system)
        tried: list[str] = []
        try:
            async for attempt in AsyncRetrying(stop=stop_after_attempt(self.max_attempts), wait=self.wait,
                                               retry=retry_if_exception(is_retryable), reraise=True):
                with attempt:
                    reply = await self._once(messages, reasoning_effort, overrides, tried)
        except FatalEndpointError:
            raise
        except Exception as exc:
            if isinstance(exc, openai.APIStatusError) and not is_retryable(exc):
                raise RequestRefused(describe(exc)) from None
            last = f"; last at {tried[-1]}" if tried else ""
            raise RequestFailed(f"{describe(exc)} (after {len(tried)} attempts{last})") from None
        reply.attempts = len(tried)
        return reply

    async def aclose(self) -> None:
        for e in self.endpoints:
            await e.client.close()

    def stats(self) -> list[dict[str, Any]]:
        return [{"base_url": e.base_url, "requests": e.requests, "errors": e.errors, "out": e.out,
                 "last_error": e.last_error} for e in self.endpoints]
