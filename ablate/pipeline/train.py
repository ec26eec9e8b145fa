"""Training: the built objects a run trains with, and ``train_or_reuse`` (train once per training config).

A checkpoint is content-addressed by the experiment's training key (``<out_dir>/checkpoints/<key>``) and carries
its training config: ``final.pt`` = ``{net, ema, info, config}``, where ``config`` holds the training groups
as composed (``time`` ... ``trainer``, ``seed``, ``train_eps``) and the training identity, so a standalone
evaluation rebuilds exactly what was trained (``ablate.evaluate``). An interrupted run resumes from its
``last.ckpt``; concurrent jobs with the same key wait on a lock, so a sweep over sampling axes trains each
training configuration once.
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = ["Training", "build_training", "train_or_reuse", "Predict", "ContinuousLoss", "DiscreteLoss",
           "checkpoint_config"]


@dataclass
class Training:
    """Built objects for training: the network, how to compute the per-sample loss, and how to predict."""

    net: Any
    loss_fn: Callable  # loss_fn(net, x0, y) -> per-sample loss [B]
    predict_fn: Callable  # predict_fn(net) -> model(x, t, y) in paper time (continuous) or index (discrete)
    ddpm: Any = None


def build_training(exp) -> Training:
    """The network (initial weights a function of the seed), the loss and the prediction function."""
    from ..transport.loss import build_objective

    torch.manual_seed(int(exp.seed))
    net = exp.model.build()
    if exp.time.kind == "discrete":
        return Training(net=net, loss_fn=DiscreteLoss(exp.ddpm, exp.time), predict_fn=Predict(exp.time),
                        ddpm=exp.ddpm)
    objective = build_objective(exp.interpolant, exp.prediction, exp.weighting, exp.time_density, exp.train_eps)
    predict_fn = Predict(exp.time, exp.model.in_channels if exp.model.learn_sigma else None)
    return Training(net=net, loss_fn=ContinuousLoss(objective, predict_fn), predict_fn=predict_fn)


# The injected callables are module-level classes, not closures, so that the LightningModule pickles
# (``trainer.strategy=ddp_spawn`` sends it to the spawned processes).


@dataclass
class Predict:
    """``net -> f(x, t, y)`` in paper time; ``channels``: keep the first ``channels`` outputs (a learned-sigma
    head's mean), ``None`` for all."""

    axis: Any
    channels: int | None = None

    def __call__(self, net):
        f = self.axis.wrap(net)
        return f if self.channels is None else FirstChannels(f, self.channels)


@dataclass
class FirstChannels:
    f: Any
    channels: int

    def __call__(self, x, t, y=None):
        return self.f(x, t, y)[:, : self.channels]


@dataclass
class ContinuousLoss:
    """Per-sample training loss of a continuous-time objective (``ablate.transport.loss``)."""

    objective: Any
    predict: Predict

    def __call__(self, net, x0, y):
        return self.objective.loss(self.predict(net), x0, y)["loss"]


@dataclass
class DiscreteLoss:
    """Per-sample DDPM training loss (L_simple + VB when the variance is learned), t uniform on the grid."""

    ddpm: Any
    axis: Any

    def __call__(self, net, x0, y):
        t = torch.randint(0, self.axis.num_timesteps, (x0.shape[0],), device=x0.device)
        return self.ddpm.training_losses(self.axis.wrap(net), x0, t, y)["loss"]


def checkpoint_config(exp) -> dict:
    """What a checkpoint stores about itself: the composed training groups, the identity and the key."""
    return {"groups": exp.extra.get("train_groups", {}), "train_config": exp.train_config(),
            "train_key": exp.train_key}


def train_or_reuse(exp, logger=None, callbacks=(), job_dir: Path | None = None):
    """Return (training, ema state dict, info) for the experiment's training key, training only if needed.

    ``callbacks``: extra Lightning callbacks (fault injection in tests); ``job_dir``: where in-loop evaluations
    write their grids.
    """
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from ..scale.distributed import broadcast_object, init_from_cluster_env
    from ..scale.fsdp import build_strategy, consolidated_state_dicts
    from .checkpointing import (
        AtomicCheckpointIO,
        SaveOnSignal,
        TrainingInterrupted,
        atomic_torch_save,
        file_lock,
        load_checkpoint,
    )
    from .evaluation import InLoopEval
    from .jobs import tune_allocator
    from .lit import DiTLitModule, StepData
    from .specs import precision_reason

    key = exp.train_key
    ckpt_dir = Path(exp.out_dir) / "checkpoints" / key
    final = ckpt_dir / "final.pt"
    training = build_training(exp)
    # Under srun/torchrun (one process per device) rank 0 alone takes the lock and decides; the others follow.
    rank, _ = init_from_cluster_env()
    with file_lock(ckpt_dir / ".lock") if rank == 0 else nullcontext():
        if broadcast_object(bool(exp.reuse and final.exists())):
            state = load_checkpoint(final)
            training.net.load_state_dict(state["net"])
            info = {**state["info"], "reused": True, "train_key": key}
            return training, state["ema"], info
        stored = checkpoint_config(exp)
        (ckpt_dir / "train_config.json").write_text(json.dumps(stored, indent=2, default=str))
        tr = exp.trainer
        # FSDP wraps the trained network's blocks in place: it trains a copy, and training.net stays a plain
        # module for evaluation (in-loop and final, with the gathered weights loaded into copies of it).
        net = copy.deepcopy(training.net) if str(tr.strategy) == "fsdp" else training.net
        module = DiTLitModule(
            net, training.loss_fn, lr=tr.lr, weight_decay=tr.weight_decay, ema_decay=tr.ema_decay,
            seed=exp.seed, nan_policy=tr.nan_policy, conditional=exp.data.num_classes > 0, config=stored,
        )
        if tr.compile:  # torch.compile the forward in place: parameter names (checkpoints) do not change
            module.net.compile()
        if tr.on_gpu:
            torch.set_float32_matmul_precision("high")  # TF32 for the matmuls that bf16-mixed leaves in fp32
        print(f"[ablate] training precision {tr.resolved_precision} ({precision_reason(tr)}); {tune_allocator()}")
        dataset = exp.data.train_set()
        ckpt_cb = ModelCheckpoint(
            dirpath=ckpt_dir, save_last=True, save_top_k=0, every_n_train_steps=tr.ckpt_every,
            enable_version_counter=False,
        )
        save_on_signal = SaveOnSignal(ckpt_dir / "last.ckpt")
        callbacks = [save_on_signal, *callbacks]
        if int(exp.eval.every_n_steps) > 0:
            callbacks.append(InLoopEval(exp, training, int(exp.eval.every_n_steps), logger, job_dir))
        trainer = L.Trainer(
            max_steps=tr.steps, accelerator=tr.accelerator, devices=tr.devices, num_nodes=tr.num_nodes,
            strategy=build_strategy(tr), precision=tr.resolved_precision,
            logger=logger if logger is not None else False,
            callbacks=[ckpt_cb, *callbacks], plugins=[AtomicCheckpointIO()], log_every_n_steps=tr.log_every,
            gradient_clip_val=tr.grad_clip, enable_model_summary=False, num_sanity_val_steps=0,
            default_root_dir=str(ckpt_dir), deterministic=False, enable_progress_bar=_interactive(),
            use_distributed_sampler=False,  # StepSampler already gives each rank its share of the global batch
        )

        resume = exp.ckpt_path
        if resume is None and (ckpt_dir / "last.ckpt").exists():
            resume = str(ckpt_dir / "last.ckpt")
        t0 = time.time()
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")  # the EMA copy, by design
        trainer.fit(module, datamodule=StepData(dataset, int(tr.batch_size), int(exp.seed), int(tr.num_workers)),
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
            "resumed_from": None if resume is None else Path(resume).name,
            "skipped_steps": skipped,
        }
        net_state, ema_state = consolidated_state_dicts(module)  # FSDP: gathered on every rank
        if module.net is not training.net:  # FSDP trained a copy
            training.net.load_state_dict(net_state)
        if trainer.is_global_zero:
            atomic_torch_save({"net": net_state, "ema": ema_state, "info": info, "config": stored}, final)
        return training, ema_state, {**info, "reused": False, "train_key": key}


def _interactive() -> bool:
    """Progress bars only on a terminal: a log file would get one line per refresh."""
    import sys

    return sys.stderr.isatty()
