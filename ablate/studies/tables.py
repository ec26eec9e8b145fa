"""The table builder behind ``make tables``: paper rows joined to our results, Markdown/LaTeX, plots.

A study's table has one line per paper row (``experiments/<study>.yaml``), joined to the results store by the
``study`` and ``row`` columns that ``python -m ablate.studies run`` writes:

    row | setting | paper FID-50K | ours (mean +- std over seeds, n) | difference (ours - paper) | GFLOPs

Per (row, seed) the last evaluation at the highest training step counts; the mean and the sample standard
deviation (ddof = 1) are over seeds. A row without an ``ok`` result reads "no run" (or "failed: ..." or
"skipped at <scale> scale: ..."), never a number filled in by hand. The ordering check compares the paper's
ordering of the rows with ours: Kendall's tau-b over the rows that have both numbers, and the fraction of
concordant pairs among the untied ones.

Results can come from the local store (:func:`ablate.results.read_results`) or from a W&B project
(:func:`read_wandb`, public API) or its JSON export (:func:`read_wandb_export`), converted to the same rows.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from .studies import Study, load_study, row_nfe

__all__ = [
    "load_rows",
    "study_table",
    "kendall_tau",
    "ordering",
    "to_markdown",
    "to_latex",
    "model_gflops_of_row",
    "plot_fid_vs_gflops",
    "plot_fid_vs_x",
    "plot_fid_over_training",
    "rows_from_wandb_runs",
    "read_wandb",
    "read_wandb_export",
    "export_wandb",
]

NO_RUN = "no run"


# ----------------------------------------------------------------------------------------------- the join
def load_rows(results: str | Path | None = None, wandb_project: str | None = None,
              wandb_export: str | Path | None = None) -> pd.DataFrame:
    """Rows from a W&B project (when named), else a W&B JSON export (when given), else the local store."""
    if wandb_project:
        return read_wandb(wandb_project)
    if wandb_export:
        return read_wandb_export(wandb_export)
    from .results import read_results

    return read_results(results) if results else pd.DataFrame()


def _select(df: pd.DataFrame, study: Study) -> pd.DataFrame:
    """The study's ok rows for its metric, one per (row, seed): the last one at the highest step."""
    need = {"study", "row", "status", "metric_base", "value", "seed"}
    if df.empty or not need <= set(df.columns):
        return pd.DataFrame(columns=sorted(need))
    d = df[(df["study"] == study.name) & (df["status"] == "ok") & (df["metric_base"] == study.metric)].copy()
    d = d[d["row"].notna()]
    d["row"] = d["row"].astype(str)
    d["_order"] = range(len(d))
    if "step" not in d:
        d["step"] = 0
    d = d.sort_values(["step", "_order"]).groupby(["row", "seed"], as_index=False).tail(1)
    return d.sort_values("_order")


def _failures(df: pd.DataFrame, study: Study) -> dict[str, str]:
    if df.empty or not {"study", "row", "status"} <= set(df.columns):
        return {}
    f = df[(df["study"] == study.name) & (df["status"] == "failed") & df["row"].notna()]
    return {str(r["row"]): str(r.get("error", ""))[:80] for _, r in f.iterrows()}


def study_table(study: Study | str, df: pd.DataFrame, scale: str = "cpu", gflops: bool = True) -> pd.DataFrame:
    """One line per paper row: paper number, ours (mean, std, n over seeds), difference, GFLOPs, status.

    ``gflops``: fill ``gflops_ours`` for rows without a run by measuring the row's model at ``scale``
    (:func:`model_gflops_of_row`); rows with a run report the ``model_gflops`` they logged.
    """
    study = load_study(study) if isinstance(study, str) else study
    sel, failed = _select(df, study), _failures(df, study)
    lines = []
    for r in study.rows:
        mine = sel[sel["row"] == r.id]
        vals = mine["value"].astype(float).tolist()
        n = len(vals)
        mean = sum(vals) / n if n else math.nan
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else math.nan
        paper = r.paper.get("fid50k", math.nan) if study.metric == "fid" else r.paper.get(study.metric, math.nan)
        skip = r.skip_reason(scale)
        if n:
            status = "ok"
        elif skip:
            status = f"skipped at {scale} scale: {skip}"
        elif r.id in failed:
            status = f"failed: {failed[r.id]}"
        else:
            status = NO_RUN
        g_ours = float(mine["model_gflops"].mean()) if n and "model_gflops" in mine else math.nan
        if gflops and not n and not skip:
            g_ours = model_gflops_of_row(study, r.id, scale)
        # Where the paper states GFLOPs, measure the paper-scale model too: the column checks the unit.
        g_paper_measured = (model_gflops_of_row(study, r.id, "paper") if gflops and "gflops" in r.paper
                            else math.nan)
        lines.append(dict(
            row=r.id, setting=r.setting, series=r.series, paper=float(paper),
            paper_source=r.paper.get("source"), ours_mean=mean, ours_std=std, n=n,
            diff=mean - paper if n and not math.isnan(paper) else math.nan,
            gflops_paper=float(r.paper.get("gflops", math.nan)), gflops_paper_measured=g_paper_measured,
            gflops_ours=g_ours,
            nfe=float(mine["nfe"].mean()) if n and "nfe" in mine else float(row_nfe(study, r, scale)),
            cfg=float(r.budget.get("cfg", 1.0)),
            num_samples=int(mine["num_samples"].iloc[-1]) if n and "num_samples" in mine else None,
            extractor=mine["extractor"].iloc[-1] if n and "extractor" in mine else None,
            train_steps=int(mine["step"].max()) if n else None,
            train_wall_s=_mean_col(mine, "train_wall_s"),
            eval_wall_s=_mean_col(mine, "sample_wall_s") + _mean_col(mine, "metric_wall_s", 0.0),
            reused=bool(n and "reused_checkpoint" in mine and mine["reused_checkpoint"].fillna(False).any()),
            status=status,
        ))
    return pd.DataFrame(lines)


def _mean_col(df: pd.DataFrame, col: str, default: float = math.nan) -> float:
    """Mean of a numeric column over a row's runs (``default`` when absent or empty)."""
    if col not in df or df[col].dropna().empty:
        return default
    return float(df[col].astype(float).mean())


# --------------------------------------------------------------------------------------------- ordering
def kendall_tau(a: Iterable[float], b: Iterable[float]) -> dict[str, float]:
    """Kendall's tau-b of two paired sequences (Kendall 1945), with the pair counts.

    .. math:: \\tau_b = (C - D) / \\sqrt{(n_0 - n_1)(n_0 - n_2)},\\quad n_0 = n(n-1)/2

    where C / D count concordant / discordant pairs and n_1, n_2 the pairs tied in ``a`` / ``b``. Also returns
    ``agree`` = C / (C + D), the fraction of untied pairs ordered alike. NaN when undefined (fewer than 2
    pairs, or all tied).
    """
    a, b = list(map(float, a)), list(map(float, b))
    if len(a) != len(b):
        raise ValueError(f"kendall_tau needs sequences of equal length, got {len(a)} and {len(b)}")
    c = d = ta = tb = 0
    n = len(a)
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            ta += da == 0
            tb += db == 0
            if da * db > 0:
                c += 1
            elif da * db < 0:
                d += 1
    n0 = n * (n - 1) // 2
    denom = math.sqrt((n0 - ta) * (n0 - tb))
    return dict(tau=(c - d) / denom if denom > 0 else math.nan, concordant=c, discordant=d,
                agree=c / (c + d) if c + d else math.nan, pairs=n0, n=n)


def ordering(table: pd.DataFrame) -> dict[str, float]:
    """Does the paper's ordering of rows hold at our scale? Kendall tau-b over rows with both numbers."""
    both = table[table["paper"].notna() & table["ours_mean"].notna()]
    return kendall_tau(both["paper"], both["ours_mean"])


# ------------------------------------------------------------------------------------------------ writers
def _num(x: float, fmt: str = "{:.2f}", signed: bool = False) -> str:
    """Format a number; ``fmt=None`` prints a published number as the paper gives it (33.0, 100.41)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if fmt is None:
        return str(float(x))
    return ("{:+.2f}" if signed else fmt).format(x)


def _ours(r) -> str:
    if not r["n"]:
        return r["status"]
    if r["n"] == 1:
        return f"{r['ours_mean']:.2f} (n=1)"
    return f"{r['ours_mean']:.2f} ± {r['ours_std']:.2f} (n={r['n']})"


def _cells(table: pd.DataFrame, study: Study) -> tuple[list[str], list[list[str]]]:
    metric = "FID-50K" if study.metric == "fid" else study.metric
    has_paper_gflops = table["gflops_paper"].notna().any()
    head = ["row", "setting", f"paper {metric}", "ours (mean ± std, n seeds)", "difference", "NFE", "cfg"]
    head += (["GFLOPs paper", "GFLOPs measured (paper model)"] if has_paper_gflops else []) + ["GFLOPs ours"]
    head += ["wall s: train + eval"]
    body = []
    for _, r in table.iterrows():
        line = [r["row"], r["setting"], _num(r["paper"], None) or "no paper number", _ours(r),
                _num(r["diff"], signed=True) or "—", f"{r['nfe']:g}", f"{r['cfg']:g}"]
        line += ([_num(r["gflops_paper"], None), _num(r["gflops_paper_measured"])] if has_paper_gflops else [])
        line += [_num(r["gflops_ours"], "{:.4g}")]
        wall = "—"
        if not math.isnan(r.get("train_wall_s", math.nan)):
            # (shared): the checkpoint was trained once for another row with the same training config
            wall = f"{r['train_wall_s']:.0f}{' (shared)' if r.get('reused') else ''} + {r['eval_wall_s']:.0f}"
        line += [wall]
        body.append(line)
    return head, body


def _caption(table: pd.DataFrame, study: Study, scale: str) -> str:
    o = ordering(table)
    ran = table[table["n"] > 0]
    ns = sorted({int(x) for x in ran["num_samples"].dropna()})
    ex = sorted({str(x) for x in ran["extractor"].dropna()})
    budget = (f"ours: FID over {', '.join(map(str, ns))} samples with the `{', '.join(ex)}` feature extractor"
              if len(ran) else "ours: no runs yet")
    tau = (f"paper ordering at our scale: Kendall tau-b = {o['tau']:+.2f} over {o['n']} rows "
           f"({o['concordant']} of {o['concordant'] + o['discordant']} untied pairs agree)"
           if o["n"] >= 2 and not math.isnan(o["tau"]) else "paper ordering: fewer than 2 rows with both numbers")
    note = ""
    if scale == "cpu":
        note = (" CPU-scale FIDs use a small extractor and few samples on tiny data, so only orderings are "
                "comparable with the paper, not values; the difference column is shown for completeness.")
    return f"{budget}; {tau}.{note}"


def to_markdown(table: pd.DataFrame, study: Study, scale: str = "cpu") -> str:
    """The study's table as GitHub Markdown, with its scale, budget and ordering check underneath."""
    head, body = _cells(table, study)
    esc = lambda s: str(s).replace("|", "\\|")
    out = [f"### {study.name} ({scale} scale)", "", study.description, "",
           "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(esc(c) for c in line) + " |" for line in body]
    out += ["", f"Source: {study.source}. Scale: {study.scales[scale].get('note', '')}", "",
            _caption(table, study, scale), ""]
    return "\n".join(out)


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "±": r"$\pm$", "—": "--"}


def _tex(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(s))


def to_latex(table: pd.DataFrame, study: Study, scale: str = "cpu") -> str:
    """The study's table as a LaTeX ``table`` (booktabs)."""
    head, body = _cells(table, study)
    cols = "ll" + "r" * (len(head) - 2)
    out = [r"\begin{table}[t]", r"\centering", r"\small", rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
           " & ".join(_tex(h) for h in head) + r" \\", r"\midrule"]
    out += [" & ".join(_tex(c) for c in line) + r" \\" for line in body]
    out += [r"\bottomrule", r"\end{tabular}",
            rf"\caption{{{_tex(study.name)} ({scale} scale). {_tex(_caption(table, study, scale))}}}",
            rf"\label{{tab:{study.name}-{scale}}}", r"\end{table}", ""]
    return "\n".join(out)


# -------------------------------------------------------------------------------------------------- GFLOPs
_GFLOPS_CACHE: dict[tuple, float] = {}
# Config groups that decide the network (time: learn_sigma; data: size, channels, classes).
_MODEL_GROUPS = ("model", "data", "time")


def model_gflops_of_row(study: Study, row_id: str, scale: str) -> float:
    """Forward GMACs per image of the row's model at ``scale`` (``ablate.metrics.flops.model_gflops`` on a
    meta-device build of the composed config: no weights, no training). Rows whose model-deciding overrides
    (model, data, time groups) agree share one measurement."""
    import torch
    from omegaconf import OmegaConf

    from .metrics.flops import model_gflops
    from .models import build_model
    from .studies import compose_row, row_overrides

    ov = row_overrides(study, study.row(row_id), scale)
    key = tuple(o for o in ov if o.split("=", 1)[0].lstrip("+~").split(".")[0] in _MODEL_GROUPS)
    if key not in _GFLOPS_CACHE:
        cfg = compose_row(study, row_id, scale)
        m = OmegaConf.to_container(cfg.model, resolve=True)
        with torch.device("meta"):
            net = build_model(m.pop("name"), **m)
        _GFLOPS_CACHE[key] = model_gflops(net, conditional=cfg.data.num_classes > 0)
    return _GFLOPS_CACHE[key]


# --------------------------------------------------------------------------------------------------- plots
def _fig(ncols: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 4), squeeze=False)
    return plt, fig, axes[0]


def _save(plt, fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})  # no version/date: byte-stable output
    plt.close(fig)
    return path


def _series(table: pd.DataFrame):
    for name, g in table.groupby(table["series"].fillna("other"), sort=False):
        yield name, g


def plot_fid_vs_gflops(table: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """FID against forward GFLOPs per image, one line per model size (DiT's scaling figure): the paper's
    numbers on the left, ours on the right (different data and budgets: compare shapes, not values)."""
    plt, fig, (ax_p, ax_o) = _fig(2)
    for name, g in _series(table):
        p = g[g["paper"].notna() & g["gflops_paper"].notna()].sort_values("gflops_paper")
        if len(p):
            ax_p.plot(p["gflops_paper"], p["paper"], "o-", label=str(name))
        o = g[g["ours_mean"].notna()].sort_values("gflops_ours")
        if len(o):
            ax_o.errorbar(o["gflops_ours"], o["ours_mean"], yerr=o["ours_std"].fillna(0), fmt="o-", capsize=3,
                          label=str(name))
    _finish_axes(((ax_p, "paper (FID-50K, ImageNet 256)"), (ax_o, "ours")), "forward GFLOPs per image (GMACs)",
                 title, logx=True)
    return _save(plt, fig, path)


def plot_fid_vs_x(table: pd.DataFrame, x: str, path: str | Path, xlabel: str, title: str = "",
                  logx: bool = False) -> Path:
    """FID against a sampling knob (``x`` = ``nfe`` for SiT Fig. 5, ``cfg`` for the guidance sweep), one line
    per series; the paper's published points (where any) as open markers on the left panel."""
    plt, fig, (ax_p, ax_o) = _fig(2)
    for name, g in _series(table):
        p = g[g["paper"].notna()].sort_values(x)
        if len(p):
            ax_p.plot(p[x], p["paper"], "o--", mfc="none", label=str(name))
        o = g[g["ours_mean"].notna()].sort_values(x)
        if len(o):
            ax_o.errorbar(o[x], o["ours_mean"], yerr=o["ours_std"].fillna(0), fmt="o-", capsize=3, label=str(name))
    _finish_axes(((ax_p, "paper (published points)"), (ax_o, "ours")), xlabel, title, logx=logx)
    return _save(plt, fig, path)


def _finish_axes(panels, xlabel: str, title: str, logx: bool) -> None:
    """Labels, titles and legends of the paper / ours panels; an empty panel says there is no run."""
    for ax, who in panels:
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("FID")
        ax.set_title(f"{title} {who}".strip())
        if ax.has_data():
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, NO_RUN, ha="center", va="center", transform=ax.transAxes)


def plot_fid_over_training(df: pd.DataFrame, path: str | Path, metric: str = "fid", studies=None) -> Path:
    """FID against training compute (``train_gflops`` = 3 x model GFLOPs x images seen), one line per
    (study, row, seed, sampler tag); a single evaluation per run shows as a point."""
    plt, fig, (ax,) = _fig(1)
    need = {"status", "metric_base", "train_gflops", "value"}
    d = df[(df["status"] == "ok") & (df["metric_base"] == metric)] if need <= set(df.columns) else pd.DataFrame()
    if studies is not None and len(d):
        d = d[d["study"].isin(list(studies))]
    if len(d):
        keys = [k for k in ("study", "row", "seed", "sampler_tag") if k in d]
        for key, g in d.groupby(keys, sort=True, dropna=False):
            g = g.sort_values("train_gflops")
            ax.plot(g["train_gflops"], g["value"], "o-", ms=3, label="/".join(str(k) for k in key))
        if d.groupby(keys, dropna=False).ngroups <= 12:
            ax.legend(fontsize=6)
        ax.set_xscale("log")
    else:
        ax.text(0.5, 0.5, NO_RUN, ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("training GFLOPs (3 x forward x images seen)")
    ax.set_ylabel("FID")
    ax.set_title("FID over training")
    return _save(plt, fig, path)


# ---------------------------------------------------------------------------------------------------- W&B
_METRIC = re.compile(r"^eval/(?P<base>[a-z_]+?)(?P<n>\d+k?)/(?P<tag>.+)$")
_EXTRA = {"eval/model_gflops": "model_gflops", "eval/sample_gflops": "sample_gflops",
          "eval/train_gflops": "train_gflops", "eval/nfe": "nfe", "trainer/global_step": "step"}


def _count(n: str) -> int:
    return int(n[:-1]) * 1000 if n.endswith("k") else int(n)


def rows_from_wandb_runs(runs: Iterable[Any], project: str = "") -> list[dict]:
    """Results-store rows from W&B runs (``wandb.Api().runs(...)`` objects or their exported dicts).

    Each logged ``eval/<metric><N>/<tag>`` value becomes one row carrying the run's flattened config (the axes
    that ``ablate.run`` puts there, incl. ``study``, ``row``, ``seed``), the GFLOPs, NFE and step logged with
    it. The history is used when present (every evaluation: FID over training), else the summary.
    """
    out = []
    for run in runs:
        get = (lambda k, default=None, r=run: r.get(k, default)) if isinstance(run, dict) else (
            lambda k, default=None, r=run: getattr(r, k, default))
        config = {k: v for k, v in dict(get("config") or {}).items() if k != "config" and not k.startswith("_")}
        history = get("history")
        if callable(history):  # a live wandb Run: fetch the full history
            history = list(run.scan_history())
        summary = dict(get("summary") or {})
        entries = [h for h in (history or []) if any(_METRIC.match(k) for k in h)] or [summary]
        state = get("state", "finished")
        for h in entries:
            extra = {v: h.get(k, summary.get(k)) for k, v in _EXTRA.items() if h.get(k, summary.get(k)) is not None}
            for key, value in h.items():
                m = _METRIC.match(key)
                if m is None or value is None or isinstance(value, dict):
                    continue
                out.append({**config, **extra, "status": "ok" if state in ("finished", "running") else state,
                            "metric": key, "metric_base": m["base"], "num_samples": _count(m["n"]),
                            "sampler_tag": config.get("sampler_tag", m["tag"]), "value": float(value),
                            "source": f"wandb:{project}/{get('id')}"})
    return out


def read_wandb(project: str, api=None) -> pd.DataFrame:
    """All rows of a W&B project (``entity/project``) through the public API (needs network + login)."""
    if api is None:
        import wandb

        api = wandb.Api()
    return pd.DataFrame(rows_from_wandb_runs(api.runs(project), project))


def export_wandb(project: str, path: str | Path, api=None) -> Path:
    """Write a project's runs (id, name, state, config, summary, history) to JSON for offline tables."""
    if api is None:
        import wandb

        api = wandb.Api()
    runs = [{"id": r.id, "name": r.name, "state": r.state, "config": dict(r.config),
             "summary": {k: v for k, v in dict(r.summary).items() if not isinstance(v, dict)},
             "history": list(r.scan_history())} for r in api.runs(project)]
    path = Path(path)
    path.write_text(json.dumps({"project": project, "runs": runs}, indent=1, default=str))
    return path


def read_wandb_export(path: str | Path) -> pd.DataFrame:
    """Rows from a JSON export (:func:`export_wandb`): ``{"project": ..., "runs": [{id, config, summary,
    history}, ...]}`` or a bare list of runs."""
    d = json.loads(Path(path).read_text())
    runs, project = (d["runs"], d.get("project", "")) if isinstance(d, dict) else (d, "")
    return pd.DataFrame(rows_from_wandb_runs(runs, project))
