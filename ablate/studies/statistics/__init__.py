"""Statistics behind "conclusions you can trust": intervals, paired differences, verdicts, orderings, power.

Pure functions: pandas frames (one line per measurement) and plain numbers in, small dataclasses out. Nothing
here knows about studies, Hydra or files; the table builder passes each row's measurements as a frame with a
value column and seed columns (default names ``value``, ``train_seed``, ``eval_seed``; all overridable).

The statistical model
---------------------
One measurement (an FID, lower is better) of row r, training seed s, evaluation seed e is

    y[r, s, e] = mu[r] + a[r, s] + eps[r, s, e]

``mu[r]``: the row's true mean (what the paper's number estimates, at its scale). ``a[r, s]``: the training-seed
effect (data order, timesteps, noise, init), variance ``train_var``. ``eps``: the evaluation noise of a fresh set
of N samples drawn with eval seed e (sample noise), variance ``eval_var``. Eval seeds are nested in training
seeds: averaging k eval seeds shrinks only the eval part, var(seed mean) = train_var + eval_var / k. There is
no per-sample information, so eval noise is measured from repeated eval seeds, not by a bootstrap over
samples. :func:`variance_components` estimates train_var and eval_var (nested ANOVA).

What each interval covers (``Interval.sources``)
----------------------------------------------
* >= 2 training seeds: t-interval over the training-seed means (each averaged over its eval seeds). A seed
  mean contains its own eval noise, so the interval covers both sources: it is an interval for mu[r].
* 1 training seed, >= 2 eval seeds: t-interval over the eval values. It covers eval noise only; it is an
  interval for mu[r] + a[r, s] of that one model, and another training seed may land far outside it.
  ``sources == ("eval seeds",)`` and ``Interval.format`` says "eval noise only"; ``verdict(...,
  require_train=True)`` gives them no verdict.
* One value: the estimate and no interval (lo = hi = NaN); verdicts on it are "n/a".

The paired design and why it gains power
----------------------------------------
Rows that share a training seed share its random numbers (data order, noise, init), and rows that share an
eval seed share the sample noise. So a[r, s] = b[s] + c[r, s]: a part b[s] common to all rows (a lucky seed is
lucky for every row) and a row-specific part c. The difference of two rows at the same seed,
y[r2, s] - y[r1, s], cancels b[s]; :func:`paired_difference` takes a t-interval over these per-seed
differences, whose variance is var(c[r2] - c[r1]) + eval part instead of 2 train_var + eval part. When the
shared seed effect dominates (it often does: the same data order and noise), the paired interval is several
times narrower than the unpaired one for the same runs. Rows that share no training seed fall back to an
unpaired Welch interval (said in ``Interval.method``).

The verdict rule
----------------
For a paper claim "b is lower than a" (paper_diff = paper[b] - paper[a] < 0), :func:`verdict` of our interval
for b - a reads "holds" if it lies entirely on the paper's side of 0, "reversed" if entirely on the other side,
"tie" if it covers 0 (optionally a band [-tie_tol, tie_tol]), "n/a" without an interval. At level 0.95 a true
zero difference reads "tie" 95% of the time and "holds"/"reversed" 2.5% each. Claims about several rows
(:func:`best_of`, :func:`monotone`) hold only if every comparison holds (an intersection-union test: no
adjustment needed) and are reversed if some comparison is reversed after a Holm adjustment.

Caveats
-------
* Few seeds make wide intervals. The t quantile t_{0.975, df} is 12.7 at 1 df (2 seeds), 4.30 at 2 df, 3.18 at
  3 df and 2.78 at 4 df (1.96 for many seeds): with 3 seeds the 95% half-width is 4.3 standard errors, i.e.
  2.5 times the per-seed SD. "tie" with 3 seeds is weak evidence of no difference; it often means "not
  resolved", see :func:`min_detectable_difference` / :func:`study_resolution` for what a budget can resolve.
* The intervals assume roughly normal seed means with a common variance; FID over a few thousand samples is
  close enough, but one diverged run (a far outlier) dominates a 3-seed interval: look at the values.
* An interval over eval seeds of one training seed is about that model, not the configuration.
* Verdicts over many rows of a study are many tests: with 20 independent "ties", one spurious "holds" or
  "reversed" is expected. Per-claim adjustments are in :func:`best_of` / :func:`monotone`; across claims,
  read isolated surprises with that in mind.
* Kendall's tau bootstrap intervals with 3-5 training seeds are rough (few distinct resamples).
* CPU-scale FIDs are not comparable with the paper's ImageNet FID-50K: compare orderings
  (:func:`rank_comparison`, :func:`kendall_tau_interval`) and directions (:func:`verdict`), not values.
"""

from .claims import VERDICTS, Claim, Comparison, best_of, monotone, verdict
from .intervals import Interval, VarianceComponents, cell_interval, paired_difference, variance_components
from .measurements import EVAL, TRAIN
from .power import (
    Resolution,
    detection_power,
    min_detectable_difference,
    paired_diff_sd,
    resolution,
    seeds_needed,
    study_resolution,
)
from .ranks import kendall_tau_b, kendall_tau_interval, rank_comparison

__all__ = [
    "TRAIN", "EVAL", "VERDICTS",
    "Interval", "cell_interval", "paired_difference", "VarianceComponents", "variance_components",
    "verdict", "Comparison", "Claim", "best_of", "monotone",
    "kendall_tau_b", "kendall_tau_interval", "rank_comparison",
    "detection_power", "min_detectable_difference", "seeds_needed", "paired_diff_sd", "Resolution", "resolution",
    "study_resolution",
]
