"""A real local OpenAI-compatible server (``transformers serve``) on a local model directory.

Used by the synth tests and demo (teacher), the evaluate stage (model under test) and the lead's demo::

    from core.assets import smollm2_dir
    from core.serve import local_server

    with local_server(smollm2_dir(), device="cpu") as url:          # url == "http://127.0.0.1:<port>/v1"
        client = openai.OpenAI(base_url=url, api_key="local")
        client.chat.completions.create(model=url.model, messages=[...], max_tokens=32)

The server is pinned to the one model (``transformers serve <dir>``), so a request's ``model`` field must
be exactly ``url.model`` (the absolute directory path as a string) or the server answers 400. The
yielded value is a ``str`` (the base URL, ending in ``/v1``) carrying ``.model``, ``.log_path``,
``.port`` and ``.pid``.

The port is chosen free automatically, the server is polled on ``/health`` until it answers (the model
is loaded before uvicorn starts listening, so a healthy server is ready), its output goes to a log file,
and it is stopped (SIGTERM, then SIGKILL of its whole process group) when the block exits, also when the
caller is stopped by SIGTERM (e.g. a timeout): inside the block SIGTERM raises ``SystemExit`` so the
server never outlives its caller. If the process dies or never answers, :class:`ServerError` carries the
tail of its log.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from core.assets import resolve_model



class ServerError(RuntimeError):
    """The local server died or never became healthy; the message ends with its log tail."""


class ServerURL(str):
    """The base URL (``http://127.0.0.1:<port>/v1``) with the server's facts attached."""

    model: str
    log_path: Path
    port: int
    pid: int

    def __new__(cls, url: str, *, model: str, log_path: Path, port: int, pid: int) -> "ServerURL":
        self = super().__new__(cls, url)
        self.model, self.log_path, self.port, self.pid = model, log_path, port, pid
        return self


def resolve_local_model(name_or_path: str | os.PathLike) -> Path:
    """``tiny-qwen3`` and ``smollm2-135m-instruct`` map to their cached directories; a path passes through."""
    return Path(resolve_model(str(name_or_path))).resolve()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def log_tail(path: Path, n: int = 40) -> str:
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


def _healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the server runs in its own session: its group is its own
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


@contextmanager
def exit_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit(143)`` for the block, so ``finally`` clauses (stopping the server,
    which runs in its own session and would otherwise be orphaned) still run. Only from the main thread
    and only where SIGTERM still has its default action: a handler someone installed is left alone."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def local_server(
    model_dir: str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
    log_path: str | os.PathLike | None = None,
    startup_timeout: float = 300.0,
    threads: int | None = None,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Iterator[ServerURL]:
    """Serve ``model_dir`` with ``transformers serve`` on ``host:port`` for the duration of the block.

    ``model_dir``: a local model directory, or ``tiny-qwen3`` / ``smollm2-135m-instruct``.
    ``port``: None picks a free one. ``device``: ``auto`` | ``cpu`` | ``cuda:0`` ….
    ``log_path``: None writes to a temporary file (kept, named in errors and on ``url.log_path``).
    ``threads``: sets the server's OMP/MKL thread count (None inherits the environment).
    ``extra_args``: more ``transformers serve`` flags. Without any, the server generates one request at a
    time and a 135M model takes about 1 GB; ``--continuous-batching`` is faster with many concurrent
    requests but its paged KV cache took 6-14 GB of RAM on CPU (bench/results/demo.md).
    """
    model = str(resolve_local_model(model_dir))
    if not Path(model).is_dir():
        raise FileNotFoundError(f"local_server: {model} is not a model directory")
    port = port or free_port(host)
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix=f"transformers-serve-{port}-", suffix=".log")
        os.close(fd)
        log_path = name
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)

    child_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    if threads is not None:
        child_env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [
        sys.executable, "-c", "import sys; from transformers.cli.transformers import main; sys.exit(main())",
        "serve", model, "--host", host, "--port", str(port), "--device", device, "--dtype", dtype,
        "--log-level", "warning", *extra_args,
    ]
    base = f"http://{host}:{port}"
    with exit_on_sigterm():
        with open(log_path, "ab") as log:
            log.write(f"$ transformers serve {model} --host {host} --port {port} --device {device}\n".encode())
            log.flush()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=child_env, start_new_session=True)
        try:
            deadline = time.monotonic() + startup_timeout
            while not _healthy(f"{base}/health"):
                if proc.poll() is not None:
                    raise ServerError(f"transformers serve exited with code {proc.returncode} before answering "
                                      f"(log {log_path}):\n{log_tail(log_path)}")
                if time.monotonic() > deadline:
                    raise ServerError(f"transformers serve did not answer on {base}/health within "
                                      f"{startup_timeout:.0f}s (log {log_path}):\n{log_tail(log_path)}")
                time.sleep(0.25)
            yield ServerURL(f"{base}/v1", model=model, log_path=log_path, port=port, pid=proc.pid)
        finally:
            _stop(proc)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m core.serve MODEL [--port N] [--device D]``: serve until Ctrl-C, printing the base URL."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("model", help="model directory, or tiny-qwen3 / smollm2-135m-instruct")
    ap.add_argument("--port", type=int, default=None)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    with local_server(args.model, host=args.host, port=args.port, device=args.device) as url:
        print(f"serving {url.model} at {url} (model field: {url.model!r}; log {url.log_path})", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
