"""Reasoning vectors never destroy what they did not write (issue 11): an output_dir that overlaps an
input model is refused, overwrite or not; `vector.overwrite=true` only replaces a previous merge
output (recognised by its manifest.json); a bad `vector.weight` names the key and what is allowed."""

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.test_vector import make_model
from train.vector import VectorError, merge

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pristine")
    for seed, role in enumerate(("base", "reasoner", "target")):
        make_model(d / role, seed)
    return d


@pytest.fixture()
def models(pristine, tmp_path) -> dict[str, Path]:
    """A fresh copy of the three models for each test: a failing test may not destroy shared inputs."""
    d = shutil.copytree(pristine, tmp_path / "models")
    return {role: d / role for role in ("base", "reasoner", "target")}


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("where", ["target", "base", "parent", "child", "symlink"])
def test_an_output_overlapping_an_input_is_refused_and_the_inputs_survive(models, tmp_path, where, overwrite):
    parent = models["target"].parent
    before = snapshot(parent)
    if where == "symlink":  # another name for the target directory
        out = tmp_path / "link"
        os.symlink(models["target"], out)
    else:
        out = {"target": models["target"], "base": models["base"], "parent": parent,
               "child": models["target"] / "merged"}[where]
    with pytest.raises(VectorError, match=r"overlaps vector\.(target|base).*overwrite or not"):
        merge(models["base"], models["reasoner"], models["target"], out, weight=0.5, overwrite=overwrite)
    assert snapshot(parent) == before  # every input file byte for byte, nothing added
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".link", ".models", ".target"))]


def test_overwrite_only_replaces_a_previous_merge_output(models, tmp_path):
    # A directory the merge did not write (a training run, someone's notes): never replaced.
    foreign = tmp_path / "train_run"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    (foreign / "manifest.json").write_text(json.dumps({"method": "sft"}))
    with pytest.raises(VectorError, match=r"not the output of a previous merge.*manifest\.json"):
        merge(models["base"], models["reasoner"], models["target"], foreign, weight=0.5, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep me"

    # A previous merge output that has since gained a file the merge did not write: refused, named.
    out = tmp_path / "w0.5"
    merge(models["base"], models["reasoner"], models["target"], out, weight=0.5, max_shard_size="30KB")
    (out / "eval").mkdir()
    (out / "eval" / "summary.json").write_text("{}")
    with pytest.raises(VectorError, match=r"holds \['eval'\] that the merge did not write"):
        merge(models["base"], models["reasoner"], models["target"], out, weight=1.0, overwrite=True)
    assert (out / "eval" / "summary.json").exists()

    # The intact merge output is replaced (multi-shard before, one shard after: no stale shard left).
    shutil.rmtree(out / "eval")
    m = merge(models["base"], models["reasoner"], models["target"], out, weight=1.0, overwrite=True)
    assert m["weight"] == 1.0 and sorted(p.name for p in out.glob("*.safetensors")) == m["shards"]
    assert not (out / "model.safetensors.index.json").exists()


def test_a_file_as_output_dir_is_refused(models, tmp_path):
    f = tmp_path / "out"
    f.write_text("x")
    with pytest.raises(VectorError, match="is a file"):
        merge(models["base"], models["reasoner"], models["target"], f, weight=0.5, overwrite=True)
    assert f.read_text() == "x"


@pytest.mark.parametrize("weight", ["abc", [0.5, 1.0], None, True, float("nan"), "inf"])
def test_a_bad_weight_names_the_key_and_what_is_allowed(models, tmp_path, weight):
    with pytest.raises(VectorError, match=r"vector\.weight=.*a finite number.*e\.g\. vector\.weight=0\.5"):
        merge(models["base"], models["reasoner"], models["target"], tmp_path / "o", weight=weight)
    assert not (tmp_path / "o").exists()


def test_a_numeric_string_weight_from_the_command_line_is_a_number(models, tmp_path):
    assert merge(models["base"], models["reasoner"], models["target"], tmp_path / "o", weight="0.25")["weight"] == 0.25


@pytest.mark.parametrize("override", ["vector.weight=abc", "vector.weight=[0.5,1.0]"])
def test_bad_weight_through_hydra(models, tmp_path, override):
    from hydra import compose, initialize_config_dir

    from train.vector import run

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[
            "method=reasoning_vector", f"vector.base={models['base']}", f"vector.reasoner={models['reasoner']}",
            f"vector.target={models['target']}", override, f"output_dir={tmp_path}/o", "vector.progress=false"])
    with pytest.raises(VectorError, match=r"vector\.weight="):
        run(cfg)
    assert not (tmp_path / "o").exists()
