"""Settings groups that are not math: the ``trainer``, ``eval`` and ``logger`` config groups' targets.

Each one checks its own values when it is built (a bad value names the key and the valid range or choices)
and says which of its fields belong to the training identity (:meth:`TrainerSpec.identity`) or to the
evaluation identity (:meth:`EvalSpec.identity`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["TrainerSpec", "EvalSpec", "LoggerSpec", "NAN_POLICIES", "LOGGERS", "cpu_has_native_bf16",
           "precision_reason"]

NAN_POLICIES = ("stop", "skip")
PROTOCOLS = ("torch-fidelity", "adm")  # how an evaluation scores its samples (ablate/metrics/README.md)
LABELS = ("balanced", "uniform")  # class labels of the samples: i mod K, or uniform draws (DiT/SiT's sample_ddp.py)
LOGGERS = ("wandb", "none")
PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "64-true")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AMX-BF16 or AVX512-BF16; read from ``cpuinfo``).
    ``ABLATE_CPU_BF16=0``/``1`` forces the answer (tests, or a machine where the detection is wrong)."""
    import os

    forced = os.environ.get("ABLATE_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    try:
        with open(cpuinfo) as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    words = set(flags.split())
    return bool({"amx_bf16", "avx512_bf16"} & words)


def precision_reason(trainer) -> str:
    """Why the trainer runs at its precision (printed at start-up)."""
    if trainer.precision != "auto":
        return f"trainer.precision={trainer.precision}"
    if trainer.on_gpu:
        return "auto: a GPU"
    if cpu_has_native_bf16():
        return "auto: this CPU multiplies bf16 natively (AMX-BF16 / AVX512-BF16)"
    return "auto: this CPU has no native bf16 matrix units"


@dataclass
class TrainerSpec:
    """Optimisation and hardware: ``steps`` x global ``batch_size`` (split over devices x nodes), AdamW (``lr``,
    ``weight_decay``), EMA decay, Lightning ``precision`` (``auto``: bf16-mixed on GPUs and on CPUs with native
    bf16 matrix units, else fp32), devices and strategy, checkpoint period, ``compile``, ``nan_policy``."""

    steps: int = 1200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    ema_decay: float = 0.995
    precision: str = "auto"
    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    ckpt_every: int = 500
    log_every: int = 50
    grad_clip: float | None = None
    num_workers: int = 0
    compile: bool = False
    nan_policy: str = "stop"
    fsdp: dict = field(default_factory=lambda: {"sharding": "FULL_SHARD", "activation_checkpointing": False})

    def __post_init__(self):
        _check(self.steps > 0, f"trainer.steps must be > 0, got {self.steps}")
        _check(self.batch_size > 0, f"trainer.batch_size must be > 0, got {self.batch_size}")
        _check(self.lr > 0, f"trainer.lr must be > 0, got {self.lr}")
        _check(0.0 <= self.ema_decay < 1.0, f"trainer.ema_decay must be in [0, 1), got {self.ema_decay}")
        _check(self.nan_policy in NAN_POLICIES, f"trainer.nan_policy={self.nan_policy!r} is not valid; valid "
               f"choices: {list(NAN_POLICIES)}")
        _check(str(self.precision) in PRECISIONS, f"trainer.precision={self.precision!r} is not valid; valid "
               f"choices: {list(PRECISIONS)}")
        self.fsdp = dict(self.fsdp or {})
        if str(self.strategy) == "fsdp":
            from ..scale.fsdp import sharding_of

            sharding_of(self)
            _check(not self.compile, "trainer.compile=true with trainer.strategy=fsdp is not supported (torch.compile "
                   "of FSDP1-wrapped blocks); valid: compile with ddp, or fsdp without compile")
        if isinstance(self.devices, int):
            _check(self.batch_size % self.world == 0, f"trainer.batch_size={self.batch_size} (global) is not "
                   f"divisible by devices x nodes = {self.world}")

    @property
    def world(self) -> int:
        """Processes = devices x nodes (an integer ``devices``; ``auto`` or a list counts as several)."""
        try:
            return int(self.devices) * int(self.num_nodes)
        except (TypeError, ValueError):
            return 2

    @property
    def on_gpu(self) -> bool:
        import torch

        return self.accelerator in ("gpu", "cuda") or (self.accelerator == "auto" and torch.cuda.is_available())

    @property
    def resolved_precision(self) -> str:
        """``precision`` with ``auto`` decided: bf16-mixed on a GPU or a CPU with native bf16, else 32-true."""
        if self.precision != "auto":
            return str(self.precision)
        return "bf16-mixed" if self.on_gpu or cpu_has_native_bf16() else "32-true"

    def identity(self) -> dict:
        """The fields that change the trained weights (devices, strategy, compile and logging do not)."""
        keep = ("steps", "batch_size", "lr", "weight_decay", "ema_decay", "grad_clip", "nan_policy")
        return {**{k: getattr(self, k) for k in keep}, "precision": self.resolved_precision}


@dataclass
class EvalSpec:
    """What an evaluation samples and scores: ``num_samples`` per evaluation seed, ``batch_size``, in-loop period
    ``every_n_steps`` (0 = end only), ``metrics``, the reference ``reference_split`` and ``extractor``
    (``auto``: the dataset's own, or Inception for real images), ``seeds`` (one evaluation per seed, each a
    fresh set of samples: the evaluation noise), the sample ``grid`` size and the sampling ``precision``."""

    num_samples: int = 1000
    batch_size: int = 500
    every_n_steps: int = 0
    metrics: list = field(default_factory=lambda: ["fid"])
    reference_split: str = "test"
    extractor: str = "auto"
    inception_weights: str | None = None
    grid: int = 64
    seeds: list = field(default_factory=lambda: [0])
    precision: str = "auto"
    protocol: str = "torch-fidelity"
    reference: str | None = None
    export: bool = False
    conversion: str = "dit"
    labels: str = "balanced"

    def __post_init__(self):
        _check(self.num_samples > 0, f"eval.num_samples must be > 0, got {self.num_samples}")
        _check(self.batch_size > 0, f"eval.batch_size must be > 0, got {self.batch_size}")
        _check(self.every_n_steps >= 0, f"eval.every_n_steps must be >= 0, got {self.every_n_steps}")
        self.seeds = [self.seeds] if isinstance(self.seeds, int) else list(self.seeds)
        _check(len(self.seeds) > 0 and all(isinstance(s, int) and s >= 0 for s in self.seeds),
               f"eval.seeds must be a non-empty list of integers >= 0, got {self.seeds}")
        _check(len(set(self.seeds)) == len(self.seeds), f"eval.seeds has duplicates: {self.seeds}")
        _check(self.precision in ("auto", "fp32", "bf16"), f"eval.precision={self.precision!r} is not valid; valid "
               "choices: ['auto', 'fp32', 'bf16']")
        self.metrics = list(self.metrics)
        _check(self.protocol in PROTOCOLS, f"eval.protocol={self.protocol!r} is not valid; valid choices: "
               f"{list(PROTOCOLS)}")
        _check(self.labels in LABELS, f"eval.labels={self.labels!r} is not valid; valid choices: {list(LABELS)}")
        _check(self.conversion in ("dit", "adm"), f"eval.conversion={self.conversion!r} is not valid; valid "
               "choices: ['dit', 'adm']")
        if self.protocol == "adm":
            from ..metrics.adm import METRICS as ADM_METRICS

            _check(self.reference is not None, "eval.protocol=adm needs eval.reference=<ADM reference batch .npz, "
                   "e.g. VIRTUAL_imagenet256_labeled.npz>")
            bad = sorted(set(self.metrics) - set(ADM_METRICS))
            _check(not bad, f"eval.metrics {bad} are not ADM metrics; valid choices: {list(ADM_METRICS)}")
        else:
            from ..metrics.fid import METRICS as FIDELITY_METRICS

            bad = sorted(set(self.metrics) - set(FIDELITY_METRICS))
            _check(not bad, f"eval.metrics {bad} are not torch-fidelity metrics here; valid choices: "
                   f"{list(FIDELITY_METRICS)} (sFID is an ADM metric: eval.protocol=adm)")

    def resolved_precision(self, on_gpu: bool) -> str:
        """Sampling precision: ``auto`` = bf16 autocast on GPUs and on CPUs with native bf16, else fp32."""
        if self.precision != "auto":
            return self.precision
        return "bf16" if on_gpu or cpu_has_native_bf16() else "fp32"

    def identity(self) -> dict:
        """What makes two evaluations comparable (the evaluation seed is recorded per row)."""
        ident = {"num_samples": self.num_samples, "reference_split": self.reference_split, "extractor": self.extractor}
        if self.labels != "balanced":
            ident["labels"] = self.labels
        if self.protocol == "adm":  # (the default protocol adds nothing: its identity reads as it always has)
            from pathlib import Path

            ident.update(protocol=self.protocol, reference=Path(self.reference).name, conversion=self.conversion)
        return ident


@dataclass
class LoggerSpec:
    """W&B (offline by default: no network) or ``none``; the local results store is always written."""

    name: str = "wandb"
    mode: str = "offline"
    project: str = "ablate"
    entity: str | None = None

    def __post_init__(self):
        _check(self.name in LOGGERS, f"logger={self.name!r} is not valid; valid choices: {list(LOGGERS)}")
        _check(self.mode in ("offline", "online", "disabled"), f"logger.mode={self.mode!r} is not valid; valid "
               "choices: ['offline', 'online', 'disabled']")

    def describe(self) -> dict:
        return asdict(self)
