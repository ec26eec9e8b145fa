"""Run a study as one Hydra multirun into its own run store; compare with the committed rows; commit.

- ``run_study``: ``python -m ablate.run -m +experiment=<rows> scale=<scale> seed=<seeds> out_dir=<store dir>``
  in a subprocess, at CPU scale with ``hydra/launcher=joblib_cpu threads=1`` unless another launcher is given
  (``hydra/launcher=submitit_slurm_gpu`` on a cluster). A point already
  in the run store is skipped by ``ablate.run`` itself (the row identity, ``point_key``), so an interrupted study
  resumes; a failing row is recorded and the others run.
- ``compare``: for each row, seed and evaluation seed, ours-now against the committed value: equal (same code
  and seed give the same number), or the difference.
- ``commit``: copy a study's ``ok`` rows from the run store into the committed store, replacing rows of the same
  point; the one explicit step that changes a tracked results file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

from .catalog import ROOT, Study, command, load_study, study_overrides

__all__ = ["DEFAULT_STORE_DIR", "committed_store", "run_study", "compare", "commit"]

DEFAULT_STORE_DIR = Path("runs") / "studies"
# At CPU scale a study runs ABLATE_JOBS (default 2) one-thread jobs in parallel (joblib): more images per second on
# a small CPU than one multi-threaded job, and one thread per job makes every row's numbers independent of the
# machine's core count (the committed rows were computed so).
CPU_LAUNCH = ("hydra/launcher=joblib_cpu", "threads=1")
IDENTITY = ["row", "seed", "eval_seed", "metric_base", "sampler_tag", "budget"]


def committed_store(scale: str = "cpu") -> Path:
    return ROOT / "results" / scale / "results.jsonl"


def run_study(name: str, scale: str = "cpu", seeds=(0,), rows=None, extra=(), out_dir: str | Path | None = None,
              dry_run: bool = False, echo=print) -> int:
    """Run the study's rows x seeds as one multirun; returns the multirun's exit status."""
    study = load_study(name)
    out_dir = Path(out_dir or DEFAULT_STORE_DIR)
    if scale == "cpu" and not any(e.startswith("hydra/launcher=") for e in extra):
        extra = [*CPU_LAUNCH, *extra]
    overrides, skipped = study_overrides(study, scale, seeds, rows, [f"out_dir={out_dir}", *extra])
    for r in skipped:
        echo(f"[study {study.name}/{scale}] row {r.id}: skipped at {scale} scale: {r.skip_reason(scale)}")
    echo(command(overrides, multirun=True))
    if dry_run:
        return 0
    return subprocess.run([sys.executable, "-m", "ablate.run", "-m", *overrides], cwd=ROOT).returncode


def _ok(df: pd.DataFrame, study: Study) -> pd.DataFrame:
    if df.empty or not {"study", "status", "metric_base"} <= set(df.columns):
        return pd.DataFrame(columns=[*IDENTITY, "value"])
    d = df[(df["study"] == study.name) & (df["status"] == "ok") & (df["metric_base"] == study.metric)].copy()
    d["row"] = d["row"].astype(str)
    for col in IDENTITY:
        if col not in d:
            d[col] = None
    return d


def compare(name: str, store: str | Path, committed: str | Path, echo=print) -> pd.DataFrame:
    """Ours-now (``store``) against the committed rows, matched on row, seed, evaluation seed, metric, sampler
    and budget. Returns the joined frame with ``now``, ``committed`` and ``difference`` columns."""
    from ..results import read_results

    study = load_study(name)
    now, old = _ok(read_results(store), study), _ok(read_results(committed), study)
    keys = IDENTITY
    j = now[[*keys, "value"]].merge(old[[*keys, "value"]], on=keys, how="left", suffixes=("_now", "_committed"))
    j = j.rename(columns={"value_now": "now", "value_committed": "committed"})
    j["difference"] = j["now"] - j["committed"]
    order = {r.id: i for i, r in enumerate(study.rows)}
    j = j.sort_values(by=["row", "seed", "eval_seed"], key=lambda c: c.map(order) if c.name == "row" else c)
    for _, r in j.iterrows():
        if pd.isna(r["committed"]):
            verdict = "no committed row with this identity"
        elif r["difference"] == 0:
            verdict = "equal"
        else:
            verdict = f"differs by {r['difference']:+.6g}"
        echo(f"[study {study.name}] row {r['row']} seed {r['seed']} eval seed {r['eval_seed']}: now {r['now']:.6f}, "
             f"committed {'' if pd.isna(r['committed']) else format(r['committed'], '.6f')} ({verdict})")
    if j.empty:
        echo(f"[study {study.name}] no ok rows in {store}")
    return j


def commit(name: str, store: str | Path, committed: str | Path, echo=print) -> int:
    """Copy the study's ``ok`` rows of ``store`` into ``committed`` (a row of this study at the same point is
    replaced; other studies' rows are kept, also where they show the same measurement).
    Returns the number of rows written."""
    import json

    from ..results import read_results

    study = load_study(name)
    new = read_results(store)
    new = new[(new["study"] == study.name) & (new["status"] == "ok")] if not new.empty else new
    if new.empty:
        echo(f"[study {study.name}] nothing to commit from {store}")
        return 0
    # a row of this study at the same point is replaced; the same point shown by another study is kept
    keys = set(new["point_key"]) if "point_key" in new else set()
    committed = Path(committed)
    kept = []
    if committed.exists():
        for line in committed.read_text().splitlines():
            r = json.loads(line) if line.strip() else None
            if r is not None and not (r.get("point_key") in keys and r.get("study") == study.name):
                kept.append(line)
    rows = [json.dumps({k: v for k, v in r.items() if not _is_nan(v)}, sort_keys=True)
            for r in new.to_dict("records")]
    committed.parent.mkdir(parents=True, exist_ok=True)
    tmp = committed.with_suffix(".tmp")
    tmp.write_text("\n".join(kept + rows) + "\n")
    tmp.replace(committed)
    echo(f"[study {study.name}] committed {len(rows)} rows to {committed} ({len(kept)} other rows kept)")
    return len(rows)


def _is_nan(v) -> bool:
    return isinstance(v, float) and v != v
