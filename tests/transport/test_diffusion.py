"""SDE diffusion coefficients: closed forms, endpoints, SiT's forms, w_KL,eta and its loss estimate."""

import math

import pytest
import torch

from ablate.transport import CustomInterpolant, EndpointError, get_interpolant
from ablate.transport.diffusion import (
    DIFFUSIONS,
    SIT_FORMS,
    LossCurve,
    estimate_loss_curve,
    from_sit,
    get_diffusion,
)

T = torch.linspace(0.0, 0.99, 100, dtype=torch.float64)


def test_w_kl_closed_forms():
    """w_KL = 2 lambda: linear 2t/(1-t), GVP pi tan(pi t / 2), VP beta(t) = 0.1 + 19.9 t."""
    assert torch.allclose(get_diffusion("w_kl", get_interpolant("linear"))(T), 2 * T / (1 - T))
    gvp = get_interpolant("gvp")
    assert torch.allclose(get_diffusion("w_kl", gvp)(T), math.pi * torch.tan(math.pi * T / 2))
    assert torch.allclose(get_diffusion("w_kl", get_interpolant("vp"), norm=0.5)(T), 0.5 * (0.1 + 19.9 * T))


def test_w_kl_matches_the_generic_formula_with_autograd_derivatives():
    """2 (sigma' sigma - alpha' sigma^2 / alpha) from autograd derivatives of a custom copy of GVP."""
    custom = CustomInterpolant(lambda t: torch.cos(math.pi * t / 2), lambda t: torch.sin(math.pi * t / 2))
    assert torch.allclose(get_diffusion("w_kl", custom)(T), get_diffusion("w_kl", get_interpolant("gvp"))(T))


def test_other_forms():
    lin = get_interpolant("linear")
    gvp = get_interpolant("gvp")
    assert torch.allclose(get_diffusion("sigma", gvp, 2.0)(T), 2 * torch.sin(math.pi * T / 2))
    assert torch.allclose(get_diffusion("sin2", lin, 3.0)(T), 3 * torch.sin(math.pi * T) ** 2)
    assert torch.allclose(get_diffusion("constant", lin, 0.7)(T), torch.full_like(T, 0.7))
    assert torch.allclose(get_diffusion("linear", lin, 2.0)(T), 2 * T)
    assert torch.allclose(get_diffusion("decreasing", lin)(T), (1 - torch.cos(math.pi * T)) ** 2 / 4)


def test_singular_noise_end_is_flagged_and_refused():
    for name, singular in [("linear", True), ("gvp", True), ("vp", False)]:
        w = get_diffusion("w_kl", get_interpolant(name))
        assert w.singular_at_noise_end is singular
        one = torch.tensor([1.0], dtype=torch.float64)
        if singular:
            with pytest.raises(EndpointError, match="infinite at t = 1"):
                w(one)
        else:
            assert torch.isfinite(w(one)).all()
    assert not get_diffusion("sigma", get_interpolant("linear")).singular_at_noise_end


# --- the SiT repository's compute_diffusion, transcribed independently in its own time s = 1 - t ----------
def _sit_D(name, form, norm, s):
    if name == "linear":
        sg, dsg = 1 - s, -torch.ones_like(s)
        ratio = 1 / s
    elif name == "gvp":
        sg, dsg = torch.cos(s * math.pi / 2), -math.pi / 2 * torch.sin(s * math.pi / 2)
        ratio = math.pi / (2 * torch.tan(s * math.pi / 2))
    else:
        lm = -0.25 * (1 - s) ** 2 * 19.9 - 0.5 * (1 - s) * 0.1
        sg = torch.sqrt(1 - torch.exp(2 * lm))
        ratio = None
    if form == "SBDM":
        if name == "vp":
            return norm * (0.1 + (1 - s) * 19.9) / 2  # VPCPlan.compute_drift's beta_t / 2
        return norm * (ratio * sg**2 - sg * dsg)
    return {
        "constant": norm + 0 * s,
        "sigma": norm * sg,
        "linear": norm * (1 - s),
        "decreasing": 0.25 * (norm * torch.cos(math.pi * s) + 1) ** 2,
        "inccreasing-decreasing": norm * torch.sin(math.pi * s) ** 2,
    }[form]


@pytest.mark.parametrize("name", ["linear", "gvp", "vp"])
@pytest.mark.parametrize(
    "form", ["constant", "SBDM", "sigma", "linear", "decreasing", "inccreasing-decreasing"]
)
@pytest.mark.parametrize("norm", [1.0, 0.35])
def test_from_sit_is_twice_sit_D_in_reversed_time(name, form, norm):
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    ours = from_sit(form, get_interpolant(name), norm)(t)
    assert torch.allclose(ours, 2 * _sit_D(name, form, norm, 1 - t), rtol=1e-12, atol=1e-12)


def test_sit_forms_both_spellings_and_sbdm_is_w_kl():
    lin = get_interpolant("linear")
    a = from_sit("inccreasing-decreasing", lin, 0.5)(T)
    assert torch.equal(a, from_sit("increasing-decreasing", lin, 0.5)(T))
    assert torch.allclose(a, get_diffusion("sin2", lin, 1.0)(T))  # SiT's D = norm sin^2 -> w = 2 norm sin^2
    assert torch.allclose(from_sit("SBDM", lin)(T), get_diffusion("w_kl", lin)(T))
    assert from_sit("SBDM", lin).singular_at_noise_end
    assert torch.allclose(get_diffusion("sit:sigma", lin, 1.0)(T), 2 * T)
    assert set(SIT_FORMS) >= {"SBDM", "sigma", "linear", "decreasing", "constant", "increasing-decreasing"}


def test_every_name_resolves_and_bad_input_raises():
    lin = get_interpolant("linear")
    for name in DIFFUSIONS:
        w = get_diffusion(name, lin, 1.0)
        assert w.name == name and torch.isfinite(w(T)).all() and bool((w(T) >= 0).all())
    with pytest.raises(ValueError, match="valid choices"):
        get_diffusion("cosine", lin)
    with pytest.raises(ValueError, match="valid choices"):
        from_sit("increasing", lin)
    with pytest.raises(ValueError, match="norm"):
        get_diffusion("sigma", lin, norm=-1.0)
    with pytest.raises(ValueError, match="eta"):
        get_diffusion("w_kl_eta", lin, eta=-0.1)
    with pytest.raises(ValueError, match="loss"):
        get_diffusion("w_kl_eta", lin, eta=0.1)


def test_w_kl_eta_minimises_its_bound():
    """w_KL,eta minimises L (1 + w / (2 lambda))^2 / (2 w) + eta w pointwise; eta = 0 gives w_KL."""
    lin = get_interpolant("linear")
    curve = LossCurve([0.0, 0.5, 1.0], [0.2, 0.6, 1.0])
    eta = 0.3
    w_eta = get_diffusion("w_kl_eta", lin, eta=eta, loss=curve)
    ws = torch.linspace(1e-4, 30, 300001, dtype=torch.float64)
    for t in [0.1, 0.4, 0.75, 0.95]:
        lam, L = t / (1 - t), float(curve(torch.tensor(t, dtype=torch.float64)))
        bound = L * (1 + ws / (2 * lam)) ** 2 / (2 * ws) + eta * ws
        best = ws[bound.argmin()].item()
        assert w_eta(torch.tensor([t], dtype=torch.float64)).item() == pytest.approx(best, abs=2e-4)
    # the paper's eq. 14 form (main-text constant 2): w_KL sqrt(L / (L + 2 eta w_KL^2))
    w_kl = get_diffusion("w_kl", lin)(T)
    assert torch.allclose(w_eta(T), w_kl * torch.sqrt(curve(T) / (curve(T) + 2 * eta * w_kl**2)))
    assert torch.allclose(get_diffusion("w_kl_eta", lin, eta=0.0)(T), w_kl)
    # finite at t = 1 (lambda = inf): the explicit limit sqrt(L_1 / (2 eta))
    assert not w_eta.singular_at_noise_end
    assert w_eta(torch.tensor([1.0], dtype=torch.float64)).item() == pytest.approx(math.sqrt(1.0 / (2 * eta)))
    assert w_eta(torch.tensor([0.0], dtype=torch.float64)).item() == 0.0


def test_loss_curve_estimate_is_the_irreducible_variance_for_the_exact_model():
    """For N(mu, s^2) data and the exact velocity the estimate is the irreducible variance
    L_t = (alpha' sigma - sigma' alpha)^2 s^2 / (alpha^2 s^2 + sigma^2)."""
    gvp = get_interpolant("gvp")
    mu, s = 0.5, 0.8

    def model(x, t, y=None):
        c = gvp(t.reshape(-1, 1))
        v_t = c.alpha**2 * s**2 + c.sigma**2
        r = (x - c.alpha * mu) / v_t
        return c.d_alpha * (mu + c.alpha * s**2 * r) + c.d_sigma * c.sigma * r

    data = mu + s * torch.randn(20000, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    knots = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    curve = estimate_loss_curve(model, data, gvp, "velocity", t=knots, generator=g)
    c = gvp(knots)
    expect = (c.d_alpha * c.sigma - c.d_sigma * c.alpha) ** 2 * s**2 / (c.alpha**2 * s**2 + c.sigma**2)
    assert torch.allclose(curve.loss, expect, rtol=0.03)
    assert curve(torch.tensor([0.3], dtype=torch.float64)).item() == pytest.approx(
        float((curve.loss[0] + curve.loss[1]) / 2)
    )
