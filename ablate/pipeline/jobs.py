"""What a job needs around the work itself: its folder, its W&B run, its failure record, its launch checks.

Shared by ``python -m ablate.run``, ``python -m ablate.evaluate`` and the studies, so that each of them names
its folders, opens its logger and records a failure the same way.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from omegaconf import OmegaConf

__all__ = ["MAX_DIRNAME", "job_dirname", "job_dir", "is_multirun", "check_writable", "make_logger",
           "record_failure", "finish_wandb", "check_launch", "cli_overrides", "SweepSummary", "sweep_summary",
           "quiet_duplicate_logs", "tune_allocator"]

MAX_DIRNAME = 120  # well under the usual 255-byte limit on one path component


def job_dirname(override_dirname: str, max_len: int = MAX_DIRNAME) -> str:
    """A sweep job's directory name from its overrides (``hydra.sweep.subdir``): ``/`` (paths in values)
    becomes ``_``, and a name longer than ``max_len`` is cut and suffixed with a hash of the whole, so long
    override lists neither fail ("File name too long") nor collide."""
    name = override_dirname.replace("/", "_")
    if len(name) <= max_len:
        return name
    return f"{name[: max_len - 13]}-{hashlib.sha256(override_dirname.encode()).hexdigest()[:12]}"


if not OmegaConf.has_resolver("ablate_dirname"):
    OmegaConf.register_new_resolver("ablate_dirname", job_dirname)


M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc mallopt parameters (malloc.h)


def tune_allocator() -> str:
    """Keep freed memory in the heap instead of returning it to the system (glibc ``mallopt``).

    glibc serves allocations above its mmap threshold (128 KB by default, adapting up to 32 MB) with fresh
    ``mmap`` pages and trims the heap top after every large free, so every training step faults in and zeroes
    its large activations again. Raising the mmap threshold to its maximum and the trim threshold to 1 GB keeps
    those pages in the heap for the next step (measured: up to 15% on tiny-8 CPU training steps, what tcmalloc
    gave, with no system package). ``ABLATE_MALLOPT=0`` leaves the allocator alone. Returns what was done."""
    import ctypes
    import ctypes.util

    if os.environ.get("ABLATE_MALLOPT", "1") == "0":
        return "allocator: glibc defaults (ABLATE_MALLOPT=0)"
    if "tcmalloc" in os.environ.get("LD_PRELOAD", ""):
        return "allocator: tcmalloc (LD_PRELOAD)"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = all(libc.mallopt(p, v) == 1 for p, v in ((M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 1 << 30),
                                                       (M_TOP_PAD, 64 << 20)))
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return "allocator: system default (no glibc mallopt)"
    return "allocator: glibc, mmap threshold 32 MB, trim threshold 1 GB" if ok else "allocator: glibc (mallopt refused)"


def quiet_duplicate_logs() -> None:
    """Lightning prints through its own stream handler and, under Hydra, again through the root logger: keep the
    root's (console and the job's log file), drop Lightning's, so every line appears once."""
    import logging

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        log = logging.getLogger(name)
        if logging.getLogger().handlers:
            log.handlers = [h for h in log.handlers if type(h) is not logging.StreamHandler]


def job_dir() -> Path:
    """The Hydra job's output directory (the working directory outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:
        return Path.cwd()


def is_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:
        return False


def cli_overrides() -> list[str]:
    """The command-line overrides of this Hydra job (``[]`` outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:
        return []


def check_writable(path: Path) -> None:
    """Fail before training if the output directory cannot be written (read-only or full)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write_probe_{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as e:
        raise OSError(f"output directory {str(path)!r} is not writable ({e.strerror}); set out_dir=...") from e


def make_logger(exp, where: Path, name: str):
    """The W&B logger of a job (offline unless ``logger.mode=online``), or None with ``logger=none``."""
    if exp.logger.name == "none":
        return None
    from lightning.pytorch.loggers import WandbLogger

    group = exp.study or "adhoc"
    return WandbLogger(
        name=name, project=exp.logger.project, entity=exp.logger.entity, group=group, mode=exp.logger.mode,
        save_dir=str(where), config={**exp.wandb_config(), "study": group}, job_type="train+eval",
    )


def record_failure(results: str | Path, row: dict, err: BaseException) -> None:
    """Append one ``status=failed`` row naming the error (never raises: the failure being recorded wins)."""
    from ..results import append_rows, environment_info

    try:
        append_rows(results, [{**row, "status": "failed", "metric": None, "value": None,
                               "error": f"{type(err).__name__}: {err}"[:2000],
                               **{f"env_{k}": v for k, v in environment_info().items()}}])
    except Exception:
        pass


def finish_wandb() -> None:
    """Close the process's W&B run, if any (each job or study row gets its own run)."""
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except Exception:
        pass


def check_launch(trainer, multirun: bool | None = None) -> None:
    """Refuse ``trainer.strategy=ddp|fsdp`` over several devices inside a local ``-m`` sweep: Lightning would
    create the other ranks by re-executing the command line, i.e. relaunch the whole sweep in each. Processes
    created outside Lightning (torchrun, srun: one SLURM job per sweep point) are fine."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    from .build import ConfigError

    if str(trainer.strategy) not in ("ddp", "fsdp") or not (is_multirun() if multirun is None else multirun):
        return
    if TorchElasticEnvironment.detect() or SLURMEnvironment.detect():
        return
    if trainer.world > 1:
        raise ConfigError(
            f"trainer.strategy={trainer.strategy} with trainer.devices={trainer.devices} inside a local -m sweep "
            f"would relaunch the whole sweep in every rank (Lightning re-executes the command line). Use "
            f"trainer.strategy=ddp_spawn (or ddp_fork on CPU) for local sweeps, or one job per point on a "
            f"cluster (hydra/launcher=submitit_slurm_gpu), or torchrun for a single run.")


try:  # Hydra's callback base class (no-op defaults for the hooks this one does not use)
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object


class SweepSummary(_HydraCallback):
    """Hydra callback (``hydra.callbacks.summary`` in conf/config.yaml): at the end of a multirun, a table of its
    points (the axes that vary, the metric, NFE, GFLOPs per sample, wall time) and where each point's samples and
    checkpoint are. The points are the rows the sweep appended to the results store."""

    def __init__(self):
        self.offset = 0

    @staticmethod
    def _path(config) -> Path:
        return Path(str(config.results))

    def on_multirun_start(self, config, **kwargs) -> None:
        p = self._path(config)
        self.offset = p.stat().st_size if p.exists() else 0

    def on_multirun_end(self, config, **kwargs) -> None:
        try:
            print(sweep_summary(self._path(config), self.offset, str(config.out_dir)))
        except Exception as e:  # a summary must never turn a finished sweep into a failure
            print(f"[ablate] no sweep summary ({type(e).__name__}: {e})")


def sweep_summary(results: Path, offset: int, out_dir: str) -> str:
    """The summary table of the rows appended to ``results`` after byte ``offset``."""
    import json

    rows = []
    if results.exists():
        with open(results, "rb") as f:
            f.seek(offset)
            for line in f.read().decode().splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    ok = [r for r in rows if r.get("status") == "ok"]
    failed = [r for r in rows if r.get("status") == "failed"]
    head = (f"[ablate] sweep summary: {len(ok) + len(failed)} points ({len(ok)} ok, {len(failed)} failed); rows in "
            f"{results}")
    if not rows:
        return head
    axes = ("study", "row", "time", "prediction", "interpolant", "weighting", "sampler", "solver", "sde_coef",
            "guidance", "model", "data", "train_steps", "seed", "eval_seed", "num_samples")
    varied = [a for a in axes if len({json.dumps(r.get(a)) for r in rows}) > 1] or ["sampler_tag"]
    lines = [head, "", "| " + " | ".join([*varied, "metric", "value", "NFE", "GFLOPs/sample", "wall s", "samples",
                                            "checkpoint"]) + " |", "|" + "---|" * (len(varied) + 7)]
    for r in rows:
        cells = [str(r.get(a)) for a in varied]
        if r.get("status") == "ok":
            wall = (r.get("train_wall_s") or 0) * (not r.get("reused_checkpoint")) + (r.get("sample_wall_s") or 0)
            cells += [r["metric"], f"{r['value']:.4g}", f"{r.get('nfe', 0):g}", f"{r.get('sample_gflops', 0):.3g}",
                      f"{wall:.0f}", str(r.get("samples_png")),
                      f"{out_dir}/checkpoints/{r.get('train_key')}/final.pt"]
        else:
            cells += ["failed", "", "", "", "", "", str(r.get("error", ""))[:80]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
