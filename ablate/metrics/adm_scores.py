"""The ADM evaluator's Inception Score, precision/recall and FID-from-statistics, transcribed in torch/numpy.

Source: guided-diffusion ``evaluations/evaluator.py`` (``Evaluator.compute_inception_score``,
``ManifoldEstimator``, ``DistanceBlock``, ``FIDStatistics``), itself after improved-gan's IS and Kynkaanniemi et
al. 2019's precision/recall. The formulas, with ADM's constants:

**Inception Score** (:func:`inception_score`). ``p(y|x) = softmax(pool_3 @ W)`` over the graph's 1008 outputs,
where ``W`` is the weight of ``softmax/logits/MatMul`` *without the bias* (torch-fidelity's ``logits_unbiased``).
The samples are cut in consecutive splits of 5,000 (the last split may be shorter and counts equally); per
split ``exp(mean_x KL(p(y|x) || p(y)))`` with ``p(y)`` the split's mean prediction; the score is the mean over
splits (no standard deviation is reported). ADM evaluates this in float32 with ``log(softmax)``; here it is
float64 with ``log_softmax`` (agrees to ~1e-6 relative; where a probability underflows to 0 ADM would get
``0 * log 0 = NaN``, this gives the limit 0).

**Precision / recall** (:class:`ManifoldEstimator`, :func:`precision_recall`). Distances are *squared*
Euclidean, ``D = max(|u|^2 - 2 u.v + |v|^2, 0)``, computed per block of 10,000 x 10,000 feature vectors in
float16 and used if every entry of the block is finite, else recomputed in float32 (ADM's ``DistanceBlock``).
The float16 path is emulated exactly up to summation order: inputs rounded to float16, squares rounded to
float16, sums and the matrix product accumulated in float32 and rounded to float16, then the two
subtractions/additions each rounded to float16 (TF's half ops on GPU, float32 accumulation). The radius of a
feature vector is its ``k``-th smallest distance to the vectors of its own set *including itself* (index ``k``
of the sorted row, ``k = 3``: ``nhood_sizes=[3]``), over all columns; ``clamp_to_percentile`` is ``None`` in
ADM (radii above that percentile would be set to 0). A sample counts for **precision** if its distance to some
reference vector is ``<=`` that reference vector's radius; a reference vector counts for **recall** if it lies
within some sample's radius. Precision and recall are those fractions. In ADM the reference set is the 10,000
``arr_0`` images of the reference batch and the sample set all samples (50,000), both as pool_3 features.

**FID / sFID from stored statistics** (:func:`fid_from_statistics`): ``mu``/``np.cov`` (ddof 1) of the sample
features against the reference batch's stored ``mu``/``sigma``, with ablate's float64 eigendecomposition
Frechet distance (the same value as ADM's ``scipy.linalg.sqrtm`` formula; see :mod:`ablate.metrics.fid`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .fid import feature_statistics, frechet_distance

__all__ = ["IS_SPLIT_SIZE", "ManifoldEstimator", "adm_squared_distances", "fid_from_statistics", "full_float32",
           "inception_score", "precision_recall"]

IS_SPLIT_SIZE = 5000


def inception_score(logits, split_size: int = IS_SPLIT_SIZE) -> float:
    """ADM's Inception Score of ``[N, 1008]`` unbiased logits (``pool_3 @ W``): mean over consecutive splits of
    ``split_size`` of ``exp(mean KL(p(y|x) || p(y)))``."""
    z = torch.as_tensor(np.asarray(logits.detach().cpu() if torch.is_tensor(logits) else logits), dtype=torch.float64)
    if z.ndim != 2 or len(z) == 0:
        raise ValueError(f"logits must be [N, classes] with N >= 1, got {tuple(z.shape)}")
    scores = []
    for i in range(0, len(z), split_size):
        logp = torch.log_softmax(z[i : i + split_size], dim=1)
        log_py = torch.logsumexp(logp, dim=0) - np.log(len(logp))  # log of the split's mean prediction
        kl = (logp.exp() * (logp - log_py)).sum(1).mean()
        scores.append(torch.exp(kl).item())
    return float(np.mean(scores))


def fid_from_statistics(features, mu, sigma) -> float:
    """Frechet distance between the Gaussian fitted to ``[N, D]`` features and stored ``(mu, sigma)``."""
    m, s = feature_statistics(features)
    return frechet_distance(m, s, mu, sigma)


# ----------------------------------------------------------------------------------------------------------
# Precision / recall (k-NN manifolds)
# ----------------------------------------------------------------------------------------------------------


def _h(x: Tensor) -> Tensor:
    """Round float32 to float16 and back (one IEEE half rounding)."""
    return x.half().float()


def adm_squared_distances(u: Tensor, v: Tensor, precision: str = "float16") -> Tensor:
    """ADM's ``DistanceBlock`` on one block: float32 ``[len(u), len(v)]`` squared distances, float16 if all
    finite else float32 (``precision="float16"``, ADM), or always float32 (``precision="float32"``)."""
    if precision not in ("float16", "float32"):
        raise ValueError(f"precision={precision!r}; valid choices: 'float16' (ADM), 'float32'")
    u, v = u.float(), v.float()
    with full_float32():
        if precision == "float16":
            u16, v16 = _h(u), _h(v)
            nu = _h(_h(u16 * u16).sum(1))[:, None]
            nv = _h(_h(v16 * v16).sum(1))[None, :]
            d = _h(_h(nu - _h(2 * _h(u16 @ v16.T))) + nv).clamp_min(0.0)
            if torch.isfinite(d).all():
                return d
        nu = (u * u).sum(1)[:, None]
        nv = (v * v).sum(1)[None, :]
        return (nu - 2 * (u @ v.T) + nv).clamp_min(0.0)


class full_float32:
    """Disable TF32 for float32 matmuls and convolutions inside the block, restoring the previous settings.

    PyTorch lets cuDNN convolutions use TF32 by default on Ampere and later GPUs (and a pipeline may enable it
    for matmuls too): 10-bit mantissas, ~1e-3 relative error, which the TensorFlow graph the reference numbers
    come from did not have. Feature extraction and distances run in full float32. Uses the ``fp32_precision``
    settings where torch has them (mixing them with the legacy ``allow_tf32`` flags raises in torch >= 2.9)."""

    def __enter__(self):
        mm, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
        self.new_api = hasattr(mm, "fp32_precision") and hasattr(getattr(cudnn, "conv", None), "fp32_precision")
        if self.new_api:
            self.prev = (mm.fp32_precision, cudnn.conv.fp32_precision)
            mm.fp32_precision = cudnn.conv.fp32_precision = "ieee"
        else:
            self.prev = (mm.allow_tf32, cudnn.allow_tf32)
            mm.allow_tf32 = cudnn.allow_tf32 = False
        return self

    def __exit__(self, *exc):
        mm, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
        if self.new_api:
            mm.fp32_precision, cudnn.conv.fp32_precision = self.prev
        else:
            mm.allow_tf32, cudnn.allow_tf32 = self.prev


class ManifoldEstimator:
    """ADM's k-NN manifold estimator (see the module docstring); ``row_batch_size`` x ``col_batch_size`` blocks
    also decide where the float16/float32 choice is made, as in ADM. Works on any torch device."""

    def __init__(self, row_batch_size: int = 10000, col_batch_size: int = 10000, nhood_sizes=(3,),
                 clamp_to_percentile: float | None = None, precision: str = "float16", device=None):
        self.row_batch_size, self.col_batch_size = int(row_batch_size), int(col_batch_size)
        self.nhood_sizes = tuple(int(k) for k in nhood_sizes)
        self.clamp_to_percentile, self.precision, self.device = clamp_to_percentile, precision, device

    def _t(self, x) -> Tensor:
        x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x)
        if x.ndim != 2:
            raise ValueError(f"features must be [N, D], got {tuple(x.shape)}")
        return x.to(self.device or x.device, torch.float32)

    def radii(self, features) -> Tensor:
        """float32 ``[N, len(nhood_sizes)]``: each vector's ``k``-th smallest distance within its own set."""
        f = self._t(features)
        n, kmax = len(f), max(self.nhood_sizes) + 1
        if n < kmax:
            raise ValueError(f"precision/recall need at least k + 1 = {kmax} feature vectors per set, got {n}")
        out = torch.empty(n, len(self.nhood_sizes), dtype=torch.float32, device=f.device)
        for r0 in range(0, n, self.row_batch_size):
            rows = f[r0 : r0 + self.row_batch_size]
            best = None
            for c0 in range(0, n, self.col_batch_size):
                d = adm_squared_distances(rows, f[c0 : c0 + self.col_batch_size], self.precision)
                if best is not None:
                    d = torch.cat([best, d], dim=1)
                best = d.topk(min(kmax, d.shape[1]), dim=1, largest=False).values  # ascending
            out[r0 : r0 + len(rows)] = best[:, list(self.nhood_sizes)]
        if self.clamp_to_percentile is not None:
            top = torch.quantile(out, self.clamp_to_percentile / 100.0, dim=0)
            out[out > top] = 0
        return out

    def evaluate_pr(self, features_1, radii_1: Tensor, features_2, radii_2: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """``(precision [K1], recall [K2])`` with set 1 the reference, set 2 the samples (ADM's convention)."""
        f1, f2 = self._t(features_1), self._t(features_2)
        r1, r2 = radii_1.to(f1.device), radii_2.to(f2.device)
        in_1 = torch.zeros(len(f1), r2.shape[1], dtype=torch.bool, device=f1.device)  # reference within samples
        in_2 = torch.zeros(len(f2), r1.shape[1], dtype=torch.bool, device=f2.device)  # sample within reference
        for b1 in range(0, len(f1), self.row_batch_size):
            e1 = b1 + self.row_batch_size
            for b2 in range(0, len(f2), self.col_batch_size):
                e2 = b2 + self.col_batch_size
                d = adm_squared_distances(f1[b1:e1], f2[b2:e2], self.precision)
                for k in range(r2.shape[1]):
                    in_1[b1:e1, k] |= (d <= r2[b2:e2, k][None, :]).any(1)
                for k in range(r1.shape[1]):
                    in_2[b2:e2, k] |= (d <= r1[b1:e1, k][:, None]).any(0)
        return (in_2.double().mean(0).cpu().numpy(), in_1.double().mean(0).cpu().numpy())


def precision_recall(reference_features, sample_features, *, k: int = 3, **estimator_kw) -> tuple[float, float]:
    """ADM's ``compute_prec_recall``: (precision, recall) of the samples against the reference features."""
    est = ManifoldEstimator(nhood_sizes=(k,), **estimator_kw)
    r_ref, r_sam = est.radii(reference_features), est.radii(sample_features)
    p, r = est.evaluate_pr(reference_features, r_ref, sample_features, r_sam)
    return float(p[0]), float(r[0])
