"""Gaussian data N(mu, s^2 I): closed-form predictions of every type for every interpolant (an oracle model).

x_t = alpha x0 + sigma eps ~ N(alpha mu, (alpha^2 s^2 + sigma^2) I) =: N(m_t, V_t I), and
E[x0 | x_t] = mu + alpha s^2 (x_t - m_t) / V_t, E[eps | x_t] = sigma (x_t - m_t) / V_t,
score = -(x_t - m_t) / V_t, velocity = alpha' E[x0|x_t] + sigma' E[eps|x_t]. The probability-flow ODE maps
x_a to x_b = m_b + sqrt(V_b / V_a) (x_a - m_a) exactly.
"""

from __future__ import annotations

import math

import torch


class GaussianOracle:
    def __init__(self, interpolant, mu, s: float):
        self.interpolant = interpolant
        self.mu = torch.as_tensor(mu, dtype=torch.float64)
        self.s = float(s)
        self.dim = self.mu.numel()

    def moments(self, t):
        t = torch.as_tensor(t, dtype=torch.float64)
        c = self.interpolant(t)
        return c, c.alpha * self.mu, c.alpha**2 * self.s**2 + c.sigma**2

    def model(self, prediction: str):
        def f(x, t, y=None):
            tt = t.to(torch.float64).reshape(-1, *([1] * (x.ndim - 1)))
            c = self.interpolant(tt)
            m = c.alpha * self.mu
            v_t = c.alpha**2 * self.s**2 + c.sigma**2
            r = (x.to(torch.float64) - m) / v_t
            x0 = self.mu + c.alpha * self.s**2 * r
            eps = c.sigma * r
            out = {"x0": x0, "noise": eps, "score": -r, "velocity": c.d_alpha * x0 + c.d_sigma *
            eps}[prediction]
            return out.to(x.dtype)

        return f

    def flow(self, x, t_from: float, t_to: float):
        _, ma, va = self.moments(t_from)
        _, mb, vb = self.moments(t_to)
        return mb + math.sqrt(float(vb / va)) * (x - ma)

    def sample(self, n: int, generator=None):
        return self.mu + self.s * torch.randn(n, self.dim, generator=generator, dtype=torch.float64)

    def nll(self, x):
        d = self.dim
        return 0.5 * (((x - self.mu) / self.s) ** 2).sum(1) + 0.5 * d * math.log(2 * math.pi * self.s**2)
