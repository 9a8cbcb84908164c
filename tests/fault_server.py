"""A fault-injecting OpenAI-compatible chat server (stdlib asyncio), for the synth tests and its benchmark.

Not a model: ``POST /v1/chat/completions`` (and ``GET /v1/models``) answers after ``latency`` seconds with a deterministic reply
built from the prompt (the last user message). It lives in ``tests/`` because users never need it; the
benchmark (``bench/bench_synth.py``) starts it as ``python tests/fault_server.py --latency 1``.

Faults come from two places, and the server counts every one it injects (``outcomes``, ``injected``):

- **Directives** inside the prompt, for targeted tests: ``[[fault:429,500,timeout,garbled,drop,401]]``
  makes the first attempts at this prompt fail in this order (HTTP 429 / 500, a hang of ``hang`` seconds,
  a 200 with broken JSON, a connection closed without an answer, 401), later attempts succeed;
  ``[[out:truncated]]`` (finish_reason=length, unclosed trace), ``[[out:empty]]`` (empty response),
  ``[[out:notrace]]`` (no reasoning), ``[[out:unclosed]]`` (inline ``<think>`` never closed), ``[[out:loop]]``
  (a trace that ends in a loop: one sentence repeated 40 times behind an incrementing step counter, in
  Japanese when the prompt has Japanese characters, then closed and answered), ``[[out:400]]`` (always
  HTTP 400).
- **Rates**, for black-box runs: ``transient={"429": 0.05, "timeout": 0.02, ...}`` is the chance that each
  of the first ``transient_attempts`` attempts at a prompt fails that way; ``permanent={"truncated": 0.03,
  "unclosed": 0.03, "empty": 0.03}`` the chance that a prompt always gets that bad answer. Both are
  decided by a hash of (seed, prompt, attempt), so they do not depend on timing, on which endpoint or
  process asks, or on a restart: :meth:`permanent_fault` tells a test in advance what a prompt will get.

``api_key``: every request must carry ``Authorization: Bearer <api_key>`` (else 401). ``reasoning``: where
the trace goes: ``field`` (``reasoning_content``, as vLLM), ``reasoning`` (the ``reasoning`` field),
``inline`` (``<think>…</think>`` in the content, as R1). ``translate=True`` makes it a fake En→Ja
translator that keeps ``[[Pn]]`` placeholders (``[[fault:dropph]]`` drops one on the first try).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
import time
from collections import Counter
from typing import Any

_FAULT = re.compile(r"\[\[fault:([a-z0-9,]+)\]\]")
_OUT = re.compile(r"\[\[out:([a-z0-9]+)\]\]")
_PH = re.compile(r"\[\[P\d+\]\]")
TRANSIENT = ("429", "500", "502", "503", "timeout", "garbled", "drop")
PERMANENT = ("truncated", "unclosed", "empty", "notrace", "loop")
LOOP_REPEATS = 40


def _uniform(*parts: object) -> float:
    """A number in [0, 1) fixed by ``parts`` (the same in every process and run)."""
    h = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def _pick(u: float, rates: dict[str, float]) -> str | None:
    for kind, rate in rates.items():
        if u < rate:
            return kind
        u -= rate
    return None


class FaultServer:
    def __init__(self, latency: float = 0.0, reasoning: str = "field", hang: float = 30.0, translate: bool = False,
                 api_key: str | None = None, transient: dict[str, float] | None = None,
                 permanent: dict[str, float] | None = None, transient_attempts: int = 2, seed: int = 0,
                 host: str = "127.0.0.1", port: int = 0):
        self.latency, self.reasoning, self.hang = latency, reasoning, hang
        self.translate, self.api_key = translate, api_key
        self.transient, self.permanent = dict(transient or {}), dict(permanent or {})
        assert set(self.transient) <= set(TRANSIENT) and set(self.permanent) <= set(PERMANENT)
        self.transient_attempts, self.seed = transient_attempts, seed
        self.host, self.port = host, port
        self.attempts: Counter = Counter()     # per prompt text
        self.requests = 0
        self.inflight = 0                      # chat completions being answered now
        self.outcomes: Counter = Counter()     # every answer given, by kind (ok, 429, timeout, truncated, …)
        self.injected: dict[str, str] = {}     # prompt -> the permanent fault it was answered with
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def permanent_fault(self, prompt: str) -> str | None:
        """The bad answer a prompt always gets from the rates (None: a good one)."""
        return _pick(_uniform(self.seed, prompt, "out"), self.permanent)

    def _transient_fault(self, prompt: str, attempt: int) -> str | None:
        if attempt >= self.transient_attempts:
            return None
        return _pick(_uniform(self.seed, prompt, attempt), self.transient)

    # ---- HTTP ------------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                body = await reader.readexactly(int(headers.get("content-length", 0) or 0))
                chat = method == "POST" and path.endswith("/chat/completions")
                self.inflight += chat
                try:
                    result = await self._dispatch(method, path, headers, body)
                finally:
                    self.inflight -= chat
                if result is None:  # drop the connection without answering
                    writer.transport.abort()
                    return
                status, payload = result
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                writer.write(f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
                             f"content-length: {len(data)}\r\nconnection: keep-alive\r\n\r\n".encode() + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def _dispatch(self, method: str, path: str, headers: dict[str, str], body: bytes):
        if method == "GET" and path.rstrip("/").endswith("health"):
            return 200, {"status": "ok"}
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            self.outcomes["401"] += 1
            return 401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}
        if method == "GET" and path.rstrip("/").endswith("/models"):
            return 200, {"object": "list", "data": [{"id": "fault-server", "object": "model"}]}
        if method != "POST" or not path.endswith("/chat/completions"):
            return 404, {"error": {"message": f"no route {method} {path}"}}
        self.requests += 1
        req = json.loads(body)
        msgs = req.get("messages") or []
        prompt = next((m["content"] for m in reversed(msgs) if m.get("role") == "user"), "")
        n = self.attempts[prompt]
        self.attempts[prompt] += 1
        m = _FAULT.search(prompt)
        if m:
            seq = m.group(1).split(",")
            fault = seq[n] if n < len(seq) else None
        else:
            fault = self._transient_fault(prompt, n)
        if self.latency:
            await asyncio.sleep(self.latency)
        outs = set(_OUT.findall(prompt))
        if not outs and (kind := self.permanent_fault(prompt)) is not None:
            outs = {kind}
        if fault is not None and fault != "dropph":
            self.outcomes[fault] += 1
            if fault.isdigit():
                return int(fault), {"error": {"message": f"injected {fault}"}}
            if fault == "timeout":
                await asyncio.sleep(self.hang)
                return 500, {"error": {"message": "late"}}
            if fault == "garbled":
                return 200, b'{"id": "x", "choices": [{"message": {"content": "trunc'
            if fault == "drop":
                return None
        if "400" in outs:
            self.outcomes["400"] += 1
            return 400, {"error": {"message": "This model's maximum context length is 8 tokens"}}
        for kind in outs:
            self.outcomes[kind] += 1
            self.injected[prompt] = kind
        if not outs:
            self.outcomes["ok"] += 1
        return 200, self._completion(req, prompt, outs, fault_dropph=fault == "dropph")

    # ---- replies ---------------------------------------------------------------------------------

    def _completion(self, req: dict[str, Any], prompt: str, outs: set[str], fault_dropph: bool) -> dict[str, Any]:
        finish = "stop"
        if self.translate:
            content = self._translate(prompt, drop=fault_dropph)
            reasoning = None
        else:
            effort = req.get("reasoning_effort")
            trace = f"Let me think about: {prompt[:60]} (effort {effort})."
            response = f"The answer to '{prompt[:40]}' is 42."
            if "truncated" in outs:
                finish, response = "length", ""
            if "empty" in outs:
                response = ""
            if "notrace" in outs:
                trace = ""
            if "loop" in outs:
                trace = f"{trace} {self.looping(prompt)}"
            reasoning = None
            if "unclosed" in outs or (finish == "length" and self.reasoning == "inline"):
                content = f"<think>\n{trace} But maybe"
            elif self.reasoning == "inline":
                content = f"<think>\n{trace}\n</think>\n\n{response}" if trace else response
            else:
                content, reasoning = response, (trace or None)
                if finish == "length":
                    reasoning = f"{trace} But maybe"
        words = len(prompt.split())
        comp = len(content.split()) + len((reasoning or "").split())
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if reasoning is not None:
            message["reasoning" if self.reasoning == "reasoning" else "reasoning_content"] = reasoning
        return {"id": f"chatcmpl-{self.requests}", "object": "chat.completion", "created": int(time.time()),
                "model": req.get("model"),
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": words, "completion_tokens": comp, "total_tokens": words + comp}}

    @staticmethod
    def looping(prompt: str) -> str:
        """A looping stretch of trace: a step counter and one sentence, LOOP_REPEATS times."""
        if any("\u3040" <= ch <= "\u9fff" for ch in prompt):
            unit = "ステップ{i}：もう一度足し算を確認します。2 + 2 = 4 なので、合計は変わりません。"
        else:
            unit = "Step {i}: let me check the sum again. 2 + 2 = 4, so the total stays the same. "
        return "".join(unit.format(i=i) for i in range(1, LOOP_REPEATS + 1))

    @staticmethod
    def _translate(text: str, drop: bool = False) -> str:
        """A fake translator: every word outside placeholders becomes 語; placeholders are kept."""
        parts = _PH.split(text)
        phs = _PH.findall(text)
        if drop and phs:
            phs = phs[1:] + [""]
        out = []
        for i, p in enumerate(parts):
            out.append(re.sub(r"[A-Za-z]+", "語", p))
            if i < len(phs):
                out.append(phs[i])
        return "【訳】" + "".join(out)

    # ---- lifecycle -------------------------------------------------------------------------------

    async def serve(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    def start(self) -> "FaultServer":
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.serve())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fault-openai", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def close() -> None:
            self._server.close()
            for t in asyncio.all_tasks():
                if t is not asyncio.current_task():
                    t.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> "FaultServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """``python tests/fault_server.py --latency 1``: serve until killed; prints the base URL first."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--reasoning", default="field", choices=["field", "reasoning", "inline"])
    ap.add_argument("--api-key-env", default=None, help="require the key held by this environment variable")
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args(argv)

    async def amain() -> None:
        import os

        s = FaultServer(latency=a.latency, reasoning=a.reasoning, port=a.port,
                        api_key=os.environ[a.api_key_env] if a.api_key_env else None)
        await s.serve()
        print(s.url, flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(amain())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
