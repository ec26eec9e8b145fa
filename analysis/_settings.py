"""Settings shared by the analysis notebooks, from the environment (set by `make tables`).

ABLATE_RESULTS   results store (default results/cpu/results.jsonl)
ABLATE_SCALE     cpu | paper: which scale's settings the tables describe (default cpu)
ABLATE_TABLES_OUT  where results/README.md, tables/ and plots/ go (default results)
WANDB_PROJECT    entity/project: read runs through the W&B public API instead of the store
WANDB_EXPORT     a JSON export of a W&B project (ablate.studies.wandb_import.export_wandb) to read instead of the store
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("ABLATE_RESULTS") or ROOT / "results" / "cpu" / "results.jsonl")
SCALE = os.environ.get("ABLATE_SCALE") or "cpu"
OUT = Path(os.environ.get("ABLATE_TABLES_OUT") or ROOT / "results")
WANDB_PROJECT = os.environ.get("WANDB_PROJECT") or None
WANDB_EXPORT = os.environ.get("WANDB_EXPORT") or None


def source() -> str:
    """How the page names its rows' origin (relative paths keep the output the same on every clone)."""
    if WANDB_PROJECT:
        return f"W&B project `{WANDB_PROJECT}`"
    if WANDB_EXPORT:
        return f"W&B export `{Path(WANDB_EXPORT).name}`"
    try:
        return f"`{RESULTS.resolve().relative_to(ROOT)}`"
    except ValueError:
        return f"`{RESULTS.name}`"
