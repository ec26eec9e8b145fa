"""Every registered sampler name resolves and runs; tags; discrete-time wrappers against GaussianDiffusion."""

import pytest
import torch

from ablate.sampling import SAMPLERS, as_paper_time, build_sampler
from ablate.transport.ddpm import build_ddpm


def _ddpm_oracle(ddpm, mu=0.8, s=0.5):
    """Exact eps prediction for N(mu, s^2) data under the discrete schedule, called with the ORIGINAL
    index."""
    ab = ddpm.alphas_cumprod

    def model(x, index, y=None):
        a = ab[index].to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return (1 - a).sqrt() * (x - a.sqrt() * mu) / (a * s**2 + 1 - a)

    return model


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_name_resolves_and_runs(name):
    ddpm = build_ddpm(100, learn_sigma=False)
    s = build_sampler(name, interpolant="linear", prediction="velocity", steps=4, ddpm=ddpm)
    assert s.name in (name, {"ode": "ode_heun", "sde": "sde_em"}.get(name))
    assert s.tag.startswith(s.name) and "cfg1.0" in s.tag
    z = torch.randn(3, 2, dtype=torch.float64)
    model = _ddpm_oracle(ddpm) if name in ("ddpm", "ddim") else (lambda x, t, y=None: -x)
    out = s(model, z)
    assert out.x.shape == z.shape and torch.isfinite(out.x).all()
    if s.expected_nfe is not None:
        assert out.nfe == s.expected_nfe


def test_tag_names_the_run():
    s = build_sampler("sde", interpolant="linear", steps=250)
    assert s.tag == "sde_em-w_kl-nfe250-cfg1.0"
    assert build_sampler("ode", interpolant="linear").tag == "ode_heun-nfe250-cfg1.0"
    assert build_sampler("ode_dopri5", interpolant="linear", rtol=1e-4).tag == "ode_dopri5-tol0.0001-cfg1.0"
    s = build_sampler("sde_heun", interpolant="gvp", diffusion="sigma", diffusion_norm=2, last_step="tweedie",
                      guidance_scale=1.5, null_class=10)
    assert s.tag == "sde_heun-sigmax2-nfe499-last_tweedie-cfg1.5"


@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
def test_discrete_wrappers_replay_gaussian_diffusion(kind):
    """Respaced DDPM/DDIM through the registry equal GaussianDiffusion's own loops with the same noise."""
    ddpm = build_ddpm(1000, learn_sigma=False)
    respaced = build_ddpm(1000, "25", learn_sigma=False)
    model = _ddpm_oracle(ddpm)
    z = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noise = torch.randn(25, 5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    s = build_sampler(kind, steps=25, ddpm=ddpm, eta=0.5)
    ours = s(model, z, noise=noise)
    if kind == "ddpm":
        ref = respaced.p_sample_loop(model, z, noise=list(noise))
    else:
        ref = respaced.ddim_sample_loop(model, z, noise=list(noise), eta=0.5)
    assert ours.nfe == 25
    assert torch.allclose(ours.x, ref, atol=1e-12)


def test_ddim_eta0_draws_the_data_distribution():
    ddpm = build_ddpm(1000, learn_sigma=False)
    # For Gaussian data DDIM(eta=0) is an affine map x = a z + b per dimension: N(mu, s^2) needs a = s, b =
    # mu.
    z = torch.randn(16, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = build_sampler("ddim", steps=200, ddpm=ddpm)(_ddpm_oracle(ddpm), z).x  # DDIM's error is O(1/steps)
    a = ((x - x.mean()) * (z - z.mean())).sum() / ((z - z.mean()) ** 2).sum()
    b = (x - a * z).mean()
    assert torch.allclose(x, a * z + b, atol=1e-10)
    assert a.item() == pytest.approx(0.5, rel=0.03) and b.item() == pytest.approx(0.8, rel=0.01)


def test_bad_names_and_values_raise():
    with pytest.raises(ValueError, match="valid choices"):
        build_sampler("euler_ancestral", interpolant="linear")
    with pytest.raises(ValueError, match="steps"):
        build_sampler("sde", interpolant="linear", steps=0)
    with pytest.raises(ValueError, match="diffusion"):
        build_sampler("sde", interpolant="linear", diffusion="cosine")
    with pytest.raises(TypeError, match="GaussianDiffusion"):
        build_sampler("ddpm", steps=10)
    with pytest.raises(ValueError, match="steps"):
        build_sampler("ddim", steps=5000, ddpm=build_ddpm(1000, learn_sigma=False))
    with pytest.raises(ValueError, match="prediction"):
        build_sampler("ode", interpolant="linear", prediction="epsilon")


def test_discrete_model_probability_flow_ode():
    """A discrete eps-model mapped to VP paper time gives, through the ODE sampler, the data distribution;
    learned-variance channels are dropped."""
    ddpm = build_ddpm(1000, learn_sigma=True)
    eps = _ddpm_oracle(ddpm)
    model = as_paper_time(lambda x, i, y=None: torch.cat([eps(x, i, y), torch.zeros_like(x)], 1), ddpm)
    z = torch.randn(16, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = build_sampler("ode", interpolant="vp", prediction="noise", steps=50)(model, z)
    a = ((out.x - out.x.mean()) * (z - z.mean())).sum() / ((z - z.mean()) ** 2).sum()
    b = (out.x - a * z).mean()
    assert a.item() == pytest.approx(0.5, rel=0.03) and b.item() == pytest.approx(0.8, rel=0.02)


@pytest.mark.parametrize("spec,nfe,label", [("10,20", 30, "ddpm-r10_20-nfe30"), ("ddim25", 25, "ddpm-ddim25-nfe25"),
                                            ("40", 40, "ddpm-nfe40"), (40, 40, "ddpm-nfe40")])
@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
def test_discrete_sampler_takes_dit_respacing_specs(spec, nfe, label, kind):
    """Any of DiT's specs ("250", "10,20", "ddimN") respaces like build_ddpm(respacing=spec); NFE counted."""
    from ablate.sampling import DiscreteSampler

    ddpm = build_ddpm(1000, learn_sigma=False)
    s = DiscreteSampler(ddpm, kind, spec, eta=0.3)
    respaced = build_ddpm(1000, str(spec), learn_sigma=False)
    assert s.expected_nfe == nfe and s.tag.startswith(label.replace("ddpm", kind))
    torch.testing.assert_close(s.diffusion.timestep_map, respaced.timestep_map, rtol=0, atol=0)
    model = _ddpm_oracle(ddpm)
    z = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noise = torch.randn(nfe, 4, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = s(model, z, noise=noise)
    ref = (respaced.p_sample_loop(model, z, noise=list(noise)) if kind == "ddpm"
           else respaced.ddim_sample_loop(model, z, noise=list(noise), eta=0.3))
    assert out.nfe == nfe
    torch.testing.assert_close(out.x, ref, rtol=1e-12, atol=1e-12)


def test_discrete_sampler_rejects_bad_specs():
    from ablate.sampling import DiscreteSampler

    ddpm = build_ddpm(100, learn_sigma=False)
    for bad in ("fast", "ddim60", "200", "10,60", 0, 101, 2.5, True):
        with pytest.raises(ValueError, match="steps"):
            DiscreteSampler(ddpm, "ddpm", bad)
