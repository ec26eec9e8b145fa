"""``python -m ablate.evaluate +checkpoint=PATH [sampling and evaluation overrides]``: evaluate a trained
checkpoint (``final.pt`` or ``last.ckpt``) with any sampler, budget, guidance or evaluation seeds.

The training axes come from the checkpoint (it stores its training config): a command-line value that
contradicts them is refused with a message naming both, and the rows record the checkpoint's true training key
and steps. See ablate/pipeline/runner.py (``evaluate_checkpoint``).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from .pipeline.build import ConfigError
from .pipeline.jobs import finish_wandb, tune_allocator

__all__ = ["main"]


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig):
    from .pipeline.checkpointing import CheckpointError
    from .pipeline.runner import evaluate_checkpoint

    tune_allocator()
    try:
        if not cfg.get("checkpoint"):
            raise ConfigError("python -m ablate.evaluate needs +checkpoint=<final.pt or last.ckpt>")
        return evaluate_checkpoint(cfg, str(cfg.checkpoint))
    except (ConfigError, CheckpointError) as e:
        print(f"ablate: error: {e}", file=sys.stderr)
        sys.exit(2)
    finally:
        finish_wandb()


if __name__ == "__main__":
    main()
