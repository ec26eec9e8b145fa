"""Named studies: the rows of a paper table as override sets, run at paper scale or at CPU scale.

A study is ``experiments/<name>.yaml``::

    name, description, source, metric (metric_base the tables read, e.g. fid), order (lower | higher is better)
    plot: gflops | nfe | cfg (optional: which figure the study feeds)
    scales:
      cpu:   {overrides: [...], nfe: 50, note: ...}    # shared by every row at this scale
      paper: {overrides: [...], nfe: null, note: ...}  # nfe null: each row's own budget
    rows:
      - id: "4a"                                   # the paper's row id; the results store's `row` column
        setting: "velocity, linear, Heun ODE"      # human-readable
        overrides: [prediction=velocity, ...]      # the row's axis values, at every scale
        budget: {sampler: ode_heun, nfe: 250, cfg: 1.0, num_samples: 50000}   # the paper's evaluation
        paper: {fid50k: 34.8, source: "SiT Tables 4-5"}                        # published facts (may be empty)
        series: ...                                # optional: curve label in plots
        scales: {cpu: {overrides: [...], nfe: 8}, paper: {skip: "reason"}}   # optional, per scale
        note: ...

One run of a row = ``ablate.run`` with, in order (a later ``key=value`` replaces an earlier one with the same
key): the scale's overrides, the row's overrides, the sampler budget (``sampler=<name> sampler.solver=<solver>
sampler.steps=<n>`` with ``n`` chosen so the sampler spends exactly the NFE of the row at that scale: a Heun
step costs 2 NFE, an Euler-Maruyama step with the SiT mean last step 1, a DDPM step 1), the guidance scale, the
row's per-scale overrides, ``study=<name> row=<id> seed=<s>``, and the user's extra overrides.

CLI::

    python -m ablate.studies list
    python -m ablate.studies show sit_walk --scale paper          # one `python -m ablate.run ...` line per job
    python -m ablate.studies run sit_walk --scale cpu [--seeds 0,1,2] [--rows 0,4a] [--dry-run]
                                 [--results PATH] [--subprocess] [--redo] [key=value ...]

``run`` skips a (row, seed) already recorded with ``status=ok`` in the results store (``--redo`` reruns it),
so an interrupted study resumes where it stopped; training is shared through the checkpoint store anyway.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "EXPERIMENTS_DIR",
    "CONF_DIR",
    "SCALES",
    "Study",
    "StudyRow",
    "StudyError",
    "available_studies",
    "load_study",
    "steps_for_nfe",
    "row_overrides",
    "compose_row",
    "command",
    "run_study",
    "main",
]

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS_DIR = ROOT / "experiments"
CONF_DIR = ROOT / "conf"
SCALES = ("cpu", "paper")
ORDERS = ("lower", "higher")
# Network evaluations per step of each (sampler, solver); SDE and DDPM budgets are in steps = NFE.
NFE_PER_STEP = {("ode", "euler"): 1, ("ode", "heun"): 2, ("ode", "midpoint"): 2, ("ode", "rk4"): 4,
                ("sde", "em"): 1, ("ddpm", "ddpm"): 1, ("ddim", "ddim"): 1}


class StudyError(ValueError):
    """A malformed study file, an unknown study/scale/row, or an impossible budget."""


@dataclass
class StudyRow:
    id: str
    setting: str
    overrides: list[str]
    budget: dict[str, Any]
    paper: dict[str, Any] = field(default_factory=dict)
    series: str | None = None
    scales: dict[str, dict] = field(default_factory=dict)
    note: str | None = None

    def skip_reason(self, scale: str) -> str | None:
        return (self.scales.get(scale) or {}).get("skip")


@dataclass
class Study:
    name: str
    description: str
    source: str
    metric: str
    order: str
    scales: dict[str, dict]
    rows: list[StudyRow]
    plot: str | None = None
    path: Path | None = None

    def row(self, row_id: str) -> StudyRow:
        for r in self.rows:
            if r.id == str(row_id):
                return r
        raise StudyError(f"study {self.name!r} has no row {row_id!r}; rows: {[r.id for r in self.rows]}")


def available_studies(directory: str | Path = EXPERIMENTS_DIR) -> list[str]:
    return sorted(p.stem for p in Path(directory).glob("*.yaml"))


def load_study(name_or_path: str | Path, directory: str | Path = EXPERIMENTS_DIR) -> Study:
    """Load and check ``experiments/<name>.yaml`` (or a path to a study file)."""
    p = Path(name_or_path)
    if p.suffix != ".yaml":
        p = Path(directory) / f"{name_or_path}.yaml"
    if not p.exists():
        raise StudyError(f"unknown study {str(name_or_path)!r}; valid studies: {available_studies(directory)}")
    d = yaml.safe_load(p.read_text())
    for key in ("name", "description", "source", "metric", "scales", "rows"):
        if key not in d:
            raise StudyError(f"{p}: missing top-level key {key!r}")
    if set(d["scales"]) != set(SCALES):
        raise StudyError(f"{p}: scales must be exactly {list(SCALES)}, got {sorted(d['scales'])}")
    order = d.get("order", "lower")
    if order not in ORDERS:
        raise StudyError(f"{p}: order={order!r}; valid: {list(ORDERS)}")
    rows, seen = [], set()
    for i, r in enumerate(d["rows"]):
        missing = {"id", "setting", "overrides", "budget"} - set(r)
        if missing:
            raise StudyError(f"{p}: row {i} lacks {sorted(missing)}")
        rid = str(r["id"])
        if rid in seen:
            raise StudyError(f"{p}: duplicate row id {rid!r}")
        seen.add(rid)
        bad = set(r.get("scales") or {}) - set(SCALES)
        if bad:
            raise StudyError(f"{p}: row {rid}: unknown scale(s) {sorted(bad)}; valid: {list(SCALES)}")
        rows.append(StudyRow(id=rid, setting=r["setting"], overrides=list(r["overrides"]), budget=dict(r["budget"]),
                             paper=dict(r.get("paper") or {}), series=r.get("series"),
                             scales=dict(r.get("scales") or {}), note=r.get("note")))
    return Study(name=d["name"], description=d["description"], source=d["source"], metric=d["metric"],
                 order=order, scales=d["scales"], rows=rows, plot=d.get("plot"), path=p)


def _split_sampler(name: str) -> tuple[str, str]:
    """``ode_heun`` -> (ode, heun); ``sde_em`` -> (sde, em); ``ddpm`` -> (ddpm, ddpm)."""
    kind, _, solver = name.partition("_")
    return kind, solver or kind


def steps_for_nfe(sampler: str, nfe: int) -> int:
    """Solver steps that spend exactly ``nfe`` network evaluations per image (without guidance).

    Heun ODE: 2 NFE per step (the SiT paper's "250 NFE" is 125 steps); Euler-Maruyama SDE: ``steps`` includes
    the mean last step, one evaluation each (250 steps = 250 NFE); DDPM/DDIM: one evaluation per step.
    """
    key = _split_sampler(sampler)
    if key not in NFE_PER_STEP:
        raise StudyError(f"budget sampler={sampler!r} is not known; valid: "
                         f"{sorted(k if k == s else f'{k}_{s}' for k, s in NFE_PER_STEP)}")
    per = NFE_PER_STEP[key]
    if int(nfe) != nfe or nfe < per or nfe % per:
        raise StudyError(f"NFE {nfe!r} is not a positive multiple of {per} (the NFE per step of {sampler})")
    return int(nfe) // per


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _merge(*lists: list[str]) -> list[str]:
    """Concatenate override lists; a later ``key=value`` replaces an earlier one for the same key (Hydra refuses
    two values for one key), keeping the position of the first occurrence."""
    out: dict[str, str] = {}
    for lst in lists:
        for o in lst:
            k = _key(o)
            if k in out and out[k].startswith("+") and not o.startswith("+"):
                o = "+" + o  # a key a previous list appended with '+' is still new to the defaults
            out[k] = o
    return list(out.values())


def row_nfe(study: Study, row: StudyRow, scale: str) -> int:
    """The NFE budget of ``row`` at ``scale``: the row's own per-scale nfe, else the scale's, else the paper's."""
    for src in ((row.scales.get(scale) or {}).get("nfe"), study.scales[scale].get("nfe"), row.budget.get("nfe")):
        if src is not None:
            return int(src)
    raise StudyError(f"study {study.name}, row {row.id}: no NFE budget at scale {scale}")


def row_overrides(study: Study, row: StudyRow | str, scale: str, seed: int = 0,
                  extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The ``ablate.run`` overrides of one row at one scale and seed (see the module docstring for the order)."""
    if scale not in SCALES:
        raise StudyError(f"scale={scale!r} is not valid; valid: {list(SCALES)}")
    row = study.row(row) if isinstance(row, str) else row
    kind, solver = _split_sampler(row.budget["sampler"])
    nfe = row_nfe(study, row, scale)
    sampler = [f"sampler={kind}", f"sampler.steps={steps_for_nfe(row.budget['sampler'], nfe)}"]
    if kind in ("ode", "sde"):
        sampler.insert(1, f"sampler.solver={solver}")
    cfg_scale = float(row.budget.get("cfg", 1.0))
    guidance = ["guidance=none"] if cfg_scale == 1.0 else ["guidance=cfg", f"guidance.scale={cfg_scale:g}"]
    tags = [f"study={study.name}", f"row='{row.id}'", f"seed={int(seed)}"]
    per_scale = list((row.scales.get(scale) or {}).get("overrides", []))
    return _merge(list(study.scales[scale].get("overrides", [])), row.overrides, sampler, guidance, per_scale,
                  tags, list(extra))


def compose_row(study: Study, row: StudyRow | str, scale: str, seed: int = 0, extra=(), conf_dir=CONF_DIR):
    """The composed Hydra config of one row (no run)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            return compose(config_name="config", overrides=row_overrides(study, row, scale, seed, extra))
    finally:
        GlobalHydra.instance().clear()


def command(overrides: list[str]) -> str:
    """The shell command of one run (quoted for a POSIX shell): one line per job for a scheduler or
    ``xargs``/``parallel`` at paper scale."""
    def q(o: str) -> str:  # row='4a' reads better as "row='4a'" than shlex's 'row='"'"'4a'"'"''
        return f'"{o}"' if re.fullmatch(r"[\w.=+/'-]+", o) and "'" in o else shlex.quote(o)

    return "python -m ablate.run " + " ".join(q(o) for o in overrides)


def _done(results: Path, study: str, row: str, seed: int) -> bool:
    from .results import read_results

    df = read_results(results)
    if df.empty or "row" not in df:
        return False
    sel = (df["study"] == study) & (df["row"].astype(str) == row) & (df["seed"] == seed) & (df["status"] == "ok")
    return bool(sel.any())


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s)


def run_study(name: str, scale: str = "cpu", seeds=(0,), rows=None, extra=(), results: str | None = None,
              dry_run: bool = False, subprocess_mode: bool = False, redo: bool = False, echo=print) -> list[dict]:
    """Run every (row, seed) of a study at a scale, one ``ablate.run`` each; returns one status dict per job.

    ``results``: the results store (default: the config's ``${out_dir}/results.jsonl``). A failing row is
    recorded in the store with ``status=failed`` (as in a Hydra multirun) and the others still run.
    """
    study = load_study(name)
    chosen = study.rows if rows is None else [study.row(r) for r in rows]
    extra = list(extra) + ([f"results={results}"] if results else [])
    jobs = []
    for row in chosen:
        reason = row.skip_reason(scale)
        for seed in seeds:
            ov = row_overrides(study, row, scale, seed, extra)
            job = {"row": row.id, "seed": seed, "overrides": ov}
            if reason:
                job["status"] = f"skipped ({reason})"
            jobs.append(job)
    for job in jobs:
        head = f"[study {study.name}/{scale}] row {job['row']} seed {job['seed']}"
        if "status" in job:
            echo(f"{head}: {job['status']}")
            continue
        cfg = compose_row(study, job["row"], scale, job["seed"], extra)
        if dry_run:
            job["status"] = "dry-run"
            echo(f"{head}: {command(job['overrides'])}")
            continue
        if not redo and _done(Path(cfg.results), study.name, job["row"], job["seed"]):
            job["status"] = "done before"
            echo(f"{head}: already in {cfg.results} (use --redo to run again)")
            continue
        echo(f"{head}: running")
        t0 = time.time()
        job_dir = Path(cfg.out_dir) / "studies" / study.name / scale / f"{_safe(job['row'])}-seed{job['seed']}"
        if subprocess_mode:
            over = job["overrides"] + [f"hydra.run.dir={job_dir}"]
            rc = subprocess.run([sys.executable, "-m", "ablate.run", *over], cwd=ROOT).returncode
            job["status"] = "ok" if rc == 0 else f"failed (exit {rc})"
        else:
            job["status"] = _run_in_process(cfg, job_dir)
        job["wall_s"] = time.time() - t0
        echo(f"{head}: {job['status']} in {job['wall_s']:.0f} s")
    return jobs


def _run_in_process(cfg, job_dir: Path) -> str:
    from .checkpointing import TrainingInterrupted
    from .run import _record_failure, finish_wandb, run

    try:
        run(cfg, job_dir=job_dir)
        return "ok"
    except TrainingInterrupted:
        raise  # the process is being stopped (SIGTERM/SIGUSR2): stop the study; rerunning it resumes the row
    except Exception as e:  # one failing row must not stop the study: record it and go on
        _record_failure(cfg, e)
        return f"failed ({type(e).__name__}: {e})"
    finally:
        finish_wandb()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ablate.studies", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the available studies")
    for cmd in ("show", "run"):
        p = sub.add_parser(cmd)
        p.add_argument("study")
        p.add_argument("--scale", choices=SCALES, default="cpu")
        p.add_argument("--seeds", default="0", help="comma-separated training seeds, e.g. 0,1,2")
        p.add_argument("--rows", default=None, help="comma-separated row ids (default: all)")
        if cmd == "run":
            p.add_argument("--results", default=None, help="results store (default: ${out_dir}/results.jsonl)")
            p.add_argument("--dry-run", action="store_true", help="print each row's command, run nothing")
            p.add_argument("--subprocess", action="store_true", help="one `python -m ablate.run` process per row")
            p.add_argument("--redo", action="store_true", help="rerun rows already recorded as ok")
    a, extra = ap.parse_known_args(argv)
    bad = [x for x in extra if x.startswith("-") or "=" not in x]
    if bad:
        ap.error(f"unrecognized arguments {bad}; extra ablate.run overrides look like key=value")
    a.extra = extra
    if a.cmd == "list":
        for n in available_studies():
            s = load_study(n)
            print(f"{n:12s} {len(s.rows):3d} rows  {s.source}")
        return 0
    seeds = [int(s) for s in a.seeds.split(",")]
    rows = a.rows.split(",") if a.rows else None
    if a.cmd == "show":
        study = load_study(a.study)
        for r in study.rows if rows is None else [study.row(x) for x in rows]:
            for s in seeds:
                skip = r.skip_reason(a.scale)
                print(f"# row {r.id} seed {s}: skipped at {a.scale} scale: {skip}" if skip else
                      command(row_overrides(study, r, a.scale, s, a.extra)))
        return 0
    jobs = run_study(a.study, a.scale, seeds, rows, a.extra, a.results, a.dry_run, a.subprocess, a.redo)
    failed = [j for j in jobs if str(j.get("status", "")).startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
