"""ablate.studies.statistics against known answers: hand-computed values, scipy, closed forms, and seeded simulations.

Simulation bands: with R repetitions a rate p has SD sqrt(p (1 - p) / R); each band below is >= 4 SDs wide on
each side of the expected rate, so a re-seeded run passes with overwhelming probability too.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ablate.studies.statistics import (
    EVAL,
    TRAIN,
    Interval,
    VarianceComponents,
    best_of,
    cell_interval,
    detection_power,
    kendall_tau_b,
    kendall_tau_interval,
    min_detectable_difference,
    monotone,
    paired_diff_sd,
    paired_difference,
    rank_comparison,
    resolution,
    seeds_needed,
    study_resolution,
    variance_components,
    verdict,
)


def frame(values, train=None, evals=None) -> pd.DataFrame:
    """Long format from a (train seeds, eval seeds) array; NaN entries are missing cells (left out)."""
    v = np.atleast_2d(np.asarray(values, dtype=float))
    nt, ne = v.shape
    train = np.arange(nt) if train is None else np.asarray(train)
    evals = np.arange(ne) if evals is None else np.asarray(evals)
    d = pd.DataFrame({"train_seed": np.repeat(train, ne), "eval_seed": np.tile(evals, nt), "value": v.ravel()})
    return d[d["value"].notna()].reset_index(drop=True) if np.isnan(v).any() else d


def rate(labels, what) -> float:
    return float(np.mean([x == what for x in labels]))


# ------------------------------------------------------------------------------------------------ Interval
def test_interval_format_covers_width_p_value():
    i = Interval(12.34, 10.12, 14.56, n_train=3, n_eval=2, level=0.95, sources=(TRAIN, EVAL), n_values=6,
                 se=0.5, df=2.0)
    assert i.format() == "12.3 [10.1, 14.6] (n=3x2)"
    assert i.format(2) == "12.34 [10.12, 14.56] (n=3x2)"
    assert i.covers(12.0) and i.covers(10.12) and not i.covers(9.0)
    assert i.width == pytest.approx(4.44)
    assert i.p_value(12.34) == pytest.approx(1.0)
    assert i.p_value(0.0) == pytest.approx(2 * stats.t.sf(12.34 / 0.5, 2))
    one = Interval(7.0, n_train=1, n_eval=1, n_values=1)
    assert not one.defined and math.isnan(one.width) and not one.covers(7.0) and math.isnan(one.p_value())
    assert one.format() == "7.0 (n=1x1, no interval)"
    ev = Interval(7.0, 6.0, 8.0, n_train=1, n_eval=3, sources=(EVAL,), n_values=3)
    assert ev.format() == "7.0 [6.0, 8.0] (n=1x3, eval noise only)"
    unbal = Interval(7.0, 6.0, 8.0, n_train=3, n_eval=1, sources=(TRAIN, EVAL), n_values=5)
    assert unbal.format() == "7.0 [6.0, 8.0] (n=3x≥1, 5 values)"


# ------------------------------------------------------------------------------------------- cell_interval
def test_cell_interval_hand_example():
    i = cell_interval(frame([[10, 12], [14, 16], [11, 13]]))
    means = np.array([11.0, 15.0, 12.0])
    lo, hi = stats.t.interval(0.95, 2, loc=means.mean(), scale=means.std(ddof=1) / math.sqrt(3))
    assert i.estimate == pytest.approx(38 / 3)
    assert (i.lo, i.hi) == (pytest.approx(lo), pytest.approx(hi))
    assert (i.n_train, i.n_eval, i.n_values, i.df) == (3, 2, 6, 2.0)
    assert i.sources == (TRAIN, EVAL)
    # unbalanced: every training seed weighs the same
    j = cell_interval(frame([[10, 12], [14, np.nan], [11, 13]]))
    assert j.estimate == pytest.approx((11 + 14 + 12) / 3) and (j.n_eval, j.n_values) == (1, 5)


def test_cell_interval_one_training_seed_and_one_value():
    i = cell_interval(frame([[10.0, 11.0, 13.0]]))
    lo, hi = stats.t.interval(0.95, 2, loc=np.mean([10, 11, 13]), scale=np.std([10, 11, 13], ddof=1) / math.sqrt(3))
    assert (i.lo, i.hi) == (pytest.approx(lo), pytest.approx(hi))
    assert i.sources == (EVAL,) and "training noise not covered" in i.method
    one = cell_interval(frame([[10.0]]))
    assert one.estimate == 10.0 and math.isnan(one.lo) and math.isnan(one.hi) and not one.defined
    assert verdict(one, paper_diff=1.0) == "n/a"
    # no eval-seed column: each line is one eval draw
    d = frame([[10, 12], [14, 16], [11, 13]]).drop(columns="eval_seed")
    assert cell_interval(d).estimate == pytest.approx(38 / 3)
    assert cell_interval(d, eval=None).hi == pytest.approx(cell_interval(frame([[10, 12], [14, 16], [11, 13]])).hi)


def simulate_nested(rng, reps, n_train, n_eval, train_sd, eval_sd, mu=50.0):
    return mu + rng.normal(0, train_sd, (reps, n_train, 1)) + rng.normal(0, eval_sd, (reps, n_train, n_eval))


def test_cell_interval_coverage_nested_3x2():
    """3 training seeds x 2 eval seeds, train var 4, eval var 1: the interval covers the true mean ~95%."""
    rng = np.random.default_rng(1)
    y = simulate_nested(rng, 2000, 3, 2, 2.0, 1.0)
    cov = np.mean([cell_interval(frame(v)).covers(50.0) for v in y])
    assert 0.93 <= cov <= 0.97, cov


def test_cell_interval_coverage_needs_both_sources():
    """Nesting matters: 3 x 5, train var 4, eval var 1. The seed-mean interval covers ~95%; treating the 15
    values as independent (ignoring the training-seed effect) covers far less; so does one training seed's
    eval-only interval, which however covers that model's own mean ~95% (what its sources say)."""
    rng = np.random.default_rng(2)
    y = simulate_nested(rng, 2000, 3, 5, 2.0, 1.0)
    cov = np.mean([cell_interval(frame(v)).covers(50.0) for v in y])
    naive = np.mean([abs(v.mean() - 50) <= stats.t.ppf(0.975, 14) * v.std(ddof=1) / math.sqrt(15) for v in y])
    assert 0.93 <= cov <= 0.97, cov
    assert naive < 0.8, naive
    seed_effect = rng.normal(0, 2.0, 2000)
    one = 50 + seed_effect[:, None] + rng.normal(0, 1.0, (2000, 5))
    ivs = [cell_interval(frame(v[None, :])) for v in one]
    assert all(i.sources == (EVAL,) for i in ivs)
    own = np.mean([i.covers(50 + s) for i, s in zip(ivs, seed_effect, strict=True)])
    true = np.mean([i.covers(50.0) for i in ivs])
    assert 0.93 <= own <= 0.97, own
    assert true < 0.7, true


def test_cell_interval_coverage_unbalanced():
    """Eval counts 1, 2, 4 under the 3 training seeds: close to nominal (the t reference is approximate)."""
    rng = np.random.default_rng(3)
    y = simulate_nested(rng, 2000, 3, 4, 2.0, 2.0)
    y[:, 0, 1:] = np.nan
    y[:, 1, 2:] = np.nan
    cov = np.mean([cell_interval(frame(v)).covers(50.0) for v in y])
    assert 0.92 <= cov <= 0.98, cov


# -------------------------------------------------------------------------------------- variance components
def test_variance_components_hand_example_balanced():
    v = np.array([[10, 12], [14, 16], [11, 13.0]])
    vc = variance_components(frame(v))
    msw = ((v - v.mean(1, keepdims=True)) ** 2).sum() / 3
    msb = 2 * ((v.mean(1) - v.mean()) ** 2).sum() / 2
    assert vc.eval_var == pytest.approx(msw) and vc.train_var == pytest.approx((msb - msw) / 2)
    assert (vc.n_train, vc.n_eval, vc.df_train, vc.df_eval) == (3, 2.0, 2, 3)
    assert vc.to_dict()["train_var"] == vc.train_var


@pytest.mark.parametrize("balanced", [True, False])
def test_variance_components_recovers_known(balanced):
    rng = np.random.default_rng(4)
    y = simulate_nested(rng, 1, 20000, 4, 2.0, 1.0)[0]
    if not balanced:  # 1 to 4 eval seeds per training seed
        n = rng.integers(1, 5, 20000)
        y[np.arange(4)[None, :] >= n[:, None]] = np.nan
    vc = variance_components(frame(y))
    assert vc.train_var == pytest.approx(4.0, rel=0.05) and vc.eval_var == pytest.approx(1.0, rel=0.05)


def test_variance_components_pooled_over_rows_and_clipped():
    rng = np.random.default_rng(5)
    parts = [frame(simulate_nested(rng, 1, 400, 3, 2.0, 1.0, mu=10.0 * r)[0]).assign(row=f"r{r}") for r in range(40)]
    d = pd.concat(parts, ignore_index=True)
    vc = variance_components(d, row="row")
    assert vc.train_var == pytest.approx(4.0, rel=0.05) and vc.eval_var == pytest.approx(1.0, rel=0.05)
    assert vc.n_train == 16000
    zero = variance_components(frame(simulate_nested(rng, 1, 2000, 3, 0.0, 1.0)[0]))
    assert 0.0 <= zero.train_var < 0.1
    assert variance_components(frame([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])).train_var == 0.0  # clipped from -1
    assert math.isnan(variance_components(frame([[1.0], [2.0], [4.0]])).eval_var)


# ------------------------------------------------------------------------------------------ paired difference
def test_paired_difference_matches_scipy_and_skips_missing_seed():
    a = frame([[10.0, 10.4], [12.0, 12.2], [11.0, 11.6], [9.0, 9.1]])
    b = frame([[11.0, 11.8], [13.5, 13.3], [np.nan, np.nan], [9.9, 10.5]])  # b lacks training seed 2
    i = paired_difference(a, b)
    da = np.array([[10.0, 10.4], [12.0, 12.2], [9.0, 9.1]])
    db = np.array([[11.0, 11.8], [13.5, 13.3], [9.9, 10.5]])
    ci = stats.ttest_rel(db.mean(1), da.mean(1)).confidence_interval(0.95)
    assert i.estimate == pytest.approx((db - da).mean())
    assert (i.lo, i.hi) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert (i.n_train, i.n_eval) == (3, 2) and i.sources == (TRAIN, EVAL)
    assert "3 shared training seeds (eval seeds matched)" in i.method


def test_paired_difference_eval_matching():
    a = frame([[10.0, 11.0, 12.0], [20.0, 21.0, 22.0]], evals=[0, 1, 2])
    b = frame([[13.0, 15.0], [23.0, 21.0]], evals=[1, 7])  # shares eval seed 1 only
    i = paired_difference(a, b)
    assert i.estimate == pytest.approx(((13 - 11) + (23 - 21)) / 2) and i.n_eval == 1
    c = frame([[13.0, 15.0], [23.0, 21.0]], evals=[8, 9])  # no shared eval seed: means
    j = paired_difference(a, c)
    assert j.estimate == pytest.approx(((14 - 11) + (22 - 21)) / 2) and "eval seeds averaged" in j.method


def test_paired_difference_fallbacks():
    a = frame([[10.0, 11.0, 12.5]])
    b = frame([[12.0, 12.5, 15.0]])
    one = paired_difference(a, b)  # one shared training seed: paired over eval seeds, eval noise only
    ci = stats.ttest_rel([12.0, 12.5, 15.0], [10.0, 11.0, 12.5]).confidence_interval(0.95)
    assert (one.lo, one.hi) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert one.sources == (EVAL,) and "training noise not covered" in one.method
    assert one.format().endswith("eval noise only)")
    x, y = np.array([[10.0], [12.0], [11.0]]), np.array([[14.0], [13.0], [15.5], [16.0]])
    w = paired_difference(frame(x), frame(y, train=[5, 6, 7, 8]))  # no shared seeds: Welch
    ci = stats.ttest_ind(y.ravel(), x.ravel(), equal_var=False).confidence_interval(0.95)
    assert (w.lo, w.hi) == (pytest.approx(ci.low), pytest.approx(ci.high)) and "unpaired Welch" in w.method
    na = paired_difference(frame([[10.0]]), frame([[12.0]]))
    assert na.estimate == 2.0 and not na.defined and verdict(na, -1.0) == "n/a"
    nb = paired_difference(frame([[10.0]]), frame(y, train=[5, 6, 7, 8]))
    assert not nb.defined and nb.estimate == pytest.approx(y.mean() - 10.0)


def simulate_pairs(rng, reps, delta, n_train=3, n_eval=2, seed_sd=5.0, inter_sd=0.5, eval_sd=0.5):
    """Rows a and b sharing training seeds: a common seed effect, a row-by-seed part and eval noise."""
    shared = rng.normal(0, seed_sd, (reps, n_train, 1))
    size = (reps, n_train, n_eval)
    row = lambda d: 50 + d + shared + rng.normal(0, inter_sd, shared.shape) + rng.normal(0, eval_sd, size)
    return row(0.0), row(delta)


def diff_sd(n_eval=2, inter_sd=0.5, eval_sd=0.5) -> float:
    return math.sqrt(2 * inter_sd**2 + 2 * eval_sd**2 / n_eval)


def test_verdict_rates_when_true_difference_is_zero():
    rng = np.random.default_rng(6)
    a, b = simulate_pairs(rng, 3000, 0.0)
    v = [verdict(paired_difference(frame(x), frame(y)), paper_diff=-3.0) for x, y in zip(a, b, strict=True)]
    assert 0.93 <= rate(v, "tie") <= 0.97, rate(v, "tie")
    assert 0.01 <= rate(v, "holds") <= 0.04, rate(v, "holds")
    assert 0.01 <= rate(v, "reversed") <= 0.04, rate(v, "reversed")


def test_verdict_rates_when_true_difference_is_large():
    """A true difference of 10 per-seed SDs: "holds" when the paper's sign agrees, "reversed" when not."""
    rng = np.random.default_rng(7)
    a, b = simulate_pairs(rng, 1000, -10 * diff_sd())
    ivs = [paired_difference(frame(x), frame(y)) for x, y in zip(a, b, strict=True)]
    assert rate([verdict(i, paper_diff=-2.0) for i in ivs], "holds") > 0.99
    assert rate([verdict(i, paper_diff=+2.0) for i in ivs], "reversed") > 0.99


def test_pairing_gains_power():
    """Large shared seed effect (SD 5) and a small row-specific part: the paired interval is much narrower than
    the unpaired one over the same values (b relabelled to other seeds), and still covers the truth ~95%."""
    rng = np.random.default_rng(8)
    a, b = simulate_pairs(rng, 500, 1.0, n_train=4)
    paired = [paired_difference(frame(x), frame(y)) for x, y in zip(a, b, strict=True)]
    unpaired = [paired_difference(frame(x), frame(y, train=[10, 11, 12, 13])) for x, y in zip(a, b, strict=True)]
    assert all("unpaired" in u.method for u in unpaired)
    ratio = np.median([p.width / u.width for p, u in zip(paired, unpaired, strict=True)])
    assert ratio < 0.3, ratio
    assert 0.92 <= np.mean([p.covers(1.0) for p in paired]) <= 0.98


def test_verdict_rules():
    iv = lambda lo, hi: Interval((lo + hi) / 2, lo, hi)
    assert verdict(iv(1, 3), paper_diff=2.0) == "holds"
    assert verdict(iv(1, 3), paper_diff=-2.0) == "reversed"
    assert verdict(iv(-1, 3), paper_diff=2.0) == "tie"
    assert verdict(iv(-3, -1), paper_diff=-0.1) == "holds"
    assert verdict(iv(1, 3), paper_diff=2.0, tie_tol=1.5) == "tie"
    assert verdict(iv(-5, -2), paper_diff=2.0, tie_tol=1.5) == "reversed"
    assert verdict(iv(1, 3), paper_diff=0.0) == "n/a" and verdict(iv(1, 3), paper_diff=math.nan) == "n/a"
    assert verdict(Interval(2.0), paper_diff=1.0) == "n/a"
    one_model = Interval(2.0, 1.0, 3.0, sources=(EVAL,))
    assert verdict(one_model, 1.0) == "holds" and verdict(one_model, 1.0, require_train=True) == "n/a"
    assert verdict(Interval(2.0, 1.0, 3.0, sources=(TRAIN, EVAL)), 1.0, require_train=True) == "holds"
    with pytest.raises(ValueError):
        verdict(iv(1, 3), 1.0, tie_tol=-1)


# ----------------------------------------------------------------------------------------- claims on rows
def study(means, seed_sd=5.0, noise_sd=0.3, n_train=3, n_eval=2, seed=0) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    shared = rng.normal(0, seed_sd, (n_train, 1))
    return {name: frame(m + shared + rng.normal(0, noise_sd, (n_train, n_eval))) for name, m in means.items()}


def test_monotone_holds_tie_reversed_na():
    assert monotone(study({"S": 40, "B": 30, "L": 20, "XL": 15})).verdict == "holds"
    c = monotone(study({"S": 40, "B": 30, "L": 20, "XL": 20.05}))
    assert c.verdict == "tie" and [x.verdict for x in c.comparisons] == ["holds", "holds", "tie"]
    r = monotone(study({"S": 40, "B": 30, "L": 35}))
    assert r.verdict == "reversed" and r.comparisons[1].verdict == "reversed"
    assert monotone(list(study({"a": 1, "b": 5, "c": 9}).items()), direction="increasing").verdict == "holds"
    one = {k: v.iloc[:1] for k, v in study({"S": 40, "B": 30}).items()}
    assert monotone(one).verdict == "n/a"
    one_train = {k: v[v["train_seed"] == 0] for k, v in study({"S": 40, "B": 30}, n_eval=4).items()}
    assert monotone(one_train).verdict == "holds" and monotone(one_train, require_train=True).verdict == "n/a"


def test_monotone_holm_adjustment():
    """A step reversed at the unadjusted level (one-sided p = 0.018 < 0.025) but not after Holm over 4 steps
    (4 x 0.018 > 0.025) reads "tie"; alone (1 step) it reads "reversed"."""
    base = np.array([0.0, 5.0, -3.0])  # shared seed effects
    steps = [np.full(3, -10.0), np.full(3, -10.0) + [0, 0.1, -0.1], np.array([-10.0, -10.2, -9.9]),
             np.array([1.0, 1.5, 2.0])]
    vals = [50 + base]
    for s in steps:
        vals.append(vals[-1] + s)
    rows = {f"r{k}": frame(v[:, None]) for k, v in enumerate(vals)}
    c = monotone(rows)
    last = c.comparisons[-1]
    assert last.raw_verdict == "reversed" and last.verdict == "tie" and c.verdict == "tie"
    assert last.p_reversed == pytest.approx(stats.t.sf(1.5 / (0.5 / math.sqrt(3)), 2))
    assert last.p_reversed_holm == pytest.approx(4 * last.p_reversed)
    assert monotone({"r3": rows["r3"], "r4": rows["r4"]}).verdict == "reversed"


def test_best_of():
    rows = study({"a": 30, "b": 20, "c": 25, "d": 31})
    c = best_of(rows)
    assert c.best == "b" and c.verdict == "holds" and len(c.comparisons) == 3
    assert all(x.a == "b" and x.diff.estimate > 0 for x in c.comparisons)
    tie = best_of(study({"a": 30, "b": 20, "c": 20.02}))
    assert tie.verdict == "tie" and tie.ties in (("c",), ("b",))
    rev = best_of(rows, claimed="d")
    assert rev.verdict == "reversed" and rev.best == "d"
    assert best_of(study({"a": 1.0, "b": 2.0}), lower_is_better=False).best == "b"
    with pytest.raises(KeyError):
        best_of(rows, claimed="zz")


# ------------------------------------------------------------------------------------------------ orderings
def test_kendall_tau_b_hand_example_with_ties():
    paper, ours = [1, 2, 2, 3, 4], [1, 3, 2, 2, 5]
    # C = 7, D = 1, one pair tied in each: (7 - 1) / sqrt(9 * 9)
    assert kendall_tau_b(paper, ours) == pytest.approx(2 / 3)
    assert kendall_tau_b(paper, ours) == pytest.approx(stats.kendalltau(paper, ours).statistic)
    rng = np.random.default_rng(9)
    for _ in range(20):
        x, y = rng.integers(0, 4, 9).astype(float), rng.integers(0, 4, 9).astype(float)
        assert kendall_tau_b(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, nan_ok=True)
    assert math.isnan(kendall_tau_b([1, 1, 1], [1, 2, 3]))


def test_kendall_tau_interval_estimate_and_width():
    paper = {f"r{k}": float(k) for k in range(8)}
    # one value per row: the estimate is tau-b of the row values, nothing to resample
    flat = {r: frame([[v]]) for r, v in zip(paper, [0, 2, 1, 3, 5, 4, 7, 6], strict=True)}
    t = kendall_tau_interval(paper, flat)
    assert t.estimate == pytest.approx(stats.kendalltau(list(paper.values()), [0, 2, 1, 3, 5, 4, 7, 6]).statistic)
    assert not t.defined
    strong = study({r: 100.0 * v for r, v in paper.items()}, noise_sd=1.0, n_train=4)
    s = kendall_tau_interval(paper, strong, n_boot=500)
    assert s.estimate == 1.0 and s.covers(s.estimate) and s.width < 0.05 and s.sources == (TRAIN, EVAL)
    assert s.format(2) == "1.00 [1.00, 1.00] (n=4x2)" and "training seeds and eval seeds" in s.method
    none = study({r: 10.0 for r in paper}, noise_sd=1.0, n_train=4, seed=3)
    n = kendall_tau_interval(paper, none, n_boot=500)
    assert -1 <= n.lo <= n.estimate <= n.hi <= 1 and n.width > 0.5, n
    # the shared seed effect (SD 50) cancels: the same seed draw for every row keeps the pairing
    paired = study({r: 2.0 * v for r, v in paper.items()}, seed_sd=50.0, noise_sd=0.05, n_train=3)
    assert kendall_tau_interval(paper, paired, n_boot=500).width < 0.05


def test_kendall_tau_interval_missing_cells_and_rows():
    paper = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0, "only_paper": 5.0}
    rows = study({"a": 10.0, "b": 20.0, "c": 30.0, "d": 40.0, "only_ours": 1.0}, noise_sd=1.0, n_train=4)
    rows["b"] = rows["b"][rows["b"]["train_seed"] != 1]
    t = kendall_tau_interval(paper, rows, n_boot=300)
    assert t.estimate == 1.0 and t.defined and t.covers(1.0) and "4 rows" in t.method
    assert not kendall_tau_interval({"a": 1.0}, rows).defined


def test_rank_comparison_ties_averaged():
    r = rank_comparison({"a": 1.0, "b": 2.0, "c": 2.0, "d": 5.0}, {"a": 3.0, "b": Interval(1.0), "c": 2.0, "e": 7.0})
    assert list(r["row"]) == ["a", "b", "c", "d", "e"]
    assert list(r["paper_rank"][:3]) == [1.0, 2.5, 2.5] and list(r["our_rank"][:3]) == [3.0, 1.0, 2.0]
    assert r["paper_rank"][3:].isna().all() and r["rank_diff"][0] == 2.0
    hi = rank_comparison({"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 2.0}, lower_is_better=False)
    assert list(hi["row"]) == ["b", "a"]


# ------------------------------------------------------------------------------------------------------ power
def test_min_detectable_difference_closed_form_and_exact():
    sd, n = 2.0, 5
    closed = (stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * sd / math.sqrt(n)
    assert min_detectable_difference(sd, n, method="approx") == pytest.approx(closed)
    exact = min_detectable_difference(sd, n)
    assert detection_power(exact, sd, n) == pytest.approx(0.8, abs=1e-8)
    assert exact > closed and detection_power(closed, sd, n) < 0.8
    # many seeds: the normal-theory limit (z_0.975 + z_0.8) sd / sqrt(n)
    assert min_detectable_difference(sd, 10_000) == pytest.approx((1.959964 + 0.841621) * sd / 100, rel=1e-3)
    with pytest.raises(ValueError):
        min_detectable_difference(sd, 1)


@pytest.mark.parametrize("n_seeds", [3, 5])
def test_min_detectable_difference_is_detected_at_the_stated_power(n_seeds):
    """Simulate the paired design with a true difference equal to the (exact) minimum detectable one: the
    verdict "holds" comes out about 80% of the time."""
    rng = np.random.default_rng(10 + n_seeds)
    sd = diff_sd(n_eval=2)
    mdd = min_detectable_difference(sd, n_seeds)
    a, b = simulate_pairs(rng, 3000, -mdd, n_train=n_seeds)
    v = [verdict(paired_difference(frame(x), frame(y)), paper_diff=-1.0) for x, y in zip(a, b, strict=True)]
    assert 0.77 <= rate(v, "holds") <= 0.83, rate(v, "holds")


def test_seeds_needed_inverts_min_detectable_difference():
    sd = 1.3
    for d in (0.5, 1.0, 3.0):
        n = seeds_needed(d, sd)
        assert min_detectable_difference(sd, n) <= d
        assert n == 2 or min_detectable_difference(sd, n - 1) > d
    assert seeds_needed(100.0, sd) == 2


def test_paired_diff_sd_and_resolution():
    """40 rows x 100 seeds with a large shared seed effect and missing cells: the per-seed difference SD is
    sqrt(2) x the row-specific SD (row-by-seed part 0.5, eval noise 0.5 averaged over 2 eval seeds)."""
    rng = np.random.default_rng(11)
    rows = study({f"r{k}": 30.0 + k for k in range(40)}, seed_sd=5.0, noise_sd=0.0, n_train=100, n_eval=2)
    specific = rng.normal(0, 0.5, (40, 100, 1)) + rng.normal(0, 0.5, (40, 100, 2))
    rows = {r: d.assign(value=d["value"] + specific[k].ravel()) for k, (r, d) in enumerate(rows.items())}
    rows["r3"] = rows["r3"][rows["r3"]["train_seed"] > 4]  # 5 cells missing
    sd, df = paired_diff_sd(rows)
    assert sd == pytest.approx(diff_sd(), rel=0.05) and df == 3995 - (40 + 100 - 1)
    r = study_resolution(rows, difference=0.5)
    assert r.n_seeds == 100 and r.min_difference == pytest.approx(min_detectable_difference(sd, 100))
    assert r.seeds_needed == seeds_needed(0.5, sd)
    vc = VarianceComponents(train_var=4.0, eval_var=1.0, n_train=3, n_eval=2.0, df_train=2, df_eval=3)
    assert resolution(vc, 3).diff_sd == pytest.approx(math.sqrt(2 * (4.0 + 0.5)))
    assert resolution([1.0, 2.0], 3).diff_sd == pytest.approx(math.sqrt(2.5))


# --------------------------------------------------------------------------------------------------- errors
def test_nan_value_refused_naming_row_and_seeds():
    d = frame([[10.0, 11.0], [12.0, 13.0]])
    d.loc[3, "value"] = np.nan
    with pytest.raises(ValueError, match=r"B/2: value nan at train_seed=1, eval_seed=1"):
        cell_interval(d, name="B/2")
    with pytest.raises(ValueError, match=r"XL: value nan at train_seed=1"):
        best_of({"S": frame([[1.0, 2.0], [3.0, 4.0]]), "XL": d})
    with pytest.raises(ValueError, match="b: value nan"):
        paired_difference(frame([[1.0, 2.0], [3.0, 4.0]]), d)


def test_bad_frames_refused():
    with pytest.raises(ValueError, match="two values at train_seed=0, eval_seed=0"):
        cell_interval(pd.DataFrame({"train_seed": [0, 0], "eval_seed": [0, 0], "value": [1.0, 2.0]}))
    with pytest.raises(KeyError, match="fid"):
        cell_interval(frame([[1.0]]), value="fid")
    with pytest.raises(ValueError, match="no values"):
        cell_interval(frame([[1.0]]).iloc[:0])
    with pytest.raises(TypeError):
        cell_interval([1.0, 2.0])
    with pytest.raises(ValueError, match="level"):
        cell_interval(frame([[1.0, 2.0]]), level=95)


@pytest.mark.slow
@pytest.mark.parametrize("n_train,n_eval", [(2, 1), (3, 2), (4, 3), (5, 5)])
def test_coverage_and_null_verdicts_across_designs(n_train, n_eval):
    """Slow: 10000 draws per design. Row-mean coverage and null-difference verdict rates stay nominal."""
    rng = np.random.default_rng(100 + 10 * n_train + n_eval)
    y = simulate_nested(rng, 10000, n_train, n_eval, 1.5, 1.0)
    assert 0.94 <= np.mean([cell_interval(frame(v)).covers(50.0) for v in y]) <= 0.96
    a, b = simulate_pairs(rng, 10000, 0.0, n_train=n_train, n_eval=n_eval)
    v = [verdict(paired_difference(frame(x), frame(y)), paper_diff=1.0) for x, y in zip(a, b, strict=True)]
    assert 0.94 <= rate(v, "tie") <= 0.96 and 0.018 <= rate(v, "holds") <= 0.032
