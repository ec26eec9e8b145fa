"""Writers: a study's table as Markdown and LaTeX, its claims, and the generated reading of all studies.

Every number they print comes from the table, the claims or the statistics computed from the results rows; the
only hand-written text is the study's own description, its scale notes and its ``context`` (what the scale is,
why values differ from FID-50K), which hold no number or ordering of results.
"""

from __future__ import annotations

import math

import pandas as pd

from .catalog import Study
from .claims import ClaimResult

__all__ = ["to_markdown", "to_latex", "claims_markdown", "verdict_counts", "study_summary", "reading_page",
           "RECOMPUTE"]

# How a reader recomputes a pair claim's verdict from the committed rows with pandas (printed on the reading page).
RECOMPUTE = """```python
import pandas as pd
from scipy import stats
from ablate.results import read_results

df = read_results("results/cpu/results.jsonl")          # one row per (row, seed, eval seed, metric)
d = df[(df.study == "sit_walk") & (df.status == "ok") & (df.metric_base == "fid") & (df.step == df.train_steps)]
per_seed = d.groupby(["row", "seed"]).value.mean().unstack("row")   # training seed x row, eval seeds averaged
diff = (per_seed["1"] - per_seed["0"]).dropna()                     # claim 0-1: row 1 minus row 0, paired by seed
lo, hi = stats.t.interval(0.95, len(diff) - 1, diff.mean(), stats.sem(diff))
# paper: 43.6 - 44.2 < 0 -> "holds" if hi < 0, "reversed" if lo > 0, else "tie"
```"""


def _num(x, fmt: str = "{:.2f}") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return fmt.format(x)


def _paper(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{float(x):g}"


def _ranks(table: pd.DataFrame, lower: bool) -> tuple[dict, dict]:
    both = table[table["paper"].notna() & table["ours_mean"].notna()]
    asc = lower
    pr = both.set_index("row")["paper"].rank(ascending=asc, method="average")
    orr = both.set_index("row")["ours_mean"].rank(ascending=asc, method="average")
    return pr.to_dict(), orr.to_dict()


def _cells(table: pd.DataFrame, study: Study, scale: str) -> tuple[list[str], list[list[str]]]:
    metric = "FID-50K" if study.metric == "fid" else study.metric
    paper_gflops = table["gflops_paper"].notna().any()
    guided = (table["cfg"] != 1.0).any()
    head = ["row", "setting", f"paper {metric}"]
    if scale == "cpu":  # values are not comparable with ImageNet FID-50K: ranks instead of differences
        head += ["paper rank"]
    head += ["ours: mean [95% interval] (n = training x eval seeds)"]
    head += ["our rank"] if scale == "cpu" else ["ours - paper"]
    head += ["NFE", "cfg"] + (["GFLOPs paper", "GFLOPs measured (paper model)"] if paper_gflops else [])
    head += ["GFLOPs per sample" if guided else "model GFLOPs", "wall s: train + eval"]
    pr, orr = _ranks(table, study.order == "lower")
    body = []
    for _, r in table.iterrows():
        ours = r["cell"] if r["n"] else r["status"]
        line = [r["row"], r["setting"], _paper(r["paper"]) or "no paper number"]
        if scale == "cpu":
            line += [_num(pr.get(r["row"]), "{:g}")]
        line += [ours]
        line += ([_num(orr.get(r["row"]), "{:g}")] if scale == "cpu"
                 else [_num(r["ours_mean"] - r["paper"], "{:+.2f}") if r["n"] and r["paper"] == r["paper"] else ""])
        line += [f"{r['nfe']:g}", f"{r['cfg']:g}"]
        line += ([_paper(r["gflops_paper"]), _num(r["gflops_paper_measured"])] if paper_gflops else [])
        if guided:
            g = r["sample_gflops"] if r["n"] else math.nan
            line += [_num(g, "{:.4g}") or "—"]
        else:
            line += [_num(r["gflops_ours"], "{:.4g}")]
        wall = "—"
        if not math.isnan(r.get("train_wall_s", math.nan)):
            wall = f"{r['train_wall_s']:.0f}{' (shared)' if r.get('reused') else ''} + {r['eval_wall_s']:.0f}"
        body.append(line + [wall])
    return head, body


def _budget_line(table: pd.DataFrame) -> str:
    ran = table[table["n"] > 0]
    budgets = sorted({str(b) for b in ran["budget"].dropna()})
    return ("budget" + ("s" if len(budgets) > 1 else "") + ": " + "; ".join(f"`{b}`" for b in budgets)
            if budgets else "no runs yet")


def to_markdown(table: pd.DataFrame, study: Study, scale: str = "cpu", extra: list[str] = ()) -> str:
    """The study's table as GitHub Markdown, with its scale, budget and notes underneath (``extra``: more
    computed lines, e.g. the ordering, the power and the FID floor)."""
    head, body = _cells(table, study, scale)
    esc = lambda s: str(s).replace("|", "\\|")
    out = [f"### {study.name} ({scale} scale)", "", study.description, "",
           "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(esc(c) for c in line) + " |" for line in body]
    out += ["", f"Source: {study.source}. Scale: {study.scales[scale].get('note', '')}", "",
            f"Ours: {_budget_line(table)}. Intervals are 95% t-intervals over training seeds (each averaged over its "
            "evaluation seeds), which cover both sources; with one training seed they cover the evaluation noise "
            "only and say so.", *[f"\n{x}" for x in extra], ""]
    return "\n".join(out)


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "±": r"$\pm$", "—": "--", "≥": r"$\geq$"}


def _tex(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(s))


def to_latex(table: pd.DataFrame, study: Study, scale: str = "cpu") -> str:
    """The study's table as a LaTeX ``table`` (booktabs)."""
    head, body = _cells(table, study, scale)
    cols = "ll" + "r" * (len(head) - 2)
    out = [r"\begin{table}[t]", r"\centering", r"\small", rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
           " & ".join(_tex(h) for h in head) + r" \\", r"\midrule"]
    out += [" & ".join(_tex(c) for c in line) + r" \\" for line in body]
    out += [r"\bottomrule", r"\end{tabular}",
            rf"\caption{{{_tex(study.name)} ({scale} scale). {_tex(_budget_line(table))}.}}",
            rf"\label{{tab:{study.name}-{scale}}}", r"\end{table}", ""]
    return "\n".join(out)


def claims_markdown(results: list[ClaimResult]) -> str:
    """The claims as a table: what the paper shows, what we measure (with intervals), the verdict."""
    if not results:
        return "No claims are stated for this study (no published numbers to compare, or a plot only).\n"
    lines = ["| claim | what it says | paper | ours (95% interval; b - a per training seed) | verdict |",
             "|---|---|---|---|---|"]
    esc = lambda s: str(s).replace("|", "\\|")
    for c in results:
        lines.append(f"| {esc(c.id)} | {esc(c.says)} | {esc(c.paper)} | {esc(c.ours)} | **{c.verdict}** |")
    return "\n".join(lines) + "\n"


def verdict_counts(results: list[ClaimResult]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in results:
        out[c.verdict] = out.get(c.verdict, 0) + 1
    return out


def _count_text(counts: dict[str, int]) -> str:
    order = ("holds", "tie", "reversed", "n/a", "no run")
    parts = [f"{counts[k]} {k}" for k in order if counts.get(k)]
    return ", ".join(parts) if parts else "none"


def study_summary(study: Study, table: pd.DataFrame, results: list[ClaimResult], tau, power, floor) -> list[str]:
    """Computed lines shown under a study's table and in the reading: ordering, power, floor, verdicts."""
    lines = []
    seeds = sorted({int(n) for n in table.loc[table["n"] > 0, "n_train"]})
    lines.append(f"Training seeds per row: {', '.join(map(str, seeds)) or 'none'}; claims: "
                 f"{_count_text(verdict_counts(results))}.")
    if tau is not None:
        lines.append(f"Ordering against the paper: Kendall tau-b {tau.estimate:+.2f}, 95% seed-bootstrap interval "
                     f"[{tau.lo:+.2f}, {tau.hi:+.2f}] over {tau.n_values if tau.n_values else '?'} values of "
                     f"{len(table[table['n'] > 0])} rows.")
    if power is not None:
        lines.append(f"Power: with {power.n_seeds} training seeds, a paired difference of "
                     f"{power.min_difference:.2f} FID is resolved with 80% probability (per-seed difference SD "
                     f"{power.diff_sd:.2f}, pooled over the study's rows); smaller true differences mostly read tie.")
    elif seeds and max(seeds) < 2:
        lines.append("Power: one training seed per row, so no interval covers training noise: values only, no "
                     "verdicts.")
    if floor is not None:
        lines.append(f"FID floor at this budget (real training images vs the reference split, same sample count "
                     f"and extractor): {floor}.")
    return lines


def reading_page(sections: list[dict], scale: str, source: str) -> str:
    """The generated reading: per study its context, the claims table with verdicts, ordering and power."""
    total: dict[str, int] = {}
    for s in sections:
        for k, v in verdict_counts(s["claims"]).items():
            total[k] = total.get(k, 0) + v
    out = [f"# Reading the {scale}-scale results (generated)", "",
           f"Generated by `make tables` from the rows in {source}: every number and every verdict below is computed "
           "from them (`ablate/studies/claims.py`); rebuilding on a fresh clone gives this page byte for byte. Each "
           "claim compares two or more rows as the paper does; the paper's direction and gap come from its "
           "published numbers, ours from the rows, paired by training seed (rows that share a seed share its data "
           "order, noise and initial weights). A verdict needs an interval: **holds** when the 95% interval of our "
           "difference lies on the paper's side of zero, **reversed** when it lies on the other side, **tie** when it "
           "covers zero (the difference is inside the seed and sample noise), **n/a** when a row has a single "
           "training seed (values only).", "",
           f"All studies: {_count_text(total)}.", ""]
    for s in sections:
        study, counts = s["study"], verdict_counts(s["claims"])
        out += [f"## `{study.name}`: {_count_text(counts)}", ""]
        if s.get("context"):
            out += [s["context"].strip(), ""]
        out += [f"- {line}" for line in s["summary"]] + [""]
        out += [claims_markdown(s["claims"])]
    out += ["## Recompute a verdict", "",
            "Every verdict is a paired comparison over training seeds; with pandas and scipy, from the committed rows:",
            "", RECOMPUTE, ""]
    return "\n".join(out)
