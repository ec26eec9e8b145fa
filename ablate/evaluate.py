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

import time
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig
from torch import Tensor

from .build import axes, build_sampler_from_cfg, sampler_tag

__all__ = ["generate", "evaluate_run", "metric_key", "count_label"]


def count_label(n: int) -> str:
    """1000 -> '1k', 50000 -> '50k', 640 -> '640'."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def metric_key(metric: str, num_samples: int, tag: str) -> str:
    """The logged name of a sample-quality metric: ``eval/<metric><N>/<sampler tag>``."""
    return f"eval/{metric}{count_label(num_samples)}/{tag}"


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
    guidance_scale: float = 1.0,
    legacy_channels: int | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[Tensor, Tensor, float]:
    """Generate ``num_samples`` images; returns (images [N, *shape] on CPU, labels [N], NFE per image)."""
    from .sampling import NFECounter, guided, per_image_noise

    labels = torch.arange(num_samples) % num_classes if num_classes > 0 else torch.zeros(num_samples, dtype=torch.long)
    counter = NFECounter(model)
    net = counter
    if guidance_scale != 1.0:
        net = guided(counter, guidance_scale, null_class=num_classes, legacy_channels=legacy_channels)
    out, nfe_total, batches = [], 0, 0
    rng = range(0, num_samples, batch_size)
    if progress:
        from tqdm.auto import tqdm

        rng = tqdm(rng, desc="sampling", unit="batch", leave=False)
    for start in rng:
        idx = torch.arange(start, min(start + batch_size, num_samples))
        seeds = [seed * 1_000_003 + int(i) for i in idx]
        z = per_image_noise(seeds, shape).to(device)
        y = labels[idx].to(device) if num_classes > 0 else None
        before = counter.nfe
        res = sampler(net, z, y, seeds=seeds)
        nfe_total += counter.nfe - before
        batches += 1
        x = res.x if hasattr(res, "x") else res
        if not torch.isfinite(x).all():
            raise FloatingPointError(
                f"sampler {getattr(sampler, 'tag', sampler)} produced non-finite samples; check the endpoint "
                "setting (sample_eps) and the diffusion coefficient near t = 0 and t = 1"
            )
        out.append(x.float().cpu())
    return torch.cat(out), labels, nfe_total / max(batches, 1)


def _save_grid(images: Tensor, path: Path, n: int) -> Path:
    from torchvision.utils import save_image

    path.parent.mkdir(parents=True, exist_ok=True)
    imgs = images[:n].clamp(-1, 1) * 0.5 + 0.5
    nrow = max(1, int(round(n**0.5)))
    save_image(imgs, path, nrow=nrow, padding=1)
    return path


def evaluate_run(cfg: DictConfig, training, ema_state: dict, info: dict[str, Any], *, job_dir: Path,
                 logger=None, step: int | None = None) -> dict[str, Any]:
    """Sample from the EMA weights, compute metrics and GFLOPs, append rows, log to W&B; returns the rows."""
    from .data import build_dataset
    from .metrics import compute_metrics
    from .metrics.flops import model_gflops, sample_gflops, train_gflops
    from .results import append_rows, environment_info

    device = torch.device("cuda" if torch.cuda.is_available() and cfg.trainer.accelerator != "cpu" else "cpu")
    net = training.net
    net.load_state_dict(ema_state)
    net.eval().to(device)
    model = training.predict_fn(net)
    sampler = build_sampler_from_cfg(cfg, ddpm=training.ddpm)
    tag = sampler_tag(cfg)
    ev, m = cfg.eval, cfg.model
    shape = (m.in_channels, m.input_size, m.input_size)
    t0 = time.time()
    images, labels, nfe = generate(
        model, sampler, num_samples=ev.num_samples, batch_size=ev.batch_size, shape=shape,
        num_classes=cfg.data.num_classes, seed=ev.seed, guidance_scale=cfg.guidance.scale,
        legacy_channels=cfg.guidance.legacy_channels, device=device,
    )
    sample_wall = time.time() - t0
    if cfg.data.name == "latents":
        from .data.latents import decode_latents, load_vae

        vae = load_vae(cfg.data.vae, device=device)
        images = torch.cat([decode_latents(vae, images[i : i + 32].to(device)).cpu()
                            for i in range(0, len(images), 32)])
    grid = _save_grid(images, job_dir / "samples.png", min(ev.grid, len(images)))
    t1 = time.time()
    ref = build_dataset(cfg.data.name, split=ev.reference_split, **({"root": cfg.data.root} if "root" in cfg.data else {}))
    scores = compute_metrics(images, ref, extractor=ev.extractor, metrics=tuple(ev.metrics))
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
    for name, value in scores.items():
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise FloatingPointError(f"metric {name} is not finite ({value}); no row written")
        rows.append({**base, "metric": metric_key(name, ev.num_samples, tag), "metric_base": name, "value": value})
    append_rows(cfg.results, rows)
    if logger is not None:
        logged = {r["metric"]: r["value"] for r in rows}
        logged.update({f"eval/{k}": v for k, v in gflops.items()})
        logged["eval/nfe"] = nfe
        logged["trainer/global_step"] = steps_done
        try:
            import wandb

            exp = logger.experiment
            exp.define_metric("eval/*", step_metric="eval/train_gflops")
            exp.log({**logged, "eval/samples": wandb.Image(str(grid), caption=tag)})
        except Exception as e:  # logging must never lose the local rows
            print(f"[ablate] W&B logging failed ({e}); rows are in {cfg.results}")
    for r in rows:
        print(f"[ablate] {r['metric']} = {r['value']:.4f}  (NFE {nfe:g}, sample {gflops['sample_gflops']:.3g} "
              f"GFLOPs/img, train {gflops['train_gflops']:.3g} GFLOPs)")
    return {"rows": rows, "samples": str(grid)}
