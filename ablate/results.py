"""The local results store: an append-only JSON-lines file that concurrent sweep jobs can share.

Each evaluation appends one row per metric (all axes, metric name and value, GFLOPs, NFE, seeds, step, wall
time, versions, git commit). A row is serialised first and written with a single ``write`` under an exclusive
``flock`` on the file, so two processes never interleave or lose rows; a killed writer leaves at most a
truncated last line, which :func:`read_results` skips (and reports). Non-finite values are refused: no NaN ever
reaches the store or a table.

Reading: ``read_results(path) -> pandas.DataFrame`` (one row per metric value).
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import math
import os
import subprocess
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = ["append_rows", "read_results", "environment_info", "ResultsError"]


class ResultsError(ValueError):
    pass


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item") and callable(v.item):  # numpy / torch scalars
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        raise ResultsError(f"refusing to store a non-finite value {v!r}")
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def append_rows(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> int:
    """Append rows atomically (one locked write for all of them). Returns the number of rows written."""
    lines = []
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    for row in rows:
        row = dict(row)
        row.setdefault("timestamp", now)
        lines.append(json.dumps(_jsonable(row), sort_keys=True, allow_nan=False))
    if not lines:
        return 0
    data = ("\n".join(lines) + "\n").encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            # A previous writer killed mid-line leaves no trailing newline: start on a fresh line.
            size = os.fstat(fd).st_size
            if size:
                with open(path, "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        data = b"\n" + data
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return len(lines)


def read_results(path: str | os.PathLike, latest: bool = True):
    """All rows of a store as a pandas DataFrame (an empty frame when the file is absent).

    ``latest``: a point evaluated again (``redo=true``) appends new rows with the same ``point_key``, metric and
    label (study, row); keep only the last of each (the store itself is append-only). One measurement shown in two
    studies (the same point, labelled twice, see :func:`ablate.pipeline.runner.recorded_rows`) keeps both labels.
    ``df.attrs["superseded"]`` counts the rows left out. Rows without a ``point_key`` (failures, older stores) are
    all kept.
    """
    import pandas as pd

    path = Path(path)
    if not path.exists():
        return pd.DataFrame()
    rows, bad = [], 0
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                bad += 1
    if bad:
        warnings.warn(f"{path}: skipped {bad} truncated line(s) (a writer was killed mid-write)", stacklevel=2)
    df = pd.json_normalize(rows) if rows else pd.DataFrame()
    superseded = 0
    if latest and not df.empty and "point_key" in df:
        keyed = df["point_key"].notna()
        def text(col):  # None/NaN -> "" (astype(str) keeps missing values missing under pandas' string dtype)
            return df[col].map(lambda v: "" if v is None or v != v else str(v))

        ident = text("point_key")
        for col in ("metric", "study", "row"):
            if col in df:
                ident = ident + "|" + text(col)
        last = ~ident.duplicated(keep="last") | ~keyed
        superseded = int((~last).sum())
        df = df[last].reset_index(drop=True)
    df.attrs["superseded"] = superseded
    return df


def _git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()
    except Exception:
        return None


def environment_info() -> dict[str, Any]:
    """Versions and git commit recorded in every row."""
    import platform

    import torch

    import ablate

    info = {
        "ablate": ablate.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "git_commit": _git_commit(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
    }
    for mod in ("lightning", "torch_fidelity"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:
            info[mod] = None
    return info
