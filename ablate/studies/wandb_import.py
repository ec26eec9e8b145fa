"""Results rows from W&B: a project through the public API (network and login) or its offline JSON export.

Each logged ``eval/<metric><N>/<tag>`` value becomes one results row carrying the run's flattened config (the axes
a run writes there, incl. ``study``, ``row``, ``seed``), the GFLOPs, NFE and step logged with it. Metric names are
parsed by :func:`ablate.pipeline.metric_names.parse_metric_key`, the module that writes them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from ..pipeline.metric_names import GFLOPS, GLOBAL_STEP, NFE, parse_metric_key

__all__ = ["rows_from_wandb_runs", "read_wandb", "read_wandb_export", "export_wandb"]

_EXTRA = {**{v: k for k, v in GFLOPS.items()}, NFE: "nfe", GLOBAL_STEP: "step"}


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
        # the flat axes (a run's config also holds nested object descriptions, which are not columns)
        config = {k: v for k, v in dict(get("config") or {}).items()
                  if not isinstance(v, dict) and not k.startswith("_")}
        history = get("history")
        if callable(history):  # a live wandb Run: fetch the full history
            history = list(run.scan_history())
        summary = dict(get("summary") or {})
        entries = [h for h in (history or []) if any(parse_metric_key(k) for k in h)] or [summary]
        state = get("state", "finished")
        for h in entries:
            extra = {v: h.get(k, summary.get(k)) for k, v in _EXTRA.items() if h.get(k, summary.get(k)) is not None}
            for key, value in h.items():
                m = parse_metric_key(key)
                if m is None or m["tag"] is None or value is None or isinstance(value, dict):
                    continue
                out.append({**config, **extra, "status": "ok" if state in ("finished", "running") else state,
                            "metric": key, "metric_base": m["metric"], "num_samples": m["num_samples"],
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
