"""`python -m train experiment=stem_oss_en` — SFT on a Table 1 mixture, or a reasoning-vector merge."""

import hydra
from omegaconf import DictConfig

from core.cli import one_line_errors


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> dict:
    if cfg.method == "reasoning_vector":
        from train.vector import run

        return run(cfg)
    if cfg.method != "sft":
        raise SystemExit(f"method={cfg.method!r} is unknown: use method=sft or method=reasoning_vector")
    from train.mixture import MixtureError
    from train.sft import TrainError, run

    with one_line_errors("train", TrainError, MixtureError):  # bad input, found before anything was written
        return run(cfg)


if __name__ == "__main__":
    main()
