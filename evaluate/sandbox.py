"""Run model-written Python in a sandbox: one separate, confined process per sample.

A *zygote* — a warm, standard-library-only interpreter (``python -I -B -S``) — is started once per
scoring thread. It makes itself non-dumpable (inherited by every fork: no other process of its uid can
open its ``/proc/<pid>/fd`` or memory), drops to its own unused unprivileged uid when the evaluator is
root, and enters new user, network (no interface), IPC, PID (it is PID 1) and mount namespaces; in the
latter ``/proc`` is an empty tmpfs and every mount is read-only except the directory that holds the
samples' directories. For each sample it forks a *supervisor* that confines itself before any
untrusted code runs (ctypes in the single-threaded child, never in the evaluator):

- no new privileges, no capabilities;
- Landlock: reads and execution only beneath the interpreter's and the system's directories
  (``/usr``, ``/lib*``, ``/bin``, ``/sbin``, ``/etc``) and a few devices; writes only beneath the sample's
  throw-away directory; TCP bind/connect refused (ABI >= 4); signals and abstract unix sockets scoped
  to the sample (ABI >= 6);
- seccomp: ``socket()`` and ``connect()`` of every family (so no path-based unix socket either),
  io_uring and the kernel keyrings fail with EPERM; ``socketpair`` only as a connected unix stream pair.

Each test runs in a further forked process (its own process group) under ``setrlimit`` (CPU seconds,
address space, file size, process count, no core files) and a wall-clock timeout; when it ends, the
supervisor (a child subreaper) kills and reaps every process the test left. The verdict cannot be
forged by ending the process: a test passes only when the harness, after the program (and in
functional mode the call) returned, wrote the per-test random token the supervisor generated — any
other exit, 0 included, fails. Expected outputs are out of the program's reach: the supervisor reads
each from a file in a read-only directory Landlock keeps tests out of, through a descriptor the test
process closes, after the test ended. Every line to the evaluator carries the sample's sequence number; strays are
discarded. Before the zygote returns a verdict it kills and reaps everything of the sample (the
sample's wall-clock limit is enforced there too); when the evaluator dies, the zygote sees its stdin
close and exits, and as PID 1 its death ends every process of its namespace.

Forking from the zygote instead of starting an interpreter per sample is what makes ≥ 50 samples/s on
2 cores possible (bench/bench_scoring.py). What the kernel enforces is logged once per process; if it
refuses a namespace, Landlock or seccomp, :class:`SandboxUnavailable` stops the evaluation with the
fix (fail closed). What remains open is listed in docs/evaluate.md. Hand-written because no
maintained Python library offers process isolation without root daemons (bubblewrap and nsjail are
not installable from pip), and the sandbox interpreter must see only the standard library (the
Landlock and libseccomp bindings on PyPI are pre-releases or unmaintained, and would have to be
importable inside); the per-test comparison follows LiveCodeBench's (line-wise, whitespace-stripped,
numeric tokens compared as numbers).

Three modes:
- ``script``: run the program (``__name__ == "solution"``); it passes when it ran to its end
  (HumanEval: solution + tests + ``check()``). ``SystemExit`` is a failure, as in HumanEval's harness.
- ``stdio``: run the program as ``__main__`` once per test with the test's input on stdin; compare
  stdout. ``exit()`` / ``sys.exit(0)`` is a normal end (competitive programs print and exit).
- ``functional``: LeetCode-style ``class Solution`` — call ``Solution().<fn_name>(*args)`` with each
  test's JSON arguments (one per line) and compare the JSON result.
Tests stop at the first failure (as LiveCodeBench does): the verdict only needs "all pass".
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import logging
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# The harness runs inside the sandboxed interpreter. It must only use the standard library.
HARNESS = r'''
import builtins, ctypes, json, os, platform, resource, select, signal, sys, sysconfig, traceback

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p)
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER = 0x20000, 0x8000000, 0x10000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
PR_SET_DUMPABLE, PR_SET_SECCOMP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 4, 22, 36, 38
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND = 2, 4, 8, 4096
# Syscalls the seccomp filter refuses, per architecture: (AUDIT_ARCH, {name: number}).
SECCOMP = {
    "x86_64": (0xC000003E, {"socket": 41, "connect": 42, "socketpair": 53, "add_key": 248, "request_key": 249,
                            "keyctl": 250, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427}),
    "aarch64": (0xC00000B7, {"socket": 198, "connect": 203, "socketpair": 199, "add_key": 217, "request_key": 218,
                             "keyctl": 219, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427}),
}
# Readable (and executable) inside: the interpreter, its standard library, the system's directories.
paths = sysconfig.get_paths()
READ = sorted({os.path.realpath(p) for p in ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc",
               paths["stdlib"], paths["platstdlib"], sysconfig.get_config_var("LIBDIR") or "/usr/lib",
               sys.executable) if os.path.exists(p)})
spec = L = SEQ = None  # per sample: SEQ in the zygote, spec and its limits L in the supervisor


def failed(what):
    e = ctypes.get_errno()
    return "%s failed: %s (errno %d)" % (what, os.strerror(e), e)


def say(obj):
    """One line to the evaluator, tagged with this sample's sequence number."""
    print(SEQ, obj if isinstance(obj, str) else json.dumps(obj), flush=True)


# ------------------------------------------------------------------ confinement (built once per zygote, applied per sample)
class Beneath(ctypes.Structure):  # struct landlock_path_beneath_attr
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("fd", ctypes.c_int32)]


class Insn(ctypes.Structure):  # struct sock_filter
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class Prog(ctypes.Structure):  # struct sock_fprog
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Insn))]


class MountAttr(ctypes.Structure):  # struct mount_attr
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64)]


class CapHeader(ctypes.Structure):  # struct __user_cap_header_struct
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


def landlock_rules(abi):
    """(handled fs rights, rights for the sample's directory, [(O_PATH fd, rights)] of what else it may use)."""
    fs = (1 << 13) - 1  # ABI 1: execute, write_file, read_file, read_dir, remove_*, make_*
    # refer (ABI 2), truncate (ABI 3), ioctl_dev (ABI 5)
    fs |= (1 << 13 if abi >= 2 else 0) | (1 << 14 if abi >= 3 else 0) | (1 << 15 if abi >= 5 else 0)
    EXECUTE, WRITE, READ_FILE, READ_DIR = 1, 2, 4, 8
    rules = [(p, EXECUTE | READ_FILE | (READ_DIR if os.path.isdir(p) else 0)) for p in READ]
    rules += [("/dev/null", READ_FILE | WRITE | (1 << 14 if abi >= 3 else 0)), ("/dev/zero", READ_FILE),
              ("/dev/urandom", READ_FILE), ("/dev/random", READ_FILE)]
    return fs, [(os.open(path, os.O_PATH | os.O_CLOEXEC), rights) for path, rights in rules]


def landlock(workdir):
    fs, rules = LANDLOCK
    net = 3 if LANDLOCK_ABI >= 4 else 0  # bind_tcp | connect_tcp: no rule allows either
    scoped = 3 if LANDLOCK_ABI >= 6 else 0  # abstract unix sockets | signals, towards processes outside the sample
    attr = (ctypes.c_uint64 * 3)(fs, net, scoped)
    rs = libc.syscall(444, attr, 8 if LANDLOCK_ABI < 4 else 16 if LANDLOCK_ABI < 6 else 24, 0)  # create_ruleset
    if rs < 0:
        return failed("landlock_create_ruleset")
    for fd, rights in rules + [(os.open(workdir, os.O_PATH | os.O_CLOEXEC), fs)]:
        if libc.syscall(445, rs, 1, ctypes.byref(Beneath(rights, fd)), 0) != 0:  # landlock_add_rule
            return failed("landlock_add_rule")
    if libc.syscall(446, rs, 0) != 0:  # landlock_restrict_self
        return failed("landlock_restrict_self")


def seccomp_program():
    """BPF: another architecture is killed; the listed syscalls fail with EPERM; socketpair only as AF_UNIX stream."""
    arch, nr = SECCOMP[platform.machine()]
    LD, JEQ, JGE, AND, RET = 0x20, 0x15, 0x35, 0x54, 0x06
    body = [(LD, 4, 0, 0), (JEQ, arch, 1, 0), (RET, 0x80000000, 0, 0), (LD, 0, 0, 0)]  # arch ok, else KILL_PROCESS
    if platform.machine() == "x86_64":
        body.append((JGE, 0x40000000, "deny", 0))  # the x32 ABI's numbers
    for name in ("socket", "connect", "io_uring_setup", "io_uring_enter", "io_uring_register", "add_key",
                 "request_key", "keyctl"):
        body.append((JEQ, nr[name], "deny", 0))
    body += [(JEQ, nr["socketpair"], 0, "allow"), (LD, 16, 0, 0), (JEQ, 1, 0, "deny"),  # args[0] == AF_UNIX
             (LD, 24, 0, 0), (AND, 0xF, 0, 0), (JEQ, 1, "allow", "deny")]  # args[1] & type mask == SOCK_STREAM
    end = {"allow": len(body), "deny": len(body) + 1}
    rel = lambda i, t: end[t] - i - 1 if isinstance(t, str) else t
    insns = [Insn(code, rel(i, jt), rel(i, jf), k) for i, (code, k, jt, jf) in enumerate(body)]
    insns += [Insn(RET, 0, 0, 0x7FFF0000), Insn(RET, 0, 0, 0x00050000 | 1)]  # ALLOW, ERRNO(EPERM)
    return Prog(len(insns), (Insn * len(insns))(*insns))


def confine(workdir):
    """No new privileges, Landlock, seccomp, no capabilities: inherited by every test process."""
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return failed("no_new_privs")
    err = landlock(workdir)
    if err:
        return err
    if libc.prctl(PR_SET_SECCOMP, 2, ctypes.byref(SECCOMP_PROG), 0, 0) != 0:  # SECCOMP_MODE_FILTER
        return failed("seccomp")
    if libc.capset(ctypes.byref(CapHeader(0x20080522, 0)), (ctypes.c_uint32 * 6)()) != 0:  # _LINUX_CAPABILITY_VERSION_3
        return failed("capset")


# ------------------------------------------------------------------ one test (a process of its own)
def limit_self():
    mb = 1024 * 1024
    resource.setrlimit(resource.RLIMIT_CPU, (L["cpu_s"], L["cpu_s"] + 1))
    resource.setrlimit(resource.RLIMIT_AS, (L["memory_mb"] * mb, L["memory_mb"] * mb))
    resource.setrlimit(resource.RLIMIT_FSIZE, (L["file_mb"] * mb, L["file_mb"] * mb))
    resource.setrlimit(resource.RLIMIT_NPROC, (L["nproc"], L["nproc"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_program(test):
    """Run the program (and the call); return its result. Raises when it did not run to its end."""
    mode = spec["mode"]
    g = {"__name__": "__main__" if mode == "stdio" else "solution", "__builtins__": builtins}
    try:
        exec(compile(spec["code"], "solution.py", "exec"), g)
    except SystemExit as e:
        if mode != "stdio" or e.code not in (None, 0):
            raise
    if mode == "functional":
        args = [json.loads(a) for a in test["input"].split("\n") if a.strip()]
        cls = g.get("Solution")
        return (getattr(cls(), spec["fn_name"]) if cls else g[spec["fn_name"]])(*args)
    return None


def test_process(test, token, report):
    """Never returns: exits 0 only after writing the token, which only a program that ran to its end reaches."""
    exit_ = os._exit
    try:
        os.setpgid(0, 0)  # killpg(0) reaches this test only
        os.dup2(os.open("in.txt", os.O_RDONLY), 0)
        os.dup2(os.open("out.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
        os.dup2(os.open("err.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
        os.closerange(3, 1 << 16)  # the expected outputs' descriptor among them (the evaluator's pipe was fd 1)
        limit_self()
        result = run_program(test)
        sys.stdout.flush()
        with open(report, "x") as f:
            json.dump({"token": token, "result": result}, f)
        exit_(0)
    except BaseException:
        try:
            traceback.print_exc()
            sys.stderr.flush()
        except BaseException:
            pass
    finally:
        exit_(1)


# ------------------------------------------------------------------ the supervisor: one per sample
def kill_the_rest():
    """Every process of the namespace this one may signal (PID 1 and the caller excepted), then reap them."""
    while True:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            return
        try:
            while True:
                os.waitpid(-1, 0)
        except ChildProcessError:
            pass


def run_test(i, test, expected_fd):
    token, report = os.urandom(16).hex(), "report-%d.json" % i
    with open("in.txt", "w") as f:
        f.write(test["input"])
    if os.path.lexists(report):
        os.unlink(report)
    pid = os.fork()
    if pid == 0:
        test_process(test, token, report)

    def on_alarm(*_):
        raise TimeoutError
    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, L["test_wall_s"])
    try:
        _, code = os.waitpid(pid, 0)
        signal.setitimer(signal.ITIMER_REAL, 0)
    except TimeoutError:
        code = None
    kill_the_rest()
    out = open("out.txt", errors="replace").read(1 << 22) if os.path.exists("out.txt") else ""
    err = open("err.txt", errors="replace").read()[-500:] if os.path.exists("err.txt") else ""
    try:
        with open(report) as f:
            rep = json.loads(f.read(L["file_mb"] << 20))
        ended = isinstance(rep, dict) and rep.get("token") == token
    except (OSError, ValueError):
        ended = False
    if code is None:
        status = "timeout"
    elif os.WIFSIGNALED(code):
        sig = os.WTERMSIG(code)
        status = {signal.SIGXCPU: "cpu_limit", signal.SIGXFSZ: "file_limit"}.get(sig, "signal %d" % sig)
    elif os.WEXITSTATUS(code) != 0:
        status = "exit %d" % os.WEXITSTATUS(code)
    elif not ended:
        status = "exit 0 before its end"
    else:
        status = "ok"
    rec = {"test": i, "status": status, "stderr": err}
    rec["passed"] = status == "ok"
    if status == "ok" and spec["mode"] != "script":
        offset, length = spec["expected"][i]
        want = os.pread(expected_fd, length, offset).decode()
        if spec["mode"] == "stdio":
            rec["stdout"] = out[:200]
            rec["passed"] = same_output(out, want)
        else:
            rec["stdout"] = json.dumps(rep["result"])[:200]
            rec["passed"] = same_value(rep["result"], json.loads(want))
    return rec


def same_output(got, want):
    g = [l.strip() for l in got.strip().splitlines()]
    w = [l.strip() for l in want.strip().splitlines()]
    if g == w:
        return True
    if len(g) != len(w):
        return False
    from decimal import Decimal, InvalidOperation
    for a, b in zip(g, w):
        ta, tb = a.split(), b.split()
        if len(ta) != len(tb):
            return False
        for x, y in zip(ta, tb):
            if x == y:
                continue
            try:
                if Decimal(x) != Decimal(y):
                    return False
            except InvalidOperation:
                return False
    return True


def same_value(a, b):
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        try:
            return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(b)))
        except (TypeError, ValueError):
            return False
    return a == b


def supervisor(workdir, expected):
    """One sample: confine, then run each test in a process of its own until one fails."""
    global spec, L
    try:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # what a test leaves behind is ours to kill and reap
        os.dup2(os.open("/dev/null", os.O_RDONLY), 0)  # not the zygote's request pipe
        os.chdir(workdir)
        with open("spec.json") as f:
            spec = json.load(f)
        L = spec["limits"]
        expected_fd = os.open(expected, os.O_RDONLY | os.O_CLOEXEC)
        err = confine(workdir)
        if err:
            say({"sandbox_error": err})
            os._exit(3)
        for i, test in enumerate(spec["tests"]):
            rec = run_test(i, test, expected_fd)
            say(rec)
            if not rec["passed"]:
                break
    finally:
        os._exit(0)


# ------------------------------------------------------------------ the zygote
# Modules that solutions commonly import are loaded once here, so each forked test finds them loaded.
import bisect, collections, copy, datetime, decimal, fractions, functools, heapq, io, itertools, math
import operator, random, re, statistics, string, typing
builtins.exit = builtins.quit = sys.exit  # what `site` would add (the interpreter runs with -S)
caller_root = os.getuid() == 0
if caller_root:
    # root is exempt from RLIMIT_NPROC in every namespace: become this zygote's own unprivileged uid
    uid = int(sys.argv[2])
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
# Non-dumpable, inherited by every fork: /proc/<pid>/{fd,mem,environ} of sandbox processes stay closed to code
# under the same uid (and ptrace, process_vm_*, pidfd_getfd with them).
libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
LANDLOCK_ABI = libc.syscall(444, None, 0, 1)  # landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)
# Once per zygote: a user namespace (capabilities only over what it owns; RLIMIT_NPROC applies), a network
# namespace with no usable interface, an IPC namespace, a PID namespace and a mount namespace in which /proc
# is an empty tmpfs (no process of the machine, the evaluator's included, is visible) and every mount is
# read-only (no chmod, chown, utime, xattr or write outside) but the evaluator's directory for this zygote.
BASE = sys.argv[1].encode()
error = None
if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWNS | CLONE_NEWPID) != 0:
    error = failed("unshare(user|net|ipc|mount|pid)")
elif libc.mount(b"none", b"/proc", b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, b"size=4k") != 0:
    error = failed("mount(tmpfs on /proc)")
# mount_setattr(AT_FDCWD, "/", AT_RECURSIVE, {set: MOUNT_ATTR_RDONLY})
elif libc.syscall(442, -100, b"/", 0x8000, ctypes.byref(MountAttr(1, 0, 0, 0)), 32) != 0:
    error = failed("mount_setattr(/, read-only)")
elif (libc.mount(BASE, BASE, None, MS_BIND, None) != 0  # a mount of its own, then writable again
      or libc.syscall(442, -100, BASE, 0, ctypes.byref(MountAttr(0, 1, 0, 0)), 32) != 0):
    error = failed("mount(bind %s, writable)" % sys.argv[1])
elif LANDLOCK_ABI < 1:
    error = "Landlock unavailable: " + failed("landlock_create_ruleset")
elif not hasattr(os, "pidfd_open"):
    error = "the sandbox interpreter %s lacks os.pidfd_open (Python >= 3.9 on Linux >= 5.3)" % sys.executable
elif platform.machine() not in SECCOMP:
    error = "no seccomp filter for the %s architecture (x86_64, aarch64)" % platform.machine()
else:
    LANDLOCK, SECCOMP_PROG = landlock_rules(LANDLOCK_ABI), seccomp_program()
    child = os.fork()  # the zygote proper: PID 1 of the new PID namespace, where every sample runs
    if child != 0:
        os.waitpid(child, 0)
        os._exit(0)
    # As PID 1 it gets no signal from inside its namespace that it has no handler for; when it dies, the
    # kernel kills every process of the namespace.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
SEQ = 0
say("READY " + json.dumps({"caller_root": caller_root, "landlock_abi": LANDLOCK_ABI,
                           "arch": platform.machine(), "error": error}))
while not error:
    line = sys.stdin.readline()
    if not line:
        break
    SEQ, workdir, expected, wall_s = json.loads(line)
    sup = os.fork()
    if sup == 0:
        supervisor(workdir, expected)
    pidfd = os.pidfd_open(sup)
    ready = select.select([pidfd, sys.stdin], [], [], wall_s)[0]
    if sys.stdin in ready:
        break  # the evaluator is gone: our exit ends every process of the namespace
    if not ready:
        say("TIMEOUT")
    os.close(pidfd)
    kill_the_rest()  # the supervisor (done, or killed by its tests, or out of time) and whatever is left
    print("\n%d END" % SEQ, flush=True)  # the newline ends a line a killed supervisor left half-written
os._exit(0)
'''


class SandboxUnavailable(RuntimeError):
    """The kernel refused a namespace, Landlock or seccomp: no code is run unconfined (fail closed)."""


@dataclass
class Limits:
    cpu_s: int = 10  # CPU seconds per test process
    test_wall_s: float = 10.0  # wall seconds per test
    wall_s: float = 60.0  # wall seconds for the whole sample (all its tests)
    memory_mb: int = 2048  # address space per process
    file_mb: int = 16  # largest file a process may write
    nproc: int = 16  # processes of the sandbox in its user namespace (its zygote's two and the supervisor included)


@dataclass
class Result:
    passed: bool
    status: str  # passed | failed | timeout | sandbox_error | no_tests
    tests: list[dict] = field(default_factory=list)  # per test: status, passed, stderr tail
    n_tests: int = 0


def python_executable() -> str:
    """An interpreter the sandbox's unprivileged uid can run: ours if world-readable, else the system one."""
    exe = os.path.realpath(sys.executable)
    if os.getuid() != 0 or _world_accessible(exe):
        return exe
    for cand in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(cand) and _world_accessible(os.path.realpath(cand)):
            return cand
    raise RuntimeError("no interpreter readable by an unprivileged uid for the code sandbox; install python3 in /usr/bin")


def _world_accessible(path: str) -> bool:
    parts = os.path.abspath(path).split(os.sep)
    for i in range(2, len(parts)):
        if not os.stat(os.sep.join(parts[:i])).st_mode & 0o001:
            return False
    return bool(os.stat(path).st_mode & 0o005)


def _unavailable(why: str) -> SandboxUnavailable:
    return SandboxUnavailable(
        f"the code sandbox cannot confine programs here: {why}. It needs Linux >= 5.13 on x86_64 or aarch64 with "
        "unprivileged user namespaces (sysctl user.max_user_namespaces > 0, and on Debian/Ubuntu "
        "kernel.unprivileged_userns_clone=1 / kernel.apparmor_restrict_unprivileged_userns=0), Landlock "
        "(lsm= includes landlock) and seccomp filters. Refusing to run model-written code unconfined."
    )


_stated: set[str] = set()


def _state(ready: dict) -> None:
    """Log, once per process, what the kernel lets the sandbox enforce and what it does not."""
    abi = ready["landlock_abi"]
    who = ("an unused uid per sandbox (the evaluator is root)" if ready["caller_root"] else
           "the caller's uid (not root: its files are kept out by Landlock and read-only mounts, not by the uid)")
    said = (f"code sandbox: {who}; user, network, IPC, PID and mount namespaces (an empty /proc, every "
            "mount read-only but the samples' directories); "
            f"Landlock ABI {abi} (reads: interpreter and system directories; writes: the sample's directory"
            f"{'; TCP bind/connect refused' if abi >= 4 else ''}"
            f"{'; signals and abstract unix sockets scoped' if abi >= 6 else ''}); "
            f"seccomp on {ready['arch']} (no socket(), connect(), io_uring, keyrings); no new privileges, "
            "no capabilities, non-dumpable; rlimits per test")
    missing = [what for need, what in (
        (3, "Landlock truncate rights (ABI 3): truncate() stays confined by the read-only mounts"),
        (4, "Landlock TCP rules (ABI 4): TCP stays closed by the network namespace and seccomp"),
        (6, "Landlock signal scoping (ABI 6): signals stay confined by the PID namespace"),
    ) if abi < need]
    with _idle_lock:
        if said in _stated:
            return
        _stated.add(said)
    log.info(said)
    for what in missing:
        log.warning("code sandbox: this kernel lacks %s", what)


class _Zygote:
    """A warm sandbox interpreter (own unprivileged uid) that forks one confined process per sample."""

    def __init__(self):
        self.uid = _sandbox_uid()
        self.base = tempfile.mkdtemp(prefix="sbx-")  # the samples' directories: the one place writable inside
        self.hidden = tempfile.mkdtemp(prefix="sbx-")  # their expected outputs: read-only inside, read by no test
        if os.getuid() == 0:
            os.chmod(self.base, 0o711)
            os.chmod(self.hidden, 0o711)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8", "HOME": "/nonexistent"}
        try:
            self.proc = subprocess.Popen(
                [python_executable(), "-I", "-B", "-S", "-c", HARNESS, self.base, str(self.uid)],
                cwd="/",
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except (OSError, RuntimeError):
            self._remove_dirs()
            raise
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)
        self.buf = b""
        self.seq = itertools.count(1)
        try:
            lines = self._read_until(0, "READY", time.monotonic() + 60)
        except (OSError, RuntimeError):
            self.close()
            raise
        self.ready = json.loads(lines[-1][len("READY "):])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _read_until(self, seq: int, last: str, deadline: float) -> list[str]:
        """Lines tagged ``seq`` up to the one starting with ``last``; lines of any other sample are discarded."""
        lines = []
        while True:
            while b"\n" in self.buf:
                raw, self.buf = self.buf.split(b"\n", 1)
                tag, _, line = raw.decode("utf-8", "replace").partition(" ")
                if not tag:
                    continue
                if tag != str(seq):
                    log.warning("code sandbox: discarded a stray line of sample %s during sample %d", tag[:20], seq)
                    continue
                lines.append(line)
                if line.startswith(last):
                    return lines
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {last!r} from the sandbox")
            if self.sel.select(timeout=left):
                chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
                if not chunk:
                    raise RuntimeError("sandbox zygote died")
                self.buf += chunk

    def run(self, workdir: str, expected: str, wall_s: float) -> tuple[list[str], bool]:
        """Send one sample; return its output lines and whether the wall-clock limit stopped it."""
        seq = next(self.seq)
        self.proc.stdin.write(json.dumps([seq, workdir, expected, wall_s]).encode() + b"\n")
        self.proc.stdin.flush()
        try:
            lines = self._read_until(seq, "END", time.monotonic() + wall_s + 30)[:-1]
        except TimeoutError:
            raise RuntimeError("sandbox zygote stopped answering") from None
        return [line for line in lines if line != "TIMEOUT"], "TIMEOUT" in lines

    def close(self) -> None:
        """Close its pipe (it exits, ending its namespace), or kill it if it does not within 2 s."""
        try:
            self.proc.stdin.close()
            self.proc.wait(2)
        except (OSError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its session: the zygote and its namespace's PID 1
            except ProcessLookupError:
                pass
            self.proc.wait()
        self._remove_dirs()

    def _remove_dirs(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)
        shutil.rmtree(self.hidden, ignore_errors=True)


_idle: list[_Zygote] = []
_idle_lock = threading.Lock()


def _take() -> _Zygote:
    with _idle_lock:
        while _idle:
            z = _idle.pop()
            if z.alive():
                return z
    try:
        z = _Zygote()
    except (RuntimeError, OSError) as e:
        raise _unavailable(f"its interpreter did not start ({e})") from e
    if z.ready["error"]:
        z.close()
        raise _unavailable(z.ready["error"])
    _state(z.ready)
    return z


def _give(z: _Zygote) -> None:
    with _idle_lock:
        _idle.append(z)


@atexit.register
def shutdown() -> None:
    """Stop the idle zygotes (also runs at interpreter exit)."""
    with _idle_lock:
        while _idle:
            _idle.pop().close()


def run(code: str, tests: list[dict], mode: str = "script", *, fn_name: str | None = None,
        limits: Limits | None = None) -> Result:
    """Run ``code`` against ``tests`` (``[{"input": str, "output": str}]``; script mode: ``[{}]``).

    Thread-safe: concurrent calls use separate zygotes (the runner's ``score_workers``).
    """
    limits = limits or Limits()
    if mode not in ("script", "stdio", "functional"):
        raise ValueError(f"sandbox mode {mode!r}; use script|stdio|functional")
    if not tests:
        return Result(False, "no_tests")
    z = _take()
    work = tempfile.mkdtemp(dir=z.base)  # all the sample may write
    fd, expected = tempfile.mkstemp(dir=z.hidden)  # the outputs it is compared with
    try:
        outputs = [str(t.get("output", "")).encode() for t in tests]
        offsets = list(itertools.accumulate((len(o) for o in outputs), initial=0))
        with open(fd, "wb") as f:
            f.write(b"".join(outputs))
        spec = {"code": code, "tests": [{"input": str(t.get("input", ""))} for t in tests], "mode": mode,
                "fn_name": fn_name, "limits": limits.__dict__, "expected": list(zip(offsets, map(len, outputs)))}
        with open(os.path.join(work, "spec.json"), "w") as f:
            json.dump(spec, f)
        if os.getuid() == 0:
            os.chown(work, z.uid, z.uid)
            os.chmod(expected, 0o644)
        try:
            lines, timed_out = z.run(work, expected, limits.wall_s)
        except (RuntimeError, OSError) as e:  # the zygote died (or stopped answering): a failed sample
            z.close()
            z = None
            return Result(False, "sandbox_error", [{"stderr": str(e)}], len(tests))
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        if records and "sandbox_error" in records[0]:
            raise _unavailable(records[0]["sandbox_error"])
        passed = len(records) == len(tests) and all(r.get("passed") for r in records)
        status = "timeout" if timed_out else ("passed" if passed else "failed")
        return Result(passed and not timed_out, status, records, len(tests))
    finally:
        if z is not None:
            _give(z)
        shutil.rmtree(work, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):  # gone with its zygote's directories if that was closed
            os.unlink(expected)


def _sandbox_uid() -> int:
    """A uid no account uses, different for concurrent sandboxes (RLIMIT_NPROC counts per uid)."""
    return 1_500_000_000 + secrets.randbelow(500_000_000)

