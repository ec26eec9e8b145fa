"""The paper's claims of a study, as written in ``experiments/<study>.yaml``, checked against our rows.

A claim names rows and a kind; the paper's direction and gap come from the rows' published numbers, never from
the claim's text:

- ``pair`` (``a``, ``b``): the step from row a to row b. Paper: ``paper[b] - paper[a]``; ours: the paired
  difference b - a over the shared training seeds, with its 95% interval; verdict "holds" (the interval lies on
  the paper's side of 0), "tie" (it covers 0) or "reversed".
- ``best`` (``rows``): the paper's best of these rows is our best: every other row resolved as worse (holds),
  one resolved as better (reversed), else tie (naming the rows it ties with).
- ``order`` (``rows``): our values follow the paper's ordering of these rows: every adjacent step in the paper's
  order holds (holds), one reversed (reversed, Holm-adjusted), else tie.

Verdicts need an interval over training seeds: a study run with one training seed shows its values and "n/a".
A claim with a row that has no run reads "no run". The ordering check (Kendall tau-b) gets a seed-bootstrap
interval and the study's power is stated: the smallest difference its seeds resolve (80% power, paired design).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from .catalog import Study, StudyError
from .tables import final_rows, row_frames

__all__ = ["KINDS", "LEVEL", "ClaimResult", "claim_results", "ordering", "power", "paper_value"]

KINDS = ("pair", "best", "order")
LEVEL = 0.95
STATS = dict(value="value", train="seed", eval="eval_seed")


@dataclass
class ClaimResult:
    """One claim's outcome: what the paper shows (``paper``: text with its numbers), what we measure
    (``ours``: text with the interval), the ``verdict`` and the numbers behind them for a reader's check."""

    id: str
    kind: str
    says: str
    rows: tuple[str, ...]
    paper: str
    ours: str
    verdict: str
    paper_diff: float = math.nan
    ours_diff: float = math.nan
    ours_lo: float = math.nan
    ours_hi: float = math.nan


def paper_value(study: Study, row_id: str) -> float:
    r = study.row(row_id)
    return float(r.paper.get("fid50k" if study.metric == "fid" else study.metric, math.nan))


def _rows_of(claim: dict) -> tuple[str, ...]:
    if claim.get("kind") == "pair":
        return (str(claim["a"]), str(claim["b"]))
    return tuple(str(r) for r in claim.get("rows") or ())


def _check(study: Study, claim: dict) -> None:
    kind = claim.get("kind")
    if kind not in KINDS:
        raise StudyError(f"{study.name} claim {claim.get('id')!r}: kind={kind!r}; valid: {list(KINDS)}")
    rows = _rows_of(claim)
    if len(rows) < 2 or (kind == "pair" and len(rows) != 2):
        raise StudyError(f"{study.name} claim {claim.get('id')!r}: a {kind} claim needs "
                         f"{'rows a and b' if kind == 'pair' else 'at least two rows'}")
    for r in rows:
        if not math.isfinite(paper_value(study, r)):
            raise StudyError(f"{study.name} claim {claim.get('id')!r}: row {r} has no paper number to compare with")


def _fmt(x: float, signed: bool = False) -> str:
    return f"{x:+.2f}" if signed else f"{x:.2f}"


def claim_results(study: Study, df: pd.DataFrame, level: float = LEVEL) -> list[ClaimResult]:
    """Every claim of ``study`` against the rows of ``df`` (the results store)."""
    from .statistics import best_of, monotone, paired_difference, verdict

    frames = row_frames(final_rows(df, study))
    lower = study.order == "lower"
    out = []
    for c in study.claims:
        _check(study, c)
        kind, rows = c["kind"], _rows_of(c)
        cid, says = str(c.get("id", "-".join(rows))), str(c.get("says", ""))
        pv = {r: paper_value(study, r) for r in rows}
        missing = [r for r in rows if r not in frames]
        if kind == "pair":
            a, b = rows
            pdiff = pv[b] - pv[a]
            paper = f"{a} {pv[a]:g} -> {b} {pv[b]:g} ({_fmt(pdiff, True)})"
            if missing:
                out.append(ClaimResult(cid, kind, says, rows, paper, f"no run of {', '.join(missing)}", "no run",
                                       paper_diff=pdiff))
                continue
            d = paired_difference(frames[a], frames[b], level=level, names=(a, b), **STATS)
            v = verdict(d, pdiff, require_train=True)
            out.append(ClaimResult(cid, kind, says, rows, paper, f"{b} - {a} = {d.format(2)}", v, pdiff, d.estimate,
                                   d.lo, d.hi))
            continue
        ranked = sorted(rows, key=lambda r: pv[r], reverse=lower)  # paper order: worst first, best last
        if kind == "best":
            best = ranked[-1]
            paper = f"{best} best ({', '.join(f'{r} {pv[r]:g}' for r in rows)})"
        else:
            paper = " > ".join(f"{r} {pv[r]:g}" for r in ranked) if lower else " < ".join(
                f"{r} {pv[r]:g}" for r in ranked)
        if missing:
            out.append(ClaimResult(cid, kind, says, rows, paper, f"no run of {', '.join(missing)}", "no run"))
            continue
        if kind == "best":
            res = best_of({r: frames[r] for r in rows}, claimed=best, lower_is_better=lower, level=level,
                          require_train=True, **STATS)
        else:
            res = monotone([(r, frames[r]) for r in ranked], direction="decreasing" if lower else "increasing",
                           level=level, require_train=True, **STATS)
        steps = "; ".join(f"{cmp.b} - {cmp.a} = {cmp.diff.format(2)}" for cmp in res.comparisons)
        extra = f"; ties with {', '.join(res.ties)}" if kind == "best" and res.verdict == "tie" and res.ties else ""
        out.append(ClaimResult(cid, kind, says, rows, paper, steps + extra, res.verdict))
    return out


def ordering(study: Study, df: pd.DataFrame, n_boot: int = 2000, level: float = LEVEL):
    """Kendall tau-b between the paper's numbers and our row means, with a seed-bootstrap interval (None with
    fewer than 3 rows that have both)."""
    from .statistics import kendall_tau_interval

    frames = row_frames(final_rows(df, study))
    paper = {r.id: paper_value(study, r.id) for r in study.rows if r.id in frames}
    paper = {k: v for k, v in paper.items() if math.isfinite(v)}
    if len(paper) < 3:
        return None
    return kendall_tau_interval(paper, {k: frames[k] for k in paper}, n_boot=n_boot, seed=0, level=level, **STATS)


def power(study: Study, df: pd.DataFrame):
    """The study's resolution: the smallest difference its training seeds resolve with 80% power (paired design,
    the per-seed difference SD pooled over the study's rows), or None with fewer than two training seeds."""
    from .statistics import study_resolution

    frames = row_frames(final_rows(df, study))
    if len(frames) < 2 or max(f["seed"].nunique() for f in frames.values()) < 2:
        return None
    try:
        return study_resolution(frames, level=LEVEL, **STATS)
    except ValueError:
        return None
