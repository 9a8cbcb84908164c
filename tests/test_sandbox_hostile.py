"""Black box: hostile completions through ``python -m evaluate`` (HumanEval, ``all.source=local``).

A stdlib OpenAI-compatible server plays the model: one completion per sample of HumanEval/0, right ones
between hostile ones. Every hostile sample scores 0, every right neighbour scores 1 (they are scored
concurrently, ``score_workers`` at a time), nothing the sandbox started outlives the evaluation, no
connection reaches the host and no file of the caller ends up in the results.
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from core import jsonl
from json_server import JsonServer, chat_completion
from test_sandbox_isolation import SURVIVORS

REPO = Path(__file__).resolve().parents[1]

HEAD = "from typing import List\n\n\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
RIGHT_BODY = "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"
RIGHT = HEAD + RIGHT_BODY
WRONG = HEAD + "    return False\n"


def hostile_completions(unix_path: str, tcp_port: int, secrets_: list[str], marker: str) -> list[tuple[str, str, float]]:
    """(name, program, expected score): right programs between hostile ones."""
    gated = lambda probe: HEAD + f"    {probe}\n" + RIGHT_BODY  # noqa: E731  (right only if the probe succeeds)
    return [
        ("right", RIGHT, 1.0),
        ("sys.exit(0)", WRONG + "import sys\nsys.exit(0)\n", 0.0),
        ("right, __main__ block exits", RIGHT + "if __name__ == '__main__':\n    import sys\n    sys.exit(0)\n", 1.0),
        ("os._exit(0)", WRONG + "import os\nos._exit(0)\n", 0.0),
        ("__main__ exit, wrong", WRONG + "if __name__ == '__main__':\n    import os\n    os._exit(0)\n", 0.0),
        ("stderr closed", WRONG + "import sys\nsys.stderr.close()\n", 0.0),
        ("right", RIGHT, 1.0),
        ("killpg(0)", WRONG + "import os, signal\nos.killpg(0, signal.SIGKILL)\n", 0.0),
        ("kill(-1)", WRONG + "import os, signal\nos.kill(-1, signal.SIGKILL)\n", 0.0),
        ("daemon + kill the group", WRONG + "import os, signal\nif os.fork() == 0:\n    os.setsid()\n"
         f"    os.execv('/bin/sleep', ['sleep', '{marker}'])\npg = os.getpgid(0)\nos.setpgid(0, 0)\n"
         f"os.killpg(pg, signal.SIGKILL)\nos.execv('/bin/sleep', ['sleep', '{marker}'])\n", 0.0),
        ("right", RIGHT, 1.0),
        ("unix socket", gated(f"import socket; socket.socket(socket.AF_UNIX).connect({unix_path!r})"), 0.0),
        ("tcp to the host", gated(f"import socket; socket.create_connection(('127.0.0.1', {tcp_port}), 1)"), 0.0),
        ("abstract unix socket", gated("import socket; socket.socket(socket.AF_UNIX).connect('\\0jaen-sbx-test')"), 0.0),
        ("right", RIGHT, 1.0),
        *[(f"read {p}", gated(f"import sys; t = open({p!r}).read(); print(t); print(t, file=sys.stderr)"), 0.0)
          for p in secrets_],
        ("huge output", WRONG + "import sys\nfor _ in range(200):\n    print('x' * 10 ** 6)\n"
         "    print('y' * 10 ** 6, file=sys.stderr)\n", 0.0),
        ("forged records through /proc", WRONG + FORGE, 0.0),
        ("fork bomb", WRONG + "import os\nfor _ in range(10 ** 5):\n    try:\n        os.fork()\n"
         "    except OSError:\n        pass\n", 0.0),
        ("right", RIGHT, 1.0),
    ]


FORGE = r'''
import os
lines = ['{"test": 0, "status": "ok", "stderr": "", "passed": true}', 'END']
lines += ['%d {"test": 0, "status": "ok", "stderr": "", "passed": true}' % s for s in range(100)]
lines += ['%d END' % s for s in range(100)]
payload = ("\n" + "\n".join(lines) + "\n").encode()
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        fds = os.listdir("/proc/%s/fd" % pid)
    except OSError:
        continue
    for fd in fds:
        try:
            w = os.open("/proc/%s/fd/%s" % (pid, fd), os.O_WRONLY | os.O_NONBLOCK)
            os.write(w, payload)
            os.close(w)
        except OSError:
            pass
'''


@pytest.mark.slow
def test_hostile_completions_score_zero_and_leave_neighbours_alone(tmp_path):
    # what a sample could reach on the host: a unix socket and a TCP port anyone may connect to,
    # a file only the caller may read, and a world-readable file outside the sandbox
    shared = tempfile.mkdtemp(prefix="sbx-host-")
    os.chmod(shared, 0o755)
    unix_path = os.path.join(shared, "s")
    unix, tcp = socket.socket(socket.AF_UNIX), socket.socket()
    unix.bind(unix_path)
    os.chmod(shared, 0o777)
    os.chmod(unix_path, 0o777)
    tcp.bind(("127.0.0.1", 0))
    accepted = []
    for srv in (unix, tcp):
        srv.listen()
        threading.Thread(target=lambda s=srv: accepted.append(s.accept()), daemon=True).start()
    private, public = tmp_path / "private.key", Path(shared) / "public.txt"
    private.write_text("PRIVATE-SECRET-0600")
    private.chmod(0o600)
    public.write_text("PUBLIC-FILE-0644")
    public.chmod(0o644)
    marker = f"{900 + secrets.randbelow(99)}.{secrets.randbelow(10 ** 6):06d}"
    script = hostile_completions(unix_path, tcp.getsockname()[1], [str(private), str(public)], marker)

    programs = [program for _, program, _ in script]  # the backend runs one request at a time: the next one each
    server = JsonServer(lambda path, body: (200, chat_completion(f"```python\n{programs.pop(0)}```")))
    cmd = [sys.executable, "-m", "evaluate", "model=tiny_qwen3", "benchmark=[humaneval]", "all.source=local",
           "benchmark.humaneval.limit=1", f"benchmark.humaneval.n={len(script)}", "logger=none",
           f"paths.root={tmp_path}", "run_name=hostile", "backend.name=openai",
           f"backend.base_url={server.url}", "backend.served_model=scripted",
           "backend.concurrency=1", "backend.max_retries=0", "policy.forced.enabled=false",  # chat endpoint only
           "benchmark.humaneval.sandbox.test_wall_s=5", "benchmark.humaneval.sandbox.wall_s=10"]
    try:
        got = survivors_of(cmd)
    finally:
        server.close()
        unix.close()
        tcp.close()
        shutil.rmtree(shared)

    assert got["returncode"] == 0, got
    out = tmp_path / "runs" / "eval" / "hostile" / "humaneval" / "samples.jsonl"
    records = {r["sample"]: r for r in jsonl.read(out)}
    scores = {f"{k} {name}": records[k]["score"] for k, (name, _, _) in enumerate(script)}
    assert scores == {f"{k} {name}": want for k, (name, _, want) in enumerate(script)}
    assert got["left"] == [], got  # no sandbox process outlives `python -m evaluate`
    assert accepted == []  # no connection from a sample reached the host
    stored = out.read_text()
    assert "PRIVATE-SECRET-0600" not in stored and "PUBLIC-FILE-0644" not in stored
    assert max(len(line) for line in stored.splitlines()) < 64_000  # huge output is not stored


def survivors_of(cmd: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", SURVIVORS, "0", *cmd], capture_output=True, text=True,
                         timeout=600, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    got["stderr"] = out.stderr[-3000:]
    return got
