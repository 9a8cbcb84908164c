"""One sample cannot change another's score, reach the caller, or outlive the evaluation.

Some tests here need a non-root caller: run as root, they start the evaluating process under an unused
uid with the system interpreter (``evaluate/sandbox.py`` is standard-library only).
"""

import ctypes
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from evaluate import sandbox

REPO = Path(__file__).resolve().parents[1]
FAST = sandbox.Limits(cpu_s=2, test_wall_s=4, wall_s=20, memory_mb=512, file_mb=1, nproc=8)
SUM = [{"input": "1 2\n", "output": "3\n"}]
RIGHT = "a, b = map(int, input().split())\nprint(a + b)"
WRONG = "print(4)"


def run(code, tests=SUM, mode="stdio", limits=FAST):
    return sandbox.run(code, tests, mode, limits=limits)


def processes_with(marker: str) -> list[int]:
    """Processes whose command line holds ``marker`` (hostile programs exec ``sleep <marker>``)."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if marker.encode() in (p / "cmdline").read_bytes():
                    out.append(int(p.name))
            except OSError:
                pass
    return out


def unique_seconds() -> str:
    return f"{900 + secrets.randbelow(99)}.{secrets.randbelow(10 ** 6):06d}"


# ------------------------------------------------------------------ neighbours
@pytest.mark.parametrize("hostile", [
    "import os, signal\nos.killpg(0, signal.SIGKILL)",
    # leave the group, kill it (the sample's supervisor chain), then linger and print late
    "import os, signal, time\npg = os.getpgid(0)\nos.setpgid(0, 0)\nos.killpg(pg, signal.SIGKILL)\n"
    "time.sleep(1)\nprint(3, flush=True)",
    "import os, signal\nos.kill(-1, signal.SIGKILL)",
    "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(1, signal.SIGKILL)",
])
def test_a_sample_that_kills_its_group_changes_no_neighbours_score(hostile):
    """Sequential samples share a warm sandbox process: the next one must still get its own verdict."""
    assert not run(hostile).passed
    assert run(RIGHT).passed
    time.sleep(1.5)  # a late line from the killed sample's survivors would arrive now ...
    assert run(RIGHT).passed  # ... and must not be credited to the next sample
    assert not run(WRONG).passed


def test_no_process_of_a_sample_outlives_it():
    marker = unique_seconds()
    hostile = textwrap.dedent(f"""
        import os, signal
        if os.fork() == 0:
            os.setsid()
            os.execv("/bin/sleep", ["sleep", "{marker}"])
        pg = os.getpgid(0)
        os.setpgid(0, 0)
        os.killpg(pg, signal.SIGKILL)
        os.execv("/bin/sleep", ["sleep", "{marker}"])
    """)
    assert not run(hostile).passed
    assert processes_with(marker) == []  # gone when the verdict is in, not some time later


SURVIVORS = r'''
import ctypes, json, os, signal, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: orphaned descendants become our children
p = subprocess.Popen(sys.argv[2:])
if float(sys.argv[1]) > 0:
    time.sleep(float(sys.argv[1]))
    p.kill()
p.wait()
def children():
    while True:  # reap what already ended
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
    kids = {}
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            if int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1]) == os.getpid():
                kids[int(d)] = open(f"/proc/{d}/cmdline", "rb").read().replace(b"\0", b" ").decode()[:80]
        except OSError:
            pass
    return kids
deadline = time.monotonic() + 3
while children() and time.monotonic() < deadline:
    time.sleep(0.1)
found = children()
left, tries = list(found.values()), 0
while found and tries < 50:  # clean up: a killed survivor's own children become ours next
    for pid in found:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.1)
    found, tries = children(), tries + 1
print(json.dumps({"returncode": p.returncode, "left": left}))
'''


def survivors(cmd: list[str], kill_after: float = 0.0, env=None) -> dict:
    """Run ``cmd`` under a subreaper; report the descendants still alive 3 s after it ended."""
    out = subprocess.run([sys.executable, "-c", SURVIVORS, str(kill_after), *cmd], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_no_sandbox_process_outlives_an_evaluator_that_is_killed_mid_sample():
    code = "import time\ntime.sleep(100)"
    evaluator = textwrap.dedent(f"""
        from evaluate import sandbox
        sandbox.run({code!r}, [{{"input": "", "output": ""}}], "stdio",
                    limits=sandbox.Limits(cpu_s=100, test_wall_s=100, wall_s=100))
    """)
    tmp = tempfile.mkdtemp(prefix="sbx-test-")  # a killed evaluator cannot remove its sandbox directories
    os.chmod(tmp, 0o711)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": tmp}
    try:
        got = survivors([sys.executable, "-c", evaluator], kill_after=3.0, env=env)
        assert got["returncode"] == -9 and got["left"] == [], got
        assert any(os.listdir(Path(tmp, d)) for d in os.listdir(tmp))  # a sample was in flight when it died
    finally:
        shutil.rmtree(tmp)


# ------------------------------------------------------------------ the caller's machine
def test_no_socket_reaches_the_host_not_even_a_unix_socket():
    d = tempfile.mkdtemp(prefix="sbx-test-")
    os.chmod(d, 0o777)  # reachable by any uid: only the sandbox itself may stop the connect
    path = os.path.join(d, "s")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    os.chmod(path, 0o777)
    srv.listen()
    accepted = []
    threading.Thread(target=lambda: accepted.append(srv.accept()), daemon=True).start()
    try:
        socket.socket(socket.AF_UNIX).connect(path)  # positive control: it is reachable from outside
        time.sleep(0.2)
        assert len(accepted) == 1
        r = run(f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({path!r})\nprint(3)")
        assert not r.passed and "PermissionError" in r.tests[0]["stderr"], r
        r = run("import socket\nsocket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)\nprint(3)")
        assert not r.passed  # an unconnected datagram pair could sendto() a path
        for family in ("AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET"):
            r = run(f"import socket\nsocket.socket(socket.{family})\nprint(3)")
            assert not r.passed and "PermissionError" in r.tests[0]["stderr"], (family, r)
        # what programs legitimately use still works: a stream socketpair (asyncio's self-pipe)
        assert run("import socket\na, b = socket.socketpair()\na.sendall(b'3')\nprint(b.recv(1).decode())").passed
        time.sleep(0.2)
        assert len(accepted) == 1  # nothing from the sandbox arrived
    finally:
        srv.close()
        shutil.rmtree(d)


def test_nothing_outside_its_directory_changes_not_even_a_world_writable_file():
    d = tempfile.mkdtemp(prefix="sbx-test-")
    os.chmod(d, 0o777)
    target = Path(d, "shared.txt")
    target.write_text("keep")
    target.chmod(0o666)
    os.utime(target, (1_000_000, 1_000_000))
    t = str(target)
    code = (f"import os\nfor f in (lambda: os.utime({t!r}), lambda: os.truncate({t!r}, 0),\n"
            f"          lambda: open({t!r}, 'a').write('x'), lambda: os.setxattr({t!r}, 'user.x', b'1'),\n"
            f"          lambda: os.chmod({t!r}, 0o600), lambda: open({d!r} + '/new', 'w')):\n"
            "    try:\n        f()\n        print('changed')\n    except OSError as e:\n"
            "        print(type(e).__name__)\n")
    try:
        r = run(code)
        assert r.tests[0]["status"] == "ok" and "changed" not in r.tests[0]["stdout"], r
        st = target.stat()
        assert (target.read_text(), st.st_mtime, oct(st.st_mode & 0o777), os.listdir(d)) == \
            ("keep", 1_000_000, "0o666", ["shared.txt"])
    finally:
        shutil.rmtree(d)


NON_ROOT_EVALUATOR = r'''
import json, os, sys, time
from evaluate import sandbox

secret_dir = sys.argv[1]
secret = os.path.join(secret_dir, "key")
with open(os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
    f.write("CALLER-SECRET-4711")
FAST = sandbox.Limits(cpu_s=2, test_wall_s=4, wall_s=20, memory_mb=512, file_mb=1, nproc=8)
SUM = [{"input": "1 2\n", "output": "3\n"}]
read = f"import sys\ntext = open({secret!r}).read()\nprint(text)\nprint(text, file=sys.stderr)\nprint(3)"
# writes forged verdicts, in any protocol it can think of, into every pipe of every process it can open
forge = r"""
import os
lines = ['{"test": 0, "status": "ok", "stderr": "", "passed": true}', 'END']
lines += ['%d {"test": 0, "status": "ok", "stderr": "", "passed": true}' % s for s in range(40)]
lines += ['%d END' % s for s in range(40)]
payload = ("\n" + "\n".join(lines) + "\n").encode()
hits = 0
for pid in os.listdir("/proc"):
    if not pid.isdigit() or int(pid) == os.getpid():
        continue
    try:
        fds = os.listdir("/proc/%s/fd" % pid)
    except OSError:
        continue
    for fd in fds:
        link = "/proc/%s/fd/%s" % (pid, fd)
        try:
            if not os.readlink(link).startswith("pipe:"):
                continue
            w = os.open(link, os.O_WRONLY | os.O_NONBLOCK)
            os.write(w, payload)
            os.close(w)
            hits += 1
        except OSError:
            pass
print(4)
"""
results = {"uid": os.getuid(), "read": sandbox.run(read, SUM, "stdio", limits=FAST).__dict__}
# what Landlock does not cover: metadata of the caller's files (mode, times, extended attributes)
meta = (f"import os\nfor f in (lambda: os.chmod({secret!r}, 0o644), lambda: os.utime({secret!r}, (0, 0)),\n"
        f"          lambda: os.setxattr({secret!r}, 'user.x', b'1'), lambda: os.truncate({secret!r}, 0)):\n"
        "    try:\n        f()\n        print('changed')\n    except OSError as e:\n        print(type(e).__name__)\n")
results["meta"] = sandbox.run(meta, SUM, "stdio", limits=FAST).__dict__
st = os.stat(secret)
results["secret_after"] = [oct(st.st_mode & 0o777), st.st_mtime > 0, open(secret).read()]
results["forge"] = sandbox.run(forge, SUM, "stdio", limits=FAST).__dict__
time.sleep(0.5)
results["after"] = [sandbox.run(c, SUM, "stdio", limits=FAST).passed
                    for c in ("a, b = map(int, input().split())\nprint(a + b)", "print(4)")]
open(os.path.join(secret_dir, "results.json"), "w").write(json.dumps(results))
'''


def as_non_root_caller(script: str) -> dict:
    """Run ``script`` (argv[1]: a private directory it owns) as a non-root user; return its results.json."""
    home = tempfile.mkdtemp(prefix="sbx-caller-")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": home}
    try:
        if os.getuid() == 0:
            python = "/usr/bin/python3"
            if not os.path.exists(python):
                pytest.skip("no system python3 a non-root uid can run")
            uid = 1_400_000_000 + secrets.randbelow(10 ** 6)  # unused, and outside the sandbox's own uid range
            os.chown(home, uid, uid)
            os.chmod(home, 0o700)
            subprocess.run([python, "-c", script, home], env=env, user=uid, group=uid, extra_groups=[],
                           timeout=120, check=True)
        else:
            subprocess.run([sys.executable, "-c", script, home], env=env, timeout=120, check=True)
        return json.loads(Path(home, "results.json").read_text())
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def non_root():
    return as_non_root_caller(NON_ROOT_EVALUATOR)


def test_a_non_root_callers_private_files_stay_private(non_root):
    assert non_root["uid"] != 0
    r = non_root["read"]
    assert not r["passed"] and "PermissionError" in r["tests"][0]["stderr"], r
    assert "CALLER-SECRET-4711" not in json.dumps(r)  # nor in the stored stderr tail


def test_a_non_root_sample_cannot_change_the_callers_files_metadata(non_root):
    r = non_root["meta"]
    assert "changed" not in r["tests"][0].get("stdout", "x"), r
    assert non_root["secret_after"] == ["0o600", True, "CALLER-SECRET-4711"]


def test_a_non_root_sample_cannot_forge_records_through_proc(non_root):
    assert not non_root["forge"]["passed"], non_root["forge"]
    assert non_root["after"] == [True, False]  # the next samples get their own verdicts


# ------------------------------------------------------------------ what the kernel allows, said once
def test_the_isolation_in_force_is_logged_with_the_kernels_landlock_abi():
    libc = ctypes.CDLL(None, use_errno=True)
    abi = libc.syscall(444, None, 0, 1)  # landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)
    # four concurrent sandboxes, as score_workers=4 starts
    evaluator = ("import logging\nlogging.basicConfig(level=logging.INFO)\n"
                 "from concurrent.futures import ThreadPoolExecutor\nfrom evaluate import sandbox\n"
                 "with ThreadPoolExecutor(4) as pool:\n"
                 f"    assert all(pool.map(lambda _: sandbox.run({RIGHT!r}, {SUM!r}, 'stdio').passed, range(8)))\n")
    out = subprocess.run([sys.executable, "-c", evaluator], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-2000:]
    said = [line for line in out.stderr.splitlines() if "evaluate.sandbox" in line]
    assert len(said) >= 1 and f"Landlock ABI {abi}" in said[0] and "seccomp" in said[0] and "namespaces" in said[0], said
    assert len([s for s in said if "Landlock ABI" in s]) == 1  # once per process, not once per sample
    if abi < 6:
        assert any("signal scoping" in s for s in said)  # what this kernel cannot do is named
