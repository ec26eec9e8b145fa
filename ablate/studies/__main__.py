"""``python -m ablate.studies``: list, show, run, compare and commit studies; build their W&B dashboards.

    python -m ablate.studies list
    python -m ablate.studies show sit_walk [--scale paper] [--seeds 0,1,2]   # the runnable command of each row
    python -m ablate.studies run sit_walk [--scale cpu] [--seeds 0,1,2] [--rows 0,4a] [--dry-run] [key=value ...]
    python -m ablate.studies compare sit_walk          # the run store's rows against the committed ones
    python -m ablate.studies commit sit_walk           # copy the study's rows into results/<scale>/results.jsonl
    python -m ablate.studies dashboard --study sit_walk --entity E --project P [--dry-run]

``run`` is one Hydra multirun into its own store (``--store``, default ``runs/studies``); extra ``key=value``
arguments go to ``ablate.run`` (e.g. ``hydra/launcher=joblib_cpu`` to run rows in parallel). After the run it
prints ours-now against the committed rows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .catalog import PAPER_DATA, SCALES, available_studies, command, load_study, row_overrides
from .runner import DEFAULT_STORE_DIR, commit, committed_store, compare, run_study


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["dashboard"]:
        from .dashboard import main as dashboard

        return dashboard(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m ablate.studies", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the available studies")
    sub.add_parser("dashboard", help="a study's W&B workspace (see --help of that command)")
    for cmd in ("show", "run", "compare", "commit"):
        p = sub.add_parser(cmd)
        p.add_argument("study")
        p.add_argument("--scale", choices=SCALES, default="cpu")
        p.add_argument("--store", default=str(DEFAULT_STORE_DIR), help="run store folder (default runs/studies)")
        p.add_argument("--committed", default=None, help="committed store (default results/<scale>/results.jsonl)")
        if cmd in ("show", "run"):
            p.add_argument("--seeds", default="0", help="comma-separated training seeds, e.g. 0,1,2")
            p.add_argument("--rows", default=None, help="comma-separated row ids (default: all)")
        if cmd == "run":
            p.add_argument("--dry-run", action="store_true", help="print the multirun command, run nothing")
    a, extra = ap.parse_known_args(argv)
    bad = [x for x in extra if x.startswith("-") or "=" not in x]
    if bad:
        ap.error(f"unrecognized arguments {bad}; extra ablate.run overrides look like key=value")
    if a.cmd == "list":
        for n in available_studies():
            s = load_study(n)
            print(f"{n:12s} {len(s.rows):3d} rows  {len(s.claims):2d} claims  {s.source}")
        return 0
    committed = Path(a.committed) if a.committed else committed_store(a.scale)
    store = Path(a.store) / "results.jsonl"
    if a.cmd == "compare":
        compare(a.study, store, committed)
        return 0
    if a.cmd == "commit":
        return 0 if commit(a.study, store, committed) >= 0 else 1
    seeds = [int(s) for s in a.seeds.split(",")]
    rows = a.rows.split(",") if a.rows else None
    if a.cmd == "show":
        study = load_study(a.study)
        data = list(PAPER_DATA) if a.scale == "paper" else []
        if data:
            print(f"# {study.name} at paper scale: replace the placeholders (data.vae: a local diffusers VAE folder "
                  "or an HF-cache id, default 'ema'); add trainer.devices / hydra/launcher=submitit_slurm_gpu to "
                  "scale out")
        for r in study.rows if rows is None else [study.row(x) for x in rows]:
            for s in seeds:
                skip = r.skip_reason(a.scale)
                print(f"# row {r.id} seed {s}: skipped at {a.scale} scale: {skip}" if skip else
                      command(row_overrides(study, r, a.scale, s, [*data, *extra])))
        return 0
    rc = run_study(a.study, a.scale, seeds, rows, extra, out_dir=a.store, dry_run=a.dry_run)
    if not a.dry_run:
        compare(a.study, store, committed)
    return rc


if __name__ == "__main__":
    sys.exit(main())
