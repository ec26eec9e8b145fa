"""What an offline W&B run logged, read from its ``run-<id>.wandb`` file: no network, no W&B server.

W&B writes each run as a transaction log of protobuf ``Record`` messages (``wandb.proto.wandb_internal_pb2``) in
LevelDB-log framing: a 7-byte file header (``:W&B``, a magic, a version), then 32 KiB blocks of records, each with
a 7-byte header (CRC-32 of type and payload, length, type: full, first, middle, last). wandb 0.31 no longer ships
a Python reader for it (``wandb.sdk.internal.datastore`` is gone), hence this one, used by the dashboard tests to
check every key a dashboard references against what a real run logged.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from pathlib import Path
from typing import Any

__all__ = ["logged_keys", "history", "flatten"]


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1} (W&B's dotted names for nested config values)."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


_BLOCK, _HEADER = 32768, 7  # W&B's run file: LevelDB-log framing (32 KiB blocks, 7-byte record headers)


def _records(path: Path):
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file (no ':W&B' magic)")
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # block trailer padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        if kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        chunk = data[pos + _HEADER:pos + _HEADER + length]
        if zlib.crc32(bytes([kind]) + chunk) & 0xFFFFFFFF != crc:
            raise ValueError(f"{path}: corrupt record at byte {pos}")
        pos += _HEADER + length
        if kind == 1:  # full
            yield chunk
        elif kind == 2:  # first
            pending = chunk
        elif kind == 3:  # middle
            pending += chunk
        elif kind == 4:  # last
            yield pending + chunk
            pending = b""


def logged_keys(run_dir: str | Path, timeout_s: float = 30.0) -> dict[str, set[str]]:
    """{'config', 'summary', 'history'} -> the keys an offline run logged, read from its ``run-*.wandb`` file.

    Nested config values are listed by their dotted paths too (``config.model.depth``). W&B's writer may still be
    flushing the file after ``wandb.finish()`` returns: this waits up to ``timeout_s`` for the run's exit record
    and raises ``TimeoutError`` if the run never finished.
    """
    files = sorted(Path(run_dir).glob("run-*.wandb"))
    if len(files) != 1:
        raise FileNotFoundError(f"expected one run-*.wandb file in {run_dir}, found {len(files)}")
    deadline = time.monotonic() + timeout_s
    while True:
        out, finished = _read_keys(files[0])
        if finished:
            return out
        if time.monotonic() > deadline:
            raise TimeoutError(f"{files[0]} has no exit record after {timeout_s:g} s: the run is still being "
                               "written or it crashed")
        time.sleep(0.2)


def history(run_dir: str | Path, keys: list[str] | tuple[str, ...]) -> list[dict[str, Any]]:
    """The history rows of an offline run that hold any of ``keys``: ``[{'_step': ..., key: value, ...}]`` in
    logging order (values JSON-decoded; the run need not have finished)."""
    from wandb.proto import wandb_internal_pb2 as pb

    files = sorted(Path(run_dir).glob("run-*.wandb"))
    if len(files) != 1:
        raise FileNotFoundError(f"expected one run-*.wandb file in {run_dir}, found {len(files)}")
    rows = []
    for blob in _records(files[0]):
        rec = pb.Record()
        rec.ParseFromString(blob)
        if rec.WhichOneof("record_type") != "history":
            continue
        row = {}
        for it in rec.history.item:
            key = it.nested_key[0] if len(it.nested_key) else it.key
            if key in keys or key == "_step":
                row[key] = json.loads(it.value_json)
        if any(k in row for k in keys):
            rows.append(row)
    return rows


def _read_keys(path: Path) -> tuple[dict[str, set[str]], bool]:
    from wandb.proto import wandb_internal_pb2 as pb

    out: dict[str, set[str]] = {"config": set(), "summary": set(), "history": set()}
    finished = False
    for blob in _records(path):
        rec = pb.Record()
        rec.ParseFromString(blob)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            items, dest = rec.run.config.update, out["config"]
        elif kind == "config":
            items, dest = rec.config.update, out["config"]
        elif kind == "history":
            items, dest = rec.history.item, out["history"]
        elif kind == "summary":
            items, dest = rec.summary.update, out["summary"]
        else:
            finished |= kind == "exit"
            continue
        for it in items:
            key = it.nested_key[0] if len(it.nested_key) else it.key
            dest.add(key)
            if dest is out["config"] and key != "_wandb":  # nested config: "config.model.depth" and so on
                dest.update(p for p in flatten(json.loads(it.value_json), key) if p != key)
    return out, finished
