"""Probability-flow ODE samplers, paper time, integrated from t_max (noise) down to t_min (data):

.. math::
    \\frac{dX_t}{dt} = v(X_t, t)   \\qquad (\\text{SiT eq. 3; } v \\text{ from any prediction by eq. 9})

Fixed-step solvers on a float64 grid of ``steps + 1`` points (:func:`~ablate.sampling.grids.time_grid`):

- ``euler``: x_{i+1} = x_i + h_i v(x_i, t_i)                                   (1 NFE per step)
- ``heun``:  x' = x_i + h_i v(x_i, t_i),  x_{i+1} = x_i + h_i/2 [v(x_i, t_i) + v(x', t_{i+1})]
  (2 NFE per step, every step: the SiT paper's "Heun, 250 NFE" is 125 steps)

with h_i = t_{i+1} - t_i < 0. ``reverse=True`` integrates the same ODE the other way, from t_min (data) up
to t_max (noise), on the same grid flipped (h_i > 0): encoding, as SiT's ``sample_ode(reverse=True)``
(see :func:`ablate.sampling.encode`). Every other method goes through ``torchdiffeq.odeint``: adaptive ones
(``dopri5``, ``dopri8``, ``bosh3``, ``fehlberg2``, ``adaptive_heun``) with atol/rtol, fixed ones
(``midpoint``, ``rk4``, ``heun3``, ...) on the same grid. NFE is counted by wrapping the model, always.
Adaptive steps are made to land on the end of the interval (torchdiffeq's ``step_t``), so the model is never
evaluated outside [t_min, t_max] (SiT's call steps past the end and interpolates back: at the VP data end
that evaluates t < 0, where sigma is NaN, and the solve fails with "underflow in dt").
"""

from __future__ import annotations

import torch

from ..transport.defaults import sample_interval
from .base import BaseSampler, Field, SampleOutput, SamplingContext, steps_for_nfe
from .grids import time_grid

__all__ = ["ODESampler", "ODE_METHODS", "ADAPTIVE_METHODS"]

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
FIXED_TORCHDIFFEQ = ("midpoint", "rk4", "heun3", "explicit_adams", "implicit_adams")
ODE_METHODS = ("euler", "heun") + ADAPTIVE_METHODS + FIXED_TORCHDIFFEQ
# Network evaluations per step of the fixed-step methods (adaptive ones spend what the tolerance needs).
NFE_PER_STEP = {"euler": 1, "heun": 2, "midpoint": 2, "rk4": 4, "heun3": 3}


class ODESampler(BaseSampler):
    """Sample by integrating the probability-flow ODE with ``method`` (see the module docstring)."""

    family = "ode"
    time_kind = "continuous"
    PAPER_STEPS = {"heun": 125, "euler": 250}  # the papers' budgets (250 NFE): the Python API's default steps

    @classmethod
    def build(cls, ctx: SamplingContext, solver: str = "heun", steps: int | None = None, nfe: int | None = 50,
              atol: float = 1e-6, rtol: float = 1e-3, grid: str = "uniform", t_min: float | None = None,
              t_max: float | None = None) -> "ODESampler":
        """The ``sampler=ode`` config group: ``solver`` (:data:`ODE_METHODS`), a budget of ``nfe`` network
        evaluations (Heun: nfe / 2 steps) unless ``steps`` is given; adaptive solvers use ``atol``/``rtol``;
        ``t_min``/``t_max``: explicit ends of the grid (default: the endpoint table's sample interval)."""
        if solver not in ODE_METHODS:
            raise ValueError(f"sampler.solver={solver!r} is not a valid ODE solver; valid choices: {list(ODE_METHODS)}")
        if solver in ADAPTIVE_METHODS:
            steps = None
        elif steps is None:
            if nfe is None:
                raise ValueError("sampler=ode needs sampler.nfe or sampler.steps")
            steps = steps_for_nfe(lambda k: NFE_PER_STEP.get(solver, 1) * k, nfe, f"the {solver} ODE solver")
        return cls(ctx.interpolant, ctx.prediction, solver, steps, atol=atol, rtol=rtol, sample_eps=ctx.sample_eps,
                   grid=grid, t_min=t_min, t_max=t_max, **ctx.guidance)

    def __init__(
        self,
        interpolant,
        prediction: str,
        method: str = "heun",
        steps: int = 125,
        *,
        atol: float = 1e-6,
        rtol: float = 1e-3,
        sample_eps: float | None = None,
        t_min: float | None = None,
        t_max: float | None = None,
        grid: str = "uniform",
        reverse: bool = False,
        **guidance,
    ):
        super().__init__(**guidance)
        if method not in ODE_METHODS:
            raise ValueError(f"unknown ODE solver {method!r}; valid choices: {list(ODE_METHODS)}")
        if method not in ADAPTIVE_METHODS and (
            not isinstance(steps, int) or isinstance(steps, bool) or steps < 1
        ):
            raise ValueError(f"ODE steps must be an integer >= 1, got {steps!r}")
        if method in ADAPTIVE_METHODS and not (atol > 0 and rtol > 0):
            raise ValueError(
                f"adaptive ODE solvers need atol > 0 and rtol > 0, got atol={atol!r}, rtol={rtol!r}"
            )
        self.field = Field(interpolant, prediction)
        lo, hi = sample_interval(interpolant, prediction, sde=False, eps=sample_eps)
        self.t_min = lo if t_min is None else float(t_min)
        self.t_max = hi if t_max is None else float(t_max)
        self.explicit_interval = t_min is not None or t_max is not None
        self.method, self.steps, self.atol, self.rtol, self.grid = (
            method,
            steps,
            float(atol),
            float(rtol),
            grid,
        )
        self.name = f"ode_{method}"
        self.reverse = bool(reverse)
        self.times = (
            None if method in ADAPTIVE_METHODS else time_grid(self.t_max, self.t_min, steps + 1, grid)
        )
        if self.reverse and self.times is not None:
            self.times = self.times.flip(0)  # t_min (data) -> t_max (noise)

    @property
    def expected_nfe(self) -> int | None:
        per = NFE_PER_STEP.get(self.method)
        return None if per is None else per * self.steps

    @property
    def tag(self) -> str:
        n = self.expected_nfe
        budget = f"nfe{n}" if n is not None else f"tol{self.rtol:g}"
        direction = "-reverse" if self.reverse else ""
        span = f"-t{self.t_min:g}_{self.t_max:g}" if self.explicit_interval else ""
        return f"{self.name}{direction}-{budget}{span}-cfg{self.guidance_scale}"

    def velocity(self, model, x, t, y):
        """The PF-ODE field v(x, t) from one evaluation; ``t`` a float or a per-sample tensor [B]."""
        pred, c = self.field.evaluate(model, x, t, y)
        return self.field.to(pred, "velocity", x, c)

    def __call__(
        self, model, z, y=None, *, noise=None, generator=None, seeds=None, return_trajectory=False
    ) -> SampleOutput:
        m = self.wrap(model)
        if self.method in ("euler", "heun"):
            x, traj = z, [z] if return_trajectory else None
            ts = self.times.tolist()
            for i in range(self.steps):
                t0, t1 = ts[i], ts[i + 1]
                h = t1 - t0
                k1 = self.velocity(m, x, t0, y)
                if self.method == "euler":
                    x = x + h * k1
                else:
                    k2 = self.velocity(m, x + h * k1, t1, y)
                    x = x + 0.5 * h * (k1 + k2)
                if traj is not None:
                    traj.append(x)
            return SampleOutput(x, m.nfe, traj, ts if return_trajectory else None)
        from torchdiffeq import odeint

        def f(t, x):
            return self.velocity(m, x, float(t), y)

        if self.method in ADAPTIVE_METHODS:
            ends = [self.t_min, self.t_max] if self.reverse else [self.t_max, self.t_min]
            t = torch.tensor(ends, dtype=z.dtype, device=z.device)
            # step_t: land a step on the end instead of stepping past it and interpolating back, which would
            # evaluate the model outside [t_min, t_max] (VP beyond t = 0 has alpha > 1: sigma = NaN)
            xs = odeint(f, z, t, method=self.method, atol=self.atol, rtol=self.rtol, options=dict(step_t=t[1:]))
        else:
            t = self.times.to(dtype=z.dtype, device=z.device)
            xs = odeint(f, z, t, method=self.method)
        traj = list(xs) if return_trajectory else None
        times = t.double().tolist() if return_trajectory else None
        return SampleOutput(xs[-1], m.nfe, traj, times)
