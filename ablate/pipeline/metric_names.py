"""Every logged metric name, defined once.

The code that logs (``ablate/pipeline/lit.py``, ``ablate/pipeline/evaluation.py``) and the code that plots
(``ablate/studies/dashboard.py``) both import their names from here, so renaming a metric renames it in the
dashboards too, and a dashboard cannot silently point at a key that no run logs; the W&B import parses names
with :func:`parse_metric_key`.

Sample-quality metrics carry how they were produced (docs/design.md, "FID"): ``eval/<metric><N>/<sampler
tag>``, e.g. ``eval/fid1k/sde_em-w_kl-nfe250-cfg1.0`` = FID over 1,000 samples drawn with that sampler. Each run
also logs the same value under the tag-free alias ``eval/<metric><N>`` (the sampler tag is then in the run's
config, ``sampler_tag``): one key shared by every run of a study whatever its sampler, which is what a panel
comparing runs across samplers (FID vs NFE, FID vs GFLOPs) needs.
"""

from __future__ import annotations

__all__ = [
    "TRAIN_LOSS", "TRAIN_SKIPPED_STEPS", "GLOBAL_STEP", "MODEL_GFLOPS", "SAMPLE_GFLOPS", "TRAIN_GFLOPS",
    "GFLOPS", "NFE", "SAMPLES", "EVAL_GLOB", "EVAL_STEP_METRIC", "count_label", "metric_key", "parse_metric_key",
]

# --- training (logged by the LightningModule) ------------------------------------------------------------------
TRAIN_LOSS = "train/loss"
TRAIN_SKIPPED_STEPS = "train/skipped_steps"
GLOBAL_STEP = "trainer/global_step"  # the step key of Lightning's WandbLogger; evaluation logs it too

# --- evaluation (logged once per evaluation by evaluate_run) ---------------------------------------------------
MODEL_GFLOPS = "eval/model_gflops"  # forward multiply-accumulates per image, 1e9 (DiT/SiT "Gflops")
SAMPLE_GFLOPS = "eval/sample_gflops"  # NFE x model_gflops (x2 with classifier-free guidance)
TRAIN_GFLOPS = "eval/train_gflops"  # 3 x model_gflops x images seen
GFLOPS = {"model_gflops": MODEL_GFLOPS, "sample_gflops": SAMPLE_GFLOPS, "train_gflops": TRAIN_GFLOPS}
NFE = "eval/nfe"  # network evaluations per image, counted by the sampler's wrapper
SAMPLES = "eval/samples"  # the sample grid (a wandb.Image)
EVAL_GLOB = "eval/*"
EVAL_STEP_METRIC = TRAIN_GFLOPS  # W&B plots eval/* against training compute by default


def count_label(n: int) -> str:
    """1000 -> '1k', 50000 -> '50k', 640 -> '640'."""
    if isinstance(n, bool) or int(n) != n or n <= 0:
        raise ValueError(f"num_samples must be a positive integer, got {n!r}")
    n = int(n)
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def metric_key(metric: str, num_samples: int, tag: str | None = None) -> str:
    """The logged name of a sample-quality metric: ``eval/<metric><N>/<sampler tag>``.

    ``tag=None`` gives the tag-free alias ``eval/<metric><N>`` that every run logs next to the tagged name.
    """
    if not metric or "/" in metric:
        raise ValueError(f"metric must be a bare name such as 'fid', got {metric!r}")
    base = f"eval/{metric}{count_label(num_samples)}"
    if tag is None:
        return base
    if not tag or "/" in tag:
        raise ValueError(f"sampler tag must be a non-empty name without '/', got {tag!r}")
    return f"{base}/{tag}"


def parse_metric_key(key: str) -> dict | None:
    """The parts of a name written by :func:`metric_key`: ``{"metric", "num_samples", "tag"}`` (``tag`` None for
    the tag-free alias), or None for any other name."""
    import re

    m = re.fullmatch(r"eval/(?P<metric>[a-z_]+?)(?P<n>\d+k?)(?:/(?P<tag>[^/]+))?", key)
    if m is None:
        return None
    n = m["n"]
    return {"metric": m["metric"], "num_samples": int(n[:-1]) * 1000 if n.endswith("k") else int(n), "tag": m["tag"]}
