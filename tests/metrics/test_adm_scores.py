"""ADM's Inception Score, k-NN precision/recall and FID-from-statistics against independent plain-numpy
transcriptions of guided-diffusion's evaluations/evaluator.py formulas (written here from the formulas)."""

import numpy as np
import pytest
import scipy.linalg
import torch

from ablate.metrics.adm_scores import (
    IS_SPLIT_SIZE,
    ManifoldEstimator,
    adm_squared_distances,
    fid_from_statistics,
    inception_score,
    precision_recall,
)

# ----------------------------------------------------------------------------------------------------------
# Independent transcriptions (numpy)
# ----------------------------------------------------------------------------------------------------------


def np_inception_score(logits, split=5000):
    """softmax; per split of `split` rows exp(mean_x sum_y p log(p / p_mean)); mean over splits (float64)."""
    z = np.asarray(logits, np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    out = []
    for i in range(0, len(p), split):
        part = p[i : i + split]
        marg = part.mean(axis=0, keepdims=True)
        out.append(np.exp((part * (np.log(part) - np.log(marg))).sum(axis=1).mean()))
    return float(np.mean(out))


def np_block_distances(u, v, fp16=True):
    """|u|^2 - 2 u.v + |v|^2 clipped at 0: float16 ops (inputs, squares and every elementwise result rounded to
    half; sums / products accumulated in float32) if all finite, else float32 (float64 when fp16 is None)."""
    if fp16:
        with np.errstate(over="ignore", invalid="ignore"):
            u16, v16 = u.astype(np.float16), v.astype(np.float16)
            nu = np.square(u16).astype(np.float32).sum(axis=1).astype(np.float16)[:, None]
            nv = np.square(v16).astype(np.float32).sum(axis=1).astype(np.float16)[None, :]
            mm = (u16.astype(np.float32) @ v16.astype(np.float32).T).astype(np.float16)
            d = np.maximum(nu - np.float16(2) * mm + nv, np.float16(0))
        if np.isfinite(d).all():
            return d.astype(np.float32)
    dt = np.float64 if fp16 is None else np.float32
    u, v = u.astype(dt), v.astype(dt)
    d = (u * u).sum(1)[:, None] - 2 * (u @ v.T) + (v * v).sum(1)[None, :]
    return np.maximum(d, 0)


def np_radii(f, k=3, block=10000, fp16=True, percentile=None):
    """k-th smallest distance of each row to all rows of its set (self included), rows/cols in blocks."""
    n = len(f)
    d = np.zeros((n, n), np.float64)
    for r in range(0, n, block):
        for c in range(0, n, block):
            d[r : r + block, c : c + block] = np_block_distances(f[r : r + block], f[c : c + block], fp16)
    radii = np.sort(d, axis=1)[:, [k]]
    if percentile is not None:
        radii[radii > np.percentile(radii, percentile, axis=0)] = 0
    return radii


def np_precision_recall(ref, sam, k=3, block=10000, fp16=True, percentile=None):
    r1, r2 = np_radii(ref, k, block, fp16, percentile), np_radii(sam, k, block, fp16, percentile)
    ref_in = np.zeros(len(ref), bool)   # reference vector inside some sample's ball -> recall
    sam_in = np.zeros(len(sam), bool)   # sample inside some reference vector's ball -> precision
    for b1 in range(0, len(ref), block):
        for b2 in range(0, len(sam), block):
            d = np_block_distances(ref[b1 : b1 + block], sam[b2 : b2 + block], fp16)
            ref_in[b1 : b1 + block] |= (d <= r2[b2 : b2 + block, 0][None, :]).any(axis=1)
            sam_in[b2 : b2 + block] |= (d <= r1[b1 : b1 + block, 0][:, None]).any(axis=0)
    return sam_in.mean(), ref_in.mean()


def _quantized(rng, n, d=32, scale=1.0):
    """Multiples of 1/4 in [0, 8): every product and float32 sum is exact, so no summation order matters."""
    return rng.integers(0, 32, (n, d)).astype(np.float32) / 4 * scale


# ----------------------------------------------------------------------------------------------------------
# Inception Score
# ----------------------------------------------------------------------------------------------------------


def test_inception_score_matches_transcription_with_a_partial_last_split():
    logits = np.random.default_rng(0).standard_normal((2300, 40)) * 3
    assert inception_score(logits, split_size=1000) == pytest.approx(np_inception_score(logits, 1000), rel=1e-12)
    assert IS_SPLIT_SIZE == 5000
    big = np.random.default_rng(1).standard_normal((10_700, 8)).astype(np.float32) * 2
    assert inception_score(big) == pytest.approx(np_inception_score(big, 5000), rel=1e-12)


def test_inception_score_closed_forms():
    assert inception_score(np.zeros((100, 1008))) == pytest.approx(1.0, abs=1e-12)  # uninformative
    confident = 60.0 * np.eye(10)[np.arange(200) % 10]  # sharp and balanced over 10 classes
    assert inception_score(confident) == pytest.approx(10.0, rel=1e-6)
    assert inception_score(torch.from_numpy(confident).float()) == pytest.approx(10.0, rel=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Distances and precision/recall
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fp16", [True, False])
def test_block_distances_match_transcription(fp16):
    rng = np.random.default_rng(0)
    u, v = _quantized(rng, 20), _quantized(rng, 30)
    ours = adm_squared_distances(torch.from_numpy(u), torch.from_numpy(v), "float16" if fp16 else "float32")
    assert ours.dtype == torch.float32
    assert np.array_equal(ours.numpy(), np_block_distances(u, v, fp16))
    if fp16:  # the float16 rounding is visible: not the float64 distances
        assert not np.array_equal(ours.numpy(), np_block_distances(u, v, None))


def test_float16_overflow_falls_back_to_float32():
    rng = np.random.default_rng(0)
    u, v = _quantized(rng, 8, scale=64.0), _quantized(rng, 9, scale=64.0)  # |u|^2 ~ 1e6 > 65504
    d16 = adm_squared_distances(torch.from_numpy(u), torch.from_numpy(v), "float16")
    d32 = adm_squared_distances(torch.from_numpy(u), torch.from_numpy(v), "float32")
    assert torch.isfinite(d16).all() and torch.equal(d16, d32)
    assert np.array_equal(d16.numpy(), np_block_distances(u, v, True))


@pytest.mark.parametrize("fp16", [True, False])
@pytest.mark.parametrize("block", [10000, 16])
def test_precision_recall_match_transcription(fp16, block):
    rng = np.random.default_rng(3)
    ref, sam = _quantized(rng, 70), _quantized(rng, 90) * 0.9 + 0.25
    ours = precision_recall(ref, sam, precision="float16" if fp16 else "float32", row_batch_size=block,
                            col_batch_size=block)
    assert ours == np_precision_recall(ref, sam, block=block, fp16=fp16)
    assert 0 < ours[0] < 1 and 0 < ours[1] < 1  # a non-trivial case


def test_float16_choice_is_made_per_block():
    """Only the blocks touching the few huge vectors overflow in float16; the others stay float16 (ADM)."""
    rng = np.random.default_rng(4)
    ref, sam = _quantized(rng, 40), _quantized(rng, 50)
    ref[:3] *= 64.0
    ours = precision_recall(ref, sam, row_batch_size=16, col_batch_size=16)
    assert ours == np_precision_recall(ref, sam, block=16, fp16=True)
    r = ManifoldEstimator(row_batch_size=16, col_batch_size=16).radii(ref)
    assert np.array_equal(r.numpy(), np_radii(ref, block=16).astype(np.float32))


def test_float32_matches_float64_transcription_on_continuous_features():
    rng = np.random.default_rng(5)
    ref, sam = rng.standard_normal((120, 24)), rng.standard_normal((150, 24)) * 1.1 + 0.1
    ours = precision_recall(ref.astype(np.float32), sam.astype(np.float32), precision="float32")
    # well-posed: no distance lies within 1e-5 (relative) of a radius it is compared with, 30x the float32
    # error of these distances, so float32 rounding cannot flip a comparison
    d = np_block_distances(ref, sam, None)
    r1, r2 = np_radii(ref, fp16=None), np_radii(sam, fp16=None)
    assert min(np.abs(d / r1 - 1).min(), np.abs(d / r2.T - 1).min()) > 1e-5
    assert ours == np_precision_recall(ref, sam, fp16=None)


def test_radius_is_the_kth_distance_counting_the_point_itself():
    pts = np.arange(10, dtype=np.float32)[:, None]  # points 0..9 on a line: squared distances 0, 1, 1, 4, 4
    r = ManifoldEstimator(precision="float32").radii(pts)[:, 0].numpy()
    assert r.tolist() == [9, 4, 4, 4, 4, 4, 4, 4, 4, 9]
    assert ManifoldEstimator(nhood_sizes=(1,), precision="float32").radii(pts)[:, 0].tolist() == [1] * 10
    with pytest.raises(ValueError, match="at least k \\+ 1 = 4"):
        ManifoldEstimator().radii(pts[:3])


def test_identical_sets_and_inclusive_boundary():
    rng = np.random.default_rng(6)
    x = _quantized(rng, 30)
    assert precision_recall(x, x) == (1.0, 1.0)
    # a sample exactly at the radius of a reference point counts (<=): points 0..4, radius of 0 is 9 (k = 3)
    ref = np.arange(5, dtype=np.float32)[:, None]
    assert precision_recall(ref, np.array([[-3.0], [-3.0], [-3.0], [-3.0]], np.float32))[0] == 1.0
    assert precision_recall(ref, np.array([[-3.5], [-3.5], [-3.5], [-3.5]], np.float32))[0] == 0.0


def test_clamp_to_percentile_matches_transcription():
    rng = np.random.default_rng(7)
    f = _quantized(rng, 50)
    r = ManifoldEstimator(clamp_to_percentile=80).radii(f)
    assert np.array_equal(r.numpy(), np_radii(f, percentile=80).astype(np.float32))
    assert (r == 0).sum() > 0


# ----------------------------------------------------------------------------------------------------------
# FID from stored statistics
# ----------------------------------------------------------------------------------------------------------


def test_fid_from_statistics_is_the_frechet_distance_of_the_features():
    rng = np.random.default_rng(8)
    feats = rng.standard_normal((200, 16)) @ rng.standard_normal((16, 16))
    other = rng.standard_normal((300, 16)) * 0.8 + 0.3
    mu, sigma = other.mean(0), np.cov(other, rowvar=False)
    m1, s1 = feats.mean(0), np.cov(feats, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ sigma).real  # ADM's FIDStatistics.frechet_distance
    adm = (m1 - mu) @ (m1 - mu) + np.trace(s1) + np.trace(sigma) - 2 * np.trace(covmean)
    assert fid_from_statistics(feats, mu, sigma) == pytest.approx(adm, rel=1e-9)
    assert fid_from_statistics(feats.astype(np.float32), m1, s1) == pytest.approx(0.0, abs=1e-4)


def test_full_float32_disables_tf32_and_restores_the_settings():
    from ablate.metrics.adm_scores import full_float32

    if not hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        pytest.skip("torch < 2.9: only the legacy allow_tf32 flags exist")
    original = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")  # a pipeline's setting (legacy API)
    try:
        before = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
        with full_float32():
            assert torch.backends.cuda.matmul.fp32_precision == "ieee"
            assert torch.backends.cudnn.conv.fp32_precision == "ieee"
        assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) == before
        assert torch.get_float32_matmul_precision() == "high"  # the legacy view still reads
    finally:
        torch.set_float32_matmul_precision(original)
