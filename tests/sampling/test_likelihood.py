"""NLL through the probability-flow ODE equals the analytic Gaussian NLL."""

import math

import pytest
import torch
from gaussian_oracle import GaussianOracle

from ablate.sampling import nll
from ablate.transport import get_interpolant

MU, S = [0.5, -1.0, 0.25], 0.6


@pytest.mark.parametrize("interp", ["linear", "gvp"])
def test_exact_divergence_nll_is_analytic(interp):
    ip = get_interpolant(interp)
    oracle = GaussianOracle(ip, MU, S)
    x = oracle.sample(5, torch.Generator().manual_seed(0))
    out = nll(oracle.model("velocity"), x, ip, "velocity", divergence="exact", atol=1e-9, rtol=1e-9)
    assert torch.allclose(out.nats, oracle.nll(x), atol=1e-5)
    assert torch.allclose(out.bpd, out.nats / (3 * math.log(2)))
    assert out.nfe > 0


def test_hutchinson_is_unbiased_and_data_scale_shifts_bpd():
    ip = get_interpolant("linear")
    oracle = GaussianOracle(ip, MU, S)
    x = oracle.sample(1, torch.Generator().manual_seed(1)).expand(3000, 3).contiguous()
    g = torch.Generator().manual_seed(2)
    out = nll(oracle.model("velocity"), x, ip, "velocity", method="heun", steps=40, generator=g)
    exact = oracle.nll(x[:1])
    assert abs(out.nats.mean().item() - exact.item()) < 0.05 * (1 + abs(exact.item()))
    assert out.nats.std() > 0  # the probe is random per sample
    scaled = nll(oracle.model("velocity"), x[:2], ip, "velocity", method="heun", steps=40,
                 divergence="exact", data_scale=2 / 256)
    base = nll(oracle.model("velocity"), x[:2], ip, "velocity", method="heun", steps=40, divergence="exact")
    assert torch.allclose(scaled.bpd - base.bpd, torch.full((2,), math.log2(128), dtype=torch.float64))


def test_bad_values_raise():
    ip = get_interpolant("linear")
    model = GaussianOracle(ip, MU, S).model("velocity")
    x = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="divergence"):
        nll(model, x, ip, "velocity", divergence="skilling")
    with pytest.raises(ValueError, match="solver"):
        nll(model, x, ip, "velocity", method="leapfrog")
    with pytest.raises(ValueError, match="data_scale"):
        nll(model, x, ip, "velocity", data_scale=0)


def test_prior_logp_is_sit_standard_normal_prior():
    """SiT's Transport.prior_logp: -N/2 log(2 pi) - sum(z^2)/2 per sample, N = the non-batch size."""
    from ablate.sampling import prior_logp

    z = torch.randn(3, 2, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    n = 2 * 4 * 5
    ref = torch.stack([-n / 2.0 * math.log(2 * math.pi) - torch.sum(zi**2) / 2.0 for zi in z])
    torch.testing.assert_close(prior_logp(z), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("interp,prediction", [("linear", "velocity"), ("gvp", "noise"), ("vp", "score")])
def test_nll_returns_the_latent(interp, prediction):
    """z = x_{t_max} of the likelihood ODE: the closed-form Gaussian flow map, the same latent as encode()."""
    from ablate.sampling import encode
    from ablate.transport import sample_interval

    ip = get_interpolant(interp)
    oracle = GaussianOracle(ip, MU, S)
    x = oracle.sample(4, torch.Generator().manual_seed(3))
    out = nll(oracle.model(prediction), x, ip, prediction, divergence="exact", atol=1e-9, rtol=1e-9)
    lo, hi = sample_interval(interp, prediction)
    torch.testing.assert_close(out.z, oracle.flow(x, lo, hi), rtol=1e-6, atol=1e-6)
    enc = encode(oracle.model(prediction), x, ip, prediction, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(out.z, enc.z, rtol=1e-6, atol=1e-6)
    assert out.nats.shape == out.bpd.shape == (4,) and out.nfe > 0  # the existing fields are unchanged
    by_name = nll(oracle.model(prediction), x, interp, prediction, divergence="exact", atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(by_name.nats, out.nats, rtol=0, atol=0)  # the interpolant by name


def test_vp_data_end_is_finite_or_refused():
    """At VP t = 0 (sigma = 0, sigma' = inf) a score model's velocity alpha'/alpha x - lambda s is finite, so the
    likelihood from t_min = 0 is finite and exact; a noise model's velocity there needs sigma' eps: refused."""
    from ablate.sampling import prior_logp
    from ablate.transport import EndpointError

    ip = get_interpolant("vp")
    oracle = GaussianOracle(ip, MU, S)
    x = oracle.sample(4, torch.Generator().manual_seed(4))
    out = nll(oracle.model("score"), x, ip, "score", divergence="exact", t_min=0.0, atol=1e-9, rtol=1e-9)
    _, _, v0 = oracle.moments(0.0)
    _, _, v1 = oracle.moments(1.0)
    z = oracle.flow(x, 0.0, 1.0)  # log |dz/dx| = D/2 log(V_1 / V_0) for the exact flow
    exact = -(prior_logp(z) + 0.5 * len(MU) * math.log(float(v1 / v0)))
    assert torch.isfinite(out.nats).all()
    torch.testing.assert_close(out.nats, exact, rtol=1e-6, atol=1e-6)
    with pytest.raises(EndpointError):
        nll(oracle.model("noise"), x, ip, "noise", divergence="exact", t_min=0.0)


def test_a_field_that_ignores_x_has_zero_divergence():
    """A constant velocity (a model whose output does not depend on x) moves x rigidly: no volume change."""
    from ablate.sampling import DIVERGENCES, prior_logp

    ip = get_interpolant("linear")
    x = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    for div in DIVERGENCES:
        out = nll(lambda xx, t, y=None: torch.ones_like(xx), x, ip, "velocity", divergence=div, method="euler", steps=4)
        torch.testing.assert_close(out.z, x + 1)
        torch.testing.assert_close(out.nats, -prior_logp(x + 1))
