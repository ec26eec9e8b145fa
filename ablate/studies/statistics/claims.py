"""Verdicts: does a paper's claim (a difference, a best row, an ordering) hold in our measurements?"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .intervals import Interval, paired_difference
from .measurements import TRAIN, read_row, two_sided_q

__all__ = ["VERDICTS", "verdict", "Comparison", "Claim", "best_of", "monotone"]

VERDICTS = ("holds", "tie", "reversed", "n/a")


def _direction(paper_diff: float | None) -> int:
    if paper_diff is None or not math.isfinite(paper_diff) or paper_diff == 0:
        return 0
    return 1 if paper_diff > 0 else -1


def verdict(diff: Interval, paper_diff: float, tie_tol: float = 0.0, require_train: bool = False) -> str:
    """One of "holds", "tie", "reversed", "n/a" for a difference (row b minus row a) against the paper's.

    The paper's direction is the sign of ``paper_diff`` (paper value of b minus paper value of a).
    "holds": the interval lies entirely on the paper's side of 0; "reversed": entirely on the other side;
    "tie": it covers 0. ``tie_tol`` (>= 0, in the metric's units) widens 0 into a band [-tie_tol, tie_tol]
    that the interval must clear: a difference too small to matter then reads "tie".
    "n/a": no interval (one seed; the caller prints the values but no verdict), or no paper direction
    (``paper_diff`` is 0, None or NaN); with ``require_train``, also an interval that does not cover the
    training noise (one training seed: it speaks about that one model, not the configuration). By default such
    an interval gets a verdict, and the caller should show its ``sources`` next to it.
    """
    if tie_tol < 0:
        raise ValueError(f"tie_tol must be >= 0, got {tie_tol!r}")
    s = _direction(paper_diff)
    if s == 0 or not diff.defined or (require_train and TRAIN not in diff.sources):
        return "n/a"
    near, far = sorted((s * diff.lo, s * diff.hi))
    if near > tie_tol:
        return "holds"
    if far < -tie_tol:
        return "reversed"
    return "tie"


def _p_against(diff: Interval, sign: int, tie_tol: float) -> float:
    """One-sided p-value for a difference beyond ``tie_tol`` on the side opposite to ``sign``. It is below
    (1 - level) / 2 exactly when the two-sided interval reads "reversed"."""
    if not (diff.defined and math.isfinite(diff.se) and math.isfinite(diff.df)):
        return math.nan
    x = -sign * diff.estimate - tie_tol
    if diff.se == 0:
        return 0.0 if x > 0 else 1.0
    return float(stats.t.sf(x / diff.se, diff.df))


def _holm(p: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (NaN entries stay NaN and do not count in the family)."""
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        out[i] = running
    return out


@dataclass(frozen=True)
class Comparison:
    """One pairwise step of a claim: ``diff`` is row b minus row a, ``claimed_sign`` the claim's sign of it.

    ``verdict`` is the step's verdict inside the claim ("reversed" only if it survives the Holm adjustment);
    ``raw_verdict`` is :func:`verdict` of the interval alone. ``p_reversed`` / ``p_reversed_holm``: one-sided
    p-value for the direction opposite to the claim, before and after the Holm adjustment over the claim's
    comparisons."""

    a: str
    b: str
    diff: Interval
    claimed_sign: int
    verdict: str
    raw_verdict: str
    p_reversed: float
    p_reversed_holm: float


@dataclass(frozen=True)
class Claim:
    """A claim about several rows and its verdict. ``best`` is set by :func:`best_of`; ``ties`` lists the
    rows whose comparison is a tie (for :func:`best_of`: the rows not resolved from the best)."""

    statement: str
    verdict: str
    comparisons: tuple[Comparison, ...]
    level: float
    rule: str
    best: str | None = None

    @property
    def ties(self) -> tuple[str, ...]:
        return tuple(c.b for c in self.comparisons if c.verdict == "tie")


_RULE = ("holds if every comparison holds at the stated level (an intersection-union test: no multiplicity "
         "adjustment is needed, the claim as a whole is wrongly accepted at most (1-level)/2 of the time); reversed "
         "if some comparison is reversed after a Holm adjustment over the {m} comparisons (one-sided, at "
         "(1-level)/2); n/a if a comparison has no interval; else tie")


def _claim(pairs: list[tuple[str, str, Interval, int]], statement: str, level: float, tie_tol: float,
           require_train: bool, best: str | None = None) -> Claim:
    alpha_side = 1.0 - two_sided_q(level)
    p = [_p_against(d, s, tie_tol) for _, _, d, s in pairs]
    ph = _holm(p)
    comps = []
    for (a, b, d, s), p_raw, p_adj in zip(pairs, p, ph, strict=True):
        raw = verdict(d, s, tie_tol, require_train)
        v = raw
        if raw == "reversed" and not p_adj < alpha_side:
            v = "tie"
        comps.append(Comparison(a, b, d, s, v, raw, p_raw, float(p_adj)))
    vs = [c.verdict for c in comps]
    overall = ("reversed" if "reversed" in vs else "n/a" if "n/a" in vs
               else "holds" if all(v == "holds" for v in vs) else "tie")
    return Claim(statement, overall, tuple(comps), level, _RULE.format(m=len(comps)), best)


def best_of(rows: Mapping[str, pd.DataFrame], claimed: str | None = None, lower_is_better: bool = True,
            value: str = "value", train: str = "train_seed", eval: str | None = "eval_seed",
            level: float = 0.95, tie_tol: float = 0.0, require_train: bool = False) -> Claim:
    """Is one row the best of ``rows``? The claimed best is ``claimed`` (e.g. the paper's best row) or, if None,
    the row with the best mean (lowest when ``lower_is_better``). For every other row, the paired difference
    other - best (:func:`paired_difference`) is compared with the claimed sign (other worse).

    Verdict: "holds" if every other row is resolved as worse; "reversed" if some other row is resolved as
    better after a Holm adjustment (only possible for a ``claimed`` best, or from seeds missing in some rows);
    "n/a" if a comparison has no interval; else "tie", and ``Claim.ties`` names the rows not resolved from it.
    ``tie_tol`` and ``require_train`` as in :func:`verdict`.
    """
    if len(rows) < 2:
        raise ValueError(f"best_of needs >= 2 rows, got {len(rows)}")
    if claimed is None:
        means = {r: read_row(d, value, train, eval, r).estimate() for r, d in rows.items()}
        claimed = (min if lower_is_better else max)(means, key=means.get)
    elif claimed not in rows:
        raise KeyError(f"claimed best {claimed!r} is not among the rows {list(rows)}")
    sign = 1 if lower_is_better else -1
    pairs = [(claimed, r, paired_difference(rows[claimed], d, value, train, eval, level, (claimed, r)), sign)
             for r, d in rows.items() if r != claimed]
    word = "lowest" if lower_is_better else "highest"
    statement = f"{claimed!r} is best ({word}) of {len(rows)} rows"
    return _claim(pairs, statement, level, tie_tol, require_train, best=claimed)


def monotone(rows: Mapping[str, pd.DataFrame] | Sequence[tuple[str, pd.DataFrame]], direction: str = "decreasing",
             value: str = "value", train: str = "train_seed", eval: str | None = "eval_seed",
             level: float = 0.95, tie_tol: float = 0.0, require_train: bool = False) -> Claim:
    """Does the value change monotonically along the claimed order of ``rows`` (a dict in order, or a list of
    (name, frame))? ``direction``: "decreasing" (e.g. FID falls as the model grows) or "increasing".

    Every adjacent step (next minus previous, :func:`paired_difference`) gets a verdict against the claimed
    sign. Overall: "holds" if every step holds; "reversed" if some step is reversed after a Holm adjustment
    over the steps; "n/a" if a step has no interval; else "tie". Multiple-comparison stance: "holds" is an
    intersection-union claim (all steps must hold), so each step at the stated level already bounds the chance
    of wrongly accepting the whole ordering; "reversed" needs only one step, so the steps' reversal p-values
    are Holm-adjusted (family-wise error <= (1 - level) / 2). A step whose interval alone reads "reversed" but
    does not survive the adjustment reads "tie" (its ``raw_verdict`` keeps "reversed"). ``tie_tol`` and
    ``require_train`` as in :func:`verdict`.
    """
    if direction not in ("decreasing", "increasing"):
        raise ValueError(f"direction must be 'decreasing' or 'increasing', got {direction!r}")
    items = list(rows.items()) if isinstance(rows, Mapping) else [tuple(x) for x in rows]
    if len(items) < 2:
        raise ValueError(f"monotone needs >= 2 rows, got {len(items)}")
    sign = -1 if direction == "decreasing" else 1
    pairs = [(ra, rb, paired_difference(da, db, value, train, eval, level, (ra, rb)), sign)
             for (ra, da), (rb, db) in zip(items[:-1], items[1:], strict=True)]
    op = " > " if direction == "decreasing" else " < "
    return _claim(pairs, f"{direction}: " + op.join(str(r) for r, _ in items), level, tie_tol,
                  require_train)
