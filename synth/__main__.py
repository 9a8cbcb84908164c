"""`python -m synth experiment=stem_oss_en teacher=gpt_oss_120b_medium` — make the experiment's components."""

import logging

import hydra
from omegaconf import DictConfig

from core.cli import one_line_errors


@hydra.main(version_base="1.3", config_path="../conf", config_name="synth")
def main(cfg: DictConfig) -> dict:
    from synth.client import FatalEndpointError
    from synth.pipeline import ShortfallError, run

    for name in ("httpx", "httpx2"):  # one INFO line per request otherwise
        logging.getLogger(name).setLevel(logging.WARNING)
    with one_line_errors("synth", ValueError, FileNotFoundError, ShortfallError, FatalEndpointError):
        return run(cfg)


if __name__ == "__main__":
    main()
