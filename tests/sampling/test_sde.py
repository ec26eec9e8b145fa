"""SDE samplers on Gaussian data: marginals, NFE accounting, SiT replay, per-image seeds."""

import math

import pytest
import torch
from gaussian_oracle import GaussianOracle

from ablate.sampling import PerImageNoise, SDESampler, build_sampler, per_image_noise
from ablate.transport import EndpointError, get_interpolant
from ablate.transport.diffusion import DIFFUSIONS, LossCurve, get_diffusion

MU, S = [1.0, -0.5], 0.7


def _z(n, dim=2, seed=0):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _kw(name):
    return {"eta": 0.1, "loss": LossCurve.constant(0.5)} if name == "w_kl_eta" else {}


@pytest.mark.parametrize("method", ["sde_em", "sde_heun"])
@pytest.mark.parametrize("diffusion", sorted(DIFFUSIONS))
@pytest.mark.parametrize("last_step", ["none", "mean", "tweedie", "euler"])
def test_sde_marginals_match_data(method, diffusion, last_step):
    """Every solver x coefficient x last step draws N(mu, s^2): mean and variance within sampling error."""
    interp = get_interpolant("linear")
    oracle = GaussianOracle(interp, MU, S)
    sampler = build_sampler(method, interpolant=interp, prediction="velocity", steps=60, diffusion=diffusion,
                            diffusion_kwargs=_kw(diffusion), last_step=last_step, sample_eps=1e-3)
    out = sampler(oracle.model("velocity"), _z(4000), generator=torch.Generator().manual_seed(1))
    mean, var = out.x.mean(0), out.x.var(0)
    # 4000 x 2 draws: the standard error of the mean is 0.011, of the variance ~2.2 %; discretisation adds
    # a bit.
    assert torch.allclose(mean, torch.tensor(MU, dtype=torch.float64), atol=0.06), mean
    assert torch.allclose(var, torch.full((2,), S**2, dtype=torch.float64), rtol=0.12), var
    assert out.nfe == sampler.expected_nfe


def test_sde_heun_refuses_score_at_sigma_zero():
    """With no last step the velocity SDE interval reaches t = 0, where the score of a velocity model is
    0/0."""
    interp = get_interpolant("linear")
    oracle = GaussianOracle(interp, MU, S)
    sampler = build_sampler("sde_heun", interpolant=interp, steps=5, diffusion="constant", last_step="none")
    with pytest.raises(EndpointError):
        sampler(oracle.model("velocity"), _z(8))


@pytest.mark.parametrize("interp,prediction", [("linear", "velocity"), ("gvp", "noise"), ("vp", "score")])
def test_prediction_types_give_one_nfe_per_em_step(interp, prediction):
    interp = get_interpolant(interp)
    oracle = GaussianOracle(interp, MU, S)
    s = build_sampler("sde", interpolant=interp, prediction=prediction, steps=250)
    assert s.expected_nfe == 250
    assert s(oracle.model(prediction), _z(4)).nfe == 250  # 249 EM steps + the mean last step
    s = build_sampler("sde_em", interpolant=interp, prediction=prediction, steps=10, last_step="none")
    assert s(oracle.model(prediction), _z(4)).nfe == 9
    s = build_sampler("sde_heun", interpolant=interp, prediction=prediction, steps=10)
    assert s(oracle.model(prediction), _z(4)).nfe == 2 * 9 + 1


# --- an independent transcription of the SiT repository's Euler-Maruyama loop (its time s = 1 - t) ----------
def _sit_plan(name):
    """(alpha, d_alpha, sigma, d_sigma) of SiT's ICPlan / GVPCPlan / VPCPlan in SiT time s (s = 1 data)."""
    if name == "linear":
        return lambda s: (s, torch.ones_like(s), 1 - s, -torch.ones_like(s))
    if name == "gvp":
        return lambda s: (torch.sin(s * math.pi / 2), math.pi / 2 * torch.cos(s * math.pi / 2),
                          torch.cos(s * math.pi / 2), -math.pi / 2 * torch.sin(s * math.pi / 2))

    def vp(s, lo=0.1, hi=20.0):
        lm = -0.25 * (1 - s) ** 2 * (hi - lo) - 0.5 * (1 - s) * lo
        dlm = 0.5 * (1 - s) * (hi - lo) + 0.5 * lo
        a = torch.exp(lm)
        sig = torch.sqrt(1 - torch.exp(2 * lm))
        return a, a * dlm, sig, torch.exp(2 * lm) * (2 * dlm) / (-2 * sig)

    return vp


def _sit_sde(plan, v_paper, x, form, norm, num_steps, t0, last_size, noises, method="Euler"):
    def D(s):
        a, da, sg, dsg = plan(s)
        sbdm = (da / a) * sg**2 - sg * dsg
        return {"SBDM": norm * sbdm, "sigma": norm * sg, "constant": norm + 0 * s,
                "linear": norm * (1 - s), "decreasing": 0.25 * (norm * torch.cos(math.pi * s) + 1) ** 2,
                "inccreasing-decreasing": norm * torch.sin(math.pi * s) ** 2}[form]

    def sde_drift(x, s):
        v_sit = -v_paper(x, 1 - s)
        a, da, sg, dsg = plan(s)
        ratio = a / da
        score = (ratio * v_sit - x) / (sg**2 - ratio * dsg * sg)
        return v_sit + D(s) * score

    ts = torch.linspace(t0, 1 - last_size, num_steps, dtype=torch.float64)
    dt = ts[1] - ts[0]
    for k, s in enumerate(ts[:-1]):
        if method == "Euler":
            x = x + sde_drift(x, s) * dt + torch.sqrt(2 * D(s)) * noises[k] * torch.sqrt(dt)
        else:  # SiT's Heun step: noise first, then a Heun step of the drift from the perturbed point
            xhat = x + torch.sqrt(2 * D(s)) * noises[k] * torch.sqrt(dt)
            k1 = sde_drift(xhat, s)
            k2 = sde_drift(xhat + dt * k1, s + dt)
            x = xhat + 0.5 * dt * (k1 + k2)
    return x + sde_drift(x, ts[-1]) * last_size  # SiT's "Mean" last step


@pytest.mark.parametrize("interp", ["linear", "gvp", "vp"])
@pytest.mark.parametrize("form", ["SBDM", "sigma", "linear", "decreasing", "inccreasing-decreasing"])
@pytest.mark.parametrize("method", ["Euler", "Heun"])
def test_sde_replays_sit_trajectory(interp, form, method):
    """Same z and step noises: ablate's 1-NFE EM step (2 for Heun) reproduces SiT's 2-NFE EM step (4 for
    Heun) to float64 precision, on SiT's grid with its mean last step."""
    ip = get_interpolant(interp)
    oracle = GaussianOracle(ip, MU, S)
    n, size = 20, 0.04
    z = _z(6)
    noises = torch.randn(n - 1, 6, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    name = "sde_em" if method == "Euler" else "sde_heun"
    sampler = build_sampler(name, interpolant=ip, prediction="velocity", steps=n, diffusion=f"sit:{form}",
                            diffusion_norm=0.8, last_step="mean", last_step_size=size)
    ours = sampler(oracle.model("velocity"), z, noise=noises).x
    t0 = 1 - sampler.t_max
    vel = oracle.model("velocity")
    v_paper = lambda x, t: vel(x, t.expand(x.shape[0]))
    ref = _sit_sde(_sit_plan(interp), v_paper, z, form, 0.8, n, t0, size, noises, method)
    assert torch.allclose(ours, ref, atol=1e-10, rtol=1e-10), (ours - ref).abs().max()


def test_per_image_noise_is_batch_independent():
    """Image i gets the same z and step noises in any batch, so sampled images agree across batch splits."""
    interp = get_interpolant("linear")
    oracle = GaussianOracle(interp, MU, S)
    sampler = build_sampler("sde_em", interpolant=interp, steps=12)
    seeds = [11, 5, 7, 42, 0, 3]
    full = PerImageNoise(seeds, (2,), dtype=torch.float64)
    a, b = PerImageNoise(seeds[:2], (2,), dtype=torch.float64), PerImageNoise(seeds[2:], (2,),
    dtype=torch.float64)
    assert torch.equal(full.z, torch.cat([a.z, b.z]))
    assert torch.equal(full(4), torch.cat([a(4), b(4)]))
    assert not torch.equal(full(4), full(5))
    model = oracle.model("velocity")
    x_full = sampler(model, full.z, noise=full).x
    x_split = torch.cat([sampler(model, a.z, noise=a).x, sampler(model, b.z, noise=b).x])
    assert torch.allclose(x_full, x_split, rtol=0, atol=1e-14)
    # the seeds= shortcut and per_image_noise draw the same streams
    z = per_image_noise(seeds, (2,), dtype=torch.float64)
    assert torch.equal(z, full.z)
    assert torch.equal(sampler(model, z, seeds=seeds).x, x_full)
    with pytest.raises(ValueError, match="seeds"):
        sampler(model, z, seeds=seeds[:3])


def test_bad_values_raise():
    interp = get_interpolant("linear")
    w = get_diffusion("w_kl", interp)
    with pytest.raises(ValueError, match="steps"):
        SDESampler(interp, "velocity", w, steps=-3)
    with pytest.raises(ValueError, match="last_step"):
        SDESampler(interp, "velocity", w, last_step="median")
    with pytest.raises(ValueError, match="solver"):
        SDESampler(interp, "velocity", w, method="milstein")
    with pytest.raises(ValueError, match="last_step_size"):
        SDESampler(interp, "velocity", w, last_step_size=0.0)
    with pytest.raises(ValueError, match="guidance"):
        SDESampler(interp, "velocity", w, guidance_scale=-1.0, null_class=10)
    with pytest.raises(ValueError, match="shape"):
        build_sampler("sde", interpolant=interp, steps=4)(
            GaussianOracle(interp, MU, S).model("velocity"), _z(3), noise=torch.zeros(3, 5, 2,
            dtype=torch.float64)
        )


def test_singular_coefficient_starts_off_the_noise_end():
    """w_KL is infinite at t = 1 on linear: the SDE starts at 1 - 1e-3; sigma is finite: it starts at 1."""
    interp = get_interpolant("linear")
    assert build_sampler("sde", interpolant=interp, diffusion="w_kl").t_max == pytest.approx(1 - 1e-3)
    assert build_sampler("sde", interpolant=interp, diffusion="sigma").t_max == 1.0
    assert build_sampler("sde", interpolant="vp", diffusion="w_kl").t_max == 1.0
