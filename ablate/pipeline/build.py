"""From a composed Hydra config to built objects: every axis instantiated once, combinations checked, identity.

Every config group points at the class (or function) that owns the axis (``_target_`` + its arguments, the
lightning-hydra-template convention): the class is the only list of the axis's choices, checks its own
arguments and says what it is (``describe()``). :func:`build_experiment` instantiates each group once, checks
the combinations that involve several axes, and returns an :class:`Experiment`: built objects and run settings.
Nothing downstream reads the config dict; the training key, the results row and the W&B config all come from
the built objects.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["ConfigError", "Experiment", "build_experiment", "BUILT_GROUPS", "TRAIN_GROUPS", "TRAIN_SETTINGS"]

# The config groups built by instantiate, in build order; every other top-level key is a run setting.
BUILT_GROUPS = ("time", "prediction", "interpolant", "weighting", "time_density", "model", "data", "trainer",
                "eval", "guidance", "sde_coef", "sampler", "logger")
# The groups and settings that decide the trained weights: a checkpoint stores them as composed.
TRAIN_GROUPS = ("time", "prediction", "interpolant", "weighting", "time_density", "model", "data", "trainer")
TRAIN_SETTINGS = ("seed", "train_eps")


class ConfigError(ValueError):
    """An invalid axis value or combination, found before any work starts."""


def _missing(cfg: DictConfig, group: str) -> list[str]:
    node = cfg.get(group)
    if not isinstance(node, DictConfig):
        return []
    return [f"{group}.{k}" for k in node.keys() if OmegaConf.is_missing(node, k)]


def _placeholders(cfg: DictConfig, group: str) -> list[str]:
    """Keys still holding a printed placeholder such as ``LATENTS_FILE`` (``studies show --scale paper``)."""
    node = cfg.get(group)
    if not isinstance(node, DictConfig):
        return []
    return [f"{group}.{k}={node[k]}" for k in node.keys() if not OmegaConf.is_missing(node, k)
            and isinstance(node[k], str) and re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+", node[k])]


def _instantiate(cfg: DictConfig, group: str):
    """Build one group; any error becomes a ConfigError that names the group and keeps the owner's message."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(cfg[group])
    except InstantiationException as e:
        cause = e.__cause__ or e
        raise ConfigError(f"{group}: {_message(cause)}") from None
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"{group}: {_message(e)}") from None


def _message(e: BaseException) -> str:
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return msg.splitlines()[0] if msg else type(e).__name__


def _group(cfg: DictConfig, group: str) -> str:
    """``group=<option>`` as chosen (``hydra.runtime.choices``, under ``python -m ablate.run``), else the group."""
    try:
        from hydra.core.hydra_config import HydraConfig

        choice = HydraConfig.get().runtime.choices.get(group)
    except Exception:  # composed outside Hydra's main (tests, the studies): the group's own name, if it has one
        node = cfg.get(group)
        choice = node.get("name") if isinstance(node, DictConfig) else None
    return f"{group}={choice}" if choice else group


@dataclass
class Experiment:
    """One run's built objects (``time`` ... ``logger``) and its plain settings (``seed``, ``study``, ...).

    ``sampler`` is the sampler as configured; :meth:`make_sampler` rebuilds it with a per-time loss curve for
    coefficients that need one (w_KL,eta). ``ddpm``: the DDPM process of discrete time (else None).
    """

    time: Any
    prediction: str
    interpolant: Any
    weighting: str
    time_density: Any
    model: Any
    data: Any
    trainer: Any
    eval: Any
    guidance: Any
    sde_coef: Any
    sampler_factory: Any
    logger: Any
    sampler: Any = None
    ddpm: Any = None
    seed: int = 0
    study: str | None = None
    row: str | None = None
    scale: str | None = None
    out_dir: str = "runs"
    results: str = "runs/results.jsonl"
    ckpt_path: str | None = None
    reuse: bool = True
    redo: bool = False
    train_eps: float | None = None
    sample_eps: float | None = None
    extra: dict = field(default_factory=dict)

    # ------------------------------------------------------------------------------------------ sampling
    def sampling_context(self, loss_curve=None):
        from ..sampling.base import SamplingContext

        coef = self.sde_coef
        if loss_curve is not None:
            coef = _with_loss(coef, loss_curve)
        return SamplingContext(
            interpolant=self.interpolant, prediction=self.prediction, coefficient=coef, ddpm=self.ddpm,
            guidance_scale=self.guidance.scale, legacy_channels=self.guidance.legacy_channels,
            null_class=self.data.num_classes if self.data.num_classes > 0 else None, sample_eps=self.sample_eps)

    def make_sampler(self, loss_curve=None):
        """The configured sampler; ``loss_curve``: the trained model's L_t for coefficients that need one."""
        return self.sampler_factory(self.sampling_context(loss_curve))

    @property
    def needs_loss_curve(self) -> bool:
        return self.sampler is not None and bool(getattr(getattr(self.sampler, "diffusion", None),
                                                          "needs_loss_curve", False))

    # ------------------------------------------------------------------------------------------ identity
    def train_config(self) -> dict[str, Any]:
        """Everything that decides the trained weights: two runs with equal train configs share a checkpoint."""
        d = {"time": self.time.describe(), "prediction": self.prediction, "model": self.model.describe(),
             "data": self.data.describe(), "trainer": self.trainer.identity(), "seed": self.seed}
        if self.time.kind == "continuous":
            d.update(interpolant=self.interpolant.describe(), weighting=self.weighting,
                     time_density=self.objective_density().describe(), train_eps=self.train_eps)
        return d

    @property
    def train_key(self) -> str:
        """Content address of :meth:`train_config` (12 hex digits of a SHA-256)."""
        blob = json.dumps(self.train_config(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def objective_density(self):
        from ..transport.loss import build_objective

        return build_objective(self.interpolant, self.prediction, self.weighting, self.time_density,
                               self.train_eps).time_density

    def axes(self) -> dict[str, Any]:
        """Every axis value, flattened, so that a pandas groupby or a W&B panel can slice by any of them."""
        m = self.model.describe()
        a = {
            "time": self.time.kind,
            "network_time": getattr(self.time, "network_time", None),
            "prediction": self.prediction,
            "interpolant": self.interpolant.name,
            "weighting": self.weighting,
            "time_density": None if self.time.kind == "discrete" else self.objective_density().name,
            **{**dict.fromkeys(("sampler", "solver", "sampler_steps", "nfe_budget", "sde_coef", "sde_coef_norm",
                                "sde_coef_eta", "last_step", "guidance", "sampler_tag")),
               **self.sampler.describe()},
            "guidance_channels": self.guidance.legacy_channels,
            "model": self.model.name,
            # the architecture overrides (None: the preset's value), and any other DiT argument given
            **{f"model_{k}": m.get(k) for k in ("depth", "hidden_size", "num_heads", "patch_size")},
            **{f"model_{k}": v for k, v in m.items() if k not in ("name", "input_size", "in_channels",
                                                                   "num_classes", "learn_sigma")},
            "data": self.data.name,
            "train_steps": self.trainer.steps,
            "batch_size": self.trainer.batch_size,
            "precision": self.trainer.resolved_precision,
            "seed": self.seed,
            "train_eps": self.train_eps,
            "sample_eps": self.sample_eps,
            "study": self.study or "adhoc",
            "row": self.row,
            "scale": self.scale,
        }
        return a

    def wandb_config(self) -> dict[str, Any]:
        """The W&B run config: the flat axes (for grouping) and each object's description (for reference)."""
        return {**self.axes(), "train_key": self.train_key, "objects": {
            "time": self.time.describe(), "interpolant": self.interpolant.describe(), "model": self.model.describe(),
            "data": self.data.describe(), "trainer": self.trainer.identity(), "eval": self.eval.identity(),
            "guidance": self.guidance.describe(), "sampler": self.sampler.describe()}}


def _with_loss(coef, loss_curve):
    """The coefficient factory with the estimated L_t bound (``functools.partial`` from the config)."""
    from functools import partial

    return partial(coef, loss=loss_curve)


def build_experiment(cfg: DictConfig) -> Experiment:
    """Instantiate every axis once, check the combinations, and return the :class:`Experiment`.

    Raises :class:`ConfigError` (naming the axis, the value and the valid choices) before any work starts.
    """
    from ..transport.loss import build_objective

    scale = cfg.get("scale")
    skip = (cfg.get(f"at_{scale}") or {}).get("skip") if scale else None
    if skip:
        raise ConfigError(f"{cfg.get('study')} row {cfg.get('row')} is not run at {scale} scale: {skip}")
    _check_given(cfg)
    built = {g: _instantiate(cfg, g) for g in BUILT_GROUPS if g in cfg}
    time, pred, interp = built["time"], built["prediction"], built["interpolant"]
    model, data, trainer, ev = built["model"], built["data"], built["trainer"], built["eval"]
    exp = Experiment(
        time=time, prediction=pred, interpolant=interp, weighting=built["weighting"],
        time_density=built["time_density"], model=model, data=data, trainer=trainer, eval=ev,
        guidance=built["guidance"], sde_coef=built["sde_coef"], sampler_factory=built["sampler"],
        logger=built["logger"], seed=int(cfg.seed), study=cfg.get("study"), scale=cfg.get("scale"),
        row=None if cfg.get("row") is None else str(cfg.row), out_dir=str(cfg.out_dir), results=str(cfg.results),
        ckpt_path=cfg.get("ckpt_path"), reuse=bool(cfg.get("reuse", True)), redo=bool(cfg.get("redo", False)),
        train_eps=cfg.get("train_eps"), sample_eps=cfg.get("sample_eps"),
        extra={"train_groups": {**{g: OmegaConf.to_container(cfg[g], resolve=True) for g in TRAIN_GROUPS},
                                **{k: cfg.get(k) for k in TRAIN_SETTINGS}}},
    )
    # ------------------------------------------------------------------ combinations of several axes
    values = {"prediction": pred, "interpolant": interp.name, "weighting": exp.weighting}
    wrong = {k: v for k, v in time.requires.items() if values[k] != v}
    if wrong:
        need = ", ".join(f"{k}={v}" for k, v in time.requires.items())
        got = ", ".join(f"{k}={values[k]}" for k in wrong)
        raise ConfigError(f"time={time.kind} needs {need}; got {got}")
    for key in ("train_eps", "sample_eps"):
        v = getattr(exp, key)
        if v is not None and not 0.0 <= v < 0.5:
            raise ConfigError(f"{key}={v!r} is outside [0, 0.5)")
    if time.kind == "continuous":
        try:
            build_objective(interp, pred, exp.weighting, exp.time_density, exp.train_eps)
        except ValueError as e:
            raise ConfigError(f"prediction={pred} weighting={exp.weighting} time_density: {e}") from None
    else:
        from ..transport.ddpm import build_ddpm

        exp.ddpm = build_ddpm(num_timesteps=time.num_timesteps, learn_sigma=model.learn_sigma)
    if model.learn_sigma != time.learn_sigma:
        raise ConfigError(f"model.learn_sigma={model.learn_sigma} contradicts time={time.kind} (learn_sigma="
                          f"{time.learn_sigma}); the time axis decides it")
    family = getattr(getattr(exp.sampler_factory, "func", None), "__self__", None)  # the sampler family class
    if family is not None and family.time_kind != time.kind:
        label = exp.sampler_factory.keywords.get("kind") or family.family
        raise ConfigError(f"sampler={label} samples {family.time_kind} time, but time={time.kind}; choose a "
                          f"{time.kind}-time sampler")
    try:
        exp.sampler = exp.make_sampler(loss_curve=1.0 if _needs_curve(exp.sde_coef) else None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"sampler: {_message(e)}") from None
    if exp.guidance.active and not (data.num_classes > 0 and model.class_dropout_prob > 0):
        raise ConfigError(f"guidance.scale={exp.guidance.scale} needs a class-conditional model trained with class "
                          f"dropout (data.num_classes={data.num_classes}, model.class_dropout_prob="
                          f"{model.class_dropout_prob})")
    if isinstance(trainer.devices, int) and ev.num_samples < trainer.world:
        raise ConfigError(f"eval.num_samples={ev.num_samples} is smaller than the number of ranks (devices x nodes "
                          f"= {trainer.world}): every rank samples a share")
    try:
        data.check_protocol(ev.protocol)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if model.input_size != data.image_size or model.in_channels != data.channels:
        raise ConfigError(f"model {model.name} sees {model.in_channels}x{model.input_size}x{model.input_size} inputs "
                          f"but data={data.name} has {data.channels}x{data.image_size}x{data.image_size}")
    return exp


def _check_given(cfg: DictConfig) -> None:
    """Every value without a default is given, and none is still a placeholder of a printed command: one error
    naming all of them."""
    missing = [(g, m) for g in BUILT_GROUPS for m in _missing(cfg, g)]
    if missing:
        needs = "; ".join(f"{_group(cfg, g)} needs {m}=<value>" for g, m in missing)
        raise ConfigError(f"{needs} (no default): {', '.join(m + '=<value>' for _, m in missing)}")
    held = [h for g in BUILT_GROUPS for h in _placeholders(cfg, g)]
    if held:
        raise ConfigError(f"{', '.join(held)}: still the placeholder of the printed command; replace it with a path")


def _needs_curve(coef) -> bool:
    cls = getattr(coef, "func", coef)
    return bool(getattr(cls, "needs_loss_curve", False))
