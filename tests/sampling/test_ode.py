"""ODE samplers on Gaussian data: exact flow map, convergence orders, adaptive solvers, ODE/SDE agreement."""

import math

import pytest
import torch
from gaussian_oracle import GaussianOracle

from ablate.sampling import ODE_METHODS, build_sampler
from ablate.transport import get_interpolant

MU, S = [1.0, -0.5], 0.7


def _z(n, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _error(method, steps, interp, prediction):
    ip = get_interpolant(interp)
    oracle = GaussianOracle(ip, MU, S)
    s = build_sampler(f"ode_{method}", interpolant=ip, prediction=prediction, steps=steps)
    z = _z(16)
    out = s(oracle.model(prediction), z)
    return (out.x - oracle.flow(z, s.t_max, s.t_min)).abs().max().item(), out.nfe


@pytest.mark.parametrize("interp,prediction", [("linear", "velocity"), ("gvp", "velocity"), ("vp", "noise"),
                                               ("gvp", "score"), ("linear", "x0")])
def test_euler_order_one_heun_order_two(interp, prediction):
    """Error vs the exact flow map x_b = m_b + sqrt(V_b / V_a)(x_a - m_a) halves (Euler) or quarters
    (Heun)."""
    e1, n1 = _error("euler", 40, interp, prediction)
    e2, n2 = _error("euler", 80, interp, prediction)
    assert (n1, n2) == (40, 80)
    assert 0.8 < math.log2(e1 / e2) < 1.25
    h1, m1 = _error("heun", 40, interp, prediction)
    h2, m2 = _error("heun", 80, interp, prediction)
    assert (m1, m2) == (80, 160)  # 2 NFE per Heun step: the paper's "Heun 250 NFE" is 125 steps
    assert 1.7 < math.log2(h1 / h2) < 2.4
    assert h2 < e2


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "rk4", "midpoint"])
def test_torchdiffeq_methods_match_flow_and_count_nfe(method):
    ip = get_interpolant("linear")
    oracle = GaussianOracle(ip, MU, S)
    s = build_sampler(f"ode_{method}", interpolant=ip, steps=20, atol=1e-9, rtol=1e-9)
    z = _z(8)
    calls = []
    model = oracle.model("velocity")
    out = s(lambda x, t, y=None: calls.append(1) or model(x, t, y), z)
    tol = {"midpoint": 1e-3, "rk4": 1e-5}.get(method, 1e-6)  # 20 fixed steps: orders 2 and 4
    assert torch.allclose(out.x, oracle.flow(z, 1.0, 0.0), atol=tol)
    assert out.nfe == len(calls) > 0
    if s.expected_nfe is not None:
        assert out.nfe == s.expected_nfe


def test_ode_and_sde_marginals_agree():
    ip = get_interpolant("gvp")
    oracle = GaussianOracle(ip, MU, S)
    z = _z(4000, seed=5)
    ode = build_sampler("ode", interpolant=ip, steps=30)(oracle.model("velocity"), z).x
    sde = build_sampler("sde", interpolant=ip, steps=100)(
        oracle.model("velocity"), z, generator=torch.Generator().manual_seed(2)
    ).x
    assert torch.allclose(ode.mean(0), sde.mean(0), atol=0.06)
    assert torch.allclose(ode.var(0), sde.var(0), rtol=0.1)
    assert torch.allclose(ode.var(0), torch.full((2,), S**2, dtype=torch.float64), rtol=0.1)


def test_trajectory_and_grid_are_float64():
    ip = get_interpolant("linear")
    s = build_sampler("ode_euler", interpolant=ip, steps=4)
    out = s(GaussianOracle(ip, MU, S).model("velocity"), _z(2), return_trajectory=True)
    assert out.times == [1.0, 0.75, 0.5, 0.25, 0.0] and len(out.trajectory) == 5
    assert s.times.dtype == torch.float64


def test_bad_values_raise():
    with pytest.raises(ValueError, match="unknown sampler"):
        build_sampler("ode_rk45", interpolant="linear")
    with pytest.raises(ValueError, match="steps"):
        build_sampler("ode_euler", interpolant="linear", steps=-1)
    with pytest.raises(ValueError, match="interpolant"):
        build_sampler("ode", interpolant="cosine")
    assert "dopri5" in ODE_METHODS and "heun" in ODE_METHODS


def test_heun_replays_sit_ode_with_torchdiffeq_heun2():
    """SiT's ODE runs torchdiffeq on linspace(t0, t1, num_steps) (its time): num_steps = our steps + 1."""
    from torchdiffeq import odeint

    ip = get_interpolant("gvp")
    vel = GaussianOracle(ip, MU, S).model("velocity")
    z = _z(5)
    ours = build_sampler("ode_heun", interpolant=ip, steps=12)(vel, z).x
    s_grid = torch.linspace(0.0, 1.0, 13, dtype=torch.float64)  # SiT time s = 1 - t, velocity -v
    ref = odeint(lambda s, x: -vel(x, (1 - s).expand(x.shape[0])), z, s_grid, method="heun2")[-1]
    assert torch.allclose(ours, ref, atol=1e-12)


@pytest.mark.parametrize("method", ["dopri5", "bosh3"])
@pytest.mark.parametrize("prediction", ["noise", "velocity"])
def test_adaptive_solvers_stay_inside_the_interval(method, prediction):
    """VP with an adaptive solver: the last step lands on t_min (torchdiffeq's step_t) instead of stepping past
    it to t < 0, where alpha > 1 and sigma is NaN (the solve used to fail with 'underflow in dt')."""
    ip = get_interpolant("vp")
    oracle = GaussianOracle(ip, MU, S)
    s = build_sampler(f"ode_{method}", interpolant=ip, prediction=prediction, atol=1e-8, rtol=1e-8)
    seen, model = [], oracle.model(prediction)
    z = _z(8)
    out = s(lambda x, t, y=None: seen.append(t[0].item()) or model(x, t, y), z)
    assert s.t_min <= min(seen) and max(seen) <= s.t_max
    assert torch.allclose(out.x, oracle.flow(z, s.t_max, s.t_min), atol=1e-6)
