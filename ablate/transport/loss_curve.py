"""Per-time loss curves L_t for the cost-regularised diffusion coefficient w_KL,eta (SiT eq. 14; see
:class:`ablate.transport.diffusion.WKLEta`): a float64 piecewise-linear curve and its estimate on held-out
data. Paper time: t = 0 data, t = 1 noise.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .interpolants import Interpolant
from .predictions import convert, validate_prediction

__all__ = ["LossCurve", "estimate_loss_curve"]


def _t(t) -> Tensor:
    t = torch.as_tensor(t)
    return t if t.is_floating_point() else t.to(torch.get_default_dtype())


class LossCurve:
    """A per-time loss estimate L_t, linear interpolation between float64 knots (constant beyond the ends)."""

    def __init__(self, t, loss):
        t = torch.as_tensor(t, dtype=torch.float64).flatten()
        loss = torch.as_tensor(loss, dtype=torch.float64).flatten()
        if t.numel() != loss.numel() or t.numel() == 0:
            raise ValueError(
                f"LossCurve needs equally many knots and values, got {t.numel()} and {loss.numel()}"
            )
        if bool((loss < 0).any()) or not bool(torch.isfinite(loss).all()):
            raise ValueError(f"LossCurve values must be finite and >= 0, got {loss.tolist()[:8]}")
        order = torch.argsort(t)
        self.t, self.loss = t[order], loss[order]

    @classmethod
    def constant(cls, value: float) -> "LossCurve":
        return cls([0.0, 1.0], [value, value])

    def __call__(self, t: Tensor) -> Tensor:
        tt = _t(t).to(torch.float64).clamp(self.t[0], self.t[-1])
        if self.t.numel() == 1:
            return self.loss.expand_as(tt).to(_t(t).dtype)
        i = torch.searchsorted(self.t, tt, right=True).clamp(1, self.t.numel() - 1)
        t0, t1, l0, l1 = self.t[i - 1], self.t[i], self.loss[i - 1], self.loss[i]
        return (l0 + (l1 - l0) * (tt - t0) / (t1 - t0)).to(_t(t).dtype)


@torch.no_grad()
def estimate_loss_curve(
    model: Callable,
    data: Tensor,
    interpolant: Interpolant,
    prediction: str,
    *,
    y=None,
    t=None,
    num_t: int = 32,
    t_min: float = 0.01,
    t_max: float = 0.99,
    repeats: int = 1,
    generator=None,
) -> LossCurve:
    """Estimate L_t = E|v_hat(x_t, t) - (alpha'_t x + sigma'_t eps)|^2 / dim on held-out data, for w_KL,eta.

    ``model(x, t, y)`` predicts ``prediction`` in paper time; its output is converted to a velocity.
    This is the training loss at each t (mean over dimensions). It exceeds the excess error
    E|v_hat - v|^2 of the bound by the irreducible conditional variance, so it is a conservative
    (upper) estimate. Knots: ``t`` (float64) or ``num_t`` uniform points in [t_min, t_max].
    """
    validate_prediction(prediction)
    knots = (
        torch.linspace(t_min, t_max, num_t, dtype=torch.float64)
        if t is None
        else torch.as_tensor(t, dtype=torch.float64).flatten()
    )
    losses = []
    for tk in knots.tolist():
        acc = 0.0
        for _ in range(repeats):
            dev = generator.device if generator is not None else data.device
            eps = torch.randn(data.shape, generator=generator, dtype=data.dtype, device=dev).to(data.device)
            tb = torch.full((data.shape[0],), tk, dtype=data.dtype, device=data.device)
            c = interpolant(torch.tensor(tk, dtype=torch.float64)).like(data)  # cast to data's dtype
            x_t = c.alpha * data + c.sigma * eps
            v_hat = convert(model(x_t, tb, y), prediction, "velocity", x_t, c)
            target = c.d_alpha * data + c.d_sigma * eps
            acc += float(((v_hat - target) ** 2).mean())
        losses.append(acc / repeats)
    return LossCurve(knots, losses)
