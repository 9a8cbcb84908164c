"""Unknown config keys are errors, in every stage.

Hydra merges an experiment file (or any config file) into the stage's config without a schema, so a
misspelt key there (``trainer.learning_rat``, ``synth.timout``) would be silently ignored and the run would
use the default. The stages compare the nodes they read with the keys their own config files declare.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from core import REPO

CONF = REPO / "conf"


def check_known(node: Any, valid: Iterable[str], where: str, hint: str = "") -> None:
    """An error naming the first key of ``node`` that is not in ``valid``, the closest valid key and all of them."""
    valid = sorted(valid)
    for key in node or {}:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            guess = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"{where}: unknown key '{key}'{guess}. Valid keys: {', '.join(valid)}.{hint}")


def check_schema(node: Any, cls: type, where: str, hint: str = "") -> DictConfig:
    """``node`` against the dataclass ``cls``: a mapping of only its keys (:func:`check_known`), of its field
    types (OmegaConf), with every key that has no default. Returns the typed config."""
    names = [f.name for f in dataclasses.fields(cls)]
    if not isinstance(node, (dict, DictConfig)):
        raise ValueError(f"{where}: expected a mapping of {', '.join(names)}, got {node!r}{hint}")
    check_known(node, names, where, hint)
    try:
        typed = OmegaConf.merge(OmegaConf.structured(cls), node)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        raise ValueError(f"{where}{'.' + key if key else ''}: {str(e).splitlines()[0]}{hint}") from None
    if missing := sorted(OmegaConf.missing_keys(typed)):
        raise ValueError(f"{where}: missing key(s) {', '.join(missing)}{hint}")
    return typed


def positive_int(value: Any) -> bool:
    """A whole number ≥ 1; a bool is not one (YAML's ``true`` is an ``int`` to Python)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def declared(*files: str | Path, node: str | None = None) -> set[str]:
    """The keys the config files under conf/ declare (at ``node``, dotted, when given): their union."""
    keys: set[str] = set()
    for f in files:
        data = yaml.safe_load((CONF / f).read_text(encoding="utf-8")) or {}
        for part in (node.split(".") if node else []):
            data = data.get(part) or {}
        keys.update(k for k in data if k != "defaults")
    return keys
