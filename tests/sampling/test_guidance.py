"""Classifier-free guidance and NFE counting."""

import pytest
import torch

from ablate.sampling import NFECounter, build_sampler, guided


def _model(x, t, y):
    # channel c of the output is (y + 1) * (c + 1) * x: conditional and null outputs differ on every channel
    scale = (y.to(x.dtype) + 1).reshape(-1, 1, 1) * torch.arange(1, x.shape[1] + 1,
    dtype=x.dtype).reshape(1, -1, 1)
    return scale * x


def test_guided_formula_all_channels_and_legacy():
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    y = torch.tensor([0, 2, 5])
    t = torch.rand(3, dtype=torch.float64)
    null = 9
    cond, uncond = _model(x, t, y), _model(x, t, torch.full_like(y, null))
    out = guided(_model, 1.5, null)(x, t, y)
    assert torch.allclose(out, uncond + 1.5 * (cond - uncond))
    legacy = guided(_model, 4.0, null, legacy_channels=3)(x, t, y)
    assert torch.allclose(legacy[:, :3], uncond[:, :3] + 4.0 * (cond[:, :3] - uncond[:, :3]))
    assert torch.allclose(legacy[:, 3:], cond[:, 3:])  # DiT/SiT's rule leaves channel 3+ conditional


def test_guided_call_is_one_nfe_on_a_doubled_batch():
    seen = []

    def model(x, t, y):
        seen.append(x.shape[0])
        return x

    c = NFECounter(guided(model, 2.0, 0))
    c(torch.zeros(4, 2), torch.zeros(4), torch.ones(4, dtype=torch.long))
    assert c.nfe == 1 and seen == [8]


def test_bad_guidance_raises():
    with pytest.raises(ValueError, match="guidance scale"):
        guided(_model, -0.5, 0)
    with pytest.raises(ValueError, match="null"):
        guided(_model, 1.5, None)
    with pytest.raises(ValueError, match="guidance_scale"):
        build_sampler("ode", interpolant="linear", guidance_scale=-1.0, null_class=0)
    with pytest.raises(ValueError, match="null_class"):
        build_sampler("ode", interpolant="linear", guidance_scale=2.0)
    with pytest.raises(ValueError, match="labels"):
        guided(_model, 2.0, 0)(torch.zeros(1, 1, 1), torch.zeros(1), None)
