"""Peak memory of a command and every process it starts, measured together.

    python bench/peak_rss.py [--interval 0.2] -- python -m demo --root /tmp/demo_run

``/usr/bin/time -v`` reports the largest single process; the demo runs a teacher server beside itself and
the test suite starts servers and sandboxes, so this samples the RSS of the whole process tree (psutil)
every ``interval`` seconds and prints the peak of the sum, the largest process at that moment, wall and
CPU time as one JSON line on stderr. The command's exit status is passed through.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import psutil


def tree_rss(root: psutil.Process) -> dict[str, int]:
    """RSS in bytes of ``root`` and its live descendants, by ``pid name``."""
    out = {}
    for p in [root, *root.children(recursive=True)]:
        try:
            out[f"{p.pid} {' '.join(p.cmdline()[:4])[:120]}"] = p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interval", type=float, default=0.2)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("no command given: bench/peak_rss.py -- CMD ARGS...")
    t0 = time.time()
    proc = subprocess.Popen(cmd)
    root = psutil.Process(proc.pid)
    peak, at, parts = 0, 0.0, {}
    while proc.poll() is None:
        rss = tree_rss(root)
        if sum(rss.values()) > peak:
            peak, at, parts = sum(rss.values()), time.time() - t0, rss
        time.sleep(args.interval)
    usage = psutil.Process().cpu_times()  # children's times are added once they are waited for
    top = max(parts.items(), key=lambda kv: kv[1]) if parts else ("", 0)
    print(json.dumps({
        "cmd": " ".join(cmd), "exit": proc.returncode, "wall_s": round(time.time() - t0, 1),
        "cpu_s": round(usage.children_user + usage.children_system, 1),
        "peak_rss_mb": round(peak / 2**20), "peak_at_s": round(at, 1), "processes_at_peak": len(parts),
        "largest_at_peak": {"process": top[0], "rss_mb": round(top[1] / 2**20)},
    }), file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
