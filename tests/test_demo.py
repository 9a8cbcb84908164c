"""`make demo` in a reduced form: every stage runs for real, the report shows the student before (B) and
after SFT, and a stage that produces too little stops the demo naming the stage."""

import os
import signal
import subprocess
import sys

import psutil

from conftest import REPO


def test_a_caller_stopped_by_sigterm_leaves_no_server(tiny_student):
    """A demo killed by a timeout (SIGTERM) must not orphan its teacher server (it runs in its own session)."""
    script = ("import sys, time\nfrom core.serve import local_server\n"
              "with local_server(sys.argv[1], device='cpu', threads=1) as url:\n"
              "    print(url.pid, flush=True)\n    time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tiny_student)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    server = psutil.Process(int(proc.stdout.readline()))
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 128 + signal.SIGTERM
        assert not server.is_running()
    finally:
        if server.is_running():  # a failed run must not leave the server behind either
            server.kill()
