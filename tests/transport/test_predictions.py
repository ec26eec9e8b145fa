"""Prediction conversions: round trips for every pair; exact fields for Gaussian data; endpoint errors."""

import itertools

import pytest
import torch

from ablate.transport.interpolants import GVP, VP, Linear
from ablate.transport.predictions import PREDICTIONS, EndpointError, convert, from_x0_eps, validate_prediction

F64 = torch.float64
INTERPS = [Linear(), GVP(), VP()]


def _batch(interp, seed=0):
    g = torch.Generator().manual_seed(seed)
    x_t = torch.randn(6, 3, 4, dtype=F64, generator=g)
    t = torch.linspace(0.05, 0.95, 6, dtype=F64)
    return x_t, interp(t).like(x_t), g


@pytest.mark.parametrize("interp", INTERPS, ids=repr)
@pytest.mark.parametrize("src,dst", list(itertools.permutations(PREDICTIONS, 2)))
def test_round_trip_every_pair(interp, src, dst):
    x_t, c, g = _batch(interp)
    pred = torch.randn(x_t.shape, dtype=F64, generator=g)
    back = convert(convert(pred, src, dst, x_t, c), dst, src, x_t, c)
    torch.testing.assert_close(back, pred, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("interp", INTERPS, ids=repr)
def test_targets_from_x0_eps_are_consistent(interp):
    """Converting the exact conditional target of one kind gives the exact target of every other kind."""
    x_t, c, g = _batch(interp, 1)
    x0 = torch.randn(x_t.shape, dtype=F64, generator=g)
    eps = torch.randn(x_t.shape, dtype=F64, generator=g)
    x_t = c.alpha * x0 + c.sigma * eps
    for src, dst in itertools.product(PREDICTIONS, PREDICTIONS):
        got = convert(from_x0_eps(src, x0, eps, c), src, dst, x_t, c)
        torch.testing.assert_close(got, from_x0_eps(dst, x0, eps, c), rtol=1e-10, atol=1e-10)


def _gaussian_fields(interp, mu, s, x_t, t):
    """Exact E[x0|x_t], E[eps|x_t], score and velocity for data N(mu, s^2 I):
    x_t ~ N(alpha mu, (alpha^2 s^2 + sigma^2) I); E[x0|x_t] = mu + alpha s^2 (x_t - alpha mu) / var,
    E[eps|x_t] = sigma (x_t - alpha mu) / var, score = -(x_t - alpha mu) / var,
    v = alpha' E[x0] + sigma' E[eps]."""
    c = interp(t).like(x_t)
    var = c.alpha**2 * s**2 + c.sigma**2
    r = x_t - c.alpha * mu
    x0 = mu + c.alpha * s**2 * r / var
    eps = c.sigma * r / var
    return dict(x0=x0, noise=eps, score=-r / var, velocity=c.d_alpha * x0 + c.d_sigma * eps), c


@pytest.mark.parametrize("interp", INTERPS, ids=repr)
def test_gaussian_closed_forms_convert_exactly(interp):
    mu, s = 0.7, 0.4
    t = torch.linspace(0.02, 0.98, 8, dtype=F64)
    x_t = torch.randn(8, 5, dtype=F64, generator=torch.Generator().manual_seed(2))
    fields, c = _gaussian_fields(interp, mu, s, x_t, t)
    # the score is the autograd gradient of the Gaussian log density of x_t
    x = x_t.clone().requires_grad_(True)
    var = c.alpha**2 * s**2 + c.sigma**2
    (grad,) = torch.autograd.grad((-((x - c.alpha * mu) ** 2) / (2 * var)).sum(), x)
    torch.testing.assert_close(fields["score"], grad)
    for src, dst in itertools.product(PREDICTIONS, PREDICTIONS):
        torch.testing.assert_close(convert(fields[src], src, dst, x_t, c), fields[dst], rtol=1e-9, atol=1e-9)


def test_score_from_velocity_is_sit_eq9():
    """s = (alpha v - alpha' x_t) / (sigma (alpha' sigma - alpha sigma')) (SiT eq. 9); v = a'/a x - lam s."""
    interp = GVP()
    x_t, c, g = _batch(interp, 3)
    v = torch.randn(x_t.shape, dtype=F64, generator=g)
    s = convert(v, "velocity", "score", x_t, c)
    eq9 = (c.alpha * v - c.d_alpha * x_t) / (c.sigma * (c.d_alpha * c.sigma - c.alpha * c.d_sigma))
    torch.testing.assert_close(s, eq9)
    lam = c.sigma * c.d_sigma - c.d_alpha * c.sigma**2 / c.alpha
    torch.testing.assert_close(c.d_alpha / c.alpha * x_t - lam * s, v)


@pytest.mark.parametrize("interp", [Linear(), GVP()], ids=repr)
def test_endpoint_errors(interp):
    x = torch.randn(2, 3, dtype=F64)
    c0 = interp(torch.zeros(2, dtype=F64)).like(x)
    c1 = interp(torch.ones(2, dtype=F64)).like(x)
    for src, dst in [("noise", "score"), ("velocity", "score"), ("x0", "noise"), ("x0", "score")]:
        with pytest.raises(EndpointError):
            convert(x, src, dst, x, c0)
    for src, dst in [("noise", "x0"), ("score", "x0"), ("noise", "velocity"), ("score", "velocity")]:
        with pytest.raises(EndpointError):
            convert(x, src, dst, x, c1)
    # defined at the endpoints: score -> noise is -sigma s, velocity -> x0 at the data end is x_t
    torch.testing.assert_close(convert(x, "score", "noise", x, c0), torch.zeros_like(x))
    torch.testing.assert_close(convert(x, "velocity", "x0", x, c0), x)


def test_unknown_prediction_lists_choices():
    with pytest.raises(ValueError, match="valid choices"):
        validate_prediction("epsilon")
    x = torch.zeros(1, 1)
    with pytest.raises(ValueError, match="valid choices"):
        convert(x, "noise", "v", x, Linear()(torch.tensor([0.5])).like(x))
