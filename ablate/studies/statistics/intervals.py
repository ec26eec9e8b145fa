"""Intervals for one row's mean and for the difference of two rows, and the variance components of a row."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from .measurements import EVAL, TRAIN, RowData, read_row, t_bounds, t_stats, welch_stats

__all__ = ["Interval", "cell_interval", "paired_difference", "VarianceComponents", "variance_components"]

_NAN = math.nan


@dataclass(frozen=True)
class Interval:
    """An estimate with a confidence interval and what it rests on.

    ``lo``/``hi`` are NaN when no interval can be computed (one value; the estimate is still given).
    ``sources`` names the variance sources the interval covers: ``("train seeds", "eval seeds")`` when it is
    built from training-seed means (each includes its eval noise), ``("eval seeds",)`` when only one training
    seed was available, so the interval says nothing about how another training seed would land.
    ``n_train`` / ``n_eval``: training seeds and eval seeds per training seed (the smallest count if the
    design is unbalanced; ``n_values`` has the total). ``se`` and ``df`` (standard error and degrees of
    freedom of a t-interval; NaN for bootstrap intervals) let a caller recompute p-values or other levels.
    For a difference of two rows the counts are per row (the smaller row's when they differ; for a paired
    difference, the matched seeds); for a Kendall tau, per row over the union of training seeds.
    """

    estimate: float
    lo: float = _NAN
    hi: float = _NAN
    n_train: int = 0
    n_eval: int = 0
    level: float = 0.95
    sources: tuple[str, ...] = ()
    method: str = ""
    se: float = _NAN
    df: float = _NAN
    n_values: int = 0

    @property
    def defined(self) -> bool:
        """True when there is an interval (not just an estimate)."""
        return math.isfinite(self.lo) and math.isfinite(self.hi)

    @property
    def width(self) -> float:
        return self.hi - self.lo if self.defined else _NAN

    def covers(self, x: float) -> bool:
        """lo <= x <= hi; False when there is no interval."""
        return self.defined and self.lo <= x <= self.hi

    def p_value(self, null: float = 0.0) -> float:
        """Two-sided t-test p-value of ``estimate == null`` (NaN when the interval is not a t-interval)."""
        if not (math.isfinite(self.se) and math.isfinite(self.df)):
            return _NAN
        if self.se == 0:
            return 0.0 if self.estimate != null else 1.0
        return float(2 * stats.t.sf(abs(self.estimate - null) / self.se, self.df))

    def format(self, digits: int = 1) -> str:
        """Compact text, e.g. ``12.3 [10.1, 14.5] (n=3x2)``; ``12.3 (n=1x1, no interval)`` without one."""
        f = f"{{:.{digits}f}}"
        balanced = self.n_values in (0, self.n_train * self.n_eval)
        n = f"n={self.n_train}x{self.n_eval}"
        if not balanced:
            n = f"n={self.n_train}x≥{self.n_eval}, {self.n_values} values"
        if not self.defined:
            return f"{f.format(self.estimate)} ({n}, no interval)"
        note = ", eval noise only" if TRAIN not in self.sources else ""
        return f"{f.format(self.estimate)} [{f.format(self.lo)}, {f.format(self.hi)}] ({n}{note})"

    def __str__(self) -> str:
        return self.format()


def _t_interval(est: float, se: float, df: float, level: float, **kw) -> Interval:
    lo, hi = t_bounds(est, se, df, level)
    return Interval(est, lo, hi, level=level, se=se, df=df, **kw)


def _row_interval(row: RowData, level: float) -> Interval:
    size = dict(n_train=row.n_train, n_eval=row.n_eval, n_values=row.n_values)
    if row.n_train >= 2:
        return _t_interval(*t_stats(row.seed_means()), level, sources=(TRAIN, EVAL), **size,
                           method="t over training-seed means (eval seeds averaged within each)")
    (vals,) = [np.array(list(e.values())) for e in row.seeds.values()]
    if len(vals) >= 2:
        return _t_interval(*t_stats(vals), level, sources=(EVAL,), **size,
                           method="t over the eval seeds of 1 training seed: training noise not covered")
    return Interval(float(vals[0]), level=level, method="one value: no interval", **size)


def cell_interval(df: pd.DataFrame, value: str = "value", train: str = "train_seed", eval: str | None = "eval_seed",
                  level: float = 0.95, name: str | None = None) -> Interval:
    """The mean of one row and its confidence interval.

    With >= 2 training seeds: average the eval seeds within each training seed, then a t-interval (n_train - 1
    degrees of freedom) over those means. Each training-seed mean carries its own eval noise, so the interval
    covers both sources. Every training seed weighs the same; with unbalanced eval counts the usual variance
    estimate s^2 / n_train is still unbiased for the variance of this mean.
    With 1 training seed and >= 2 eval seeds: a t-interval over the eval values; it covers eval noise only
    (``sources == ("eval seeds",)``): another training seed may land outside it.
    With one value: the estimate, and lo = hi = NaN.

    ``eval`` may be None or absent from the frame: then every line is a separate eval draw. ``name`` is used in
    error messages (a NaN value, a duplicate cell).
    """
    return _row_interval(read_row(df, value, train, eval, name), level)


# ------------------------------------------------------------------------------------- variance components
@dataclass(frozen=True)
class VarianceComponents:
    """Variance of the training-seed effect and of the eval noise (one FID value = row mean + train-seed
    effect + eval noise). ``n_eval`` is the effective number of eval seeds per training seed (n0 below; the
    plain count when balanced). ``df_train`` / ``df_eval``: degrees of freedom of the two mean squares."""

    train_var: float
    eval_var: float
    n_train: int
    n_eval: float
    df_train: int
    df_eval: int

    def seed_mean_var(self, n_eval: float | None = None) -> float:
        """Variance of one training-seed mean over ``n_eval`` eval seeds: train_var + eval_var / n_eval."""
        return self.train_var + self.eval_var / (self.n_eval if n_eval is None else n_eval)

    def to_dict(self) -> dict:
        return asdict(self)


def _anova_sums(row: RowData) -> tuple[float, int, float, int, float]:
    """Within SS and df, between SS and df, and the coefficient c of train_var in E[between SS]."""
    groups = [np.array(list(e.values())) for e in row.seeds.values()]
    n = np.array([len(g) for g in groups], dtype=float)
    big_n = n.sum()
    means = np.array([g.mean() for g in groups])
    grand = float((n * means).sum() / big_n)
    ssw = float(sum(((g - g.mean()) ** 2).sum() for g in groups))
    ssb = float((n * (means - grand) ** 2).sum())
    return ssw, int(big_n - len(groups)), ssb, len(groups) - 1, float(big_n - (n**2).sum() / big_n)


def variance_components(df: pd.DataFrame, value: str = "value", train: str = "train_seed",
                        eval: str | None = "eval_seed", row: str | None = None) -> VarianceComponents:
    """Training-seed and eval-seed variance from a one-way random-effects ANOVA (eval seeds nested in training
    seeds), clipped at 0.

    Estimator (method of moments, Henderson's method I, valid for unbalanced designs): with n_i eval values
    under training seed i, N = sum n_i, k training seeds,

        MS_eval  = sum_i sum_j (y_ij - mean_i)^2 / (N - k)               -> eval_var
        SS_train = sum_i n_i (mean_i - grand)^2,   E[SS_train] = (k - 1) eval_var + (N - sum n_i^2 / N) train_var
        train_var = (SS_train - (k - 1) MS_eval) / (N - sum n_i^2 / N),   n0 = (N - sum n_i^2 / N) / (k - 1)

    Both are unbiased before the clipping (not the most efficient for very unbalanced designs; REML would be).
    With ``row`` (a column naming rows) the sums are pooled over rows, each row around its own mean: the
    usual way to get stable components from a study whose rows have 3-5 seeds each. NaN where a component is
    not identifiable: eval_var needs some training seed with >= 2 eval seeds, train_var needs >= 2 training
    seeds (and eval_var).
    """
    if row is None:
        rows = [read_row(df, value, train, eval)]
    else:
        if row not in df.columns:
            raise KeyError(f"no column {row!r} (columns: {list(df.columns)})")
        rows = [read_row(g, value, train, eval, name=str(r)) for r, g in df.groupby(row, sort=False)]
    sums = np.array([_anova_sums(r) for r in rows])
    ssw, dfw, ssb, dfb, c = sums.sum(axis=0)
    eval_var = ssw / dfw if dfw > 0 else _NAN
    train_var = max(0.0, (ssb - dfb * eval_var) / c) if dfb > 0 and c > 0 and dfw > 0 else _NAN
    n0 = c / dfb if dfb > 0 else float(rows[0].n_eval)
    return VarianceComponents(float(train_var), float(eval_var), sum(r.n_train for r in rows), float(n0), int(dfb),
                              int(dfw))


# ------------------------------------------------------------------------------------ paired differences
def _seed_difference(a: dict, b: dict, labelled: bool) -> tuple[float, int, bool]:
    """b minus a within one training seed: over the shared eval seeds if any (matched), else of the means."""
    common = sorted(a.keys() & b.keys(), key=str) if labelled else []
    if common:
        return float(np.mean([b[e] - a[e] for e in common])), len(common), True
    return float(np.mean(list(b.values())) - np.mean(list(a.values()))), min(len(a), len(b)), False


def paired_difference(a_df: pd.DataFrame, b_df: pd.DataFrame, value: str = "value", train: str = "train_seed",
                      eval: str | None = "eval_seed", level: float = 0.95, names: tuple[str, str] = ("a", "b"),
                      ) -> Interval:
    """Row b minus row a, paired on shared seeds where possible. In order of preference:

    1. >= 2 shared training seeds: per shared training seed the difference b - a (over the eval seeds both rows
       have, matched; else of the two eval means), then a t-interval over those differences. Covers both
       sources. A seed only one row has is left out (the estimate is over the shared seeds).
    2. Both rows have >= 2 training seeds but share fewer than 2: Welch t-interval over the training-seed means
       (unpaired; stated in ``method``). Covers both sources but gains nothing from pairing.
    3. Exactly one shared training seed (and one row has a single training seed): within that seed, a paired
       t-interval over the shared eval seeds (>= 2), else Welch over the two rows' eval values. Covers eval
       noise only (``sources == ("eval seeds",)``).
    4. Otherwise (a single value on a side, or no shared seed and a row with one training seed): the estimate
       with no interval.

    ``names`` label the rows in error messages.
    """
    a = read_row(a_df, value, train, eval, names[0])
    b = read_row(b_df, value, train, eval, names[1])
    labelled = a.eval_labelled and b.eval_labelled
    shared = [s for s in a.train_labels if s in b.seeds]
    if len(shared) >= 2:
        per = [_seed_difference(a.seeds[s], b.seeds[s], labelled) for s in shared]
        d = np.array([p[0] for p in per])
        matched = "eval seeds matched" if all(p[2] for p in per) else (
            "eval seeds averaged" if not any(p[2] for p in per) else "eval seeds matched where shared")
        return _t_interval(*t_stats(d), level, sources=(TRAIN, EVAL), n_train=len(shared),
                           n_eval=min(p[1] for p in per), n_values=sum(p[1] for p in per),
                           method=f"paired t over {len(shared)} shared training seeds ({matched})")
    if a.n_train >= 2 and b.n_train >= 2:
        return _t_interval(*welch_stats(a.seed_means(), b.seed_means()), level, sources=(TRAIN, EVAL),
                           n_train=min(a.n_train, b.n_train), n_eval=min(a.n_eval, b.n_eval),
                           n_values=min(a.n_values, b.n_values),
                           method=f"unpaired Welch t over training-seed means ({a.n_train} vs {b.n_train} seeds, "
                                  f"{len(shared)} shared)")
    if len(shared) == 1:
        ea, eb = a.seeds[shared[0]], b.seeds[shared[0]]
        common = sorted(ea.keys() & eb.keys(), key=str) if labelled else []
        size = dict(n_train=1, sources=(EVAL,))
        if len(common) >= 2:
            d = np.array([eb[e] - ea[e] for e in common])
            return _t_interval(*t_stats(d), level, n_eval=len(common), n_values=len(common), **size,
                               method="paired t over the eval seeds of 1 shared training seed: "
                                      "training noise not covered")
        xa, xb = np.array(list(ea.values())), np.array(list(eb.values()))
        if len(xa) >= 2 and len(xb) >= 2:
            return _t_interval(*welch_stats(xa, xb), level, n_eval=min(len(xa), len(xb)),
                               n_values=min(len(xa), len(xb)), **size,
                               method="unpaired Welch t over the eval seeds of 1 shared training seed: "
                                      "training noise not covered")
        return Interval(float(xb.mean() - xa.mean()), level=level, n_train=1, n_eval=min(len(xa), len(xb)),
                        n_values=min(len(xa), len(xb)), method="one value on a side: no interval")
    return Interval(b.estimate() - a.estimate(), level=level, n_train=min(a.n_train, b.n_train),
                    n_eval=min(a.n_eval, b.n_eval), n_values=min(a.n_values, b.n_values),
                    method="no interval: no shared training seed and a row with a single training seed")
