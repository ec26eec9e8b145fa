"""One registry of sampler names (STYLE habit 7) and :func:`build_sampler`, the only constructor configs need.

Names: ``ode`` (= ``ode_heun``), ``ode_<method>`` for every method of :data:`~ablate.sampling.ode.ODE_METHODS`
(``euler``, ``heun``, ``dopri5``, ``dopri8``, ``bosh3``, ``fehlberg2``, ``adaptive_heun``,
``midpoint``, ``rk4``, ...), ``sde`` (= ``sde_em``), ``sde_em``, ``sde_heun``, and ``ddpm`` / ``ddim``
for discrete-time models.
"""

from __future__ import annotations

from ..transport.diffusion import get_diffusion
from ..transport.interpolants import get_interpolant
from ..transport.predictions import validate_prediction
from .discrete import DiscreteSampler
from .ode import ADAPTIVE_METHODS, ODE_METHODS, ODESampler
from .sde import SDE_METHODS, SDESampler

__all__ = ["SAMPLERS", "build_sampler", "DEFAULT_STEPS"]

SAMPLERS: tuple[str, ...] = (
    ("ode",)
    + tuple(f"ode_{m}" for m in ODE_METHODS)
    + ("sde",)
    + tuple(f"sde_{m}" for m in SDE_METHODS)
    + ("ddpm", "ddim")
)
ALIASES = {"ode": "ode_heun", "sde": "sde_em"}
# Paper defaults: Heun 250 NFE = 125 steps; SDE 250 steps (last step included); DDPM 250; DDIM 50.
DEFAULT_STEPS = {"ode_heun": 125, "ode_euler": 250, "sde_em": 250, "sde_heun": 250, "ddpm": 250, "ddim": 50}


def build_sampler(
    name: str,
    *,
    interpolant=None,
    prediction: str = "velocity",
    steps: int | None = None,
    diffusion="w_kl",
    diffusion_norm: float = 1.0,
    diffusion_kwargs: dict | None = None,
    last_step: str | None = "mean",
    last_step_size: float = 0.04,
    atol: float = 1e-6,
    rtol: float = 1e-3,
    sample_eps: float | None = None,
    guidance_scale: float = 1.0,
    null_class: int | None = None,
    legacy_channels: int | None = None,
    grid: str = "uniform",
    ddpm=None,
    eta: float = 0.0,
):
    """Build the sampler ``name`` (see :data:`SAMPLERS`). Every sampler is called as
    ``sampler(model, z, y=None, *, noise=None, generator=None, seeds=None, return_trajectory=False)``
    and exposes ``.name``, ``.tag`` (for metric names) and ``.expected_nfe`` (None for adaptive solvers).

    ``steps``: ODE solver steps (Heun: 2 NFE each), SDE grid points *including* the last step (SiT's
    ``num_steps``), or respaced DDPM/DDIM steps; defaults in :data:`DEFAULT_STEPS`. ``diffusion``: a name of
    :data:`ablate.transport.diffusion.DIFFUSIONS` (or ``sit:<form>``) or a built coefficient, with
    ``diffusion_norm`` and ``diffusion_kwargs`` (e.g. ``eta``/``loss`` for ``w_kl_eta``). ``ddpm``: the
    :class:`~ablate.transport.ddpm.GaussianDiffusion` that ``ddpm``/``ddim`` wrap; ``eta``: DDIM's eta.
    """
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid choices: {list(SAMPLERS)}")
    key = ALIASES.get(name, name)
    if steps is None:
        steps = DEFAULT_STEPS.get(key, 125)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    guidance = dict(guidance_scale=guidance_scale, null_class=null_class, legacy_channels=legacy_channels)
    if key in ("ddpm", "ddim"):
        return DiscreteSampler(ddpm, key, steps, eta=eta, **guidance)
    if interpolant is None:
        raise ValueError(
            f"sampler {name!r} needs an interpolant (one of 'linear', 'gvp', 'vp' or an Interpolant)"
        )
    interpolant = get_interpolant(interpolant)
    validate_prediction(prediction)
    if key.startswith("ode_"):
        method = key[4:]
        return ODESampler(
            interpolant,
            prediction,
            method,
            None if method in ADAPTIVE_METHODS else steps,
            atol=atol,
            rtol=rtol,
            sample_eps=sample_eps,
            grid=grid,
            **guidance,
        )
    coef = get_diffusion(diffusion, interpolant, diffusion_norm, **(diffusion_kwargs or {}))
    return SDESampler(
        interpolant,
        prediction,
        coef,
        key[4:],
        steps,
        last_step=last_step,
        last_step_size=last_step_size,
        sample_eps=sample_eps,
        grid=grid,
        **guidance,
    )
