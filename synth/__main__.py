"""`python -m synth experiment=stem_oss_en teacher=gpt_oss_120b_medium` — make the experiment's components."""

import logging

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="../conf", config_name="synth")
def main(cfg: DictConfig) -> dict:
    from synth.pipeline import run

    for name in ("httpx", "httpx2"):  # one INFO line per request otherwise
        logging.getLogger(name).setLevel(logging.WARNING)
    return run(cfg)


if __name__ == "__main__":
    main()
