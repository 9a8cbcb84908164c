"""The train stage on bad input: it fails before writing anything, names the input and the fix, and never
touches a finished run's provenance; W&B without network falls back to offline."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from conftest import CONF, REPO, install_triples
from train import sft
from train.mixture import MixtureError

PROVENANCE = ("resolved_config.yaml", "manifest.json", "manifest_ids.txt")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compose_train(root: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=["experiment=demo_stem_en", "logger=none", f"paths.root={root}",
                                           *overrides])


def snapshot(out: Path) -> dict:
    return {n: ((out / n).read_bytes(), (out / n).stat().st_mtime_ns) for n in PROVENANCE}


def test_wandb_key_without_network_trains_offline_and_says_so_once(tmp_path):
    """An API key but an unreachable W&B server: the run goes offline at once instead of dying in wandb.init."""
    install_triples(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    env.update(OMP_NUM_THREADS="1", JAEN_DISTILL_ROOT=str(tmp_path), WANDB_API_KEY="x" * 40,
               WANDB_BASE_URL=f"http://127.0.0.1:{closed_port()}")
    start = time.time()
    done = subprocess.run([sys.executable, "-m", "train", "experiment=demo_stem_en", "trainer.max_steps=1",
                           f"output_dir={tmp_path / 'run'}"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert time.time() - start < 100  # wandb.init online would wait its 90 s init timeout, then raise
    said = (done.stdout + done.stderr).count("does not answer")
    assert said == 1, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "train_metrics.json").read_text())
    assert any((tmp_path / "runs" / "wandb").glob(f"offline-run-*-{metrics['wandb_run_id']}"))


def test_failed_reruns_leave_a_finished_run_untouched(tmp_path, demo_triples):
    install_triples(tmp_path)
    out = tmp_path / "run"
    sft.run(compose_train(tmp_path, "trainer.max_steps=1", f"output_dir={out}"))
    before = snapshot(out)
    bad_records = tmp_path / "bad"
    bad_records.mkdir()
    rows = [r for r in demo_triples if r["component"] == "stem_demo_en"]
    rows[3] = {k: v for k, v in rows[3].items() if k != "response"}
    (bad_records / "part-00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "empty").mkdir()
    cases = {
        "trainer.per_device_batch_size=4": (sft.TrainError, ["global_batch_size=2 is not divisible"]),
        "model.name_or_path=/nonexistent/model": (sft.TrainError, ["model.name_or_path='/nonexistent/model'"]),
        "model.name_or_path=???": (sft.TrainError, ["model.name_or_path is not set", "swallow", "tiny_qwen3"]),
        f"data.stem_demo_en.path={tmp_path / 'empty'}": (MixtureError, ["'stem_demo_en' has no data",
                                                                        "python -m synth"]),
        f"data.stem_demo_en.path={bad_records}": (MixtureError, [f"{bad_records / 'part-00000.jsonl'} record 4",
                                                                 rows[3]["id"], "response"]),
        "trainer.max_length=8": (sft.TrainError, ["all 16 records are longer than trainer.max_length=8",
                                                  "shortest", "Raise trainer.max_length"]),
        "mixture.overlength=cut": (sft.TrainError, ["mixture.overlength='cut'", "drop, truncate"]),
        "mixture.exclude_flags=[looping]": (sft.TrainError, ["unknown flag(s) looping", "looping_trace"]),
        "mixture.max_trace_tokens=0": (sft.TrainError, ["mixture.max_trace_tokens=0", "positive"]),
        # keys an experiment file may set, misspelt: an error, not the default in silence
        "+trainer.learning_rat=1": (sft.TrainError, ["trainer: unknown key 'learning_rat'", "learning_rate"]),
        "+mixture.exclude=[looping_trace]": (sft.TrainError, ["mixture: unknown key 'exclude'", "exclude_flags"]),
    }
    for override, (error, words) in cases.items():
        with pytest.raises(error) as e:
            sft.run(compose_train(tmp_path, "trainer.max_steps=1", f"output_dir={out}", override))
        assert all(w in str(e.value) for w in words), (override, str(e.value))
        assert snapshot(out) == before, override


def test_cli_error_is_one_line_and_nonzero(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "JAEN_DISTILL_ROOT": str(tmp_path)}
    install_triples(tmp_path)
    done = subprocess.run([sys.executable, "-m", "train", "experiment=demo_stem_en", "logger=none",
                           "trainer.per_device_batch_size=4", f"output_dir={tmp_path / 'run'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "trainer.global_batch_size=2 is not divisible" in done.stderr
    assert not (tmp_path / "run").exists()


def test_dropped_overlength_records_are_warned_with_their_count(tmp_path, qwen3_tokenizer, caplog):
    from train import mixture

    cfg = compose_train(tmp_path, "trainer.max_length=96")
    install_triples(tmp_path)
    examples, _ = mixture.build(cfg)
    with caplog.at_level("WARNING", logger="train.sft"):
        ds, counts, _ = sft.tokenize_mixture(examples, qwen3_tokenizer, cfg)
    assert counts["overlength"] > 0
    assert f"{counts['overlength']} of {len(examples)} records are longer than trainer.max_length=96" in caplog.text


def test_wandb_auto_mode_is_online_only_when_keyed_and_the_server_answers(monkeypatch, caplog):
    import http.server
    import threading

    from core import wandb_mode

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    try:
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.server_port}")
        assert wandb_mode.resolve("auto") == "online"  # any HTTP answer (here 501) means reachable
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
        with caplog.at_level("WARNING", logger="core.wandb_mode"):
            assert [wandb_mode.resolve("auto") for _ in range(3)] == ["offline"] * 3
        assert caplog.text.count("does not answer") == 1
        assert wandb_mode.resolve("online") == "online"  # an explicit mode is the user's
    finally:
        server.shutdown()
