"""The LightningModule: thin. Built objects (network, loss function) are injected (ablate/pipeline/train.py).

Determinism and exact resume: every training step re-seeds the global RNG from (seed, global_step), so
the batch, t, noise and class dropout of step k do not depend on what happened before it. With several
processes every rank draws them for the global batch and keeps its share
(:class:`ablate.scale.distributed.GlobalBatchRandom`), so they do not depend on the number of processes either.
A run killed at any moment and resumed from its last checkpoint (weights, EMA, optimizer, step) therefore
ends with the same weights as an uninterrupted one, also when resumed on another number of devices. The data
order comes from :class:`StepSampler`, also a pure function of (seed, step).
"""

from __future__ import annotations

import copy
from typing import Callable, Iterator

import lightning as L
import torch
from torch import Tensor, nn

from .metric_names import TRAIN_LOSS, TRAIN_SKIPPED_STEPS

__all__ = ["DiTLitModule", "StepSampler", "StepData", "NonFiniteLossError", "step_seed"]


class NonFiniteLossError(FloatingPointError):
    pass


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """A 63-bit seed for (run seed, step, rank), stable across processes and resumptions."""
    return (int(seed) * 1_000_003 + int(step) * 7919 + int(rank) * 104_729) % (2**63 - 1)


class StepSampler(torch.utils.data.Sampler[int]):
    """Indices for an endless stream of batches whose order is a pure function of (seed, epoch).

    ``start_step`` skips the batches already consumed, so a resumed run continues the same data order.
    Each rank takes its own contiguous share of every global batch.
    """

    def __init__(self, n: int, global_batch: int, seed: int, start_step: int = 0, rank: int = 0, world: int = 1):
        if global_batch % world:
            raise ValueError(f"global batch {global_batch} is not divisible by world size {world}")
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self.start_step, self.rank, self.world = start_step, rank, world

    def __iter__(self) -> Iterator[int]:
        per_rank = self.global_batch // self.world
        step = self.start_step
        while True:
            epoch, offset = divmod(step * self.global_batch, self.n)
            perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 10_007 + epoch))
            # A batch may straddle two epochs: concatenate the next permutation.
            nxt = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 10_007 + epoch + 1))
            stream = torch.cat([perm, nxt])
            batch = stream[offset : offset + self.global_batch]
            yield from batch[self.rank * per_rank : (self.rank + 1) * per_rank].tolist()
            step += 1

    def __len__(self) -> int:  # endless; Lightning bounds the run by max_steps
        return 2**62


class StepData(L.LightningDataModule):
    """The training stream: ``global_batch / world`` images per rank per step from :class:`StepSampler`,
    starting at the trainer's step (a resumed run continues the same order). A module-level class so that
    it pickles (``ddp_spawn``)."""

    def __init__(self, dataset, global_batch: int, seed: int, num_workers: int = 0):
        super().__init__()
        self.dataset, self.global_batch, self.seed, self.num_workers = dataset, global_batch, seed, num_workers

    def train_dataloader(self):
        trainer = self.trainer
        start = trainer.global_step
        print(f"[ablate] data stream starts at step {start}")
        sampler = StepSampler(len(self.dataset), self.global_batch, self.seed, start_step=start,
                              rank=trainer.global_rank, world=trainer.world_size)
        return torch.utils.data.DataLoader(
            self.dataset, batch_size=self.global_batch // trainer.world_size, sampler=sampler,
            num_workers=self.num_workers, drop_last=True, persistent_workers=self.num_workers > 0,
        )


class DiTLitModule(L.LightningModule):
    """Trains ``net`` with ``loss_fn(net, x0, y) -> per-sample loss``; keeps an EMA copy for evaluation."""

    def __init__(
        self,
        net: nn.Module,
        loss_fn: Callable[[nn.Module, Tensor, Tensor | None], Tensor],
        *,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        ema_decay: float = 0.9999,
        seed: int = 0,
        nan_policy: str = "stop",
        conditional: bool = True,
        config: dict | None = None,
    ):
        """``config``: what the run's checkpoints store about it (its training groups and key), so that a
        ``last.ckpt`` knows what it is as a ``final.pt`` does."""
        super().__init__()
        self.net = net
        self.ema = copy.deepcopy(net).requires_grad_(False).eval()
        self.loss_fn = loss_fn
        self.lr, self.weight_decay, self.betas = lr, weight_decay, tuple(betas)
        self.ema_decay, self.seed, self.nan_policy = ema_decay, seed, nan_policy
        self.conditional = conditional
        self.config = config or {}
        self.skipped_steps = 0

    def configure_optimizers(self):
        fused = all(p.device.type == "cuda" for p in self.net.parameters())
        return torch.optim.AdamW(
            self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay, betas=self.betas,
            **({"fused": True} if fused else {"foreach": True}),
        )

    def on_train_batch_start(self, batch, batch_idx):
        # The same seed on every rank: the step's randomness is drawn for the global batch (see training_step).
        torch.manual_seed(step_seed(self.seed, self.global_step))

    def training_step(self, batch, batch_idx):
        x, y = batch
        world = self.trainer.world_size if self._trainer is not None else 1
        if world > 1:
            # Draw eps, t and class dropout for the whole global batch and keep this rank's slice, so the
            # trajectory does not depend on the number of processes (ablate/scale/distributed.py).
            from ..scale.distributed import GlobalBatchRandom

            with GlobalBatchRandom(self.global_rank, world, x.shape[0]):
                loss = self.loss_fn(self.net, x, y if self.conditional else None).mean()
        else:
            loss = self.loss_fn(self.net, x, y if self.conditional else None).mean()
        # The global-batch loss (mean over ranks): every rank takes the same skip/stop decision and logs it.
        global_loss = loss.detach() if world == 1 else self.trainer.strategy.reduce(loss.detach(), reduce_op="mean")
        if not torch.isfinite(global_loss):
            msg = (f"non-finite training loss {global_loss.item()} at step {self.global_step} "
                   f"(nan_policy={self.nan_policy})")
            if self.nan_policy == "skip":
                self.skipped_steps += 1
                self.log(TRAIN_SKIPPED_STEPS, float(self.skipped_steps))
                print(f"[ablate] {msg}: step skipped")
                return None  # Lightning skips the optimizer step
            raise NonFiniteLossError(msg + ": stopping; set trainer.nan_policy=skip to skip such steps")
        self.log(TRAIN_LOSS, global_loss, prog_bar=True)
        return loss

    def optimizer_step(self, *args, **kwargs):
        super().optimizer_step(*args, **kwargs)
        # Update the EMA right after the optimizer step, before any callback (the checkpoint) sees the state.
        with torch.no_grad():
            # ema <- decay * ema + (1 - decay) * net, fused over all tensors.
            torch._foreach_lerp_(list(self.ema.parameters()), list(self.net.parameters()), 1.0 - self.ema_decay)

    def on_train_end(self):
        # With ddp_fork/ddp_spawn, fit runs in child processes and Lightning returns only the weights and
        # callback_metrics to the main process, not the loop state: send the step counts that way.
        self.trainer.callback_metrics["ablate/global_step"] = torch.tensor(float(self.global_step))
        self.trainer.callback_metrics["ablate/skipped_steps"] = torch.tensor(float(self.skipped_steps))

    def on_save_checkpoint(self, checkpoint):
        checkpoint["ablate"] = {"skipped_steps": self.skipped_steps, "seed": self.seed, "config": self.config}

    def on_load_checkpoint(self, checkpoint):
        self.skipped_steps = checkpoint.get("ablate", {}).get("skipped_steps", 0)
