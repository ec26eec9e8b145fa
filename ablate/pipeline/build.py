"""From a composed Hydra config to built objects: validation, axes, the training key, the builders.

Everything here runs before any work starts, so a bad value or combination fails at once with a message that
names the axes, the value and the valid choices (STYLE habit 8). Built objects are injected into the
LightningModule and the evaluator (habit 9); nothing downstream reads the config dict.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

__all__ = [
    "ConfigError",
    "validate",
    "axes",
    "train_config",
    "train_key",
    "build_training",
    "build_sampler_from_cfg",
    "sampler_tag",
    "Training",
]

TIMES = ("continuous", "discrete")
DISCRETE_SAMPLERS = ("ddpm", "ddim")
CONTINUOUS_SAMPLERS = ("ode", "sde")
NETWORK_TIMES = ("t", "1-t", "999t")
NAN_POLICIES = ("stop", "skip")


class ConfigError(ValueError):
    """An invalid axis value or combination, found before any work starts."""


def _interp_name(cfg: DictConfig) -> str:
    target = cfg.interpolant.get("_target_", "")
    return {"Linear": "linear", "GVP": "gvp", "VP": "vp"}.get(target.rsplit(".", 1)[-1], target)


def _check(cond: bool, msg: str):
    if not cond:
        raise ConfigError(msg)


def validate(cfg: DictConfig) -> None:
    """Refuse bad values and incompatible combinations, naming the axes and the valid choices."""
    from .transport.loss import TIME_DENSITIES, WEIGHTINGS
    from .transport.predictions import PREDICTIONS

    time, pred, interp = cfg.time.name, cfg.prediction.name, _interp_name(cfg)
    sampler = cfg.sampler.name
    _check(time in TIMES, f"time={time!r} is not a valid choice; valid: {list(TIMES)}")
    _check(pred in PREDICTIONS, f"prediction={pred!r} is not a valid choice; valid: {list(PREDICTIONS)}")
    _check(
        cfg.weighting.name in WEIGHTINGS, f"weighting={cfg.weighting.name!r} is not valid; valid: {list(WEIGHTINGS)}"
    )
    _check(
        cfg.time_density.name in TIME_DENSITIES,
        f"time_density={cfg.time_density.name!r} is not valid; valid: {list(TIME_DENSITIES)}",
    )
    if time == "discrete":
        _check(
            pred == "noise" and interp == "vp",
            f"time=discrete is DDPM: it needs prediction=noise and interpolant=vp, got prediction={pred}, "
            f"interpolant={interp}",
        )
        _check(
            sampler in DISCRETE_SAMPLERS,
            f"time=discrete samples with sampler in {list(DISCRETE_SAMPLERS)}, got sampler={sampler}",
        )
        _check(cfg.weighting.name == "none", "time=discrete uses DiT's hybrid loss: weighting must be none")
    else:
        _check(
            sampler in CONTINUOUS_SAMPLERS,
            f"time=continuous samples with sampler in {list(CONTINUOUS_SAMPLERS)}, got sampler={sampler} "
            f"(ddpm/ddim need time=discrete)",
        )
        nt = cfg.time.get("network_time", "t")
        _check(nt in NETWORK_TIMES, f"time.network_time={nt!r} is not valid; valid: {list(NETWORK_TIMES)}")
    if pred == "velocity":
        _check(
            cfg.weighting.name == "none",
            f"weighting={cfg.weighting.name} applies to score/noise/x0 models; prediction=velocity takes "
            "weighting=none",
        )
    steps = cfg.sampler.get("steps")
    if steps is not None:
        _check(int(steps) == steps and steps > 0, f"sampler.steps must be a positive integer, got {steps!r}")
    _check(cfg.guidance.scale >= 0, f"guidance.scale must be >= 0, got {cfg.guidance.scale!r}")
    if cfg.guidance.scale != 1.0:
        _check(
            cfg.data.num_classes > 0 and cfg.model.class_dropout_prob > 0,
            f"guidance.scale={cfg.guidance.scale} needs a class-conditional model trained with class dropout "
            f"(data.num_classes={cfg.data.num_classes}, model.class_dropout_prob={cfg.model.class_dropout_prob})",
        )
    for key in ("train_eps", "sample_eps"):
        v = cfg.get(key)
        _check(v is None or 0.0 <= v < 0.5, f"{key}={v!r} is outside [0, 0.5)")
    for key in ("root", "reference_root"):
        _check(not (key in cfg.data.keys() and OmegaConf.is_missing(cfg.data, key)),
               f"data={cfg.data.name} needs data.{key}=<path> (it has no default)")
    tr = cfg.trainer
    _check(tr.steps > 0, f"trainer.steps must be > 0, got {tr.steps}")
    _check(tr.batch_size > 0, f"trainer.batch_size must be > 0, got {tr.batch_size}")
    _check(tr.lr > 0, f"trainer.lr must be > 0, got {tr.lr}")
    _check(0.0 <= tr.ema_decay < 1.0, f"trainer.ema_decay must be in [0, 1), got {tr.ema_decay}")
    _check(tr.nan_policy in NAN_POLICIES, f"trainer.nan_policy={tr.nan_policy!r}; valid: {list(NAN_POLICIES)}")
    if str(tr.get("strategy")) == "fsdp":
        from .fsdp import sharding_of

        try:
            sharding_of(tr)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        _check(not tr.get("compile", False), "trainer.compile=true with trainer.strategy=fsdp is not supported "
               "(torch.compile of FSDP1-wrapped blocks); valid: compile with ddp, or fsdp without compile")
    if isinstance(tr.devices, int):
        world = tr.devices * tr.num_nodes
        _check(
            tr.batch_size % world == 0,
            f"trainer.batch_size={tr.batch_size} (global) is not divisible by devices x nodes = {world}",
        )
    ev = cfg.eval
    _check(ev.num_samples > 0, f"eval.num_samples must be > 0, got {ev.num_samples}")
    if isinstance(tr.devices, int):
        _check(ev.num_samples >= tr.devices * tr.num_nodes,
               f"eval.num_samples={ev.num_samples} is smaller than the number of ranks "
               f"(devices x nodes = {tr.devices * tr.num_nodes}): every rank samples a share")
    _check(ev.batch_size > 0, f"eval.batch_size must be > 0, got {ev.batch_size}")
    _check(ev.every_n_steps >= 0, f"eval.every_n_steps must be >= 0, got {ev.every_n_steps}")


def sampler_tag(cfg: DictConfig) -> str:
    """How a sample was produced, for metric names: the built sampler's tag, e.g. ``sde_em-w_kl-nfe250-cfg1.0``."""
    return build_sampler_from_cfg(cfg).tag


def axes(cfg: DictConfig) -> dict[str, Any]:
    """Every axis value, flattened, so a pandas groupby or a W&B panel can slice by any of them."""
    sde = cfg.sampler.name == "sde"
    return {
        "time": cfg.time.name,
        "network_time": cfg.time.get("network_time"),
        "prediction": cfg.prediction.name,
        "interpolant": _interp_name(cfg),
        "weighting": cfg.weighting.name,
        "time_density": cfg.time_density.name,
        "sampler": cfg.sampler.name,
        "solver": cfg.sampler.get("solver", cfg.sampler.name),
        "sampler_steps": cfg.sampler.get("steps"),
        "diffusion": cfg.diffusion.name if sde else None,
        "diffusion_norm": cfg.diffusion.norm if sde else None,
        "last_step": cfg.sampler.get("last_step") if sde else None,
        "guidance": cfg.guidance.scale,
        "model": cfg.model.name,
        # Architecture overrides (e.g. `+model.depth=4` at CPU scale) distinguish rows of one preset.
        "model_depth": cfg.model.get("depth"),
        "model_hidden_size": cfg.model.get("hidden_size"),
        "model_patch_size": cfg.model.get("patch_size"),
        "data": cfg.data.name,
        "train_steps": cfg.trainer.steps,
        "batch_size": cfg.trainer.batch_size,
        "seed": cfg.seed,
        "train_eps": cfg.get("train_eps"),
        "sample_eps": cfg.get("sample_eps"),
        "sampler_tag": sampler_tag(cfg),
        "row": None if cfg.get("row") is None else str(cfg.row),
    }


def train_config(cfg: DictConfig) -> dict[str, Any]:
    """The training-relevant part of the config: two runs with equal train configs share one checkpoint."""
    keep = ("time", "prediction", "interpolant", "weighting", "time_density", "model", "data", "seed", "train_eps")
    d = {k: OmegaConf.to_container(cfg[k], resolve=True) if isinstance(cfg[k], DictConfig) else cfg[k]
         for k in keep}
    tr = OmegaConf.to_container(cfg.trainer, resolve=True)
    # Settings that do not change the trained weights' meaning stay out of the key.
    for k in ("ckpt_every", "log_every", "num_workers", "accelerator", "devices", "num_nodes", "strategy",
              "compile", "fsdp"):
        tr.pop(k, None)
    d["trainer"] = tr
    if d["time"]["name"] == "discrete":
        d.pop("time_density")
    return d


def train_key(cfg: DictConfig) -> str:
    """Content address of the training config (12 hex digits of a SHA-256)."""
    blob = json.dumps(train_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class Training:
    """Built objects for training: the network, how to compute the per-sample loss, and how to predict."""

    net: Any
    loss_fn: Callable  # loss_fn(net, x0, y) -> per-sample loss [B]
    predict_fn: Callable  # predict_fn(net) -> model(x, t, y) in paper time (continuous) or index (discrete)
    ddpm: Any = None


def build_training(cfg: DictConfig) -> Training:
    from hydra.utils import instantiate

    from .models import build_model
    from .transport.loss import build_objective
    from .transport.time import ContinuousTime, DiscreteTime

    m = cfg.model
    import torch

    torch.manual_seed(int(cfg.seed))  # initial weights are a function of the seed
    # Every key of the model group but its name is a DiT argument (e.g. `+model.depth=2` on the CLI).
    net = build_model(m.name, **{k: v for k, v in m.items() if k != "name"})
    channels = m.in_channels
    if cfg.time.name == "discrete":
        from .transport.ddpm import build_ddpm

        ddpm = build_ddpm(num_timesteps=cfg.time.num_timesteps, learn_sigma=m.learn_sigma)
        axis = DiscreteTime(cfg.time.num_timesteps)

        return Training(net=net, loss_fn=DiscreteLoss(ddpm, axis), predict_fn=Predict(axis), ddpm=ddpm)

    interpolant = instantiate(cfg.interpolant)
    density_kw = {k: v for k, v in cfg.time_density.items() if k != "name"}
    objective = build_objective(
        interpolant, cfg.prediction.name, cfg.weighting.name, cfg.time_density.name, cfg.get("train_eps"),
        **density_kw,
    )
    predict_fn = Predict(ContinuousTime(cfg.time.network_time), channels if m.learn_sigma else None)
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
        return f if self.channels is None else _FirstChannels(f, self.channels)


@dataclass
class _FirstChannels:
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
        t = torch_randint(self.axis.num_timesteps, x0)
        return self.ddpm.training_losses(self.axis.wrap(net), x0, t, y)["loss"]


def build_data(cfg: DictConfig, split: str = "train"):
    """The configured dataset: ``(x in [-1, 1] (images) or scaled latents, label)`` items."""
    from .data import ImageFolderDataset, LatentDataset, build_dataset

    d = cfg.data
    if d.name == "image_folder":
        return ImageFolderDataset(d.root, d.image_size, flip_p=0.5 if split == "train" else 0.0)
    if d.name == "latents":
        if split == "train":
            return LatentDataset(d.root, flip=True)
        # FID compares decoded samples with real images at 8x the latent size.
        return ImageFolderDataset(d.reference_root, 8 * d.image_size, flip_p=0.0)
    return build_dataset(d.name, split=split, **({"root": d.root} if d.get("root") else {}))


def torch_randint(n: int, like):
    import torch

    return torch.randint(0, n, (like.shape[0],), device=like.device)


def build_sampler_from_cfg(cfg: DictConfig, ddpm=None, loss_curve=None):
    """The configured sampler (ablate.sampling registry); the diffusion coefficient is chosen here, at sampling
    time. Guidance settings come from the `guidance` group; the null class is ``data.num_classes``.
    ``loss_curve``: the per-time loss L_t that w_kl_eta needs (``ablate.transport.diffusion.estimate_loss_curve``);
    without it (e.g. only to get the tag) w_kl_eta is built with eta = 0."""
    from hydra.utils import instantiate

    from .sampling import build_sampler

    s = cfg.sampler
    kw: dict[str, Any] = {
        "steps": int(s.steps),
        "guidance_scale": float(cfg.guidance.scale),
        "null_class": int(cfg.data.num_classes) if cfg.data.num_classes > 0 else None,
        "legacy_channels": cfg.guidance.legacy_channels,
    }
    if s.name in DISCRETE_SAMPLERS:
        if ddpm is None:
            from .transport.ddpm import build_ddpm

            ddpm = build_ddpm(num_timesteps=cfg.time.num_timesteps, learn_sigma=cfg.model.learn_sigma)
        if s.name == "ddim":
            kw["eta"] = float(s.eta)
        return build_sampler(s.name, ddpm=ddpm, prediction="noise", **kw)
    interpolant = instantiate(cfg.interpolant)
    kw["sample_eps"] = cfg.get("sample_eps")
    if s.name == "ode":
        kw.update(atol=s.atol, rtol=s.rtol)
    else:
        kw.update(diffusion=cfg.diffusion.name, diffusion_norm=float(cfg.diffusion.norm),
                  last_step=None if s.last_step == "none" else s.last_step, last_step_size=s.last_step_size)
        if cfg.diffusion.name == "w_kl_eta":
            eta = float(cfg.diffusion.eta) if loss_curve is not None else 0.0
            kw["diffusion_kwargs"] = {"eta": eta, "loss": loss_curve}
    return build_sampler(f"{s.name}_{s.solver}", interpolant=interpolant, prediction=cfg.prediction.name, **kw)
