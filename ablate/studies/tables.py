"""A study's table: its paper rows joined to the results store, one cell per row with its interval.

A cell holds the final evaluations of one row (``step == train_steps``) at one budget: every training seed and
evaluation seed measured, their mean and a 95% interval (:func:`ablate.studies.statistics.cell_interval`: over
training seeds when there are several, each averaged over its evaluation seeds, so the interval covers both
sources; over evaluation seeds alone for one training seed, and it says so). A row whose results were produced
at two budgets (training steps or batch, number of samples, reference split, extractor) is refused with a
message naming them: a cell never averages different budgets. A row without an ``ok`` result reads "no run"
(or "failed: ..." or "skipped at <scale> scale: ..."), never a number filled in by hand.

Results come from the local store (:func:`ablate.results.read_results`), a W&B project or its export
(:mod:`ablate.studies.wandb_import`), converted to the same rows.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .catalog import Study, compose_row, load_study

__all__ = ["NO_RUN", "TableError", "load_rows", "final_rows", "study_table", "row_frames", "model_gflops_of_row",
           "budget_of"]

NO_RUN = "no run"


class TableError(ValueError):
    """A table cell would mix results of different budgets."""


def load_rows(results: str | Path | None = None, wandb_project: str | None = None,
              wandb_export: str | Path | None = None) -> pd.DataFrame:
    """Rows from a W&B project (when named), else a W&B JSON export (when given), else the local store."""
    if wandb_project:
        from .wandb_import import read_wandb

        return read_wandb(wandb_project)
    if wandb_export:
        from .wandb_import import read_wandb_export

        return read_wandb_export(wandb_export)
    from ..results import read_results

    return read_results(results) if results else pd.DataFrame()


def budget_of(r: pd.Series) -> str:
    """A row's budget label: its ``budget`` column, or one derived from the columns every store has."""
    b = r.get("budget")
    if isinstance(b, str) and b:
        return b
    return (f"train {r.get('step')}x{r.get('batch_size')}; eval {r.get('num_samples')} "
            f"{r.get('reference_split', 'test')}/{r.get('extractor')}")


def final_rows(df: pd.DataFrame, study: Study) -> pd.DataFrame:
    """The study's ``ok`` rows of its metric at the end of training, with ``eval_seed`` and ``budget`` filled."""
    need = {"study", "row", "status", "metric_base", "value", "seed"}
    if df.empty or not need <= set(df.columns):
        return pd.DataFrame(columns=[*sorted(need), "eval_seed", "budget"])
    d = df[(df["study"] == study.name) & (df["status"] == "ok") & (df["metric_base"] == study.metric)].copy()
    d = d[d["row"].notna()]
    d["row"] = d["row"].astype(str)
    if "train_steps" in d and "step" in d:
        d = d[d["step"].isna() | d["train_steps"].isna() | (d["step"] == d["train_steps"])]
    d["eval_seed"] = d["eval_seed"].fillna(0).astype(int) if "eval_seed" in d else 0
    d["seed"] = d["seed"].astype(int)
    d["budget"] = d.apply(budget_of, axis=1) if len(d) else pd.Series(dtype=str)
    return d


def _failures(df: pd.DataFrame, study: Study) -> dict[str, str]:
    if df.empty or not {"study", "row", "status"} <= set(df.columns):
        return {}
    f = df[(df["study"] == study.name) & (df["status"] == "failed") & df["row"].notna()]
    return {str(r["row"]): str(r.get("error", ""))[:80] for _, r in f.iterrows()}


def row_frames(sel: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per row id, its measurements as the statistics expect them (``value``, ``seed``, ``eval_seed``)."""
    return {rid: g[["value", "seed", "eval_seed"]].reset_index(drop=True) for rid, g in sel.groupby("row")}


def _mean(df: pd.DataFrame, col: str, default: float = math.nan) -> float:
    if col not in df or df[col].dropna().empty:
        return default
    return float(df[col].astype(float).mean())


def study_table(study: Study | str, df: pd.DataFrame, scale: str = "cpu", gflops: bool = True,
                budget: str | None = None) -> pd.DataFrame:
    """One line per paper row: paper number, ours (mean, interval, seeds), NFE, guidance, GFLOPs, walls, status.

    ``budget``: keep only results of this budget label (when a store holds several). Raises
    :class:`TableError` when a row's results span several budgets. ``gflops``: measure the model GFLOPs of
    rows without a run (a meta-device build of the row's model at ``scale``).
    """
    from .statistics import cell_interval

    study = load_study(study) if isinstance(study, str) else study
    sel, failed = final_rows(df, study), _failures(df, study)
    if budget is not None:
        sel = sel[sel["budget"] == budget]
    lines = []
    for r in study.rows:
        mine = sel[sel["row"] == r.id]
        budgets = sorted(mine["budget"].unique()) if len(mine) else []
        if len(budgets) > 1:
            raise TableError(f"{study.name} row {r.id}: results at {len(budgets)} budgets would share one cell: "
                             f"{budgets}; keep one (study_table(..., budget=...), or a separate results store)")
        n = len(mine)
        cell = cell_interval(mine, value="value", train="seed", eval="eval_seed", name=r.id) if n else None
        paper = r.paper.get("fid50k", math.nan) if study.metric == "fid" else r.paper.get(study.metric, math.nan)
        skip = r.skip_reason(scale)
        status = ("ok" if n else f"skipped at {scale} scale: {skip}" if skip else
                  f"failed: {failed[r.id]}" if r.id in failed else NO_RUN)
        g_ours = _mean(mine, "model_gflops")
        if gflops and not n and not skip:
            g_ours = model_gflops_of_row(study, r.id, scale)
        g_paper_measured = model_gflops_of_row(study, r.id, "paper") if gflops and "gflops" in r.paper else math.nan
        cfg = float(r.paper.get("cfg", 1.0))
        lines.append(dict(
            row=r.id, setting=r.setting, series=r.series, paper=float(paper), paper_source=r.paper.get("source"),
            ours_mean=cell.estimate if cell else math.nan, ours_lo=cell.lo if cell else math.nan,
            ours_hi=cell.hi if cell else math.nan, n_train=cell.n_train if cell else 0,
            n_eval=cell.n_eval if cell else 0, n=n, sources=", ".join(cell.sources) if cell else "",
            cell=cell.format(2) if cell else "", budget=budgets[0] if budgets else None,
            gflops_paper=float(r.paper.get("gflops", math.nan)), gflops_paper_measured=g_paper_measured,
            gflops_ours=g_ours, sample_gflops=_mean(mine, "sample_gflops"),
            nfe=_mean(mine, "nfe") if n else float(r.at.get(scale, {}).get("sampler", {}).get("nfe")
                                                    or (r.paper.get("nfe") if scale == "paper" else 50)),
            cfg=cfg, num_samples=int(mine["num_samples"].iloc[-1]) if n and "num_samples" in mine else None,
            extractor=mine["extractor"].iloc[-1] if n and "extractor" in mine else None,
            train_steps=int(mine["step"].max()) if n and "step" in mine else None,
            train_wall_s=_mean(mine.drop_duplicates("seed"), "train_wall_s"),
            eval_wall_s=_mean(mine, "sample_wall_s") + _mean(mine, "metric_wall_s", 0.0),
            reused=bool(n and "reused_checkpoint" in mine and mine["reused_checkpoint"].fillna(False).all()),
            status=status,
        ))
    return pd.DataFrame(lines)


# -------------------------------------------------------------------------------------------------- GFLOPs
_GFLOPS_CACHE: dict[tuple, float] = {}


def model_gflops_of_row(study: Study, row_id: str, scale: str) -> float:
    """Forward GMACs per image of the row's model at ``scale`` (``ablate.metrics.flops.model_gflops`` on a
    meta-device build of the composed config: no weights, no training). Rows with equal model configs share one
    measurement."""
    import torch
    from omegaconf import OmegaConf

    from ..metrics.flops import model_gflops
    from ..models import ModelSpec

    cfg = compose_row(study, row_id, scale)
    m = OmegaConf.to_container(cfg.model, resolve=True)
    m.pop("_target_", None)
    key = tuple(sorted((k, str(v)) for k, v in m.items()))
    if key not in _GFLOPS_CACHE:
        spec = ModelSpec(**m)
        with torch.device("meta"):
            net = spec.build()
        _GFLOPS_CACHE[key] = model_gflops(net, conditional=spec.num_classes > 0)
    return _GFLOPS_CACHE[key]
