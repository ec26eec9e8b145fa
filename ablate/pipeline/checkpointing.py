"""Checkpoint I/O that never leaves a half-written file, and the per-training-config checkpoint store.

Checkpoints are written to a temporary file in the same directory, fsynced, then renamed over the target
(``os.replace`` is atomic on POSIX), so a ``kill -9`` at any moment leaves either the old or the new file.
Loading always uses ``weights_only=True``; a truncated or foreign file gives a clear error.
"""

from __future__ import annotations

import fcntl
import os
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

__all__ = ["AtomicCheckpointIO", "atomic_torch_save", "load_checkpoint", "CheckpointError", "file_lock",
           "TrainingInterrupted", "SaveOnSignal"]


class CheckpointError(RuntimeError):
    pass


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """torch.load with weights_only=True and a clear error for truncated or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, pickle with foreign classes, ...
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r} ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            "it is truncated, not a torch checkpoint, or holds objects other than tensors and plain containers"
        ) from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {type(obj).__name__}, expected a dict")
    return obj


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning CheckpointIO: atomic writes (temporary file + rename), weights_only loads."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return load_checkpoint(path, map_location=map_location or "cpu")


@contextmanager
def file_lock(path: str | os.PathLike):
    """An exclusive advisory lock (flock) held for the duration of the block; released if the process dies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class TrainingInterrupted(RuntimeError):
    """Training stopped on a signal after saving ``last.ckpt``; rerunning the same command resumes it."""


class SaveOnSignal(Callback):
    """Save ``last.ckpt`` at the end of the current step when the job is told it will be stopped, then stop.

    Clusters warn before they kill: submitit's ``--signal=USR2@300`` five minutes before the time limit,
    SLURM's SIGTERM on preemption or at the limit (``KillWait`` seconds before SIGKILL). Without this, a
    requeued job resumes from the last periodic checkpoint (``trainer.ckpt_every`` steps back). The handler
    only sets a flag; at the next step end the ranks agree (any rank signalled -> all save, one collective
    ``trainer.save_checkpoint``), training stops, and the handler that was installed before (submitit's
    requeue) is then called on the ranks that got the signal; the run ends with :class:`TrainingInterrupted`
    (a non-zero exit, no result row). ``stopped_at``: the step saved, or ``None``.
    """

    SIGNALS = ("SIGUSR2", "SIGTERM")

    def __init__(self, path):
        self.path, self.received, self.stopped_at, self._previous = Path(path), None, None, {}

    def _handler(self, signum, frame):
        if self.received is None:
            self.received = signum
            print(f"[ablate] received {signal.Signals(signum).name}: saving {self.path.name} at the end of "
                  f"this step", flush=True)

    def on_train_start(self, trainer, pl_module):
        import threading

        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for name in self.SIGNALS:
            sig = getattr(signal, name)
            self._previous[sig] = signal.signal(sig, self._handler)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        stop = self.received is not None
        if trainer.world_size > 1:  # any rank signalled -> every rank saves (a collective) and stops
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop or self.stopped_at is not None:
            return
        trainer.save_checkpoint(self.path)
        self.stopped_at = trainer.global_step
        trainer.should_stop = True
        print(f"[ablate] saved {self.path} at step {self.stopped_at}; rerun the same command to resume",
              flush=True)
        prev = self._previous.get(self.received) if self.received is not None else None
        self._restore()
        # e.g. submitit's requeue (rank 0 requeues and exits). Not Lightning's own SIGTERM handler: it would
        # end the fit with SystemExit(0), a stopped job that looks successful; stopping is done above.
        if callable(prev) and not type(prev).__module__.startswith("lightning"):
            prev(self.received, None)

    def _restore(self):
        for sig, prev in self._previous.items():
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        self._previous = {}

    def on_train_end(self, trainer, pl_module):
        if self.stopped_at is not None:  # ddp_fork/spawn: the main process learns it through the metrics
            trainer.callback_metrics["ablate/interrupted_at"] = torch.tensor(float(self.stopped_at))
        if self._previous:
            self._restore()
