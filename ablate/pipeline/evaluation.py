"""Evaluation: sample from the EMA weights, score the samples, write one row per metric and evaluation seed.

Per-image seeds: image i of evaluation seed s always starts from the same noise (and, for the SDE and DDPM
samplers, sees the same step noises), whatever the batch composition and whatever the sampler, so two samplers
on one checkpoint are compared on paired noise, and each evaluation seed is a fresh, reproducible draw of the
evaluation noise. Class labels are balanced and deterministic: image i has class i mod num_classes.

A row carries its full identity: every axis, the training key, step and batch, the evaluation budget (number
of samples, reference split, feature extractor, evaluation seed, counted NFE) and a ``point_key`` over all of
it, so that a rerun of the same point is recognised (skipped, or with ``redo=true`` superseding the old row)
and a table never averages different budgets. Metric names carry how they were produced:
``eval/fid500/ode_heun-nfe50-cfg1.0`` = FID over 500 samples with that sampler.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
from torch import Tensor

from .metric_names import EVAL_GLOB, EVAL_STEP_METRIC, GFLOPS, GLOBAL_STEP, NFE, SAMPLES, metric_key

__all__ = ["generate", "evaluate", "point_key", "budget_label", "InLoopEval", "save_grid", "checkpoint_weights",
           "GRID_MIN_WIDTH"]

GRID_MIN_WIDTH = 512  # saved grids are upscaled (nearest neighbour) to at least this many pixels across
LOSS_SUBSET_SEED = 20240117  # the fixed random training subset that estimates L_t (w_KL,eta)


@torch.no_grad()
def generate(
    model: Callable,
    sampler: Callable,
    *,
    num_samples: int,
    batch_size: int,
    shape: tuple[int, ...],
    num_classes: int,
    seed: int,
    device: torch.device | str = "cpu",
    progress: bool = False,
    start: int = 0,
    labels: str = "balanced",
) -> tuple[Tensor, Tensor, float]:
    """Generate ``num_samples`` images; returns (images [N, *shape] on CPU, labels [N], NFE per image).

    ``start``: the index of the first image, so that a rank generating images ``[start, start + N)`` of a
    sharded evaluation (``ablate.scale.distributed.shard_range``) gets the seeds and labels of those indices.
    ``labels``: ``balanced`` (image i has class i mod K) or ``uniform`` (independent uniform draws, DiT/SiT's
    ``sample_ddp.py``; a function of (seed, i), whatever the sharding).

    Guidance is the sampler's (it wraps the model); NFE is counted by the sampler's own wrapper.
    """
    from ..sampling import PerImageNoise

    index = torch.arange(start, start + num_samples)
    if num_classes <= 0:
        labels = torch.zeros(num_samples, dtype=torch.long)
    elif labels == "uniform":
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + 7)
        labels = torch.randint(0, num_classes, (start + num_samples,), generator=g)[start:]
    else:
        labels = index % num_classes
    out, nfe = [], []
    rng = range(0, num_samples, batch_size)
    if progress:
        from tqdm.auto import tqdm

        rng = tqdm(rng, desc="sampling", unit="batch")
    for b0 in rng:
        idx = range(b0, min(b0 + batch_size, num_samples))
        noise = PerImageNoise([seed * 1_000_003 + start + i for i in idx], shape, device=device)
        y = labels[idx.start : idx.stop].to(device) if num_classes > 0 else None
        res = sampler(model, noise.z, y, noise=noise)
        nfe.append(res.nfe)
        if not torch.isfinite(res.x).all():
            where = _first_bad_time(sampler, model, noise, y)
            raise FloatingPointError(
                f"sampler {sampler.tag} produced non-finite samples (first at {where}); "
                "check the endpoint setting (sample_eps) and the SDE coefficient near t = 0 and t = 1"
            )
        out.append(res.x.float().cpu())
    return torch.cat(out), labels, sum(nfe) / len(nfe)


def _first_bad_time(sampler, model, noise, y) -> str:
    """Replay a failed batch with its trajectory (same noise) and name the first state that is not finite."""
    try:
        res = sampler(model, noise.z, y, noise=noise, return_trajectory=True)
        times = res.times or []
        for k, x in enumerate(res.trajectory or []):
            if not torch.isfinite(x).all():
                if 0 < k < len(times):
                    return f"the step from t = {times[k - 1]:.6g} to t = {times[k]:.6g}"
                return f"state {k} of the trajectory"
    except Exception as e:  # the replay must never hide the original error
        return f"t unknown: the replay failed with {type(e).__name__}"
    return "t unknown"


def save_grid(images: Tensor, path: Path, n: int, min_width: int = GRID_MIN_WIDTH) -> Path:
    """A square-ish grid of the first ``n`` images, upscaled by an integer factor (nearest neighbour, so one
    data pixel stays a block of equal pixels) until it is at least ``min_width`` pixels wide."""
    from torchvision.utils import make_grid, save_image

    path.parent.mkdir(parents=True, exist_ok=True)
    imgs = images[:n].clamp(-1, 1) * 0.5 + 0.5
    grid = make_grid(imgs, nrow=max(1, int(round(n**0.5))), padding=1, pad_value=1.0)
    factor = max(1, -(-min_width // grid.shape[-1]))
    if factor > 1:
        grid = torch.nn.functional.interpolate(grid[None], scale_factor=factor, mode="nearest")[0]
    save_image(grid, path)
    return path


def estimate_loss_curve(exp, model, device):
    """L_t of the trained model (for w_KL,eta) on a fixed random subset of the *training* images (never the
    FID reference images), at the coefficient's ``loss_knots`` times."""
    from ..transport.diffusion import estimate_loss_curve as estimate

    coef = exp.sampler.diffusion
    x, y = exp.data.subset(coef.loss_samples, LOSS_SUBSET_SEED)
    g = torch.Generator(device=device).manual_seed(LOSS_SUBSET_SEED)
    with torch.no_grad():
        return estimate(model, x.to(device), exp.interpolant, exp.prediction,
                        y=y.to(device) if exp.data.num_classes > 0 else None, num_t=coef.loss_knots, generator=g)


def budget_label(exp, step: int) -> str:
    """A readable label of the training and evaluation budget of a row (what a table cell must not mix)."""
    ev = exp.eval
    where = f"adm {Path(ev.reference).name}" if ev.protocol == "adm" else f"{ev.reference_split}/{ev.extractor}"
    labels = "" if ev.labels == "balanced" else f" {ev.labels} labels"
    return (f"train {step}x{exp.trainer.batch_size} {exp.trainer.resolved_precision}; eval {ev.num_samples} "
            f"{where} {ev.resolved_precision(exp.trainer.on_gpu)}{labels}")


def point_key(exp, step: int, eval_seed: int) -> str:
    """The identity of one evaluation point: training key and step, sampler, evaluation budget and seed."""
    blob = json.dumps({"train_key": exp.train_key, "step": int(step), "sampler": exp.sampler.tag,
                       "sampler_args": exp.sampler.describe(), "eval": exp.eval.identity(),
                       "eval_precision": exp.eval.resolved_precision(exp.trainer.on_gpu),
                       "guidance": exp.guidance.describe(), "sample_eps": exp.sample_eps, "eval_seed": int(eval_seed),
                       "data": exp.data.describe()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _precision_wrapper(model: Callable, device: torch.device, precision: str) -> Callable:
    if precision != "bf16":
        return model

    def f(x, t, y=None):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return model(x, t, y).float()

    return f


def evaluate(exp, training, ema_state: dict, info: dict[str, Any], *, job_dir: Path, logger=None,
             step: int | None = None) -> dict[str, Any]:
    """Sample from the EMA weights for every evaluation seed, compute metrics and GFLOPs, append the rows, log
    them to W&B; returns ``{"rows": [...], "samples": <grid path>}``."""
    from ..metrics.flops import model_gflops, sample_gflops, train_gflops
    from ..results import append_rows, environment_info
    from ..scale.distributed import all_reduce_mean, rank_world, shard_range
    from .scoring import score_samples

    ev, tr = exp.eval, exp.trainer
    device = torch.device("cuda" if torch.cuda.is_available() and tr.accelerator != "cpu" else "cpu")
    net = copy.deepcopy(training.net)  # never clobber the weights being trained (in-loop evaluation)
    net.load_state_dict(ema_state)
    net.eval().to(device)
    precision = ev.resolved_precision(device.type == "cuda")
    model = _precision_wrapper(training.predict_fn(net), device, precision)
    sampler = exp.make_sampler(estimate_loss_curve(exp, model, device)) if exp.needs_loss_curve else exp.sampler
    tag, shape = sampler.tag, (exp.model.in_channels, exp.model.input_size, exp.model.input_size)
    steps_done = info.get("train_steps", tr.steps) if step is None else step
    images_seen = steps_done * tr.batch_size
    rank, world = rank_world()
    gf = model_gflops(net, conditional=exp.data.num_classes > 0)
    rows, grid = [], None
    for eval_seed in ev.seeds:
        t0 = time.time()
        share = shard_range(ev.num_samples, rank, world)  # under DDP each rank samples its share of the indices
        samples, labels, nfe = generate(model, sampler, num_samples=len(share), batch_size=ev.batch_size,
                                        shape=shape, num_classes=exp.data.num_classes, seed=eval_seed, device=device,
                                        start=share.start, labels=ev.labels)
        nfe = all_reduce_mean(nfe, len(share))
        sample_wall = time.time() - t0
        stem = "samples" if step is None else f"samples_step{int(steps_done):07d}"
        if rank == 0 and grid is None:
            grid = save_grid(exp.data.decode(samples[: ev.grid], device), job_dir / f"{stem}.png",
                             min(ev.grid, len(samples)))
        t1 = time.time()
        scores, npz = score_samples(exp, samples, labels, device, rank, world, job_dir / f"{stem}_seed{eval_seed}.npz")
        if scores is None:  # not rank 0 of a sharded evaluation: features sent, nothing to write
            continue
        gflops = {"model_gflops": gf, "sample_gflops": sample_gflops(gf, round(nfe), exp.guidance.active),
                  "train_gflops": train_gflops(gf, images_seen)}
        base = {
            **exp.axes(), "sampler_tag": tag, "status": "ok", "train_key": info.get("train_key"),
            "reused_checkpoint": info.get("reused"), "step": steps_done, "images_seen": images_seen, "nfe": nfe,
            "num_samples": ev.num_samples, "eval_seed": eval_seed, "reference_split": ev.reference_split,
            "sample_precision": precision, "extractor": scores.pop("extractor", None),
            "num_real": scores.pop("num_real", None), "budget": budget_label(exp, steps_done),
            "point_key": point_key(exp, steps_done, eval_seed), "train_wall_s": info.get("train_wall_s"),
            "sample_wall_s": sample_wall, "metric_wall_s": time.time() - t1,
            "samples_png": None if grid is None else _relative(grid, exp.out_dir),
            "samples_npz": None if npz is None else _relative(npz, exp.out_dir), "protocol": ev.protocol, **gflops,
            **{f"env_{k}": v for k, v in environment_info().items()},
        }
        scores.pop("num_fake", None)
        seed_rows = []
        for name, value in scores.items():
            value = float(value)
            if value != value or value in (float("inf"), float("-inf")):
                raise FloatingPointError(f"metric {name} is not finite ({value}); no row written")
            seed_rows.append({**base, "metric": metric_key(name, ev.num_samples, tag), "metric_base": name,
                              "value": value})
        append_rows(exp.results, seed_rows)
        rows += seed_rows
        for r in seed_rows:
            print(f"[ablate] {r['metric']} = {r['value']:.4f}  (eval seed {eval_seed}, NFE {nfe:g}, sample "
                  f"{gflops['sample_gflops']:.3g} GFLOPs/img, train {gflops['train_gflops']:.3g} GFLOPs)")
    if logger is not None and rows:
        _log_wandb(logger, rows, ev.num_samples, grid, tag, exp.results)
    return {"rows": rows, "samples": None if grid is None else str(grid)}


def _relative(path: Path, root: str) -> str:
    """A path relative to the output directory (rows never hold an absolute path of one machine)."""
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return Path(path).name


def _log_wandb(logger, rows: list[dict], num_samples: int, grid, tag: str, results) -> None:
    """The evaluation's metrics (mean over evaluation seeds), GFLOPs, NFE and sample grid to W&B."""
    first = rows[0]
    logged: dict[str, Any] = {}
    for name in {r["metric"] for r in rows}:
        vals = [r["value"] for r in rows if r["metric"] == name]
        base = next(r["metric_base"] for r in rows if r["metric"] == name)
        logged[name] = logged[metric_key(base, num_samples)] = sum(vals) / len(vals)
    logged.update({GFLOPS[k]: first[k] for k in GFLOPS})
    logged[NFE], logged[GLOBAL_STEP] = first["nfe"], first["step"]
    try:
        import wandb

        exp = logger.experiment
        exp.define_metric(EVAL_GLOB, step_metric=EVAL_STEP_METRIC)
        if grid is not None:
            logged[SAMPLES] = wandb.Image(str(grid), caption=tag)
        exp.log(logged)
    except Exception as e:  # logging must never lose the local rows
        print(f"[ablate] W&B logging failed ({e}); rows are in {results}")


class InLoopEval(L.Callback):
    """Evaluate the EMA weights every ``every`` training steps (rows carry ``step``: FID over training).

    With several processes every rank takes part, as in the final evaluation: each samples its share of
    the images and rank 0 writes the row (a rank-0-only evaluation would wait forever on the feature
    gathering). Under FSDP the sharded EMA is gathered first, on every rank. A module-level class so that
    it pickles (``ddp_spawn``)."""

    def __init__(self, exp, training, every: int, logger=None, job_dir=None):
        self.exp, self.training, self.every, self.logger, self.job_dir = exp, training, every, logger, job_dir

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        from ..scale.fsdp import consolidated_state_dicts

        s = trainer.global_step
        if s % self.every or s >= self.exp.trainer.steps:
            return
        ema = consolidated_state_dicts(module)[1]  # FSDP: gathered on every rank (training.net is a plain copy)
        info = {"train_key": self.exp.train_key, "reused": False, "train_steps": s}
        evaluate(self.exp, self.training, ema, info, job_dir=Path(self.job_dir or "."), logger=self.logger, step=s)


def checkpoint_weights(path: str) -> tuple[dict, int | None, dict]:
    """(EMA weights, step, stored config) from ablate's ``final.pt`` or a Lightning ``last.ckpt``."""
    from .checkpointing import CheckpointError, load_checkpoint

    state = load_checkpoint(path)
    if "ema" in state:  # final.pt
        return state["ema"], state.get("info", {}).get("train_steps"), state.get("config") or {}
    if "state_dict" in state:  # Lightning checkpoint of DiTLitModule
        ema = {k[4:]: v for k, v in state["state_dict"].items() if k.startswith("ema.")}
        if ema:
            return ema, state.get("global_step"), (state.get("ablate") or {}).get("config") or {}
    raise CheckpointError(f"{path!r} holds neither ablate's final.pt ('ema') nor a DiTLitModule checkpoint "
                          "(state_dict with 'ema.*'); for official DiT/SiT files use ablate.models.load_official")
