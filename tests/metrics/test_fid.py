"""frechet_distance against scipy's sqrtm and closed forms; compute_metrics argument errors."""

import numpy as np
import pytest
import scipy.linalg
import torch

from ablate.metrics import compute_metrics, feature_statistics, frechet_distance


def _scipy_fid(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


def _spd(rng, d, n):
    a = rng.standard_normal((n, d)) @ rng.standard_normal((d, d))
    return feature_statistics(a)


@pytest.mark.parametrize("d", [1, 16, 64])
def test_matches_scipy_sqrtm(d):
    rng = np.random.default_rng(d)
    mu1, s1 = _spd(rng, d, 4 * d + 10)
    mu2, s2 = _spd(rng, d, 4 * d + 10)
    ref = _scipy_fid(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-10, abs=1e-10)


def test_closed_forms():
    rng = np.random.default_rng(0)
    mu, s = _spd(rng, 8, 50)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-9)
    shift = rng.standard_normal(8)
    assert frechet_distance(mu, s, mu + shift, s) == pytest.approx(shift @ shift, rel=1e-9)
    # isotropic Gaussians: d^2 = |dmu|^2 + D (a - b)^2 for covariances a^2 I and b^2 I
    d, a, b = 5, 0.5, 2.0
    assert frechet_distance(np.zeros(d), a**2 * np.eye(d), np.ones(d), b**2 * np.eye(d)) == pytest.approx(
        d + d * (a - b) ** 2, rel=1e-12)


def test_rank_deficient_covariances_are_finite_and_match_scipy():
    rng = np.random.default_rng(1)
    mu1, s1 = feature_statistics(rng.standard_normal((5, 12)))  # rank 4 < 12
    mu2, s2 = feature_statistics(rng.standard_normal((6, 12)))
    val = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(val) and val == pytest.approx(_scipy_fid(mu1, s1, mu2, s2), rel=1e-6)


def test_auto_extractor_resolution():
    from ablate.metrics.fid import resolve_extractor

    x = torch.zeros(2, 1, 28, 28)
    assert resolve_extractor("auto", "fashion/test", (1, 28, 28)) == "ablate-fashion"
    assert resolve_extractor("auto", x, (1, 28, 28)) == "ablate-mnist5k"  # a bare tensor: first match
    assert resolve_extractor("auto", torch.zeros(2, 1, 8, 8), (1, 8, 8)) == "ablate-digits"
    assert resolve_extractor("auto", torch.zeros(2, 3, 32, 32), (3, 32, 32)) == "inception-v3-compat"


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="expected mu"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="non-finite"):
        frechet_distance(np.zeros(2), np.full((2, 2), np.nan), np.zeros(2), np.eye(2))
    x = torch.zeros(4, 1, 8, 8)
    with pytest.raises(ValueError, match="valid choices: fid, kid, isc, prc"):
        compute_metrics(x, "digits", metrics=("fidd",))
    with pytest.raises(ValueError, match="valid choices: 'auto'"):
        compute_metrics(x, "digits", extractor="alexnet")
    with pytest.raises(ValueError, match="differ"):
        compute_metrics(torch.zeros(4, 1, 28, 28), "digits", extractor="ablate-digits")
