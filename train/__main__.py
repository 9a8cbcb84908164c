"""`python -m train experiment=stem_oss_en` — SFT on a Table 1 mixture, or a reasoning-vector merge."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> dict:
    if cfg.method == "reasoning_vector":
        from train.vector import run

        return run(cfg)
    if cfg.method != "sft":
        raise SystemExit(f"method={cfg.method!r} is unknown: use method=sft or method=reasoning_vector")
    from train.mixture import MixtureError
    from train.sft import TrainError, run

    try:
        return run(cfg)
    except (TrainError, MixtureError) as e:  # bad input, found before anything was written: no traceback
        raise SystemExit(f"train: {e}") from None


if __name__ == "__main__":
    main()
