"""The studies: paper tables as Hydra experiment configs, and how to run, compare and commit them.

A study has two parts:

- ``experiments/<study>.yaml``: what it asks (``description``, ``source``, ``metric``, ``order``, ``plot``),
  each scale's note, its ``rows`` in table order, and the paper's ``claims`` as explicit comparisons
  (:mod:`ablate.studies.claims`);
- ``conf/experiment/<study>/<row>.yaml``: one paper row, an ordinary Hydra experiment config
  (``# @package _global_``: group overrides, ``study``, ``row``, the row's ``setting``, the paper's published
  numbers and evaluation budget under ``paper``, per-scale settings under ``at_cpu`` / ``at_paper``). It runs
  with the ordinary CLI: ``python -m ablate.run +experiment=sit_walk/4a seed=1`` (CPU scale), with ``scale=paper``
  at the paper's budget.

A whole study is one Hydra multirun over its rows and seeds (``python -m ablate.run -m
+experiment=sit_walk/0,sit_walk/1,... seed=0,1,2``), so the joblib and submitit launchers run studies in parallel;
``python -m ablate.studies run`` writes that command for you, runs it into a run store of its own
(``runs/studies/results.jsonl``, not a tracked file), and compares each row with the committed one
(``results/<scale>/results.jsonl``). ``python -m ablate.studies commit`` is the explicit step that copies a
study's rows into the committed store.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ROOT", "EXPERIMENTS_DIR", "CONF_DIR", "SCALES", "PAPER_DATA", "Study", "StudyRow", "StudyError",
           "available_studies", "load_study", "row_overrides", "compose_row", "command", "study_overrides"]

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS_DIR = ROOT / "experiments"
CONF_DIR = ROOT / "conf"
SCALES = ("cpu", "paper")
ORDERS = ("lower", "higher")
# What a paper-scale row needs from the user (the data has no default), printed as named placeholders.
PAPER_DATA = ("data.root=LATENTS_FILE", "eval.reference=ADM_REFERENCE_BATCH")


class StudyError(ValueError):
    """A malformed study file, an unknown study/scale/row."""


@dataclass
class StudyRow:
    """One paper row: ``id`` (the paper's, the results store's ``row``), its config file ``stem``
    (``conf/experiment/<study>/<stem>.yaml``), ``setting``, the paper's published numbers and budget, the plot
    ``series``, per-scale settings ``at`` (``{"cpu": {...}, "paper": {...}}``)."""

    id: str
    stem: str
    study: str
    setting: str
    paper: dict[str, Any] = field(default_factory=dict)
    series: str | None = None
    at: dict[str, dict] = field(default_factory=dict)

    @property
    def experiment(self) -> str:
        return f"{self.study}/{self.stem}"

    def skip_reason(self, scale: str) -> str | None:
        return (self.at.get(scale) or {}).get("skip")


@dataclass
class Study:
    name: str
    description: str
    source: str
    metric: str
    order: str
    scales: dict[str, dict]
    rows: list[StudyRow]
    claims: list[dict] = field(default_factory=list)
    plot: str | None = None
    context: str | None = None  # hand-written reading context (what the scale is); no result numbers
    path: Path | None = None

    def row(self, row_id: str) -> StudyRow:
        for r in self.rows:
            if r.id == str(row_id) or r.stem == str(row_id):
                return r
        raise StudyError(f"study {self.name!r} has no row {row_id!r}; rows: {[r.id for r in self.rows]}")


def available_studies(directory: str | Path = EXPERIMENTS_DIR) -> list[str]:
    return sorted(p.stem for p in Path(directory).glob("*.yaml"))


def _row(study: str, stem: str, conf_dir: Path) -> StudyRow:
    p = conf_dir / "experiment" / study / f"{stem}.yaml"
    if not p.exists():
        raise StudyError(f"study {study!r} lists row {stem!r}, but {p.relative_to(conf_dir.parent)} does not exist")
    d = yaml.safe_load(p.read_text()) or {}
    for key in ("study", "row", "setting", "paper"):
        if key not in d:
            raise StudyError(f"{p}: missing key {key!r}")
    if d["study"] != study:
        raise StudyError(f"{p}: study={d['study']!r}, expected {study!r}")
    at = {s: dict(d.get(f"at_{s}") or {}) for s in SCALES}
    return StudyRow(id=str(d["row"]), stem=stem, study=study, setting=d["setting"], paper=dict(d["paper"]),
                    series=d.get("series"), at=at)


def load_study(name_or_path: str | Path, directory: str | Path = EXPERIMENTS_DIR, conf_dir: str | Path = CONF_DIR
               ) -> Study:
    """Load and check ``experiments/<name>.yaml`` and its rows' experiment configs."""
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
    rows = [_row(d["name"], str(stem), Path(conf_dir)) for stem in d["rows"]]
    ids = [r.id for r in rows]
    if len(set(ids)) != len(ids):
        raise StudyError(f"{p}: duplicate row ids {sorted({i for i in ids if ids.count(i) > 1})}")
    study = Study(name=d["name"], description=d["description"], source=d["source"], metric=d["metric"],
                  order=order, scales=d["scales"], rows=rows, claims=list(d.get("claims") or []),
                  plot=d.get("plot"), context=d.get("context"), path=p)
    for c in study.claims:  # every row a claim names exists
        for rid in _claim_rows(c):
            study.row(rid)
    return study


def _claim_rows(claim: dict) -> list[str]:
    rows = list(claim.get("rows") or [])
    for key in ("a", "b"):
        if key in claim:
            rows.append(claim[key])
    return [str(r) for r in rows]


def row_overrides(study: Study, row: StudyRow | str, scale: str, seed: int = 0,
                  extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The ``ablate.run`` overrides of one row at one scale and seed: the row's experiment config, the scale,
    the seed, then ``extra``."""
    if scale not in SCALES:
        raise StudyError(f"scale={scale!r} is not valid; valid: {list(SCALES)}")
    row = study.row(row) if isinstance(row, str) else row
    return [f"+experiment={row.experiment}", f"scale={scale}", f"seed={int(seed)}", *extra]


def study_overrides(study: Study, scale: str, seeds=(0,), rows=None, extra=()) -> tuple[list[str], list[StudyRow]]:
    """The overrides of the multirun that runs ``rows`` (default: all) x ``seeds`` at ``scale``, and the rows
    skipped at that scale (they have no analogue there)."""
    chosen = study.rows if rows is None else [study.row(r) for r in rows]
    skipped = [r for r in chosen if r.skip_reason(scale)]
    run = [r for r in chosen if not r.skip_reason(scale)]
    if not run:
        raise StudyError(f"no row of {study.name} runs at {scale} scale")
    return [f"+experiment={','.join(r.experiment for r in run)}", f"scale={scale}",
            f"seed={','.join(str(int(s)) for s in seeds)}", *extra], skipped


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


def command(overrides: list[str], multirun: bool = False) -> str:
    """The shell command of a run (quoted for a POSIX shell): one line per job for a scheduler."""
    def q(o: str) -> str:
        return o if re.fullmatch(r"[\w.=+/,:-]+", o) else shlex.quote(o)

    return "python -m ablate.run " + ("-m " if multirun else "") + " ".join(q(o) for o in overrides)
