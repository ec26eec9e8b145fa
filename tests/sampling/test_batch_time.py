"""Per-sample times [B] in the ODE field and the SDE drift; SDESampler's t_min (replaying a given grid)."""

import math

import pytest
import torch
from gaussian_oracle import GaussianOracle

from ablate.sampling import ODESampler, SDESampler
from ablate.transport import EndpointError, get_interpolant
from ablate.transport.diffusion import get_diffusion

F64 = torch.float64
MU, S = [0.3, -0.7], 0.8


def _x(n=4, seed=0):
    return torch.randn(n, 2, dtype=F64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("interp,prediction", [("linear", "velocity"), ("gvp", "noise"), ("vp", "score"),
                                               ("linear", "x0")])
def test_ode_field_takes_per_sample_times(interp, prediction):
    ip = get_interpolant(interp)
    model = GaussianOracle(ip, MU, S).model(prediction)
    s = ODESampler(ip, prediction, "euler", 4)
    x, t = _x(), torch.tensor([0.1, 0.35, 0.6, 0.9], dtype=F64)
    batched = s.velocity(model, x, t, None)
    for i in range(4):
        torch.testing.assert_close(batched[i : i + 1], s.velocity(model, x[i : i + 1], float(t[i]), None),
                                   rtol=1e-14, atol=1e-14)
    with pytest.raises(ValueError, match="per-sample times"):
        s.velocity(model, x, t[:3], None)


@pytest.mark.parametrize("diffusion", ["w_kl", "sigma", "constant", "sit:decreasing"])
@pytest.mark.parametrize("prediction", ["velocity", "noise", "score"])
def test_sde_drift_takes_per_sample_times_and_w(diffusion, prediction):
    ip = get_interpolant("gvp")
    model = GaussianOracle(ip, MU, S).model(prediction)
    s = SDESampler(ip, prediction, get_diffusion(diffusion, ip, 0.8), steps=10)
    x, t = _x(), torch.tensor([0.05, 0.3, 0.55, 0.97], dtype=F64)
    f, v = s.drift(model, x, t)  # w from the diffusion at each sample's t
    w = s.diffusion(t)
    for i in range(4):
        fi, vi = s.drift(model, x[i : i + 1], float(t[i]), float(w[i]))
        torch.testing.assert_close(f[i : i + 1], fi, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(v[i : i + 1], vi, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(s.drift(model, x, t, w)[0], f, rtol=0, atol=0)


def test_sde_drift_at_the_data_end_is_its_limit_also_in_a_mixed_batch():
    """w_KL = 2 lambda and sigma vanish at t = 0: w s / 2 -> -(lambda / sigma) eps_hat, not 0, for a model whose
    eps_hat does not vanish there. A batch with t = 0 next to interior times gives each sample its own value."""
    ip = get_interpolant("linear")
    eps_hat = _x(seed=3)
    model = lambda x, t, y=None: eps_hat  # a noise model, constant in t
    s = SDESampler(ip, "noise", get_diffusion("w_kl", ip), steps=10)
    x = _x()
    f0, v0 = s.drift(model, x, 0.0)
    torch.testing.assert_close(v0, eps_hat - x)  # v = alpha' x + (sigma' - alpha' sigma / alpha) eps = eps - x
    torch.testing.assert_close(f0, v0 + eps_hat)  # + (w / (2 sigma)) eps_hat, w / sigma -> 2
    torch.testing.assert_close(s.drift(model, x, 1e-9)[0], f0, rtol=1e-7, atol=1e-7)  # the limit from inside
    t = torch.tensor([0.0, 0.4, 0.0, 0.8], dtype=F64)
    f = s.drift(model, x, t)[0]
    for i in range(4):
        one = lambda *a, i=i: eps_hat[i : i + 1]
        torch.testing.assert_close(f[i : i + 1], s.drift(one, x[i : i + 1], float(t[i]))[0], rtol=1e-14, atol=1e-14)
    # constant w = 1 needs the score at sigma = 0: there is no limit, even for one sample of the batch
    c = SDESampler(ip, "noise", get_diffusion("constant", ip), steps=10)
    with pytest.raises(EndpointError):
        c.drift(model, x, t)


def test_sde_t_min_replays_a_given_grid():
    """t_min/t_max with last_step='none': the EM loop on linspace(t_max, t_min, steps), as written by hand."""
    ip = get_interpolant("vp")
    model = GaussianOracle(ip, MU, S).model("velocity")
    w = get_diffusion("sigma", ip, 1.3)
    s = SDESampler(ip, "velocity", w, steps=7, last_step="none", t_min=0.2, t_max=0.9)
    assert s.times[0].item() == 0.9 and s.times[-1].item() == 0.2 and s.expected_nfe == 6
    assert s.tag == "sde_em-sigmax1.3-nfe6-last_none-t0.2_0.9-cfg1.0"  # an explicit interval is in the tag
    assert ODESampler(ip, "velocity", "euler", 4, t_min=0.0).tag == "ode_euler-nfe4-t0_1-cfg1.0"
    z = _x(3)
    noise = torch.randn(6, 3, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    out = s(model, z, noise=noise)
    x, ts = z, torch.linspace(0.9, 0.2, 7, dtype=F64)
    oracle = GaussianOracle(ip, MU, S)
    for k in range(6):
        t, h = ts[k], ts[k + 1] - ts[k]
        wk = 1.3 * ip.sigma(t)
        score = oracle.model("score")(x, t.expand(3))
        x = x + h * (model(x, t.expand(3)) - 0.5 * wk * score) + math.sqrt(wk * -h) * noise[k]
    torch.testing.assert_close(out.x, x, rtol=1e-12, atol=1e-12)
    assert out.nfe == 6
    # with a last step, the step goes from t_min to 0: its size must be t_min
    SDESampler(ip, "velocity", w, steps=7, last_step="mean", last_step_size=0.2, t_min=0.2)
    with pytest.raises(ValueError, match="last_step_size must equal t_min"):
        SDESampler(ip, "velocity", w, steps=7, last_step="mean", t_min=0.2)


def test_sde_drift_takes_a_shared_w_with_per_sample_times():
    ip = get_interpolant("linear")
    model = GaussianOracle(ip, MU, S).model("noise")
    s = SDESampler(ip, "noise", get_diffusion("sigma", ip), steps=10)
    x, t = _x(), torch.tensor([0.0, 0.4, 0.0, 0.8], dtype=F64)
    f = s.drift(model, x, t, 0.0)[0]  # a float w broadcasts over per-sample times like a tensor [B]
    torch.testing.assert_close(f, s.drift(model, x, t, torch.zeros(4, dtype=F64))[0], rtol=0, atol=0)
