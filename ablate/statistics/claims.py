"""Verdicts: does a paper's claim (a difference, a best row, an ordering) hold in our measurements?"""

from __future__ import annotations

import math

from ._data import TRAIN
from .intervals import Interval

__all__ = ["VERDICTS", "verdict"]

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
