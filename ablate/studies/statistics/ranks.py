"""Orderings: Kendall's tau-b between the paper's values and ours, with a seed bootstrap, and a rank table."""

from __future__ import annotations

import math
import warnings
from typing import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from .intervals import Interval
from .measurements import EVAL, TRAIN, read_row, sort_key, two_sided_q

__all__ = ["kendall_tau_b", "kendall_tau_interval", "rank_comparison"]


def _tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Tau-b of ``x`` (n,) against each line of ``y`` (B, n); NaN entries of y drop their pairs.

    tau_b = (C - D) / sqrt((n0 - n1)(n0 - n2)) over the pairs defined in both, where C / D count concordant /
    discordant pairs and n1 / n2 the pairs tied in x / in y. NaN when a denominator is 0."""
    x = np.asarray(x, dtype=float)
    y = np.atleast_2d(np.asarray(y, dtype=float))
    iu = np.triu_indices(len(x), k=1)
    sx = np.sign(x[:, None] - x[None, :])[iu]  # (P,)
    sy = np.sign(y[:, :, None] - y[:, None, :])[:, iu[0], iu[1]]  # (B, P), NaN where a value is missing
    ok = np.isfinite(sy) & np.isfinite(sx)[None, :]
    sy0 = np.where(ok, sy, 0.0)
    s = (sx[None, :] * sy0).sum(axis=1)
    untied_x = (ok & (sx != 0)[None, :]).sum(axis=1)
    untied_y = (ok & (sy0 != 0)).sum(axis=1)
    den = np.sqrt(untied_x.astype(float) * untied_y)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, s / np.where(den > 0, den, 1.0), np.nan)


def kendall_tau_b(x, y) -> float:
    """Kendall's tau-b of two equal-length sequences (ties handled as in ``scipy.stats.kendalltau``)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"kendall_tau_b needs two 1-d sequences of equal length, got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("kendall_tau_b: non-finite value")
    return float(_tau_b(x, y[None, :])[0])


def _cube(rows: list) -> tuple[np.ndarray, np.ndarray]:
    """Values as an array (rows, train seeds, eval positions), NaN where missing, and the eval count per train
    seed. Train seeds are the union over rows; eval labels under a train seed are the union over rows, so a
    shared eval label sits at the same position in every row (the pairing survives the resampling)."""
    train = sorted({s for r in rows for s in r.seeds}, key=sort_key)
    evals = [sorted({e for r in rows for e in r.seeds.get(s, {})}, key=sort_key) for s in train]
    cube = np.full((len(rows), len(train), max(len(e) for e in evals)), np.nan)
    for i, r in enumerate(rows):
        for k, s in enumerate(train):
            for j, e in enumerate(evals[k]):
                cube[i, k, j] = r.seeds.get(s, {}).get(e, np.nan)
    return cube, np.array([len(e) for e in evals])


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices -> NaN, wanted
        return np.nanmean(a, axis=axis)


def kendall_tau_interval(paper: Mapping[str, float], ours: Mapping[str, pd.DataFrame], n_boot: int = 2000,
                         seed: int = 0, level: float = 0.95, value: str = "value", train: str = "train_seed",
                         eval: str | None = "eval_seed", resample_eval: bool = True, chunk: int = 500) -> Interval:
    """Kendall's tau-b between the paper's values and our row means, with a bootstrap interval.

    Rows: those in both mappings with a finite paper value. Estimate: tau-b on the full data (row mean = mean
    of training-seed means, as :func:`cell_interval`). Interval: percentile bootstrap. Each replicate draws
    the training seeds with replacement from the union of all rows' training seeds, the same draw for every
    row (so the seed pairing between rows is kept), and, if ``resample_eval``, the eval seeds with replacement
    within each drawn training seed (again the same eval labels for every row). A row lacking a drawn seed
    averages the drawn seeds it has; a row with none of them drops out of that replicate's tau.

    Caveats: with 3-5 training seeds there are only 10-126 distinct training-seed draws, and percentile
    intervals from so few units are rough (usually too narrow for the seed level; resampling eval seeds too
    adds a little width back). Treat the interval as a guide to how fragile the ordering is, not an exact 95%.
    """
    names = [r for r in paper if r in ours and paper[r] is not None and math.isfinite(paper[r])]
    if len(names) < 2:
        return Interval(math.nan, level=level, method=f"{len(names)} row(s) with both numbers: no tau")
    rows = [read_row(ours[r], value, train, eval, r) for r in names]
    x = np.array([float(paper[r]) for r in names])
    cube, n_ev = _cube(rows)
    means = _nanmean(_nanmean(cube, axis=2), axis=1)  # mean of training-seed means, as cell_interval
    est = float(_tau_b(x, means[None, :])[0])
    k_train, j_max = cube.shape[1], cube.shape[2]
    size = dict(n_train=k_train, n_eval=min(r.n_eval for r in rows), n_values=min(r.n_values for r in rows))
    eval_boot = resample_eval and bool((n_ev >= 2).any())
    if k_train < 2 and not eval_boot:
        return Interval(est, level=level, method="tau-b; nothing to resample: no interval", **size)
    rng = np.random.default_rng(seed)
    taus = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        t_idx = rng.integers(0, k_train, size=(b, k_train))  # (b, K) drawn training seeds
        if eval_boot:
            m = n_ev[t_idx][..., None]  # (b, K, 1) eval count of each drawn seed
            e_idx = np.minimum((rng.random((b, k_train, j_max)) * m).astype(int), j_max - 1)
            vals = cube[:, t_idx[..., None], e_idx]  # (R, b, K, J)
            vals = np.where(np.arange(j_max) < m, vals, np.nan)  # draw m_k eval seeds, not j_max
        else:
            vals = cube[:, t_idx]
        boot_means = _nanmean(_nanmean(vals, axis=3), axis=2).T  # (b, R)
        taus.append(_tau_b(x, boot_means))
    taus = np.concatenate(taus)
    q = two_sided_q(level)
    lo, hi = (float(v) for v in np.nanquantile(taus, [1 - q, q]))
    sources = (TRAIN, EVAL) if k_train >= 2 else (EVAL,)
    what = "training seeds" + (" and eval seeds within them" if eval_boot else "")
    return Interval(est, lo, hi, level=level, sources=sources, **size,
                    method=f"tau-b; percentile bootstrap ({n_boot} draws) over {what}, {len(names)} rows")


def rank_comparison(paper: Mapping[str, float], ours_means: Mapping[str, float | Interval],
                    lower_is_better: bool = True) -> pd.DataFrame:
    """Paper rank and our rank per row (1 = best; ties get the average rank), for comparing orderings when the
    values themselves are not comparable (CPU-scale FID against the paper's ImageNet FID-50K).

    Ranks are computed over the rows that have both numbers; other rows are listed last with NaN ranks.
    ``ours_means`` values may be floats or :class:`Interval` s (their estimate). Columns: row, paper, ours,
    paper_rank, our_rank, rank_diff (our_rank - paper_rank), sorted by paper rank.
    """
    def num(v) -> float:
        v = v.estimate if isinstance(v, Interval) else v
        return math.nan if v is None else float(v)

    names = list(dict.fromkeys([*paper, *ours_means]))
    p = np.array([num(paper.get(r)) for r in names])
    o = np.array([num(ours_means.get(r)) for r in names])
    both = np.isfinite(p) & np.isfinite(o)
    sign = 1.0 if lower_is_better else -1.0
    pr, orank = np.full(len(names), np.nan), np.full(len(names), np.nan)
    if both.any():
        pr[both] = stats.rankdata(sign * p[both], method="average")
        orank[both] = stats.rankdata(sign * o[both], method="average")
    out = pd.DataFrame({"row": names, "paper": p, "ours": o, "paper_rank": pr, "our_rank": orank,
                        "rank_diff": orank - pr})
    return out.sort_values(["paper_rank", "our_rank"], na_position="last", kind="stable").reset_index(drop=True)
