"""Interpolants: boundary values, autograd derivatives vs the closed forms, lambda_t, name resolution."""

import math

import pytest
import torch

from ablate.transport.interpolants import (
    GVP,
    INTERPOLANTS,
    VP,
    CustomInterpolant,
    Linear,
    expand_like,
    get_interpolant,
)

F64 = torch.float64
T_INNER = torch.linspace(0.01, 0.99, 41, dtype=F64)


@pytest.mark.parametrize("name", sorted(INTERPOLANTS))
def test_every_name_resolves(name):
    interp = get_interpolant(name)
    assert interp.name == name
    assert get_interpolant(interp) is interp


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="valid choices"):
        get_interpolant("cosine")


def test_boundary_values_exact():
    zero, one = torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64)
    for interp in (Linear(), GVP()):
        c0, c1 = interp(zero), interp(one)
        assert c0.alpha.item() == 1.0 and c0.sigma.item() == 0.0
        assert c1.alpha.item() == 0.0 and c1.sigma.item() == 1.0  # GVP alpha(1) is an exact 0
        assert interp.alpha_vanishes_at_noise_end()
    vp = VP()
    assert vp.alpha(zero).item() == 1.0 and vp.sigma(zero).item() == 0.0
    # log alpha(1) = -(beta_max - beta_min)/4 - beta_min/2
    assert vp.alpha(one).item() == pytest.approx(math.exp(-19.9 / 4 - 0.05), rel=1e-14)
    assert vp.alpha(one).item() == pytest.approx(0.0066, abs=1e-4)
    assert not vp.alpha_vanishes_at_noise_end()
    assert torch.isinf(vp.d_sigma(zero))  # sigma'(0) = +inf for VP


@pytest.mark.parametrize("interp", [Linear(), GVP(), VP(), VP(0.5, 10.0)], ids=repr)
def test_autograd_derivatives(interp):
    t = T_INNER.clone().requires_grad_(True)
    (da,) = torch.autograd.grad(interp.alpha(t).sum(), t)
    (ds,) = torch.autograd.grad(interp.sigma(t).sum(), t)
    t = t.detach()
    torch.testing.assert_close(interp.d_alpha(t), da, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(interp.d_sigma(t), ds, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("interp", [Linear(), GVP(), VP()], ids=repr)
def test_lambda_and_dlogalpha_closed_forms(interp):
    c = interp(T_INNER)
    generic = c.sigma * c.d_sigma - c.d_alpha * c.sigma**2 / c.alpha
    torch.testing.assert_close(interp.lambda_(T_INNER), generic, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(interp.d_log_alpha(T_INNER), c.d_alpha / c.alpha, rtol=1e-12, atol=0)


def test_lambda_named_forms_and_noise_end():
    t = T_INNER
    torch.testing.assert_close(Linear().lambda_(t), t / (1 - t))
    torch.testing.assert_close(GVP().lambda_(t), math.pi / 2 * torch.tan(math.pi * t / 2))
    torch.testing.assert_close(VP().lambda_(t), 0.5 * (0.1 + 19.9 * t))
    one = torch.tensor([1.0], dtype=F64)
    assert torch.isinf(Linear().lambda_(one)).all() and torch.isinf(GVP().lambda_(one)).all()


def test_variance_preserving_paths():
    for interp in (GVP(), VP()):
        c = interp(T_INNER)
        torch.testing.assert_close(c.alpha**2 + c.sigma**2, torch.ones_like(T_INNER), rtol=0, atol=1e-14)


def test_custom_interpolant_autodiff_matches_closed_form():
    ci = CustomInterpolant(lambda t: 1 - t**2, lambda t: torch.sin(t))
    torch.testing.assert_close(ci.d_alpha(T_INNER), -2 * T_INNER)
    torch.testing.assert_close(ci.d_sigma(T_INNER), torch.cos(T_INNER))


def test_interpolate_velocity_and_expand_like():
    x, eps = torch.randn(3, 2, 2, dtype=F64), torch.randn(3, 2, 2, dtype=F64)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=F64)
    xt = Linear().interpolate(x, eps, t)
    torch.testing.assert_close(xt, (1 - t)[:, None, None] * x + t[:, None, None] * eps)
    torch.testing.assert_close(Linear().velocity(x, eps, t), eps - x)
    assert expand_like(t, x).shape == (3, 1, 1)


def test_vp_rejects_bad_betas():
    with pytest.raises(ValueError, match="beta_min"):
        VP(beta_min=1.0, beta_max=0.5)
