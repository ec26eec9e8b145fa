"""Training objective: losses at fixed model/data/noise/t equal hand-computed values; densities; refusals."""

import math

import pytest
import torch

from ablate.transport.interpolants import GVP, VP, Linear
from ablate.transport.loss import (
    TIME_DENSITIES,
    WEIGHTINGS,
    LogitNormalTime,
    Objective,
    UniformTime,
    build_objective,
)
from ablate.transport.predictions import PREDICTIONS

F64 = torch.float64
G = torch.Generator().manual_seed(0)
X0 = torch.randn(4, 2, 3, dtype=F64, generator=G)
EPS = torch.randn(4, 2, 3, dtype=F64, generator=G)
T = torch.tensor([0.1, 0.35, 0.6, 0.85], dtype=F64)


def model(x, t, y=None):
    """A fixed non-trivial 'network': the output depends on x_t and t."""
    return 0.5 * x + t.reshape(-1, 1, 1) ** 2


def _col(v):
    return v.reshape(-1, 1, 1)


def _closed_forms(name, t):
    """alpha, sigma, alpha', sigma', lambda in closed form (docs/design.md, "Conventions")."""
    if name == "linear":
        return 1 - t, t, -torch.ones_like(t), torch.ones_like(t), t / (1 - t)
    if name == "gvp":
        a, s = torch.cos(math.pi * t / 2), torch.sin(math.pi * t / 2)
        return a, s, -math.pi / 2 * s, math.pi / 2 * a, math.pi / 2 * torch.tan(math.pi * t / 2)
    beta = 0.1 + 19.9 * t
    a = torch.exp(-0.25 * t**2 * 19.9 - 0.5 * t * 0.1)
    s = torch.sqrt(1 - a**2)
    return a, s, -0.5 * beta * a, 0.5 * beta * a**2 / s, 0.5 * beta


@pytest.mark.parametrize("name", ["linear", "gvp", "vp"])
@pytest.mark.parametrize("pred", PREDICTIONS)
@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_loss_equals_hand_computation(name, pred, weighting):
    if pred == "velocity" and weighting != "none":
        with pytest.raises(ValueError, match="velocity"):
            Objective(name, pred, weighting)
        return
    a, s, da, ds, lam = _closed_forms(name, T)
    x_t = _col(a) * X0 + _col(s) * EPS
    out = model(x_t, T)
    w = {"none": torch.ones_like(T), "velocity": (lam / s) ** 2, "likelihood": lam / s**2}[weighting]
    if pred == "velocity":
        err = out - (_col(da) * X0 + _col(ds) * EPS)
    elif pred == "noise":
        err = out - EPS
    elif pred == "score":
        err = _col(s) * out + EPS  # SiT: sigma s_hat + eps
    else:  # x0: plain MSE, or the implied noise-space error (alpha/sigma)(x0_hat - x0) when weighted
        err = (out - X0) * (1.0 if weighting == "none" else _col(a / s))
    expected = (_col(w) * err**2).mean(dim=(1, 2))
    got = Objective(name, pred, weighting).loss(model, X0, t=T, noise=EPS)
    torch.testing.assert_close(got["loss"], expected, rtol=1e-12, atol=1e-14)
    assert got["pred"].shape == X0.shape and torch.equal(got["t"], T)


def test_weightings_make_score_and_noise_losses_agree():
    """One underlying eps_hat as a score (-eps_hat/sigma), noise or x0 model gives equal weighted losses."""
    for name in ("linear", "gvp", "vp"):
        interp = {"linear": Linear(), "gvp": GVP(), "vp": VP()}[name]
        for weighting in ("velocity", "likelihood"):
            c = interp(T).like(X0)
            x_t = c.alpha * X0 + c.sigma * EPS
            e = model(x_t, T)
            as_pred = {"noise": e, "score": -e / c.sigma, "x0": (x_t - c.sigma * e) / c.alpha}
            losses = [
                Objective(name, p, weighting).loss(lambda x, t, y, out=out: out, X0, t=T, noise=EPS)["loss"]
                for p, out in as_pred.items()
            ]
            torch.testing.assert_close(losses[1], losses[0], rtol=1e-10, atol=0)
            torch.testing.assert_close(losses[2], losses[0], rtol=1e-10, atol=0)


def test_velocity_weighting_is_the_implied_velocity_error():
    """(lambda/sigma)^2 |sigma s_hat + eps|^2 = |v(s_hat) - v_cond|^2, v = a'/a x_t - lambda s (SiT eq. 9)."""
    interp = GVP()
    c = interp(T).like(X0)
    x_t = c.alpha * X0 + c.sigma * EPS
    s_hat = model(x_t, T)
    lam = interp.lambda_(T).reshape(-1, 1, 1)
    v_hat = c.d_alpha / c.alpha * x_t - lam * s_hat
    v_true = c.d_alpha * X0 + c.d_sigma * EPS
    got = Objective("gvp", "score", "velocity").loss(model, X0, t=T, noise=EPS)["loss"]
    torch.testing.assert_close(got, ((v_hat - v_true) ** 2).mean(dim=(1, 2)), rtol=1e-10, atol=0)


def test_targets_returned():
    out = Objective("linear", "velocity").loss(model, X0, t=T, noise=EPS)
    torch.testing.assert_close(out["target"], EPS - X0)
    out = Objective("linear", "score").loss(model, X0, t=T, noise=EPS)
    torch.testing.assert_close(out["target"], -EPS / _col(T))


def test_default_time_density_is_the_endpoint_table():
    assert (
        Objective("linear", "velocity").time_density.t_min,
        Objective("linear", "velocity").time_density.t_max,
    ) == (
        0.0,
        1.0,
    )
    d = Objective("gvp", "noise").time_density
    assert (d.t_min, d.t_max) == (1e-3, 1 - 1e-3)
    d = Objective("vp", "score", train_eps=1e-4).time_density
    assert (d.t_min, d.t_max) == (1e-4, 1.0)


def test_endpoint_weights_refused_at_build_time():
    # likelihood weight 1/(t(1-t)) on linear is infinite at both ends; (lambda/sigma)^2 is inf at GVP t = 1
    with pytest.raises(ValueError, match="not finite"):
        Objective("linear", "noise", "likelihood", train_eps=0.0)
    with pytest.raises(ValueError, match="not finite"):
        Objective("gvp", "score", "velocity", time_density=UniformTime(1e-3, 1.0))
    with pytest.raises(ValueError, match="not finite"):
        Objective("linear", "x0", "velocity", time_density=UniformTime(0.0, 0.9))
    Objective("linear", "x0", "none", time_density=UniformTime(0.0, 1.0))  # plain x0 MSE is finite everywhere
    # (lambda/sigma)^2 = (sigma' - sigma alpha'/alpha)^2 has the finite limit (pi/2)^2 at GVP t = 0 (not 0/0)
    obj = Objective("gvp", "score", "velocity", time_density=UniformTime(0.0, 0.999))
    assert obj.weight(torch.tensor([0.0], dtype=F64)).item() == pytest.approx((math.pi / 2) ** 2, rel=1e-15)
    # the x0 weights (alpha lambda / sigma^2)^2 -> 1 and alpha^2 lambda / sigma^4 -> 0 at linear t = 1
    one = torch.tensor([1.0], dtype=F64)
    assert Objective("linear", "x0", "velocity", time_density=UniformTime(0.5, 1.0)).weight(one).item() == 1.0
    assert Objective("linear", "x0", "likelihood", time_density=UniformTime(0.5, 1.0)).weight(one).item() == 0.0


def test_bad_names_list_choices():
    for kw in (dict(weighting="snr"), dict(prediction="eps"), dict(time_density="beta")):
        args = dict(interpolant="linear", prediction="noise") | kw
        with pytest.raises(ValueError, match="valid choices"):
            build_objective(**args)
    with pytest.raises(ValueError, match="interpolant"):
        build_objective("cosine", "noise")
    with pytest.raises(ValueError, match="not both"):
        Objective("linear", "noise", time_density=UniformTime(0.1, 0.9), train_eps=0.1)


@pytest.mark.parametrize("density", TIME_DENSITIES)
@pytest.mark.parametrize("pred", PREDICTIONS)
def test_every_named_choice_builds(density, pred):
    for w in WEIGHTINGS:
        if pred == "velocity" and w != "none":
            continue
        obj = build_objective("gvp", pred, w, density)
        out = obj.loss(model, X0, generator=torch.Generator().manual_seed(1))
        assert out["loss"].shape == (4,) and torch.isfinite(out["loss"]).all()
        lo, hi = obj.time_density.t_min, obj.time_density.t_max
        assert (out["t"] >= lo).all() and (out["t"] <= hi).all()


def test_uniform_density_moments():
    t = UniformTime(0.2, 0.6).sample(200_000, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert t.min() >= 0.2 and t.max() <= 0.6
    assert t.mean().item() == pytest.approx(0.4, abs=2e-3)
    assert t.var().item() == pytest.approx(0.4**2 / 12, rel=2e-2)


def test_logit_normal_density():
    d = LogitNormalTime(mean=0.5, std=1.0)
    t = d.sample(200_000, generator=torch.Generator().manual_seed(0), dtype=F64)
    # the median of sigmoid(m + s u) is sigmoid(m); logit(t) ~ N(m, s^2)
    assert t.median().item() == pytest.approx(1 / (1 + math.exp(-0.5)), abs=3e-3)
    z = torch.log(t / (1 - t))
    assert z.mean().item() == pytest.approx(0.5, abs=1e-2) and z.std().item() == pytest.approx(1.0, abs=1e-2)
    lo = LogitNormalTime(std=5.0, t_min=1e-3, t_max=1 - 1e-3).sample(10_000, generator=torch.Generator())
    assert lo.min() >= 1e-3 and lo.max() <= 1 - 1e-3
    with pytest.raises(ValueError, match="std"):
        LogitNormalTime(std=0.0)
    with pytest.raises(ValueError, match="t_min"):
        UniformTime(0.5, 0.5)


def test_build_objective_density_overrides():
    obj = build_objective("linear", "velocity", time_density="logit_normal", mean=-0.5, std=2.0)
    assert (obj.time_density.mean, obj.time_density.std, obj.time_density.t_max) == (-0.5, 2.0, 1.0)
    with pytest.raises(ValueError, match="bad arguments"):
        build_objective("linear", "velocity", time_density="uniform", mean=1.0)


def test_generator_draws_noise_then_t_reproducibly():
    obj = Objective("linear", "velocity")
    a = obj.loss(model, X0, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    eps = torch.randn(X0.shape, dtype=F64, generator=g)
    t = torch.rand(4, dtype=F64, generator=g)
    torch.testing.assert_close(a["t"], t)
    torch.testing.assert_close(a["target"], eps - X0)


def test_shape_checks():
    obj = Objective("linear", "noise")
    with pytest.raises(ValueError, match="model output shape"):
        obj.loss(lambda x, t, y: x[:, :1], X0, t=T, noise=EPS)
    with pytest.raises(ValueError, match="noise shape"):
        obj.loss(model, X0, t=T, noise=EPS[:, :1])


@pytest.mark.parametrize("name", ["linear", "gvp", "vp"])
def test_sit_drift_var_in_reversed_time_equals_lambda(name):
    """SiT weights use drift_var = (d_alpha/alpha) sigma^2 - sigma d_sigma in its time s = 1 - t, where its
    'alpha' is the data coefficient; derivatives in s (autograd) flip sign, so drift_var equals lambda_t."""
    interp = {"linear": Linear(), "gvp": GVP(), "vp": VP()}[name]
    s = (1 - T).clone().requires_grad_(True)
    a, sg = interp.alpha(1 - s), interp.sigma(1 - s)
    (da,) = torch.autograd.grad(a.sum(), s, retain_graph=True)
    (ds,) = torch.autograd.grad(sg.sum(), s)
    drift_var = (da / a * sg**2 - sg * ds).detach()
    torch.testing.assert_close(drift_var, interp.lambda_(T), rtol=1e-12, atol=1e-12)
