"""Hydra entry point: ``python -m ablate.run [overrides]`` for one run, ``-m`` for a sweep.

One run = (train once per training config) + evaluate with the configured sampler:

1. validate the config (bad values/combinations fail before any work);
2. find or train the checkpoint for the training config (content-addressed: ``<out_dir>/checkpoints/<key>``),
   resuming from its ``last.ckpt`` after an interruption; concurrent jobs with the same key wait on a lock,
   so a sweep over sampler/diffusion/NFE/guidance trains each training configuration exactly once;
3. sample with the EMA weights, compute FID (and friends) and GFLOPs, append rows to the results store and log
   them to W&B (offline by default), write a sample grid PNG.

A failing job in a sweep records its error in the results store and lets the other jobs run.
"""

from __future__ import annotations

import copy
import json
import os
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from .build import ConfigError, axes, build_data, build_training, train_config, train_key, validate

__all__ = ["main", "run", "train_or_reuse", "job_dirname"]

MAX_DIRNAME = 120  # well under the usual 255-byte limit on one path component


def job_dirname(override_dirname: str, max_len: int = MAX_DIRNAME) -> str:
    """A sweep job's directory name from its overrides (``hydra.sweep.subdir``): ``/`` (paths in values)
    becomes ``_``, and a name longer than ``max_len`` is cut and suffixed with a hash of the whole, so long
    override lists neither fail ("File name too long") nor collide."""
    import hashlib

    name = override_dirname.replace("/", "_")
    if len(name) <= max_len:
        return name
    return f"{name[: max_len - 13]}-{hashlib.sha256(override_dirname.encode()).hexdigest()[:12]}"


if not OmegaConf.has_resolver("ablate_dirname"):
    OmegaConf.register_new_resolver("ablate_dirname", job_dirname)


def _job_dir() -> Path:
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:
        return Path.cwd()


def _is_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:
        return False


def check_writable(path: Path) -> None:
    """Fail before training if the output directory cannot be written (read-only or full)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write_probe_{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as e:
        raise OSError(f"output directory {str(path)!r} is not writable ({e.strerror}); set out_dir=...") from e


def _make_logger(cfg: DictConfig, job_dir: Path, name: str):
    if cfg.logger.name == "none":
        return None
    from lightning.pytorch.loggers import WandbLogger

    group = cfg.study or "adhoc"
    flat = {**axes(cfg), "study": group, "config": OmegaConf.to_container(cfg, resolve=True)}
    return WandbLogger(
        name=name, project=cfg.logger.project, entity=cfg.logger.entity, group=group, mode=cfg.logger.mode,
        save_dir=str(job_dir), config=flat, job_type="train+eval",
    )


def train_or_reuse(cfg: DictConfig, logger=None, callbacks=()):
    """Return (training, ema state dict, info) for the config's training key, training only if needed.

    ``callbacks``: extra Lightning callbacks (in-loop evaluation, fault injection in tests).
    """
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    from .checkpointing import (
        AtomicCheckpointIO,
        SaveOnSignal,
        TrainingInterrupted,
        atomic_torch_save,
        file_lock,
        load_checkpoint,
    )
    from .distributed import broadcast_object, init_from_cluster_env
    from .fsdp import build_strategy, consolidated_state_dicts
    from .lit import DiffusionModule, InLoopEval, StepData

    key = train_key(cfg)
    ckpt_dir = Path(cfg.out_dir) / "checkpoints" / key
    final = ckpt_dir / "final.pt"
    training = build_training(cfg)
    # Under srun/torchrun (one process per device) rank 0 alone takes the lock and decides; the others follow.
    rank, _ = init_from_cluster_env()
    with file_lock(ckpt_dir / ".lock") if rank == 0 else nullcontext():
        if broadcast_object(bool(cfg.reuse and final.exists())):
            state = load_checkpoint(final)
            training.net.load_state_dict(state["net"])
            info = {**state["info"], "reused": True, "train_key": key}
            return training, state["ema"], info
        (ckpt_dir / "train_config.json").write_text(json.dumps(train_config(cfg), indent=2, default=str))
        tr = cfg.trainer
        # FSDP wraps the trained network's blocks in place: it trains a copy, and training.net stays a plain
        # module for evaluation (in-loop and final, with the gathered weights loaded into copies of it).
        net = copy.deepcopy(training.net) if str(tr.strategy) == "fsdp" else training.net
        module = DiffusionModule(
            net, training.loss_fn, lr=tr.lr, weight_decay=tr.weight_decay, ema_decay=tr.ema_decay,
            seed=cfg.seed, nan_policy=tr.nan_policy, conditional=cfg.data.num_classes > 0,
        )
        if tr.compile:  # torch.compile the forward in place: parameter names (checkpoints) do not change
            module.net.compile()
        if tr.accelerator in ("gpu", "cuda") or (tr.accelerator == "auto" and torch.cuda.is_available()):
            torch.set_float32_matmul_precision("high")  # TF32 for the matmuls that bf16-mixed leaves in fp32
        dataset = build_data(cfg, "train")
        ckpt_cb = ModelCheckpoint(
            dirpath=ckpt_dir, save_last=True, save_top_k=0, every_n_train_steps=tr.ckpt_every,
            enable_version_counter=False,
        )
        save_on_signal = SaveOnSignal(ckpt_dir / "last.ckpt")
        callbacks = [save_on_signal, *callbacks]
        if int(cfg.eval.every_n_steps) > 0:
            callbacks.append(InLoopEval(cfg, training, int(cfg.eval.every_n_steps), logger, _job_dir()))
        trainer = L.Trainer(
            max_steps=tr.steps, accelerator=tr.accelerator, devices=tr.devices, num_nodes=tr.num_nodes,
            strategy=build_strategy(tr), precision=tr.precision, logger=logger if logger is not None else False,
            callbacks=[ckpt_cb, *callbacks], plugins=[AtomicCheckpointIO()], log_every_n_steps=tr.log_every,
            gradient_clip_val=tr.grad_clip, enable_model_summary=False, num_sanity_val_steps=0,
            default_root_dir=str(ckpt_dir), deterministic=False,
            use_distributed_sampler=False,  # StepSampler already gives each rank its share of the global batch
        )

        resume = cfg.ckpt_path
        if resume is None and (ckpt_dir / "last.ckpt").exists():
            resume = str(ckpt_dir / "last.ckpt")
        t0 = time.time()
        trainer.fit(module, datamodule=StepData(dataset, int(tr.batch_size), int(cfg.seed), int(tr.num_workers)),
                    ckpt_path=resume)
        wall = time.time() - t0
        # ddp_fork/ddp_spawn train in child processes; the counts come back in callback_metrics (lit.py).
        done = trainer.callback_metrics
        steps_done = int(done["ablate/global_step"]) if "ablate/global_step" in done else trainer.global_step
        skipped = int(done["ablate/skipped_steps"]) if "ablate/skipped_steps" in done else module.skipped_steps
        interrupted = done.get("ablate/interrupted_at", save_on_signal.stopped_at)
        if interrupted is not None:
            raise TrainingInterrupted(f"training stopped on a signal at step {int(interrupted)} of {tr.steps}; "
                                      f"{ckpt_dir / 'last.ckpt'} is saved: rerun the same command to resume")
        if steps_done < tr.steps:
            raise RuntimeError(f"training stopped at step {steps_done} of {tr.steps}")
        info = {
            "train_steps": steps_done,
            "images_seen": steps_done * int(tr.batch_size),
            "train_wall_s": wall,
            "resumed_from": resume,
            "skipped_steps": skipped,
        }
        net_state, ema_state = consolidated_state_dicts(module)  # FSDP: gathered on every rank
        if module.net is not training.net:  # FSDP trained a copy
            training.net.load_state_dict(net_state)
        if trainer.is_global_zero:
            atomic_torch_save({"net": net_state, "ema": ema_state, "info": info}, final)
        return training, ema_state, {**info, "reused": False, "train_key": key}


def check_launch(cfg: DictConfig, multirun: bool | None = None) -> None:
    """Refuse ``trainer.strategy=ddp|fsdp`` over several devices inside a local ``-m`` sweep: Lightning would
    create the other ranks by re-executing the command line, i.e. relaunch the whole sweep in each. Processes
    created outside Lightning (torchrun, srun: one SLURM job per sweep point) are fine."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    tr = cfg.trainer
    if str(tr.strategy) not in ("ddp", "fsdp") or not (_is_multirun() if multirun is None else multirun):
        return
    if TorchElasticEnvironment.detect() or SLURMEnvironment.detect():
        return
    try:
        n = int(tr.devices) * int(tr.num_nodes)
    except (TypeError, ValueError):  # "auto", a list of ids: assume several
        n = 2
    if n > 1:
        raise ConfigError(
            f"trainer.strategy={tr.strategy} with trainer.devices={tr.devices} inside a local -m sweep would "
            f"relaunch the whole sweep in every rank (Lightning re-executes the command line). Use "
            f"trainer.strategy=ddp_spawn (or ddp_fork on CPU) for local sweeps, or one job per point on a "
            f"cluster (hydra/launcher=submitit_slurm_gpu), or torchrun for a single run.")


def run(cfg: DictConfig, job_dir: str | Path | None = None) -> dict:
    """One run (train or reuse, then evaluate). ``job_dir``: where the sample grid and W&B files go
    (default: the Hydra job's output directory)."""
    from .evaluate import evaluate_run

    validate(cfg)
    check_launch(cfg)
    job_dir = Path(job_dir) if job_dir is not None else _job_dir()
    check_writable(Path(cfg.out_dir))
    check_writable(job_dir)
    name = axes(cfg)["sampler_tag"]
    logger = _make_logger(cfg, job_dir, name=f"{cfg.study or 'adhoc'}-{train_key(cfg)}-{name}")
    training, ema_state, info = train_or_reuse(cfg, logger)
    return evaluate_run(cfg, training, ema_state, info, job_dir=job_dir, logger=logger)


def _record_failure(cfg: DictConfig, err: BaseException) -> None:
    from .results import append_rows, environment_info

    try:
        row = {**axes(cfg), "study": cfg.study or "adhoc", "status": "failed", "metric": None, "value": None,
               "error": f"{type(err).__name__}: {err}"[:2000], **{f"env_{k}": v for k, v in environment_info().items()}}
        append_rows(cfg.results, [row])
    except Exception:
        pass


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig):
    from .checkpointing import TrainingInterrupted

    try:
        return run(cfg)
    except TrainingInterrupted:
        raise  # the job is being stopped (preemption, time limit): not a failed row, the rerun resumes
    except Exception as e:
        from .distributed import is_global_zero

        if is_global_zero():  # one failure row per job, not one per rank
            _record_failure(cfg, e)
        if _is_multirun():
            # One failing sweep point must not stop the others: record it, print it, go on.
            traceback.print_exc()
            print(f"[ablate] job failed and was recorded in {cfg.results}: {type(e).__name__}: {e}")
            return None
        raise
    finally:
        finish_wandb()


def finish_wandb() -> None:
    """Close the process's W&B run, if any (each job or study row gets its own run)."""
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except Exception:
        pass


if __name__ == "__main__":
    main()
