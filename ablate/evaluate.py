"""Evaluation: sample with the configured sampler from the EMA weights, score the samples, write the rows.

``evaluate_run`` is what ``ablate.run`` calls after training; ``python -m ablate.evaluate <ckpt_dir>
[overrides]`` evaluates a finished checkpoint standalone with any sampler. Per-image seeds: image i always
starts from the same noise (and, for the SDE and DDPM samplers, sees the same step noises), whatever the batch
composition and whatever the sampler, so two samplers on one checkpoint are compared on paired noise. Class
labels are balanced and deterministic: image i has class i mod num_classes.

Rows (one per metric) carry every axis, the metric name and value, GFLOPs (model, sample, train), NFE per
image, seeds, step, wall times, versions and git commit. Metric names carry how they were produced:
``eval/fid1k/ode_heun-n125-cfg1`` = FID over 1,000 samples with that sampler.
"""

from __future__ import annotations

import copy
import hashlib
import time
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig
from torch import Tensor

from .build import axes, build_data, build_sampler_from_cfg
from .metric_names import EVAL_GLOB, EVAL_STEP_METRIC, GFLOPS, GLOBAL_STEP, NFE, SAMPLES, count_label, metric_key

__all__ = ["generate", "evaluate_run", "metric_key", "count_label"]


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
    progress: bool = True,
    start: int = 0,
) -> tuple[Tensor, Tensor, float]:
    """Generate ``num_samples`` images; returns (images [N, *shape] on CPU, labels [N], NFE per image).

    ``start``: the index of the first image, so that a rank generating images ``[start, start + N)`` of a
    sharded evaluation (``ablate.distributed.shard_range``) gets the seeds and labels of those indices.

    Guidance is the sampler's (it wraps the model); NFE is counted by the sampler's own wrapper.
    """
    from .sampling import PerImageNoise

    index = torch.arange(start, start + num_samples)
    labels = index % num_classes if num_classes > 0 else torch.zeros(num_samples, dtype=torch.long)
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
                "check the endpoint setting (sample_eps) and the diffusion coefficient near t = 0 and t = 1"
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


def _save_grid(images: Tensor, path: Path, n: int) -> Path:
    from torchvision.utils import save_image

    path.parent.mkdir(parents=True, exist_ok=True)
    imgs = images[:n].clamp(-1, 1) * 0.5 + 0.5
    nrow = max(1, int(round(n**0.5)))
    save_image(imgs, path, nrow=nrow, padding=1)
    return path


def _heldout_loss_curve(cfg: DictConfig, model, device):
    """L_t of the trained model on held-out images (for w_KL,eta), at ``loss_knots`` times."""
    from hydra.utils import instantiate

    from .transport.diffusion import estimate_loss_curve

    d = cfg.diffusion
    ds = build_data(cfg, "train" if cfg.data.name == "latents" else cfg.eval.reference_split)
    n = min(int(d.loss_samples), len(ds))
    x = torch.stack([ds[i][0] for i in range(n)]).to(device)
    y = torch.tensor([int(ds[i][1]) for i in range(n)], device=device) if cfg.data.num_classes > 0 else None
    g = torch.Generator(device=device).manual_seed(int(cfg.eval.seed))
    with torch.no_grad():
        return estimate_loss_curve(model, x, instantiate(cfg.interpolant), cfg.prediction.name, y=y,
                                   num_t=int(d.loss_knots), generator=g)


def evaluate_run(cfg: DictConfig, training, ema_state: dict, info: dict[str, Any], *, job_dir: Path,
                 logger=None, step: int | None = None) -> dict[str, Any]:
    """Sample from the EMA weights, compute metrics and GFLOPs, append rows, log to W&B; returns the rows."""
    from .distributed import all_reduce_mean, rank_world, shard_range, sharded_metrics
    from .metrics import compute_metrics
    from .metrics.flops import model_gflops, sample_gflops, train_gflops
    from .results import append_rows, environment_info

    device = torch.device("cuda" if torch.cuda.is_available() and cfg.trainer.accelerator != "cpu" else "cpu")
    net = copy.deepcopy(training.net)  # never clobber the weights being trained (in-loop evaluation)
    net.load_state_dict(ema_state)
    net.eval().to(device)
    model = training.predict_fn(net)
    loss_curve = None
    if cfg.sampler.name == "sde" and cfg.diffusion.name == "w_kl_eta":
        loss_curve = _heldout_loss_curve(cfg, model, device)
    sampler = build_sampler_from_cfg(cfg, ddpm=training.ddpm, loss_curve=loss_curve)
    tag = sampler.tag
    ev, m = cfg.eval, cfg.model
    shape = (m.in_channels, m.input_size, m.input_size)
    t0 = time.time()
    # Under DDP (process group initialised), each rank samples its contiguous share of the image indices.
    rank, world = rank_world()
    share = shard_range(ev.num_samples, rank, world)
    images, labels, nfe = generate(
        model, sampler, num_samples=len(share), batch_size=ev.batch_size, shape=shape,
        num_classes=cfg.data.num_classes, seed=ev.seed, device=device, start=share.start,
    )
    nfe = all_reduce_mean(nfe, len(share))
    sample_wall = time.time() - t0
    if cfg.data.name == "latents":
        from .data.latents import decode_latents, load_vae

        vae = load_vae(cfg.data.vae, device=device)
        images = torch.cat([decode_latents(vae, images[i : i + 32].to(device)).cpu()
                            for i in range(0, len(images), 32)])
    png = "samples.png" if step is None else f"samples_step{int(step):07d}.png"
    grid = _save_grid(images, job_dir / png, min(ev.grid, len(images))) if rank == 0 else None
    t1 = time.time()
    if cfg.data.name in ("image_folder", "latents"):  # a user's folder: statistics cached under its path
        ref = build_data(cfg, ev.reference_split)
        root = cfg.data.get("reference_root", cfg.data.root)
        cache_name = f"{cfg.data.name}-{hashlib.sha256(str(root).encode()).hexdigest()[:12]}"
    else:  # an embedded dataset, by name: statistics cached per (dataset, split, extractor)
        ref, cache_name = f"{cfg.data.name}/{ev.reference_split}", None
    if world > 1:  # features gathered in index order, one score on rank 0; other ranks stop here
        scores = sharded_metrics(images, ref, extractor=ev.extractor, metrics=tuple(ev.metrics),
                                 real_cache_name=cache_name, inception_weights=ev.get("inception_weights"))
        if scores is None:
            return {"rows": [], "samples": None}
    else:
        scores = compute_metrics(images, ref, extractor=ev.extractor, metrics=tuple(ev.metrics),
                                 real_cache_name=cache_name, inception_weights=ev.get("inception_weights"))
    metric_wall = time.time() - t1

    gf = model_gflops(net, conditional=cfg.data.num_classes > 0)
    steps_done = info.get("train_steps", cfg.trainer.steps) if step is None else step
    images_seen = steps_done * cfg.trainer.batch_size
    gflops = {
        "model_gflops": gf,
        "sample_gflops": sample_gflops(gf, round(nfe), cfg.guidance.scale != 1.0),
        "train_gflops": train_gflops(gf, images_seen),
    }
    base = {
        **axes(cfg),
        "study": cfg.study or "adhoc",
        "status": "ok",
        "train_key": info.get("train_key"),
        "reused_checkpoint": info.get("reused"),
        "step": steps_done,
        "images_seen": images_seen,
        "nfe": nfe,
        "num_samples": ev.num_samples,
        "eval_seed": ev.seed,
        "train_wall_s": info.get("train_wall_s"),
        "sample_wall_s": sample_wall,
        "metric_wall_s": metric_wall,
        "samples_png": str(grid),
        **gflops,
        **{f"env_{k}": v for k, v in environment_info().items()},
    }
    rows = []
    base.update(extractor=scores.pop("extractor", None), num_real=scores.pop("num_real", None))
    scores.pop("num_fake", None)
    for name, value in scores.items():
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise FloatingPointError(f"metric {name} is not finite ({value}); no row written")
        rows.append({**base, "metric": metric_key(name, ev.num_samples, tag), "metric_base": name, "value": value})
    append_rows(cfg.results, rows)
    if logger is not None:
        logged = {r["metric"]: r["value"] for r in rows}
        # The tag-free alias: one key per metric shared by every run of a study (see ablate/metric_names.py).
        logged.update({metric_key(r["metric_base"], ev.num_samples): r["value"] for r in rows})
        logged.update({GFLOPS[k]: v for k, v in gflops.items()})
        logged[NFE] = nfe
        logged[GLOBAL_STEP] = steps_done
        try:
            import wandb

            exp = logger.experiment
            exp.define_metric(EVAL_GLOB, step_metric=EVAL_STEP_METRIC)
            exp.log({**logged, SAMPLES: wandb.Image(str(grid), caption=tag)})
        except Exception as e:  # logging must never lose the local rows
            print(f"[ablate] W&B logging failed ({e}); rows are in {cfg.results}")
    for r in rows:
        print(f"[ablate] {r['metric']} = {r['value']:.4f}  (NFE {nfe:g}, sample {gflops['sample_gflops']:.3g} "
              f"GFLOPs/img, train {gflops['train_gflops']:.3g} GFLOPs)")
    return {"rows": rows, "samples": str(grid)}


def _checkpoint_weights(path: str) -> tuple[dict, int | None]:
    """EMA weights and step from ablate's final.pt or a Lightning last.ckpt (weights_only loads)."""
    from .checkpointing import CheckpointError, load_checkpoint

    state = load_checkpoint(path)
    if "ema" in state:  # final.pt
        return state["ema"], state.get("info", {}).get("train_steps")
    if "state_dict" in state:  # Lightning checkpoint of DiffusionModule
        ema = {k[4:]: v for k, v in state["state_dict"].items() if k.startswith("ema.")}
        if ema:
            return ema, state.get("global_step")
    raise CheckpointError(f"{path!r} holds neither ablate's final.pt ('ema') nor a DiffusionModule checkpoint "
                          "(state_dict with 'ema.*'); for official DiT/SiT files use ablate.models.load_official")


def main() -> None:
    """``python -m ablate.evaluate +checkpoint=PATH [overrides]``: evaluate a checkpoint standalone with any
    sampler, budget or guidance (the training axes in the overrides must describe the checkpoint's model)."""
    import hydra

    from .build import build_training, train_key, validate
    from .run import _job_dir, _make_logger

    @hydra.main(config_path="../conf", config_name="config", version_base="1.3")
    def _main(cfg: DictConfig):
        validate(cfg)
        if not cfg.get("checkpoint"):
            raise SystemExit("python -m ablate.evaluate needs +checkpoint=<final.pt or last.ckpt>")
        ema, step = _checkpoint_weights(cfg.checkpoint)
        training = build_training(cfg)
        job_dir = _job_dir()
        logger = _make_logger(cfg, job_dir, name=f"eval-{train_key(cfg)}")
        info = {"train_key": train_key(cfg), "reused": True, "train_steps": step or cfg.trainer.steps}
        evaluate_run(cfg, training, ema, info, job_dir=job_dir, logger=logger)

    _main()


if __name__ == "__main__":
    main()
