"""The verdict comes from a channel the program cannot forge: only a test that ran to its end passes.

Every program here is WRONG (or, for the controls, right); a wrong one must never pass, whatever way it
finds to end its process with status 0 or to reach the expected outputs.
"""

import json

import pytest

from evaluate import sandbox

FAST = sandbox.Limits(cpu_s=2, test_wall_s=4, wall_s=20, memory_mb=512, file_mb=1, nproc=8)

# A HumanEval-shaped script: the solution, the benchmark's tests, then check(entry_point).
TESTS = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(0, 0) == 0\n"
RIGHT = "def add(a, b):\n    return a + b\n"
WRONG = "def add(a, b):\n    return 0\n"


def script(solution: str) -> sandbox.Result:
    return sandbox.run(f"{solution}\n\n{TESTS}\n\ncheck(add)\n", [{}], "script", limits=FAST)


@pytest.mark.parametrize("trick", [
    "import sys\nsys.exit(0)",
    "import sys\nsys.exit()",
    "import os\nos._exit(0)",
    "raise SystemExit(0)",
    # the error handler itself cannot report the failure: stderr is closed before the assertion fails
    "import sys\nsys.stderr.close()",
    "import os, sys\nos.close(2)\nsys.stderr = None",
    # an exception whose printing raises again
    "import sys\nclass Loud(Exception):\n    def __str__(self):\n        raise SystemExit(0)\n"
    "sys.excepthook = None\nimport builtins\nbuiltins.AssertionError = Loud",
    # exit 0 from an atexit hook, or from a thread, after the assertion already failed
    "import atexit, os\natexit.register(lambda: os._exit(0))",
    "import threading, os, time\nthreading.Thread(target=lambda: (time.sleep(0.3), os._exit(0)), daemon=True).start()",
])
def test_a_wrong_solution_that_ends_with_status_0_fails(trick):
    r = script(f"{WRONG}\n{trick}\n")
    assert not r.passed and r.status == "failed", r


def test_a_wrong_solution_whose_main_block_exits_0_fails():
    r = script(f"{WRONG}\nif __name__ == '__main__':\n    import sys\n    sys.exit(0)\n")
    assert not r.passed


def test_a_right_solution_with_a_main_block_that_exits_passes():
    """Generated code often ends in ``if __name__ == "__main__": sys.exit(main())``: the solution is
    not run as ``__main__`` in script and functional mode (as HumanEval's harness), so it passes."""
    r = script(f"{RIGHT}\ndef main():\n    print(add(1, 2))\n    return 3\n"
               "if __name__ == '__main__':\n    import sys\n    sys.exit(main())\n")
    assert r.passed and r.status == "passed", r
    assert script(RIGHT).passed


def test_stdio_programs_run_as_main_and_may_exit_after_printing():
    """Competitive programs print the answer and call ``exit()``; that is a normal end in stdio mode."""
    tests = [{"input": "1 2\n", "output": "3\n"}, {"input": "5 5\n", "output": "10\n"}]
    code = ("import sys\ndef main():\n    a, b = map(int, input().split())\n    print(a + b)\n    sys.exit(0)\n"
            "if __name__ == '__main__':\n    main()\n")
    assert sandbox.run(code, tests, "stdio", limits=FAST).passed
    assert sandbox.run("print(sum(map(int, input().split())))\nexit()", tests, "stdio", limits=FAST).passed
    # ... but a non-zero exit after the right output is a failure, and so is os._exit after printing
    assert not sandbox.run("print(sum(map(int, input().split())))\nraise SystemExit(1)", tests, "stdio",
                           limits=FAST).passed


@pytest.mark.parametrize("mode,test", [
    ("stdio", {"input": "7\n", "output": "the secret answer 912873\n"}),
    ("functional", {"input": "7", "output": "912873"}),
])
def test_the_expected_output_is_out_of_the_programs_reach(mode, test):
    """Neither the files of the sample's directory nor the memory of the test process hold it."""
    # looks for the expected output in every file it can read and in the harness' memory
    finder = r'''
import gc, glob, sys
found = None
n = 912872  # neither the program text nor its own variables hold the answer before it is found
def holds(obj):
    try:
        return str(n + 1) in repr(obj)[:100000]
    except BaseException:
        return False
for path in glob.glob("**", recursive=True) + glob.glob("../**", recursive=True) + glob.glob("/tmp/**"):
    try:
        if str(n + 1) in open(path, errors="replace").read(1 << 20):
            found = str(n + 1)
    except OSError:
        pass
if any(holds(obj) for obj in gc.get_objects() if isinstance(obj, (dict, list, tuple))):
    found = str(n + 1)
for frame in sys._current_frames().values():
    while frame is not None:
        if holds(frame.f_locals) or holds(frame.f_globals):
            found = str(n + 1)
        frame = frame.f_back
'''
    if mode == "stdio":
        code = finder + "print('the secret answer', found)\n"
        r = sandbox.run(code, [test], "stdio", limits=FAST)
    else:
        code = finder + "class Solution:\n    def f(self, x):\n        return int(found) if found else -1\n"
        r = sandbox.run(code, [test], "functional", fn_name="f", limits=FAST)
    assert r.tests and r.tests[0]["status"] == "ok", r  # it ran to the end ...
    assert not r.passed  # ... and never saw the answer
    # positive control: where the answer is in its reach (here: its own input), the search finds it
    test = {"input": "912873" if mode == "stdio" else json.dumps("912873"), "output": test["output"]}
    assert sandbox.run(code, [test], mode, fn_name="f" if mode == "functional" else None, limits=FAST).passed


def test_functional_mode_result_cannot_be_written_by_the_program():
    """The program writes a result file where the harness would and leaves before the harness does."""
    code = r'''
import glob, json, os
for name in ["result.json", "report.json", "report-0.json"] + glob.glob("*"):
    try:
        with open(name, "w") as f:
            json.dump(3, f)
    except OSError:
        pass
os._exit(0)
'''
    r = sandbox.run(code, [{"input": "1\n2", "output": "3"}], "functional", fn_name="add", limits=FAST)
    assert not r.passed
