"""Encoding (the PF-ODE from data up to noise) against the exact Gaussian flow map; SiT's reverse ODE replayed;
round trips."""

import math

import pytest
import torch
from gaussian_oracle import GaussianOracle

from ablate.sampling import build_sampler, encode, round_trip
from ablate.transport import get_interpolant

F64 = torch.float64
MU, S = [0.6, -1.2], 0.5


def _closed_form(ip, x, a, b):
    """The exact PF-ODE map from time a to time b for data N(mu, s^2 I): x_t ~ N(alpha_t mu, V_t I) with
    V_t = alpha_t^2 s^2 + sigma_t^2, and the flow is increasing per dimension, so it maps the quantile of x under
    N(alpha_a mu, V_a) to the same quantile under N(alpha_b mu, V_b): z = alpha_b mu + sqrt(V_b / V_a)
    (x - alpha_a mu)."""
    mu = torch.tensor(MU, dtype=F64)
    ta, tb = torch.tensor(a, dtype=F64), torch.tensor(b, dtype=F64)
    va = ip.alpha(ta) ** 2 * S**2 + ip.sigma(ta) ** 2
    vb = ip.alpha(tb) ** 2 * S**2 + ip.sigma(tb) ** 2
    return ip.alpha(tb) * mu + torch.sqrt(vb / va) * (x - ip.alpha(ta) * mu)


def _data(ip, n=32, seed=0):
    return GaussianOracle(ip, MU, S).sample(n, torch.Generator().manual_seed(seed))


def _err(interp, prediction, method, steps):
    ip = get_interpolant(interp)
    x = _data(ip)
    out = encode(GaussianOracle(ip, MU, S).model(prediction), x, ip, prediction, method=method, steps=steps)
    s = build_sampler("ode_euler", interpolant=ip, prediction=prediction)  # the default interval
    return (out.z - _closed_form(ip, x, s.t_min, s.t_max)).abs().max().item(), out.nfe


CASES = [("linear", "velocity"), ("gvp", "velocity"), ("vp", "velocity"), ("gvp", "score"), ("vp", "noise"),
         ("linear", "x0")]


@pytest.mark.parametrize("interp,prediction", CASES)
def test_encoding_converges_to_the_gaussian_flow_map(interp, prediction):
    e1, n1 = _err(interp, prediction, "euler", 40)
    e2, n2 = _err(interp, prediction, "euler", 80)
    assert (n1, n2) == (40, 80)
    assert 0.8 < math.log2(e1 / e2) < 1.25  # first order
    h1, m1 = _err(interp, prediction, "heun", 40)
    h2, m2 = _err(interp, prediction, "heun", 80)
    assert (m1, m2) == (80, 160)
    assert 1.7 < math.log2(h1 / h2) < 2.4 and h2 < e2  # second order
    ip = get_interpolant(interp)
    x = _data(ip)
    out = encode(GaussianOracle(ip, MU, S).model(prediction), x, ip, prediction, atol=1e-10, rtol=1e-10)
    s = build_sampler("ode_dopri5", interpolant=ip, prediction=prediction)
    torch.testing.assert_close(out.z, _closed_form(ip, x, s.t_min, s.t_max), rtol=1e-7, atol=1e-7)
    assert out.nfe > 0


def test_linear_velocity_encodes_data_to_its_standard_score():
    """On [0, 1] with the linear path the closed form is z = (x - mu) / s: the latent is N(0, I)."""
    ip = get_interpolant("linear")
    x = _data(ip, 4000, seed=1)
    z = encode(GaussianOracle(ip, MU, S).model("velocity"), x, ip, "velocity", atol=1e-9, rtol=1e-9).z
    torch.testing.assert_close(z, (x - torch.tensor(MU, dtype=F64)) / S, rtol=1e-6, atol=1e-6)
    assert abs(z.mean().item()) < 0.05 and abs(z.std().item() - 1) < 0.05


def test_encoding_replays_sit_reverse_ode():
    """SiT's sample_ode(reverse=True) integrates its drift u_sit(x, s) = -v(x, 1 - s) with torchdiffeq on
    linspace(1 - t_min, 1 - t_max, num_steps) in its time s (s = 1 data): our Heun encoding is its heun2."""
    from torchdiffeq import odeint

    ip = get_interpolant("gvp")
    vel = GaussianOracle(ip, MU, S).model("velocity")
    x = _data(ip, 6)
    ours = encode(vel, x, ip, "velocity", method="heun", steps=12, return_trajectory=True)
    s_grid = torch.linspace(1.0, 0.0, 13, dtype=F64)
    ref = odeint(lambda s, xx: -vel(xx, (1 - s).expand(xx.shape[0])), x, s_grid, method="heun2")
    torch.testing.assert_close(ours.z, ref[-1], rtol=1e-12, atol=1e-12)
    assert ours.times == pytest.approx([i / 12 for i in range(13)], abs=1e-15)
    assert len(ours.trajectory) == 13 and torch.equal(ours.trajectory[0], x)


@pytest.mark.parametrize("interp,prediction", [("linear", "velocity"), ("vp", "score")])
def test_round_trip_error_is_the_solvers(interp, prediction):
    """decode(encode(x)) - x is the solvers' error: Euler's local errors (h^2 f'f / 2) add up in the two
    directions (first order); Heun's leading local error is odd in h and cancels between them (third order)."""
    ip = get_interpolant(interp)
    model = GaussianOracle(ip, MU, S).model(prediction)
    x = _data(ip, 16, seed=2)

    def err(method, steps):
        out = round_trip(model, x, ip, prediction, method=method, steps=steps)
        per = 2 if method == "heun" else 1
        assert out.error.shape == (16,) and (out.nfe_encode, out.nfe_decode) == (per * steps, per * steps)
        return out.error.max().item()

    assert 0.8 < math.log2(err("euler", 20) / err("euler", 40)) < 1.25
    assert 2.7 < math.log2(err("heun", 20) / err("heun", 40)) < 3.3
    exact = round_trip(model, x, ip, prediction, atol=1e-10, rtol=1e-10)
    assert exact.error.max().item() < 1e-7
    torch.testing.assert_close(exact.x, x, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(exact.z, encode(model, x, ip, prediction, atol=1e-10, rtol=1e-10).z)
