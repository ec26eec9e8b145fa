"""Recorded numbers for a fixed image set, so that a change of the Inception port (torch-fidelity, torch, the
resize, the hook) cannot drift the ADM protocol unnoticed.

* ``random_init_0`` (always runs, ~2 s): features of the network with seeded random weights. Guards the
  architecture, the resize, the spatial hook and its layout, without the real weights.
* ``official`` (``@pytest.mark.slow``, needs ``$ABLATE_INCEPTION_WEIGHTS``): the five ADM metrics and features
  with the real weights; skips with the reason when the weights are absent.

Re-record (on a trusted setup, after a deliberate change): ``ABLATE_RECORD_ADM_GOLDEN=1 python -m pytest -m ''
tests/metrics/test_adm_golden.py`` writes ``tests/metrics/adm_golden.json`` instead of comparing.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from ablate.data.embedded import build_dataset
from ablate.metrics.adm import adm_features, build_adm_inception
from ablate.metrics.adm_io import samples_to_uint8
from ablate.metrics.adm_scores import fid_from_statistics, inception_score, precision_recall
from ablate.metrics.fid import feature_statistics

GOLDEN = Path(__file__).with_name("adm_golden.json")
RECORD = os.environ.get("ABLATE_RECORD_ADM_GOLDEN") == "1"


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/metrics/conftest.py


def golden_images(start: int, n: int) -> np.ndarray:
    """Test-split digits ``start .. start + n``, 8x8 upsampled (nearest) to 64x64, coloured (R = digit,
    G = mirrored digit, B = negative), converted with DiT's rule: uint8 NHWC, deterministic."""
    ds = build_dataset("digits", "test")
    x = torch.stack([ds[i][0] for i in range(start, start + n)])  # [n, 1, 8, 8] in [-1, 1]
    x = x.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)
    return samples_to_uint8(torch.cat([x, x.flip(-1), -x], dim=1)).numpy()


def _summary(f: dict) -> dict:
    """Per-image sums and a strided subsample of each feature (a few hundred numbers)."""
    stride = {"pool": 256, "spatial": 253, "logits": 126}
    return {k: {"sum": f[k].astype(np.float64).sum(1).tolist(), "sub": f[k][:, :: stride[k]].tolist()} for k in stride}


def _compare_summary(got: dict, want: dict) -> None:
    for k, w in want.items():
        for part in ("sum", "sub"):
            a, b = np.asarray(got[k][part]), np.asarray(w[part])
            scale = max(np.abs(b).max(), 1e-12)
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * scale, err_msg=f"{k}.{part} drifted")


def _record_or_compare(section: str, got: dict, compare) -> None:
    data = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
    if RECORD:
        data[section] = got
        GOLDEN.write_text(json.dumps(data, indent=1) + "\n")
        return
    if section not in data:
        pytest.fail(f"no recorded numbers for {section!r} in {GOLDEN.name}; record them once on a trusted setup "
                    "with ABLATE_RECORD_ADM_GOLDEN=1")
    compare(got, data[section])


def test_random_weights_features_are_unchanged():
    model = build_adm_inception(random_init=0, device="cpu")
    f = adm_features(golden_images(0, 6), model, batch_size=6)
    got = {"images_sha256": hashlib.sha256(golden_images(0, 6).tobytes()).hexdigest(), "features": _summary(f),
           "inception_score": inception_score(f["logits"])}

    def compare(got, want):
        assert got["images_sha256"] == want["images_sha256"], "the golden image set itself changed"
        _compare_summary(got["features"], want["features"])
        assert got["inception_score"] == pytest.approx(want["inception_score"], rel=1e-5)

    _record_or_compare("random_init_0", got, compare)


@pytest.mark.slow  # 96 Inception forwards and two 2048-d Frechet distances: ~1 min on 2 CPUs
def test_official_weights_scores_are_unchanged():
    from ablate.metrics.inception import inception_weights_path

    try:
        path = inception_weights_path(None)
    except FileNotFoundError:
        pytest.skip("the FID Inception weights are not available offline: set ABLATE_INCEPTION_WEIGHTS to "
                    "weights-inception-2015-12-05-6726825d.pth to run this check")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    model = build_adm_inception(path, device="cuda" if torch.cuda.is_available() else "cpu")
    samples, reference = golden_images(0, 48), golden_images(48, 48)
    fs, fr = adm_features(samples, model, batch_size=16), adm_features(reference, model, batch_size=16)
    p, r = precision_recall(fr["pool"], fs["pool"])
    got = {"weights_sha256": sha, "features": _summary({k: v[:8] for k, v in fs.items()}),
           "fid": fid_from_statistics(fs["pool"], *feature_statistics(fr["pool"])),
           "sfid": fid_from_statistics(fs["spatial"], *feature_statistics(fr["spatial"])),
           "inception_score": inception_score(fs["logits"]), "precision": p, "recall": r}

    def compare(got, want):
        if got["weights_sha256"] != want["weights_sha256"]:
            pytest.skip(f"numbers were recorded with weights sha256 {want['weights_sha256'][:12]}..., these are "
                        f"{got['weights_sha256'][:12]}... (the official file's sha256 starts with 6726825d)")
        _compare_summary(got["features"], want["features"])
        for k in ("fid", "sfid", "inception_score"):
            assert got[k] == pytest.approx(want[k], rel=1e-4), k
        for k in ("precision", "recall"):  # float16 distance ties may flip under 1e-6 feature changes: 2 of 48
            assert got[k] == pytest.approx(want[k], abs=2 / 48 + 1e-12), k

    _record_or_compare("official", got, compare)
