"""The code sandbox contains what model-written programs may do; each ends as a failed sample."""

import os
import secrets
import socket
import threading
import time
from pathlib import Path

import pytest

from evaluate import sandbox

FAST = sandbox.Limits(cpu_s=1, test_wall_s=2, wall_s=10, memory_mb=512, file_mb=1, nproc=8)
ONE_TEST = [{"input": "1 2\n", "output": "3\n"}]


def run(code, tests=ONE_TEST, mode="stdio", limits=FAST):
    t = time.time()
    r = sandbox.run(code, tests, mode, limits=limits)
    return r, time.time() - t


def test_a_correct_program_passes():
    r, _ = run("a, b = map(int, input().split())\nprint(a + b)")
    assert r.passed and r.status == "passed"


def test_infinite_loop_is_stopped():
    r, secs = run("while True:\n    pass")
    assert not r.passed and r.tests[0]["status"] in ("timeout", "cpu_limit") and secs < 8


def test_fork_bomb_is_contained_and_cleaned_up():
    marker = f"{900 + secrets.randbelow(99)}.{secrets.randbelow(10 ** 6):06d}"
    # every process forks until the process limit says no, then becomes `sleep <marker>`
    code = ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n"
            f"        os.execv('/bin/sleep', ['sleep', '{marker}'])")
    r, secs = run(code)
    assert not r.passed and secs < 8
    left = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and marker.encode() in (p / "cmdline").read_bytes():
                left.append(p.name)
        except OSError:
            pass
    assert left == []  # the sample's processes are gone when its verdict is in


def test_huge_allocation_fails_inside_the_sandbox():
    r, _ = run("x = bytearray(10 * 1024 ** 3)\nprint(3)")
    assert not r.passed and "MemoryError" in r.tests[0]["stderr"]


def test_network_connect_is_blocked():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: accepted.append(srv.accept()), daemon=True).start()
    code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint(3)"
    # positive control: the same code connects when run by the evaluator itself
    socket.create_connection(("127.0.0.1", port), timeout=1).close()
    time.sleep(0.2)
    assert len(accepted) == 1
    r, _ = run(code)
    assert not r.passed and "PermissionError" in r.tests[0]["stderr"]  # seccomp: no socket() at all
    time.sleep(0.2)
    assert len(accepted) == 1  # nothing from the sandbox arrived
    srv.close()


def test_writing_outside_its_directory_is_refused(tmp_path):
    target = tmp_path / "escape.txt"
    os.chmod(tmp_path, 0o777)  # even a world-writable directory is out of reach
    r, _ = run(f"open({str(target)!r}, 'w').write('x')\nprint(3)")
    assert not r.passed and "PermissionError" in r.tests[0]["stderr"]
    assert not target.exists()
    r, _ = run("open('inside.txt', 'w').write('x')\nprint(open('inside.txt').read() and 3)")
    assert r.passed  # its own throw-away directory is writable


def test_large_file_write_is_capped():
    r, _ = run("open('big.bin', 'wb').write(b'0' * (8 * 1024 * 1024))\nprint(3)")
    assert not r.passed


def test_a_hostile_sample_is_one_failed_record(tmp_path):
    """Through a task's score(): the evaluator keeps going and records a failure."""
    from test_evaluate_scoring import benchmark

    from omegaconf import OmegaConf

    cfg, module, examples = benchmark("livecodebench", "fixture")
    cfg = OmegaConf.merge(cfg, {"sandbox": {"cpu_s": 1, "test_wall_s": 2, "wall_s": 10}})
    ex = examples["fixture_abc_a"]
    verdicts = [module.score(ex, ["```python\nimport os\nos.system('echo hi')\nwhile True: pass\n```"], cfg),
                module.score(ex, ["```python\na, b = map(int, input().split())\nprint(a + b)\n```"], cfg)]
    assert [v.score for v in verdicts] == [0.0, 1.0]


def test_functional_mode():
    code = "class Solution:\n    def add(self, a, b):\n        return a + b\n"
    r = sandbox.run(code, [{"input": "1\n2", "output": "3"}, {"input": "[1]\n[2]", "output": "[1, 2]"}],
                    "functional", fn_name="add", limits=FAST)
    assert r.passed and len(r.tests) == 2


@pytest.mark.parametrize("got,want,same", [("3\n", "3", True), ("1 2 \n", "1 2", True), ("0.50\n", "0.5", True),
                                           ("3\n4", "3", False), ("abc", "abd", False)])
def test_output_comparison(got, want, same):
    r = sandbox.run(f"print({got!r}, end='')", [{"input": "", "output": want}], "stdio", limits=FAST)
    assert r.passed is same


def test_refuses_to_run_unconfined_when_the_kernel_says_no(monkeypatch):
    # Landlock's syscall number replaced by an invalid one: the confinement step fails, nothing runs.
    monkeypatch.setattr(sandbox, "HARNESS", sandbox.HARNESS.replace("libc.syscall(444, None, 0, 1)", "-1"))
    monkeypatch.setattr(sandbox, "_idle", [])
    with pytest.raises(sandbox.SandboxUnavailable, match="Landlock"):
        sandbox.run("print(3)", [{"input": "", "output": "3"}], "stdio", limits=FAST)
    sandbox.shutdown()
