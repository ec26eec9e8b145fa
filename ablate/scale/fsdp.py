"""FSDP (``trainer.strategy=fsdp``): parameters, gradients and optimizer state sharded over the ranks.

For models whose weights + AdamW state + EMA do not fit one device. DDP is the default for the paper's sizes
(DiT-XL/2 fits an 80 GB GPU); FSDP trades extra all-gathers for memory. What stays true with FSDP:

- **The trajectory does not depend on the number of ranks**, as with DDP: the data stream and the step
  randomness are the same (:mod:`ablate.scale.distributed`); FSDP's reduce-scatter averages the per-rank gradients.
- **The EMA is sharded alike and stays consistent without communication.** The wrap policy makes every
  ``DiTBlock`` and each whole ``DiT`` (``net`` and ``ema``) its own FSDP unit, so ``ema`` and ``net`` have the
  same flat-parameter layout and every rank holds the same slice of both; ``optimizer_step``'s
  ``ema <- lerp(ema, net)`` then runs on matching local shards (``use_orig_params=True`` exposes them).
- **Checkpoints are full** (``state_dict_type="full"``: one file, written by rank 0, optimizer state in the
  standard per-parameter-id layout), so a run resumes on any number of devices and with any strategy, FSDP to
  DDP or one process and back.
- **Evaluation sees the full EMA**: :func:`consolidated_state_dicts` gathers ``net`` and ``ema`` on every rank
  (a collective: every rank calls it), and the sharded evaluation runs on an unwrapped copy.

``trainer.fsdp.sharding``: ``FULL_SHARD`` (ZeRO-3), ``SHARD_GRAD_OP`` (ZeRO-2: weights kept unsharded between
forward and backward), ``HYBRID_SHARD`` (full shard inside a node, replicate across nodes), ``NO_SHARD``.
``trainer.fsdp.activation_checkpointing=true`` recomputes each DiT block's activations in the backward pass.

Lightning refuses FSDP on a CPU accelerator and torch's FSDP needs an explicit ``device_id`` there; the
strategy below passes ``device_id=cpu`` so that the same code path runs on CPU with gloo (the tests), and is
plain Lightning FSDP on GPUs.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

__all__ = ["FSDP_SHARDING", "sharding_of", "build_strategy", "is_fsdp", "consolidated_state_dicts"]

FSDP_SHARDING = ("FULL_SHARD", "SHARD_GRAD_OP", "HYBRID_SHARD", "NO_SHARD")


def _fsdp_cls():
    from lightning.pytorch.strategies import FSDPStrategy

    class AblateFSDPStrategy(FSDPStrategy):
        """Lightning's FSDP strategy; on a CPU root device (tests, gloo) it wraps with ``device_id=cpu``."""

        def _setup_model(self, model):
            from torch.distributed.fsdp import FullyShardedDataParallel

            if self.root_device.type == "cpu" and not any(
                    isinstance(m, FullyShardedDataParallel) for m in model.modules()):
                model = FullyShardedDataParallel(
                    module=model, cpu_offload=self.cpu_offload, mixed_precision=self.mixed_precision_config,
                    sharding_strategy=self.sharding_strategy, device_id=torch.device("cpu"), **self.kwargs)
                self.kwargs.pop("auto_wrap_policy", None)  # applied above; Lightning would warn it is ignored
            return super()._setup_model(model)

        def optimizer_state(self, optimizer):
            if self.root_device.type != "cpu":
                return super().optimizer_state(optimizer)
            # torch's FSDP all-gathers each optimizer state (exp_avg, then exp_avg_sq) into one reused buffer
            # and, with offload_to_cpu=True, returns views of it when the device already is the CPU (``.cpu()``
            # does not copy): exp_avg would be saved equal to exp_avg_sq. offload_to_cpu=False clones them.
            from lightning.pytorch.core.optimizer import LightningOptimizer
            from torch.distributed.fsdp import (
                FullOptimStateDictConfig,
                FullStateDictConfig,
                OptimStateKeyType,
                StateDictType,
            )
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

            if isinstance(optimizer, LightningOptimizer):
                optimizer = optimizer._optimizer
            with FSDP.state_dict_type(self.model, StateDictType.FULL_STATE_DICT,
                                      FullStateDictConfig(offload_to_cpu=True, rank0_only=True),
                                      FullOptimStateDictConfig(offload_to_cpu=False, rank0_only=True)):
                state = FSDP.optim_state_dict(self.model, optimizer)
                if self.global_rank == 0:  # the standard per-parameter-id layout, loadable without FSDP
                    state = FSDP.rekey_optim_state_dict(state, OptimStateKeyType.PARAM_ID, self.model)
            return state

    return AblateFSDPStrategy


def sharding_of(tr) -> str:
    """``trainer.fsdp.sharding`` upper-cased, or a ValueError naming the valid choices."""
    sharding = str((tr.fsdp or {}).get("sharding", "FULL_SHARD")).upper()
    if sharding not in FSDP_SHARDING:
        raise ValueError(f"trainer.fsdp.sharding={sharding!r} is not one of {', '.join(FSDP_SHARDING)}")
    return sharding


def build_strategy(tr) -> Any:
    """``trainer.strategy`` (+ ``trainer.fsdp``) -> what ``lightning.Trainer(strategy=...)`` takes: ``fsdp`` is
    built here, any other name goes to Lightning unchanged (which names its valid choices)."""
    name = str(tr.strategy)
    if name != "fsdp":
        return name
    from ..models.dit import DiT, DiTBlock

    opts = tr.fsdp or {}
    sharding = sharding_of(tr)
    return _fsdp_cls()(
        auto_wrap_policy={DiTBlock, DiT},  # each block, and net / ema as wholes: identical layouts (see above)
        activation_checkpointing_policy={DiTBlock} if opts.get("activation_checkpointing", False) else None,
        sharding_strategy=sharding,
        state_dict_type="full",
        use_orig_params=True,
    )


def is_fsdp(trainer) -> bool:
    from torch.distributed.fsdp import FullyShardedDataParallel

    return trainer is not None and isinstance(getattr(trainer, "model", None), FullyShardedDataParallel)


def consolidated_state_dicts(module) -> tuple[dict, dict]:
    """``(net, ema)`` full state dicts of a :class:`ablate.pipeline.lit.DiTLitModule`, on CPU.

    Under FSDP this gathers the shards on every rank (a collective: all ranks must call it); otherwise it is
    ``module.net.state_dict(), module.ema.state_dict()``.
    """
    trainer = module._trainer
    if not is_fsdp(trainer):
        return module.net.state_dict(), module.ema.state_dict()
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    root = trainer.model
    with warnings.catch_warnings():  # every rank needs the full EMA (sharded evaluation): rank0_only=False
        warnings.filterwarnings("ignore", message=".*rank0_only=False.*")
        with FSDP.state_dict_type(root, StateDictType.FULL_STATE_DICT,
                                  FullStateDictConfig(offload_to_cpu=True, rank0_only=False)):
            full = root.state_dict()
    net = {k[len("net."):]: v for k, v in full.items() if k.startswith("net.")}
    ema = {k[len("ema."):]: v for k, v in full.items() if k.startswith("ema.")}
    return net, ema
