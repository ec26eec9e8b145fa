"""``python -m ablate.run [overrides]``: one run, or a sweep with ``-m`` (the Hydra entry point).

One run trains once per training config and evaluates with the configured sampler (ablate/pipeline/runner.py).
A bad value or combination prints one message naming the axis, the value and the valid choices, and exits with
status 2, before any work. In a sweep (``-m``) a failing job records its error in the results store
(``status=failed``) and the other jobs go on; the sweep ends with a summary table of its points.
"""

from __future__ import annotations

import sys
import traceback

import hydra
from omegaconf import DictConfig

from .pipeline.build import ConfigError
from .pipeline.jobs import finish_wandb, is_multirun, quiet_duplicate_logs, record_failure, tune_allocator

__all__ = ["main"]


def _failure_row(cfg: DictConfig) -> dict:
    """What a failed job's row can say about itself without building anything."""
    from hydra.core.hydra_config import HydraConfig

    try:
        choices = dict(HydraConfig.get().runtime.choices)
    except Exception:
        choices = {}
    return {"study": cfg.get("study") or "adhoc", "row": None if cfg.get("row") is None else str(cfg.row),
            "scale": cfg.get("scale"), "seed": cfg.get("seed"), "job": _job(cfg),
            **{k: v for k, v in choices.items() if not k.startswith("hydra")}}


def _job(cfg: DictConfig) -> str | None:
    from pathlib import Path

    from .pipeline.jobs import job_dir

    try:
        return str(job_dir().resolve().relative_to(Path(str(cfg.out_dir)).resolve()))
    except Exception:
        return None


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig):
    from .pipeline.checkpointing import TrainingInterrupted
    from .pipeline.runner import run
    from .scale.distributed import is_global_zero

    quiet_duplicate_logs()
    tune_allocator()
    try:
        out = run(cfg)
        if not is_multirun() and is_global_zero():
            print(f"[ablate] outputs: {_job(cfg) or '.'} under {cfg.out_dir} (samples.png), checkpoint "
                  f"{out['checkpoint']}, rows in {cfg.results}")
        return out
    except TrainingInterrupted:
        raise  # the job is being stopped (preemption, time limit): not a failed row, the rerun resumes
    except Exception as e:
        multirun = is_multirun()
        if isinstance(e, ConfigError) and not multirun:
            print(f"ablate: error: {e}", file=sys.stderr)  # a user error: one message, no traceback, no row
            sys.exit(2)
        if is_global_zero():  # one failure row per job, not one per rank
            record_failure(cfg.results, _failure_row(cfg), e)
        if multirun:
            # One failing sweep point must not stop the others: record it, print it, go on.
            if not isinstance(e, ConfigError):
                traceback.print_exc()
            print(f"[ablate] job failed and was recorded in {cfg.results}: {type(e).__name__}: {e}")
            return None
        raise
    finally:
        finish_wandb()


if __name__ == "__main__":
    main()
