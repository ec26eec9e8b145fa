"""Plots of the studies: FID against GFLOPs, NFE or the guidance scale, and FID over training.

The paper's numbers on the left panel, ours on the right (different data and budgets: compare shapes, not values);
our points carry their 95% interval over seeds (:mod:`ablate.studies.statistics`). Every point is read from the
results rows; a panel without runs says "no run". PNGs are written without version or date metadata, so the
same rows give the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .tables import NO_RUN

__all__ = ["plot_fid_vs_gflops", "plot_fid_vs_x", "plot_fid_over_training"]


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


def _yerr(o: pd.DataFrame):
    """Asymmetric error bars from the cells' 95% intervals (none where a cell has no interval)."""
    lo = (o["ours_mean"] - o["ours_lo"]).fillna(0).clip(lower=0)
    hi = (o["ours_hi"] - o["ours_mean"]).fillna(0).clip(lower=0)
    return [lo.to_numpy(), hi.to_numpy()]


def _series(table: pd.DataFrame):
    for name, g in table.groupby(table["series"].fillna("other"), sort=False):
        yield name, g


def plot_fid_vs_gflops(table: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """FID against forward GFLOPs per image, one line per model size (DiT's scaling figure): the paper's
    numbers on the left, ours with their 95% intervals on the right."""
    plt, fig, (ax_p, ax_o) = _fig(2)
    for name, g in _series(table):
        p = g[g["paper"].notna() & g["gflops_paper"].notna()].sort_values("gflops_paper")
        if len(p):
            ax_p.plot(p["gflops_paper"], p["paper"], "o-", label=str(name))
        o = g[g["ours_mean"].notna()].sort_values("gflops_ours")
        if len(o):
            ax_o.errorbar(o["gflops_ours"], o["ours_mean"], yerr=_yerr(o), fmt="o-", capsize=3, label=str(name))
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
            ax_o.errorbar(o[x], o["ours_mean"], yerr=_yerr(o), fmt="o-", capsize=3, label=str(name))
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
        keys = [k for k in ("study", "row", "seed", "eval_seed", "sampler_tag") if k in d]
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
