"""Studies: paper tables as Hydra experiment configs, their runs, tables, statistics, verdicts and dashboards.

``catalog`` (what a study is and how a row runs), ``runner`` (a study as one multirun; compare; commit),
``tables`` (rows joined to the paper's numbers), ``dashboard`` (W&B workspaces); see README.md in this folder.
"""

from .catalog import (  # noqa: F401
    CONF_DIR,
    EXPERIMENTS_DIR,
    SCALES,
    Study,
    StudyError,
    StudyRow,
    available_studies,
    compose_row,
    load_study,
    row_overrides,
)
