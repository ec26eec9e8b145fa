"""Discrete-time DDPM (DiT): schedule values, respacing, VB/decoder terms, stop-gradient, samplers, replay."""

import math

import pytest
import torch

from ablate.transport.ddpm import (
    GaussianDiffusion,
    approx_standard_normal_cdf,
    build_ddpm,
    discretized_gaussian_log_likelihood,
    linear_betas,
    space_timesteps,
)
from ablate.transport.interpolants import VP

F64 = torch.float64


def test_schedule_published_values():
    d = build_ddpm()
    assert d.num_timesteps == 1000
    ab = [math.prod(1 - (1e-4 + (0.02 - 1e-4) * j / 999) for j in range(i + 1)) for i in (499, 999)]
    assert d.alphas_cumprod[499].item() == pytest.approx(ab[0], rel=1e-12)
    assert d.alphas_cumprod[499].item() == pytest.approx(0.07859, abs=1e-5)
    assert d.alphas_cumprod[999].item() == pytest.approx(4.036e-5, rel=1e-3)
    assert d.alphas_cumprod[999].item() == pytest.approx(ab[1], rel=1e-10)
    assert d.betas.dtype == F64


def test_linear_betas_scale_with_T():
    b = linear_betas(250)
    assert b[0].item() == pytest.approx(4e-4) and b[-1].item() == pytest.approx(0.08)
    with pytest.raises(ValueError, match="num_timesteps"):
        linear_betas(1)


def test_respacing_250():
    kept = space_timesteps(1000, "250")
    assert len(kept) == 250 and kept[:3] == [0, 4, 8] and kept[-2:] == [995, 999]
    # stride (1000 - 1) / (250 - 1), rounded (Python round) position by position
    pos, expected = 0.0, []
    for _ in range(250):
        expected.append(round(pos))
        pos += 999 / 249
    assert kept == expected
    r = build_ddpm(respacing="250")
    assert r.betas[0].item() == pytest.approx(1e-4, rel=1e-9)
    assert r.betas[1].item() == pytest.approx(5.99e-4, abs=1e-6)
    assert r.betas[-1].item() == pytest.approx(0.0775, abs=1e-4)
    # respaced alpha_bar equal the original ones at the kept indices
    torch.testing.assert_close(r.alphas_cumprod, build_ddpm().alphas_cumprod[kept], rtol=1e-12, atol=0)


def test_respacing_forms():
    assert space_timesteps(1000, "") == list(range(1000))
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    assert space_timesteps(100, "10,5") == [0, 5, 11, 16, 22, 27, 33, 38, 44, 49] + [
        50,
        62,
        74,
        87,
        99,
    ]  # round(24.5) = 24
    with pytest.raises(ValueError, match="valid forms"):
        space_timesteps(1000, "fast")
    with pytest.raises(ValueError, match="cannot take"):
        space_timesteps(10, "20")
    with pytest.raises(ValueError, match="ddim"):
        space_timesteps(1000, "ddim600")


def test_wrapped_model_sees_original_index():
    r = build_ddpm(respacing="250", learn_sigma=False)
    seen = []
    x = torch.zeros(2, 1, dtype=F64)
    r.p_mean_variance(
        lambda x, i, y: seen.append(i.tolist()) or torch.zeros_like(x), x, torch.tensor([1, 249])
    )
    assert seen == [[4, 999]]


def test_posterior_matches_bayes_for_scalar():
    """q(x_{t-1}|x_t,x0) from Bayes: precision = 1/(1-ab_prev) + alpha_t/beta_t, mean/precision form."""
    d = build_ddpm()
    t, x0, xt = 300, 0.3, -0.8
    abp, beta = d.alphas_cumprod[t - 1].item(), d.betas[t].item()
    prec = 1 / (1 - abp) + (1 - beta) / beta
    mean = (math.sqrt(abp) * x0 / (1 - abp) + math.sqrt(1 - beta) * xt / beta) / prec
    m, v, lv = d.q_posterior_mean_variance(
        torch.tensor([[x0]], dtype=F64), torch.tensor([[xt]], dtype=F64), t
    )
    assert m.item() == pytest.approx(mean, rel=1e-10) and v.item() == pytest.approx(1 / prec, rel=1e-10)
    assert lv.item() == pytest.approx(math.log(1 / prec), rel=1e-10)
    # the clipped log variance at t = 0 repeats t = 1
    assert d.posterior_log_variance_clipped[0] == d.posterior_log_variance_clipped[1]


def test_vb_kl_term_against_torch_distributions():
    d = build_ddpm()
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 2, 2, 2, dtype=F64, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, dtype=F64, generator=g)
    t = torch.tensor([10, 500, 999])
    out = torch.cat(
        [torch.randn(x0.shape, dtype=F64, generator=g), torch.rand(x0.shape, dtype=F64) * 2 - 1], 1
    )
    losses = d.training_losses(lambda x, i, y: out, x0, t, noise=noise)
    xt = d.q_sample(x0, t, noise)
    eps, v = out[:, :2], out[:, 2:]
    for b, i in enumerate(t.tolist()):
        ab, abp, beta = d.alphas_cumprod[i], d.alphas_cumprod[i - 1], d.betas[i]
        post_var = beta * (1 - abp) / (1 - ab)
        x0_hat = (xt[b] - torch.sqrt(1 - ab) * eps[b]) / torch.sqrt(ab)
        c1, c2 = torch.sqrt(abp) * beta / (1 - ab), torch.sqrt(1 - beta) * (1 - abp) / (1 - ab)
        log_var = (v[b] + 1) / 2 * torch.log(beta) + (1 - v[b]) / 2 * torch.log(post_var)
        kl = torch.distributions.kl_divergence(
            torch.distributions.Normal(c1 * x0[b] + c2 * xt[b], post_var.sqrt()),
            torch.distributions.Normal(c1 * x0_hat + c2 * xt[b], (0.5 * log_var).exp()),
        )
        assert losses["vb"][b].item() == pytest.approx(kl.mean().item() / math.log(2), rel=1e-10)
        assert losses["mse"][b].item() == pytest.approx(((noise[b] - eps[b]) ** 2).mean().item(), rel=1e-12)
    torch.testing.assert_close(losses["loss"], losses["mse"] + losses["vb"])


def test_decoder_nll_at_step_zero_by_hand():
    """-log of the bin probability with ADM's tanh CDF, bins of half-width 1/255, open outer bins."""
    d = build_ddpm()
    x0 = torch.tensor([-1.0, 0.2, 1.0], dtype=F64).reshape(1, 3, 1, 1)
    out = torch.cat([torch.full_like(x0, 0.1), torch.full_like(x0, 0.3)], 1)
    xt = d.q_sample(x0, torch.tensor([0]), torch.zeros_like(x0))
    vb = d.vb_terms_bpd(out, x0, xt, torch.tensor([0]))
    p = d.p_mean_variance(lambda x, i, y: out, xt, torch.tensor([0]))
    phi = lambda z: 0.5 * (1 + math.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3)))
    nll = 0.0
    for c, xv in enumerate([-1.0, 0.2, 1.0]):
        m, sd = p["mean"][0, c, 0, 0].item(), math.exp(0.5 * p["log_variance"][0, c, 0, 0].item())
        hi, lo = phi((xv - m + 1 / 255) / sd), phi((xv - m - 1 / 255) / sd)
        prob = hi if xv < -0.999 else (1 - lo if xv > 0.999 else hi - lo)
        nll -= math.log(max(prob, 1e-12))
    assert vb.item() == pytest.approx(nll / 3 / math.log(2), rel=1e-10)


def test_tanh_cdf_is_close_to_erf_but_not_equal():
    z = torch.linspace(-5, 5, 1001, dtype=F64)
    exact = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    err = (approx_standard_normal_cdf(z) - exact).abs().max().item()
    assert 1e-6 < err < 3e-4
    x = torch.tensor([0.0], dtype=F64)
    ll = discretized_gaussian_log_likelihood(
        x, torch.zeros_like(x), torch.log(torch.tensor([0.01], dtype=F64))
    )
    assert ll.item() == pytest.approx(math.log(math.erf((1 / 255) / 0.01 / math.sqrt(2))), rel=1e-3)


def test_vb_stop_gradient_on_mean():
    d = build_ddpm()
    x0 = torch.rand(4, 2, 3, 3, dtype=F64) * 2 - 1
    a = torch.tensor(0.3, dtype=F64, requires_grad=True)  # drives eps
    b = torch.tensor(0.2, dtype=F64, requires_grad=True)  # drives v
    net = lambda x, i, y: torch.cat([a * x, torch.tanh(b * x)], 1)
    out = d.training_losses(net, x0, torch.tensor([0, 5, 400, 999]))
    ga, gb = torch.autograd.grad(out["vb"].sum(), (a, b), allow_unused=True, retain_graph=True)
    assert (ga is None or ga.item() == 0.0) and gb.item() != 0.0
    (gm,) = torch.autograd.grad(out["mse"].sum(), a, retain_graph=True)
    ga_total, _ = torch.autograd.grad(out["loss"].sum(), (a, b))
    assert ga_total.item() == pytest.approx(gm.item(), rel=1e-12)


def _oracle(d: GaussianDiffusion, mu: float, s: float):
    """The exact reverse kernel for data N(mu, s^2), as a learned-range network output [eps, v]:
    eps = E[eps | x_t] = sqrt(1-ab) (x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab), and v chosen so that the learned
    variance equals Var[x_prev | x_t] = beta~_t + coef1_t^2 Var[x0 | x_t],
    Var[x0 | x_t] = s^2 (1-ab) / (ab s^2 + 1-ab).
    With these, every ancestral step is exact, so the loop must return N(mu, s^2) up to Monte Carlo error."""

    def net(x, i, y):
        k = torch.searchsorted(d.timestep_map, i)  # the network receives the ORIGINAL index
        col = lambda a: a[k].to(x.dtype).reshape(-1, *[1] * (x.ndim - 1))
        ab = col(d.alphas_cumprod)
        eps = torch.sqrt(1 - ab) * (x - torch.sqrt(ab) * mu) / (ab * s**2 + 1 - ab)
        var = col(d.posterior_variance) + col(d.posterior_mean_coef1) ** 2 * s**2 * (1 - ab) / (
            ab * s**2 + 1 - ab
        )
        lo, hi = col(d.posterior_log_variance_clipped), col(d.log_betas)
        v = 2 * (torch.log(var) - lo) / (hi - lo) - 1
        return torch.cat([eps, v.expand_as(x)], 1)

    return net


def _check_gaussian(x, mu, s):
    n = x.numel()  # 5 standard errors
    assert x.mean().item() == pytest.approx(mu, abs=5 * s / n**0.5)
    assert x.std().item() == pytest.approx(s, rel=5 / (2 * n) ** 0.5)


@pytest.mark.parametrize("respacing", ["25", pytest.param("", marks=pytest.mark.slow)])
def test_ancestral_loop_with_oracle_lands_on_gaussian(respacing):
    mu, s = 0.5, 0.3
    d = build_ddpm(respacing=respacing)
    net = _oracle(d, mu, s)
    _check_gaussian(
        d.p_sample_loop(net, (20_000, 1), generator=torch.Generator().manual_seed(0), dtype=F64), mu, s
    )


def test_ddim_loop_with_oracle_matches_closed_form():
    """eta = 0 with the exact eps is linear in x: x_prev - sqrt(ab') mu = g (x - sqrt(ab) mu) with
    g = (sqrt(ab' ab) s^2 + sqrt((1 - ab')(1 - ab))) / (ab s^2 + 1 - ab) (DDIM eq. 12 with the Gaussian
    E[x0|x], E[eps|x]). So from z ~ N(0, 1) the output is N(mu - G sqrt(ab_last) mu, G^2), G = prod g: checked
    to Monte Carlo error and pathwise,
    and G -> 1 (the exact Gaussian) as the number of steps grows."""
    mu, s = -0.4, 0.5

    def gain(d):
        G = 1.0
        for k in range(d.num_timesteps):
            ab, abp = d.alphas_cumprod[k].item(), d.alphas_cumprod_prev[k].item()
            G *= (math.sqrt(abp * ab) * s**2 + math.sqrt((1 - abp) * (1 - ab))) / (ab * s**2 + 1 - ab)
        return G

    d = build_ddpm(respacing="ddim10")
    G = gain(d)
    z = torch.randn(20_000, 1, dtype=F64, generator=torch.Generator().manual_seed(1))
    x = d.ddim_sample_loop(_oracle(d, mu, s), z, eta=0.0)
    _check_gaussian(x, mu - G * math.sqrt(d.alphas_cumprod[-1].item()) * mu, G)
    torch.testing.assert_close(
        x, mu + G * (z - math.sqrt(d.alphas_cumprod[-1].item()) * mu), rtol=1e-9, atol=1e-9
    )
    assert abs(gain(build_ddpm()) - s) < abs(G - s) and gain(build_ddpm()) == pytest.approx(s, rel=5e-3)


def test_fixed_variance_is_beta_large():
    d = build_ddpm(respacing="10", learn_sigma=False)
    x = torch.zeros(2, 1, dtype=F64)
    p = d.p_mean_variance(lambda x, i, y: x, x, torch.tensor([0, 5]))
    assert p["variance"][0].item() == pytest.approx(d.posterior_variance[1].item(), rel=1e-12)
    assert p["variance"][1].item() == pytest.approx(d.betas[5].item(), rel=1e-12)


def test_noise_replay_equals_generator_draws():
    d = build_ddpm(respacing="25")
    net = _oracle(d, 0.0, 1.0)
    x_gen = d.p_sample_loop(net, (8, 2), generator=torch.Generator().manual_seed(3), dtype=F64)
    g = torch.Generator().manual_seed(3)
    z = torch.randn(8, 2, dtype=F64, generator=g)
    noises = [torch.randn(8, 2, dtype=F64, generator=g) for _ in range(25)]
    torch.testing.assert_close(d.p_sample_loop(net, z, noise=noises), x_gen, rtol=0, atol=0)
    torch.testing.assert_close(d.p_sample_loop(net, z, noise=noises[:-1]), x_gen, rtol=0, atol=0)
    x_ddim = d.ddim_sample_loop(net, z, noise=noises, eta=1.0)
    g2 = torch.Generator().manual_seed(3)
    torch.randn(8, 2, dtype=F64, generator=g2)
    torch.testing.assert_close(d.ddim_sample_loop(net, z, noise=g2, eta=1.0), x_ddim, rtol=0, atol=0)
    with pytest.raises(ValueError, match="per-step noises"):
        d.p_sample_loop(net, z, noise=noises[:3])


def test_last_step_adds_no_noise_and_clip():
    d = build_ddpm(respacing="10", learn_sigma=False)
    x = torch.full((2, 1), 3.0, dtype=F64)
    net = lambda x, i, y: torch.zeros_like(x)
    a = d.p_sample(net, x, 0, noise=torch.ones_like(x))["sample"]
    b = d.p_sample(net, x, 0, noise=-torch.ones_like(x))["sample"]
    torch.testing.assert_close(a, b)
    clipped = d.p_mean_variance(net, x, 0, clip_denoised=True)["pred_xstart"]
    assert clipped.max().item() == 1.0


def test_to_paper_time_matches_vp():
    d = build_ddpm()
    idx = torch.tensor([0, 100, 499, 900, 999])
    t = d.to_paper_time(idx)
    torch.testing.assert_close(VP().alpha(t), d.alphas_cumprod[idx].sqrt(), rtol=1e-12, atol=0)
    assert t[2].item() == pytest.approx(0.5, abs=2e-3) and t[-1].item() == pytest.approx(1.0034, abs=1e-4)
    r = build_ddpm(respacing="250")
    torch.testing.assert_close(
        r.to_paper_time(torch.tensor([1, 249])), t.new_tensor([d.to_paper_time(4), t[-1]])
    )


def test_bad_inputs():
    d = build_ddpm(respacing="10")
    x = torch.zeros(2, 1, dtype=F64)
    with pytest.raises(ValueError, match="out of range"):
        d.q_sample(x, 10)
    with pytest.raises(TypeError, match="integers"):
        d.q_sample(x, torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="channels"):
        d.p_mean_variance(lambda x, i, y: x, x, 3)  # learned sigma needs 2C channels
    with pytest.raises(ValueError, match="betas"):
        GaussianDiffusion([0.1, 1.5])


def test_float32_inputs_use_float64_schedule_cast_at_use():
    d = build_ddpm()
    g = torch.Generator().manual_seed(4)
    x0 = torch.rand(3, 2, 2, 2, dtype=F64, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, dtype=F64, generator=g)
    t = torch.tensor([0, 400, 999])
    net = lambda x, i, y: torch.cat([0.3 * x, torch.tanh(x)], 1)
    l64 = d.training_losses(net, x0, t, noise=noise)["loss"]
    l32 = d.training_losses(net, x0.float(), t, noise=noise.float())["loss"]
    assert l32.dtype == torch.float32 and d.alphas_cumprod.dtype == F64
    torch.testing.assert_close(l32.double(), l64, rtol=1e-4, atol=1e-5)


def test_reverse_ddim_step_is_the_gaussian_affine_map():
    """With the exact eps of N(mu, s^2) data, x_{t+1} - sqrt(ab') mu = g (x_t - sqrt(ab) mu), ab' = ab_next,
    g = (sqrt(ab' ab) s^2 + sqrt((1 - ab')(1 - ab))) / (ab s^2 + 1 - ab) (DDIM eq. 12 run forwards); after the
    last index ab_next = 0: x_T = eps_hat."""
    mu, s = 0.3, 0.6
    d = build_ddpm(respacing="50")
    net = _oracle(d, mu, s)
    x = torch.randn(5, 1, dtype=F64, generator=torch.Generator().manual_seed(0))
    for i in (0, 7, 30, 49):
        ab, abn = d.alphas_cumprod[i].item(), d.alphas_cumprod_next[i].item()
        g = (math.sqrt(abn * ab) * s**2 + math.sqrt((1 - abn) * (1 - ab))) / (ab * s**2 + 1 - ab)
        got = d.ddim_reverse_sample(net, x, torch.full((5,), i))["sample"]
        torch.testing.assert_close(got - math.sqrt(abn) * mu, g * (x - math.sqrt(ab) * mu), rtol=1e-12, atol=1e-12)
    assert d.alphas_cumprod_next[-1].item() == 0.0
    torch.testing.assert_close(d.alphas_cumprod_next[:-1], d.alphas_cumprod[1:], rtol=0, atol=0)


def test_calc_bpd_loop_layout_and_noise_replay():
    d = build_ddpm(respacing="10")
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 2, 2, 2, dtype=F64, generator=g) * 2 - 1
    net = lambda x, i, y: torch.cat([0.2 * x, torch.tanh(x)], 1)
    out = d.calc_bpd_loop(net, x0, noise=torch.Generator().manual_seed(1))
    assert out["vb"].shape == out["xstart_mse"].shape == out["mse"].shape == (3, 10)
    torch.testing.assert_close(out["total_bpd"], out["vb"].sum(1) + out["prior_bpd"], rtol=0, atol=0)
    g1 = torch.Generator().manual_seed(1)
    noises = [torch.randn(x0.shape, dtype=F64, generator=g1) for _ in range(10)]
    replay = d.calc_bpd_loop(net, x0, noise=noises)
    for k in out:
        torch.testing.assert_close(replay[k], out[k], rtol=0, atol=0)
    # column k is index T-1-k (DiT's visiting order): the decoder NLL of index 0 is the last column
    x_t = d.q_sample(x0, torch.zeros(3, dtype=torch.long), noises[-1])
    last = d.vb_terms_bpd(net(x_t, torch.zeros(3, dtype=torch.long), None), x0, x_t, torch.zeros(3, dtype=torch.long),
                          clip_denoised=True)
    torch.testing.assert_close(out["vb"][:, -1], last, rtol=1e-14, atol=1e-14)
    with pytest.raises(ValueError, match="per-step noises"):
        d.calc_bpd_loop(net, x0, noise=noises[:3])


def test_prior_bpd_by_hand():
    """KL(N(sqrt(ab) x0, 1 - ab) || N(0, 1)) = (ab x0^2 + (1 - ab) - 1 - log(1 - ab)) / 2, in bits, per dim."""
    d = build_ddpm()
    x0 = torch.tensor([[0.5, -1.0]], dtype=F64)
    ab = d.alphas_cumprod[-1].item()
    kl = [(ab * v**2 + (1 - ab) - 1 - math.log(1 - ab)) / 2 for v in (0.5, -1.0)]
    assert d.prior_bpd(x0).item() == pytest.approx(sum(kl) / 2 / math.log(2), rel=1e-10)
