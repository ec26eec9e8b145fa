"""Sampler names for the Python API, and :func:`build_sampler`, which dispatches to the sampler families.

A sampler family is a class that sets ``family`` and implements ``build(ctx, **args)`` (see
:class:`~ablate.sampling.base.BaseSampler`); defining it registers it in :data:`SAMPLER_FAMILIES`, and the
``sampler`` config group targets its ``build``. The families' own lists (ODE solvers, SDE solvers, DDPM kinds)
live with them; this module only spells the API names: ``ode`` (= ``ode_heun``), ``ode_<solver>`` for every
solver of :data:`~ablate.sampling.ode.ODE_METHODS`, ``sde`` (= ``sde_em``), ``sde_<solver>``, and ``ddpm`` /
``ddim`` for discrete-time models; a family registered elsewhere is reachable as ``<family>`` or
``<family>_<solver>``.
"""

from __future__ import annotations

from ..transport.diffusion import get_diffusion
from ..transport.interpolants import get_interpolant
from ..transport.predictions import validate_prediction
from .base import SAMPLER_FAMILIES, SamplingContext
from .discrete import DiscreteSampler
from .ode import ODE_METHODS, ODESampler
from .sde import SDE_METHODS, SDESampler

__all__ = ["SAMPLERS", "build_sampler", "DEFAULT_STEPS"]

SAMPLERS: tuple[str, ...] = (
    ("ode",) + tuple(f"ode_{m}" for m in ODE_METHODS) + ("sde",) + tuple(f"sde_{m}" for m in SDE_METHODS)
    + DiscreteSampler.KINDS
)
ALIASES = {"ode": "ode_heun", "sde": "sde_em"}
# The papers' budgets, the API's default when no steps are given (each family states its own: Heun 250 NFE = 125
# steps; SDE 250 steps, last step included; DDPM 250; DDIM 50). The config groups default to equal budgets instead.
DEFAULT_STEPS = {**{f"ode_{k}": v for k, v in ODESampler.PAPER_STEPS.items()},
                 **{f"sde_{k}": v for k, v in SDESampler.PAPER_STEPS.items()}, **DiscreteSampler.PAPER_STEPS}


def build_sampler(
    name: str,
    *,
    interpolant=None,
    prediction: str = "velocity",
    diffusion="w_kl",
    diffusion_norm: float = 1.0,
    diffusion_kwargs: dict | None = None,
    ddpm=None,
    guidance_scale: float = 1.0,
    null_class: int | None = None,
    legacy_channels: int | None = None,
    sample_eps: float | None = None,
    **family_args,
):
    """Build the sampler ``name`` (see :data:`SAMPLERS`). Every sampler is called as
    ``sampler(model, z, y=None, *, noise=None, generator=None, seeds=None, return_trajectory=False)``
    and exposes ``.name``, ``.tag`` (for metric names) and ``.expected_nfe`` (None for adaptive solvers).

    Shared arguments: the ``interpolant`` and ``prediction`` (continuous time), the SDE coefficient ``diffusion``
    (a name of :data:`ablate.transport.diffusion.DIFFUSIONS`, ``sit:<form>``, or a built coefficient) with
    ``diffusion_norm`` and ``diffusion_kwargs`` (e.g. ``eta``/``loss`` for ``w_kl_eta``), the
    :class:`~ablate.transport.ddpm.GaussianDiffusion` ``ddpm`` (discrete time), guidance, ``sample_eps``.
    ``family_args`` go to the family's ``build``: ``steps`` (ODE solver steps, Heun 2 NFE each; SDE grid points
    *including* the last step, SiT's ``num_steps``; respaced DDPM/DDIM steps; default :data:`DEFAULT_STEPS`)
    or ``nfe`` (discrete ``steps`` may also be one of DiT's respacing specs, ``"10,20"`` or ``"ddim25"``); ODE
    ``atol``, ``rtol``, ``grid``; SDE ``last_step``, ``last_step_size``, ``grid``; ODE and SDE ``t_min`` / ``t_max``
    (explicit ends of the grid, default the endpoint table's sample interval); DDIM ``eta``.
    """
    family, _, solver = ALIASES.get(name, name).partition("_")
    builtin = family in ("ode", "sde") or name in DiscreteSampler.KINDS
    if name not in SAMPLERS and (builtin or family not in SAMPLER_FAMILIES):
        raise ValueError(f"unknown sampler {name!r}; valid choices: {list(SAMPLERS)}")
    key = ALIASES.get(name, name)
    steps = family_args.pop("steps", None)
    if steps is None and "nfe" not in family_args:
        steps = DEFAULT_STEPS.get(key, 125)
    if key in DiscreteSampler.KINDS and isinstance(steps, str):
        pass  # one of DiT's respacing specs ("250", "10,20", "ddim25"): DiscreteSampler checks it
    elif steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    ctx = SamplingContext(prediction=validate_prediction(prediction), ddpm=ddpm, guidance_scale=guidance_scale,
                          legacy_channels=legacy_channels, null_class=null_class, sample_eps=sample_eps)
    if key in DiscreteSampler.KINDS:
        return DiscreteSampler.build(ctx, kind=key, steps=steps, **family_args)
    if interpolant is None:
        raise ValueError(f"sampler {name!r} needs an interpolant (one of 'linear', 'gvp', 'vp' or an Interpolant)")
    ctx.interpolant = get_interpolant(interpolant)
    if family == "sde":
        ctx.coefficient = get_diffusion(diffusion, ctx.interpolant, diffusion_norm, **(diffusion_kwargs or {}))
        return SDESampler.build(ctx, solver=solver, steps=steps, **family_args)
    if family == "ode":
        return ODESampler.build(ctx, solver=solver, steps=steps, **family_args)
    return SAMPLER_FAMILIES[family].build(ctx, **({"solver": solver} if solver else {}), steps=steps, **family_args)
