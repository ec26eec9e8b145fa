"""ablate against independent transcriptions of the SiT and DiT reference formulas, in their own conventions.

The SiT side works in SiT's time (s = 1 - t, s = 1 data) with its own path coefficients, its `drift_var` and its
loss weights; the DiT side works with numpy float64 schedules, the learned-range variance, the tanh-CDF decoder
NLL and DiT's DDIM step. Both are written from the papers and the reference repositories' documented formulas,
independently of ablate's code, and ablate must agree with them to ~1e-12 in float64.
"""

import math

import numpy as np
import pytest
import torch

from ablate.transport.ddpm import build_ddpm, space_timesteps
from ablate.transport.loss import Objective


# ----------------------------------------------------------------------------------------------------- SiT
def _sit_path(path, s):
    """SiT's (alpha, d_alpha, sigma, d_sigma, drift_var) in its own time s (s = 1 data, s = 0 noise)."""
    if path == "linear":
        a, da, sg, dsg = s, torch.ones_like(s), 1 - s, -torch.ones_like(s)
        dv = (1 / s) * sg**2 - sg * dsg
    elif path == "gvp":
        a, da = torch.sin(s * math.pi / 2), math.pi / 2 * torch.cos(s * math.pi / 2)
        sg, dsg = torch.cos(s * math.pi / 2), -math.pi / 2 * torch.sin(s * math.pi / 2)
        dv = math.pi / (2 * torch.tan(s * math.pi / 2)) * sg**2 - sg * dsg
    else:
        smin, smax = 0.1, 20.0
        lmc = -0.25 * (1 - s) ** 2 * (smax - smin) - 0.5 * (1 - s) * smin
        dlmc = (1 - s) * (smax - smin) * 0.5 + 0.5 * smin
        a = torch.exp(lmc)
        da = a * dlmc
        sg = torch.sqrt(1 - torch.exp(2 * lmc))
        dsg = torch.exp(2 * lmc) * (2 * dlmc) / (-2 * sg)
        dv = (0.1 + (1 - s) * 19.9) / 2
    return a, da, sg, dsg, dv


CASES = [(p, pred, w) for p in ("linear", "gvp", "vp") for pred in ("velocity", "score", "noise")
         for w in (["none"] if pred == "velocity" else ["none", "velocity", "likelihood"])]


@pytest.mark.parametrize("path,pred,weighting", CASES)
def test_losses_match_sit_training_losses(path, pred, weighting):
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(5, 3, 4, dtype=torch.float64, generator=g)  # data (SiT's x1)
    x0 = torch.randn(5, 3, 4, dtype=torch.float64, generator=g)  # noise (SiT's x0)
    W = torch.randn(3, 3, dtype=torch.float64, generator=g)
    t = torch.rand(5, dtype=torch.float64, generator=g) * 0.9 + 0.05  # paper time
    s = 1 - t

    def model_sit(x, s):
        return torch.einsum("bcd,ec->bed", x, W) * (1 + s.reshape(-1, 1, 1))

    a, da, sg, dsg, dv = _sit_path(path, s)
    E = lambda c: c.reshape(-1, 1, 1)
    xt = E(a) * x1 + E(sg) * x0
    ut = E(da) * x1 + E(dsg) * x0
    out = model_sit(xt, s)
    if pred == "velocity":
        ref = ((out - ut) ** 2).mean((1, 2))
    else:
        w = {"none": torch.ones_like(t), "velocity": (dv / sg) ** 2, "likelihood": dv / sg**2}[weighting]
        err = out - x0 if pred == "noise" else out * E(sg) + x0
        ref = (E(w) * err**2).mean((1, 2))
    sign = -1 if pred == "velocity" else 1  # SiT's velocity is d x / ds = -d x / dt
    ours = Objective(path, pred, weighting).loss(lambda x, tt, y: sign * model_sit(x, 1 - tt), x1, t=t, noise=x0)
    rel = ((ours["loss"] - ref).abs() / ref.abs()).max().item()
    assert rel < 1e-12, rel


# ----------------------------------------------------------------------------------------------------- DiT
def _dit_schedule(respacing, T=1000):
    scale = 1000 / T
    betas = np.linspace(scale * 1e-4, scale * 0.02, T, dtype=np.float64)
    ac = np.cumprod(1 - betas)
    use = set(space_timesteps(T, respacing))
    last, nb, tm = 1.0, [], []
    for i, a in enumerate(ac):
        if i in use:
            nb.append(1 - a / last)
            last = a
            tm.append(i)
    b = np.array(nb)
    al = 1 - b
    ac = np.cumprod(al)
    acp = np.append(1.0, ac[:-1])
    d = dict(b=b, ac=ac, acp=acp, pv=b * (1 - acp) / (1 - ac), tm=tm)
    d["plvc"] = np.log(np.append(d["pv"][1], d["pv"][1:]))
    d["c1"] = b * np.sqrt(acp) / (1 - ac)
    d["c2"] = (1 - acp) * np.sqrt(al) / (1 - ac)
    return d


def _ex(a, t, x):
    return torch.from_numpy(a)[t].reshape(-1, *[1] * (x.ndim - 1))


def _cdf(x):  # ADM's tanh approximation of the normal CDF
    return 0.5 * (1.0 + torch.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * torch.pow(x, 3))))


def _dgll(x, means, log_scales):
    c = x - means
    inv = torch.exp(-log_scales)
    cp, cm = _cdf(inv * (c + 1 / 255)), _cdf(inv * (c - 1 / 255))
    return torch.where(x < -0.999, torch.log(cp.clamp(min=1e-12)),
                       torch.where(x > 0.999, torch.log((1 - cm).clamp(min=1e-12)),
                                   torch.log((cp - cm).clamp(min=1e-12))))


def _nkl(m1, l1, m2, l2):
    return 0.5 * (-1 + l2 - l1 + torch.exp(l1 - l2) + (m1 - m2) ** 2 * torch.exp(-l2))


def _mf(x):
    return x.mean(dim=list(range(1, x.ndim)))


def _pmv(d, out, x, t):
    C = x.shape[1]
    eps, v = torch.split(out, C, 1)
    f = (v + 1) / 2
    lv = f * _ex(np.log(d["b"]), t, x) + (1 - f) * _ex(d["plvc"], t, x)
    x0 = _ex(np.sqrt(1 / d["ac"]), t, x) * x - _ex(np.sqrt(1 / d["ac"] - 1), t, x) * eps
    return _ex(d["c1"], t, x) * x0 + _ex(d["c2"], t, x) * x, lv, x0


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.w = torch.nn.Parameter(torch.randn(8, 4, dtype=torch.float64, generator=g) * 0.3)

    def forward(self, x, t, y=None):
        h = torch.einsum("bchw,oc->bohw", x, self.w) + (t.double() / 1000).reshape(-1, 1, 1, 1)
        return torch.cat([h[:, :4], torch.tanh(h[:, 4:])], 1)


@pytest.mark.parametrize("respacing", ["", "250", "ddim25"])
def test_ddpm_matches_dit_gaussian_diffusion(respacing):
    g = torch.Generator().manual_seed(0)
    net = _Net()
    model = lambda x, i, y: net(x, i)
    d, D = _dit_schedule(respacing), build_ddpm(respacing=respacing)
    np.testing.assert_allclose(D.betas.numpy(), d["b"], rtol=0, atol=1e-15)
    np.testing.assert_allclose(D.posterior_log_variance_clipped.numpy(), d["plvc"], rtol=1e-12, atol=0)
    nT = len(d["b"])
    x0 = torch.rand(6, 4, 3, 3, dtype=torch.float64, generator=g) * 2 - 1
    x0[0, 0, 0, 0], x0[1, 0, 0, 0] = -1.0, 1.0  # exercise both edges of the decoder NLL
    t = torch.tensor([0, 1, 2, nT // 2, nT - 2, nT - 1])
    noise = torch.randn(x0.shape, dtype=torch.float64, generator=g)
    tmap = torch.tensor(d["tm"])
    # training loss: L_simple + VB (mean detached), decoder NLL at index 0
    xt = _ex(np.sqrt(d["ac"]), t, x0) * x0 + _ex(np.sqrt(1 - d["ac"]), t, x0) * noise
    out = net(xt, tmap[t])
    mean, lv, _ = _pmv(d, torch.cat([out[:, :4].detach(), out[:, 4:]], 1), xt, t)
    tmean = _ex(d["c1"], t, x0) * x0 + _ex(d["c2"], t, x0) * xt
    kl = _mf(_nkl(tmean, _ex(d["plvc"], t, x0), mean, lv)) / np.log(2)
    nll = _mf(-_dgll(x0, mean, 0.5 * lv)) / np.log(2)
    vb = torch.where(t == 0, nll, kl)
    mse = _mf((noise - out[:, :4]) ** 2)
    got = D.training_losses(model, x0, t, noise=noise)
    torch.testing.assert_close(got["vb"], vb, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got["loss"], mse + vb, rtol=1e-12, atol=1e-12)
    # one ancestral step and one DDIM step (eta 0 and 0.7) with given noise
    x = torch.randn(x0.shape, dtype=torch.float64, generator=g)
    nz = torch.randn(x0.shape, dtype=torch.float64, generator=g)
    o = net(x, tmap[t])
    m, lv, x0h = _pmv(d, o, x, t)
    mask = (t != 0).double().reshape(-1, 1, 1, 1)
    torch.testing.assert_close(D.p_sample(model, x, t, noise=nz)["sample"], m + mask * torch.exp(0.5 * lv) * nz,
                               rtol=1e-12, atol=1e-12)
    for eta in (0.0, 0.7):
        eps = (_ex(np.sqrt(1 / d["ac"]), t, x) * x - x0h) / _ex(np.sqrt(1 / d["ac"] - 1), t, x)
        ab, abp = _ex(d["ac"], t, x), _ex(d["acp"], t, x)
        sg = eta * torch.sqrt((1 - abp) / (1 - ab)) * torch.sqrt(1 - ab / abp)
        ref = x0h * torch.sqrt(abp) + torch.sqrt(1 - abp - sg**2) * eps + mask * sg * nz
        torch.testing.assert_close(D.ddim_sample(model, x, t, eta=eta, noise=nz)["sample"], ref,
                                   rtol=1e-12, atol=1e-12)


def _pmv_clip(d, out, x, t, clip):
    """DiT's p_mean_variance with process_xstart: x0_hat clamped to [-1, 1] before the posterior mean."""
    C = x.shape[1]
    eps, v = torch.split(out, C, 1)
    f = (v + 1) / 2
    lv = f * _ex(np.log(d["b"]), t, x) + (1 - f) * _ex(d["plvc"], t, x)
    x0 = _ex(np.sqrt(1 / d["ac"]), t, x) * x - _ex(np.sqrt(1 / d["ac"] - 1), t, x) * eps
    if clip:
        x0 = x0.clamp(-1, 1)
    return _ex(d["c1"], t, x) * x0 + _ex(d["c2"], t, x) * x, lv, x0


@pytest.mark.parametrize("respacing", ["250", "10,20", "ddim25"])
def test_ddpm_bound_and_reverse_ddim_match_dit(respacing):
    """q_mean_variance, alphas_cumprod_next, ddim_reverse_sample, _prior_bpd and calc_bpd_loop (per-step VB,
    prior, total, xstart_mse, mse) against DiT's formulas, with the same per-step noises."""
    g = torch.Generator().manual_seed(5)
    net = _Net()
    model = lambda x, i, y: net(x, i)
    d, D = _dit_schedule(respacing), build_ddpm(respacing=respacing)
    nT, tmap = len(d["b"]), torch.tensor(d["tm"])
    acn = np.append(d["ac"][1:], 0.0)
    np.testing.assert_allclose(D.alphas_cumprod_next.numpy(), acn, rtol=1e-12, atol=0)
    np.testing.assert_allclose(D.log_one_minus_alphas_cumprod.numpy(), np.log(1 - d["ac"]), rtol=1e-12, atol=0)
    x0 = torch.rand(4, 4, 3, 3, dtype=torch.float64, generator=g) * 2 - 1
    x0[0, 0, 0, 0], x0[1, 0, 0, 0] = -1.0, 1.0
    t = torch.tensor([0, 1, nT // 2, nT - 1])
    mean, var, logvar = D.q_mean_variance(x0, t)
    for got, want in [(mean, _ex(np.sqrt(d["ac"]), t, x0) * x0), (var, _ex(1 - d["ac"], t, x0).expand_as(x0)),
                      (logvar, _ex(np.log(1 - d["ac"]), t, x0).expand_as(x0))]:
        assert got.shape == x0.shape
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    post = D.q_posterior_mean_variance(x0, x0.flip(0), t)
    assert all(p.shape == x0.shape for p in post)
    # reverse DDIM: x_{t+1} = sqrt(ab_next) x0_hat + sqrt(1 - ab_next) eps_hat, eps_hat from x0_hat
    x = torch.randn(x0.shape, dtype=torch.float64, generator=g)
    _, _, x0h = _pmv_clip(d, net(x, tmap[t]), x, t, False)
    eps = (_ex(np.sqrt(1 / d["ac"]), t, x) * x - x0h) / _ex(np.sqrt(1 / d["ac"] - 1), t, x)
    ref = x0h * torch.sqrt(_ex(acn, t, x)) + torch.sqrt(1 - _ex(acn, t, x)) * eps
    torch.testing.assert_close(D.ddim_reverse_sample(model, x, t)["sample"], ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="eta"):
        D.ddim_reverse_sample(model, x, t, eta=0.5)
    # the prior term and the whole bound
    B = x0.shape[0]
    last = torch.full((B,), nT - 1)
    qm, qlv = _ex(np.sqrt(d["ac"]), last, x0) * x0, _ex(np.log(1 - d["ac"]), last, x0)
    prior = _mf(_nkl(qm, qlv, torch.zeros(()), torch.zeros(()))) / np.log(2)
    torch.testing.assert_close(D.prior_bpd(x0), prior, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(D._prior_bpd(x0), D.prior_bpd(x0), rtol=0, atol=0)  # DiT's name, an alias
    noises = torch.randn(nT, *x0.shape, dtype=torch.float64, generator=g)
    for clip in (True, False):
        vb, xm, mse = [], [], []
        for k, i in enumerate(range(nT - 1, -1, -1)):
            tb = torch.full((B,), i)
            xt = _ex(np.sqrt(d["ac"]), tb, x0) * x0 + _ex(np.sqrt(1 - d["ac"]), tb, x0) * noises[k]
            m, lv, x0h = _pmv_clip(d, net(xt, tmap[tb]), xt, tb, clip)
            tm = _ex(d["c1"], tb, x0) * x0 + _ex(d["c2"], tb, x0) * xt
            kl = _mf(_nkl(tm, _ex(d["plvc"], tb, x0), m, lv)) / np.log(2)
            nll = _mf(-_dgll(x0, m, 0.5 * lv)) / np.log(2)
            vb.append(torch.where(tb == 0, nll, kl))
            xm.append(_mf((x0h - x0) ** 2))
            e = (_ex(np.sqrt(1 / d["ac"]), tb, xt) * xt - x0h) / _ex(np.sqrt(1 / d["ac"] - 1), tb, xt)
            mse.append(_mf((e - noises[k]) ** 2))
        vb, xm, mse = torch.stack(vb, 1), torch.stack(xm, 1), torch.stack(mse, 1)
        got = D.calc_bpd_loop(model, x0, clip_denoised=clip, noise=noises)
        for key, want in [("vb", vb), ("xstart_mse", xm), ("mse", mse), ("prior_bpd", prior),
                          ("total_bpd", vb.sum(1) + prior)]:
            torch.testing.assert_close(got[key], want, rtol=1e-12, atol=1e-12, msg=key)
