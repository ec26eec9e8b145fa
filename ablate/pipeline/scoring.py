"""Scoring one evaluation's samples under the configured protocol (``eval.protocol``; ablate/metrics/README.md).

- ``torch-fidelity``: FID (and KID, IS, precision/recall) through torch-fidelity against the data's reference
  set: the held-out split of an embedded dataset with its own feature extractor, or an image folder with
  Inception. Latent samples are decoded batch by batch to uint8 images (no float copy of every image).
- ``adm``: the DiT/SiT protocol. The decoded samples stream into an ADM-format ``.npz`` (``arr_0`` uint8 NHWC
  with DiT's conversion, ``arr_1`` the labels), which :func:`ablate.metrics.adm.evaluate_adm` scores against the
  ADM reference batch (FID and sFID from its stored statistics, Inception Score, precision/recall against its
  images). With several ranks each writes its share and rank 0 merges them in index order.

``eval.export=true`` writes the ``.npz`` under the torch-fidelity protocol too, for the official evaluator.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

__all__ = ["DECODE_BATCH", "decoded_batches", "score_samples"]

DECODE_BATCH = 32


def decoded_batches(exp, samples: Tensor, device):
    """Images in [-1, 1], ``DECODE_BATCH`` at a time (latents through the VAE; pixels as they are)."""
    for i in range(0, len(samples), DECODE_BATCH):
        yield exp.data.decode(samples[i: i + DECODE_BATCH], device)


def _export(exp, samples, labels, device, path: Path, rank: int, world: int) -> Path | None:
    """Write this rank's samples as an ADM ``.npz``; with several ranks, rank 0 merges the parts (others: None)."""
    from ..metrics.adm_io import AdmNpzWriter, merge_adm_npz

    part = path if world == 1 else path.with_name(f"{path.stem}.rank{rank}.npz")
    with AdmNpzWriter(part, num_images=len(samples), conversion=exp.eval.conversion) as w:
        for i, images in enumerate(decoded_batches(exp, samples, device)):
            w.write(images, labels[i * DECODE_BATCH: (i + 1) * DECODE_BATCH])
    if world == 1:
        return path
    import torch.distributed as dist

    dist.barrier()  # every part is written
    if rank != 0:
        return None
    parts = [path.with_name(f"{path.stem}.rank{r}.npz") for r in range(world)]
    merge_adm_npz(path, parts)
    for p in parts:
        p.unlink()
    return path


def score_samples(exp, samples: Tensor, labels: Tensor, device, rank: int, world: int, npz: Path):
    """``(scores, npz path or None)`` of this evaluation; scores are ``None`` on ranks other than 0."""
    from ..data.embedded import to_uint8
    from ..metrics import compute_metrics
    from ..scale.distributed import sharded_metrics

    ev = exp.eval
    written = _export(exp, samples, labels, device, npz, rank, world) if (ev.export or ev.protocol == "adm") else None
    if ev.protocol == "adm":
        if rank != 0:
            return None, None
        from ..metrics.adm import evaluate_adm

        scores = evaluate_adm(written, ev.reference, metrics=tuple(ev.metrics), inception_weights=ev.inception_weights,
                              batch_size=min(ev.batch_size, 256), device=device)
        scores.pop("protocol", None)
        return scores, written
    reference, cache_name = exp.data.reference(ev.reference_split)
    if exp.data.decodes:  # latents: uint8 images, decoded batch by batch
        images = torch.cat([to_uint8(x) for x in decoded_batches(exp, samples, device)])
    else:
        images = samples
    kw = dict(extractor=ev.extractor, metrics=tuple(ev.metrics), real_cache_name=cache_name,
              inception_weights=ev.inception_weights)
    scores = sharded_metrics(images, reference, **kw) if world > 1 else compute_metrics(images, reference, **kw)
    return scores, written
