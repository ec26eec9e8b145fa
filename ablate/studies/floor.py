"""The FID floor of a study's budget: what real images score with the same sample count and extractor.

A model that sampled the data distribution exactly would still get this FID from a finite sample; differences
between rows are read against it. Computed for the embedded datasets only (an Inception reference set needs
weights that are not available offline).
"""

from __future__ import annotations

import pandas as pd

from .catalog import Study

__all__ = ["FLOOR_SEEDS", "study_floor"]

FLOOR_SEEDS = (0, 1, 2, 3, 4)


def study_floor(study: Study, table: pd.DataFrame) -> str | None:
    """``"0.42 [0.18, 0.66] (5 draws of 500 training images vs digits/test)"`` for the study's budget, or None
    when it has no run on an embedded dataset."""
    from ..data import DATASETS
    from ..metrics.fid import fid_floor
    from .statistics import cell_interval

    ran = table[table["n"] > 0]
    if ran.empty:
        return None
    sizes = sorted({int(n) for n in ran["num_samples"].dropna()})
    data = study.scales.get("cpu", {}).get("data", "digits")
    if data not in DATASETS or len(sizes) != 1:
        return None
    values = fid_floor(data, sizes[0], FLOOR_SEEDS)
    cell = cell_interval(pd.DataFrame({"value": values, "seed": [0] * len(values), "eval_seed": list(FLOOR_SEEDS)}),
                         train="seed", eval="eval_seed")
    return (f"{cell.estimate:.2f} [{cell.lo:.2f}, {cell.hi:.2f}] ({len(values)} draws of {sizes[0]} training "
            f"images vs {data}/test)")
