"""Reading one row's measurements out of a DataFrame, and the t-distribution helpers shared by the package.

Internal: the public functions take ``pandas.DataFrame`` s and column names; everything below works on plain
Python dicts and numpy arrays (a row has at most a few dozen values, so clarity wins over vectorisation here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

TRAIN = "train seeds"
EVAL = "eval seeds"


def _label(x: Any) -> Any:
    """A seed label as a plain Python scalar (numpy ints and Python ints compare and hash alike anyway)."""
    return x.item() if hasattr(x, "item") else x


def sort_key(x: Any) -> tuple[str, Any]:
    return (type(x).__name__, x) if isinstance(x, (int, float, str)) else ("~", str(x))


@dataclass(frozen=True)
class RowData:
    """One row's values: ``seeds[train_label][eval_label] = value``. ``eval_labelled`` is False when the frame
    had no eval-seed column (then eval labels are positions 0, 1, ... within a training seed and carry no
    pairing information)."""

    name: str
    seeds: dict[Any, dict[Any, float]]
    eval_labelled: bool

    @property
    def train_labels(self) -> list[Any]:
        return sorted(self.seeds, key=sort_key)

    @property
    def n_train(self) -> int:
        return len(self.seeds)

    @property
    def n_eval(self) -> int:
        """Eval seeds per training seed (the smallest number if the design is unbalanced)."""
        return min(len(e) for e in self.seeds.values())

    @property
    def n_values(self) -> int:
        return sum(len(e) for e in self.seeds.values())

    def seed_mean(self, s: Any) -> float:
        return float(np.mean(list(self.seeds[s].values())))

    def seed_means(self) -> np.ndarray:
        """Mean over eval seeds within each training seed, in label order."""
        return np.array([self.seed_mean(s) for s in self.train_labels])

    def estimate(self) -> float:
        """The row mean: every training seed weighs the same, whatever its number of eval seeds."""
        return float(np.mean(self.seed_means()))


def read_row(df: pd.DataFrame, value: str, train: str, eval: str | None, name: str | None = None) -> RowData:
    """Validate and index one row's measurements. Refuses: a missing column, no values, a non-finite value or
    seed label (the error names the row and the seeds), and two values for the same (train, eval) seed."""
    name = "row" if name is None else str(name)
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{name}: expected a pandas DataFrame, got {type(df).__name__}")
    for col in (value, train):
        if col not in df.columns:
            raise KeyError(f"{name}: no column {col!r} (columns: {list(df.columns)})")
    if len(df) == 0:
        raise ValueError(f"{name}: no values")
    try:
        v = df[value].to_numpy(dtype=float)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: column {value!r} is not numeric ({e})") from None
    tr = df[train].to_numpy()
    labelled = eval is not None and eval in df.columns
    ev = df[eval].to_numpy() if labelled else None
    seeds: dict[Any, dict[Any, float]] = {}
    for k in range(len(v)):
        t = _label(tr[k])
        if pd.isna(t):
            raise ValueError(f"{name}: missing {train} label in line {k} of the frame")
        e = _label(ev[k]) if labelled else len(seeds.get(t, ()))
        if labelled and pd.isna(e):
            raise ValueError(f"{name}: missing {eval} label at {train}={t!r}")
        where = f"{train}={t!r}" + (f", {eval}={e!r}" if labelled else "")
        if not math.isfinite(v[k]):
            raise ValueError(f"{name}: value {float(v[k])} at {where}; drop or re-run that cell (no NaN/inf)")
        cell = seeds.setdefault(t, {})
        if e in cell:
            raise ValueError(f"{name}: two values at {where}; keep one value per (train seed, eval seed)")
        cell[e] = float(v[k])
    return RowData(name, seeds, labelled)


# ---------------------------------------------------------------------------------------------- t helpers
def two_sided_q(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    return 1.0 - (1.0 - level) / 2.0


def t_stats(x: np.ndarray) -> tuple[float, float, float]:
    """Mean, standard error and degrees of freedom of a one-sample t-interval (needs len(x) >= 2)."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(n)), float(n - 1)


def welch_stats(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Mean of y minus mean of x, its standard error and Welch-Satterthwaite degrees of freedom."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se2 = vx + vy
    den = vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1)
    df = se2**2 / den if den > 0 else float(len(x) + len(y) - 2)
    return float(y.mean() - x.mean()), float(math.sqrt(se2)), float(df)


def t_bounds(est: float, se: float, df: float, level: float) -> tuple[float, float]:
    h = float(special.stdtrit(df, two_sided_q(level))) * se  # the t quantile (scipy.stats.t.ppf, faster)
    return est - h, est + h
