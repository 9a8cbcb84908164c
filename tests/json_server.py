"""A small stdlib HTTP server that answers JSON POSTs, as an OpenAI-compatible endpoint does, for tests that need
a real server with scripted answers (tests/fault_server.py is the teacher with injected faults).

    with JsonServer(lambda path, body: (200, chat_completion("hi"))) as server:
        ... server.url ...   # http://127.0.0.1:<port>/v1; every request is kept in server.seen as (path, body)
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = Callable[[str, dict[str, Any]], tuple[int, dict[str, Any]]]


def chat_completion(text: str, model: str = "scripted", finish_reason: str = "stop") -> dict[str, Any]:
    return {"id": "x", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": finish_reason, "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error"}}


class JsonServer:
    """``answer(path, body) -> (status, json)`` for every POST; requests are answered one at a time."""

    def __init__(self, answer: Answer):
        seen = self.seen = []
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    seen.append((self.path, body))
                    status, payload = answer(self.path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "JsonServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
