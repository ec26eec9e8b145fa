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
