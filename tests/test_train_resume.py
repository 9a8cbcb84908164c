"""Resume after a kill at any moment: a checkpoint torn by a kill during its save is moved aside and the run
resumes from the last complete one."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

from conftest import REPO, install_triples
from train import sft


def test_kill_during_a_checkpoint_save_resumes_from_the_last_complete_one(tmp_path):
    install_triples(tmp_path)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "train", "experiment=demo_stem_en", "logger=none", "trainer.max_steps=8",
           "trainer.save_steps=1", "trainer.save_total_limit=20", f"output_dir={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "JAEN_DISTILL_ROOT": str(tmp_path)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    torn = None
    deadline = time.time() + 300
    try:
        # Freeze the process group the moment a checkpoint directory appears (mid-save); if the save had
        # already finished, let it go on to the next one. Then kill it frozen: a real kill during a save.
        for step in range(2, 8):
            ckpt = out / f"checkpoint-{step}"
            while not ckpt.exists():
                assert proc.poll() is None and time.time() < deadline, "training ended before the kill"
                time.sleep(0.001)
            os.killpg(proc.pid, signal.SIGSTOP)
            if not (ckpt / "trainer_state.json").exists():
                torn = ckpt
                break
            os.killpg(proc.pid, signal.SIGCONT)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert torn is not None, "every save finished before the freeze"
    step = int(torn.name.split("-")[1])
    assert sft.checkpoint_problem(torn) is not None
    assert sft.checkpoint_problem(out / f"checkpoint-{step - 1}") is None

    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"checkpoint-{step} is incomplete" in done.stdout + done.stderr and (out / f"checkpoint-{step}.torn").is_dir()
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["resumed_from"] == str(out / f"checkpoint-{step - 1}") and metrics["global_step"] == 8
    state = json.loads((out / "checkpoint-8" / "trainer_state.json").read_text())
    assert [h["step"] for h in state["log_history"] if "loss" in h] == list(range(1, 9))

    # Any file cut short makes a checkpoint incomplete; a complete one is taken as it is.
    for name in ("optimizer.pt", "model.safetensors", "trainer_state.json", "rng_state.pth"):
        copy = out / "checkpoint-9"
        shutil.copytree(out / "checkpoint-8", copy)
        state = json.loads((copy / "trainer_state.json").read_text())
        (copy / "trainer_state.json").write_text(json.dumps({**state, "global_step": 9}))
        assert sft.resume_checkpoint(out, rank0=True) == str(copy)
        data = (copy / name).read_bytes()
        (copy / name).write_bytes(data[: len(data) // 2])
        assert name in sft.checkpoint_problem(copy) or "trainer_state" in sft.checkpoint_problem(copy)
        assert sft.resume_checkpoint(out, rank0=True) == str(out / "checkpoint-8")
        assert not copy.exists()
        shutil.rmtree(next(out.glob("checkpoint-9.torn*")))
