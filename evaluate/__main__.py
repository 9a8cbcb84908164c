"""`python -m evaluate`: Table 5 benchmarks on a model. See conf/evaluate.yaml and docs/evaluate.md."""

import sys

import hydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ValueType
from hydra.errors import OverrideParseException
from omegaconf import DictConfig

from core.cli import one_line_errors
from core.config import CONF
from evaluate.run import run

BENCHMARKS = CONF / "benchmark"


def unknown_benchmarks(args: list[str]) -> list[str]:
    """Names given on the command line (``benchmark=[a,b]``, a sweep ``benchmark=a,b``) that have no
    ``conf/benchmark/<name>.yaml``: Hydra's own error for them does not list the valid names. A run that adds
    config directories is left to Hydra, as are malformed overrides."""
    if any(a.startswith(("-cd", "--config-dir", "-cp", "--config-path", "hydra.searchpath")) for a in args):
        return []
    try:
        overrides = OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
    except OverrideParseException:
        return []
    names = []
    for o in overrides:
        if o.key_or_group != "benchmark" or o.is_delete() or o.value_type == ValueType.GLOB_CHOICE_SWEEP:
            continue
        for value in o.sweep_iterator() if o.is_choice_sweep() else [o.value()]:
            names += value if isinstance(value, list) else [value]
    return [str(n) for n in names if not (BENCHMARKS / f"{n}.yaml").is_file()]


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> dict:
    with one_line_errors("evaluate", ValueError, FileNotFoundError, LookupError, ConnectionError, PermissionError):
        return run(cfg)


if __name__ == "__main__":
    if unknown := unknown_benchmarks(sys.argv[1:]):
        valid = ", ".join(sorted(p.stem for p in BENCHMARKS.glob("*.yaml")))
        sys.exit(f"unknown benchmark {', '.join(unknown)}; valid names: {valid} (one conf/benchmark/<name>.yaml each)")
    main()
