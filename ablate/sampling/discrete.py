"""Discrete-time samplers for DDPM/DiT models, wrapping :class:`ablate.transport.ddpm.GaussianDiffusion`:
ancestral sampling (``ddpm``, DDPM Alg. 2 with IDDPM's learned variance) and DDIM(eta) (Song et al. 2021,
eq. 12). DDIM with eta = 0 is the discretised probability-flow ODE of the discrete model (Song et al. 2021,
Sec. 4.3), so ``ddim`` with ``eta=0`` is the ODE sampler for discrete-time models.

Same call signature as every sampler, but the model is the *discrete* model ``model(x, index, y)`` with DiT's
integer index 0..T-1 (the discrete time axis owns that edge, docs/design.md, "Conventions"). ``steps`` respaces the
schedule (IDDPM Sec. 4: 250 steps keep indices {0, 4, ..., 995, 999}): an int, or any of DiT's respacing
specs (``"250"``, ``"10,20"`` = 10 steps in the first half and 20 in the second, ``"ddim25"`` = the integer
stride giving 25 steps; :func:`ablate.transport.ddpm.space_timesteps`); the NFE is the number of kept indices.
``clip_denoised=False`` as DiT samples.
"""

from __future__ import annotations

from typing import Callable

import torch

from .base import BaseSampler, SampleOutput, SamplingContext, steps_for_nfe
from .noise import step_noise_source

__all__ = ["DiscreteSampler", "as_paper_time"]


class DiscreteSampler(BaseSampler):
    """``kind`` = ``ddpm`` (ancestral) or ``ddim`` (with ``eta``) over ``steps`` respaced indices of
    ``ddpm``."""

    family = "discrete"
    time_kind = "discrete"
    KINDS = ("ddpm", "ddim")
    PAPER_STEPS = dict(zip(KINDS, (250, 50), strict=True))  # DiT's 250 DDPM steps; DDIM 50: the API's default

    @classmethod
    def build(cls, ctx: SamplingContext, kind: str = "ddpm", steps: int | str | None = None, nfe: int | None = 50,
              eta: float = 0.0) -> "DiscreteSampler":
        """The ``sampler=ddpm`` / ``sampler=ddim`` config groups: ``kind``, a budget of ``nfe`` respaced steps
        (one network evaluation each) unless ``steps`` is given (a count, or one of DiT's respacing specs such as
        ``"10,20"`` or ``"ddim25"``), DDIM's ``eta``; the DDPM process comes from the discrete time axis
        (``ctx.ddpm``)."""
        if kind not in cls.KINDS:
            raise ValueError(f"sampler kind {kind!r} is not valid; valid choices: {list(cls.KINDS)}")
        if steps is None:
            if nfe is None:
                raise ValueError(f"sampler={kind} needs sampler.nfe or sampler.steps")
            steps = steps_for_nfe(lambda k: k, nfe, kind)
        return cls(ctx.ddpm, kind, steps, eta=eta, **ctx.guidance)

    def describe(self) -> dict:
        return {**super().describe(), "sampler": self.kind, "solver": self.kind}

    def __init__(self, ddpm, kind: str = "ddpm", steps: int | str = 250, *, eta: float = 0.0, **guidance):
        super().__init__(**guidance)
        from ..transport.ddpm import GaussianDiffusion

        if kind not in self.KINDS:
            raise ValueError(f"unknown discrete sampler {kind!r}; valid choices: {list(self.KINDS)}")
        if not isinstance(ddpm, GaussianDiffusion):
            raise TypeError(
                f"{kind} needs ddpm=GaussianDiffusion (ablate.transport.ddpm.build_ddpm), got {ddpm!r}"
            )
        T = ddpm.num_timesteps
        if isinstance(steps, str):
            spec = steps.replace(" ", "")
        elif isinstance(steps, int) and not isinstance(steps, bool) and 1 <= steps <= T:
            spec = str(steps)
        else:
            raise ValueError(
                f"{kind} steps must be an integer in [1, {T}] or a respacing spec ('250', '10,20', 'ddim25'), "
                f"got {steps!r}"
            )
        if not eta >= 0:
            raise ValueError(f"ddim eta must be >= 0, got {eta!r}")
        self.kind, self.eta, self.respacing = kind, float(eta), spec
        self.name = kind
        if spec in ("", str(T)):
            self.diffusion = ddpm
        else:  # respace this diffusion's own schedule; the network keeps seeing the original indices
            try:
                self.diffusion = ddpm.respaced(spec)
            except ValueError as e:
                raise ValueError(f"{kind} steps {steps!r}: {e}") from None
        self.steps = self.diffusion.num_timesteps  # = the NFE, whatever the form of the spec

    @property
    def expected_nfe(self) -> int:
        return self.steps

    @property
    def tag(self) -> str:
        extra = f"-eta{self.eta:g}" if self.kind == "ddim" else ""
        spec = "" if self.respacing.isdigit() or self.respacing == "" else f"-{self._spec_label()}"
        return f"{self.kind}{spec}-nfe{self.steps}{extra}-cfg{self.guidance_scale}"

    def _spec_label(self) -> str:
        """``ddim25`` as is; per-section counts ``10,20`` as ``r10_20`` (no commas in metric names)."""
        return self.respacing if self.respacing.startswith("ddim") else "r" + self.respacing.replace(",", "_")

    def __call__(
        self, model, z, y=None, *, noise=None, generator=None, seeds=None, return_trajectory=False
    ) -> SampleOutput:
        m, d = self.wrap(model), self.diffusion
        xi = step_noise_source(noise, generator, z, seeds)
        x, traj = z, [z] if return_trajectory else None
        for k, i in enumerate(range(d.num_timesteps - 1, -1, -1)):
            t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
            n = xi(k) if i > 0 else torch.zeros_like(x)
            with torch.no_grad():
                if self.kind == "ddpm":
                    x = d.p_sample(m, x, t, y, noise=n)["sample"]
                else:
                    x = d.ddim_sample(m, x, t, y, eta=self.eta, noise=n)["sample"]
            if traj is not None:
                traj.append(x)
        return SampleOutput(x, m.nfe, traj, None)


def as_paper_time(model: Callable, ddpm) -> Callable:
    """The probability-flow ODE (or SDE) for a discrete-time model: a paper-time *noise* model for the ``vp``
    interpolant, ``f(x, t, y) = model(x, i(t), y)[:, :C]``, where i(t) is the index whose VP-equivalent time
    (:meth:`GaussianDiffusion.to_paper_time`: VP's alpha(t)^2 = alpha_bar_i) is nearest to t, and the learned-
    variance channels (if any) are dropped. Use it with ``build_sampler("ode", interpolant="vp",
    prediction="noise")``: DDIM(eta = 0) is the same ODE discretised on the DDPM grid.
    """
    T = ddpm.num_timesteps
    knots = ddpm.to_paper_time(torch.arange(T))  # increasing in the index, float64

    def f(x, t, y=None):
        tt = t.detach().to(torch.float64).cpu()
        hi = torch.searchsorted(knots, tt).clamp(1, T - 1)
        lo = hi - 1
        i = torch.where((tt - knots[lo]).abs() <= (knots[hi] - tt).abs(), lo, hi)
        out = model(x, ddpm.timestep_map[i].to(x.device), y)
        return out[:, : x.shape[1]] if ddpm.learn_sigma else out

    return f
