"""`python -m analysis` — Tables 1-4, plots and the factor regression; `source=paper` reruns the paper's."""

import hydra
from omegaconf import DictConfig

from core.cli import one_line_errors


@hydra.main(version_base="1.3", config_path="../conf", config_name="analysis")
def main(cfg: DictConfig) -> dict:
    from analysis.run import run

    with one_line_errors("analysis", ValueError, FileNotFoundError):
        return run(cfg)


if __name__ == "__main__":
    main()
