"""Sweep benchmark: trainings launched and wall time of ``-m interpolant=vp,linear sampler=ode,sde``.

The sampler is a sampling-time axis, so the 2 x 2 sweep has 2 distinct training configurations (content
address ``ablate.pipeline.build.Experiment.train_key``): with ``reuse=true`` (the default) it trains twice and
samples four times.
The naive count, one training per job, is measured with the same sweep where every job gets its own
``out_dir`` (``out_dir=<tmp>/naive/job${hydra:job.num}``) and ``reuse=false``: nothing can be shared, so all
4 train. Both run as ``python -m ablate.run -m ...`` subprocesses with the micro model of tests/test_run.py
(depth 2, width 64, a few steps), in a temporary directory. Trainings are counted from the rows
(``reused_checkpoint`` false) and from the checkpoint directories on disk.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

__all__ = ["FAST", "SWEEP", "run_sweep", "run", "markdown"]

FAST = ["model.depth=2", "model.hidden_size=64", "model.num_heads=2", "logger=none", "trainer.batch_size=32",
        "eval.num_samples=20", "eval.batch_size=20", "sampler.steps=2"]
SWEEP = ["interpolant=vp,linear", "sampler=ode,sde"]


def run_sweep(out: Path, *, naive: bool, train_steps: int, timeout: float = 1200) -> dict:
    """One ``-m`` sweep in ``out``; returns wall time, rows, trainings (rows not reusing a checkpoint) and
    checkpoint directories."""
    from ablate.results import read_results

    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    where = ([f"out_dir={out}/job${{hydra:job.num}}", "reuse=false", f"hydra.sweep.dir={out}/multirun"]
             if naive else [f"out_dir={out}"])
    cmd = [sys.executable, "-m", "ablate.run", "-m", *SWEEP, *where, f"results={results}", *FAST,
           f"trainer.steps={train_steps}"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=common.ROOT)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"sweep failed (exit {r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
    df = read_results(results)
    ckpts = sorted({p.parent for p in out.glob("**/checkpoints/*/final.pt")})
    shown = " ".join(cmd[4:]).replace(str(out), "<tmp>")  # no path of this machine in committed results
    return dict(command="python -m ablate.run -m " + shown, wall_s=wall, rows=len(df),
                ok_rows=int((df["status"] == "ok").sum()),
                trainings=int((~df["reused_checkpoint"].astype(bool)).sum()),
                distinct_train_keys=int(df["train_key"].nunique()), checkpoint_dirs=len(ckpts),
                train_wall_s=float(df.loc[~df["reused_checkpoint"].astype(bool), "train_wall_s"].sum()))


def run(quick: bool = True, train_steps: int | None = None, workdir: str | None = None) -> dict:
    """Reuse sweep vs naive sweep (quick: 100 training steps of the micro model per training, full: 1000)."""
    steps = train_steps or (100 if quick else 1000)
    load0 = common.loadavg()
    with tempfile.TemporaryDirectory(prefix="ablate-bench-sweep-", dir=workdir) as tmp:
        reuse = run_sweep(Path(tmp) / "reuse", naive=False, train_steps=steps)
        naive = run_sweep(Path(tmp) / "naive", naive=True, train_steps=steps)
    return dict(sweep=" ".join(SWEEP), naive_count=4, train_steps=steps, reuse=reuse, naive=naive,
                wall_ratio_naive_over_reuse=naive["wall_s"] / reuse["wall_s"],
                contention=common.contention(load0, common.loadavg()))


def markdown(rep: dict) -> list[str]:
    r, n = rep["reuse"], rep["naive"]
    lines = [f"## Sweep `-m {rep['sweep']}` (micro model, {rep['train_steps']} training steps per training)", "",
             "| mode | rows | trainings (rows) | checkpoint dirs | wall s (whole sweep, 1 run) | train wall s |",
             "|---|---|---|---|---|---|",
             f"| reuse (default) | {r['ok_rows']}/{r['rows']} | **{r['trainings']}** | {r['checkpoint_dirs']} | "
             f"{r['wall_s']:.1f} | {r['train_wall_s']:.1f} |",
             f"| naive (reuse=false, one out_dir per job) | {n['ok_rows']}/{n['rows']} | {n['trainings']} | "
             f"{n['checkpoint_dirs']} | {n['wall_s']:.1f} | {n['train_wall_s']:.1f} |", "",
             f"Trainings launched: {r['trainings']} vs the naive count of {rep['naive_count']}; wall time naive / "
             f"reuse = {rep['wall_ratio_naive_over_reuse']:.2f} (one run each: process start-up and sampling "
             "are common to both; the saving grows with the training length).", ""]
    return lines
