"""Evaluation benchmark: feature-extraction images/s and Frechet-distance time, embedded extractor and Inception.

- ``ablate-digits`` (the committed small CNN, 64-d features) through its torch-fidelity wrapper on uint8
  8 x 8 images: images/s over ``n`` images; and ``compute_metrics(images, "digits/test")`` end to end
  (features of the fakes, cached real statistics, Frechet distance).
- ``frechet_distance`` (``ablate.metrics``: two symmetric eigendecompositions in float64) at 64-d and 2048-d,
  on random covariances ``A A^T / D`` (A standard normal, D x 2D).
- Inception-v3 (torch-fidelity's FID network, 2048-d pool features) on 3 x 32 x 32 uint8 images resized inside
  the network, only when its weights are on disk (``ablate.metrics.inception_weights_path``); otherwise the
  record says ``skipped: no local weights``. Nothing is downloaded.
"""

from __future__ import annotations

import common
import numpy as np
import torch

__all__ = ["extractor_throughput", "frechet_time", "inception_throughput", "run", "markdown"]


def _images(n: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)


def extractor_throughput(n: int, batch: int, repeats: int) -> dict:
    """images/s of the ``ablate-digits`` feature extractor (torch-fidelity wrapper) over ``n`` images."""
    from ablate.metrics import FeatureExtractorAblate
    from ablate.metrics.extractor import FEATURE_NAME

    fx = FeatureExtractorAblate("ablate-digits", [FEATURE_NAME]).eval()
    x = _images(n, (1, 8, 8))

    def extract():
        with torch.no_grad():
            return torch.cat([fx(x[i : i + batch])[0] for i in range(0, n, batch)])

    times, feats = common.time_repeats(extract, repeats)
    return dict(extractor="ablate-digits", feature_dim=int(feats.shape[1]), num_images=n, batch=batch,
                wall_s=common.spread(times), images_per_s=common.spread([n / t for t in times]))


def metrics_end_to_end(n: int, repeats: int) -> dict:
    """Wall time of ``compute_metrics(fakes, "digits/test")`` (the real statistics cached after the warm-up)."""
    from ablate.metrics import compute_metrics

    fakes = _images(n, (1, 8, 8), seed=1).float() / 127.5 - 1
    times, out = common.time_repeats(lambda: compute_metrics(fakes, "digits/test"), repeats)
    return dict(num_fake=n, num_real=out["num_real"], extractor=out["extractor"], wall_s=common.spread(times))


def _random_gaussian(d: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a = rng.standard_normal((d, 2 * d))
    return rng.standard_normal(d), a @ a.T / d


def frechet_time(dim: int, repeats: int, warmup: int = 1) -> dict:
    """Wall time of ``ablate.metrics.frechet_distance`` between two random D-dimensional Gaussians."""
    from ablate.metrics import frechet_distance

    rng = np.random.default_rng(dim)
    (m1, s1), (m2, s2) = _random_gaussian(dim, rng), _random_gaussian(dim, rng)
    times, value = common.time_repeats(lambda: frechet_distance(m1, s1, m2, s2), repeats, warmup)
    return dict(dim=dim, wall_s=common.spread(times), value=value)


def inception_throughput(n: int, batch: int, repeats: int) -> dict:
    """images/s of torch-fidelity's Inception-v3 (2048-d) when its weights are local, else a skip record."""
    from ablate.metrics import inception_weights_path

    try:
        path = inception_weights_path()
    except FileNotFoundError as e:
        return dict(skipped="no local weights", reason=str(e).split(".")[0])
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    fx = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    fx.eval()
    x = _images(n, (3, 32, 32))

    def extract():
        with torch.no_grad():
            return torch.cat([fx(x[i : i + batch])[0] for i in range(0, n, batch)])

    times, feats = common.time_repeats(extract, repeats)
    return dict(extractor="inception-v3-compat", weights=str(path), feature_dim=int(feats.shape[1]),
                num_images=n, batch=batch, wall_s=common.spread(times),
                images_per_s=common.spread([n / t for t in times]))


def run(quick: bool = True, smoke: bool = False) -> dict:
    """Quick: 2,000 images through the small CNN, 3 repeats; the 2048-d Frechet distance once (seconds on a
    2-core CPU); Inception on 64 images (when present). ``smoke``: tiny sizes, 256-d instead of 2048-d."""
    load0 = common.loadavg()
    reps = 1 if smoke else 3 if quick else 5
    n = 100 if smoke else 2000 if quick else 20000
    big = 256 if smoke else 2048
    out = dict(
        extractor=extractor_throughput(n, 50 if smoke else 500, reps),
        metrics_end_to_end=metrics_end_to_end(n // 4, reps),
        frechet=[frechet_time(64, reps), frechet_time(big, 1 if quick else 3, 0 if quick else 1)],
        inception=inception_throughput(4 if smoke else 64 if quick else 1000, 4 if smoke else 64 if quick else 200,
                                       1 if quick else 3),
    )
    out["contention"] = common.contention(load0, common.loadavg())
    return out


def markdown(rep: dict) -> list[str]:
    e, m = rep["extractor"], rep["metrics_end_to_end"]
    i = e["images_per_s"]
    lines = ["## Evaluation", "", "| what | size | wall s min / med / max | images/s min / med / max |",
             "|---|---|---|---|"]
    w = e["wall_s"]
    lines.append(f"| `{e['extractor']}` features ({e['feature_dim']}-d) | {e['num_images']} images | "
                 f"{w['min']:.3f} / {w['median']:.3f} / {w['max']:.3f} | {i['min']:.0f} / {i['median']:.0f} / "
                 f"{i['max']:.0f} |")
    w = m["wall_s"]
    lines.append(f"| `compute_metrics` FID end to end ({m['extractor']}) | {m['num_fake']} fakes vs "
                 f"{m['num_real']} real | {w['min']:.3f} / {w['median']:.3f} / {w['max']:.3f} | - |")
    for f in rep["frechet"]:
        w = f["wall_s"]
        lines.append(f"| `frechet_distance` | {f['dim']}-d | {w['min']:.4f} / {w['median']:.4f} / "
                     f"{w['max']:.4f} | - |")
    inc = rep["inception"]
    if "skipped" in inc:
        lines.append(f"| Inception-v3 features | - | skipped: {inc['skipped']} | - |")
    else:
        w, i = inc["wall_s"], inc["images_per_s"]
        lines.append(f"| Inception-v3 features (2048-d) | {inc['num_images']} images | {w['min']:.3f} / "
                     f"{w['median']:.3f} / {w['max']:.3f} | {i['min']:.1f} / {i['median']:.1f} / {i['max']:.1f} |")
    c = rep["contention"]
    lines += ["", f"Load average before/after: {c['loadavg_before']:.2f} / {c['loadavg_after']:.2f}"
              f"{' (contended)' if c['contended'] else ''}.", ""]
    return lines
