"""The ADM protocol's feature network (torch-fidelity's Inception, random weights: the real ones are not
available offline), evaluate_adm's wiring against a fake reference batch, and the CLI."""

import json
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ablate.metrics import feature_statistics
from ablate.metrics.adm import (
    NUM_LOGITS,
    POOL_DIM,
    SPATIAL_DIM,
    SPATIAL_MODULE,
    AdmInception,
    adm_features,
    build_adm_inception,
    evaluate_adm,
    main,
)
from ablate.metrics.adm_io import MissingNpzKey, samples_to_uint8, save_adm_npz
from ablate.metrics.adm_scores import inception_score, precision_recall

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/metrics/conftest.py


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_adm_inception(random_init=0, device="cpu")


def _images(n, hw=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1  # smooth, varied images
    return F.interpolate(low, size=(hw, hw), mode="bilinear", align_corners=False)


def test_tf_mixed_6_is_the_third_17x17_block_and_its_1x1_branch(net):
    inet = net.net
    mixed = [n for n, _ in inet.named_children() if n.startswith("Mixed_")]  # registration = forward order
    tf_names = ["mixed"] + [f"mixed_{i}" for i in range(1, 11)]  # the TF graph's block names, in order
    assert dict(zip(tf_names, mixed, strict=True))["mixed_6"] == "Mixed_6d"
    kinds = [type(m).__name__ for n, m in inet.named_children() if n.startswith("Mixed_")]
    assert kinds == ["InceptionA"] * 3 + ["InceptionB"] + ["InceptionC"] * 4 + ["InceptionD", "InceptionE_1",
                                                                              "InceptionE_2"]
    conv = inet.get_submodule(SPATIAL_MODULE).conv
    assert SPATIAL_MODULE == "Mixed_6d.branch1x1"
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (768, 192, (1, 1))
    assert (POOL_DIM, SPATIAL_DIM, NUM_LOGITS) == (2048, 17 * 17 * 7, 1008)


def test_meta_device_shapes_for_any_input_size():
    """Shapes only, nothing computed: the spatial feature is 17 x 17 x 7 whatever the image size (resized to 299)."""
    from torch_fidelity import feature_extractor_inceptionv3 as fi

    cls = fi.FeatureExtractorInceptionV3
    with torch.device("meta"), mock.patch.object(fi.torch, "load", return_value={}), \
            mock.patch.object(cls, "load_state_dict", return_value=None):
        m = AdmInception(cls("inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path="-"))
    for hw in (32, 256, 512):
        f = m(torch.zeros(2, 3, hw, hw, dtype=torch.uint8, device="meta"))
        assert {k: tuple(v.shape) for k, v in f.items()} == {"pool": (2, 2048), "spatial": (2, 2023),
                                                             "logits": (2, 1008)}


def test_one_forward_gives_pool_spatial_and_logits(net):
    calls = []
    h = net.net.register_forward_hook(lambda *a: calls.append(1))
    try:
        u8 = samples_to_uint8(_images(3, hw=256)).numpy()
        f = adm_features(u8, net, batch_size=3)
    finally:
        h.remove()
    assert len(calls) == 1
    assert {k: (v.shape, v.dtype) for k, v in f.items()} == {
        "pool": ((3, 2048), np.float32), "spatial": ((3, 2023), np.float32), "logits": ((3, 1008), np.float32)}


def test_spatial_feature_is_post_relu_branch1x1_flattened_in_tf_nhwc_order(net):
    seen = {}
    h = net.net.Mixed_6d.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0].clone()))
    try:
        with torch.inference_mode():
            f = net(samples_to_uint8(_images(2)).permute(0, 3, 1, 2).contiguous())
    finally:
        h.remove()
    b = net.net.Mixed_6d.branch1x1
    with torch.inference_mode():
        pre = b.bn(b.conv(seen["x"]))  # [2, 192, 17, 17] before the ReLU
    post = F.relu(pre)
    assert pre.shape == (2, 192, 17, 17) and (pre[:, :7] < 0).any()  # the activation matters here
    s = f["spatial"]
    assert (s >= 0).all()
    rng = np.random.default_rng(0)
    for n, hh, ww, c in zip(rng.integers(0, 2, 50), rng.integers(0, 17, 50), rng.integers(0, 17, 50),
                            rng.integers(0, 7, 50), strict=True):  # TF NHWC reshape: index (h * 17 + w) * 7 + c
        assert s[n, (hh * 17 + ww) * 7 + c] == post[n, c, hh, ww]
    assert torch.equal(s, post[:, :7].permute(0, 2, 3, 1).reshape(2, -1))


def test_logits_have_no_bias(net):
    x = samples_to_uint8(_images(2)).permute(0, 3, 1, 2).contiguous()
    fc = net.net.fc
    with torch.inference_mode():
        before = net(x)
        old = fc.bias.clone()
        fc.bias.fill_(3.0)
        after = net(x)
        fc.bias.copy_(old)
    assert torch.equal(before["logits"], after["logits"])
    torch.testing.assert_close(before["logits"], before["pool"] @ fc.weight.T, rtol=1e-5, atol=1e-6)


def test_tensor_input_uses_the_dit_conversion(net):
    x = _images(3)
    a = adm_features(x, net, batch_size=2)
    b = adm_features(samples_to_uint8(x).numpy(), net, batch_size=3)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)  # batching changes the conv blocking only


def _fake_reference(path, net, images):
    f = adm_features(images, net, batch_size=len(images))
    np.savez(path, mu=f["pool"].mean(0, dtype=np.float64), sigma=np.cov(f["pool"], rowvar=False),
             mu_s=f["spatial"].mean(0, dtype=np.float64), sigma_s=np.cov(f["spatial"], rowvar=False),
             arr_0=images)
    return f


def test_evaluate_adm_against_a_fake_reference(tmp_path, net, monkeypatch):
    """Wiring: FID/sFID are the Frechet distance between the samples' statistics and the stored mu/sigma and
    mu_s/sigma_s (the 2048-d distance itself is recorded, not recomputed: frechet_distance is tested against
    scipy in test_fid.py and test_adm_scores.py, and costs seconds per call at 2048-d on 2 CPUs)."""
    import ablate.metrics.adm_scores as scores

    calls = []

    def spy(mu1, s1, mu2, s2):
        calls.append((mu1, s1, mu2, s2))
        return float(len(calls))

    monkeypatch.setattr(scores, "frechet_distance", spy)
    samples = save_adm_npz(tmp_path / "samples.npz", _images(5, seed=1), torch.arange(5))
    ref_images = samples_to_uint8(_images(5, seed=2)).numpy()
    fr = _fake_reference(tmp_path / "ref.npz", net, ref_images)
    res = evaluate_adm(samples, tmp_path / "ref.npz", model=net, batch_size=5, cache_dir=tmp_path / "cache")
    fs = adm_features(samples, net, batch_size=5)  # same batches as inside: bit-identical features
    ref = np.load(tmp_path / "ref.npz")
    assert (res["fid"], res["sfid"]) == (1.0, 2.0) and len(calls) == 2
    for (mu1, s1, mu2, s2), feat, mk, sk in zip(calls, (fs["pool"], fs["spatial"]), ("mu", "mu_s"),
                                                ("sigma", "sigma_s"), strict=True):
        m, s = feature_statistics(feat)
        assert np.array_equal(mu1, m) and np.array_equal(s1, s)
        assert np.array_equal(mu2, ref[mk]) and np.array_equal(s2, ref[sk])
    assert res["inception_score"] == inception_score(fs["logits"])
    pr = precision_recall(fr["pool"], fs["pool"])
    assert (res["precision"], res["recall"]) == pr
    assert {k: res[k] for k in ("protocol", "num_fake", "num_real", "extractor")} == {
        "protocol": "adm", "num_fake": 5, "num_real": 5, "extractor": "inception-v3-compat"}
    assert len(list((tmp_path / "cache").glob("adm-ref-pool-*.npy"))) == 1
    # cached reference features; an in-memory uint8 array scores like the file
    again = evaluate_adm(np.load(samples)["arr_0"], tmp_path / "ref.npz", model=net, metrics=("pr", "is"),
                         batch_size=5, cache_dir=tmp_path / "cache")
    assert set(again) - {"protocol", "num_fake", "num_real", "extractor"} == {"precision", "recall",
                                                                              "inception_score"}
    assert (again["precision"], again["recall"]) == pr


def test_missing_reference_key_fails_before_any_image_is_processed(tmp_path, monkeypatch):
    np.savez(tmp_path / "ref.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    save_adm_npz(tmp_path / "s.npz", _images(2))
    monkeypatch.setenv("ABLATE_INCEPTION_WEIGHTS", str(tmp_path / "absent.pth"))  # never reached
    with pytest.raises(MissingNpzKey) as e:
        evaluate_adm(tmp_path / "s.npz", tmp_path / "ref.npz", metrics=("fid", "sfid"))
    assert "ref.npz" in str(e.value) and "'mu_s'" in str(e.value) and "sfid" in str(e.value)
    with pytest.raises(ValueError, match="unknown metric 'kid'"):
        evaluate_adm(tmp_path / "s.npz", tmp_path / "ref.npz", metrics=("kid",))


def _cli_files(tmp_path):
    save_adm_npz(tmp_path / "s.npz", _images(4, seed=3))
    np.savez(tmp_path / "r.npz", mu=np.zeros(2048), sigma=np.eye(2048),
             arr_0=samples_to_uint8(_images(4, seed=4)).numpy())
    return str(tmp_path / "s.npz"), str(tmp_path / "r.npz")


@pytest.mark.parametrize("how", ["env", "none"])
def test_cli_names_the_weights_when_missing(tmp_path, monkeypatch, capsys, how):
    s, r = _cli_files(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no hub checkpoint either
    if how == "env":
        monkeypatch.setenv("ABLATE_INCEPTION_WEIGHTS", str(tmp_path / "absent.pth"))
    else:
        monkeypatch.delenv("ABLATE_INCEPTION_WEIGHTS", raising=False)
    assert main([s, r]) == 2
    err = capsys.readouterr().err
    assert "ABLATE_INCEPTION_WEIGHTS" in err and "weights-inception-2015-12-05-6726825d.pth" in err


def test_cli_detects_swapped_arguments(tmp_path, capsys):
    s, r = _cli_files(tmp_path)
    assert main([r, s]) == 2
    assert "swapped" in capsys.readouterr().err


def test_cli_prints_the_scores(tmp_path, monkeypatch, capsys, net):
    s, r = _cli_files(tmp_path)
    monkeypatch.setattr("ablate.metrics.adm.build_adm_inception", lambda *a, **k: net)
    assert main([s, r, "--metrics", "inception_score,precision,recall", "--no-cache", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    for line in ("Inception Score: ", "Precision: ", "Recall: ", "protocol: adm"):
        assert line in out
    assert main([s, r, "--metrics", "inception_score", "--json", "--batch-size", "4"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["protocol"] == "adm" and res["inception_score"] > 0
