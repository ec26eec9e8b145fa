"""The digits extractor: registered with torch-fidelity, offline; FID sanity (real vs real << noise,
monotone in added noise); agreement with an independent Frechet distance; cached stats; Inception errors."""

import pytest
import torch
import torch_fidelity
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from ablate.data import build_dataset, to_uint8
from ablate.metrics import compute_metrics, feature_statistics, frechet_distance, inception_weights_path
from ablate.metrics.extractor import extractor_checksum, load_extractor


@pytest.fixture(scope="module")
def digits():
    return build_dataset("digits", "train"), build_dataset("digits", "test")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("fidcache")


@pytest.mark.parametrize(("dataset", "min_acc"), [("digits", 0.95), ("mnist5k", 0.95), ("fashion", 0.80)])
def test_extractor_is_registered_and_accurate(dataset, min_acc):
    assert f"ablate-{dataset}" in FEATURE_EXTRACTORS_REGISTRY
    net, meta = load_extractor(f"ablate-{dataset}")
    try:
        test = build_dataset(dataset, "test")
    except FileNotFoundError:  # Fashion-MNIST is unpacked on demand (python -m ablate.data.fashion)
        pytest.skip(f"{dataset} data not unpacked here")
    with torch.no_grad():
        logits = torch.cat([net(test.images[i: i + 1000])[1] for i in range(0, len(test), 1000)])
    acc = float((logits.argmax(1) == test.labels).float().mean())
    assert acc == pytest.approx(meta["test_accuracy"], abs=1e-6)  # committed weights = the reported ones
    assert acc > min_acc
    assert sum(p.numel() for p in net.parameters()) * 4 < 1_000_000  # < 1 MB of float32


def test_torch_fidelity_direct_call_matches_independent_frechet(digits, tmp_path):
    train, test = digits

    class Imgs(torch.utils.data.Dataset):
        def __init__(self, x):
            self.x = to_uint8(x)

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return self.x[i]

    out = torch_fidelity.calculate_metrics(input1=Imgs(test.images), input2=Imgs(train.images), cuda=False,
                                           fid=True, feature_extractor="ablate-digits", verbose=False,
                                           save_cpu_ram=True, cache=False)
    net, meta = load_extractor("ablate-digits")
    with torch.no_grad():  # features of the uint8-quantised images, scaled as the extractor does
        f1 = net(to_uint8(test.images).float() / 127.5 - 1)[0].double() * meta["feature_scale"]
        f2 = net(to_uint8(train.images).float() / 127.5 - 1)[0].double() * meta["feature_scale"]
    ref = frechet_distance(*feature_statistics(f1), *feature_statistics(f2))
    assert out["frechet_inception_distance"] == pytest.approx(ref, rel=1e-4)


@pytest.mark.parametrize("dataset", ["digits", "mnist5k"])
def test_fid_real_vs_real_far_below_noise_and_monotone_in_noise(dataset, cache):
    test = build_dataset(dataset, "test", limit=400)
    g = torch.Generator().manual_seed(0)
    real = compute_metrics(test.images, dataset, cache_dir=cache)["fid"]
    untrained = torch.randn(test.images.shape, generator=g).clamp(-1, 1)  # what an untrained sampler emits
    noise = compute_metrics(untrained, dataset, cache_dir=cache)["fid"]
    assert real < 0.02 * noise
    eps = torch.randn(test.images.shape, generator=g)
    fids = [compute_metrics((test.images + s * eps).clamp(-1, 1), dataset, cache_dir=cache)["fid"]
            for s in (0.1, 0.2, 0.4, 0.8)]
    assert all(a < b for a, b in zip([real] + fids[:-1], fids, strict=True)), fids
    assert fids[-1] < noise


def test_reference_statistics_are_cached_per_dataset_split_extractor(digits, cache):
    test = digits[1]
    r = compute_metrics(test.images[:100], "digits/train", metrics=("fid", "kid", "isc", "prc"),
                        cache_dir=cache)
    files = [p.name for p in cache.iterdir()]
    key = f"ablate-digits-train-n1438-ablate-digits-{extractor_checksum('ablate-digits')}"
    assert any(f.startswith(key) for f in files), files
    assert set(r) >= {"fid", "kid_mean", "kid_std", "is_mean", "is_std", "precision", "recall"}
    assert 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1
    assert 1.0 <= r["is_mean"] <= 10.0  # exp(MI) of a 10-class classifier lies in [1, 10]
    assert r["num_fake"] == 100 and r["extractor"] == "ablate-digits"


def test_inception_without_local_weights_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("ABLATE_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="weights-inception-2015-12-05-6726825d.pth"):
        inception_weights_path()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        inception_weights_path(tmp_path / "nope.pth")
    x = torch.zeros(4, 3, 16, 16)
    with pytest.raises(FileNotFoundError, match="ABLATE_INCEPTION_WEIGHTS"):
        compute_metrics(x, x, extractor="auto")
